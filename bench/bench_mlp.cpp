// bench_mlp: the MLP job (64-256-256-1 regression, 8,192 synthetic samples, batch 64 per
// process, AdamW, gradient accumulation 2, linear warmup schedule, 5 epochs) written five ways:
//
//   --mode plain          hand-written LibTorch loop, torch::data::make_data_loader
//                         (RandomSampler + Stack: the user's data set collated per sample), 1
//                         process
//   --mode plain-index    hand-written loop that slices one shuffled tensor per batch (no
//                         per-sample get/stack): the fastest loop a user could write, for reference
//   --mode accel          accelerate-cpp: Accelerator, prepare, accumulate, backward, opt/sched
//   step
//   --mode accel-batched  the same with accelerate::TensorDataset, which fetches whole batches
//                         (get_items: one index_select per batch)
//   --mode c10d-reducer   hand-written data parallelism: TCPStore + ProcessGroupGloo +
//   c10d::Reducer
//                         (what PyTorch's DDP does), DistributedRandomSampler
//   --mode c10d-allreduce hand-written data parallelism: one allreduce of the flattened
//                         gradients after backward on synchronising steps
//
// Options: --epochs 5 --samples 8192 --batch 64 --accum 2 --lr 1e-3
//          --stamps (print STAMP lines: main, ready, prepared, first_step)
//          --exit-after-first-step (start-up benchmark)
// Rank 0 prints `RESULT {json}` with the training-loop seconds (between two barriers).
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "c10d_util.h"
#include "common.h"
#include "ddp/reducer_engine.h"

namespace acc = accelerate;
using bench::Args;

namespace {

struct Config {
  int epochs = 5;
  int64_t samples = 8192;
  int64_t batch = 64;
  int accum = 2;
  double lr = 1e-3;
  bool stamps = false;
  bool exit_after_first_step = false;
};

// transformers' linear schedule with warmup.
double linear_factor(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / std::max<int64_t>(1, warmup);
  return std::max(0.0, static_cast<double>(total - step) /
                           static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups())
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
}

void report(const std::string& mode, int world, const Config& c, double seconds, double loss) {
  const double samples = static_cast<double>(c.samples) * c.epochs;
  std::printf(
      "RESULT {\"bench\": \"mlp\", \"mode\": \"%s\", \"world\": %d, \"threads\": %d, "
      "\"seconds\": %.6f, \"samples_per_s\": %.3f, \"loss\": %.6f}\n",
      mode.c_str(), world, at::get_num_threads(), seconds, samples / seconds, loss);
  std::fflush(stdout);
}

// ---- (a) plain LibTorch, one process ----
int run_plain(const Config& c, bool index_slicing) {
  auto [x, y] = bench::synthetic_data(c.samples);
  torch::manual_seed(0);
  auto model = std::make_shared<bench::Mlp>();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(c.lr));
  const int64_t batches = (c.samples + c.batch - 1) / c.batch;
  const int64_t total = c.epochs * batches / c.accum, warmup = total / 20;
  int64_t sched_step = 0;
  set_lr(opt, c.lr * linear_factor(0, warmup, total));
  if (c.stamps) bench::stamp("prepared");

  double last_loss = 0;
  bool stamped = false;
  auto micro_step = [&](const at::Tensor& data, const at::Tensor& target, int64_t i,
                        bool last) -> bool {
    auto loss = torch::mse_loss(model->forward(data), target);
    (loss / c.accum).backward();
    if ((i + 1) % c.accum == 0 || last) {
      opt.step();
      set_lr(opt, c.lr * linear_factor(++sched_step, warmup, total));
      opt.zero_grad();
      if (!stamped && c.stamps) {
        bench::stamp("first_step");
        stamped = true;
        if (c.exit_after_first_step) return false;
      }
    }
    return true;
  };

  bench::Timer timer;
  if (index_slicing) {
    for (int epoch = 0; epoch < c.epochs; ++epoch) {
      auto order = torch::randperm(c.samples, torch::kLong);
      for (int64_t b = 0; b < batches; ++b) {
        auto idx = order.narrow(0, b * c.batch, std::min(c.batch, c.samples - b * c.batch));
        if (!micro_step(x.index_select(0, idx), y.index_select(0, idx), b, b + 1 == batches))
          return 0;
      }
    }
  } else {
    auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
        bench::Synthetic(x, y).map(torch::data::transforms::Stack<>()),
        torch::data::DataLoaderOptions().batch_size(c.batch).workers(0));
    for (int epoch = 0; epoch < c.epochs; ++epoch) {
      int64_t i = 0;
      for (auto& batch : *loader) {
        if (!micro_step(batch.data, batch.target, i, i + 1 == batches)) return 0;
        ++i;
      }
    }
  }
  const double seconds = timer.seconds();
  torch::NoGradGuard no_grad;
  last_loss = torch::mse_loss(model->forward(x), y).item<double>();
  report(index_slicing ? "plain-index" : "plain", 1, c, seconds, last_loss);
  return 0;
}

// ---- (b) accelerate-cpp ----
template <typename Data>
int run_accel(const Config& c) {
  acc::Accelerator accelerator(acc::AcceleratorOptions().gradient_accumulation_steps(c.accum));
  if (c.stamps) bench::stamp("ready");
  auto [x, y] = bench::synthetic_data(c.samples);
  torch::manual_seed(0);
  auto model = std::make_shared<bench::Mlp>();
  auto optimizer =
      std::make_shared<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(c.lr));
  acc::DataLoader<Data> loader(Data(x, y),
                               acc::DataLoaderOptions().batch_size(c.batch).shuffle(true));
  const int64_t total = c.epochs * loader.size() / c.accum, warmup = total / 20;
  auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, warmup, total);
  if (c.stamps) bench::stamp("built");
  auto [m, opt, dl, sched] = accelerator.prepare(model, optimizer, loader, scheduler);
  if (c.stamps) bench::stamp("prepared");

  accelerator.wait_for_everyone();
  bench::Timer timer;
  bool stamped = false, first_batch = false;
  for (int epoch = 0; epoch < c.epochs; ++epoch) {
    for (auto& batch : *dl) {
      if (!first_batch && c.stamps) {
        bench::stamp("first_batch");
        first_batch = true;
      }
      auto sync = accelerator.accumulate(m);
      auto loss = torch::mse_loss(m->forward(batch.data), batch.target);
      accelerator.backward(loss);
      opt->step();
      sched->step();
      opt->zero_grad();
      if (!stamped && c.stamps && accelerator.sync_gradients()) {
        bench::stamp("first_step");
        stamped = true;
        if (c.exit_after_first_step) return 0;
      }
    }
  }
  accelerator.wait_for_everyone();
  const double seconds = timer.seconds();
  torch::NoGradGuard no_grad;
  const double loss = torch::mse_loss(m->forward(x), y).template item<double>();
  if (accelerator.is_main_process()) report("accel", accelerator.num_processes(), c, seconds, loss);
  return 0;
}

// ---- hand-written data parallelism over c10d ----
int run_c10d(const Config& c, bool use_reducer) {
  bench::Group group;
  if (c.stamps) bench::stamp("ready");
  auto [x, y] = bench::synthetic_data(c.samples);
  torch::manual_seed(0);
  auto model = std::make_shared<bench::Mlp>();
  torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(c.lr));
  auto params = model->parameters();

  std::unique_ptr<c10d::Reducer> reducer;
  if (group.world > 1) {
    torch::NoGradGuard no_grad;
    c10d::broadcast_coalesced(group.pg, params, accelerate::detail::kBroadcastBucketBytes, 0);
  }
  if (group.world > 1 && use_reducer) {
    std::unordered_map<size_t, std::string> names;
    size_t k = 0;
    for (const auto& item : model->named_parameters()) names.emplace(k++, item.key());
    reducer =
        accelerate::detail::make_ddp_reducer(params, std::move(names), group.pg, 25 * 1024 * 1024,
                                             /*find_unused_parameters=*/false,
                                             /*gradient_as_bucket_view=*/false);
  }

  auto loader = torch::data::make_data_loader(
      bench::Synthetic(x, y).map(torch::data::transforms::Stack<>()),
      torch::data::samplers::DistributedRandomSampler(static_cast<size_t>(c.samples),
                                                      static_cast<size_t>(group.world),
                                                      static_cast<size_t>(group.rank)),
      torch::data::DataLoaderOptions().batch_size(c.batch).workers(0));
  const int64_t batches_all = (c.samples + c.batch - 1) / c.batch;
  const int64_t per_rank = (batches_all + group.world - 1) / group.world;
  const int64_t total = c.epochs * batches_all / c.accum, warmup = total / 20;
  int64_t sched_step = 0;
  set_lr(opt, c.lr * linear_factor(0, warmup, total));
  if (c.stamps) bench::stamp("prepared");

  group.barrier();
  bench::Timer timer;
  bool stamped = false;
  for (int epoch = 0; epoch < c.epochs; ++epoch) {
    int64_t i = 0;
    for (auto& batch : *loader) {
      const bool sync = (i + 1) % c.accum == 0 || i + 1 == per_rank;
      if (reducer) {
        reducer->rebuild_buckets();
        if (sync) reducer->prepare_for_forward();
      }
      auto loss = torch::mse_loss(model->forward(batch.data), batch.target);
      if (reducer && sync) reducer->prepare_for_backward({});
      (loss / c.accum).backward();
      if (sync) {
        if (!reducer && group.world > 1) {
          std::vector<at::Tensor> grads;
          grads.reserve(params.size());
          for (auto& p : params) grads.push_back(p.grad().view(-1));
          std::vector<at::Tensor> flat{at::cat(grads)};
          group.pg->allreduce(flat)->wait();
          flat[0].div_(group.world);
          int64_t offset = 0;
          for (auto& p : params) {
            const int64_t n = p.numel();
            p.grad().view(-1).copy_(flat[0].narrow(0, offset, n));
            offset += n;
          }
        }
        opt.step();
        sched_step += group.world;
        set_lr(opt, c.lr * linear_factor(sched_step, warmup, total));
        opt.zero_grad();
        if (!stamped && c.stamps) {
          bench::stamp("first_step");
          stamped = true;
          if (c.exit_after_first_step) return 0;
        }
      }
      ++i;
    }
  }
  group.barrier();
  const double seconds = timer.seconds();
  torch::NoGradGuard no_grad;
  const double loss = torch::mse_loss(model->forward(x), y).item<double>();
  if (group.rank == 0)
    report(use_reducer ? "c10d-reducer" : "c10d-allreduce", group.world, c, seconds, loss);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Args args(argc, argv);
  Config c;
  c.stamps = args.flag("stamps");
  if (c.stamps) bench::stamp("main");
  c.epochs = static_cast<int>(args.num("epochs", 5));
  c.samples = args.num("samples", 8192);
  c.batch = args.num("batch", 64);
  c.accum = static_cast<int>(args.num("accum", 2));
  c.lr = args.real("lr", 1e-3);
  c.exit_after_first_step = args.flag("exit-after-first-step");
  const std::string mode = args.str("mode", "accel");
  if (mode == "plain") return run_plain(c, false);
  if (mode == "plain-index") return run_plain(c, true);
  if (mode == "accel") return run_accel<bench::Synthetic>(c);
  if (mode == "accel-batched") return run_accel<acc::TensorDataset>(c);
  if (mode == "c10d-reducer") return run_c10d(c, true);
  if (mode == "c10d-allreduce") return run_c10d(c, false);
  std::fprintf(stderr, "unknown --mode %s\n", mode.c_str());
  return 2;
}
