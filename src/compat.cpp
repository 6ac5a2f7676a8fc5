#include "compat.h"
#include "accelerate/errors.h"

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#ifndef ACCELERATE_NO_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/reducer.hpp>
#ifdef USE_C10D_NCCL
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <stdexcept>
#include <type_traits>

namespace accelerate::compat {
namespace {

#ifndef ACCELERATE_NO_GLOO
c10::intrusive_ptr<c10d::ProcessGroupGloo> make_gloo(const c10::intrusive_ptr<c10d::Store>& store,
                                                     int rank, int size,
                                                     std::chrono::milliseconds timeout,
                                                     const GlooEndpoint& endpoint) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // As PyTorch's ProcessGroupGloo: one device per interface of GLOO_SOCKET_IFNAME (two threads
  // each), else one device; which address it binds to is State's choice (network.h), never
  // this host name's address by default, which Debian's /etc/hosts puts on loopback.
  for (const std::string& interface : endpoint.interfaces)
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(interface));
  if (options->devices.empty())
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(
        endpoint.address.empty() ? std::string("127.0.0.1") : endpoint.address));
  options->threads = static_cast<int>(options->devices.size()) * 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}
#else
// Built without Gloo's headers (the PyTorch wheel and the libtorch archive ship none).
#if TORCH_VERSION_MAJOR < 2
using GlooGroup = c10d::ProcessGroup;  // 1.13: a backend is a process group
#else
using GlooGroup = c10d::Backend;
#endif
[[noreturn]] c10::intrusive_ptr<GlooGroup> make_gloo(const c10::intrusive_ptr<c10d::Store>&, int,
                                                     int, std::chrono::milliseconds,
                                                     const GlooEndpoint&) {
  throw std::runtime_error(
      "accelerate: several CPU processes need the Gloo backend, but this build of accelerate-cpp "
      "had no Gloo headers (the PyTorch wheel and the libtorch archive ship none): install "
      "Debian's libgloo-dev (or Gloo's headers) and rebuild; see the README, 'Which LibTorch'");
}
#endif

#if TORCH_VERSION_MAJOR >= 2
// The ProcessGroup front of LibTorch 2.x: earlier 2.x releases take ProcessGroup::Options
// (backend name, timeout); recent ones (seen in 2.11 and 2.13) only (store, rank, size), the
// timeout living in the backend's options. A template, so that only the branch this LibTorch has is
// compiled.
template <typename PG = c10d::ProcessGroup>
c10::intrusive_ptr<PG> make_front(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                  const std::string& backend, std::chrono::milliseconds timeout) {
  if constexpr (std::is_constructible_v<PG, const c10::intrusive_ptr<c10d::Store>&, int, int>)
    return c10::make_intrusive<PG>(store, rank, size);
  else
    return c10::make_intrusive<PG>(store, rank, size,
                                   c10::make_intrusive<typename PG::Options>(backend, timeout));
}
#endif

// c10d::Reducer's constructor: 1.13 to 2.x take (params, buckets, per-bucket limits, group,
// ...); recent 2.x (seen in 2.11 and 2.13) drop the limits from the third place and take them
// as int64_t after first_bucket_bytes_cap and two new flags. A template, as above.
template <typename R = c10d::Reducer>
std::unique_ptr<R> construct_reducer(
    std::vector<at::Tensor> params, std::vector<std::vector<size_t>> buckets,
    std::vector<size_t> bucket_limits, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
    int64_t bucket_bytes, bool find_unused_parameters, bool gradient_as_bucket_view,
    std::unordered_map<size_t, std::string> names, int64_t first_bucket_bytes) {
  std::vector<bool> sparse(params.size(), false);
  using Names = std::unordered_map<size_t, std::string>;
  using Group = c10::intrusive_ptr<c10d::ProcessGroup>;
  if constexpr (std::is_constructible_v<R, std::vector<at::Tensor>,
                                        std::vector<std::vector<size_t>>, Group, std::vector<bool>,
                                        int64_t, bool, bool, Names, int64_t, bool, bool,
                                        std::vector<int64_t>>) {
    std::vector<int64_t> limits(bucket_limits.begin(), bucket_limits.end());
    return std::make_unique<R>(std::move(params), std::move(buckets), group, std::move(sparse),
                               bucket_bytes, find_unused_parameters, gradient_as_bucket_view,
                               std::move(names), first_bucket_bytes,
                               /*skip_all_reduce_unused_params=*/false,
                               /*use_python_reducer=*/false, std::move(limits));
  } else {
    return std::make_unique<R>(std::move(params), std::move(buckets), std::move(bucket_limits),
                               group, std::move(sparse), bucket_bytes, find_unused_parameters,
                               gradient_as_bucket_view, std::move(names), first_bucket_bytes);
  }
}

}  // namespace

c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
    std::chrono::milliseconds timeout, Backend backend, const GlooEndpoint& gloo_endpoint) {
#if TORCH_VERSION_MAJOR < 2
  if (backend == Backend::GLOO) return make_gloo(store, rank, size, timeout, gloo_endpoint);
#ifdef USE_C10D_NCCL
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, options);
#endif
#else
  // LibTorch 2.x: a ProcessGroup front with the backend registered for its device type.
  auto group = make_front(store, rank, size, backend == Backend::GLOO ? "gloo" : "nccl", timeout);
  if (backend == Backend::GLOO) {
    auto gloo = make_gloo(store, rank, size, timeout, gloo_endpoint);
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    // Gloo also takes CUDA tensors (State's backend("gloo") on GPUs), as LibTorch's own
    // init_process_group("gloo") registers it.
    if (cuda_available())
      group->setBackend(c10::DeviceType::CUDA, c10d::ProcessGroup::BackendType::GLOO, gloo);
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
  throw InvalidArgument(
      "accelerate: the NCCL backend was requested but this LibTorch was built without it");
}

std::unique_ptr<c10d::Reducer> make_reducer(
    std::vector<at::Tensor> params, std::vector<std::vector<size_t>> buckets,
    std::vector<size_t> bucket_limits, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
    int64_t bucket_bytes, bool find_unused_parameters, bool gradient_as_bucket_view,
    std::unordered_map<size_t, std::string> names, int64_t first_bucket_bytes) {
  return construct_reducer(std::move(params), std::move(buckets), std::move(bucket_limits), group,
                           bucket_bytes, find_unused_parameters, gradient_as_bucket_view,
                           std::move(names), first_bucket_bytes);
}

bool cuda_available() { return torch::cuda::is_available(); }

bool nccl_built() {
#ifdef USE_C10D_NCCL
  return true;
#else
  return false;
#endif
}

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
      states.push_back(at::Generator(at::cuda::detail::getDefaultCUDAGenerator(i)).get_state());
#endif
  return states;
}

void set_cuda_rng_states(const std::vector<at::Tensor>& states) {
#ifdef USE_C10D_NCCL
  for (size_t i = 0; i < states.size() &&
                     static_cast<int64_t>(i) < static_cast<int64_t>(torch::cuda::device_count());
       ++i) {
    // A copy of the handle: 2.x returns the default generator by const reference.
    at::Generator generator = at::cuda::detail::getDefaultCUDAGenerator(static_cast<int64_t>(i));
    generator.set_state(states[i]);
  }
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

// ---- the profiler (accelerate/profiler.h) ----
// Kineto's API is the same in 1.13 and 2.x, except the event times (startUs / durationUs in
// 1.13, startNs / durationNs in 2.x) and the type of deviceIndex.
#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdio>
#include <fstream>

namespace accelerate::compat {
namespace {

namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

template <typename E>
auto event_start_ns(const E& e, int) -> decltype(static_cast<uint64_t>(e.startNs())) {
  return static_cast<uint64_t>(e.startNs());
}
template <typename E>
uint64_t event_start_ns(const E& e, long) {
  return static_cast<uint64_t>(e.startUs()) * 1000;
}
template <typename E>
auto event_duration_ns(const E& e, int) -> decltype(static_cast<uint64_t>(e.durationNs())) {
  return static_cast<uint64_t>(e.durationNs());
}
template <typename E>
uint64_t event_duration_ns(const E& e, long) {
  return static_cast<uint64_t>(e.durationUs()) * 1000;
}

}  // namespace

void enable_profiler(bool record_shapes, bool profile_memory, bool with_flops, bool cuda) {
  impl::ProfilerConfig config(impl::ProfilerState::KINETO, record_shapes, profile_memory,
                              /*with_stack=*/false, with_flops, /*with_modules=*/false);
  std::set<impl::ActivityType> activities{impl::ActivityType::CPU};
  if (cuda) activities.insert(impl::ActivityType::CUDA);
  prof::prepareProfiler(config, activities);
  prof::enableProfiler(config, activities);
}

std::vector<ProfiledEvent> disable_profiler(const std::string& trace_path, bool* saved) {
  std::unique_ptr<prof::ProfilerResult> result = prof::disableProfiler();
  *saved = false;
  if (!trace_path.empty()) {
    // Without Kineto, save() writes nothing (or throws): a file that exists and is not empty
    // afterwards is Kineto's.
    std::remove(trace_path.c_str());
    try {
      result->save(trace_path);
      std::ifstream in(trace_path, std::ios::binary | std::ios::ate);
      *saved = in && in.tellg() > 0;
    } catch (const std::exception&) {
      *saved = false;
    }
    if (!*saved) std::remove(trace_path.c_str());
  }
  if (trace_path.empty() || *saved) return {};
  std::vector<ProfiledEvent> events;
  events.reserve(result->events().size());
  for (const auto& e : result->events()) {
    ProfiledEvent out;
    out.name = e.name();
    out.start_ns = event_start_ns(e, 0);
    out.duration_ns = event_duration_ns(e, 0);
    out.thread = e.startThreadId();
    out.on_device = e.deviceType() != c10::DeviceType::CPU;
    out.device_index = static_cast<int>(e.deviceIndex());
    out.correlation = static_cast<int64_t>(e.correlationId());
    if (e.hasShapes())
      for (const auto& shape : e.shapes()) out.shapes.push_back(shape);
    events.push_back(std::move(out));
  }
  return events;
}

bool profiler_enabled() { return impl::profilerEnabled(); }

}  // namespace accelerate::compat
