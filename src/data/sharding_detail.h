// The checks and the batch-sampler port that src/data/sharding.cpp shares with the loader.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "accelerate/data/loader_options.h"
#include "accelerate/data/sharding.h"

namespace accelerate::detail {

using Batches = std::vector<std::vector<int64_t>>;

/// InvalidArgument unless batch_size >= 1.
void check_batch_size(const DataLoaderOptions& batching);
/// InvalidArgument unless num_processes >= 1 and process_index in [0, num_processes).
void check_sharding(const ShardingOptions& sharding);
/// Both of the above, and split_batches with a batch size that divides among the processes.
void check_batching(const DataLoaderOptions& batching, const ShardingOptions& sharding);
/// split_batches of a batch sampler: it needs a batch size that divides among the processes.
void check_batch_sampler_split(std::optional<int64_t> batch_size, const ShardingOptions& sharding);

/// This process's batches of a batch sampler's `batches` (Accelerate's BatchSamplerShard), and
/// in `remainder` the real samples of the last step over all processes when that step was
/// completed with repeated samples, else -1.
Batches shard_batch_sampler_with_remainder(const Batches& batches,
                                           std::optional<int64_t> batch_size, bool drop_last,
                                           const ShardingOptions& sharding, int64_t& remainder);

}  // namespace accelerate::detail
