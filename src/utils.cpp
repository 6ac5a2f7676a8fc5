#include "accelerate/utils.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <mutex>
#include <new>
#include <string>

#include "accelerate/ops.h"
#include "accelerate/state.h"
#include "compat.h"

namespace accelerate {

void set_seed(uint64_t seed, bool device_specific) {
  // Accelerate adds PartialState().process_index, which it resolves from the environment too.
  if (device_specific)
    seed += static_cast<uint64_t>(resolve_launch_info(process_environment()).rank);
  torch::manual_seed(seed);  // also seeds every CUDA device where CUDA is available
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

namespace {

enum class RngType { CPU, CUDA, GENERATOR };

RngType parse_rng_type(const std::string& name, const std::string& api) {
  if (name == "cpu" || name == "torch") return RngType::CPU;
  if (name == "cuda") return RngType::CUDA;
  if (name == "generator") return RngType::GENERATOR;
  throw InvalidArgument("accelerate: " + api + ": unknown rng type \"" + name +
                        "\"; accelerate-cpp has \"cpu\" (or \"torch\"), \"cuda\" and "
                        "\"generator\"");
}

// Process 0's `state_tensor` (a generator state: a CPU byte tensor) on every process. Over
// NCCL the tensor travels on the device, as Accelerate sends it.
at::Tensor broadcast_rng_state(const State& state, const at::Tensor& state_tensor) {
  const c10::Device device = state.device();
  at::Tensor travelling = state_tensor.contiguous().to(device);
  travelling = broadcast(state, travelling, 0);
  return travelling.to(c10::kCPU);
}

// Gives `generator` process 0's state.
void synchronize_generator(const State& state, at::Generator generator) {
  at::Tensor synced;
  {
    std::lock_guard<std::mutex> lock(generator.mutex());
    synced = generator.get_state();
  }
  synced = broadcast_rng_state(state, synced);
  std::lock_guard<std::mutex> lock(generator.mutex());
  generator.set_state(synced);
}

}  // namespace

void check_rng_types(const State& state, const std::vector<std::string>& rng_types,
                     bool has_generator, const std::string& api) {
  for (const std::string& name : rng_types) {
    const RngType type = parse_rng_type(name, api);
    if (type == RngType::CUDA && state.device().type() != c10::kCUDA)
      throw InvalidArgument("accelerate: " + api +
                            ": rng type \"cuda\" needs a CUDA device, but this process runs on " +
                            state.device().str());
    if (type == RngType::GENERATOR && !has_generator)
      throw InvalidArgument("accelerate: " + api +
                            ": rng type \"generator\" needs a generator to synchronise");
  }
}

void synchronize_rng_states(const State& state, const std::vector<std::string>& rng_types,
                            std::optional<at::Generator> generator) {
  const std::string api = "synchronize_rng_states";
  if (generator && !generator->defined())
    throw InvalidArgument("accelerate: " + api + ": the generator given is undefined");
  check_rng_types(state, rng_types, generator.has_value(), api);
  if (state.num_processes() == 1) return;
  for (const std::string& name : rng_types) {
    switch (parse_rng_type(name, api)) {
      case RngType::CPU:
        synchronize_generator(state, at::detail::getDefaultCPUGenerator());
        break;
      case RngType::CUDA: {
        std::vector<at::Tensor> all = compat::cuda_rng_states();
        const auto index = static_cast<size_t>(state.device().index());
        if (index >= all.size())
          throw InvalidArgument("accelerate: " + api + ": no CUDA generator for device " +
                                state.device().str());
        all[index] = broadcast_rng_state(state, all[index]);
        compat::set_cuda_rng_states(all);
        break;
      }
      case RngType::GENERATOR:
        synchronize_generator(state, *generator);
        break;
    }
  }
}

void synchronize_rng_states(const State& state) {
  std::vector<std::string> types{"cpu"};
  if (state.device().type() == c10::kCUDA) types.push_back("cuda");
  synchronize_rng_states(state, types);
}

void clear_device_cache() { compat::empty_cuda_cache(); }

bool should_reduce_batch_size(const std::exception& error) {
  if (dynamic_cast<const std::bad_alloc*>(&error)) return true;
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error)) return true;
  const std::string what = error.what();
  for (const char* marker : {"CUDA out of memory", "DefaultCPUAllocator: can't allocate memory",
                             "CUDNN_STATUS_NOT_SUPPORTED"})
    if (what.find(marker) != std::string::npos) return true;
  return false;
}

}  // namespace accelerate
