// The small CNN of the Fashion-MNIST example (also measured by bench/bench_cnn.cpp).
#pragma once

#include <torch/torch.h>

namespace fashion_mnist {

/// conv 1->16, conv 16->32 (3x3, each followed by ReLU and 2x2 max-pooling), fc 1568->64->10.
struct Net : torch::nn::Module {
  Net() {
    conv1 =
        register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3).padding(1)));
    conv2 =
        register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(16, 32, 3).padding(1)));
    fc1 = register_module("fc1", torch::nn::Linear(32 * 7 * 7, 64));
    fc2 = register_module("fc2", torch::nn::Linear(64, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);  // 16 x 14 x 14
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);  // 32 x 7 x 7
    x = torch::relu(fc1(x.flatten(1)));
    return fc2(x);  // logits
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

}  // namespace fashion_mnist
