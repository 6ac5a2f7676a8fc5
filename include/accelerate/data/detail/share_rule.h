// accelerate/data/detail/share_rule.h: the one rule of which samples each process gets; not
// for users (see shard_batches and friends in accelerate/data/sharding.h).
//
// Note [one sharding rule]: every way a pass is shared out reads its samples (or, for a
// dispatched pass, the rows of process 0's batches) in global steps, the samples all processes
// consume in one training step, and gives process p a slice of each step. Only the last step
// can be incomplete; the rule says what then happens to it: dropped (drop_last), cut short
// (BatchSamplerShard without even_batches), completed to a whole step from the first step's
// samples (BatchSamplerShard with even_batches, IterableDatasetShard) or completed to a
// multiple of the number of processes (DataLoaderDispatcher). shard_batches, shard_num_batches,
// shard_iterable, DataLoaderBase::size, StreamBatcher and the dispatcher all ask
// `share_of_step`; only a batch sampler's arbitrary batches go through the port of
// BatchSamplerShard itself.
#pragma once

#include <cstdint>
#include <vector>

#include "accelerate/data/loader_options.h"
#include "accelerate/data/sharding.h"

namespace accelerate::detail {

/// How an incomplete last step is completed.
enum class Pad {
  None,  ///< cut short: each process keeps what is left of its slice
  Step,  ///< to a whole step, from the first step's samples, repeated as needed
  Rows,  ///< to a multiple of the number of processes, slices of equal length
};

/// How a pass's samples are shared out (Note [one sharding rule]).
struct ShareRule {
  int64_t step = 1;        ///< samples in a whole global step
  int64_t per = 1;         ///< samples of a whole step that one process gets
  int num_processes = 1;   ///< processes sharing each step
  int process_index = 0;   ///< this process
  bool drop_last = false;  ///< an incomplete last step is dropped
  Pad pad = Pad::None;     ///< else how it is completed
};

/// This process's part of one global step: samples [begin, begin + length) of the step, whose
/// first `real` samples are the step's own and the next `padded` ones repeat earlier samples.
struct Share {
  int64_t begin = 0;   ///< first sample of the slice, within the step
  int64_t length = 0;  ///< samples of the slice; 0: this process gets nothing of the step
  int64_t padded = 0;  ///< samples appended to complete the step (0 for a whole step)
};

/// The rule: what this process gets of a step holding `real` samples (fewer than
/// `rule.step` only at the end of a pass; with Pad::Rows, any number), `last` when no step
/// follows it.
Share share_of_step(const ShareRule& rule, int64_t real, bool last);

/// The rule of a map-style loader (Accelerate's BatchSamplerShard over plain batches of
/// `batching`): whole batches per process, or slices of one batch with split_batches, an
/// incomplete last step padded with even_batches; plain batches with one process.
ShareRule sample_rule(const DataLoaderOptions& batching, const ShardingOptions& sharding);

/// The rule of an iterable data set read by every process (Accelerate's IterableDatasetShard,
/// which always pads), or plain batches when not `shard`.
ShareRule stream_rule(const DataLoaderOptions& batching, const ShardingOptions& sharding,
                      bool shard);

/// The rule of a dispatched loader over the rows of process 0's global batches (`step` and
/// `per` unused: the rows of each global batch are split evenly).
ShareRule dispatch_rule(bool drop_last, const ShardingOptions& sharding);

/// The shares of a pass over `n` samples, step by step (steps whose share is empty left out),
/// each as its first sample in the padded stream (the samples, then the padding) and length.
struct Span {
  int64_t start = 0;   ///< first sample: an index >= n is padding
  int64_t length = 0;  ///< samples
};
std::vector<Span> share_spans(int64_t n, const ShareRule& rule);

/// `share_spans(n, rule).size()` without the list: the whole steps, then the last one if this
/// process gets a share of it (only the last step can be incomplete). Not for Pad::Rows.
int64_t count_shares(int64_t n, const ShareRule& rule);

}  // namespace accelerate::detail
