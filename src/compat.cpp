#include "compat.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_NCCL
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <stdexcept>

namespace accelerate::compat {
namespace {

c10::intrusive_ptr<c10d::ProcessGroupGloo> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                     int rank, int size,
                                                     std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // Resolve this host's name to pick the interface, as torch.distributed does; fall back to
  // loopback for single-machine jobs on hosts whose name does not resolve.
  try {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  } catch (const std::exception&) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  }
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

}  // namespace

c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
    std::chrono::milliseconds timeout, Backend backend) {
#if TORCH_VERSION_MAJOR < 2
  if (backend == Backend::GLOO) return make_gloo(store, rank, size, timeout);
#ifdef USE_C10D_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#endif
#else
  // LibTorch 2.x: a ProcessGroup front with the backend registered for its device type.
  auto group = c10::make_intrusive<c10d::ProcessGroup>(
      store, rank, size,
      c10::make_intrusive<c10d::ProcessGroup::Options>(backend == Backend::GLOO ? "gloo" : "nccl",
                                                       timeout));
  if (backend == Backend::GLOO) {
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO,
                      make_gloo(store, rank, size, timeout));
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    return group;
  }
#ifdef USE_C10D_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::NCCL,
                    c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options));
  group->setDefaultBackend(c10d::ProcessGroup::BackendType::NCCL);
  return group;
#endif
#endif
  throw std::invalid_argument(
      "accelerate: the NCCL backend was requested but this LibTorch was built without it");
}

std::unique_ptr<c10d::Reducer> make_reducer(
    std::vector<at::Tensor> params, std::vector<std::vector<size_t>> buckets,
    std::vector<size_t> bucket_limits, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
    int64_t bucket_bytes, bool find_unused_parameters, bool gradient_as_bucket_view,
    std::unordered_map<size_t, std::string> names, int64_t first_bucket_bytes) {
  const size_t n = params.size();
  // 1.13 and 2.x take the same leading arguments; later 2.x releases append defaulted ones.
  return std::make_unique<c10d::Reducer>(
      std::move(params), std::move(buckets), std::move(bucket_limits), group,
      std::vector<bool>(n, false), bucket_bytes, find_unused_parameters, gradient_as_bucket_view,
      std::move(names), first_bucket_bytes);
}

bool cuda_available() { return torch::cuda::is_available(); }

void set_cuda_device(int index) {
#ifdef USE_C10D_NCCL
  c10::cuda::set_device(static_cast<c10::DeviceIndex>(index));
#else
  (void)index;
#endif
}

void empty_cuda_cache() {
#ifdef USE_C10D_NCCL
  if (torch::cuda::is_available()) c10::cuda::CUDACachingAllocator::emptyCache();
#endif
}

std::vector<at::Tensor> cuda_rng_states() {
  std::vector<at::Tensor> states;
#ifdef USE_C10D_NCCL
  if (torch::cuda::is_available())
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      states.push_back(at::cuda::detail::getDefaultCUDAGenerator(i).get_state());
#endif
  return states;
}

void set_cuda_rng_states(const std::vector<at::Tensor>& states) {
#ifdef USE_C10D_NCCL
  for (size_t i = 0; i < states.size() &&
                     static_cast<int64_t>(i) < static_cast<int64_t>(torch::cuda::device_count());
       ++i)
    at::cuda::detail::getDefaultCUDAGenerator(static_cast<int64_t>(i)).set_state(states[i]);
#else
  (void)states;
#endif
}

#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_enabled(c10::DeviceType device_type) {
  return at::autocast::is_autocast_enabled(device_type);
}
void set_autocast_enabled(c10::DeviceType device_type, bool enabled) {
  at::autocast::set_autocast_enabled(device_type, enabled);
}
at::ScalarType autocast_dtype(c10::DeviceType device_type) {
  return at::autocast::get_autocast_dtype(device_type);
}
void set_autocast_dtype(c10::DeviceType device_type, at::ScalarType dtype) {
  at::autocast::set_autocast_dtype(device_type, dtype);
}
#else
bool autocast_enabled(c10::DeviceType device_type) {
  return device_type == c10::DeviceType::CUDA ? at::autocast::is_enabled()
                                              : at::autocast::is_cpu_enabled();
}
void set_autocast_enabled(c10::DeviceType device_type, bool enabled) {
  if (device_type == c10::DeviceType::CUDA)
    at::autocast::set_enabled(enabled);
  else
    at::autocast::set_cpu_enabled(enabled);
}
at::ScalarType autocast_dtype(c10::DeviceType device_type) {
  return device_type == c10::DeviceType::CUDA ? at::autocast::get_autocast_gpu_dtype()
                                              : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(c10::DeviceType device_type, at::ScalarType dtype) {
  if (device_type == c10::DeviceType::CUDA)
    at::autocast::set_autocast_gpu_dtype(dtype);
  else
    at::autocast::set_autocast_cpu_dtype(dtype);
}
#endif

bool autocast_supports(c10::DeviceType device_type, at::ScalarType dtype) {
  if (device_type == c10::DeviceType::CUDA) return dtype == at::kHalf || dtype == at::kBFloat16;
    // CPU autocast: bfloat16 only before LibTorch 2.2, float16 too from then on.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 2)
  return dtype == at::kHalf || dtype == at::kBFloat16;
#else
  return dtype == at::kBFloat16;
#endif
}

}  // namespace accelerate::compat
