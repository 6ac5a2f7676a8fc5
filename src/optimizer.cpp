#include "accelerate/optimizer.h"
#include "accelerate/errors.h"

#include <ATen/record_function.h>
#include <torch/optim/adagrad.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/lbfgs.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <deque>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "errors.h"
#include "warnings.h"

namespace accelerate {
namespace {

void move(at::Tensor& tensor, const c10::Device& device) {
  if (tensor.defined()) tensor = tensor.to(device);
}

void move(std::deque<at::Tensor>& tensors, const c10::Device& device) {
  for (auto& t : tensors) move(t, device);
}

// LibTorch's param states expose their tensors only through TORCH_ARG accessors, so each
// known type is handled by name: read, move, write back.
bool move_state(torch::optim::OptimizerParamState& state, const c10::Device& device) {
  using namespace torch::optim;
  auto moved = [&](at::Tensor t) {
    move(t, device);
    return t;
  };
  if (auto* s = dynamic_cast<AdamParamState*>(&state)) {
    s->exp_avg(moved(s->exp_avg()));
    s->exp_avg_sq(moved(s->exp_avg_sq()));
    s->max_exp_avg_sq(moved(s->max_exp_avg_sq()));
  } else if (auto* s = dynamic_cast<AdamWParamState*>(&state)) {
    s->exp_avg(moved(s->exp_avg()));
    s->exp_avg_sq(moved(s->exp_avg_sq()));
    s->max_exp_avg_sq(moved(s->max_exp_avg_sq()));
  } else if (auto* s = dynamic_cast<SGDParamState*>(&state)) {
    s->momentum_buffer(moved(s->momentum_buffer()));
  } else if (auto* s = dynamic_cast<RMSpropParamState*>(&state)) {
    s->square_avg(moved(s->square_avg()));
    s->momentum_buffer(moved(s->momentum_buffer()));
    s->grad_avg(moved(s->grad_avg()));
  } else if (auto* s = dynamic_cast<AdagradParamState*>(&state)) {
    s->sum(moved(s->sum()));
  } else if (auto* s = dynamic_cast<LBFGSParamState*>(&state)) {
    s->d(moved(s->d()));
    s->H_diag(moved(s->H_diag()));
    s->prev_flat_grad(moved(s->prev_flat_grad()));
    move(s->old_dirs(), device);
    move(s->old_stps(), device);
    move(s->ro(), device);
    if (s->al()) {
      for (auto& t : *s->al()) move(t, device);
    }
  } else {
    return false;
  }
  return true;
}

}  // namespace

size_t move_optimizer_state_to(torch::optim::Optimizer& optimizer, const c10::Device& device) {
  size_t recognised = 0;
  for (auto& entry : optimizer.state()) {
    if (entry.second && move_state(*entry.second, device)) ++recognised;
  }
  return recognised;
}

AcceleratedOptimizer::AcceleratedOptimizer(std::shared_ptr<torch::optim::Optimizer> optimizer,
                                           std::shared_ptr<GradientState> gradient_state,
                                           c10::Device device)
    : optimizer_(std::move(optimizer)),
      gradient_state_(std::move(gradient_state)),
      device_(device) {
  if (!optimizer_) throw InvalidArgument("accelerate: AcceleratedOptimizer: optimizer is null");
  if (!gradient_state_)
    throw InvalidArgument("accelerate: AcceleratedOptimizer: gradient_state is null");
  move_optimizer_state_to(*optimizer_, device_);
}

at::Tensor AcceleratedOptimizer::step(torch::optim::Optimizer::LossClosure closure) {
  // Named in a profile as PyTorch's Python optimizers name theirs ("Optimizer.step#SGD.step").
  RECORD_USER_SCOPE("Optimizer.step#AcceleratedOptimizer.step");
  if (!gradient_state_->sync_gradients()) {
    micro_step_without_step_ = true;
    return {};
  }
  micro_step_without_step_ = false;
  if (scaler_ && scaler_->is_enabled()) {
    const bool stepped = scaler_->step(*optimizer_, closure);
    scaler_->update();
    step_was_skipped_ = !stepped;
    return {};
  }
  step_was_skipped_ = false;
  return optimizer_->step(std::move(closure));
}

void AcceleratedOptimizer::zero_grad(bool set_to_none) {
  if (!gradient_state_->sync_gradients()) {
    micro_step_without_step_ = true;
    return;
  }
  if (std::exchange(micro_step_without_step_, false)) {
    bool any = false;
    for (const auto& group : optimizer_->param_groups())
      for (const auto& param : group.params()) any = any || param.grad().defined();
    // LibTorch's examples zero the gradients first in the loop: on the synchronising
    // micro-step that clears what the earlier micro-steps accumulated (Python is silent).
    if (any)
      detail::warn_once(
          "zero_grad during accumulation",
          "zero_grad() cleared gradients that earlier accumulation micro-steps summed before "
          "any optimizer step used them (gradient_accumulation_steps is " +
              std::to_string(gradient_state_->num_steps()) +
              "): only the last micro-step's gradients are trained on. Call zero_grad() after "
              "step(), not at the start of the loop: backward(loss); step(); zero_grad();");
  }
  // Done here rather than by Optimizer::zero_grad, whose signature and default changed
  // between LibTorch 1.13 (no argument, zeroes) and 2.x (set_to_none = true). The zeroing
  // path follows PyTorch's: detach a gradient that has a history, else drop requires_grad.
  for (auto& group : optimizer_->param_groups()) {
    for (auto& param : group.params()) {
      at::Tensor& grad = param.mutable_grad();
      if (!grad.defined()) continue;
      if (set_to_none) {
        grad = at::Tensor();
      } else {
        if (grad.grad_fn()) {
          grad.detach_();
        } else {
          grad.requires_grad_(false);
        }
        grad.zero_();
      }
    }
  }
}

std::string AcceleratedOptimizer::state_dict() const {
  torch::serialize::OutputArchive archive;
  optimizer_->save(archive);
  std::ostringstream out;
  archive.save_to(out);
  return out.str();
}

void AcceleratedOptimizer::load_state_dict(const std::string& state, const std::string& source) {
  try {
    torch::serialize::InputArchive archive;
    std::istringstream in(state);
    archive.load_from(in);
    optimizer_->load(archive);
  } catch (const c10::Error& e) {
    throw FileError("accelerate: load_state: cannot load " + source + ": " + detail::message_of(e));
  }
  move_optimizer_state_to(*optimizer_, device_);
}

}  // namespace accelerate
