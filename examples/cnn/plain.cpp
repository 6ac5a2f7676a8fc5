// A plain LibTorch program: a CNN on Fashion-MNIST, written as LibTorch's own examples are.
// examples/cnn/main.cpp is the same program ported to accelerate-cpp; README, "From a LibTorch
// program", shows the difference. Usage: cnn_plain [epochs [batches per epoch]]
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>

#include "cnn.h"

int main(int argc, char** argv) {
  const int64_t epochs = argc > 1 ? std::atoll(argv[1]) : 2;
  const int64_t max_batches = argc > 2 ? std::atoll(argv[2]) : -1;  // -1: every batch
  torch::manual_seed(1);
  torch::Device device(torch::cuda::is_available() ? torch::kCUDA : torch::kCPU);

  cnn::Net model;
  model->to(device);
  auto train_set = cnn::Pixels(/*train=*/true)
                       .map(torch::data::transforms::Normalize<>(0.2860, 0.3530))
                       .map(torch::data::transforms::Stack<>());
  auto test_set = cnn::Pixels(/*train=*/false)
                      .map(torch::data::transforms::Normalize<>(0.2860, 0.3530))
                      .map(torch::data::transforms::Stack<>());
  auto train_loader =
      torch::data::make_data_loader<torch::data::samplers::RandomSampler>(std::move(train_set), 64);
  auto test_loader = torch::data::make_data_loader(std::move(test_set), 1000);
  torch::optim::SGD optimizer(model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));

  double accuracy = 0;
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    model->train();
    int64_t batches = 0;
    for (auto& batch : *train_loader) {
      if (batches++ == max_batches) break;
      auto data = batch.data.to(device), targets = batch.target.to(device);
      optimizer.zero_grad();
      auto loss = torch::nll_loss(model->forward(data), targets);
      loss.backward();
      optimizer.step();
    }
    model->eval();
    torch::NoGradGuard no_grad;
    int64_t correct = 0, total = 0;
    for (const auto& batch : *test_loader) {
      auto data = batch.data.to(device), targets = batch.target.to(device);
      auto predictions = model->forward(data).argmax(1);
      correct += predictions.eq(targets).sum().item<int64_t>();
      total += targets.size(0);
    }
    accuracy = static_cast<double>(correct) / static_cast<double>(total);
    std::printf("epoch %ld: test accuracy %.4f\n", static_cast<long>(epoch), accuracy);
  }
  torch::save(model, "cnn_model.pt");
  return 0;
}
