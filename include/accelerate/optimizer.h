// accelerate/optimizer.h: the prepared optimizer, `AcceleratedOptimizer`.
//
// Accelerate's `AcceleratedOptimizer` for LibTorch. It wraps any `torch::optim::Optimizer`
// and shares the `GradientState` of its `Accelerator`: `step()` and `zero_grad()` act only
// when gradients are synchronised, so a training loop written for one step per batch
// accumulates gradients over several batches without change. On construction the state of
// the common LibTorch optimizers (Adam, AdamW, SGD, RMSprop, Adagrad, LBFGS) is moved to the
// accelerator's device, as Accelerate does with the optimizer's state dict.
//
// Example:
//   auto gs = std::make_shared<accelerate::GradientState>();
//   auto sgd = std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
//   accelerate::AcceleratedOptimizer opt(sgd, gs, torch::kCPU);
//   gs->set_sync_gradients(false);  // inside an accumulation window
//   opt.step();                     // does nothing
//   gs->set_sync_gradients(true);
//   opt.step();                     // steps the SGD
//   opt.zero_grad();                // gradients become undefined (set_to_none)
#pragma once

#include <c10/core/Device.h>
#include <torch/optim/optimizer.h>

#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "accelerate/gradient_state.h"
#include "accelerate/mixed_precision.h"

namespace accelerate {

/// Moves every state tensor of `optimizer` to `device`, for the state types of LibTorch's
/// Adam, AdamW, SGD, RMSprop, Adagrad and LBFGS; the state of other optimizers is left as it
/// is. Returns the number of per-parameter states it recognised.
size_t move_optimizer_state_to(torch::optim::Optimizer& optimizer, const c10::Device& device);

/// An optimizer that steps only when the shared `GradientState` synchronises gradients.
///
/// It is not a `torch::optim::Optimizer`, as Accelerate's wrapper is in Python: LibTorch's
/// `Optimizer` keeps `param_groups()`, `state()` and `zero_grad()` non-virtual over its own
/// members, so a subclass could only copy the wrapped optimizer's learning rates and state
/// (a scheduler would then change one copy, and `zero_grad()` would clear gradients in the
/// middle of an accumulation window). A function that takes `torch::optim::Optimizer&`
/// should take `accelerate::AcceleratedOptimizer&` instead (or be a template), which has the
/// same `step()`, `zero_grad()` and `param_groups()`; `*opt->optimizer()` is the wrapped
/// optimizer, which steps on every call (no accumulation, no fp16 skipping). Passing the
/// wrapper where a `torch::optim::Optimizer&` is expected is one compile error saying so.
class AcceleratedOptimizer {
 public:
  /// Wraps `optimizer` and moves its existing state to `device` (see
  /// `move_optimizer_state_to`). Throws std::invalid_argument when `optimizer` or
  /// `gradient_state` is null.
  AcceleratedOptimizer(std::shared_ptr<torch::optim::Optimizer> optimizer,
                       std::shared_ptr<GradientState> gradient_state, c10::Device device);

  /// Steps the wrapped optimizer when `gradient_state()->sync_gradients()`; otherwise does
  /// nothing and returns an undefined tensor. `closure` is passed on (LBFGS needs one); the
  /// result is the wrapped optimizer's (the loss the closure returned, if any).
  at::Tensor step(torch::optim::Optimizer::LossClosure closure = nullptr);

  /// Clears the gradients of every parameter of every param group when
  /// `gradient_state()->sync_gradients()`; otherwise does nothing. With `set_to_none` a
  /// gradient becomes an undefined tensor; otherwise it is detached and filled with zeros in
  /// place. Behaves the same on LibTorch 1.13 and 2.x. When it clears gradients that earlier
  /// accumulation micro-steps summed and no step used (zero_grad called first in the loop, as
  /// LibTorch's examples do), it warns once per job: call it after step().
  void zero_grad(bool set_to_none = true);

  /// True when the last `step()` was skipped by the gradient scaler because the gradients
  /// held inf or NaN (fp16). Always false while no gradient scaler is attached.
  bool step_was_skipped() const { return step_was_skipped_; }

  /// Steps through `scaler` from now on (fp16): step() unscales the gradients, skips the
  /// wrapped step when they hold inf/NaN (step_was_skipped()) and updates the scale, as
  /// Accelerate's AcceleratedOptimizer does. nullptr detaches it.
  void attach_scaler(std::shared_ptr<GradScaler> scaler) { scaler_ = std::move(scaler); }
  /// The attached gradient scaler, or nullptr.
  const std::shared_ptr<GradScaler>& scaler() const { return scaler_; }

  /// The wrapped optimizer's param groups (learning rates are read and set here).
  std::vector<torch::optim::OptimizerParamGroup>& param_groups() {
    return optimizer_->param_groups();
  }
  /// The wrapped optimizer's param groups.
  const std::vector<torch::optim::OptimizerParamGroup>& param_groups() const {
    return optimizer_->param_groups();
  }

  /// The wrapped optimizer's state (param groups and per-parameter state) as LibTorch's
  /// serializer writes it (`torch::save(optimizer)`): what `save_state` writes to
  /// `optimizer.bin`.
  std::string state_dict() const;
  /// Restores a state_dict() of an optimizer of the same type and parameters, then moves
  /// its state to device(). Throws std::runtime_error naming `source` (a file, in errors)
  /// when the bytes are not such a state.
  void load_state_dict(const std::string& state, const std::string& source = "state_dict");

  /// The wrapped optimizer.
  const std::shared_ptr<torch::optim::Optimizer>& optimizer() const { return optimizer_; }
  /// The gradient state this optimizer follows.
  const std::shared_ptr<GradientState>& gradient_state() const { return gradient_state_; }
  /// The device the optimizer's state was placed on.
  const c10::Device& device() const { return device_; }

  /// Refuses, with one error, to be bound to a `torch::optim::Optimizer&` (see the class).
  template <typename T, typename = std::enable_if_t<
                            std::is_same_v<std::remove_cv_t<T>, torch::optim::Optimizer>>>
  operator T&() const {  // NOLINT(google-explicit-constructor)
    static_assert(!std::is_same_v<T, T>,
                  "accelerate: AcceleratedOptimizer is not a torch::optim::Optimizer (LibTorch's "
                  "param_groups(), state() and zero_grad() are not virtual): take "
                  "accelerate::AcceleratedOptimizer& in your function, or pass "
                  "*opt->optimizer(), the wrapped optimizer (it then steps on every call: no "
                  "gradient accumulation, no fp16 skipping)");
    return *optimizer_;
  }

 private:
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<GradientState> gradient_state_;
  c10::Device device_;
  std::shared_ptr<GradScaler> scaler_;
  // Accelerate's `_is_overflow`: the scaler skipped the wrapped step (inf/NaN gradients).
  bool step_was_skipped_ = false;
  // A micro-step of gradient accumulation passed (step or zero_grad did nothing) since the last
  // real step: a real zero_grad now would clear gradients no step used (warned once).
  bool micro_step_without_step_ = false;
};

}  // namespace accelerate
