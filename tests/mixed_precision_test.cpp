// Mixed precision: the autocast guard, the fp16 gradient scaler, and their use by the
// Accelerator and the prepared optimizer / scheduler.
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <string>

namespace acc = accelerate;

namespace {

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(8, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2->forward(torch::relu(fc1->forward(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no exception)";
}

}  // namespace

// ---- AutocastGuard ----

TEST(Autocast, Bf16OnCpuAndRestores) {
  auto a = torch::randn({4, 8}), b = torch::randn({8, 3});
  EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kFloat);
  {
    acc::AutocastGuard amp(c10::DeviceType::CPU, at::kBFloat16);
    EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kBFloat16);
    {
      acc::AutocastGuard off(c10::DeviceType::CPU, std::nullopt);  // nested: off inside
      EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kFloat);
    }
    EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kBFloat16);  // restored to the outer region
  }
  EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kFloat);
  {
    auto none = acc::AutocastGuard::none();
    EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kFloat);
  }
}

TEST(Autocast, RejectsWhatThisLibTorchCannotDo) {
#if TORCH_VERSION_MAJOR < 2
  const std::string m = message_of([] { acc::AutocastGuard amp(c10::DeviceType::CPU, at::kHalf); });
  EXPECT_NE(m.find("Half"), std::string::npos) << m;
  EXPECT_NE(m.find("cpu"), std::string::npos) << m;
#endif
  EXPECT_THROW(acc::AutocastGuard(c10::DeviceType::Meta, at::kBFloat16), std::invalid_argument);
}

TEST(Autocast, AcceleratorFollowsMixedPrecision) {
  auto x = torch::randn({2, 8});
  auto net = std::make_shared<Net>();
  {
    acc::Accelerator bf16(acc::AcceleratorOptions().cpu(true).mixed_precision("bf16"));
    EXPECT_EQ(bf16.mixed_precision(), acc::MixedPrecision::BF16);
    auto amp = bf16.autocast();
    EXPECT_EQ(net->forward(x).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(net->forward(x).scalar_type(), at::kFloat);
  acc::Accelerator no(acc::AcceleratorOptions().cpu(true).mixed_precision("no"));
  auto amp = no.autocast();
  EXPECT_EQ(net->forward(x).scalar_type(), at::kFloat);
  EXPECT_EQ(no.scaler(), nullptr);
}

// The model is not wrapped, so a forward pass outside accelerator.autocast() runs in float32:
// the first backward says so, once; a loss computed under autocast is not warned about.
TEST(Autocast, WarnsOnceWhenTheLossRanInFullPrecision) {
  auto x = torch::randn({2, 8});
  auto net = std::make_shared<Net>();
  {
    acc::Accelerator a(acc::AcceleratorOptions().cpu(true).environment({}).mixed_precision("bf16"));
    ::testing::internal::CaptureStderr();
    a.backward(net->forward(x).sum());
    a.backward(net->forward(x).sum());
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("mixed_precision is 'bf16' but no operation of this loss ran in BFloat16"),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("accelerator.autocast()"), std::string::npos) << err;
    EXPECT_EQ(err.find("warning"), err.rfind("warning")) << "warned more than once: " << err;
  }
  acc::Accelerator b(acc::AcceleratorOptions().cpu(true).environment({}).mixed_precision("bf16"));
  ::testing::internal::CaptureStderr();
  at::Tensor loss;
  {
    auto amp = b.autocast();
    loss = net->forward(x).to(at::kFloat).sum();
  }
  b.backward(loss);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(Autocast, Fp16NeedsCuda) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "CUDA present: fp16 is allowed";
  const std::string m = message_of(
      [] { acc::Accelerator a(acc::AcceleratorOptions().cpu(true).mixed_precision("fp16")); });
  EXPECT_NE(m.find("'fp16' needs a CUDA device"), std::string::npos) << m;
  EXPECT_NE(m.find("bf16"), std::string::npos) << m;
}

TEST(Autocast, Bf16TrainingLearns) {
  // A real bf16 run: the loss of a small regression falls under autocast, parameters stay fp32.
  torch::manual_seed(0);
  acc::Accelerator accelerator(acc::AcceleratorOptions().cpu(true).mixed_precision("bf16"));
  auto net = std::make_shared<Net>();
  auto adam =
      std::make_shared<torch::optim::Adam>(net->parameters(), torch::optim::AdamOptions(1e-2));
  auto [model, opt] = accelerator.prepare(net, adam);
  auto x = torch::randn({256, 8});
  auto y = (x.sum(1, true) * 0.3).tanh();
  double first = 0, last = 0;
  for (int step = 0; step < 200; ++step) {
    at::Tensor loss;
    {
      auto amp = accelerator.autocast();
      loss = torch::mse_loss(model->forward(x).to(at::kFloat), y);
    }
    accelerator.backward(loss);
    opt->step();
    opt->zero_grad();
    if (step == 0) first = loss.item<double>();
    last = loss.item<double>();
  }
  EXPECT_LT(last, first * 0.2) << "first " << first << " last " << last;
  EXPECT_EQ(model->fc1->weight.scalar_type(), at::kFloat);
}

// ---- GradScaler ----

namespace {

// One SGD parameter w (2 elements) with gradient `g` written directly.
struct OneParam {
  at::Tensor w = torch::ones({2}, torch::requires_grad());
  std::shared_ptr<torch::optim::SGD> sgd = std::make_shared<torch::optim::SGD>(
      std::vector<at::Tensor>{w}, torch::optim::SGDOptions(0.5));
  void backward(acc::GradScaler& scaler, double g0, double g1) {
    auto loss = (w * torch::tensor({g0, g1}, torch::kFloat)).sum();
    scaler.scale(loss).backward();
  }
};

}  // namespace

TEST(GradScaler, ScalesUnscalesAndSteps) {
  acc::GradScaler scaler;
  EXPECT_DOUBLE_EQ(scaler.get_scale(), 65536.0);
  OneParam p;
  p.backward(scaler, 1.0, -2.0);
  EXPECT_FLOAT_EQ(p.w.grad()[0].item<float>(), 65536.0f);
  scaler.unscale_(*p.sgd);
  EXPECT_FLOAT_EQ(p.w.grad()[1].item<float>(), -2.0f);
  EXPECT_TRUE(scaler.step(*p.sgd));  // already unscaled: not again
  scaler.update();
  EXPECT_FLOAT_EQ(p.w[0].item<float>(), 1.0f - 0.5f * 1.0f);
  EXPECT_FLOAT_EQ(p.w[1].item<float>(), 1.0f + 0.5f * 2.0f);
  EXPECT_DOUBLE_EQ(scaler.get_scale(), 65536.0);
  EXPECT_EQ(scaler.growth_tracker(), 1);
}

TEST(GradScaler, SkipsStepOnInfOrNanAndBacksOff) {
  for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
    acc::GradScaler scaler;
    OneParam p;
    p.backward(scaler, 1.0, bad);
    EXPECT_FALSE(scaler.step(*p.sgd));
    scaler.update();
    EXPECT_FLOAT_EQ(p.w[0].item<float>(), 1.0f) << "the step must be skipped";
    EXPECT_DOUBLE_EQ(scaler.get_scale(), 32768.0);
    EXPECT_EQ(scaler.growth_tracker(), 0);
  }
  // Overflow from the scale itself: a finite gradient times the scale is inf in float32.
  acc::GradScaler scaler(acc::GradScalerOptions().init_scale(1e30));
  OneParam p;
  p.backward(scaler, 1e10, 1.0);
  EXPECT_FALSE(scaler.step(*p.sgd));
  scaler.update();
  EXPECT_DOUBLE_EQ(scaler.get_scale(), static_cast<double>(static_cast<float>(1e30 * 0.5)));
}

TEST(GradScaler, GrowsAfterGrowthInterval) {
  acc::GradScaler scaler(acc::GradScalerOptions().init_scale(4).growth_interval(3));
  OneParam p;
  std::vector<double> scales;
  // clean, clean, clean (x2), clean, inf (/2), clean, clean, clean (x2)
  const std::vector<bool> bad = {false, false, false, false, true, false, false, false};
  for (bool b : bad) {
    p.sgd->zero_grad();
    p.backward(scaler, 1.0, b ? std::numeric_limits<double>::infinity() : 1.0);
    scaler.step(*p.sgd);
    scaler.update();
    scales.push_back(scaler.get_scale());
  }
  EXPECT_EQ(scales, (std::vector<double>{4, 4, 8, 8, 4, 4, 4, 8}));
}

TEST(GradScaler, SameParametersAsWithoutScaling) {
  // Power-of-two scaling is exact in float32: with no overflow, training through the scaler
  // gives bit-identical parameters.
  auto train = [](bool scaled) {
    torch::manual_seed(3);
    Net net;
    torch::optim::Adam adam(net.parameters(), torch::optim::AdamOptions(1e-2));
    acc::GradScaler scaler(acc::GradScalerOptions().enabled(scaled));
    auto x = torch::randn({64, 8});
    auto y = torch::randn({64, 1});
    for (int i = 0; i < 20; ++i) {
      adam.zero_grad();
      scaler.scale(torch::mse_loss(net.forward(x), y)).backward();
      scaler.step(adam);
      scaler.update();
    }
    return torch::cat({net.fc1->weight.flatten(), net.fc2->weight.flatten()});
  };
  EXPECT_TRUE(torch::equal(train(true), train(false)));
}

TEST(GradScaler, MisuseAndBadOptionsAreClearErrors) {
  acc::GradScaler scaler;
  OneParam p;
  EXPECT_NE(message_of([&] { scaler.unscale_(*p.sgd); }).find("before any scale()"),
            std::string::npos);
  p.backward(scaler, 1, 1);
  scaler.unscale_(*p.sgd);
  EXPECT_NE(message_of([&] { scaler.unscale_(*p.sgd); }).find("already called"), std::string::npos);
  scaler.step(*p.sgd);
  EXPECT_NE(message_of([&] { scaler.step(*p.sgd); }).find("already called"), std::string::npos);
  scaler.update();
  EXPECT_NE(message_of([&] { scaler.update(); }).find("without unscale_() or step()"),
            std::string::npos);

  at::Tensor h = torch::ones({2}, torch::dtype(torch::kHalf).requires_grad(true));
  torch::optim::SGD sgd({h}, torch::optim::SGDOptions(0.1));
  h.mutable_grad() = torch::ones({2}, torch::kHalf);
  EXPECT_NE(message_of([&] { scaler.unscale_(sgd); }).find("float16 gradients"), std::string::npos);

  EXPECT_THROW(acc::GradScaler(acc::GradScalerOptions().init_scale(0)), std::invalid_argument);
  EXPECT_THROW(acc::GradScaler(acc::GradScalerOptions().growth_factor(1)), std::invalid_argument);
  EXPECT_THROW(acc::GradScaler(acc::GradScalerOptions().backoff_factor(1)), std::invalid_argument);
  EXPECT_THROW(acc::GradScaler(acc::GradScalerOptions().growth_interval(0)), std::invalid_argument);
}

TEST(GradScaler, StateDictRoundTrip) {
  acc::GradScaler a(acc::GradScalerOptions().init_scale(1024).growth_interval(10));
  OneParam p;
  p.backward(a, 1, std::numeric_limits<double>::infinity());
  a.step(*p.sgd);
  a.update();  // 512, tracker 0
  for (int i = 0; i < 3; ++i) {
    p.sgd->zero_grad();
    p.backward(a, 1, 1);
    a.step(*p.sgd);
    a.update();
  }
  const std::map<std::string, double> state = a.state_dict();
  EXPECT_EQ(state.at("scale"), 512.0);
  EXPECT_EQ(state.at("_growth_tracker"), 3);
  EXPECT_EQ(state.at("growth_interval"), 10);
  EXPECT_EQ(state.at("growth_factor"), 2.0);
  EXPECT_EQ(state.at("backoff_factor"), 0.5);

  // Loaded before the first scale() (a fresh process resuming), then continued: the 7th
  // clean step after the 3 saved ones doubles the scale, exactly as in the original.
  acc::GradScaler b;
  b.load_state_dict(state);
  EXPECT_DOUBLE_EQ(b.get_scale(), 512.0);
  EXPECT_EQ(b.options().growth_interval(), 10);  // the loaded interval, not the default 2000
  OneParam q;
  for (int i = 0; i < 7; ++i) {
    q.sgd->zero_grad();
    q.backward(b, 1, 1);
    b.step(*q.sgd);
    b.update();
  }
  EXPECT_DOUBLE_EQ(b.get_scale(), 1024.0);
  EXPECT_EQ(b.growth_tracker(), 0);

  EXPECT_NE(message_of([&] {
              b.load_state_dict({{"scale", 1.0}});
            }).find("'growth_factor'"),
            std::string::npos);
  EXPECT_NE(message_of([&] { b.load_state_dict(std::map<std::string, double>{}); }).find("empty"),
            std::string::npos);
}

TEST(GradScaler, PreparedOptimizerSkipsAndSchedulerHolds) {
  // What the Accelerator wires up with fp16: the prepared optimizer steps through the
  // scaler, reports the skipped step, and the prepared scheduler does not advance then.
  auto gs = std::make_shared<acc::GradientState>();
  OneParam p;
  auto scaler = std::make_shared<acc::GradScaler>();
  auto opt = std::make_shared<acc::AcceleratedOptimizer>(p.sgd, gs, torch::kCPU);
  opt->attach_scaler(scaler);
  auto lambda =
      std::make_shared<acc::LambdaLR>(p.sgd, [](unsigned step) { return 1.0 / (1 + step); });
  acc::AcceleratedScheduler sched(lambda, {opt}, gs);

  p.backward(*scaler, 1, std::numeric_limits<double>::infinity());
  opt->step();
  sched.step();
  EXPECT_TRUE(opt->step_was_skipped());
  EXPECT_FLOAT_EQ(p.w[0].item<float>(), 1.0f);
  EXPECT_DOUBLE_EQ(sched.get_last_lr()[0], 0.5);  // not advanced
  EXPECT_DOUBLE_EQ(scaler->get_scale(), 32768.0);

  opt->zero_grad();
  p.backward(*scaler, 1, 1);
  opt->step();
  sched.step();
  EXPECT_FALSE(opt->step_was_skipped());
  EXPECT_FLOAT_EQ(p.w[0].item<float>(), 0.5f);
  EXPECT_DOUBLE_EQ(sched.get_last_lr()[0], 0.25);  // advanced once
}
