// accelerate/data/tensor_dataset.h: `TensorDataset`, PyTorch's torch.utils.data.TensorDataset:
// a map-style data set over two tensors in memory that makes each batch with one index_select.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace accelerate {

/// A map-style data set over two tensors in memory, as PyTorch's
/// `torch.utils.data.TensorDataset(x, y)`: sample i is `{x[i], y[i]}`. The fast default for
/// data that fits in memory: the loader fetches each batch with `get_items`, one
/// `index_select` per tensor, instead of one slice per sample and a stack. The tensors are
/// shared, not copied (a copy of the data set shares them too); they may live on any device.
/// For a data set of one tensor, LibTorch's `torch::data::datasets::TensorDataset` yields
/// `Example<at::Tensor, NoTarget>`, which the loader collates.
///
/// Example:
///   auto x = torch::randn({1000, 64}), y = torch::randn({1000, 1});
///   accelerate::DataLoader<accelerate::TensorDataset> loader(accelerate::TensorDataset(x, y),
///       accelerate::DataLoaderOptions().batch_size(64).shuffle(true));
///   for (auto& batch : loader) {}  // batch.data: [64, 64], batch.target: [64, 1]
class TensorDataset : public torch::data::datasets::Dataset<TensorDataset> {
 public:
  /// Samples `{data[i], target[i]}`. Throws accelerate::InvalidArgument when a tensor is
  /// undefined or has no dimension, or when their sizes in dimension 0 differ.
  TensorDataset(at::Tensor data, at::Tensor target);

  /// `{data[index], target[index]}`; accelerate::InvalidArgument when `index >= size()`.
  torch::data::Example<> get(size_t index) override;
  /// The batch of the samples `indices`, data and target each stacked on a new first
  /// dimension: exactly what collating their `get` would give, made with one `index_select`
  /// per tensor. accelerate::InvalidArgument when an index is not in [0, size()).
  torch::data::Example<> get_items(const std::vector<int64_t>& indices) const;
  /// The number of samples, `data.size(0)`.
  c10::optional<size_t> size() const override;

  /// The data tensor (samples on dimension 0).
  const at::Tensor& data() const { return data_; }
  /// The target tensor (samples on dimension 0).
  const at::Tensor& target() const { return target_; }

 private:
  at::Tensor data_;
  at::Tensor target_;
};

}  // namespace accelerate
