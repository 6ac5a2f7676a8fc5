// DDP through the Accelerator (prepare_model, backward, accumulate, no_sync), ranks as threads.
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <torch/version.h>

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

// A model of type M whose parameters differ per salt (as each rank's random init would).
template <typename M>
std::shared_ptr<M> make_model(int salt) {
  auto net = std::make_shared<M>();
  torch::NoGradGuard no_grad;
  int i = 0;
  for (auto& p : net->parameters())
    p.copy_(torch::sin(torch::arange(p.numel(), torch::kFloat) + 10.0 * i++ + 100.0 * salt)
                .reshape(p.sizes()) *
            0.5);
  return net;
}
std::shared_ptr<Net> make_net(int salt) { return make_model<Net>(salt); }

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

// A model with buffers: BatchNorm2d after a convolution and BatchNorm1d after a linear layer
// (running_mean, running_var, num_batches_tracked).
struct BnNet : torch::nn::Module {
  BnNet() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 3, 1)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(3));
    fc1 = register_module("fc1", torch::nn::Linear(12, 8));
    bn1 = register_module("bn1", torch::nn::BatchNorm1d(8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 1));
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = torch::relu(bn2(conv(x.view({-1, 1, 2, 2})))).flatten(1);
    return fc2(torch::tanh(bn1(fc1(h))));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr};
};

std::shared_ptr<BnNet> make_bn_net(int salt) { return make_model<BnNet>(salt); }

std::vector<at::Tensor> buffers_of(const torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (const auto& b : m.buffers()) out.push_back(b.detach().clone().to(at::kDouble));
  return out;
}

// What a BatchNorm model trained with PyTorch's DDP holds: n replicas, each forward preceded by
// a copy of replica 0's buffers when the previous forward synchronised (DDP's
// require_forward_param_sync), gradients averaged at each synchronising micro-step. Returns
// replica 0's parameters and buffers, and what an evaluation forward through DDP gives after
// training (it copies replica 0's buffers first).
struct BnReference {
  std::vector<at::Tensor> params, buffers;
  at::Tensor eval;
};
BnReference bn_reference(int n, int steps, int accumulation) {
  std::vector<std::shared_ptr<BnNet>> replicas;
  std::vector<std::unique_ptr<torch::optim::SGD>> opts;
  for (int r = 0; r < n; ++r) {
    replicas.push_back(make_bn_net(0));
    opts.push_back(std::make_unique<torch::optim::SGD>(replicas.back()->parameters(),
                                                       torch::optim::SGDOptions(0.1)));
  }
  const int64_t micro = 8;
  bool sync_before_forward = true;
  int64_t offset = 0;
  for (int s = 0; s < steps; ++s) {
    for (int k = 0; k < accumulation; ++k) {
      if (sync_before_forward) {
        torch::NoGradGuard no_grad;
        auto source = replicas[0]->buffers();
        for (int r = 1; r < n; ++r) {
          auto target = replicas[r]->buffers();
          for (size_t i = 0; i < source.size(); ++i) target[i].copy_(source[i]);
        }
      }
      const bool sync = k == accumulation - 1;
      for (int r = 0; r < n; ++r) {
        const int64_t start = (offset + (r * accumulation + k) * micro) % 64;
        auto loss = torch::mse_loss(replicas[r]->forward(inputs().narrow(0, start, micro)),
                                    targets().narrow(0, start, micro));
        (accumulation > 1 ? loss / accumulation : loss).backward();
      }
      sync_before_forward = sync;
    }
    torch::NoGradGuard no_grad;
    auto params0 = replicas[0]->parameters();
    for (size_t i = 0; i < params0.size(); ++i) {
      at::Tensor sum = at::zeros_like(params0[i]);
      for (int r = 0; r < n; ++r) sum += replicas[r]->parameters()[i].grad() / n;
      for (int r = 0; r < n; ++r) replicas[r]->parameters()[i].mutable_grad().copy_(sum);
    }
    for (int r = 0; r < n; ++r) {
      opts[r]->step();
      opts[r]->zero_grad();
    }
    offset += n * accumulation * micro;
  }
  BnReference out;
  for (const auto& p : replicas[0]->parameters()) out.params.push_back(p.detach().clone());
  out.buffers = buffers_of(*replicas[0]);
  replicas[0]->eval();
  torch::NoGradGuard no_grad;
  out.eval = replicas[0]->forward(inputs().narrow(0, 0, 16));
  return out;
}

// BatchNorm under DDP with default options, on 2 and 3 processes, with and without accumulation:
// the first backward does not fail (the buffers are not changed under the graph that saved
// them), and parameters, process 0's buffers and the evaluation output of every process equal
// what PyTorch's DDP gives; every process ends with process 0's buffers.
TEST_P(Ddp, BatchNormTrainsAsWithPyTorchsDdp) {
  for (int n : {2, 3}) {
    for (int accumulation : {1, 2}) {
      const std::string what =
          std::to_string(n) + " processes, accumulation " + std::to_string(accumulation);
      const BnReference reference = bn_reference(n, 4, accumulation);
      std::mutex m;
      std::vector<std::vector<at::Tensor>> params(n), buffers(n);
      std::vector<at::Tensor> evals(n);
      run_ranks(
          n,
          [&](acc::Accelerator& a) {
            auto net = a.prepare_model(make_bn_net(a.process_index()));
            torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1));
            const int64_t micro = 8;
            int64_t offset = 0;
            for (int s = 0; s < 4; ++s) {
              for (int k = 0; k < accumulation; ++k) {
                auto guard = a.accumulate(net);
                const int64_t start =
                    (offset + (a.process_index() * accumulation + k) * micro) % 64;
                a.backward(torch::mse_loss(net->forward(inputs().narrow(0, start, micro)),
                                           targets().narrow(0, start, micro)));
              }
              opt.step();
              net->zero_grad(false);
              offset += a.num_processes() * accumulation * micro;
            }
            net->eval();
            torch::NoGradGuard no_grad;
            auto eval = net->forward(inputs().narrow(0, 0, 16));
            std::lock_guard<std::mutex> lock(m);
            params[a.process_index()] = snapshot(*net);
            buffers[a.process_index()] = buffers_of(*net);
            evals[a.process_index()] = eval;
          },
          options().gradient_accumulation_steps(accumulation));
      ASSERT_EQ(buffers[0].size(), 6u) << "BatchNorm2d and BatchNorm1d: mean, var, count";
      for (int r = 0; r < n; ++r) {
        const std::string rank = what + ", rank " + std::to_string(r);
        expect_close(params[r], reference.params, 1e-5, rank);
        expect_close(buffers[r], reference.buffers, 1e-5, rank + ", buffers");
        EXPECT_LE((evals[r] - reference.eval).abs().max().item<double>(), 1e-5) << rank;
      }
      // The statistics moved: the test would not see a missed copy otherwise.
      EXPECT_GT(reference.buffers[0].abs().max().item<double>(), 1e-3) << what;
      EXPECT_EQ(reference.buffers[2].item<double>(), 4.0 * accumulation) << what;
    }
  }
}

// A backward with retain_graph, then a second backward through the same graph (BatchNorm saved
// its running statistics for it): the buffer copy after the first does not break the second.
TEST_P(Ddp, BatchNormRetainedGraphRunsTwice) {
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto net = a.prepare_model(make_bn_net(0));
        auto x = inputs().narrow(0, 8 * a.process_index(), 8);
        auto loss = torch::mse_loss(net->forward(x), targets().narrow(0, 8 * a.process_index(), 8));
        a.backward(loss, acc::BackwardOptions().retain_graph(true));
        auto first = net->fc1->weight.grad().clone();
        a.backward(loss);
        EXPECT_LE((net->fc1->weight.grad() - 2 * first).abs().max().item<double>(), 1e-5);
      },
      options());
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

// ---- communication hooks (DistributedDataParallelOptions::comm_hook) ----

// With the fp16 hook both engines give the same parameters bit for bit (3 processes, one
// bucket and several, bucket views or copies), and the hook changes them (it ran).
TEST(DdpCommHook, Fp16GivesTheSameValuesWithBothEngines) {
  for (bool view : {true, false}) {
    for (double cap : {25.0, 0.0002}) {
      auto ddp =
          acc::DistributedDataParallelOptions().gradient_as_bucket_view(view).bucket_cap_mb(cap);
      const std::string what =
          std::string(view ? "bucket view" : "copy") + ", bucket_cap_mb " + std::to_string(cap);
      const auto plain = train_shuffled(
          3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Buckets)), false,
          true);
      ddp.comm_hook(acc::CommHook::FP16);
      const auto reducer = train_shuffled(
          3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Reducer)), false,
          true);
      const auto buckets = train_shuffled(
          3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Buckets)), false,
          false);
      expect_identical(buckets, reducer, what);
      bool differs = false;
      for (size_t i = 0; i < plain.size(); ++i)
        differs = differs || !torch::equal(plain[i], buckets[i]);
      EXPECT_TRUE(differs) << what << ": the fp16 hook left every value as without it";
    }
  }
}

// bf16: the same where the backend all-reduces bfloat16 (Gloo from LibTorch 2); with LibTorch
// 1.x's Gloo, prepare refuses it on every process with a message naming the hook.
TEST(DdpCommHook, Bf16GivesTheSameValuesWithBothEnginesOrIsRefused) {
  auto ddp = acc::DistributedDataParallelOptions().comm_hook(acc::CommHook::BF16);
#if TORCH_VERSION_MAJOR >= 2
  const auto reducer = train_shuffled(
      3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Reducer)), false, true);
  const auto buckets = train_shuffled(
      3, acc::AcceleratorOptions().ddp_options(ddp.engine(acc::DdpEngine::Buckets)), false, true);
  expect_identical(buckets, reducer, "bf16 hook");
#else
  for (auto kind : {acc::DdpEngine::Buckets, acc::DdpEngine::Reducer}) {
    std::vector<std::string> errors(2);
    run_ranks(2, [&](acc::Accelerator& a) {
      try {
        acc::DistributedDataParallel engine(make_net(0), a.state(), ddp.engine(kind));
      } catch (const acc::InvalidArgument& e) {
        errors[a.process_index()] = e.what();
      }
    });
    for (int r = 0; r < 2; ++r)
      EXPECT_NE(errors[r].find("comm_hook(CommHook::BF16) needs a backend that all-reduces "
                               "bfloat16, and gloo here does not"),
                std::string::npos)
          << "rank " << r << ": " << errors[r];
  }
#endif
}

// A compressing hook would drop the imaginary part of complex gradients: refused at prepare.
TEST(DdpCommHook, ComplexParametersAreRefused) {
  struct Complex : torch::nn::Module {
    Complex() { w = register_parameter("w", torch::zeros({2}, torch::kComplexFloat)); }
    at::Tensor w;
  };
  run_ranks(2, [](acc::Accelerator& a) {
    try {
      acc::DistributedDataParallel engine(
          std::make_shared<Complex>(), a.state(),
          acc::DistributedDataParallelOptions().comm_hook(acc::CommHook::FP16));
      ADD_FAILURE() << "a complex parameter was accepted with the fp16 hook";
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("parameter w of complex dtype"), std::string::npos)
          << e.what();
    }
  });
}

// ---- join_uneven_inputs ----

// Linear(1, 1) and a buffer that each forward raises by rank + 1 (as running statistics
// would change differently on each process).
struct Counting : torch::nn::Module {
  explicit Counting(int rank) : rank(rank) {
    fc = register_module("fc", torch::nn::Linear(1, 1));
    count = register_buffer("count", torch::zeros({1}));
    torch::NoGradGuard no_grad;
    fc->weight.fill_(0.5);
    fc->bias.fill_(-0.25);
  }
  at::Tensor forward(const at::Tensor& x) {
    {
      torch::NoGradGuard no_grad;
      count.add_(rank + 1);
    }
    return fc(x);
  }
  int rank;
  torch::nn::Linear fc{nullptr};
  at::Tensor count;
};

// Accelerate's test_can_join_uneven_inputs, with the values PyTorch's Join gives: `samples`
// samples x = 1, 2, ..., batch 1, even_batches off, so process r gets samples r, r + n, ...
// and stops early; SGD on loss = sum(model(x)). In each step, the gradient is the sum over the
// processes still training divided by n (the processes that ran out contribute zeros); on
// leaving, every process takes the model and the buffers of the last one to leave; in each
// synchronising step the buffers come from the highest process still training.
TEST(JoinUnevenInputs, UnevenProcessesGetPyTorchsJoinValues) {
  for (auto [n, samples] : {std::pair{2, 3}, std::pair{3, 7}, std::pair{3, 4}, std::pair{3, 6}}) {
    const std::string what =
        std::to_string(n) + " processes, " + std::to_string(samples) + " samples";
    constexpr double lr = 0.1;
    // Expected weight and bias, stepping as the processes still training do.
    double w = 0.5, b = -0.25;
    const int64_t steps = (samples + n - 1) / n;
    for (int64_t s = 0; s < steps; ++s) {
      double dw = 0, db = 0;
      for (int r = 0; r < n; ++r) {
        const int64_t i = r + s * n;
        if (i < samples) dw += static_cast<double>(i + 1), db += 1;
      }
      w -= lr * dw / n;
      b -= lr * db / n;
    }
    // The last process to leave: the highest one with the most batches.
    const int last = static_cast<int>((samples - 1) % n);
    std::vector<std::vector<int64_t>> batch_idxs(n);
    std::vector<std::vector<at::Tensor>> params(n);
    std::vector<double> counts(n);
    std::vector<std::vector<double>> seen(n);  // rank's buffer after each of its backward passes
    run_ranks(
        n,
        [&](acc::Accelerator& a) {
          const int rank = a.process_index();
          auto model = a.prepare_model(std::make_shared<Counting>(rank));
          auto dl = a.prepare_data_loader(acc::DataLoader<acc::TensorDataset>(
              acc::TensorDataset(torch::arange(1, samples + 1, torch::kFloat).reshape({-1, 1}),
                                 torch::zeros({samples, 1})),
              acc::DataLoaderOptions().batch_size(1)));
          torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(lr));
          {
            auto join = a.join_uneven_inputs({model});
            int64_t idx = 0;
            for (auto& batch : *dl) {
              a.backward(model->forward(batch.data).sum());
              seen[rank].push_back(model->count.item<double>());
              opt.step();
              model->zero_grad(false);
              batch_idxs[rank].push_back(idx++);
            }
          }
          params[rank] = snapshot(*model);
          counts[rank] = model->count.item<double>();
        },
        acc::AcceleratorOptions().even_batches(false));
    for (int r = 0; r < n; ++r) {
      const int64_t mine = (samples - r + n - 1) / n;
      ASSERT_EQ(static_cast<int64_t>(batch_idxs[r].size()), mine) << what << ", rank " << r;
      EXPECT_NEAR(params[r][0].item<double>(), w, 1e-6) << what << ", rank " << r;
      EXPECT_NEAR(params[r][1].item<double>(), b, 1e-6) << what << ", rank " << r;
      expect_identical(params[r], params[last], what + ", rank " + std::to_string(r));
      EXPECT_EQ(counts[r], counts[last]) << what << ", rank " << r;
      // The buffer, the same everywhere after each synchronising step: each process adds
      // rank + 1 in its forward, then all take the highest process's still training.
      double count = 0;
      for (size_t s = 0; s < seen[r].size(); ++s) {
        int highest = 0;
        for (int q = 0; q < n; ++q)
          if (q + static_cast<int64_t>(s) * n < samples) highest = q;
        count += highest + 1;
        EXPECT_EQ(seen[r][s], count) << what << ", rank " << r << ", step " << s;
      }
    }
    if (n == 2 && samples == 3) {  // Accelerate's own expectation
      EXPECT_EQ(batch_idxs[0], (std::vector<int64_t>{0, 1}));
      EXPECT_EQ(batch_idxs[1], (std::vector<int64_t>{0}));
      // Step 0 takes rank 1's buffer (1 x 2), step 1 rank 0's (2 + 1).
      EXPECT_EQ(seen[0], (std::vector<double>{2, 3}));
    }
  }
}

// Accelerate's test_join_can_override_even_batches: the override reaches every prepared loader
// while the guard lives (its next pass has the batches of the new setting) and is undone after.
TEST(JoinUnevenInputs, CanOverrideEvenBatches) {
  run_ranks(2, [](acc::Accelerator& a) {
    auto model = a.prepare_model(make_net(0));
    auto make = [&] {
      return a.prepare_data_loader(acc::DataLoader<acc::TensorDataset>(
          acc::TensorDataset(torch::zeros({3, 4}), torch::zeros({3, 1})),
          acc::DataLoaderOptions().batch_size(1)));
    };
    auto train_dl = make(), valid_dl = make();
    const int64_t even_size = train_dl->size();
    EXPECT_EQ(even_size, 2);
    {
      auto join = a.join_uneven_inputs({model}, /*even_batches=*/false);
      EXPECT_FALSE(train_dl->sharding().even_batches());
      EXPECT_FALSE(valid_dl->sharding().even_batches());
      EXPECT_EQ(train_dl->size(), a.process_index() == 0 ? 2 : 1);
    }
    EXPECT_TRUE(train_dl->sharding().even_batches());
    EXPECT_TRUE(valid_dl->sharding().even_batches());
    EXPECT_EQ(train_dl->size(), even_size);
  });
}

// Joining is on only when even_batches ends up false (Accelerate's enable_join): with
// DdpEngine::Reducer, which cannot join, the guard is then refused, and the loaders keep
// their setting; with even_batches true it does nothing.
TEST(JoinUnevenInputs, ReducerIsRefusedWhenJoining) {
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto model = a.prepare_model(make_net(0));
        auto dl = a.prepare_data_loader(acc::DataLoader<acc::TensorDataset>(
            acc::TensorDataset(torch::zeros({3, 4}), torch::zeros({3, 1})),
            acc::DataLoaderOptions().batch_size(1)));
        { auto join = a.join_uneven_inputs({model}); }  // even_batches true: nothing to join
        try {
          auto join = a.join_uneven_inputs({model}, /*even_batches=*/false);
          ADD_FAILURE() << "the Reducer joined";
        } catch (const acc::InvalidArgument& e) {
          EXPECT_NE(std::string(e.what()).find("DdpEngine::Reducer cannot join"), std::string::npos)
              << e.what();
        }
        EXPECT_TRUE(dl->sharding().even_batches());
      },
      acc::AcceleratorOptions().ddp_options(
          acc::DistributedDataParallelOptions().engine(acc::DdpEngine::Reducer)));
}

TEST(JoinUnevenInputs, BadModelsAreRefused) {
  run_ranks(2, [](acc::Accelerator& a) {
    auto model = a.prepare_model(make_net(0));
    auto other = a.prepare_model(make_net(1));
    auto expect_refused = [&](const std::vector<std::shared_ptr<torch::nn::Module>>& models,
                              const std::string& message) {
      try {
        auto join = a.join_uneven_inputs(models, false);
        ADD_FAILURE() << "accepted; expected: " << message;
      } catch (const acc::InvalidArgument& e) {
        EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      }
    };
    expect_refused({}, "no model given");
    expect_refused({nullptr}, "model 0 is a null pointer");
    expect_refused({model, make_net(2)}, "model 1 was not prepared");
    expect_refused({model, other}, "one model at a time");
  });
}

// One process: nothing happens (no override, no join), as in Accelerate.
TEST(JoinUnevenInputs, OneProcessIsANoOp) {
  acc::Accelerator a(acc::AcceleratorOptions().environment({}));
  auto model = a.prepare_model(make_net(0));
  auto dl = a.prepare_data_loader(acc::DataLoader<acc::TensorDataset>(
      acc::TensorDataset(torch::zeros({3, 4}), torch::zeros({3, 1})),
      acc::DataLoaderOptions().batch_size(1)));
  auto join = a.join_uneven_inputs({model}, false);
  EXPECT_TRUE(dl->sharding().even_batches());
  int batches = 0;
  for (auto& batch : *dl) {
    a.backward(torch::mse_loss(model->forward(batch.data), batch.target));
    ++batches;
  }
  EXPECT_EQ(batches, 3);
  join.join();
  EXPECT_THROW(a.join_uneven_inputs({}), acc::InvalidArgument);
}

// An exception leaving the guard skips its collectives (nobody waits for the others) and leaves
// join mode: the next steps synchronise as usual.
TEST(JoinUnevenInputs, AnExceptionLeavesTheGuardWithoutCollectives) {
  std::vector<std::vector<at::Tensor>> grads(2);
  run_ranks(
      2,
      [&](acc::Accelerator& a) {
        auto model = a.prepare_model(make_net(0));
        try {
          auto join = a.join_uneven_inputs({model});
          a.backward(
              torch::mse_loss(model->forward(inputs().narrow(0, 0, 4)), targets().narrow(0, 0, 4)));
          throw std::runtime_error("stop");
        } catch (const std::runtime_error&) {
        }
        a.wait_for_everyone();
        model->zero_grad(false);
        const int64_t start = 8 * a.process_index();
        a.backward(torch::mse_loss(model->forward(inputs().narrow(0, start, 4)),
                                   targets().narrow(0, start, 4)));
        for (const auto& p : model->parameters())
          grads[a.process_index()].push_back(p.grad().clone());
      },
      acc::AcceleratorOptions().even_batches(false));
  expect_identical(grads[0], grads[1], "the step after the guard");
}

namespace {
size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}
}  // namespace

// In a job of several processes, iterating a data loader that was not prepared warns once per
// job (process 0 only); a prepared one does not.
TEST(JobWarnings, AnUnpreparedDataLoaderWarnsOnce) {
  const std::string warning = "a data loader that was not prepared is iterated in a job of 2";
  ::testing::internal::CaptureStderr();
  run_ranks(2, [](acc::Accelerator& a) {
    acc::DataLoader<acc::TensorDataset> loader(acc::TensorDataset(inputs(), targets()),
                                               acc::DataLoaderOptions().batch_size(16));
    auto dl = a.prepare(loader);
    int64_t batches = 0;
    for (auto& b : *dl) batches += b.data.size(0) > 0;
    EXPECT_EQ(batches, 2);
  });
  EXPECT_EQ(::testing::internal::GetCapturedStderr().find(warning), std::string::npos);
  ::testing::internal::CaptureStderr();
  run_ranks(2, [](acc::Accelerator& a) {
    acc::DataLoader<acc::TensorDataset> loader(acc::TensorDataset(inputs(), targets()),
                                               acc::DataLoaderOptions().batch_size(16));
    for (int pass = 0; pass < 2; ++pass) {
      int64_t samples = 0;
      for (auto& b : loader) samples += b.data.size(0);
      EXPECT_EQ(samples, 64) << "an unprepared loader reads everything";
    }
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, warning), 1u) << err;
  EXPECT_NE(err.find("accelerator.prepare(loader)"), std::string::npos) << err;
}

// A backward that reaches parameters a prepared optimizer trains but no prepared model holds
// (their gradients are never averaged) warns once per job; backward passes through prepared
// models do not.
TEST(JobWarnings, ABackwardThroughAnUnpreparedModelWarnsOnce) {
  const std::string warning = "no prepared model holds (the first of shape [8, 4])";
  ::testing::internal::CaptureStderr();
  run_ranks(2, [&](acc::Accelerator& a) {
    auto prepared = a.prepare_model(make_net(0));
    auto forgotten = make_net(1);
    auto opt = a.prepare_optimizer(std::make_shared<torch::optim::SGD>(
        forgotten->parameters(), torch::optim::SGDOptions(0.1)));
    auto x = inputs().narrow(0, 0, 4), y = targets().narrow(0, 0, 4);
    a.backward(torch::mse_loss(prepared->forward(x), y));
    a.wait_for_everyone();
    if (a.is_main_process())
      EXPECT_EQ(count_of(::testing::internal::GetCapturedStderr(), warning), 0u);
    a.wait_for_everyone();
    if (a.is_main_process()) ::testing::internal::CaptureStderr();
    a.wait_for_everyone();
    for (int i = 0; i < 3; ++i) a.backward(torch::mse_loss(forgotten->forward(x), y));
    a.wait_for_everyone();
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count_of(err, warning), 1u) << err;
  EXPECT_NE(err.find("weights drift apart"), std::string::npos) << err;
}
