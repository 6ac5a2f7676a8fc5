// The seed's training loop through prepare(): loader, model, optimizer, scheduler together.
#include <gtest/gtest.h>
#include <torch/data/datasets/base.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>
#include <torch/optim/sgd.h>

#include <mutex>

#include "test_util.h"

namespace acc = accelerate;
using acc::testing::run_ranks;

namespace {

// Sample i: data = [i, sin i, cos i], target = [i].
struct Indexed : torch::data::datasets::Dataset<Indexed> {
  explicit Indexed(int64_t n) : n(n) {}
  torch::data::Example<> get(size_t i) override {
    const double x = static_cast<double>(i);
    return {torch::tensor({static_cast<float>(x), static_cast<float>(std::sin(x)),
                           static_cast<float>(std::cos(x))}),
            torch::tensor({static_cast<float>(x)})};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(n); }
  int64_t n;
};

struct Net : torch::nn::Module {
  Net() { fc = register_module("fc", torch::nn::Linear(2, 1)); }
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  torch::nn::Linear fc{nullptr};
};

}  // namespace

namespace {
// sync_gradients() at each of 5 one-sample batches of a prepared loader, 1 process.
std::vector<bool> sync_pattern(const acc::AcceleratorOptions& options) {
  std::vector<bool> seen;
  run_ranks(
      1,
      [&](acc::Accelerator& a) {
        auto loader = a.prepare_data_loader(
            acc::DataLoader<Indexed>(Indexed(5), acc::DataLoaderOptions().batch_size(1)));
        for (auto& batch : *loader) {
          (void)batch;
          auto guard = a.accumulate();
          seen.push_back(a.sync_gradients());
        }
      },
      options);
  return seen;
}
}  // namespace

TEST(TrainingLoop, SyncGradientsFollowsAccumulationAndTheEndOfTheLoader) {
  EXPECT_EQ(sync_pattern(acc::AcceleratorOptions().gradient_accumulation_steps(2)),
            (std::vector<bool>{false, true, false, true, true}));
}

TEST(TrainingLoop, SyncWithDataloaderOff) {
  EXPECT_EQ(sync_pattern(acc::AcceleratorOptions().gradient_accumulation_plugin(
                acc::GradientAccumulationPlugin().num_steps(2).sync_with_dataloader(false))),
            (std::vector<bool>{false, true, false, true, false}));
}

// 82 samples, batch 16, 2 processes: the last step pads with samples from the start;
// gather_for_metrics drops them and returns exactly the data set.
TEST(TrainingLoop, GatherForMetricsReturnsEachSampleOnce) {
  for (int n : {1, 2, 3}) {
    std::mutex m;
    std::vector<at::Tensor> results(n);
    run_ranks(n, [&](acc::Accelerator& a) {
      auto loader = a.prepare_data_loader(
          acc::DataLoader<Indexed>(Indexed(82), acc::DataLoaderOptions().batch_size(16)));
      std::vector<at::Tensor> rows;
      std::vector<std::string> names;  // objects, not tensors: through gather_object
      for (auto& batch : *loader) {
        auto [data, target] = a.gather_for_metrics(batch.data, batch.target);
        EXPECT_TRUE(torch::equal(data.select(1, 0).unsqueeze(1), target));
        rows.push_back(target);
        std::vector<std::string> mine;
        for (int64_t i = 0; i < batch.target.size(0); ++i)
          mine.push_back("sample " + std::to_string(batch.target[i][0].item<int64_t>()));
        const auto all = a.gather_for_metrics(mine);
        ASSERT_EQ(static_cast<int64_t>(all.size()), target.size(0));
        for (size_t i = 0; i < all.size(); ++i)
          EXPECT_EQ(all[i], "sample " + std::to_string(target[i][0].item<int64_t>()));
        names.insert(names.end(), all.begin(), all.end());
      }
      EXPECT_EQ(names.size(), 82u);
      std::lock_guard<std::mutex> lock(m);
      results[a.process_index()] = torch::cat(rows).flatten();
    });
    for (int r = 0; r < n; ++r) {
      ASSERT_EQ(results[r].size(0), 82) << n << " processes, rank " << r;
      EXPECT_TRUE(torch::equal(std::get<0>(results[r].sort()), torch::arange(82, torch::kFloat)))
          << n << " processes, rank " << r;
    }
  }
}

TEST(TrainingLoop, PrepareReturnsPreparedObjectsInOrder) {
  run_ranks(2, [](acc::Accelerator& a) {
    auto model = std::make_shared<Net>();
    auto optimizer =
        std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(1.0));
    auto scheduler =
        std::make_shared<acc::LambdaLR>(optimizer, [](int64_t n) { return 1.0 - n / 10.0; });
    acc::DataLoader<Indexed> loader(Indexed(8), acc::DataLoaderOptions().batch_size(2));
    // Any order: the scheduler first still attaches to the optimizer prepared after it.
    auto [sched, dl, m, opt] = a.prepare(scheduler, loader, model, optimizer);
    static_assert(std::is_same_v<decltype(m), std::shared_ptr<Net>>);
    static_assert(std::is_same_v<decltype(opt), std::shared_ptr<acc::AcceleratedOptimizer>>);
    static_assert(std::is_same_v<decltype(sched), std::shared_ptr<acc::AcceleratedScheduler>>);
    static_assert(std::is_same_v<decltype(dl), std::shared_ptr<acc::DataLoader<Indexed>>>);
    EXPECT_EQ(m, model);
    EXPECT_EQ(a.unwrap_model(m), model);
    EXPECT_EQ(opt->optimizer(), optimizer);
    EXPECT_EQ(dl->size(), 2);  // 4 global batches of 2 over 2 processes
    EXPECT_EQ(dl->total_batch_size(), 4);
    // Preparing again does not wrap again.
    auto [opt2, dl2] = a.prepare(optimizer, dl);
    EXPECT_EQ(opt2, opt);
    EXPECT_EQ(dl2, dl);
    // LambdaLR(1 - n/10), lr 1, 2 processes: 0.8 after one step.
    opt->step();
    sched->step();
    EXPECT_DOUBLE_EQ(sched->get_last_lr()[0], 0.8);
  });
  run_ranks(
      2,
      [](acc::Accelerator& a) {
        auto model = std::make_shared<Net>();
        auto optimizer =
            std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(1.0));
        auto [m, opt, sched] = a.prepare(
            model, optimizer,
            std::make_shared<acc::LambdaLR>(optimizer, [](int64_t n) { return 1.0 - n / 10.0; }));
        opt->step();
        sched->step();
        EXPECT_DOUBLE_EQ(sched->get_last_lr()[0], 0.9) << "split_batches steps once";
      },
      acc::AcceleratorOptions().split_batches(true));
}

// The seed's loop with prepare: N processes with batch b end with the same parameters as one
// process with batch N·b (shuffled data, same seed). Without split_batches a prepared scheduler
// steps N times per call (Accelerate's rule), so that run uses a constant schedule; with
// split_batches (global batch N·b cut in N) the linear schedule must match too.
TEST(TrainingLoop, ProcessesMatchOneProcessThroughPrepare) {
  auto job = [](acc::Accelerator& a, int64_t batch, bool linear) {
    auto model = std::make_shared<Net>();
    {
      // Different initial weights per rank: prepare gives every rank those of process 0.
      torch::NoGradGuard no_grad;
      model->fc->weight.copy_(torch::tensor({{0.3f, -0.2f}}) + a.process_index());
      model->fc->bias.fill_(0.1 + a.process_index());
    }
    auto optimizer =
        std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.01));
    acc::DataLoader<Indexed> loader(
        Indexed(64), acc::DataLoaderOptions().batch_size(batch).shuffle(true).seed(7));
    auto scheduler = linear ? acc::get_linear_schedule_with_warmup(optimizer, 2, 20)
                            : acc::get_constant_schedule_with_warmup(optimizer, 0);
    auto [m, opt, dl, sched] = a.prepare(model, optimizer, loader, scheduler);
    for (int epoch = 0; epoch < 3; ++epoch) {
      for (auto& batch_data : *dl) {
        auto guard = a.accumulate(m);
        auto x = batch_data.data.narrow(1, 1, 2);
        auto loss = torch::mse_loss(m->forward(x), batch_data.target / 64.0);
        a.backward(loss);
        if (a.sync_gradients()) a.clip_grad_norm_(m->parameters(), 10.0);
        opt->step();
        sched->step();
        opt->zero_grad();
      }
    }
    std::vector<at::Tensor> params;
    for (const auto& p : m->parameters()) params.push_back(p.detach().clone());
    return params;
  };
  for (bool split : {false, true}) {
    std::vector<at::Tensor> reference;
    run_ranks(1, [&](acc::Accelerator& a) { reference = job(a, 16, split); });
    std::mutex m;
    std::vector<std::vector<at::Tensor>> results(2);
    run_ranks(
        2,
        [&](acc::Accelerator& a) {
          auto params = job(a, split ? 16 : 8, split);
          std::lock_guard<std::mutex> lock(m);
          results[a.process_index()] = params;
        },
        acc::AcceleratorOptions().split_batches(split));
    for (int r = 0; r < 2; ++r)
      for (size_t i = 0; i < reference.size(); ++i)
        EXPECT_LE((results[r][i] - reference[i]).abs().max().item<double>(), 1e-6)
            << "split_batches " << split << ", rank " << r << " parameter " << i;
    EXPECT_GT((reference[0] - torch::tensor({{0.3f, -0.2f}})).abs().max().item<double>(), 1e-3)
        << "the job did not train";
  }
}
