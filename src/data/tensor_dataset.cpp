#include "accelerate/data/tensor_dataset.h"

#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>

#include <string>

#include "accelerate/errors.h"
#include "helpers.h"

namespace accelerate {

namespace {

void check_tensor(const at::Tensor& t, const char* name) {
  if (!t.defined())
    throw InvalidArgument(std::string("accelerate: TensorDataset: ") + name +
                          " is an undefined tensor");
  if (t.dim() < 1)
    throw InvalidArgument(std::string("accelerate: TensorDataset: ") + name +
                          " must have at least 1 dimension (dimension 0 indexes the samples), "
                          "got shape []");
}

}  // namespace

TensorDataset::TensorDataset(at::Tensor data, at::Tensor target)
    : data_(std::move(data)), target_(std::move(target)) {
  check_tensor(data_, "data");
  check_tensor(target_, "target");
  if (data_.size(0) != target_.size(0))
    throw InvalidArgument(
        "accelerate: TensorDataset: data and target must have the same size in dimension 0: "
        "expected target of shape [" +
        std::to_string(data_.size(0)) + ", ...] (data has shape " +
        detail::shape_string(data_.sizes()) + "), got " + detail::shape_string(target_.sizes()));
}

torch::data::Example<> TensorDataset::get(size_t index) {
  if (index >= static_cast<size_t>(data_.size(0)))
    throw InvalidArgument("accelerate: TensorDataset: get(" + std::to_string(index) +
                          "): index out of range for " + std::to_string(data_.size(0)) +
                          " samples");
  const auto i = static_cast<int64_t>(index);
  return {data_[i], target_[i]};
}

torch::data::Example<> TensorDataset::get_items(const std::vector<int64_t>& indices) const {
  const int64_t n = data_.size(0);
  for (int64_t i : indices)
    if (i < 0 || i >= n)
      throw InvalidArgument("accelerate: TensorDataset: get_items: index " + std::to_string(i) +
                            " is not in [0, " + std::to_string(n) + ")");
  // The indices as a tensor without a copy (index_select only reads it), then on each
  // tensor's device (no-op on the CPU).
  const at::Tensor index = at::from_blob(const_cast<int64_t*>(indices.data()),
                                         {static_cast<int64_t>(indices.size())}, at::kLong);
  return {data_.index_select(0, index.to(data_.device())),
          target_.index_select(0, index.to(target_.device()))};
}

c10::optional<size_t> TensorDataset::size() const { return static_cast<size_t>(data_.size(0)); }

}  // namespace accelerate
