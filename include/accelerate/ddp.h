// accelerate/ddp.h: distributed data parallel for a user's own torch::nn::Module.
//
// `DistributedDataParallel` attaches c10d's DDP engine (`c10d::Reducer`, the one PyTorch's
// DDP uses: gradient buckets of 25 MB, the first of 1 MB, all-reduced while backward is still
// running) to a module the user keeps calling directly (`model->forward(x)`, any signature).
// Because there is no forward wrapper to hook, the engine is told about each backward pass
// through `before_backward(loss)`, which `Accelerator::backward` calls. Gradients come out
// averaged over the processes, as with PyTorch's DDP.
//
// Example (what Accelerator::prepare and backward do for you):
//   accelerate::DistributedDataParallel ddp(model, state,
//   accelerate::DistributedDataParallelOptions()); auto loss = model->forward(x).sum();
//   ddp.before_backward(loss);
//   loss.backward();              // gradients are now the average over all processes
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>

#include "accelerate/options.h"
#include "accelerate/state.h"

namespace torch::nn {
class Module;
}

namespace accelerate {

/// Options of the DDP engine, as PyTorch's DistributedDataParallel arguments.
struct DistributedDataParallelOptions {
  /// Size of a gradient bucket in MiB (default 25).
  ACCELERATE_ARG(double, bucket_cap_mb) = 25.0;
  /// Traverse the autograd graph at each backward to find parameters that got no gradient.
  ACCELERATE_ARG(bool, find_unused_parameters) = false;
  /// Make each parameter's .grad a view into its bucket (saves one copy and memory).
  ACCELERATE_ARG(bool, gradient_as_bucket_view) = false;
  /// The set of used parameters and the graph never change (lets the engine optimise).
  ACCELERATE_ARG(bool, static_graph) = false;
  /// Copy buffers (e.g. BatchNorm running statistics) from process 0 at every synchronised
  /// step (default true).
  ACCELERATE_ARG(bool, broadcast_buffers) = true;
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

  /// To be called before `loss.backward()`: when gradient synchronisation is on, arms the
  /// engine so that this backward all-reduces the gradients (and refreshes the buffers).
  void before_backward(const at::Tensor& loss);
  /// Turns gradient synchronisation on or off for the following backward passes (no_sync).
  void set_require_backward_grad_sync(bool value) { require_backward_grad_sync_ = value; }
  /// Whether the next backward synchronises gradients.
  bool require_backward_grad_sync() const { return require_backward_grad_sync_; }
  /// True when the loss's autograd graph reaches one of this module's trained parameters.
  bool is_reached_by(const at::Tensor& loss) const;
  /// The module.
  const std::shared_ptr<torch::nn::Module>& module() const { return module_; }

 private:
  struct Engine;  // the c10d::Reducer and what it needs; null with one process
  std::shared_ptr<torch::nn::Module> module_;
  std::unique_ptr<Engine> engine_;
  bool require_backward_grad_sync_ = true;
};

}  // namespace accelerate
