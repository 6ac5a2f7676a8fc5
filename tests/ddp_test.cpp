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
        opt.zero_grad();
      }
    }
    offset += global;
  }
}

}  // namespace

// N processes with batch b end with the same parameters as 1 process with batch N·b.
TEST(Ddp, ProcessesMatchOneProcessWithTheGlobalBatch) {
  std::vector<at::Tensor> reference;
  run_ranks(1, [&](acc::Accelerator& a) {
    auto net = a.prepare_model(make_net(0));
    train(a, net, 4, 16, 1);
    reference = snapshot(*net);
  });
  for (int n : {2, 4}) {
    std::mutex m;
    std::vector<std::vector<at::Tensor>> results(n);
    run_ranks(n, [&](acc::Accelerator& a) {
      // Every rank starts from different weights: prepare broadcasts those of process 0.
      auto net = a.prepare_model(make_net(a.process_index()));
      train(a, net, 4, 16, 1);
      std::lock_guard<std::mutex> lock(m);
      results[a.process_index()] = snapshot(*net);
    });
    for (int r = 0; r < n; ++r)
      expect_close(results[r], reference, 1e-6,
                   std::to_string(n) + " processes, rank " + std::to_string(r));
  }
}

// k accumulation steps of batch b equal one step of batch k·b, with 1 and 2 processes.
TEST(Ddp, AccumulationMatchesTheLargerBatch) {
  for (int n : {1, 2}) {
    std::vector<at::Tensor> reference, accumulated;
    run_ranks(n, [&](acc::Accelerator& a) {
      auto net = a.prepare_model(make_net(0));
      train(a, net, 3, 16, 1);
      if (a.is_main_process()) reference = snapshot(*net);
    });
    run_ranks(
        n,
        [&](acc::Accelerator& a) {
          EXPECT_EQ(a.gradient_accumulation_steps(), 4);
          auto net = a.prepare_model(make_net(0));
          train(a, net, 3, 16, 4);
          if (a.is_main_process()) accumulated = snapshot(*net);
        },
        acc::AcceleratorOptions().gradient_accumulation_steps(4));
    expect_close(accumulated, reference, 1e-6, std::to_string(n) + " processes");
  }
}

// Inside no_sync gradients stay local; the next synchronised backward averages the sums.
TEST(Ddp, NoSyncKeepsGradientsLocal) {
  run_ranks(2, [](acc::Accelerator& a) {
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
  });
}

TEST(Ddp, FrozenLayersAndParameterFreeModels) {
  run_ranks(2, [](acc::Accelerator& a) {
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
  });
}

// Two prepared models (as a GAN): a loss that reaches only one arms only its engine.
TEST(Ddp, LossReachingOneOfTwoModels) {
  run_ranks(2, [](acc::Accelerator& a) {
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
  });
}

TEST(Ddp, ModelsThatDifferAreRefused) {
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
