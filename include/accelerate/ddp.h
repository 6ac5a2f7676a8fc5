// accelerate/ddp.h: distributed data parallel for a user's own torch::nn::Module.
//
// `DistributedDataParallel` attaches a gradient synchronisation engine to a module the user
// keeps calling directly (`model->forward(x)`, any signature). Gradients come out averaged
// over the processes, with the values of PyTorch's DDP. Two engines (`engine` option):
//   DdpEngine::Buckets (default): accelerate-cpp's own. Gradients are gathered in flat buckets
//     (25 MiB, the first 1 MiB, as PyTorch's DDP), each all-reduced through c10d as soon as
//     its gradients are ready while backward goes on; with gradient_as_bucket_view (default
//     here) each .grad is a view into its bucket and nothing is copied. Every backward that
//     reaches the parameters synchronises unless no_sync is on, whatever started it.
//   DdpEngine::Reducer: c10d's DDP engine (`c10d::Reducer`, the one PyTorch's DDP uses). It
//     is armed for each backward pass through `before_backward(loss)`, and refreshes the
//     buffers in `after_backward()`, which `Accelerator::backward` calls.
// Buffers (BatchNorm's running statistics) are copied from process 0 at the end of each
// synchronising backward: each forward then starts from process 0's buffers, as in PyTorch.
//
// Example (what Accelerator::prepare and backward do for you):
//   accelerate::DistributedDataParallel ddp(model, state,
//                                           accelerate::DistributedDataParallelOptions());
//   auto loss = model->forward(x).sum();
//   ddp.before_backward(loss);
//   loss.backward();              // gradients are now the average over all processes
//   ddp.after_backward();
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "accelerate/options.h"
#include "accelerate/state.h"

namespace torch::nn {
class Module;
}

namespace accelerate {
namespace detail {
class GradSyncEngine;
}

/// Which engine synchronises gradients.
enum class DdpEngine {
  /// accelerate-cpp's bucketed engine over c10d collectives (default).
  Buckets,
  /// c10d's Reducer, as PyTorch's DistributedDataParallel (kept for comparison).
  Reducer,
};

/// A DDP communication hook: how each gradient bucket is all-reduced (Accelerate's
/// `DDPCommunicationHookType`, PyTorch's `ddp_comm_hooks.default_hooks`).
enum class CommHook {
  /// Plain all-reduce in the gradients' own dtype (default).
  NO,
  /// `fp16_compress_hook`: each bucket is cast to float16, divided by the number of processes,
  /// all-reduced in float16 and cast back into the bucket (half the bytes on the wire).
  FP16,
  /// `bf16_compress_hook`: the same in bfloat16. Needs a backend that all-reduces bfloat16
  /// (NCCL, or Gloo from LibTorch 2: Debian's LibTorch 1.13 Gloo cannot, which prepare reports).
  BF16,
};

/// Options of the DDP engine, as PyTorch's DistributedDataParallel arguments.
struct DistributedDataParallelOptions {
  /// The gradient synchronisation engine (default DdpEngine::Buckets).
  ACCELERATE_ARG(DdpEngine, engine) = DdpEngine::Buckets;
  /// Size of a gradient bucket in MiB (default 25).
  ACCELERATE_ARG(double, bucket_cap_mb) = 25.0;
  /// Traverse the autograd graph at each backward to find parameters that got no gradient.
  ACCELERATE_ARG(bool, find_unused_parameters) = false;
  /// Make each parameter's .grad a view into its bucket (saves a copy in and out, and the
  /// memory of one set of gradients). Default true, where PyTorch's default is false: the
  /// values are the same.
  ACCELERATE_ARG(bool, gradient_as_bucket_view) = true;
  /// The set of used parameters and the graph never change (lets the engine optimise).
  ACCELERATE_ARG(bool, static_graph) = false;
  /// DdpEngine::Buckets on the CPU: how long the end of backward polls the Gloo all-reduces
  /// (yielding the core) before it blocks on them, in microseconds (default 10,000; 0 blocks
  /// at once). Polling keeps the core awake: on few cores, being woken from a blocked wait
  /// often costs more than a small all-reduce itself (bench/RESULTS.md).
  ACCELERATE_ARG(int64_t, spin_wait_us) = 10000;
  /// Copy buffers (e.g. BatchNorm running statistics) from process 0 into every process at the
  /// end of each synchronising backward pass (default true), so that each forward after it
  /// starts from process 0's buffers, as PyTorch's DDP copies them at the start of the forward
  /// that follows a synchronising one. The copy does not bump the buffers' version counters,
  /// so a graph kept with retain_graph still runs its backward.
  ACCELERATE_ARG(bool, broadcast_buffers) = true;
  /// Communication hook of the gradient all-reduce (Accelerate's
  /// `DistributedDataParallelKwargs(comm_hook=...)`; default CommHook::NO). Both engines give
  /// the values of PyTorch's DDP with the same hook registered. Not with complex parameters
  /// (the cast would drop their imaginary part): prepare throws InvalidArgument.
  ///
  /// Example:
  ///   acc::AcceleratorOptions().ddp_options(
  ///       acc::DistributedDataParallelOptions().comm_hook(acc::CommHook::FP16));
  ACCELERATE_ARG(CommHook, comm_hook) = CommHook::NO;
};

/// The DDP engine of one module. With one process it only keeps the module; all its verbs
/// are no-ops. Not copyable or movable.
class DistributedDataParallel {
 public:
  /// Checks that every process has the same parameter shapes (std::runtime_error naming the
  /// mismatch otherwise), broadcasts parameters and buffers from process 0, and builds the
  /// gradient buckets over the parameters that require gradients.
  DistributedDataParallel(std::shared_ptr<torch::nn::Module> module, const State& state,
                          const DistributedDataParallelOptions& options);
  ~DistributedDataParallel();
  DistributedDataParallel(const DistributedDataParallel&) = delete;
  DistributedDataParallel& operator=(const DistributedDataParallel&) = delete;

  /// To be called before `loss.backward()`: with DdpEngine::Reducer, when gradient
  /// synchronisation is on and the loss reaches the module, arms the engine so that this
  /// backward all-reduces the gradients. Nothing with DdpEngine::Buckets, which decides at
  /// the first gradient of each backward.
  void before_backward(const at::Tensor& loss);
  /// To be called after `loss.backward()` returned: with DdpEngine::Reducer, when that
  /// backward synchronised, copies process 0's buffers into every process (DdpEngine::Buckets
  /// does it itself at the end of each synchronising backward).
  void after_backward();
  /// Turns gradient synchronisation on or off for the following backward passes (no_sync).
  void set_require_backward_grad_sync(bool value) { require_backward_grad_sync_ = value; }
  /// Whether the next backward synchronises gradients.
  bool require_backward_grad_sync() const { return require_backward_grad_sync_; }
  /// True when the loss's autograd graph reaches one of this module's trained parameters.
  bool is_reached_by(const at::Tensor& loss) const;
  /// The module.
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

  // ---- uneven inputs (PyTorch's `Join` with DDP's join hook; see JoinGuard in sync_guards.h)
  /// Enters join mode: from now on, each synchronising backward first tells the processes
  /// that have run out of data (an all-reduce of 1), then, with buffers to broadcast, takes
  /// them from the highest process still training. No-op with one process or nothing to
  /// synchronise. DdpEngine::Reducer: InvalidArgument (c10d's Reducer offers no join in C++).
  void begin_join();
  /// Leaves join mode on this process, which has run out of data: until every process has
  /// left, shadows each synchronising step of the others (the same collectives, with zero
  /// gradients, so gradients are divided by the initial number of processes); then copies
  /// the parameters (and buffers) of the last process to leave to all. A collective: every
  /// process must reach it. Throws DistributedError when a collective fails.
  void end_join();
  /// Leaves join mode without any collective (an exception is leaving the guard).
  void abandon_join();
  /// True between begin_join() and end_join() / abandon_join().
  bool joining() const { return joining_; }

 private:
  struct Peers;  // the process group, the buffers, join mode's collectives; null with one process
  std::shared_ptr<torch::nn::Module> module_;
  std::unique_ptr<Peers> peers_;
  std::unique_ptr<detail::GradSyncEngine> engine_;  // null with one process or nothing trained
  bool require_backward_grad_sync_ = true;
  bool joining_ = false;
};

}  // namespace accelerate
