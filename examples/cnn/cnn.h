// What the two programs of examples/cnn share, unchanged by the port: the model (a TORCH_MODULE
// with BatchNorm and dropout) and the data set (Fashion-MNIST's pixels in [0, 1], as LibTorch's
// torch::data::datasets::MNIST gives MNIST's).
#pragma once

#include <torch/torch.h>

#include "../fashion_mnist/fashion_mnist.h"

namespace cnn {

struct NetImpl : torch::nn::Module {
  NetImpl()
      : conv1(torch::nn::Conv2dOptions(1, 16, 3).padding(1)),
        bn1(16),
        conv2(torch::nn::Conv2dOptions(16, 32, 3).padding(1)),
        bn2(32),
        dropout(0.25),
        fc1(32 * 7 * 7, 64),
        fc2(64, 10) {
    register_module("conv1", conv1);
    register_module("bn1", bn1);
    register_module("conv2", conv2);
    register_module("bn2", bn2);
    register_module("dropout", dropout);
    register_module("fc1", fc1);
    register_module("fc2", fc2);
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(bn1(conv1(x))), 2);  // 16 x 14 x 14
    x = torch::max_pool2d(torch::relu(bn2(conv2(x))), 2);  // 32 x 7 x 7
    x = dropout(torch::relu(fc1(x.flatten(1))));
    return torch::log_softmax(fc2(x), 1);
  }
  torch::nn::Conv2d conv1;
  torch::nn::BatchNorm2d bn1;
  torch::nn::Conv2d conv2;
  torch::nn::BatchNorm2d bn2;
  torch::nn::Dropout dropout;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(Net);

// Fashion-MNIST with pixels in [0, 1]: the normalisation is left to a transform.
class Pixels : public torch::data::datasets::Dataset<Pixels> {
 public:
  explicit Pixels(bool train)
      : set_(train ? fashion_mnist::Split::kTrain : fashion_mnist::Split::kTest) {}
  torch::data::Example<> get(size_t index) override {
    auto example = set_.get(index);
    return {example.data * fashion_mnist::FashionMnist::kStd + fashion_mnist::FashionMnist::kMean,
            example.target};
  }
  torch::optional<size_t> size() const override { return set_.size(); }

 private:
  fashion_mnist::FashionMnist set_;
};

}  // namespace cnn
