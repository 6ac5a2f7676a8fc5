// Internal: BucketsEngine, accelerate-cpp's own gradient synchronisation engine
// (DdpEngine::Buckets, the default; Note [gradient sync engines] in engine.h).
//
// The parameters' gradients are gathered into flat buckets, one contiguous tensor each (per
// dtype and device, 1 MiB for the first, bucket_cap_mb for the others, in the reverse order of
// the parameters: the order gradients become ready). A post-hook on each parameter's gradient
// accumulator marks it ready; a bucket whose parameters are all ready is all-reduced at once,
// asynchronously, through c10d's ProcessGroup::allreduce (Gloo or NCCL), while backward goes
// on; the end of backward waits only for what is still in flight (polling Gloo's works for
// up to `spin` before blocking). With gradient_as_bucket_view, each parameter's .grad *is* its
// slice of the bucket, so accumulation writes straight into the bucket and nothing is copied;
// without it the gradients live in a second buffer that trades places with the all-reduced one
// after each synchronisation.
//
// Values are PyTorch DDP's, bit for bit: each gradient is scaled by 1 / world (multiplied while
// copied in, or divided in place when it already lives in the bucket, as c10d's Reducer does),
// buckets are the same (c10d::compute_bucket_assignment_by_size, rebuilt once in the order the
// gradients arrived), and the same all-reduce sums them.
//
// With a compression hook (`compress`, PyTorch's fp16/bf16_compress_hook) the gradients are
// copied into the bucket unscaled, and the bucket is cast to the compressed dtype, divided by
// the world size there, all-reduced and cast back, as c10d's Reducer does with the hook.
//
// The context's pass_start and pass_end run in the pass (from the first gradient's hook and the
// final autograd callback), and shadow_pass() runs a pass's collectives with zero gradients on a
// process that has no data left (uneven inputs, PyTorch's Join).
//
// Unlike c10d's Reducer the engine is not "armed" before a backward: each backward pass that
// reaches the parameters synchronises when the context's `sync()` says so at its first
// gradient, and leaves no state behind, whatever loss it came from (begin_backward and
// end_backward have nothing to do).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/variable.h>

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "ddp/engine.h"

namespace c10d {
class ProcessGroup;
class Work;
}  // namespace c10d

namespace accelerate::detail {

class BucketsEngine : public GradSyncEngine {
 public:
  explicit BucketsEngine(EngineContext context);
  ~BucketsEngine() override;
  BucketsEngine(const BucketsEngine&) = delete;
  BucketsEngine& operator=(const BucketsEngine&) = delete;

  void begin_backward(const at::Tensor& /*loss*/) override {}
  void end_backward() override {}
  void begin_join() override {}
  void shadow_pass() override;

 protected:
  struct Bucket {
    at::Tensor flat;                // what is all-reduced: contiguous, 1-D
    at::Tensor wire;                // what is all-reduced: flat, or its compressed copy
    at::Tensor grads;               // gradient_as_bucket_view(false): the gradients' storage
                                    // (trades places with `flat` after each all-reduce)
    std::vector<size_t> params;     // indices into params_
    std::vector<at::Tensor> views;  // views[k]: params[k]'s slice of flat, shaped as the param
    std::vector<at::Tensor> homes;  // where params[k]'s .grad lives: views[k], or its slice of
                                    // `grads` without bucket views
    size_t pending = 0;             // parameters not ready yet in this pass
    c10::intrusive_ptr<c10d::Work> work;
  };
  struct Locator {
    size_t bucket = 0;
    size_t position = 0;
  };

  /// Starts `b`'s collective once its gradients are in (b.work): the all-reduce of the whole
  /// bucket, compressed with a compression hook.
  virtual void start_reduction(Bucket& b);
  /// Once every collective of the pass is done: what each parameter's .grad holds (the
  /// averaged gradients; `globally_used[i]` is false for a parameter no process used).
  virtual void hand_back(Bucket& b, const std::vector<char>& globally_used);
  /// shadow_pass's collective for `b`: the one start_reduction launches, over zeros.
  virtual c10::intrusive_ptr<c10d::Work> start_shadow_reduction(const Bucket& b);

  const EngineContext context_;
  const std::vector<at::Tensor>& params_ = context_.params;
  const std::vector<std::string>& names_ = context_.names;
  const c10::intrusive_ptr<c10d::ProcessGroup>& group_ = context_.group;
  const EngineOptions& options_ = context_.options;
  const int world_;

 private:
  void build_buckets(const std::vector<std::vector<size_t>>& assignment);
  void on_gradient(size_t index);  // autograd post-hook of params_[index]'s accumulator
  void mark_ready(size_t index);   // copies / scales into the bucket; launches if full
  void launch_ready_buckets();
  void fill(Bucket& b);           // the gradients, scaled by 1 / world, into b.flat
  void finish_pass();             // queued at the end of a synchronising backward
  void agree_on_arrival_order();  // fills rebuilt_ (one broadcast)
  void reset_pass();

  // A parameter's gradient accumulator: std::shared_ptr<Node> in LibTorch 1.13,
  // c10::intrusive_ptr<Node> in 2.x.
  using Accumulator =
      decltype(torch::autograd::impl::grad_accumulator(std::declval<const at::Tensor&>()));
  std::vector<Accumulator> accumulators_;
  std::vector<uintptr_t> hook_keys_;
  std::vector<Bucket> buckets_;
  std::vector<Locator> locators_;

  std::mutex mutex_;
  // State of the backward pass in progress (reset by finish_pass).
  bool in_pass_ = false;
  std::vector<char> ready_;  // per parameter, this pass
  size_t next_launch_ = 0;
  std::vector<int64_t> arrival_;  // order of the first synchronising pass, for the rebuild
  bool arrival_agreed_ = false;
  BucketLayout rebuilt_;  // built at the next synchronising pass when not empty
  at::Tensor used_;       // find_unused: 1 where a gradient was produced since the last sync
};

}  // namespace accelerate::detail
