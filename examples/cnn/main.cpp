// examples/cnn/plain.cpp ported to accelerate-cpp (README, "From a LibTorch program"): the same
// program runs on one CPU, on several processes or GPUs, and on several machines.
// Usage: accelerate-cpp launch --num_processes 2 cnn [epochs [batches per epoch]]
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "cnn.h"
namespace acc = accelerate;

int main(int argc, char** argv) {
  const int64_t epochs = argc > 1 ? std::atoll(argv[1]) : 2;
  const int64_t max_batches = argc > 2 ? std::atoll(argv[2]) : -1;  // -1: every batch
  torch::manual_seed(1);
  acc::Accelerator accelerator;
  auto device = accelerator.device();

  cnn::Net model;
  model->to(device);
  auto train_set = cnn::Pixels(/*train=*/true)
                       .map(torch::data::transforms::Normalize<>(0.2860, 0.3530))
                       .map(torch::data::transforms::Stack<>());
  auto test_set = cnn::Pixels(/*train=*/false)
                      .map(torch::data::transforms::Normalize<>(0.2860, 0.3530))
                      .map(torch::data::transforms::Stack<>());
  acc::DataLoader train_loader(std::move(train_set),
                               acc::DataLoaderOptions().batch_size(64).shuffle(true));
  acc::DataLoader test_loader(std::move(test_set), acc::DataLoaderOptions().batch_size(1000));
  auto optimizer = std::make_shared<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  auto [m, opt, train_dl, test_dl] =
      accelerator.prepare(model, optimizer, train_loader, test_loader);

  double accuracy = 0;
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    int64_t batches = 0;
    for (auto& batch : *train_dl) {
      if (batches++ == max_batches) break;
      auto data = batch.data.to(device), targets = batch.target.to(device);
      opt->zero_grad();
      auto loss = torch::nll_loss(model->forward(data), targets);
      accelerator.backward(loss);
      opt->step();
    }
    model->eval();
    torch::NoGradGuard no_grad;
    int64_t correct = 0, total = 0;
    for (const auto& batch : *test_dl) {
      auto data = batch.data.to(device), targets = batch.target.to(device);
      auto predictions = model->forward(data).argmax(1);
      std::tie(predictions, targets) = accelerator.gather_for_metrics(predictions, targets);
      correct += predictions.eq(targets).sum().item<int64_t>();
      total += targets.size(0);
    }
    accuracy = static_cast<double>(correct) / static_cast<double>(total);
    accelerator.print(acc::format("epoch {}: test accuracy {:.4f}", epoch, accuracy));
  }
  accelerator.save_model(model, "cnn_model");
  return 0;
}
