// Fashion-MNIST with a small CNN, written as the seed recommends: prepare, accumulate,
// backward, clip, gather_for_metrics for accuracy, accelerator.print, saving once.
//
//   accelerate-cpp launch --num_processes 2 build/examples/fashion_mnist \
//       [--epochs 4] [--batch_size 64] [--lr 0.002] [--gradient_accumulation_steps 1] \
//       [--data /usr/share/datasets/fashion-mnist] [--output fashion_mnist_model]
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <filesystem>

#include "fashion_mnist.h"
#include "net.h"

namespace acc = accelerate;

int main(int argc, char** argv) {
  CLI::App app("Fashion-MNIST with accelerate-cpp");
  int epochs = 4, accumulation = 1;
  int64_t batch_size = 64;
  double lr = 2e-3;
  std::string data = fashion_mnist::kDefaultFolder, output = "fashion_mnist_model";
  app.add_option("--epochs", epochs)->check(CLI::PositiveNumber);
  app.add_option("--batch_size", batch_size, "per process")->check(CLI::PositiveNumber);
  app.add_option("--lr", lr)->check(CLI::PositiveNumber);
  app.add_option("--gradient_accumulation_steps", accumulation)->check(CLI::PositiveNumber);
  app.add_option("--data", data, "folder of the gzipped IDX files");
  app.add_option("--output", output, "folder the trained model is saved to");
  CLI11_PARSE(app, argc, argv);

  // 1. The Accelerator, as early as possible.
  acc::Accelerator accelerator(acc::AcceleratorOptions().gradient_accumulation_steps(accumulation));
  acc::set_seed(42);

  // Read the data once per machine first (as one would download it), then everywhere.
  auto [train_set, test_set] = accelerator.local_main_process_first([&] {
    return std::make_pair(fashion_mnist::FashionMnist(data, fashion_mnist::Split::kTrain),
                          fashion_mnist::FashionMnist(data, fashion_mnist::Split::kTest));
  });
  acc::DataLoader<fashion_mnist::FashionMnist> train_loader(
      train_set, acc::DataLoaderOptions().batch_size(batch_size).shuffle(true).num_workers(1));
  acc::DataLoader<fashion_mnist::FashionMnist> test_loader(
      test_set, acc::DataLoaderOptions().batch_size(256));

  auto model = std::make_shared<fashion_mnist::Net>();
  auto optimizer =
      std::make_shared<torch::optim::AdamW>(model->parameters(), torch::optim::AdamWOptions(lr));
  // As in Accelerate's examples, the schedule counts the batches of the unprepared loader:
  // a prepared scheduler steps num_processes() times per optimizer step.
  const int64_t steps = epochs * train_loader.size() / accumulation;
  auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, steps / 20, steps);

  // 2. prepare; 3. no .to(device) anywhere below.
  auto [m, opt, train_dl, test_dl, sched] =
      accelerator.prepare(model, optimizer, train_loader, test_loader, scheduler);
  accelerator.print("training on", accelerator.num_processes(), "process(es),", train_dl->size(),
                    "batches of", batch_size, "per process and epoch");

  double accuracy = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int epoch = 0; epoch < epochs; ++epoch) {
    m->train();
    at::Tensor loss_sum = torch::zeros({1}, torch::TensorOptions().device(accelerator.device()));
    for (auto& batch : *train_dl) {
      auto sync = accelerator.accumulate(m);
      auto loss = torch::cross_entropy_loss(m->forward(batch.data), batch.target);
      accelerator.backward(loss);  // 4. instead of loss.backward()
      if (accelerator.sync_gradients()) accelerator.clip_grad_norm_(m->parameters(), 1.0);
      opt->step();
      sched->step();
      opt->zero_grad();
      loss_sum += loss.detach();
    }
    const double train_loss =
        accelerator.reduce(loss_sum, "mean").item<double>() / static_cast<double>(train_dl->size());

    m->eval();
    torch::NoGradGuard no_grad;
    int64_t correct = 0, seen = 0;
    for (auto& batch : *test_dl) {
      // 5. gather predictions and labels before computing the metric.
      auto [predictions, labels] =
          accelerator.gather_for_metrics(m->forward(batch.data).argmax(1), batch.target);
      correct += predictions.eq(labels).sum().item<int64_t>();
      seen += labels.size(0);
    }
    accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    accelerator.print("epoch", epoch + 1, "| train loss", train_loss, "| test accuracy", accuracy,
                      "on", seen, "images | lr", sched->get_last_lr()[0], "|", elapsed, "s");
  }

  // Save once, after every process is done.
  // Save once (main process, after every process is done): model.safetensors with the keys
  // Python's state_dict() would use, readable by Python's safetensors.
  accelerator.save_model(m, output);
  accelerator.print("saved", (std::filesystem::path(output) / "model.safetensors").string());
  return accuracy >= 0.89 ? 0 : 1;
}
