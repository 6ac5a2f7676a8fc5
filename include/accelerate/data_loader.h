// accelerate/data_loader.h: batches from a map-style data set, sharded across processes.
//
// `DataLoader<Dataset>` is PyTorch's `DataLoader` for LibTorch data sets (`get(i)` and
// `size()`, as `torch::data::datasets::Dataset`): it batches and collates examples, shuffles
// them with a seeded generator that changes every epoch, and can load ahead on worker
// threads. `Accelerator::prepare` turns it into Accelerate's `DataLoaderShard` with
// `shard()`: each process then gets its own batches, exactly as Accelerate's
// `BatchSamplerShard` cuts them (`split_batches`, `even_batches`), already on its device,
// and the loader tells the `GradientState` when it yields its last batch. Its position
// (epoch, batches consumed) is what a checkpoint saves and `resume_from` restores.
//
// Why not `torch::data::make_data_loader`: it has no notion of processes, epochs or
// position, and its shuffling cannot match Python's.
//
// This header holds the typed glue (options, collation, how a `Dataset` makes a batch); the
// passes and their worker threads live in src/data_loader_pass.cpp behind `detail::Pass`.
//
// Example:
//   struct Squares : torch::data::datasets::Dataset<Squares> {
//     torch::data::Example<> get(size_t i) override {
//       auto x = torch::full({1}, double(i));
//       return {x, x * x};
//     }
//     c10::optional<size_t> size() const override { return 100; }
//   };
//   accelerate::DataLoader<Squares> loader(Squares(), accelerate::DataLoaderOptions()
//       .batch_size(16).shuffle(true).seed(42).num_workers(2));
//   for (auto& batch : loader) {          // batch.data: [16, 1], batch.target: [16, 1]
//     auto loss = torch::mse_loss(model->forward(batch.data), batch.target);
//   }
//   // What Accelerator::prepare does on process 1 of 2:
//   auto sharding = accelerate::ShardingOptions().num_processes(2).process_index(1);
//   auto shard = loader.shard(sharding);  // std::shared_ptr<DataLoader<Squares>>
//   for (auto& batch : *shard) { /* on sharding.device() */ }
//
// Batched fetch (PyTorch's `__getitems__`): a data set that can make a whole batch at once
// defines `Batch get_items(const std::vector<int64_t>& indices)`, returning what collation
// would have made; the loader then calls it once per batch instead of get(i) per sample and
// collate. For tensors in memory that is one index_select instead of 64 slices and a stack,
// which is what `TensorDataset` (PyTorch's `torch.utils.data.TensorDataset`) does:
//   accelerate::DataLoader<accelerate::TensorDataset> loader(accelerate::TensorDataset(x, y),
//       accelerate::DataLoaderOptions().batch_size(64).shuffle(true));
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/stack.h>
#include <c10/core/Device.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include "accelerate/errors.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "accelerate/gradient_state.h"
#include "accelerate/options.h"

namespace accelerate {

/// Options of a `DataLoader` (PyTorch's `DataLoader` arguments), with chained setters.
///
/// Example:
///   auto options = accelerate::DataLoaderOptions().batch_size(64).shuffle(true).seed(0);
struct DataLoaderOptions {
  /// Samples per batch (≥ 1; default 1). With `split_batches` this is the global batch.
  ACCELERATE_ARG(int64_t, batch_size) = 1;
  /// Visit the samples in a new random order every epoch (default false).
  ACCELERATE_ARG(bool, shuffle) = false;
  /// Drop the last batch when it is incomplete (default false).
  ACCELERATE_ARG(bool, drop_last) = false;
  /// Base seed of the shuffling: epoch e uses `torch.Generator().manual_seed(seed + e)`.
  /// Unset: the seed given by `prepare` (shared by all processes), else the default CPU
  /// generator's `current_seed()` at the first pass.
  ACCELERATE_ARG(std::optional<uint64_t>, seed);
  /// Threads that load and collate batches ahead of the training loop (default 0: load in
  /// the loop's thread). Batches come in the same order either way; `get` must then be
  /// safe to call from several threads at once.
  ACCELERATE_ARG(int, num_workers) = 0;
  /// Collate batches into page-locked memory when CUDA is available, so that the copy to
  /// the GPU is asynchronous (default false; nothing happens without CUDA).
  ACCELERATE_ARG(bool, pin_memory) = false;
};

/// How a loader's batches are distributed over processes: the arguments of Accelerate's
/// `BatchSamplerShard`, which `shard_batches` takes, plus what a loader prepared with
/// `DataLoader::shard` needs (device, gradient state, shared seed). With chained setters;
/// `Accelerator::prepare` fills it.
///
/// Example:
///   auto sharding = accelerate::ShardingOptions().num_processes(2).process_index(1);
struct ShardingOptions {
  /// Processes sharing the data (≥ 1; default 1: no sharding, plain batches).
  ACCELERATE_ARG(int, num_processes) = 1;
  /// This process, in [0, num_processes) (default 0).
  ACCELERATE_ARG(int, process_index) = 0;
  /// Cut each global batch of `batch_size` into one slice per process (Accelerate's
  /// `split_batches`; batch_size must be a multiple of num_processes) instead of giving each
  /// process whole batches (default false).
  ACCELERATE_ARG(bool, split_batches) = false;
  /// Wrap around to the start so that every process gets the same number of full batches
  /// (default true).
  ACCELERATE_ARG(bool, even_batches) = true;
  /// Where a prepared loader moves every batch (default CPU). Off the CPU, the loader loads
  /// batch i + 1 and queues its copy (non-blocking with `pin_memory`) before yielding batch
  /// i, as Accelerate's `DataLoaderShard`; what loading it throws is thrown on reaching it.
  ACCELERATE_ARG(c10::Device, device) = c10::kCPU;
  /// Told when a prepared loader's pass begins, reaches its last batch and ends (default
  /// null: nobody).
  ACCELERATE_ARG(std::shared_ptr<GradientState>, gradient_state);
  /// Shuffling seed shared by all processes; overrides an unset `DataLoaderOptions::seed`.
  ACCELERATE_ARG(std::optional<uint64_t>, seed);
  /// Called by a prepared loader at the start of every pass, before its order is drawn
  /// (default null: nothing). The Accelerator sets it to synchronise the random states of
  /// AcceleratorOptions::rng_types, as Accelerate's `DataLoaderShard.__iter__` does; every
  /// process must start its passes together then, since it is a collective.
  ACCELERATE_ARG(std::function<void()>, on_pass_begin);
};

/// Where a loader stands: `batches` of epoch `epoch` have been consumed.
struct LoaderPosition {
  /// The epoch (pass number) of the current or next pass.
  int64_t epoch = 0;
  /// Batches of that pass already consumed, counting skipped ones.
  int64_t batches = 0;
};

/// The batches (lists of sample indices) that process `sharding.process_index()` gets from
/// samples visited in `order`, exactly as Accelerate's `BatchSamplerShard` over
/// `BatchSampler(order, batch_size, drop_last)`, with the batch size and drop_last of
/// `batching` (its other options play no part). With one process: plain batches. Throws
/// std::invalid_argument for a batch size < 1, a bad process index, or `split_batches` with a
/// batch size that is not a multiple of the number of processes.
///
/// Example:
///   std::vector<int64_t> order(22);
///   std::iota(order.begin(), order.end(), 0);
///   auto b = accelerate::shard_batches(order, accelerate::DataLoaderOptions().batch_size(3),
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // b == {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21, 0, 1}}
std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order,
                                                const DataLoaderOptions& batching,
                                                const ShardingOptions& sharding);

/// `shard_batches(order, batching, sharding).size()` for any order of `dataset_size` samples,
/// without building the lists.
int64_t shard_num_batches(int64_t dataset_size, const DataLoaderOptions& batching,
                          const ShardingOptions& sharding);

/// A random permutation of [0, n) equal to Python's
/// `torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()`.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

/// Collation of a list of examples of type `T` into one batch: the customization point for
/// user types. A specialisation provides
///   `static Batch collate(std::vector<T> examples);`
/// and optionally
///   `static Batch to_device(Batch batch, c10::Device device, bool non_blocking);`
///   `static Batch pin_memory(Batch batch);`
/// (without them, batches of that type stay where `collate` put them). Provided for
/// `at::Tensor` (stacked), `torch::data::Example<>` (data and target stacked) and
/// `torch::data::Example<at::Tensor, torch::data::example::NoTarget>`.
///
/// Example:
///   struct Pair { at::Tensor a, b; };
///   template <> struct accelerate::Collate<Pair> {
///     static Pair collate(std::vector<Pair> xs) { ... stack the a's and the b's ... }
///   };
template <typename T>
struct Collate {
  static_assert(sizeof(T) == 0,
                "accelerate: DataLoader: no collation for this example type; specialise "
                "accelerate::Collate<T> with `static Batch collate(std::vector<T>)`");
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
};

namespace detail {

/// "accelerate: DataLoader: dataset.get(<index>) failed", for errors of `get`.
std::string get_failed_message(int64_t index);

/// "dataset.get_items([3, 7, ...]) failed (sample indices 3, 7, ...)".
std::string get_items_failed_message(const std::vector<int64_t>& indices);

template <typename C, typename B, typename = void>
struct HasToDevice : std::false_type {};
template <typename C, typename B>
struct HasToDevice<
    C, B, std::void_t<decltype(C::to_device(std::declval<B>(), c10::Device(c10::kCPU), false))>>
    : std::true_type {};
template <typename D, typename B, typename = void>
struct HasGetItems : std::false_type {};
template <typename D, typename B>
struct HasGetItems<D, B,
                   std::void_t<decltype(std::declval<D&>().get_items(
                       std::declval<const std::vector<int64_t>&>()))>>
    : std::is_convertible<
          decltype(std::declval<D&>().get_items(std::declval<const std::vector<int64_t>&>())), B> {
};

template <typename C, typename B, typename = void>
struct HasPinMemory : std::false_type {};
template <typename C, typename B>
struct HasPinMemory<C, B, std::void_t<decltype(C::pin_memory(std::declval<B>()))>>
    : std::true_type {};

/// `size()` of a data set as a number, whether it returns a number or an optional.
template <typename Dataset>
int64_t dataset_length(Dataset& dataset) {
  auto n = dataset.size();
  if constexpr (std::is_integral_v<decltype(n)>) {
    return static_cast<int64_t>(n);
  } else {
    if (!n.has_value()) throw InvalidArgument("accelerate: DataLoader: the data set has no size()");
    return static_cast<int64_t>(*n);
  }
}

/// What a pass needs from a typed loader. Batches travel type-erased: `void*` points to the
/// loader's `BatchType`.
struct BatchMaker {
  /// Loads and collates the samples `indices`, page-locked when `pin`; called from any thread.
  std::function<std::shared_ptr<void>(const std::vector<int64_t>& indices, bool pin)> load;
  /// Moves a batch to a device in place (non-blocking when pinned); empty when the batch
  /// type has no `Collate::to_device`.
  std::function<void(void* batch, c10::Device device, bool non_blocking)> to_device;
};

/// One pass over a loader's batches, as its iterators see it. The implementation, with the
/// worker threads that load ahead, is `DataLoaderBase::ActivePass` in src/data_loader_pass.cpp.
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

/// The part of every `DataLoader<Dataset>` that does not depend on the data set: options,
/// sharding, epoch and position, and the passes. `Accelerator` keeps prepared loaders through
/// this type to save and restore their positions.
class DataLoaderBase {
 public:
  virtual ~DataLoaderBase();

  /// Number of samples in the data set.
  virtual int64_t dataset_size() const = 0;
  /// The options given at construction.
  const DataLoaderOptions& options() const { return options_; }
  /// True for a loader returned by `shard()`.
  bool prepared() const { return prepared_; }
  /// The sharding of a prepared loader (defaults otherwise).
  const ShardingOptions& sharding() const { return sharding_; }
  /// Samples per step over all processes: batch_size × num_processes, or batch_size with
  /// split_batches (Accelerate's `total_batch_size`).
  int64_t total_batch_size() const;
  /// Batches this process yields in a whole pass (skip_first_batches deducted).
  int64_t size() const;
  /// Batches skipped at the start of every pass (`skip_first_batches`).
  int64_t skipped_batches() const { return skip_first_; }

  /// The epoch of the current pass, or of the next one between passes. It advances by one
  /// after each complete pass; an abandoned pass does not advance it.
  int64_t epoch() const { return epoch_; }
  /// Sets the epoch of the next pass (its shuffling is seeded with seed + epoch). A pending
  /// `resume_from` skip is kept when `epoch` is the resumed epoch, else dropped.
  void set_epoch(int64_t epoch);
  /// Batches of the current (or last abandoned) pass consumed so far, counting skipped
  /// ones; 0 between complete passes.
  int64_t batches_yielded() const { return batches_yielded_; }
  /// {epoch(), batches_yielded()}: what a checkpoint saves.
  LoaderPosition position() const { return {epoch_, batches_yielded_}; }
  /// The next pass runs epoch `position.epoch` and skips its first `position.batches`
  /// batches without loading them; later passes are whole.
  void resume_from(LoaderPosition position);
  /// The position as `save_state` writes it: `{"epoch": e, "batches": b}`.
  std::map<std::string, int64_t> state_dict() const;
  /// resume_from() the position of a state_dict(); std::invalid_argument naming a missing key.
  void load_state_dict(const std::map<std::string, int64_t>& state);

 protected:
  /// Validates the options (batch_size ≥ 1, num_workers ≥ 0; std::invalid_argument).
  explicit DataLoaderBase(DataLoaderOptions options);
  /// Copies the options and the position (a copy starts its own passes).
  DataLoaderBase(const DataLoaderBase&) = default;
  /// Copies the options and the position.
  DataLoaderBase& operator=(const DataLoaderBase&) = default;

  /// Stops the active pass, if any, and starts a new one whose batches `maker` makes: on
  /// `num_workers` threads, in order, when the options ask for workers. Throws what loading
  /// the first batch throws.
  std::shared_ptr<detail::Pass> start_pass(detail::BatchMaker maker);
  /// Sets and validates the sharding (std::invalid_argument).
  void set_sharding(const ShardingOptions& sharding);
  /// Sets the skip of every pass (std::invalid_argument when negative).
  void set_skip_first(int64_t n);
  /// Stops the active pass, if any.
  void detach_pass();

 private:
  class ActivePass;  // src/data_loader_pass.cpp
  struct PassPlan {
    std::vector<std::vector<int64_t>> batches;  // sample indices, skipped ones removed
    int64_t first = 0;                          // pass index of batches[0]
  };
  // Starts a pass: resolves its epoch, seed and skip, cuts its batches and tells the
  // gradient state.
  PassPlan begin_pass();
  // Batch `index` (pass index) is about to be yielded; `last` when it is the pass's last.
  void on_yield(int64_t index, bool last);
  // The pass ended: `complete` after its last batch (the epoch advances), else abandoned.
  void end_pass(bool complete);

  DataLoaderOptions options_;
  bool prepared_ = false;
  ShardingOptions sharding_;
  int64_t skip_first_ = 0;
  int64_t epoch_ = 0;
  int64_t batches_yielded_ = 0;
  std::optional<int64_t> resume_skip_;
  std::optional<uint64_t> default_seed_;
  detail::PassLink active_;
};

/// A data loader over a map-style data set (`get(size_t)` and `size()`, which may return a
/// `size_t` or an optional, as `torch::data::datasets::Dataset`). Copies are cheap and share
/// the data set; each copy keeps its own epoch and position. Iterate with
/// `for (auto& batch : loader)`; one pass at a time per loader (starting a pass stops the
/// previous one). The loader must outlive its iterators: keep a prepared loader's
/// `std::shared_ptr` in a variable, since in `for (auto& b : *loader.shard(s))` the
/// temporary pointer, and with it the loader, dies before the loop starts (until C++23).
///
/// Example:
///   accelerate::DataLoader<MyDataset> loader(MyDataset(), accelerate::DataLoaderOptions()
///       .batch_size(32).shuffle(true).seed(0));
///   for (int epoch = 0; epoch < 3; ++epoch)
///     for (auto& batch : loader) train_step(batch.data, batch.target);
template <typename Dataset>
class DataLoader : public DataLoaderBase {
 public:
  /// The data set type.
  using DatasetType = Dataset;
  /// What `Dataset::get` returns.
  using ExampleType = std::decay_t<decltype(std::declval<Dataset&>().get(size_t{}))>;
  /// How examples are collated.
  using CollateType = Collate<ExampleType>;
  /// What the loader yields.
  using BatchType = decltype(CollateType::collate(std::declval<std::vector<ExampleType>>()));

  class iterator;

  /// Loads from a copy of `dataset`.
  explicit DataLoader(Dataset dataset, DataLoaderOptions options = DataLoaderOptions())
      : DataLoader(std::make_shared<Dataset>(std::move(dataset)), std::move(options)) {}
  /// Loads from a shared data set (std::invalid_argument when null).
  explicit DataLoader(std::shared_ptr<Dataset> dataset,
                      DataLoaderOptions options = DataLoaderOptions())
      : DataLoaderBase(std::move(options)), dataset_(std::move(dataset)) {
    if (!dataset_) throw InvalidArgument("accelerate: DataLoader: null data set");
  }
  /// Copies share the data set, not the active pass.
  DataLoader(const DataLoader&) = default;
  /// Copies share the data set, not the active pass.
  DataLoader& operator=(const DataLoader&) = default;
  /// Stops and joins the workers of an active pass.
  ~DataLoader() override { detach_pass(); }

  /// The data set.
  const std::shared_ptr<Dataset>& dataset() const { return dataset_; }
  /// Number of samples in the data set.
  int64_t dataset_size() const override { return detail::dataset_length(*dataset_); }

  /// A prepared copy for one process of `sharding.num_processes()` (what
  /// `Accelerator::prepare` returns): its own batches, on `sharding.device()`, reporting to
  /// `sharding.gradient_state()`. Throws std::invalid_argument for a bad process index or a
  /// batch size that split_batches cannot divide.
  std::shared_ptr<DataLoader> shard(const ShardingOptions& sharding) const {
    auto copy = std::make_shared<DataLoader>(*this);
    copy->set_sharding(sharding);
    return copy;
  }
  /// A copy that skips the first `n` batches of every pass without loading them
  /// (Accelerate's `skip_first_batches`).
  std::shared_ptr<DataLoader> skip_first_batches(int64_t n) const {
    auto copy = std::make_shared<DataLoader>(*this);
    copy->set_skip_first(n);
    return copy;
  }

  /// Starts a pass. Throws what loading the first batch throws.
  iterator begin() { return iterator(start_pass(batch_maker())); }
  /// The end of any pass.
  iterator end() { return iterator(); }

  /// An input iterator over the batches of one pass; copies share the pass.
  class iterator {
   public:
    using iterator_category = std::input_iterator_tag;  ///< single pass
    using value_type = BatchType;                       ///< a collated batch
    using difference_type = std::ptrdiff_t;             ///< unused
    using pointer = BatchType*;                         ///< to the current batch
    using reference = BatchType&;                       ///< the current batch

    /// The end iterator.
    iterator() = default;
    /// The current batch.
    BatchType& operator*() const { return *static_cast<BatchType*>(pass_->current()); }
    /// The current batch.
    BatchType* operator->() const { return static_cast<BatchType*>(pass_->current()); }
    /// Moves to the next batch; throws what loading it throws (the pass then ends).
    iterator& operator++() {
      pass_->advance();
      return *this;
    }
    /// Moves to the next batch.
    void operator++(int) { ++*this; }
    /// Equal when both are at the end, or share a pass that is not.
    bool operator==(const iterator& other) const {
      bool a = at_end(), b = other.at_end();
      return a == b && (a || pass_ == other.pass_);
    }
    /// Not equal.
    bool operator!=(const iterator& other) const { return !(*this == other); }

   private:
    friend class DataLoader;
    explicit iterator(std::shared_ptr<detail::Pass> pass) : pass_(std::move(pass)) {}
    bool at_end() const { return !pass_ || !pass_->current(); }
    std::shared_ptr<detail::Pass> pass_;
  };

 private:
  // How this loader's batches are made, for the type-erased pass.
  detail::BatchMaker batch_maker() const {
    detail::BatchMaker maker;
    maker.load = [dataset = dataset_](const std::vector<int64_t>& indices, bool pin) {
      return std::static_pointer_cast<void>(
          std::make_shared<BatchType>(load_batch(*dataset, indices, pin)));
    };
    if constexpr (detail::HasToDevice<CollateType, BatchType>::value) {
      maker.to_device = [](void* batch, c10::Device device, bool non_blocking) {
        auto& b = *static_cast<BatchType*>(batch);
        b = CollateType::to_device(std::move(b), device, non_blocking);
      };
    }
    return maker;
  }

  // Loads, collates and pins the samples `indices`; any thread.
  static BatchType load_batch(Dataset& dataset, const std::vector<int64_t>& indices, bool pin) {
    if constexpr (detail::HasGetItems<Dataset, BatchType>::value) {
      std::optional<BatchType> batch;
      try {
        batch.emplace(dataset.get_items(indices));
      } catch (...) {
        std::throw_with_nested(std::runtime_error(detail::get_items_failed_message(indices)));
      }
      if constexpr (detail::HasPinMemory<CollateType, BatchType>::value) {
        if (pin) *batch = CollateType::pin_memory(std::move(*batch));
      }
      return std::move(*batch);
    }
    std::vector<ExampleType> examples;
    examples.reserve(indices.size());
    for (int64_t index : indices) {
      try {
        examples.push_back(dataset.get(static_cast<size_t>(index)));
      } catch (...) {
        std::throw_with_nested(std::runtime_error(detail::get_failed_message(index)));
      }
    }
    BatchType batch = CollateType::collate(std::move(examples));
    if constexpr (detail::HasPinMemory<CollateType, BatchType>::value) {
      if (pin) batch = CollateType::pin_memory(std::move(batch));
    }
    return batch;
  }

  std::shared_ptr<Dataset> dataset_;
};

/// A copy of `loader` that skips the first `n` batches of every pass (Accelerate's
/// `skip_first_batches(dataloader, num_batches)`).
///
/// Example:
///   auto rest = accelerate::skip_first_batches(prepared_loader, 100);
template <typename Dataset>
std::shared_ptr<DataLoader<Dataset>> skip_first_batches(
    const std::shared_ptr<DataLoader<Dataset>>& loader, int64_t n) {
  if (!loader) throw InvalidArgument("accelerate: skip_first_batches: null data loader");
  return loader->skip_first_batches(n);
}

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
