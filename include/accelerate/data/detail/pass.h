// accelerate/data/detail/pass.h: the type-erased seam between a typed DataLoader<D> and its
// passes in src/data/ (how batches are made, one pass as its iterators see it); not for users.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace accelerate {
namespace detail {

/// Batches one after the other (iterable data sets, dispatched loaders): each `next()` is this
/// process's next batch (a loader's `BatchType`, type-erased), null at the end.
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  /// The next batch, or null once there is none.
  virtual std::shared_ptr<void> next() = 0;
  /// Once `next()` returned null: the samples of the last global batch that are real when
  /// it was completed with repeated samples, else -1 (what GradientState::remainder means).
  virtual int64_t remainder() const { return -1; }
};

/// What a pass needs from a typed loader. Batches travel type-erased: `void*` points to the
/// loader's `BatchType`.
struct BatchMaker {
  /// Loads and collates the samples `indices`, page-locked when `pin`; called from any thread.
  /// Empty for an iterable data set.
  std::function<std::shared_ptr<void>(const std::vector<int64_t>& indices, bool pin)> load;
  /// Moves a batch to a device in place (non-blocking when pinned); empty when the batch
  /// type has no `Collate::to_device`.
  std::function<void(void* batch, c10::Device device, bool non_blocking)> to_device;
  /// Iterable data sets: restarts the data set at epoch `epoch` and reads it as plain batches
  /// (`shard` false) or as this process's IterableDatasetShard batches. Empty for map-style.
  std::function<std::unique_ptr<BatchSource>(int64_t epoch, bool shard, bool pin)> stream;
  /// The batch's tensors (`Collate::to_tensors`); empty when the batch type has none.
  std::function<std::vector<at::Tensor>(const void* batch)> to_tensors;
  /// A batch from its tensors (`Collate::from_tensors`); empty when the batch type has none.
  std::function<std::shared_ptr<void>(std::vector<at::Tensor>)> from_tensors;
};

/// One pass over a loader's batches, as its iterators see it. The implementation, with the
/// worker threads that load ahead, is `DataLoaderBase::ActivePass` in src/data/pass.cpp.
class Pass {
 public:
  virtual ~Pass() = default;
  /// The current batch (made by `BatchMaker::load`), or null once the pass has ended.
  virtual void* current() const = 0;
  /// Moves to the next batch; throws what loading it throws (the pass then ends).
  virtual void advance() = 0;
  /// Stops the workers, ends the pass (abandoned unless complete) and forgets the loader.
  virtual void detach() = 0;
};

/// A link to the active pass that copies of a loader do not share.
struct PassLink {
  PassLink() = default;
  PassLink(const PassLink&) {}
  PassLink& operator=(const PassLink&) { return *this; }
  std::weak_ptr<Pass> pass;
};

}  // namespace detail
}  // namespace accelerate
