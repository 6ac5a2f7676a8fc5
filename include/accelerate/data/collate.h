// accelerate/data/collate.h: how a list of examples becomes one batch (`Collate<T>`), and
// how a batch is pinned, moved to a device and sent as tensors (dispatch_batches).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>
#include <c10/core/Device.h>
#include <torch/data/example.h>

#include <vector>

namespace accelerate {

/// Collation of a list of examples of type `T` into one batch: the customization point for
/// user types. A specialisation provides
///   `static Batch collate(std::vector<T> examples);`
/// and optionally
///   `static Batch to_device(Batch batch, c10::Device device, bool non_blocking);`
///   `static Batch pin_memory(Batch batch);`
/// (without them, batches of that type stay where `collate` put them), and, for
/// `dispatch_batches`, the batch as tensors whose first dimension indexes the samples:
///   `static std::vector<at::Tensor> to_tensors(const Batch& batch);`
///   `static Batch from_tensors(std::vector<at::Tensor> tensors);`
/// Provided for
/// `at::Tensor` (stacked), `torch::data::Example<>` (data and target stacked) and
/// `torch::data::Example<at::Tensor, torch::data::example::NoTarget>`.
///
/// A data set that makes whole batches (a torch::data `get_batch` returning one batch, e.g.
/// after `.map(torch::data::transforms::Stack<>())`) needs no `collate`: `Collate<Batch>` of
/// its batch type only places it (`to_device`, `pin_memory`, `to_tensors`, `from_tensors`).
///
/// A specialisation for a type of your own lives at namespace scope:
///   struct Pair { at::Tensor a, b; };
///   template <> struct accelerate::Collate<Pair> {
///     static Pair collate(std::vector<Pair> xs);  // stacks the a's and the b's
///   };
///
/// Example:
///   auto batch = accelerate::Collate<at::Tensor>::collate({torch::ones({3}), torch::zeros({3})});
///   // batch: [2, 3]
template <typename T>
struct Collate {
  // Nothing: a DataLoader whose examples need collating says so (one static_assert).
};

/// Tensors are stacked on a new first dimension.
template <>
struct Collate<at::Tensor> {
  /// Stacks the examples: [n, ...].
  static at::Tensor collate(std::vector<at::Tensor> examples) { return at::stack(examples); }
  /// Moves the batch to `device`.
  static at::Tensor to_device(at::Tensor batch, c10::Device device, bool non_blocking) {
    return batch.to(device, non_blocking);
  }
  /// Page-locks the batch.
  static at::Tensor pin_memory(at::Tensor batch) { return batch.pin_memory(); }
  /// The batch as one tensor.
  static std::vector<at::Tensor> to_tensors(const at::Tensor& batch) { return {batch}; }
  /// The batch from its one tensor.
  static at::Tensor from_tensors(std::vector<at::Tensor> tensors) { return tensors.at(0); }
};

/// `Example<>`s become one `Example<>` whose data and target are stacked.
template <>
struct Collate<torch::data::Example<at::Tensor, at::Tensor>> {
  /// The batch type: one Example of stacked tensors.
  using Batch = torch::data::Example<at::Tensor, at::Tensor>;
  /// Stacks data and targets: data [n, ...], target [n, ...].
  static Batch collate(std::vector<Batch> examples) {
    std::vector<at::Tensor> data, target;
    data.reserve(examples.size());
    target.reserve(examples.size());
    for (auto& e : examples) {
      data.push_back(std::move(e.data));
      target.push_back(std::move(e.target));
    }
    return {at::stack(data), at::stack(target)};
  }
  /// Moves data and target to `device`.
  static Batch to_device(Batch batch, c10::Device device, bool non_blocking) {
    return {batch.data.to(device, non_blocking), batch.target.to(device, non_blocking)};
  }
  /// Page-locks data and target.
  static Batch pin_memory(Batch batch) {
    return {batch.data.pin_memory(), batch.target.pin_memory()};
  }
  /// {data, target}.
  static std::vector<at::Tensor> to_tensors(const Batch& batch) {
    return {batch.data, batch.target};
  }
  /// The batch from {data, target}.
  static Batch from_tensors(std::vector<at::Tensor> tensors) {
    return {tensors.at(0), tensors.at(1)};
  }
};

/// Examples without a target: their data is stacked.
template <>
struct Collate<torch::data::Example<at::Tensor, torch::data::example::NoTarget>> {
  /// The batch type: one Example of stacked data.
  using Batch = torch::data::Example<at::Tensor, torch::data::example::NoTarget>;
  /// Stacks the data: [n, ...].
  static Batch collate(std::vector<Batch> examples) {
    std::vector<at::Tensor> data;
    data.reserve(examples.size());
    for (auto& e : examples) data.push_back(std::move(e.data));
    return Batch(at::stack(data));
  }
  /// Moves the data to `device`.
  static Batch to_device(Batch batch, c10::Device device, bool non_blocking) {
    return Batch(batch.data.to(device, non_blocking));
  }
  /// Page-locks the data.
  static Batch pin_memory(Batch batch) { return Batch(batch.data.pin_memory()); }
  /// {data}.
  static std::vector<at::Tensor> to_tensors(const Batch& batch) { return {batch.data}; }
  /// The batch from {data}.
  static Batch from_tensors(std::vector<at::Tensor> tensors) { return Batch(tensors.at(0)); }
};

}  // namespace accelerate
