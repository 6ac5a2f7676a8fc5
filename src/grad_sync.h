// Internal: accelerate-cpp's own gradient synchronisation engine (DdpEngine::Buckets).
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
// `pass_end` runs at the end of each synchronising pass, after its collectives (the DDP engine
// refreshes the module's buffers from process 0 there: see ddp.cpp).
//
// For uneven inputs (PyTorch's Join), `pass_start` runs at the start of each synchronising
// pass before any of its collectives, and `shadow_pass()` runs a pass's collectives with zero
// gradients on a process that has no data left.
//
// Unlike c10d's Reducer the engine is not "armed" before a backward: each backward pass that
// reaches the parameters synchronises when `sync()` says so at its first gradient, and leaves
// no state behind, whatever loss it came from.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/variable.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace c10d {
class ProcessGroup;
class Work;
}  // namespace c10d

namespace accelerate::detail {

struct GradSyncOptions {
  size_t first_bucket_bytes = 1024 * 1024;
  size_t bucket_bytes = 25 * 1024 * 1024;
  bool find_unused_parameters = false;
  bool gradient_as_bucket_view = false;
  bool static_graph = false;
  /// How long the end of backward polls a CPU all-reduce before blocking on it (0: block).
  std::chrono::microseconds spin{0};
  /// The dtype of a compression hook (kHalf, kBFloat16); unset: plain all-reduce.
  std::optional<at::ScalarType> compress;
};

class BucketedGradSync {
 public:
  /// `params`: the trained parameters (requires_grad), `names[i]` naming params[i] in errors.
  /// `sync` tells, at the first gradient of a backward pass, whether that pass synchronises.
  /// `where` prefixes error messages ("rank 1 of 2").
  BucketedGradSync(std::vector<at::Tensor> params, std::vector<std::string> names,
                   c10::intrusive_ptr<c10d::ProcessGroup> group, GradSyncOptions options,
                   std::function<bool()> sync, std::string where);
  ~BucketedGradSync();
  BucketedGradSync(const BucketedGradSync&) = delete;
  BucketedGradSync& operator=(const BucketedGradSync&) = delete;

  /// Runs `fn` at the start of every synchronising pass, before its first collective (null:
  /// nothing). What it throws leaves the pass unstarted.
  void set_pass_start(std::function<void()> fn);
  /// Runs `fn` at the end of every synchronising pass, after its gradient collectives and
  /// before the pass's own errors are thrown, on every process alike (null: nothing). Not run
  /// by shadow_pass(): a process without data runs the matching collectives itself.
  void set_pass_end(std::function<void()> fn);
  /// The collectives of one synchronising pass, in the same order, with zero gradients: what a
  /// process without data runs to match the others' pass. Leaves the gradients alone.
  void shadow_pass();

 private:
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

  void build_buckets(const std::vector<std::vector<size_t>>& assignment);
  void on_gradient(size_t index);  // autograd post-hook of params_[index]'s accumulator
  void mark_ready(size_t index);   // copies / scales into the bucket; launches if full
  void launch_ready_buckets();
  void fill(Bucket& b);  // the gradients, scaled by 1 / world, into b.flat
  void hand_back(Bucket& b, const std::vector<char>& globally_used);
  void finish_pass();             // queued at the end of a synchronising backward
  void agree_on_arrival_order();  // fills rebuilt_buckets_ (one broadcast)
  void reset_pass();

  std::vector<at::Tensor> params_;
  std::vector<std::string> names_;
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  const GradSyncOptions options_;
  const std::function<bool()> sync_;
  const std::string where_;
  const int world_;
  std::function<void()> pass_start_;
  std::function<void()> pass_end_;

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
  bool rebuilt_ = false;
  std::vector<std::vector<size_t>> rebuilt_buckets_;  // built at the next synchronising pass
  at::Tensor used_;  // find_unused: 1 where a gradient was produced since the last sync
};

}  // namespace accelerate::detail
