// tests/regression.h: Accelerate's RegressionDataset and RegressionModel
// (accelerate/test_utils/training.py) in C++, with the same data and initial values, for the
// ports of Accelerate's test scripts.
//
// Example:
//   accelerate::testing::RegressionDataset data(/*length=*/64, /*seed=*/42);  // y ≈ 2x + 3
//   auto model = std::make_shared<accelerate::testing::RegressionModel>();       // a = b = 0
//   auto loss = torch::mse_loss(model->forward(data.x), data.y);
#pragma once

#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <torch/nn/module.h>
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "numpy_random.h"

namespace accelerate::testing {

/// `RegressionDataset(a, b, length, seed)`: x ~ N(0, 1), y = a x + b + N(0, 0.1²), float32,
/// drawn as NumPy's `default_rng(seed)` draws them (all of x, then the noise), so that the
/// values are Python's bit for bit. Sample i is {x[i], y[i]}, both 0-d.
class RegressionDataset : public torch::data::datasets::Dataset<RegressionDataset> {
 public:
  RegressionDataset(int64_t length, uint32_t seed, float a = 2, float b = 3) {
    NumpyGenerator rng(seed);
    const std::vector<float> xs = rng.normal_float32(length);
    const std::vector<float> noise = rng.normal_float32(length, 0.0, 0.1);
    std::vector<float> ys(xs.size());
    for (size_t i = 0; i < xs.size(); ++i) {
      const float ax = a * xs[i];  // float32 arithmetic, one operation at a time, as NumPy
      const float axb = ax + b;
      ys[i] = axb + noise[i];
    }
    x = torch::tensor(xs);
    y = torch::tensor(ys);
  }
  torch::data::Example<> get(size_t i) override {
    const auto index = static_cast<int64_t>(i);
    return {x[index], y[index]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }

  at::Tensor x, y;
};

/// `RegressionModel(a, b)`: forward(x) = x a + b, with a and b float32 scalars.
struct RegressionModel : torch::nn::Module {
  explicit RegressionModel(float a_init = 0, float b_init = 0) {
    a = register_parameter("a", torch::tensor(a_init));
    b = register_parameter("b", torch::tensor(b_init));
  }
  at::Tensor forward(const at::Tensor& input) { return input * a + b; }

  at::Tensor a, b;
};

}  // namespace accelerate::testing
