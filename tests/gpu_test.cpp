// GPU tests (ctest label "gpu"): the CUDA path of the Accelerator. Each test skips itself
// where no CUDA device is visible, so the binary builds and runs everywhere; on a GPU machine
// `ctest -L gpu` runs them (../shared/device/gpu-check.sh does).
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <filesystem>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "compat.h"
#include "temp_dir.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>

namespace acc = accelerate;
namespace fs = std::filesystem;

namespace {

#define REQUIRE_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device visible"

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::relu(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// 64 rows of 4 features and 1 target, on the CPU (the loader moves batches to the device).
struct Rows : torch::data::datasets::Dataset<Rows> {
  at::Tensor x = torch::arange(64 * 4, torch::kFloat).reshape({64, 4}) / 256.0;
  at::Tensor y = torch::arange(64, torch::kFloat).reshape({64, 1}) / 64.0;
  torch::data::Example<> get(size_t i) override {
    return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]};
  }
  torch::optional<size_t> size() const override { return 64; }
};

at::Tensor cuda_input() { return torch::rand({16, 4}, torch::Device(torch::kCUDA)); }

using GpuStateTest = acc::testing::TempDirTest;

}  // namespace

TEST(Gpu, ModelBatchesAndOptimizerStateOnTheDevice) {
  REQUIRE_CUDA();
  acc::Accelerator accelerator;
  ASSERT_TRUE(accelerator.device().is_cuda()) << accelerator.device();
  auto model = std::make_shared<Net>();
  auto adam =
      std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-2));
  acc::DataLoader<Rows> loader(Rows(), acc::DataLoaderOptions().batch_size(16));
  auto [m, opt, dl] = accelerator.prepare(model, adam, loader);
  for (const auto& p : m->parameters()) EXPECT_TRUE(p.is_cuda());
  int batches = 0;
  for (auto& batch : *dl) {
    EXPECT_TRUE(batch.data.is_cuda());
    EXPECT_TRUE(batch.target.is_cuda());
    auto loss = torch::mse_loss(m->forward(batch.data), batch.target);
    accelerator.backward(loss);
    opt->step();
    opt->zero_grad();
    ++batches;
  }
  EXPECT_EQ(batches, 4);
  size_t states = 0;
  for (const auto& [key, state] : opt->optimizer()->state()) {
    (void)key;
    auto& adam_state = static_cast<torch::optim::AdamParamState&>(*state);
    EXPECT_TRUE(adam_state.exp_avg().is_cuda());
    EXPECT_TRUE(adam_state.exp_avg_sq().is_cuda());
    ++states;
  }
  EXPECT_EQ(states, m->parameters().size());
}

TEST_F(GpuStateTest, Fp16ScalesSkipsHoldsTheSchedulerClipsAndResumes) {
  REQUIRE_CUDA();
  acc::Accelerator accelerator(acc::AcceleratorOptions().mixed_precision("fp16"));
  torch::manual_seed(0);
  auto model = std::make_shared<Net>();
  auto sgd =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  auto schedule = acc::get_linear_schedule_with_warmup(sgd, 0, 100);
  auto [m, opt, sched] = accelerator.prepare(model, sgd, schedule);
  ASSERT_NE(opt->scaler(), nullptr);
  const double scale = opt->scaler()->get_scale();
  EXPECT_EQ(scale, 65536.0);

  // A clean step: the forward runs in fp16, backward scales the loss, and clipping sees the
  // unscaled gradients (the norm of the fp32 reference, not 65536 times it).
  const at::Tensor x = cuda_input();
  at::Tensor loss;
  {
    auto amp = accelerator.autocast();
    auto out = m->forward(x);
    EXPECT_EQ(out.scalar_type(), at::kHalf);
    loss = out.to(at::kFloat).pow(2).mean();
  }
  accelerator.backward(loss);
  const double norm = accelerator.clip_grad_norm_(m->parameters(), 1e9);
  opt->zero_grad();
  Net reference;
  {
    torch::NoGradGuard no_grad;
    auto src = m->parameters();
    auto dst = reference.parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i].cpu());
  }
  reference.to(torch::kCUDA);
  reference.forward(x).pow(2).mean().backward();
  const double reference_norm = torch::nn::utils::clip_grad_norm_(reference.parameters(), 1e9);
  EXPECT_NEAR(norm, reference_norm, 1e-2 * reference_norm + 1e-4);

  {
    auto amp = accelerator.autocast();
    loss = m->forward(x).to(at::kFloat).pow(2).mean();
  }
  accelerator.backward(loss);
  opt->step();
  EXPECT_FALSE(opt->step_was_skipped());
  sched->step();
  opt->zero_grad();
  const auto lr_after_clean = sched->get_last_lr();

  // An overflowing step is skipped, backs the scale off, and holds the scheduler.
  {
    auto amp = accelerator.autocast();
    loss = m->forward(x).to(at::kFloat).sum() * std::numeric_limits<float>::infinity();
  }
  accelerator.backward(loss);
  opt->step();
  EXPECT_TRUE(opt->step_was_skipped());
  sched->step();
  opt->zero_grad();
  EXPECT_EQ(sched->get_last_lr(), lr_after_clean);
  EXPECT_EQ(opt->scaler()->get_scale(), scale / 2);

  // The scaler's state goes through save_state / load_state.
  accelerator.save_state((dir_ / "ckpt").string());
  EXPECT_TRUE(fs::exists(dir_ / "ckpt" / "scaler.json"));
  {
    auto amp = accelerator.autocast();
    loss = m->forward(x).to(at::kFloat).sum() * std::numeric_limits<float>::infinity();
  }
  accelerator.backward(loss);
  opt->step();
  opt->zero_grad();
  EXPECT_EQ(opt->scaler()->get_scale(), scale / 4);
  accelerator.load_state((dir_ / "ckpt").string());
  EXPECT_EQ(opt->scaler()->get_scale(), scale / 2);
}

TEST(Gpu, Bf16Autocast) {
  REQUIRE_CUDA();
  acc::Accelerator accelerator(acc::AcceleratorOptions().mixed_precision("bf16"));
  const at::Tensor a = cuda_input(), b = torch::rand({4, 3}, a.options());
  {
    auto amp = accelerator.autocast();
    EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kBFloat16);
  }
  EXPECT_EQ(torch::mm(a, b).scalar_type(), at::kFloat);
}

TEST_F(GpuStateTest, CudaRngStateResumes) {
  REQUIRE_CUDA();
  acc::Accelerator accelerator;
  auto model = accelerator.prepare_model(std::make_shared<Net>());
  accelerator.save_state((dir_ / "rng").string());
  const at::Tensor first = torch::rand({8}, torch::Device(torch::kCUDA));
  accelerator.load_state((dir_ / "rng").string());
  const at::Tensor again = torch::rand({8}, torch::Device(torch::kCUDA));
  EXPECT_TRUE(first.equal(again));
}

TEST(Gpu, PinnedMemoryNonBlockingCopies) {
  REQUIRE_CUDA();
  acc::Accelerator accelerator;
  Rows rows;
  acc::DataLoader<Rows> loader(
      rows, acc::DataLoaderOptions().batch_size(16).pin_memory(true).num_workers(2));
  auto dl = accelerator.prepare_data_loader(loader);
  int64_t start = 0;
  for (auto& batch : *dl) {
    ASSERT_TRUE(batch.data.is_cuda());
    EXPECT_TRUE(batch.data.cpu().equal(rows.x.slice(0, start, start + 16)));
    EXPECT_TRUE(batch.target.cpu().equal(rows.y.slice(0, start, start + 16)));
    start += 16;
  }
  EXPECT_EQ(start, 64);
}

// Device prefetch: a prepared loader on CUDA loads batch i + 1 and queues its copy before
// handing batch i over. Its batches, from a TensorDataset and from a per-sample data set, with
// and without workers, sharded or not, equal the CPU loader's, and the end of the loader is
// seen at the last batch.
TEST(Gpu, PreparedLoaderPrefetchesPinnedBatchesToTheDevice) {
  REQUIRE_CUDA();
  Rows rows;
  const c10::Device cuda(torch::kCUDA, 0);
  for (int workers : {0, 2})
    for (int processes : {1, 2}) {
      const auto options = acc::DataLoaderOptions()
                               .batch_size(12)
                               .shuffle(true)
                               .seed(5)
                               .pin_memory(true)
                               .num_workers(workers);
      acc::DataLoader<acc::TensorDataset> fast(acc::TensorDataset(rows.x, rows.y), options);
      acc::DataLoader<Rows> slow(rows, options);
      const auto sharding = acc::ShardingOptions()
                                .num_processes(processes)
                                .process_index(processes - 1)
                                .even_batches(false);
      std::vector<torch::data::Example<>> expected;
      auto on_cpu = slow.shard(sharding);
      for (auto& batch : *on_cpu) expected.push_back(batch);
      ASSERT_EQ(expected.back().data.size(0), 4);  // 64 = 5 * 12 + 4: the last batch partial
      auto state = std::make_shared<acc::GradientState>();
      auto context = std::make_shared<acc::DataContext>(state);
      auto on_device = sharding;
      on_device.device(cuda);
      auto check = [&](auto& shard) {
        std::vector<torch::data::Example<>> got;
        for (auto& batch : *shard) {
          ASSERT_TRUE(batch.data.is_cuda());
          ASSERT_TRUE(batch.target.is_cuda());
          EXPECT_EQ(state->end_of_dataloader(), got.size() + 1 == expected.size());
          got.push_back({batch.data.cpu(), batch.target.cpu()});
        }
        EXPECT_FALSE(state->in_dataloader());
        ASSERT_EQ(got.size(), expected.size());
        for (size_t i = 0; i < got.size(); ++i) {
          EXPECT_TRUE(got[i].data.equal(expected[i].data))
              << "batch " << i << ", " << workers << " workers, " << processes << " processes";
          EXPECT_TRUE(got[i].target.equal(expected[i].target)) << "batch " << i;
        }
      };
      auto fast_on_device = fast.shard(on_device, context);
      auto slow_on_device = slow.shard(on_device, context);
      check(fast_on_device);
      check(slow_on_device);
    }
}

TEST(Gpu, NcclGroup) {
  REQUIRE_CUDA();
  const int n = torch::cuda::device_count() >= 2 ? 2 : 1;
  auto store = c10::make_intrusive<c10d::HashStore>();
  std::vector<std::thread> ranks;
  std::vector<double> sums(n, 0);
  std::vector<std::string> errors(n);
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] {
      try {
        acc::compat::set_cuda_device(r);
        auto group = acc::compat::make_process_group(store, r, n, std::chrono::seconds(60),
                                                     acc::compat::Backend::NCCL);
        std::vector<at::Tensor> t{torch::full({3}, r + 1.0, torch::Device(torch::kCUDA, r))};
        group->allreduce(t)->wait();
        sums[r] = t[0].sum().item<double>();
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  }
  for (auto& t : ranks) t.join();
  const double expected = 3.0 * n * (n + 1) / 2;  // each of 3 elements sums 1..n
  for (int r = 0; r < n; ++r) {
    EXPECT_EQ(errors[r], "") << "rank " << r;
    EXPECT_EQ(sums[r], expected) << "rank " << r << " of " << n;
  }
}

TEST(Gpu, FindExecutableBatchSizeOnARealOutOfMemory) {
  REQUIRE_CUDA();
  int calls = 0;
  // One GiB per unit of batch: 4096 GiB cannot be had on any GPU; the size comes down until
  // an allocation fits.
  auto train = acc::find_executable_batch_size(
      [&](int64_t batch) {
        ++calls;
        auto block = torch::empty({batch, int64_t{1} << 28},
                                  torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA));
        return batch;
      },
      4096);
  const int64_t fitted = train();
  EXPECT_LT(fitted, 4096);
  EXPECT_GE(fitted, 1);
  EXPECT_GT(calls, 1);
  acc::compat::empty_cuda_cache();
}
