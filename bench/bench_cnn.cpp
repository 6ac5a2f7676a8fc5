// bench_cnn: the Fashion-MNIST CNN of examples/fashion_mnist (same Net, batch 64, AdamW lr
// 2e-3, linear warmup schedule, gradient clipping at 1.0), trained for a fixed number of steps
// on one process, written two ways:
//
//   --mode plain   hand-written LibTorch loop: torch::data::make_data_loader (RandomSampler +
//                  Stack), loss.backward(), clip_grad_norm_, optimizer step, lr set by hand
//   --mode accel   accelerate-cpp: Accelerator, acc::DataLoader, prepare, accumulate, backward,
//                  clip_grad_norm_, prepared optimizer and scheduler
//
// Both load batches in the training thread (num_workers 0; the example uses 1 worker).
// Options: --steps 300 --batch 64 --data /usr/share/datasets/fashion-mnist
// Prints `RESULT {json}` with the seconds of the timed steps.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "common.h"
#include "fashion_mnist.h"
#include "net.h"

namespace acc = accelerate;

namespace {

double linear_factor(int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return static_cast<double>(step) / std::max<int64_t>(1, warmup);
  return std::max(0.0, static_cast<double>(total - step) /
                           static_cast<double>(std::max<int64_t>(1, total - warmup)));
}

void report(const std::string& mode, int64_t steps, int64_t batch, double seconds, double loss) {
  std::printf(
      "RESULT {\"bench\": \"cnn\", \"mode\": \"%s\", \"world\": 1, \"threads\": %d, "
      "\"steps\": %lld, \"seconds\": %.6f, \"samples_per_s\": %.3f, \"loss\": %.6f}\n",
      mode.c_str(), at::get_num_threads(), static_cast<long long>(steps), seconds,
      static_cast<double>(steps * batch) / seconds, loss);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  const std::string mode = args.str("mode", "accel");
  const int64_t steps = args.num("steps", 300), batch = args.num("batch", 64);
  const double lr = 2e-3;
  const std::string data = args.str("data", fashion_mnist::kDefaultFolder);

  if (mode == "plain") {
    fashion_mnist::FashionMnist train(data, fashion_mnist::Split::kTrain);
    torch::manual_seed(42);
    auto model = std::make_shared<fashion_mnist::Net>();
    torch::optim::AdamW opt(model->parameters(), torch::optim::AdamWOptions(lr));
    const int64_t total = steps, warmup = total / 20;
    auto set_lr = [&](double value) {
      for (auto& g : opt.param_groups())
        static_cast<torch::optim::AdamWOptions&>(g.options()).lr(value);
    };
    set_lr(0);
    auto loader = torch::data::make_data_loader<torch::data::samplers::RandomSampler>(
        std::move(train).map(torch::data::transforms::Stack<>()),
        torch::data::DataLoaderOptions().batch_size(batch).workers(0));
    model->train();
    bench::Timer timer;
    int64_t step = 0;
    at::Tensor loss;
    while (step < steps) {
      for (auto& b : *loader) {
        loss = torch::cross_entropy_loss(model->forward(b.data), b.target);
        loss.backward();
        torch::nn::utils::clip_grad_norm_(model->parameters(), 1.0);
        opt.step();
        set_lr(lr * linear_factor(++step, warmup, total));
        opt.zero_grad();
        if (step == steps) break;
      }
    }
    const double seconds = timer.seconds();
    report(mode, steps, batch, seconds, loss.item<double>());
    return 0;
  }
  if (mode != "accel") {
    std::fprintf(stderr, "unknown --mode %s\n", mode.c_str());
    return 2;
  }
  acc::Accelerator accelerator;
  fashion_mnist::FashionMnist train(data, fashion_mnist::Split::kTrain);
  torch::manual_seed(42);
  auto model = std::make_shared<fashion_mnist::Net>();
  auto optimizer =
      std::make_shared<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(lr));
  acc::DataLoader<fashion_mnist::FashionMnist> loader(
      train, acc::DataLoaderOptions().batch_size(batch).shuffle(true));
  auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, steps / 20, steps);
  auto [m, opt, dl, sched] = accelerator.prepare(model, optimizer, loader, scheduler);
  m->train();
  bench::Timer timer;
  int64_t step = 0;
  at::Tensor loss;
  while (step < steps) {
    for (auto& b : *dl) {
      auto sync = accelerator.accumulate(m);
      loss = torch::cross_entropy_loss(m->forward(b.data), b.target);
      accelerator.backward(loss);
      if (accelerator.sync_gradients()) accelerator.clip_grad_norm_(m->parameters(), 1.0);
      opt->step();
      sched->step();
      opt->zero_grad();
      if (++step == steps) break;
    }
  }
  const double seconds = timer.seconds();
  report(mode, steps, batch, seconds, loss.item<double>());
  return 0;
}
