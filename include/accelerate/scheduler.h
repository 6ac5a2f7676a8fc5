// accelerate/scheduler.h: learning-rate schedules and the prepared scheduler.
//
// `LambdaLR` is PyTorch's `torch.optim.lr_scheduler.LambdaLR` on LibTorch's `LRScheduler`
// (which LibTorch lacks): lr = base lr × f(number of steps taken). The factories build the
// schedules of Hugging Face transformers (`get_linear_schedule_with_warmup` and friends)
// with its exact formulas. `AcceleratedScheduler` is Accelerate's prepared scheduler: it
// steps only when the optimizers really stepped, and `num_processes` times per call unless
// batches are split, because each optimizer step then consumed `num_processes` batches.
//
// Example:
//   auto sgd = std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(1.0));
//   auto sched = accelerate::get_linear_schedule_with_warmup(sgd, /*warmup*/ 2, /*total*/ 20);
//   auto gs = std::make_shared<accelerate::GradientState>();
//   auto opt = std::make_shared<accelerate::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
//   accelerate::AcceleratedScheduler prepared(
//       sched, {opt}, gs, accelerate::AcceleratedSchedulerOptions().num_processes(2));
//   opt->step();
//   prepared.step();                     // two schedule steps: lr = 1.0 × 2/2
//   double lr = prepared.get_last_lr()[0];
#pragma once

#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "accelerate/gradient_state.h"
#include "accelerate/optimizer.h"
#include "accelerate/options.h"

namespace accelerate {

/// The learning rate of each param group of `optimizer`, in order.
std::vector<double> current_lrs(const torch::optim::Optimizer& optimizer);

/// PyTorch's `LambdaLR`: each param group's lr is its initial lr × `lr_lambda(k)` after `k`
/// calls to `step()` (k = 0 right after construction). Values are passed through as PyTorch
/// does, NaN and negative ones included.
class LambdaLR : public torch::optim::LRScheduler {
 public:
  /// Records each param group's current lr as its base lr and sets lr = base × f(0). Keeps
  /// `optimizer` alive. Throws std::invalid_argument when `optimizer` is null or `lr_lambda`
  /// is empty.
  LambdaLR(std::shared_ptr<torch::optim::Optimizer> optimizer,
           std::function<double(int64_t)> lr_lambda);

  /// The learning rates this scheduler set last, one per param group.
  const std::vector<double>& get_last_lr() const { return last_lrs_; }
  /// The base (initial) learning rates, one per param group.
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  /// Number of `step()` calls so far (PyTorch's `last_epoch`).
  int64_t last_epoch() const { return static_cast<int64_t>(step_count_); }
  /// Makes `epoch` the number of steps taken (e.g. to resume from a checkpoint) and sets
  /// lr = base × f(epoch). Throws std::invalid_argument when `epoch` is negative.
  void set_last_epoch(int64_t epoch);
  /// The scheduled optimizer.
  const std::shared_ptr<torch::optim::Optimizer>& optimizer() const { return optimizer_; }

 protected:
  /// Called by `step()` before it counts the step: the lrs for step `last_epoch() + 1`.
  std::vector<double> get_lrs() override;

 private:
  std::vector<double> lrs_at(int64_t epoch) const;
  void apply(const std::vector<double>& lrs);

  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::function<double(int64_t)> lr_lambda_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lrs_;
};

/// transformers' `get_constant_schedule_with_warmup`: f(s) = s / max(1, warmup) while
/// s < warmup, then 1.
std::shared_ptr<LambdaLR> get_constant_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps);

/// transformers' `get_linear_schedule_with_warmup`: linear warmup from 0 to the base lr over
/// `num_warmup_steps`, then linear decay to 0 at `num_training_steps` (and 0 after):
/// f(s) = max(0, (total − s) / max(1, total − warmup)).
std::shared_ptr<LambdaLR> get_linear_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps,
    int64_t num_training_steps);

/// transformers' `get_cosine_schedule_with_warmup`: linear warmup, then
/// f(s) = max(0, ½ (1 + cos(π · num_cycles · 2 · progress))) with
/// progress = (s − warmup) / max(1, total − warmup); the default half cycle decays to 0.
std::shared_ptr<LambdaLR> get_cosine_schedule_with_warmup(
    std::shared_ptr<torch::optim::Optimizer> optimizer, int64_t num_warmup_steps,
    int64_t num_training_steps, double num_cycles = 0.5);

/// How an `AcceleratedScheduler` steps, with chained setters.
struct AcceleratedSchedulerOptions {
  /// Number of processes of the job (≥ 1); the schedule steps this many times per optimizer
  /// step unless `split_batches`.
  ACCELERATE_ARG(int, num_processes) = 1;
  /// Batches are split across processes, so one optimizer step is one schedule step
  /// (default false).
  ACCELERATE_ARG(bool, split_batches) = false;
  /// Step only when the optimizers stepped (default true); false steps at every call.
  ACCELERATE_ARG(bool, step_with_optimizer) = true;
};

/// A scheduler that steps only when its optimizers really stepped.
class AcceleratedScheduler {
 public:
  /// Wraps `scheduler` (a `LambdaLR` or any LibTorch scheduler, e.g. `StepLR`), which drives
  /// the optimizer wrapped by `optimizers`. Throws std::invalid_argument when `scheduler` or
  /// `gradient_state` is null, an optimizer is null, or `options.num_processes()` < 1.
  AcceleratedScheduler(std::shared_ptr<torch::optim::LRScheduler> scheduler,
                       std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizers,
                       std::shared_ptr<GradientState> gradient_state,
                       AcceleratedSchedulerOptions options = AcceleratedSchedulerOptions());

  /// Accelerate's rules: without `step_with_optimizer`, steps once. Otherwise does nothing
  /// while gradients are not synchronised or when an optimizer's step was skipped, and else
  /// steps once with `split_batches`, `num_processes` times without.
  void step();

  /// The learning rates now in force: `LambdaLR::get_last_lr()` when the wrapped scheduler
  /// is a `LambdaLR`, otherwise the lrs of the first optimizer's param groups. Throws
  /// std::logic_error when neither is available.
  std::vector<double> get_last_lr() const;

  /// The schedule's position, `{"step_count": n}`: a `LambdaLR`'s `last_epoch()`, for another
  /// LibTorch scheduler the steps it took through this object. What `save_state` writes.
  std::map<std::string, int64_t> state_dict() const;
  /// Restores a state_dict(). A `LambdaLR` is set to the position. Another LibTorch scheduler
  /// keeps its step count protected, so it is stepped forward to the position, leaving the
  /// optimizers' learning rates as they were (they come back with the optimizers' state);
  /// one that is already past it cannot go back: std::invalid_argument. A missing or negative
  /// "step_count" is std::invalid_argument too.
  void load_state_dict(const std::map<std::string, int64_t>& state);

  /// The wrapped scheduler.
  const std::shared_ptr<torch::optim::LRScheduler>& scheduler() const { return scheduler_; }
  /// The optimizers whose steps this scheduler follows.
  const std::vector<std::shared_ptr<AcceleratedOptimizer>>& optimizers() const {
    return optimizers_;
  }
  /// The gradient state this scheduler follows.
  const std::shared_ptr<GradientState>& gradient_state() const { return gradient_state_; }
  /// The options given at construction.
  const AcceleratedSchedulerOptions& options() const { return options_; }

 private:
  void step_scheduler();

  std::shared_ptr<torch::optim::LRScheduler> scheduler_;
  std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizers_;
  std::shared_ptr<GradientState> gradient_state_;
  const AcceleratedSchedulerOptions options_;
  int64_t steps_ = 0;  // steps of scheduler_ taken through this object
};

}  // namespace accelerate
