// DDP through the Accelerator (prepare_model, backward, accumulate, no_sync), ranks as threads.
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <mutex>

#include "test_util.h"

namespace acc = accelerate;
using acc::testing::run_ranks;

namespace {

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// Deterministic data: 64 samples.
at::Tensor inputs() { return torch::sin(torch::arange(64 * 4, torch::kFloat).reshape({64, 4})); }
at::Tensor targets() { return torch::cos(torch::arange(64, torch::kFloat)).reshape({64, 1}); }

// A model whose parameters differ per call (as each rank's random init would).
std::shared_ptr<Net> make_net(int salt) {
  auto net = std::make_shared<Net>();
  torch::NoGradGuard no_grad;
  int i = 0;
  for (auto& p : net->parameters())
    p.copy_(torch::sin(torch::arange(p.numel(), torch::kFloat) + 10.0 * i++ + 100.0 * salt)
                .reshape(p.sizes()) *
            0.5);
  return net;
}

std::vector<at::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

void expect_close(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b, double tol,
                  const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_LE((a[i] - b[i]).abs().max().item<double>(), tol) << what << ", parameter " << i;
}

// Trains `steps` SGD steps over the global batches of size `global`, each process taking its
// contiguous slice, with `accumulation` micro-batches per step.
void train(acc::Accelerator& a, const std::shared_ptr<Net>& net, int steps, int64_t global,
           int accumulation) {
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
  const int64_t per_process = global / a.num_processes();
  const int64_t micro = per_process / accumulation;
  int64_t offset = 0;
  for (int s = 0; s < steps; ++s) {
    for (int k = 0; k < accumulation; ++k) {
      auto guard = a.accumulate(net);
      const int64_t start = offset + a.process_index() * per_process + k * micro;
      auto x = inputs().narrow(0, start % 64, micro);
      auto y = targets().narrow(0, start % 64, micro);
      a.backward(torch::mse_loss(net->forward(x), y));
      if (a.sync_gradients()) {
        opt.step();
        // Not opt.zero_grad(): LibTorch 1.13's detach_()s the gradients, which c10d's Reducer
        // refuses for its bucket views (the buckets engine's are not autograd views).
        net->zero_grad(false);
      }
    }
    offset += global;
  }
}

// Every engine and bucket-view setting: the DDP tests below run over each.
struct EngineCase {
  acc::DdpEngine engine;
  bool bucket_view;
};

std::string case_name(const ::testing::TestParamInfo<EngineCase>& info) {
  return std::string(info.param.engine == acc::DdpEngine::Buckets ? "Buckets" : "Reducer") +
         (info.param.bucket_view ? "View" : "Copy");
}

class Ddp : public ::testing::TestWithParam<EngineCase> {
 protected:
  acc::DistributedDataParallelOptions ddp() const {
    return acc::DistributedDataParallelOptions()
        .engine(GetParam().engine)
        .gradient_as_bucket_view(GetParam().bucket_view);
  }
  acc::AcceleratorOptions options() const { return acc::AcceleratorOptions().ddp_options(ddp()); }
};

}  // namespace

INSTANTIATE_TEST_SUITE_P(Engines, Ddp,
                         ::testing::Values(EngineCase{acc::DdpEngine::Buckets, true},
                                           EngineCase{acc::DdpEngine::Buckets, false},
                                           EngineCase{acc::DdpEngine::Reducer, true},
                                           EngineCase{acc::DdpEngine::Reducer, false}),
                         case_name);

// N processes with batch b end with the same parameters as 1 process with batch N·b.
TEST_P(Ddp, ProcessesMatchOneProcessWithTheGlobalBatch) {
  std::vector<at::Tensor> reference;
  run_ranks(1, [&](acc::Accelerator& a) {
    auto net = a.prepare_model(make_net(0));
    train(a, net, 4, 16, 1);
    reference = snapshot(*net);
  });
  for (int n : {2, 4}) {
    std::mutex m;
    std::vector<std::vector<at::Tensor>> results(n);
    run_ranks(
        n,
        [&](acc::Accelerator& a) {
          // Every rank starts from different weights: prepare broadcasts those of process 0.
          auto net = a.prepare_model(make_net(a.process_index()));
          train(a, net, 4, 16, 1);
          std::lock_guard<std::mutex> lock(m);
          results[a.process_index()] = snapshot(*net);
        },
        options());
    for (int r = 0; r < n; ++r)
      expect_close(results[r], reference, 1e-6,
                   std::to_string(n) + " processes, rank " + std::to_string(r));
  }
}

// k accumulation steps of batch b equal one step of batch k·b, with 1 and 2 processes.
TEST_P(Ddp, AccumulationMatchesTheLargerBatch) {
  for (int n : {1, 2}) {
    std::vector<at::Tensor> reference, accumulated;
    run_ranks(
        n,
        [&](acc::Accelerator& a) {
          auto net = a.prepare_model(make_net(0));
          train(a, net, 3, 16, 1);
          if (a.is_main_process()) reference = snapshot(*net);
        },
        options());
    run_ranks(
        n,
        [&](acc::Accelerator& a) {
          EXPECT_EQ(a.gradient_accumulation_steps(), 4);
          auto net = a.prepare_model(make_net(0));
          train(a, net, 3, 16, 4);
          if (a.is_main_process()) accumulated = snapshot(*net);
        },
        options().gradient_accumulation_steps(4));
    expect_close(accumulated, reference, 1e-6, std::to_string(n) + " processes");
  }
}

// Inside no_sync gradients stay local; the next synchronised backward averages the sums.
TEST_P(Ddp, NoSyncKeepsGradientsLocal) {
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto net = a.prepare_model(make_net(0));
        auto x = inputs().narrow(0, 4 * a.process_index(), 4);
        auto y = targets().narrow(0, 4 * a.process_index(), 4);
        {
          auto guard = a.no_sync(net);
          a.backward(torch::mse_loss(net->forward(x), y));
        }
        auto local = net->fc1->weight.grad().clone();
        auto others = a.gather(local.unsqueeze(0));
        EXPECT_GT((others[0] - others[1]).abs().max().item<double>(), 1e-4)
            << "gradients were synchronised inside no_sync";
        a.backward(torch::mse_loss(net->forward(x), y));  // synchronised: mean of 2 × local
        auto expected = (others[0] + others[1]);          // (2 g0 + 2 g1) / 2
        EXPECT_LE((net->fc1->weight.grad() - expected).abs().max().item<double>(), 1e-6);
      },
      options());
}

TEST_P(Ddp, FrozenLayersAndParameterFreeModels) {
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto net = make_net(a.process_index());
        net->fc1->weight.set_requires_grad(false);
        net->fc1->bias.set_requires_grad(false);
        a.prepare_model(net);
        // The frozen layer was still broadcast from process 0.
        auto w = a.gather(net->fc1->weight.detach().unsqueeze(0));
        EXPECT_TRUE(torch::equal(w[0], w[1]));
        auto x = inputs().narrow(0, 4 * a.process_index(), 4);
        a.backward(net->forward(x).sum());
        EXPECT_FALSE(net->fc1->weight.grad().defined());
        auto g = a.gather(net->fc2->weight.grad().unsqueeze(0));
        EXPECT_TRUE(torch::allclose(g[0], g[1])) << "trained layer not synchronised";

        auto empty = std::make_shared<torch::nn::Module>();
        EXPECT_EQ(a.prepare_model(empty), empty);
      },
      options());
}

// Two prepared models (as a GAN): a loss that reaches only one arms only its engine.
TEST_P(Ddp, LossReachingOneOfTwoModels) {
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto g = a.prepare_model(make_net(1));
        auto d = a.prepare_model(make_net(2));
        EXPECT_EQ(a.prepare_model(g), g) << "preparing twice must not wrap twice";
        auto x = inputs().narrow(0, 4 * a.process_index(), 4);
        for (int step = 0; step < 3; ++step) {
          a.backward(d->forward(x).sum());
          auto dg = a.gather(d->fc1->weight.grad().unsqueeze(0));
          EXPECT_TRUE(torch::allclose(dg[0], dg[1]));
          a.backward(g->forward(x).pow(2).sum());
          auto gg = a.gather(g->fc1->weight.grad().unsqueeze(0));
          EXPECT_TRUE(torch::allclose(gg[0], gg[1]));
          g->zero_grad();
          d->zero_grad();
        }
      },
      options());
}

// A model whose parameters are registered in another order than the one backward reaches them,
// with one unused layer (`spare`) when asked: buckets are rebuilt in arrival order.
struct Shuffled : torch::nn::Module {
  explicit Shuffled(bool spare_layer) {
    c = register_module("c", torch::nn::Linear(8, 1));
    a = register_module("a", torch::nn::Linear(4, 16));
    b = register_module("b", torch::nn::Linear(16, 8));
    if (spare_layer) spare = register_module("spare", torch::nn::Linear(4, 4));
    torch::NoGradGuard no_grad;
    int k = 0;
    for (auto& p : parameters())
      p.copy_(torch::sin(torch::arange(p.numel(), torch::kFloat) * 0.37 + k++).reshape(p.sizes()) *
              0.4);
  }
  at::Tensor forward(const at::Tensor& x) { return c(torch::tanh(b(torch::tanh(a(x))))); }
  torch::nn::Linear a{nullptr}, b{nullptr}, c{nullptr}, spare{nullptr};
};

// Trains `net` on rank-dependent batches with accumulation 2, SGD with momentum; zero_grad in
// place or to none. Returns rank 0's parameters.
std::vector<at::Tensor> train_shuffled(int ranks, acc::AcceleratorOptions options, bool spare,
                                       bool set_to_none) {
  std::vector<at::Tensor> out;
  run_ranks(
      ranks,
      [&](acc::Accelerator& a) {
        auto net = a.prepare_model(std::make_shared<Shuffled>(spare));
        torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
        for (int step = 0; step < 6; ++step) {
          auto guard = a.accumulate(net);
          auto x = inputs().narrow(0, (8 * step + 3 * a.process_index()) % 56, 5);
          auto y = targets().narrow(0, (8 * step + 3 * a.process_index()) % 56, 5);
          a.backward(torch::mse_loss(net->forward(x), y));
          if (a.sync_gradients()) {
            opt.step();
            net->zero_grad(set_to_none);
          }
        }
        if (a.is_main_process()) out = snapshot(*net);
      },
      options.gradient_accumulation_steps(2));
  return out;
}

void expect_identical(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b,
                      const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_TRUE(torch::equal(a[i], b[i])) << what << ", parameter " << i << ": max difference "
                                          << (a[i] - b[i]).abs().max().item<double>();
}

// The bucketed engine gives c10d's Reducer's parameters bit for bit (3 processes, so that the
// 1/3 scaling and the bucket layout matter; buckets rebuilt in arrival order; several buckets).
TEST(DdpEngines, BucketsGiveTheReducersValuesBitForBit) {
  for (bool view : {true, false}) {
    for (bool set_to_none : {true, false}) {
      for (double cap : {25.0, 0.0002}) {
        auto ddp =
            acc::DistributedDataParallelOptions().gradient_as_bucket_view(view).bucket_cap_mb(cap);
        const auto reducer = train_shuffled(
            3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Reducer)), false,
            set_to_none);
        const auto buckets = train_shuffled(
            3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Buckets)), false,
            set_to_none);
        const auto blocking =
            train_shuffled(3,
                           acc::AcceleratorOptions().ddp_options(
                               ddp.engine(acc::DdpEngine::Buckets).spin_wait_us(0)),
                           false, set_to_none);
        expect_identical(blocking, reducer, "blocking wait (spin_wait_us 0)");
        expect_identical(buckets, reducer,
                         std::string(view ? "bucket view" : "copy") +
                             (set_to_none ? ", zero_grad to none" : ", zero_grad in place") +
                             ", bucket_cap_mb " + std::to_string(cap));
      }
    }
  }
}

// Runs `step` (which returns the model's parameters) on 2 ranks with each engine and expects
// rank 0's gradients after it to be the same bit for bit, an undefined gradient matching only
// an undefined one. Returns the buckets engine's gradients.
template <typename F>
std::vector<at::Tensor> expect_both_engines_agree(const F& step, acc::AcceleratorOptions options,
                                                  acc::DistributedDataParallelOptions ddp) {
  std::vector<std::vector<at::Tensor>> results;
  for (auto engine : {acc::DdpEngine::Buckets, acc::DdpEngine::Reducer}) {
    std::vector<at::Tensor> grads;
    run_ranks(
        2,
        [&](acc::Accelerator& a) {
          const std::vector<at::Tensor> params = step(a);
          if (a.is_main_process())
            for (const auto& p : params)
              grads.push_back(p.grad().defined() ? p.grad().clone() : at::Tensor());
        },
        options.ddp_options(ddp.engine(engine)));
    results.push_back(grads);
  }
  const auto& buckets = results[0];
  const auto& reducer = results[1];
  EXPECT_EQ(buckets.size(), reducer.size());
  for (size_t i = 0; i < std::min(buckets.size(), reducer.size()); ++i) {
    EXPECT_EQ(buckets[i].defined(), reducer[i].defined()) << "parameter " << i;
    if (buckets[i].defined() && reducer[i].defined())
      EXPECT_TRUE(torch::equal(buckets[i], reducer[i])) << "parameter " << i;
  }
  return buckets;
}

// Under bf16 autocast (CPU) the engine gives the Reducer's gradients bit for bit. (bf16
// parameters cannot be prepared over Gloo in LibTorch 1.13: its broadcast refuses the dtype.)
TEST(DdpEngines, MixedPrecisionMatchesTheReducer) {
  const auto grads = expect_both_engines_agree(
      [](acc::Accelerator& a) {
        auto net = a.prepare_model(std::make_shared<Shuffled>(false));
        auto x = inputs().narrow(0, 4 * a.process_index(), 4);
        at::Tensor loss;
        {
          auto amp = a.autocast();
          const at::Tensor out = net->forward(x);
          EXPECT_EQ(out.scalar_type(), at::kBFloat16) << "the forward ran under autocast";
          loss = out.to(at::kFloat).pow(2).sum();
        }
        a.backward(loss);
        return net->parameters();
      },
      acc::AcceleratorOptions().mixed_precision("bf16"), acc::DistributedDataParallelOptions());
  ASSERT_FALSE(grads.empty());
  EXPECT_EQ(grads[0].scalar_type(), at::kFloat);  // fp32 parameters, fp32 gradients
}

// find_unused_parameters: a layer no process uses keeps no gradient; one used by rank 0 only is
// averaged with rank 1's zeros; the values are the Reducer's.
TEST(DdpEngines, FindUnusedParametersMatchesTheReducer) {
  expect_both_engines_agree(
      [](acc::Accelerator& a) {
        auto net = a.prepare_model(std::make_shared<Shuffled>(true));
        auto x = inputs().narrow(0, 4 * a.process_index(), 4);
        for (int step = 0; step < 2; ++step) {
          if (step > 0) net->zero_grad(false);
          at::Tensor loss = net->forward(x).sum();
          if (a.process_index() == 0) loss = loss + net->a->forward(x).pow(2).sum() * 0.5;
          a.backward(loss);
          EXPECT_FALSE(net->spare->weight.grad().defined()) << "unused everywhere: no gradient";
          auto ga = a.gather(net->a->weight.grad().unsqueeze(0));
          EXPECT_TRUE(torch::equal(ga[0], ga[1]));
        }
        return net->parameters();
      },
      acc::AcceleratorOptions(),
      acc::DistributedDataParallelOptions().find_unused_parameters(true));
}

// Without find_unused_parameters, a parameter that gets no gradient is an error naming it, on
// every process, and no process is left waiting.
TEST(DdpEngines, AnUnusedParameterIsAnErrorNamingIt) {
  std::vector<std::string> errors(2);
  run_ranks(2, [&](acc::Accelerator& a) {
    auto net = a.prepare_model(std::make_shared<Shuffled>(true));
    try {
      a.backward(net->forward(inputs().narrow(0, 0, 4)).sum());
    } catch (const acc::InvalidArgument& e) {
      errors[a.process_index()] = e.what();
    }
    // The job goes on: the next synchronised step works once the loss uses everything.
    a.backward(net->forward(inputs().narrow(0, 0, 4)).sum() +
               net->spare->forward(inputs().narrow(0, 0, 4)).sum());
    auto g = a.gather(net->spare->weight.grad().unsqueeze(0));
    EXPECT_TRUE(torch::equal(g[0], g[1]));
  });
  for (const auto& e : errors) {
    EXPECT_NE(e.find("spare.weight"), std::string::npos) << e;
    EXPECT_NE(e.find("find_unused_parameters(true)"), std::string::npos) << e;
  }
}

// The gradients of one bucket share one storage (no per-parameter copies): with
// gradient_as_bucket_view the bucket itself, without it the engine's gradient buffer, which
// the all-reduced bucket is copied into in one piece.
TEST(DdpEngines, GradientsAreViewsIntoTheBucket) {
  for (bool view : {true, false}) {
    run_ranks(
        2,
        [&](acc::Accelerator& a) {
          auto net = a.prepare_model(make_net(0));
          for (int step = 0; step < 2; ++step) {
            a.backward(net->forward(inputs().narrow(0, 0, 4)).sum());
            const auto params = net->parameters();
            for (size_t i = 1; i < params.size(); ++i)
              EXPECT_TRUE(params[i].grad().is_alias_of(params[0].grad()))
                  << "step " << step << ", parameter " << i;
            net->zero_grad(step == 0);  // to none, then in place
          }
        },
        acc::AcceleratorOptions().ddp_options(
            acc::DistributedDataParallelOptions().gradient_as_bucket_view(view)));
  }
}

// LibTorch 1.13's Optimizer::zero_grad (which detach_()es each gradient) works on the buckets
// engine's views.
TEST(DdpEngines, TheOptimizersZeroGradWorksOnBucketViews) {
  run_ranks(2, [](acc::Accelerator& a) {
    auto net = a.prepare_model(make_net(0));
    torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
    for (int step = 0; step < 2; ++step) {
      a.backward(net->forward(inputs().narrow(0, 4 * a.process_index(), 4)).sum());
      EXPECT_TRUE(net->fc1->weight.grad().is_alias_of(net->fc2->weight.grad()));
      opt.step();
      opt.zero_grad();
      if (net->fc1->weight.grad().defined())
        EXPECT_EQ(net->fc1->weight.grad().abs().sum().item<double>(), 0.0);
    }
  });
}

// Two backward passes in one synchronised step add up: the result is the average of the sums.
TEST(DdpEngines, EveryBackwardPassStandsAlone) {
  run_ranks(2, [](acc::Accelerator& a) {
    auto net = a.prepare_model(make_net(0));
    auto x = inputs().narrow(0, 4 * a.process_index(), 4);
    {
      auto guard = a.no_sync(net);
      a.backward(net->forward(x).sum());
      a.backward(net->forward(x).pow(2).sum());
    }
    const auto local = a.gather(net->fc1->weight.grad().unsqueeze(0));
    net->zero_grad(true);
    a.backward(net->forward(x).sum());
    a.backward(net->forward(x).pow(2).sum());
    EXPECT_TRUE(torch::allclose(net->fc1->weight.grad(), (local[0] + local[1]) / 2, 1e-6, 1e-6));
  });
}

// Accelerate's test_distributed_sync: a backward on a loss that reaches no prepared model
// leaves no_sync working afterwards, with either engine (c10d's Reducer is armed only for a
// loss that reaches its model).
TEST(DdpEngines, ALossThatReachesNoModelLeavesNoSyncWorking) {
  for (auto engine : {acc::DdpEngine::Buckets, acc::DdpEngine::Reducer}) {
    run_ranks(
        2,
        [](acc::Accelerator& a) {
          auto net = a.prepare_model(make_net(0));
          auto x = inputs().narrow(0, 4 * a.process_index(), 4);
          auto other = torch::ones({3}, torch::requires_grad());
          a.backward((other * 2).sum());  // reaches no prepared model
          {
            auto guard = a.no_sync(net);
            a.backward(net->forward(x).sum());
          }
          const auto after = a.gather(net->fc1->weight.grad().unsqueeze(0));
          EXPECT_FALSE(torch::equal(after[0], after[1])) << "synchronised inside no_sync";
          a.backward(net->forward(x).sum());  // synchronised again
          const auto synced = a.gather(net->fc1->weight.grad().unsqueeze(0));
          EXPECT_TRUE(torch::equal(synced[0], synced[1]));
        },
        acc::AcceleratorOptions().ddp_options(
            acc::DistributedDataParallelOptions().engine(engine)));
  }
}

TEST(DdpPrepare, BadOptionsAreRefused) {
  run_ranks(2, [](acc::Accelerator& a) {
    EXPECT_THROW(
        acc::DistributedDataParallel(make_net(0), a.state(),
                                     acc::DistributedDataParallelOptions().spin_wait_us(-1)),
        acc::InvalidArgument);
    EXPECT_THROW(
        acc::DistributedDataParallel(make_net(0), a.state(),
                                     acc::DistributedDataParallelOptions().bucket_cap_mb(0)),
        acc::InvalidArgument);
  });
}

TEST(DdpPrepare, ModelsThatDifferAreRefused) {
  const auto store = acc::testing::make_store();
  std::vector<std::string> errors(2);
  acc::testing::spawn_threads(2, [&](int rank) {
    acc::Accelerator a(acc::testing::rank_options(
        rank, 2, store, acc::AcceleratorOptions().timeout(std::chrono::seconds(30))));
    auto net = std::make_shared<torch::nn::Module>();
    net->register_module("fc", torch::nn::Linear(4, rank == 0 ? 2 : 3));
    try {
      a.prepare_model(net);
    } catch (const acc::InvalidArgument& e) {
      errors[rank] = e.what();
    }
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_NE(errors[r].find("the model differs between processes"), std::string::npos)
        << "rank " << r << ": " << errors[r];
    EXPECT_NE(errors[r].find("fc.weight"), std::string::npos) << errors[r];
  }
}

TEST(Accelerator, PluginAndStepsTogetherAreRefused) {
  EXPECT_THROW(acc::Accelerator(acc::AcceleratorOptions()
                                    .environment({})
                                    .gradient_accumulation_steps(2)
                                    .gradient_accumulation_plugin(
                                        acc::GradientAccumulationPlugin().num_steps(2))),
               std::invalid_argument);
  EXPECT_THROW(
      acc::Accelerator(acc::AcceleratorOptions().environment({}).gradient_accumulation_steps(0)),
      std::invalid_argument);
  acc::Accelerator a(acc::AcceleratorOptions().environment({}).gradient_accumulation_plugin(
      acc::GradientAccumulationPlugin().num_steps(3)));
  EXPECT_EQ(a.gradient_accumulation_steps(), 3);
}

TEST(Accelerator, ClipGradNormReturnsTheTotalNorm) {
  acc::Accelerator a(acc::AcceleratorOptions().environment({}));
  auto p = torch::zeros({2}, torch::requires_grad());
  (p * torch::tensor({3.0f, 4.0f})).sum().backward();
  EXPECT_DOUBLE_EQ(a.clip_grad_norm_({p}, 1.0), 5.0);
  EXPECT_NEAR(p.grad().norm().item<double>(), 1.0, 1e-5);
  a.clip_grad_value_({p}, 0.5);
  EXPECT_LE(p.grad().abs().max().item<double>(), 0.5);
}
