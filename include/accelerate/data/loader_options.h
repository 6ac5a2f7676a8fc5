// accelerate/data/loader_options.h: the options of a DataLoader (PyTorch's DataLoader
// arguments: batch size, shuffling, samplers, workers, pinned memory).
#pragma once

#include <ATen/core/Generator.h>

#include <cstdint>
#include <memory>
#include <optional>

#include "accelerate/data/sampler.h"
#include "accelerate/options.h"

namespace accelerate {

/// Options of a `DataLoader` (PyTorch's `DataLoader` arguments), with chained setters.
///
/// Example:
///   auto options = accelerate::DataLoaderOptions().batch_size(64).shuffle(true).seed(0);
struct DataLoaderOptions {
  /// Samples per batch (≥ 1; default 1). With `split_batches` this is the global batch.
  ACCELERATE_ARG(int64_t, batch_size) = 1;
  /// Visit the samples in a new random order every epoch (default false).
  ACCELERATE_ARG(bool, shuffle) = false;
  /// Drop the last batch when it is incomplete (default false).
  ACCELERATE_ARG(bool, drop_last) = false;
  /// Base seed of the shuffling: epoch e uses `torch.Generator().manual_seed(seed + e)`.
  /// Unset: the seed given by `prepare` (shared by all processes), else the default CPU
  /// generator's `current_seed()` at the first pass.
  ACCELERATE_ARG(std::optional<uint64_t>, seed);
  /// Threads that load and collate batches ahead of the training loop (default 0: load in
  /// the loop's thread). Batches come in the same order either way; `get` must then be
  /// safe to call from several threads at once.
  ACCELERATE_ARG(int, num_workers) = 0;
  /// Collate batches into page-locked memory when CUDA is available, so that the copy to
  /// the GPU is asynchronous (default false; nothing happens without CUDA).
  ACCELERATE_ARG(bool, pin_memory) = false;
  /// The order of the samples per epoch (PyTorch's `sampler`; see `Sampler`). Not together
  /// with `shuffle` (accelerate::InvalidArgument, as PyTorch).
  ACCELERATE_ARG(std::shared_ptr<Sampler>, sampler);
  /// The batches per epoch (PyTorch's `batch_sampler`; see `BatchSampler`). Not together with
  /// `batch_size`, `shuffle`, `sampler` or `drop_last` (accelerate::InvalidArgument, as
  /// PyTorch): the batch sampler's own `batch_size()` and `drop_last()` count.
  ACCELERATE_ARG(std::shared_ptr<BatchSampler>, batch_sampler);
  /// With `shuffle`, draw each pass's permutation from this generator, as PyTorch's
  /// `DataLoader(shuffle=True, generator=g)`: each pass draws the iterator's base seed (an
  /// int64) and then `torch.randperm(n, generator=g)`, and a pass that runs to its end draws
  /// one more, unused permutation, as PyTorch's RandomSampler does; the order thus depends on
  /// the generator's state, not on `seed` or `set_epoch`. Copies of the loader share the generator.
  /// A prepared loader gives every process process 0's generator state at the start of each pass
  /// (Accelerate's synchronised generator, `AcceleratorOptions::rng_types` "generator"); restore
  /// its state yourself to resume a shuffled epoch. Not together with `seed`, and only with
  /// `shuffle` (accelerate::InvalidArgument).
  ACCELERATE_ARG(std::optional<at::Generator>, generator);
};

}  // namespace accelerate
