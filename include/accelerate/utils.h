// accelerate/utils.h: small utilities of Accelerate's `accelerate.utils`.
//
// Example:
//   accelerate::set_seed(42);   // same initial weights and random draws on every run
//
//   // Retries with half the batch size each time the function runs out of memory:
//   auto train = accelerate::find_executable_batch_size([&](int64_t batch_size) {
//     accelerator.free_memory();
//     return run_training(batch_size);
//   }, 128);
//   train();
#pragma once

#include <cstdint>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include "accelerate/errors.h"

namespace accelerate {

/// Seeds every random number generator LibTorch uses in this process: the CPU generator and,
/// where CUDA is available, every CUDA device's (Accelerate's `set_seed`). Call it with the
/// same seed on every process for identical initial weights.
void set_seed(uint64_t seed);

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
