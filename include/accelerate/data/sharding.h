// accelerate/data/sharding.h: which batches each process gets.
//
// `ShardingOptions` are the arguments of Accelerate's `BatchSamplerShard` and
// `IterableDatasetShard` (processes, split_batches, even_batches) plus where a prepared loader
// puts its batches; the functions below cut a list of samples or batches the way Accelerate
// does, so a program can see its share without a loader. `LoaderPosition` is how far a loader
// has come, what a checkpoint saves.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accelerate/data/loader_options.h"
#include "accelerate/options.h"

namespace accelerate {

/// How a loader's batches are distributed over processes: the arguments of Accelerate's
/// `BatchSamplerShard`, which `shard_batches` takes, plus where a loader prepared with
/// `DataLoader::shard` puts its batches and the seed it shuffles with: values only (what the
/// loader calls while it runs comes from a `DataContext`). With chained setters;
/// `Accelerator::prepare` fills it.
///
/// Example:
///   auto sharding = accelerate::ShardingOptions().num_processes(2).process_index(1);
struct ShardingOptions {
  /// Processes sharing the data (≥ 1; default 1: no sharding, plain batches).
  ACCELERATE_ARG(int, num_processes) = 1;
  /// This process, in [0, num_processes) (default 0).
  ACCELERATE_ARG(int, process_index) = 0;
  /// Cut each global batch of `batch_size` into one slice per process (Accelerate's
  /// `split_batches`; batch_size must be a multiple of num_processes) instead of giving each
  /// process whole batches (default false).
  ACCELERATE_ARG(bool, split_batches) = false;
  /// Wrap around to the start so that every process gets the same number of full batches
  /// (default true).
  ACCELERATE_ARG(bool, even_batches) = true;
  /// Where a prepared loader moves every batch (default CPU). Off the CPU, the loader loads
  /// batch i + 1 and queues its copy (non-blocking with `pin_memory`) before yielding batch
  /// i, as Accelerate's `DataLoaderShard`; what loading it throws is thrown on reaching it.
  ACCELERATE_ARG(c10::Device, device) = c10::kCPU;
  /// Shuffling seed shared by all processes; overrides an unset `DataLoaderOptions::seed`.
  ACCELERATE_ARG(std::optional<uint64_t>, seed);
  /// Accelerate's `dispatch_batches`: true, process 0 reads whole batches and sends each
  /// process its slice (`DataLoaderDispatcher`); false, every process reads its own share
  /// (`BatchSamplerShard`, or `IterableDatasetShard` for an iterable data set). Unset (the
  /// default): dispatch iterable data sets and shard map-style ones, as Accelerate 1.15 does
  /// with its batches placed on the device. Dispatching over several processes needs a
  /// `DataContext` with collectives (`DataLoader::shard`'s second argument).
  ACCELERATE_ARG(std::optional<bool>, dispatch_batches);
};

/// Where a loader stands: `batches` of epoch `epoch` have been consumed.
struct LoaderPosition {
  /// The epoch (pass number) of the current or next pass.
  int64_t epoch = 0;
  /// Batches of that pass already consumed, counting skipped ones.
  int64_t batches = 0;
};

/// The batches (lists of sample indices) that process `sharding.process_index()` gets from
/// samples visited in `order`, exactly as Accelerate's `BatchSamplerShard` over
/// `BatchSampler(order, batch_size, drop_last)`, with the batch size and drop_last of
/// `batching` (its other options play no part). With one process: plain batches. Throws
/// std::invalid_argument for a batch size < 1, a bad process index, or `split_batches` with a
/// batch size that is not a multiple of the number of processes.
///
/// Example:
///   std::vector<int64_t> order(22);
///   std::iota(order.begin(), order.end(), 0);
///   auto b = accelerate::shard_batches(order, accelerate::DataLoaderOptions().batch_size(3),
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // b == {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21, 0, 1}}
std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order,
                                                const DataLoaderOptions& batching,
                                                const ShardingOptions& sharding);

/// `shard_batches(order, batching, sharding).size()` for any order of `dataset_size` samples,
/// without building the lists.
int64_t shard_num_batches(int64_t dataset_size, const DataLoaderOptions& batching,
                          const ShardingOptions& sharding);

/// The batches that process `sharding.process_index()` gets from `batches`, exactly as
/// Accelerate's `BatchSamplerShard` over a batch sampler yielding `batches` whose `batch_size`
/// is `batch_size` (nullopt: None, batches of any length) and whose `drop_last` is
/// `drop_last`. With one process: `batches` unchanged. Throws accelerate::InvalidArgument for
/// a bad process index, and for `split_batches` without a batch size or with one that is not
/// a multiple of the number of processes.
///
/// Example:
///   auto b = accelerate::shard_batch_sampler({{0, 1}, {2, 3}, {4, 5}}, 2, false,
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // b == {{2, 3}, {0, 1}}: the last round completed from the start
std::vector<std::vector<int64_t>> shard_batch_sampler(
    const std::vector<std::vector<int64_t>>& batches, std::optional<int64_t> batch_size,
    bool drop_last, const ShardingOptions& sharding);

/// The samples that process `sharding.process_index()` reads from a stream yielding
/// `stream`, exactly as Accelerate's `IterableDatasetShard(stream, batch_size, drop_last,
/// num_processes, process_index, split_batches)` with the batch size and drop_last of
/// `batching`: of every buffer of batch_size × num_processes samples (batch_size with
/// split_batches) it takes its slice; the last incomplete buffer is dropped with drop_last,
/// else completed with the samples of the first buffer. With one process: `stream`, as
/// Accelerate leaves the data set alone. Throws accelerate::InvalidArgument as shard_batches.
///
/// Example:
///   std::vector<int64_t> stream(10);
///   std::iota(stream.begin(), stream.end(), 0);
///   auto mine = accelerate::shard_iterable(stream, accelerate::DataLoaderOptions().batch_size(2),
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // mine == {2, 3, 6, 7, 0, 1}
std::vector<int64_t> shard_iterable(const std::vector<int64_t>& stream,
                                    const DataLoaderOptions& batching,
                                    const ShardingOptions& sharding);

}  // namespace accelerate
