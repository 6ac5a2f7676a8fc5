// Tests of accelerate/optimizer.h and accelerate/scheduler.h: the prepared optimizer and
// scheduler follow Accelerate's stepping rules, and the schedules transformers' formulas.
#include <gtest/gtest.h>
#include <torch/autograd.h>
#include <torch/optim.h>
#include <torch/types.h>

#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "accelerate/gradient_state.h"
#include "accelerate/optimizer.h"
#include "accelerate/scheduler.h"
#include "torch_version.h"

namespace acc = accelerate;
using torch::optim::SGD;
using torch::optim::SGDOptions;

namespace {

// An SGD that counts the steps it really takes.
class CountingSGD : public SGD {
 public:
  using SGD::SGD;
  at::Tensor step(LossClosure closure = nullptr) override {
    ++steps;
    return SGD::step(std::move(closure));
  }
  int steps = 0;
};

at::Tensor scalar_param(double value) {
  return torch::full({1}, value, torch::dtype(torch::kDouble).requires_grad(true));
}

double value_of(const at::Tensor& t) { return t.item<double>(); }

double lr_of(const torch::optim::Optimizer& optimizer, size_t group = 0) {
  return optimizer.param_groups().at(group).options().get_lr();
}

// f(n) = 1 - n/10 over SGD(lr 1), prepared with `options`; returns the lr after one optimizer
// step and one prepared scheduler step.
double lr_after_one_step(acc::AcceleratedSchedulerOptions options, bool sync = true) {
  auto param = scalar_param(1.0);
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{param}, SGDOptions(1.0));
  auto gs = std::make_shared<acc::GradientState>();
  gs->set_sync_gradients(sync);
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  auto lambda = std::make_shared<acc::LambdaLR>(sgd, [](int64_t n) { return 1.0 - n / 10.0; });
  acc::AcceleratedScheduler scheduler(lambda, {opt}, gs, options);
  EXPECT_DOUBLE_EQ(lr_of(*sgd), 1.0);
  opt->step();
  scheduler.step();
  EXPECT_EQ(scheduler.get_last_lr(), acc::current_lrs(*sgd));
  return lr_of(*sgd);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// AcceleratedScheduler

TEST(AcceleratedSchedulerTest, StepsNumProcessesTimesPerOptimizerStep) {
  EXPECT_DOUBLE_EQ(lr_after_one_step(acc::AcceleratedSchedulerOptions().num_processes(2)), 0.8);
}

TEST(AcceleratedSchedulerTest, StepsOnceWithSplitBatches) {
  EXPECT_DOUBLE_EQ(
      lr_after_one_step(acc::AcceleratedSchedulerOptions().num_processes(2).split_batches(true)),
      0.9);
}

TEST(AcceleratedSchedulerTest, StepsOnceWithOneProcess) {
  EXPECT_DOUBLE_EQ(lr_after_one_step(acc::AcceleratedSchedulerOptions().num_processes(1)), 0.9);
  EXPECT_DOUBLE_EQ(lr_after_one_step(acc::AcceleratedSchedulerOptions()), 0.9);
}

TEST(AcceleratedSchedulerTest, StepsOnceWhenNotSteppingWithOptimizer) {
  auto options = acc::AcceleratedSchedulerOptions().num_processes(2).step_with_optimizer(false);
  EXPECT_DOUBLE_EQ(lr_after_one_step(options), 0.9);
  // Not tied to the optimizer: steps even inside an accumulation window.
  EXPECT_DOUBLE_EQ(lr_after_one_step(options, /*sync=*/false), 0.9);
}

TEST(AcceleratedSchedulerTest, DoesNotStepWhileAccumulating) {
  EXPECT_DOUBLE_EQ(
      lr_after_one_step(acc::AcceleratedSchedulerOptions().num_processes(2), /*sync=*/false), 1.0);
}

TEST(AcceleratedSchedulerTest, LinearScheduleEndsAtZeroUnderGradientAccumulation) {
  for (int64_t warmup : {0, 2}) {
    for (int k : {1, 2, 4}) {
      SCOPED_TRACE("warmup " + std::to_string(warmup) + ", accumulation " + std::to_string(k));
      auto param = scalar_param(0.0);
      auto sgd = std::make_shared<CountingSGD>(std::vector<at::Tensor>{param}, SGDOptions(1.0));
      auto gs =
          std::make_shared<acc::GradientState>(acc::GradientAccumulationPlugin().num_steps(k));
      auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
      auto schedule = acc::get_linear_schedule_with_warmup(sgd, warmup, 20);
      acc::AcceleratedScheduler scheduler(schedule, {opt}, gs,
                                          acc::AcceleratedSchedulerOptions().num_processes(2));
      for (int micro = 1; micro <= 10 * k; ++micro) {
        gs->set_sync_gradients(micro % k == 0);  // as the accumulate guard sets it
        param.mutable_grad() = torch::ones_like(param);
        opt->step();
        scheduler.step();
        opt->zero_grad();
        if (micro == 5 * k) {
          // 5 optimizer steps = 10 schedule steps: (20 - 10) / (20 - warmup).
          EXPECT_DOUBLE_EQ(lr_of(*sgd), warmup == 0 ? 0.5 : 10.0 / 18.0);
        }
      }
      EXPECT_EQ(sgd->steps, 10);
      EXPECT_EQ(schedule->last_epoch(), 20);
      EXPECT_EQ(lr_of(*sgd), 0.0);
      EXPECT_EQ(scheduler.get_last_lr(), std::vector<double>{0.0});
    }
  }
}

TEST(AcceleratedSchedulerTest, AcceptsLibTorchStepLR) {
  // A reference StepLR stepped by hand twice per optimizer step, next to a prepared one with
  // two processes (compared, not hard-coded: LibTorch's StepLR does not decay on its first
  // step, unlike PyTorch's).
  auto make_sgd = [] {
    return std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  };
  auto reference_sgd = make_sgd();
  torch::optim::StepLR reference(*reference_sgd, /*step_size=*/1, /*gamma=*/0.5);
  auto sgd = make_sgd();
  auto gs = std::make_shared<acc::GradientState>();
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  acc::AcceleratedScheduler scheduler(std::make_shared<torch::optim::StepLR>(*sgd, 1, 0.5), {opt},
                                      gs, acc::AcceleratedSchedulerOptions().num_processes(2));
  for (int call = 0; call < 3; ++call) {
    scheduler.step();
    reference.step();
    reference.step();
    EXPECT_DOUBLE_EQ(lr_of(*sgd), lr_of(*reference_sgd));
    EXPECT_EQ(scheduler.get_last_lr(), std::vector<double>{lr_of(*reference_sgd)});
  }
  EXPECT_LT(lr_of(*sgd), 1.0);

  // Inside an accumulation window the StepLR does not move either.
  const double before = lr_of(*sgd);
  gs->set_sync_gradients(false);
  scheduler.step();
  EXPECT_EQ(lr_of(*sgd), before);
}

// A LibTorch StepLR (its step count is protected) is restored by stepping a fresh one forward;
// the learning rates are those the optimizer holds, and going back is a clear error.
TEST(AcceleratedSchedulerTest, StateDictOfALibTorchScheduler) {
  auto make = [](std::shared_ptr<SGD>& sgd) {
    sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
    auto gs = std::make_shared<acc::GradientState>();
    auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
    return std::make_shared<acc::AcceleratedScheduler>(
        std::make_shared<torch::optim::StepLR>(*sgd, /*step_size=*/2, /*gamma=*/0.5),
        std::vector<std::shared_ptr<acc::AcceleratedOptimizer>>{opt}, gs);
  };
  std::shared_ptr<SGD> sgd, fresh_sgd;
  auto scheduler = make(sgd);
  for (int i = 0; i < 5; ++i) scheduler->step();
  const auto state = scheduler->state_dict();
  EXPECT_EQ(state, (std::map<std::string, int64_t>{{"step_count", 5}}));

  auto fresh = make(fresh_sgd);
  fresh_sgd->param_groups()[0].options().set_lr(0.125);  // as loaded with the optimizer's state
  fresh->load_state_dict(state);
  EXPECT_EQ(fresh->state_dict(), state);
  EXPECT_EQ(lr_of(*fresh_sgd), 0.125) << "the optimizer's lr is left as it was";
  // From here both schedules decay at the same steps.
  const double ratio = 0.125 / lr_of(*sgd);
  for (int i = 0; i < 4; ++i) {
    scheduler->step();
    fresh->step();
    EXPECT_DOUBLE_EQ(lr_of(*fresh_sgd), lr_of(*sgd) * ratio) << "step " << i;
  }
  EXPECT_LT(lr_of(*fresh_sgd), 0.125);
  EXPECT_THROW(fresh->load_state_dict(state), std::invalid_argument);  // it is past 5 now
  EXPECT_THROW(fresh->load_state_dict({{"epoch", 1}}), std::invalid_argument);
}

TEST(AcceleratedSchedulerTest, StateDictOfALambdaLRGoesBothWays) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  auto gs = std::make_shared<acc::GradientState>();
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  acc::AcceleratedScheduler scheduler(acc::get_linear_schedule_with_warmup(sgd, 2, 10), {opt}, gs);
  for (int i = 0; i < 6; ++i) scheduler.step();
  const double lr = lr_of(*sgd);
  const auto state = scheduler.state_dict();
  EXPECT_EQ(state.at("step_count"), 6);
  for (int i = 0; i < 2; ++i) scheduler.step();
  scheduler.load_state_dict(state);
  EXPECT_DOUBLE_EQ(lr_of(*sgd), lr);
  EXPECT_EQ(scheduler.state_dict(), state);
}

TEST(AcceleratedOptimizerTest, StateDictRoundTrip) {
  auto param = scalar_param(1.0);
  auto adam = std::make_shared<torch::optim::Adam>(std::vector<at::Tensor>{param});
  auto gs = std::make_shared<acc::GradientState>();
  acc::AcceleratedOptimizer opt(adam, gs, torch::kCPU);
  param.mutable_grad() = torch::ones_like(param);
  opt.step();
  const std::string state = opt.state_dict();

  auto other_param = scalar_param(1.0);
  auto other = std::make_shared<torch::optim::Adam>(std::vector<at::Tensor>{other_param});
  acc::AcceleratedOptimizer restored(other, gs, torch::kCPU);
  EXPECT_TRUE(other->state().empty());
  restored.load_state_dict(state);
  // LibTorch keys the state by the parameter's address, so compare the values, not the bytes.
  ASSERT_EQ(other->state().size(), 1u);
  auto& mine = static_cast<torch::optim::AdamParamState&>(*adam->state().begin()->second);
  auto& theirs = static_cast<torch::optim::AdamParamState&>(*other->state().begin()->second);
  EXPECT_EQ(theirs.step(), mine.step());
  EXPECT_TRUE(theirs.exp_avg().equal(mine.exp_avg()));
  EXPECT_TRUE(theirs.exp_avg_sq().equal(mine.exp_avg_sq()));
  try {
    restored.load_state_dict("not an archive", "opt.bin");
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("opt.bin"), std::string::npos) << e.what();
  }
}

TEST(AcceleratedSchedulerTest, ExposesWhatItWraps) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  auto gs = std::make_shared<acc::GradientState>();
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  auto lambda = acc::get_constant_schedule_with_warmup(sgd, 0);
  acc::AcceleratedScheduler scheduler(lambda, {opt}, gs,
                                      acc::AcceleratedSchedulerOptions().num_processes(3));
  EXPECT_EQ(scheduler.scheduler(), lambda);
  ASSERT_EQ(scheduler.optimizers().size(), 1u);
  EXPECT_EQ(scheduler.optimizers()[0], opt);
  EXPECT_EQ(scheduler.gradient_state(), gs);
  EXPECT_EQ(scheduler.options().num_processes(), 3);
  EXPECT_FALSE(scheduler.options().split_batches());
  EXPECT_TRUE(scheduler.options().step_with_optimizer());
}

TEST(AcceleratedSchedulerTest, RejectsInvalidArguments) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  auto gs = std::make_shared<acc::GradientState>();
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  auto lambda = acc::get_constant_schedule_with_warmup(sgd, 0);
  EXPECT_THROW(acc::AcceleratedScheduler(nullptr, {opt}, gs), std::invalid_argument);
  EXPECT_THROW(acc::AcceleratedScheduler(lambda, {opt}, nullptr), std::invalid_argument);
  EXPECT_THROW(acc::AcceleratedScheduler(lambda, {nullptr}, gs), std::invalid_argument);
  EXPECT_THROW(acc::AcceleratedScheduler(lambda, {opt}, gs,
                                         acc::AcceleratedSchedulerOptions().num_processes(0)),
               std::invalid_argument);

  // Without a LambdaLR and without an optimizer there is nothing to read the lrs from.
  acc::AcceleratedScheduler bare(std::make_shared<torch::optim::StepLR>(*sgd, 1), {}, gs);
  EXPECT_THROW(bare.get_last_lr(), std::logic_error);
}

// ---------------------------------------------------------------------------------------------
// LambdaLR

TEST(LambdaLRTest, FollowsPyTorchSemantics) {
  auto a = scalar_param(1.0);
  auto b = scalar_param(1.0);
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{a}, SGDOptions(2.0));
  sgd->add_param_group(
      torch::optim::OptimizerParamGroup({b}, std::make_unique<SGDOptions>(SGDOptions(0.5))));
  acc::LambdaLR scheduler(sgd, [](int64_t n) { return 0.5 + n; });

  // Right after construction: base × f(0).
  EXPECT_EQ(scheduler.last_epoch(), 0);
  EXPECT_EQ(scheduler.base_lrs(), (std::vector<double>{2.0, 0.5}));
  EXPECT_EQ(scheduler.get_last_lr(), (std::vector<double>{1.0, 0.25}));
  EXPECT_EQ(acc::current_lrs(*sgd), (std::vector<double>{1.0, 0.25}));
  EXPECT_EQ(scheduler.optimizer(), sgd);

  // After k steps: base × f(k).
  for (int k = 1; k <= 3; ++k) scheduler.step();
  EXPECT_EQ(scheduler.last_epoch(), 3);
  EXPECT_EQ(scheduler.get_last_lr(), (std::vector<double>{7.0, 1.75}));
  EXPECT_EQ(acc::current_lrs(*sgd), (std::vector<double>{7.0, 1.75}));

  // Resume at step 7, then go on from there.
  scheduler.set_last_epoch(7);
  EXPECT_EQ(scheduler.last_epoch(), 7);
  EXPECT_EQ(acc::current_lrs(*sgd), (std::vector<double>{15.0, 3.75}));
  scheduler.step();
  EXPECT_EQ(scheduler.last_epoch(), 8);
  EXPECT_EQ(scheduler.get_last_lr(), (std::vector<double>{17.0, 4.25}));
  scheduler.set_last_epoch(0);
  EXPECT_EQ(acc::current_lrs(*sgd), (std::vector<double>{1.0, 0.25}));
  EXPECT_THROW(scheduler.set_last_epoch(-1), std::invalid_argument);
}

TEST(LambdaLRTest, KeepsTheOptimizerAlive) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  std::weak_ptr<SGD> weak = sgd;
  acc::LambdaLR scheduler(std::move(sgd), [](int64_t n) { return 1.0 / (n + 1); });
  ASSERT_FALSE(weak.expired());
  scheduler.step();
  EXPECT_DOUBLE_EQ(lr_of(*weak.lock()), 0.5);
}

TEST(LambdaLRTest, PassesNaNAndNegativeFactorsThroughAsPyTorchDoes) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(2.0));
  acc::LambdaLR scheduler(sgd, [](int64_t n) {
    if (n == 1) return std::numeric_limits<double>::quiet_NaN();
    if (n == 2) return -1.5;
    return 1.0;
  });
  scheduler.step();
  EXPECT_TRUE(std::isnan(lr_of(*sgd)));
  EXPECT_TRUE(std::isnan(scheduler.get_last_lr()[0]));
  scheduler.step();
  EXPECT_EQ(lr_of(*sgd), -3.0);
  scheduler.step();
  EXPECT_EQ(lr_of(*sgd), 2.0);
}

TEST(LambdaLRTest, RejectsNullArguments) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(1.0));
  EXPECT_THROW(acc::LambdaLR(nullptr, [](int64_t) { return 1.0; }), std::invalid_argument);
  EXPECT_THROW(acc::LambdaLR(sgd, nullptr), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// transformers' schedules, against values computed by hand

namespace {

// The lr after `step` schedule steps, reached both by stepping and by set_last_epoch.
std::vector<double> lrs_by_stepping(const std::shared_ptr<acc::LambdaLR>& scheduler, int steps) {
  std::vector<double> lrs{lr_of(*scheduler->optimizer())};
  for (int s = 1; s <= steps; ++s) {
    scheduler->step();
    lrs.push_back(lr_of(*scheduler->optimizer()));
  }
  for (int s = 0; s <= steps; ++s) {
    scheduler->set_last_epoch(s);
    EXPECT_EQ(lr_of(*scheduler->optimizer()), lrs[s]) << "set_last_epoch(" << s << ")";
  }
  return lrs;
}

std::shared_ptr<SGD> sgd_with_lr(double lr) {
  return std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(lr));
}

}  // namespace

TEST(ScheduleTest, LinearWithWarmup) {
  // warmup 4, total 12, base 2: 2 × s/4 while s < 4, then 2 × (12 - s)/8, then 0.
  auto lrs = lrs_by_stepping(acc::get_linear_schedule_with_warmup(sgd_with_lr(2.0), 4, 12), 14);
  EXPECT_DOUBLE_EQ(lrs[0], 0.0);
  EXPECT_DOUBLE_EQ(lrs[1], 0.5);
  EXPECT_DOUBLE_EQ(lrs[2], 1.0);
  EXPECT_DOUBLE_EQ(lrs[3], 1.5);
  EXPECT_DOUBLE_EQ(lrs[4], 2.0);
  EXPECT_DOUBLE_EQ(lrs[6], 1.5);
  EXPECT_DOUBLE_EQ(lrs[8], 1.0);
  EXPECT_DOUBLE_EQ(lrs[11], 0.25);
  EXPECT_EQ(lrs[12], 0.0);
  EXPECT_EQ(lrs[14], 0.0);  // clamped, not negative

  // No warmup starts at the base lr.
  auto no_warmup = lrs_by_stepping(acc::get_linear_schedule_with_warmup(sgd_with_lr(1.0), 0, 4), 4);
  EXPECT_EQ(no_warmup, (std::vector<double>{1.0, 0.75, 0.5, 0.25, 0.0}));
}

TEST(ScheduleTest, CosineWithWarmup) {
  // warmup 2, total 10, half a cycle: ½(1 + cos(π (s - 2)/8)) after the warmup.
  auto lrs = lrs_by_stepping(acc::get_cosine_schedule_with_warmup(sgd_with_lr(1.0), 2, 10), 12);
  EXPECT_DOUBLE_EQ(lrs[0], 0.0);
  EXPECT_DOUBLE_EQ(lrs[1], 0.5);
  EXPECT_DOUBLE_EQ(lrs[2], 1.0);
  EXPECT_NEAR(lrs[4], 0.8535533905932737, 1e-15);  // ½(1 + √2/2)
  EXPECT_NEAR(lrs[6], 0.5, 1e-15);
  EXPECT_NEAR(lrs[8], 0.1464466094067262, 1e-15);  // ½(1 − √2/2)
  EXPECT_NEAR(lrs[10], 0.0, 1e-15);
  EXPECT_NEAR(lrs[12], 0.1464466094067262, 1e-15);  // past the end the cosine comes back up

  // No warmup: half way is half the base lr.
  auto half = lrs_by_stepping(acc::get_cosine_schedule_with_warmup(sgd_with_lr(3.0), 0, 10), 10);
  EXPECT_DOUBLE_EQ(half[0], 3.0);
  EXPECT_DOUBLE_EQ(half[5], 1.5);

  // A full cycle is back at the base lr at the end.
  auto full = lrs_by_stepping(acc::get_cosine_schedule_with_warmup(sgd_with_lr(1.0), 0, 4, 1.0), 4);
  EXPECT_NEAR(full[2], 0.0, 1e-15);
  EXPECT_DOUBLE_EQ(full[4], 1.0);
}

TEST(ScheduleTest, ConstantWithWarmup) {
  auto lrs = lrs_by_stepping(acc::get_constant_schedule_with_warmup(sgd_with_lr(3.0), 3), 6);
  EXPECT_EQ(lrs, (std::vector<double>{0.0, 1.0, 2.0, 3.0, 3.0, 3.0, 3.0}));
  auto none = lrs_by_stepping(acc::get_constant_schedule_with_warmup(sgd_with_lr(3.0), 0), 2);
  EXPECT_EQ(none, (std::vector<double>{3.0, 3.0, 3.0}));
}

// ---------------------------------------------------------------------------------------------
// AcceleratedOptimizer

TEST(AcceleratedOptimizerTest, StepAndZeroGradOnlyWhenSyncing) {
  auto param = scalar_param(1.0);
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{param}, SGDOptions(1.0));
  auto gs = std::make_shared<acc::GradientState>();
  acc::AcceleratedOptimizer opt(sgd, gs, torch::kCPU);
  param.mutable_grad() = torch::full({1}, 0.5, torch::kDouble);

  gs->set_sync_gradients(false);
  EXPECT_FALSE(opt.step().defined());
  EXPECT_EQ(value_of(param), 1.0);
  opt.zero_grad();
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(param.grad().defined());
  EXPECT_EQ(value_of(param.grad()), 0.5);

  gs->set_sync_gradients(true);
  opt.step();
  EXPECT_EQ(value_of(param), 0.5);
  EXPECT_FALSE(opt.step_was_skipped());

  const at::Tensor grad = param.grad();
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(param.grad().defined());
  EXPECT_TRUE(param.grad().is_same(grad));  // zeroed in place
  EXPECT_EQ(value_of(param.grad()), 0.0);

  opt.zero_grad();  // set_to_none by default
  EXPECT_FALSE(param.grad().defined());
  opt.zero_grad(/*set_to_none=*/false);  // nothing to zero
  EXPECT_FALSE(param.grad().defined());
}

TEST(AcceleratedOptimizerTest, ZeroGradCoversEveryParamGroup) {
  auto a = scalar_param(1.0);
  auto b = scalar_param(1.0);
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{a}, SGDOptions(1.0));
  sgd->add_param_group(
      torch::optim::OptimizerParamGroup({b}, std::make_unique<SGDOptions>(SGDOptions(0.1))));
  acc::AcceleratedOptimizer opt(sgd, std::make_shared<acc::GradientState>(), torch::kCPU);
  a.mutable_grad() = torch::ones_like(a);
  b.mutable_grad() = torch::ones_like(b);
  opt.zero_grad(false);
  EXPECT_EQ(value_of(a.grad()), 0.0);
  EXPECT_EQ(value_of(b.grad()), 0.0);
  opt.zero_grad(true);
  EXPECT_FALSE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(AcceleratedOptimizerTest, ZeroGradDetachesAGradientWithHistory) {
  auto param = scalar_param(3.0);
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{param}, SGDOptions(1.0));
  acc::AcceleratedOptimizer opt(sgd, std::make_shared<acc::GradientState>(), torch::kCPU);
  // A gradient with a history, as backward(create_graph=true) leaves one.
  param.mutable_grad() = torch::autograd::grad({(param * param).sum()}, {param}, {},
                                               /*retain_graph=*/true, /*create_graph=*/true)[0];
  ASSERT_TRUE(param.grad().grad_fn() != nullptr);
  opt.zero_grad(false);
  ASSERT_TRUE(param.grad().defined());
  EXPECT_FALSE(param.grad().grad_fn());
  EXPECT_FALSE(param.grad().requires_grad());
  EXPECT_EQ(value_of(param.grad()), 0.0);
}

TEST(AcceleratedOptimizerTest, ExposesTheWrappedOptimizer) {
  auto sgd = std::make_shared<SGD>(std::vector<at::Tensor>{scalar_param(1.0)}, SGDOptions(0.25));
  auto gs = std::make_shared<acc::GradientState>();
  acc::AcceleratedOptimizer opt(sgd, gs, torch::kCPU);
  EXPECT_EQ(opt.optimizer(), sgd);
  EXPECT_EQ(opt.gradient_state(), gs);
  EXPECT_EQ(opt.device(), c10::Device(torch::kCPU));
  EXPECT_EQ(&opt.param_groups(), &sgd->param_groups());
  opt.param_groups()[0].options().set_lr(0.125);
  EXPECT_EQ(lr_of(*sgd), 0.125);
  EXPECT_THROW(acc::AcceleratedOptimizer(nullptr, gs, torch::kCPU), std::invalid_argument);
  EXPECT_THROW(acc::AcceleratedOptimizer(sgd, nullptr, torch::kCPU), std::invalid_argument);
}

namespace {

// Every state tensor of the LibTorch param states this test uses.
std::vector<at::Tensor> state_tensors(const torch::optim::Optimizer& optimizer) {
  using namespace torch::optim;
  std::vector<at::Tensor> out;
  for (const auto& entry : optimizer.state()) {
    const OptimizerParamState* state = entry.second.get();
    if (auto* s = dynamic_cast<const AdamParamState*>(state)) {
      out.insert(out.end(), {s->exp_avg(), s->exp_avg_sq(), s->max_exp_avg_sq()});
    } else if (auto* s = dynamic_cast<const AdamWParamState*>(state)) {
      out.insert(out.end(), {s->exp_avg(), s->exp_avg_sq(), s->max_exp_avg_sq()});
    } else if (auto* s = dynamic_cast<const SGDParamState*>(state)) {
      out.push_back(s->momentum_buffer());
    } else if (auto* s = dynamic_cast<const RMSpropParamState*>(state)) {
      out.insert(out.end(), {s->square_avg(), s->momentum_buffer(), s->grad_avg()});
    } else if (auto* s = dynamic_cast<const AdagradParamState*>(state)) {
      out.push_back(s->sum());
    } else {
      ADD_FAILURE() << "unexpected param state type";
    }
  }
  return out;
}

// Steps `optimizer` once on f(p) = Σ p² so that it has state.
void take_one_step(torch::optim::Optimizer& optimizer, const at::Tensor& param) {
  optimizer.zero_grad();
  (param * param).sum().backward();
  optimizer.step();
}

}  // namespace

TEST(AcceleratedOptimizerTest, AdamStateSurvivesOnTheDevice) {
  auto param = torch::tensor({1.0, -2.0, 3.0}, torch::requires_grad());
  auto adam = std::make_shared<torch::optim::Adam>(std::vector<at::Tensor>{param},
                                                   torch::optim::AdamOptions(0.1).amsgrad(true));
  take_one_step(*adam, param);
  std::vector<at::Tensor> before;
  for (const auto& t : state_tensors(*adam)) before.push_back(t.clone());
  ASSERT_EQ(before.size(), 3u);

  acc::AcceleratedOptimizer opt(adam, std::make_shared<acc::GradientState>(), torch::kCPU);
  ASSERT_EQ(adam->state().size(), 1u);
  auto after = state_tensors(*adam);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    ASSERT_TRUE(after[i].defined());
    EXPECT_EQ(after[i].device(), c10::Device(torch::kCPU));
    EXPECT_TRUE(after[i].equal(before[i]));
  }
  auto* state = dynamic_cast<torch::optim::AdamParamState*>(adam->state().begin()->second.get());
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->step(), 1);

  // And the optimizer goes on from that state.
  take_one_step(*adam, param);
  EXPECT_EQ(state->step(), 2);
}

TEST(AcceleratedOptimizerTest, MovesTheStateOfEachCommonOptimizer) {
  // The meta device shows that the tensors really move (CPU → meta) without a GPU.
  const c10::Device meta(c10::kMeta);
  auto param = torch::tensor({1.0, -2.0}, torch::requires_grad());
  std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers = {
      std::make_shared<torch::optim::Adam>(std::vector<at::Tensor>{param},
                                           torch::optim::AdamOptions().amsgrad(true)),
      std::make_shared<torch::optim::AdamW>(std::vector<at::Tensor>{param},
                                            torch::optim::AdamWOptions()),
      std::make_shared<SGD>(std::vector<at::Tensor>{param}, SGDOptions(0.1).momentum(0.9)),
      std::make_shared<torch::optim::RMSprop>(
          std::vector<at::Tensor>{param},
          torch::optim::RMSpropOptions().centered(true).momentum(0.9)),
      std::make_shared<torch::optim::Adagrad>(std::vector<at::Tensor>{param},
                                              torch::optim::AdagradOptions())};
  const std::vector<size_t> tensors_per_state = {3, 2, 1, 3, 1};
  for (size_t i = 0; i < optimizers.size(); ++i) {
    SCOPED_TRACE("optimizer " + std::to_string(i));
    take_one_step(*optimizers[i], param);
    const auto before = state_tensors(*optimizers[i]);
    size_t defined = 0;
    for (const auto& t : before) defined += t.defined() ? 1 : 0;
    EXPECT_EQ(defined, tensors_per_state[i]);

    acc::AcceleratedOptimizer opt(optimizers[i], std::make_shared<acc::GradientState>(), meta);
    const auto after = state_tensors(*optimizers[i]);
    ASSERT_EQ(after.size(), before.size());
    for (size_t j = 0; j < after.size(); ++j) {
      EXPECT_EQ(after[j].defined(), before[j].defined());
      if (after[j].defined()) {
        EXPECT_EQ(after[j].device(), meta);
        EXPECT_EQ(after[j].sizes(), before[j].sizes());
      }
    }
  }
}

namespace {

// A param state of an optimizer accelerate-cpp does not know.
struct CustomParamState : public torch::optim::OptimizerCloneableParamState<CustomParamState> {
  at::Tensor buffer = torch::ones({2});
};

}  // namespace

TEST(AcceleratedOptimizerTest, LeavesUnknownStateAlone) {
  auto param = torch::tensor({1.0}, torch::requires_grad());
  torch::optim::LBFGS lbfgs(std::vector<at::Tensor>{param});
  EXPECT_EQ(acc::move_optimizer_state_to(lbfgs, torch::kCPU), 0u);  // no state yet

  auto adam = std::make_shared<torch::optim::Adam>(std::vector<at::Tensor>{param});
  take_one_step(*adam, param);
  auto custom = std::make_unique<CustomParamState>();
  const at::Tensor buffer = custom->buffer;
  const auto other = torch::zeros({1});  // the key of a parameter the optimizer does not have
  const auto key = acc::testing::optimizer_state_key(*adam, other.unsafeGetTensorImpl());
  adam->state()[key] = std::move(custom);
  EXPECT_EQ(acc::move_optimizer_state_to(*adam, c10::Device(c10::kMeta)), 1u);
  auto* kept = dynamic_cast<CustomParamState*>(adam->state()[key].get());
  ASSERT_NE(kept, nullptr);
  EXPECT_TRUE(kept->buffer.is_same(buffer));
  EXPECT_EQ(kept->buffer.device(), c10::Device(torch::kCPU));
}

// ---------------------------------------------------------------------------------------------
// The examples at the top of the headers

TEST(HeaderExampleTest, Optimizer) {
  auto gs = std::make_shared<accelerate::GradientState>();
  std::vector<at::Tensor> params{scalar_param(1.0)};
  params[0].mutable_grad() = torch::ones_like(params[0]);
  auto sgd = std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(0.1));
  accelerate::AcceleratedOptimizer opt(sgd, gs, torch::kCPU);
  gs->set_sync_gradients(false);  // inside an accumulation window
  opt.step();                     // does nothing
  EXPECT_EQ(value_of(params[0]), 1.0);
  gs->set_sync_gradients(true);
  opt.step();  // steps the SGD
  EXPECT_DOUBLE_EQ(value_of(params[0]), 0.9);
  opt.zero_grad();  // gradients become undefined (set_to_none)
  EXPECT_FALSE(params[0].grad().defined());
}

TEST(HeaderExampleTest, Scheduler) {
  std::vector<at::Tensor> params{scalar_param(1.0)};
  auto sgd = std::make_shared<torch::optim::SGD>(params, torch::optim::SGDOptions(1.0));
  auto sched = accelerate::get_linear_schedule_with_warmup(sgd, /*warmup*/ 2, /*total*/ 20);
  auto gs = std::make_shared<accelerate::GradientState>();
  auto opt = std::make_shared<accelerate::AcceleratedOptimizer>(sgd, gs, torch::kCPU);
  accelerate::AcceleratedScheduler prepared(
      sched, {opt}, gs, accelerate::AcceleratedSchedulerOptions().num_processes(2));
  opt->step();
  prepared.step();  // two schedule steps: lr = 1.0 × 2/2
  double lr = prepared.get_last_lr()[0];
  EXPECT_EQ(lr, 1.0);
}

// zero_grad first in the loop (LibTorch's examples) with accumulation: on the synchronising
// micro-step it clears what the earlier micro-steps summed; that warns, once. The loop order
// backward, step, zero_grad does not.
TEST(AcceleratedOptimizerTest, ZeroGradClearingAccumulatedGradientsWarnsOnce) {
  auto param = scalar_param(1.0);
  auto sgd = std::make_shared<torch::optim::SGD>(std::vector<at::Tensor>{param},
                                                 torch::optim::SGDOptions(0.1));
  auto gs = std::make_shared<acc::GradientState>(acc::GradientAccumulationPlugin().num_steps(2));
  acc::AcceleratedOptimizer opt(sgd, gs, torch::kCPU);
  auto micro_step = [&](bool sync, bool zero_first) {
    gs->set_sync_gradients(sync);
    if (zero_first) opt.zero_grad();
    (param * 2).backward();
    opt.step();
    if (!zero_first) opt.zero_grad();
  };
  const std::string warning = "zero_grad() cleared gradients that earlier accumulation";
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) {
    micro_step(false, false);
    micro_step(true, false);
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find(warning), std::string::npos);
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 3; ++i) {
    micro_step(false, true);
    micro_step(true, true);
  }
  const std::string err = ::testing::internal::GetCapturedStderr();
  const auto first = err.find(warning);
  EXPECT_NE(first, std::string::npos) << err;
  EXPECT_EQ(err.find(warning, first + 1), std::string::npos) << "warned twice: " << err;
  EXPECT_NE(err.find("gradient_accumulation_steps is 2"), std::string::npos) << err;
}
