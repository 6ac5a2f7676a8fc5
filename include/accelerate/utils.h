// accelerate/utils.h: small utilities of Accelerate's `accelerate.utils`.
//
// Example:
//   accelerate::set_seed(42);   // same initial weights and random draws on every run
//   accelerate::set_seed(42, /*device_specific=*/true);   // 42 + process index on each process
//
//   // Retries with half the batch size each time the function runs out of memory:
//   auto train = accelerate::find_executable_batch_size([&](int64_t batch_size) {
//     accelerator.free_memory();
//     return run_training(batch_size);
//   }, 128);
//   train();
//
//   // The same random draws on every process from here on (process 0's states):
//   accelerate::synchronize_rng_states(accelerator.state());
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>
#include "accelerate/errors.h"

namespace accelerate {

/// Seeds every random number generator LibTorch uses in this process: the CPU generator and,
/// where CUDA is available, every CUDA device's (Accelerate's `set_seed`). Call it with the
/// same seed on every process for identical initial weights.
///
/// With `device_specific` true, each process seeds with `seed + process index` instead
/// (Accelerate's `set_seed(seed, device_specific=True)`), e.g. for random augmentation or
/// dropout that must differ between processes. The process index is the one a `State` would
/// resolve from this process's environment (RANK from torchrun or `accelerate-cpp launch`,
/// else OMPI_COMM_WORLD_RANK or SLURM_PROCID; 0 without a launcher), read at each call, so it
/// can be called before the Accelerator is made; a malformed environment throws
/// accelerate::InvalidArgument as the State would. A program that gives its Accelerator the
/// environment in code (AcceleratorOptions::environment) calls
/// `set_seed(seed + accelerator.process_index())` instead.
///
/// Example:
///   accelerate::set_seed(42);                              // the same weights everywhere
///   accelerate::set_seed(42, /*device_specific=*/true);    // process k: seed 42 + k
void set_seed(uint64_t seed, bool device_specific = false);

class State;

/// Makes the random states of every process equal to process 0's (Accelerate's
/// `synchronize_rng_states`): one broadcast per type, in the order given. The types are
/// Accelerate's: "cpu" (also "torch", Accelerate's RNGType.TORCH: LibTorch's default CPU
/// generator), "cuda" (the default generator of this process's CUDA device, state.device();
/// needs one) and "generator" (`generator`, which must then be given). A collective: call it
/// on every process with the same types. With one process it only checks its arguments. Throws
/// accelerate::InvalidArgument naming an unknown type, "cuda" without a CUDA device, or
/// "generator" without a generator, before anything is sent.
///
/// Example:
///   at::Generator noise = at::detail::createCPUGenerator(1234 + accelerator.process_index());
///   accelerate::synchronize_rng_states(accelerator.state(), {"cpu", "generator"}, noise);
///   // torch::rand({3}) and torch::rand({3}, noise) now draw the same on every process
void synchronize_rng_states(const State& state, const std::vector<std::string>& rng_types,
                            std::optional<at::Generator> generator = std::nullopt);

/// synchronize_rng_states(state, {"cpu"}), and "cuda" too when state.device() is a CUDA
/// device.
void synchronize_rng_states(const State& state);

/// Checks `rng_types` as synchronize_rng_states does (names, "cuda" without a CUDA device on
/// `state`, "generator" only when `has_generator`); throws accelerate::InvalidArgument naming
/// `api` and the bad type.
void check_rng_types(const State& state, const std::vector<std::string>& rng_types,
                     bool has_generator, const std::string& api);

/// Returns cached, unused device memory to the system (CUDA's caching allocator); no-op on
/// the CPU. Accelerate's `clear_device_cache`.
void clear_device_cache();

/// True when `error` says the program ran out of memory: c10::OutOfMemoryError, "CUDA out of
/// memory", "DefaultCPUAllocator: can't allocate memory", cuDNN's CUDNN_STATUS_NOT_SUPPORTED,
/// or std::bad_alloc (Accelerate's `should_reduce_batch_size`).
bool should_reduce_batch_size(const std::exception& error);

/// Wraps `fn(batch_size, args...)`: the returned callable calls it with `starting_batch_size`
/// and, each time it throws an out-of-memory error (should_reduce_batch_size), clears the
/// device cache and calls it again with 90% of the batch size (rounded down, as Accelerate:
/// 128, 115, 103, ...). Other exceptions pass through.
/// The batch size that worked is kept for later calls of the same callable. Throws
/// std::runtime_error when the batch size reaches zero. Each process searches on its own: with
/// several processes make `fn` fail on all of them alike (e.g. reduce a failure flag).
template <typename F>
auto find_executable_batch_size(F fn, int64_t starting_batch_size = 128) {
  if (starting_batch_size <= 0)
    throw InvalidArgument("accelerate: find_executable_batch_size: starting_batch_size " +
                          std::to_string(starting_batch_size) + " is not positive");
  return [fn = std::move(fn), batch_size = starting_batch_size](auto&&... args) mutable {
    clear_device_cache();
    while (true) {
      if (batch_size == 0)
        throw std::runtime_error(
            "accelerate: find_executable_batch_size: no executable batch size found, reached "
            "zero");
      try {
        return fn(batch_size, args...);
      } catch (const std::exception& e) {
        if (!should_reduce_batch_size(e)) throw;
        clear_device_cache();
        batch_size = static_cast<int64_t>(static_cast<double>(batch_size) * 0.9);
      }
    }
  };
}

}  // namespace accelerate
