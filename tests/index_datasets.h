// tests/index_datasets.h: the small data sets the data loader tests share, whose sample i
// carries its own index (data [float(i)], target i), so a batch says which samples it holds.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>

namespace accelerate::testing {

/// Map-style: sample i is data [float(i)], target i.
struct Indexed : torch::data::datasets::Dataset<Indexed> {
  explicit Indexed(int64_t size) : n(size) {}
  torch::data::Example<> get(size_t i) override {
    return {torch::full({1}, static_cast<float>(i)), torch::tensor(static_cast<int64_t>(i))};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(n); }
  int64_t n;
};

/// Iterable: the samples 0..n-1 in order, the same samples as Indexed.
struct Stream {
  explicit Stream(int64_t size) : n(size) {}
  std::optional<torch::data::Example<>> next() {
    if (i == n) return std::nullopt;
    const int64_t v = i++;
    return torch::data::Example<>{torch::full({1}, static_cast<float>(v)), torch::tensor(v)};
  }
  void reset() { i = 0; }
  int64_t n, i = 0;
};

}  // namespace accelerate::testing
