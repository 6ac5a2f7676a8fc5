// Internal: the interface of a gradient synchronisation engine, what DistributedDataParallel
// (ddp.cpp) drives, and what each engine is built over.
//
// Note [gradient sync engines]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// DistributedDataParallel owns what is the same for every engine: the check that every process
// has the same model, the broadcast of parameters and buffers, the buffers' refresh at the end
// of each synchronising pass, and join mode's collectives (the notify all-reduce, the count of
// processes still training, the final model broadcast). An engine owns what happens to the
// gradients during a synchronising backward pass, through a few verbs:
//   begin_backward(loss) / end_backward()  around `loss.backward()` in Accelerator::backward;
//   begin_join()                           join mode starts (an engine that cannot join throws);
//   shadow_pass()                          a process without data runs the collectives of one
//                                          pass with zero gradients, as the others run theirs.
// At the start of each synchronising pass an engine calls EngineContext::pass_start (before its
// first collective), at its end EngineContext::pass_end (after its gradient collectives), on
// every process alike. Whether a pass synchronises is EngineContext::sync's answer (no_sync).
//
// Two engines: BucketsEngine (buckets_engine.h, DdpEngine::Buckets, accelerate-cpp's own, the
// default) and ReducerEngine (reducer_engine.h, DdpEngine::Reducer, c10d's Reducer).
//
// A sharded engine (ZeRO stages 1 and 2) implements the same verbs. It takes its buckets from
// bucket_layout.h, pads each to a multiple of the world size and gives each process a shard of
// every bucket; where BucketsEngine all-reduces a full bucket (BucketsEngine::start_reduction)
// it reduce-scatters it into the owner's shard, and where BucketsEngine hands every process the
// averaged gradients (BucketsEngine::hand_back) it leaves .grad defined only for the parameters
// (or their slices) the process owns, dropping the others after the reduce. Its shadow_pass
// runs the same reduce-scatters with zeros. The optimizer that steps only the owned shard and
// all-gathers the parameters after the step is not the engine's: the engine's contract ends at
// "after backward, .grad holds what this process's optimizer steps on".
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "ddp/bucket_layout.h"

namespace c10d {
class ProcessGroup;
}

namespace accelerate::detail {

/// PyTorch's DDP broadcasts parameters and buffers in chunks of this size.
constexpr size_t kBroadcastBucketBytes = 250 * 1024 * 1024;

/// The options of an engine, resolved from DistributedDataParallelOptions.
struct EngineOptions {
  BucketSizes bucket_sizes;
  bool find_unused_parameters = false;
  bool gradient_as_bucket_view = false;
  bool static_graph = false;
  /// How long the end of backward polls a CPU collective before blocking on it (0: block).
  std::chrono::microseconds spin{0};
  /// The dtype of the compression hook (kHalf, kBFloat16); unset: plain all-reduce.
  std::optional<at::ScalarType> compress;
};

/// What an engine is built over.
struct EngineContext {
  /// The trained parameters (requires_grad); names[i] names params[i] in errors.
  std::vector<at::Tensor> params;
  std::vector<std::string> names;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  EngineOptions options;
  /// Asked at the start of a backward pass: whether it synchronises (false under no_sync).
  std::function<bool()> sync;
  /// Run before a synchronising pass's first collective; what it throws leaves the pass
  /// unstarted.
  std::function<void()> pass_start;
  /// Run after a synchronising pass's gradient collectives, on every process alike (not by
  /// shadow_pass: a process without data runs the matching collectives itself).
  std::function<void()> pass_end;
  /// Prefixes error messages ("rank 1 of 2").
  std::string where;
};

/// A gradient synchronisation engine (Note [gradient sync engines]).
class GradSyncEngine {
 public:
  virtual ~GradSyncEngine() = default;
  /// Before `loss.backward()`, from Accelerator::backward.
  virtual void begin_backward(const at::Tensor& loss) = 0;
  /// After `loss.backward()` returned.
  virtual void end_backward() = 0;
  /// Join mode starts: from now on shadow_pass() may be called. Throws InvalidArgument when
  /// the engine cannot join.
  virtual void begin_join() = 0;
  /// The collectives of one synchronising pass, in the same order, with zero gradients: what a
  /// process without data runs to match the others' pass. Leaves the gradients alone.
  virtual void shadow_pass() = 0;
};

}  // namespace accelerate::detail
