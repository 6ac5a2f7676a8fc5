// accelerate/data/sampler.h: the order of a loader's samples or batches per epoch.
//
// `Sampler` and `BatchSampler` are PyTorch's `sampler=` and `batch_sampler=` arguments of a
// `DataLoader` (DataLoaderOptions::sampler, ::batch_sampler); `shuffled_indices` is the
// permutation a shuffled loader visits, equal to Python's for the same seed.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace accelerate {

/// A custom order of sample indices per epoch: PyTorch's `sampler=` argument (a
/// `torch.utils.data.Sampler` with `set_epoch`). The loader batches the indices it returns
/// (batch_size, drop_last) and, once prepared, shards those batches as Accelerate's
/// `BatchSamplerShard` does. Use it for weighted or subset sampling.
///
/// `indices(epoch)` must depend on the epoch only: a prepared loader calls it on every process
/// and they must agree, and `size()`, `resume_from` and `skip_first_batches` call it again for
/// the same epoch. Draw random orders from a generator seeded with a seed shared by all
/// processes plus the epoch.
///
/// Example (a random half of the data set, a new half every epoch):
///   struct RandomHalf : accelerate::Sampler {
///     std::vector<int64_t> indices(int64_t epoch) override {
///       auto all = accelerate::shuffled_indices(1000, 1234 + epoch);
///       return {all.begin(), all.begin() + 500};
///     }
///   };
///   accelerate::TensorDataset data(torch::randn({1000, 4}), torch::randn({1000, 1}));
///   auto options =
///       accelerate::DataLoaderOptions().batch_size(32).sampler(std::make_shared<RandomHalf>());
///   accelerate::DataLoader<accelerate::TensorDataset> loader(data, options);
class Sampler {
 public:
  virtual ~Sampler() = default;
  /// The sample indices to visit in epoch `epoch`, in order (Python's `list(sampler)` after
  /// `sampler.set_epoch(epoch)`). Indices may repeat and need not cover the data set; each
  /// must be in [0, dataset size) (the loader throws accelerate::InvalidArgument otherwise).
  virtual std::vector<int64_t> indices(int64_t epoch) = 0;
};

/// A custom list of batches per epoch: PyTorch's `batch_sampler=` argument (e.g. bucketing
/// samples of similar length). A prepared loader shards these batches exactly as
/// Accelerate's `BatchSamplerShard` shards a batch sampler, using its `batch_size()` and
/// `drop_last()` (Python's `batch_sampler.batch_size` and `.drop_last`): without split_batches
/// each process takes every num_processes-th batch and, with even_batches, the last round is
/// completed from the first batches; split_batches cuts each batch of `batch_size()` samples
/// into one slice per process (it needs a `batch_size()`). As with `Sampler`, `batches(epoch)`
/// must depend on the epoch only.
///
/// Example (batches of samples of similar length):
///   struct ByLength : accelerate::BatchSampler {
///     std::vector<std::vector<int64_t>> batches(int64_t epoch) override {
///       return {{0, 3, 5}, {1, 2}, {4, 6, 7, 8}};  // any lists of sample indices
///     }
///   };
///   accelerate::TensorDataset data(torch::randn({9, 4}), torch::randn({9, 1}));
///   auto options = accelerate::DataLoaderOptions().batch_sampler(std::make_shared<ByLength>());
///   accelerate::DataLoader<accelerate::TensorDataset> loader(data, options);
class BatchSampler {
 public:
  virtual ~BatchSampler() = default;
  /// The batches (lists of sample indices, each in [0, dataset size)) of epoch `epoch`.
  virtual std::vector<std::vector<int64_t>> batches(int64_t epoch) = 0;
  /// The nominal batch size, or nullopt (the default) for batches of any length. Sharding
  /// treats a batch shorter than this as incomplete, as Accelerate does.
  virtual std::optional<int64_t> batch_size() const { return std::nullopt; }
  /// True when the sampler drops its incomplete last batch (default false); a prepared
  /// loader then drops an incomplete last round instead of completing it.
  virtual bool drop_last() const { return false; }
};

/// A random permutation of [0, n) equal to Python's
/// `torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()`.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

}  // namespace accelerate
