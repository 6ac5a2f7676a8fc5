#include "accelerate/scheduler.h"
#include "accelerate/errors.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace accelerate {
namespace {

constexpr double kPi = 3.14159265358979323846;

torch::optim::Optimizer& checked(const std::shared_ptr<torch::optim::Optimizer>& optimizer) {
  if (!optimizer) throw InvalidArgument("accelerate: LambdaLR: optimizer is null");
  return *optimizer;
}

// The warmup ramp shared by transformers' schedules.
double warmup_factor(int64_t step, int64_t num_warmup_steps) {
  return static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, num_warmup_steps));
}

}  // namespace

std::vector<double> current_lrs(const torch::optim::Optimizer& optimizer) {
  std::vector<double> lrs;
  lrs.reserve(optimizer.param_groups().size());
  for (const auto& group : optimizer.param_groups()) lrs.push_back(group.options().get_lr());
  return lrs;
}

LambdaLR::LambdaLR(std::shared_ptr<torch::optim::Optimizer> optimizer,
                   std::function<double(int64_t)> lr_lambda)
    : torch::optim::LRScheduler(checked(optimizer)),
      optimizer_(std::move(optimizer)),
      lr_lambda_(std::move(lr_lambda)) {
  if (!lr_lambda_) throw InvalidArgument("accelerate: LambdaLR: lr_lambda is empty");
  step_count_ = 0;
  base_lrs_ = current_lrs(*optimizer_);
  apply(lrs_at(0));
}

std::vector<double> LambdaLR::lrs_at(int64_t epoch) const {
  TORCH_CHECK(optimizer_->param_groups().size() == base_lrs_.size(), "LambdaLR: the optimizer has ",
              optimizer_->param_groups().size(), " param groups but had ", base_lrs_.size(),
              " when the scheduler was made; make the scheduler after adding param groups");
  const double factor = lr_lambda_(epoch);
  std::vector<double> lrs;
  lrs.reserve(base_lrs_.size());
  for (double base : base_lrs_) lrs.push_back(base * factor);
  return lrs;
}

void LambdaLR::apply(const std::vector<double>& lrs) {
  auto& groups = optimizer_->param_groups();
  for (size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lrs[i]);
  last_lrs_ = lrs;
}

std::vector<double> LambdaLR::get_lrs() {
  // LRScheduler::step() sets exactly these and then counts the step, so they are the lrs
  // "last" set once step() returns.
  last_lrs_ = lrs_at(static_cast<int64_t>(step_count_) + 1);
  return last_lrs_;
}

void LambdaLR::set_last_epoch(int64_t epoch) {
  if (epoch < 0 || epoch > static_cast<int64_t>(std::numeric_limits<unsigned>::max())) {
    throw InvalidArgument("accelerate: LambdaLR::set_last_epoch: epoch must be in [0, 2^32), got " +
                          std::to_string(epoch));
  }
  auto lrs = lrs_at(epoch);
  apply(lrs);
  step_count_ = static_cast<unsigned>(epoch);
}

std::shared_ptr<LambdaLR> get_constant_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps) {
  return std::make_shared<LambdaLR>(std::move(optimizer), [num_warmup_steps](int64_t step) {
    if (step < num_warmup_steps) return warmup_factor(step, num_warmup_steps);
    return 1.0;
  });
}

std::shared_ptr<LambdaLR> get_linear_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps,
    int64_t num_training_steps) {
  return std::make_shared<LambdaLR>(std::move(optimizer), [num_warmup_steps,
                                                           num_training_steps](int64_t step) {
    if (step < num_warmup_steps) return warmup_factor(step, num_warmup_steps);
    return std::max(
        0.0, static_cast<double>(num_training_steps - step) /
                 static_cast<double>(std::max<int64_t>(1, num_training_steps - num_warmup_steps)));
  });
}

std::shared_ptr<LambdaLR> get_cosine_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps,
    int64_t num_training_steps, double num_cycles) {
  return std::make_shared<LambdaLR>(
      std::move(optimizer), [num_warmup_steps, num_training_steps, num_cycles](int64_t step) {
        if (step < num_warmup_steps) return warmup_factor(step, num_warmup_steps);
        const double progress =
            static_cast<double>(step - num_warmup_steps) /
            static_cast<double>(std::max<int64_t>(1, num_training_steps - num_warmup_steps));
        return std::max(0.0, 0.5 * (1.0 + std::cos(kPi * num_cycles * 2.0 * progress)));
      });
}

AcceleratedScheduler::AcceleratedScheduler(
    std::shared_ptr<torch::optim::LRScheduler> scheduler,
    std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizers,
    std::shared_ptr<GradientState> gradient_state, AcceleratedSchedulerOptions options)
    : scheduler_(std::move(scheduler)),
      optimizers_(std::move(optimizers)),
      gradient_state_(std::move(gradient_state)),
      options_(options) {
  if (!scheduler_) throw InvalidArgument("accelerate: AcceleratedScheduler: scheduler is null");
  if (!gradient_state_) {
    throw InvalidArgument("accelerate: AcceleratedScheduler: gradient_state is null");
  }
  for (const auto& opt : optimizers_) {
    if (!opt) throw InvalidArgument("accelerate: AcceleratedScheduler: an optimizer is null");
  }
  if (options_.num_processes() < 1) {
    throw InvalidArgument("accelerate: AcceleratedScheduler: num_processes must be >= 1, got " +
                          std::to_string(options_.num_processes()));
  }
}

void AcceleratedScheduler::step() {
  if (!options_.step_with_optimizer()) {
    step_scheduler();
    return;
  }
  // During accumulation Accelerate only bumps the PyTorch scheduler's `_step_count` (when
  // the plugin's adjust_scheduler is set), a counter used for warnings that leaves the lr
  // alone. LibTorch's `step_count_` *is* the schedule position, so nothing is done here.
  if (!gradient_state_->sync_gradients()) return;
  for (const auto& opt : optimizers_) {
    if (opt->step_was_skipped()) return;
  }
  // Without split batches each process consumed its own batch, so one optimizer step covers
  // num_processes batches of the schedule's length. (Accelerate's OneCycleLR cap has no
  // counterpart: LibTorch has no OneCycleLR.)
  const int steps = options_.split_batches() ? 1 : options_.num_processes();
  for (int i = 0; i < steps; ++i) step_scheduler();
}

void AcceleratedScheduler::step_scheduler() {
  scheduler_->step();
  ++steps_;
}

std::map<std::string, int64_t> AcceleratedScheduler::state_dict() const {
  if (auto lambda = std::dynamic_pointer_cast<LambdaLR>(scheduler_))
    return {{"step_count", lambda->last_epoch()}};
  return {{"step_count", steps_}};
}

void AcceleratedScheduler::load_state_dict(const std::map<std::string, int64_t>& state) {
  auto it = state.find("step_count");
  if (it == state.end())
    throw InvalidArgument("accelerate: AcceleratedScheduler::load_state_dict: no \"step_count\"");
  const int64_t target = it->second;
  if (target < 0)
    throw InvalidArgument("accelerate: AcceleratedScheduler::load_state_dict: \"step_count\" is " +
                          std::to_string(target));
  if (auto lambda = std::dynamic_pointer_cast<LambdaLR>(scheduler_)) {
    lambda->set_last_epoch(target);
    steps_ = target;
    return;
  }
  if (target < steps_)
    throw InvalidArgument(
        "accelerate: AcceleratedScheduler::load_state_dict: the scheduler has taken " +
        std::to_string(steps_) + " steps and cannot be set back to " + std::to_string(target) +
        " (LibTorch's LRScheduler keeps its step count protected); load the state before "
        "stepping it, or use accelerate::LambdaLR");
  // Step forward, then put back the learning rates the optimizers hold.
  std::vector<std::vector<double>> lrs;
  for (const auto& opt : optimizers_) lrs.push_back(current_lrs(*opt->optimizer()));
  while (steps_ < target) step_scheduler();
  for (size_t o = 0; o < optimizers_.size(); ++o) {
    auto& groups = optimizers_[o]->optimizer()->param_groups();
    for (size_t g = 0; g < groups.size(); ++g) groups[g].options().set_lr(lrs[o][g]);
  }
}

std::vector<double> AcceleratedScheduler::get_last_lr() const {
  if (auto lambda = std::dynamic_pointer_cast<LambdaLR>(scheduler_)) return lambda->get_last_lr();
  if (optimizers_.empty()) {
    throw std::logic_error(
        "AcceleratedScheduler::get_last_lr: the scheduler is not a LambdaLR and no optimizer "
        "was given to read the learning rates from");
  }
  return current_lrs(*optimizers_.front()->optimizer());
}

}  // namespace accelerate
