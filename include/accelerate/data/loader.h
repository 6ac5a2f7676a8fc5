// accelerate/data/loader.h: batches from a data set, sharded across processes.
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
// This header holds the typed glue (how a `Dataset` makes a batch); the passes and their worker
// threads live in src/data/ behind `detail::Pass`.
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
//   for (auto& batch : loader) {  // batch.data: [16, 1], batch.target: [16, 1]
//     auto loss = torch::mse_loss(batch.data, batch.target);
//   }
//   // What Accelerator::prepare does on process 1 of 2:
//   auto sharding = accelerate::ShardingOptions().num_processes(2).process_index(1);
//   auto shard = loader.shard(sharding);  // std::shared_ptr<DataLoader<Squares>>
//   for (auto& batch : *shard) { /* on sharding.device() */ }
//
// torch::data data sets work as they are, transforms included. One made with `.map(...)`,
// e.g. `.map(Normalize<>(0.1307, 0.3081)).map(Stack<>())` (torch::data::transforms), has no
// `get(i)` but `get_batch(indices)` (a `torch::data::datasets::MapDataset`): the loader asks
// it for each batch's samples at once and yields the `Example<>` that `Stack` made, or,
// without `Stack`, collates the list of examples `get_batch` returns. Sharding, shuffling,
// even_batches, dispatching, device placement and the saved position are as for `get(i)`:
//   auto ds = MyDataset().map(torch::data::transforms::Stack<>());
//   accelerate::DataLoader<decltype(ds)> loader(ds, accelerate::DataLoaderOptions());
//
// Batched fetch (PyTorch's `__getitems__`): a data set that can make a whole batch at once
// defines `Batch get_items(const std::vector<int64_t>& indices)`, returning what collation
// would have made; the loader then calls it once per batch instead of get(i) per sample and
// collate. For tensors in memory that is one index_select instead of 64 slices and a stack,
// which is what `TensorDataset` (PyTorch's `torch.utils.data.TensorDataset`) does:
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "accelerate/data/collate.h"
#include "accelerate/data/context.h"
#include "accelerate/data/detail/pass.h"
#include "accelerate/data/detail/stream_batcher.h"
#include "accelerate/data/detail/traits.h"
#include "accelerate/data/loader_options.h"
#include "accelerate/data/sharding.h"
#include "accelerate/errors.h"

namespace accelerate {

/// The part of every `DataLoader<Dataset>` that does not depend on the data set: options,
/// sharding, epoch and position, and the passes. `Accelerator` keeps prepared loaders through
/// this type to save and restore their positions.
class DataLoaderBase {
 public:
  virtual ~DataLoaderBase();

  /// Number of samples in the data set (accelerate::InvalidArgument for an iterable one).
  virtual int64_t dataset_size() const = 0;
  /// True for a loader over an iterable data set (a stream, read with `next()`).
  virtual bool iterable() const { return false; }
  /// True when a pass of this loader is dispatched (Accelerate's `DataLoaderDispatcher`):
  /// prepared, more than one process, and `dispatch_batches` true, or unset with an iterable
  /// data set.
  bool dispatches() const;
  /// The options given at construction.
  const DataLoaderOptions& options() const { return options_; }
  /// True for a loader returned by `shard()`.
  bool prepared() const { return prepared_; }
  /// The sharding of a prepared loader (defaults otherwise).
  const ShardingOptions& sharding() const { return sharding_; }
  /// Changes `even_batches` of a prepared loader from its next pass on (Accelerate's
  /// `dl.batch_sampler.even_batches = value`, which `join_uneven_inputs` does); a pass under
  /// way keeps its batches. InvalidArgument on a loader that was not prepared.
  void set_even_batches(bool even_batches);
  /// Samples per step over all processes: batch_size × num_processes, or batch_size with
  /// split_batches (Accelerate's `total_batch_size`).
  int64_t total_batch_size() const;
  /// Batches this process yields in a whole pass (skip_first_batches deducted). With a
  /// sampler or batch sampler, asks it for the current epoch's list. An iterable data set has
  /// no length: accelerate::InvalidArgument, as Python's `len()` raises.
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
  /// Validates the options (batch_size ≥ 1, num_workers ≥ 0, the exclusive options of
  /// PyTorch: sampler, batch_sampler, shuffle, generator; accelerate::InvalidArgument).
  explicit DataLoaderBase(DataLoaderOptions options);
  /// Validates the options of a loader over an iterable data set (no shuffle, sampler, batch
  /// sampler, generator or workers; accelerate::InvalidArgument).
  void check_iterable_options() const;
  /// Copies the options and the position (a copy starts its own passes).
  DataLoaderBase(const DataLoaderBase&) = default;
  /// Copies the options and the position.
  DataLoaderBase& operator=(const DataLoaderBase&) = default;

  /// Stops the active pass, if any, and starts a new one whose batches `maker` makes: on
  /// `num_workers` threads, in order, when the options ask for workers. Throws what loading
  /// the first batch throws.
  std::shared_ptr<detail::Pass> start_pass(detail::BatchMaker maker);
  /// Sets and validates the sharding and the context the loader calls while it runs (may be
  /// null; std::invalid_argument).
  void set_sharding(const ShardingOptions& sharding, std::shared_ptr<DataContext> context);
  /// Sets the skip of every pass (std::invalid_argument when negative).
  void set_skip_first(int64_t n);
  /// Stops the active pass, if any.
  void detach_pass();

 private:
  class ActivePass;  // src/data/pass.cpp
  class StreamPass;  // src/data/pass.cpp
  struct PassPlan {
    std::vector<std::vector<int64_t>> batches;  // sample indices, skipped ones removed
    int64_t first = 0;                          // pass index of batches[0]
  };
  // Starts a pass: resolves its epoch, seed and skip, cuts its batches and tells the
  // gradient state.
  PassPlan begin_pass();
  // The index batches of the current epoch: this process's share, or, with `plain`, the
  // unsharded batches; `remainder` gets the real samples of the last global batch (or -1).
  std::vector<std::vector<int64_t>> epoch_batches(bool plain, int64_t& remainder);
  // Starts a pass read batch by batch (iterable data sets, dispatching): returns the batches
  // to skip and tells the gradient state.
  int64_t begin_stream_pass();
  // The batch source of a stream pass.
  std::unique_ptr<detail::BatchSource> stream_source(const detail::BatchMaker& maker);
  // Batch `index` (pass index) is about to be yielded; `last` when it is the pass's last.
  void on_yield(int64_t index, bool last);
  // A stream pass found its end: the real samples of its last global batch (or -1).
  void on_stream_end(int64_t remainder);
  // The pass ended: `complete` after its last batch (the epoch advances), else abandoned.
  void end_pass(bool complete);
  // The context given to shard(), or null when none was; InvalidArgument when it is gone.
  std::shared_ptr<DataContext> context() const;
  // Its gradient state, or null (no context, or one that is gone: a destructor asks).
  std::shared_ptr<GradientState> gradient_state_if_alive() const;

  DataLoaderOptions options_;
  bool prepared_ = false;
  ShardingOptions sharding_;
  // Weak: the Accelerator owns it (Note [a loader outliving its Accelerator]).
  std::weak_ptr<DataContext> context_;
  bool has_context_ = false;
  int64_t skip_first_ = 0;
  int64_t epoch_ = 0;
  int64_t batches_yielded_ = 0;
  std::optional<int64_t> resume_skip_;
  std::optional<uint64_t> default_seed_;
  // This pass drew its order from options_.generator(); a complete pass then draws once more
  // (end_pass), as PyTorch's RandomSampler.
  bool generator_pass_ = false;
  detail::PassLink active_;
};

/// A data loader over a map-style data set (`get(size_t)` and `size()`, which may return a
/// `size_t` or an optional, as `torch::data::datasets::Dataset`; or, without `get`,
/// torch::data's `get_batch(c10::ArrayRef<size_t>)` and `size()`, as a `MapDataset` made by
/// `.map(transform)`: it returns the batch itself, e.g. after `Stack`, or a list of examples
/// that the loader collates), or over an iterable one (a
/// stream, PyTorch's `IterableDataset`): a class with
///   `std::optional<Example> next();`  // the next sample, nullopt at the end of the data
///   `void reset();`                   // start again from the beginning
/// and optionally `void set_epoch(int64_t epoch);`. Every pass calls `set_epoch(epoch)` (when
/// there is one), then `reset()`, then `next()` until nullopt, from the loop's thread. An
/// iterable loader batches the samples in the order they come (no shuffle, sampler, batch
/// sampler, generator or workers: accelerate::InvalidArgument), has no `size()`, and, once
/// prepared, is dispatched from process 0 or sharded as Accelerate's `IterableDatasetShard`
/// (see `ShardingOptions::dispatch_batches`). Its passes skip batches by reading them.
/// Copies are cheap and share
/// the data set; each copy keeps its own epoch and position. Iterate with
/// `for (auto& batch : loader)`; one pass at a time per loader (starting a pass stops the
/// previous one). The loader must outlive its iterators: keep a prepared loader's
/// `std::shared_ptr` in a variable, since in `for (auto& b : *loader.shard(s))` the
/// temporary pointer, and with it the loader, dies before the loop starts (until C++23).
///
/// Example:
///   accelerate::TensorDataset data(torch::randn({100, 4}), torch::randn({100, 1}));
///   accelerate::DataLoader<accelerate::TensorDataset> loader(
///       data, accelerate::DataLoaderOptions().batch_size(32).shuffle(true).seed(0));
///   for (int epoch = 0; epoch < 3; ++epoch)
///     for (auto& batch : loader) auto loss = torch::mse_loss(batch.data, batch.target);
///
/// Example (an iterable data set):
///   struct Counter {
///     int64_t i = 0;
///     std::optional<at::Tensor> next() {
///       if (i == 10) return std::nullopt;
///       return torch::full({1}, double(i++));
///     }
///     void reset() { i = 0; }
///   };
///   auto options = accelerate::DataLoaderOptions().batch_size(4);
///   accelerate::DataLoader<Counter> stream(Counter(), options);
///   for (auto& batch : stream) {}  // [4, 1], [4, 1], [2, 1]
template <typename Dataset>
class DataLoader : public DataLoaderBase {
 public:
  /// The data set type.
  using DatasetType = Dataset;
  /// How the data set gives samples: `get(i)`, torch::data's `get_batch(indices)` (a list
  /// of examples, or one batch already made by a `Stack` transform), or `next()`.
  static constexpr detail::Fetch kFetch = detail::fetch_of<Dataset>();
  /// True for an iterable data set (`next()` and `reset()`, no `get(size_t)` or `get_batch`).
  static constexpr bool kIterable = kFetch == detail::Fetch::Stream;
  /// True when `get_batch` makes each whole batch (torch::data's `Stack`): nothing to collate.
  static constexpr bool kWholeBatches = kFetch == detail::Fetch::WholeBatch;
  /// What `Dataset::get` returns (or an element of the list `get_batch` returns); for a data
  /// set whose `get_batch` makes whole batches, that batch; for an iterable data set, what
  /// the optional returned by its `next()` holds.
  using ExampleType = typename detail::ExampleOf<Dataset>::type;
  /// How examples are collated (and batches placed).
  using CollateType = Collate<ExampleType>;
  static_assert(kWholeBatches || detail::HasCollate<CollateType, ExampleType>::value ||
                    std::is_void_v<ExampleType>,
                "accelerate: DataLoader: no collation for this example type; specialise "
                "accelerate::Collate<T> with `static Batch collate(std::vector<T>)`");
  /// What the loader yields.
  using BatchType = typename detail::BatchOf<CollateType, ExampleType, kWholeBatches>::type;

  class iterator;

  /// Loads from a copy of `dataset`.
  explicit DataLoader(Dataset dataset, DataLoaderOptions options = DataLoaderOptions())
      : DataLoader(std::make_shared<Dataset>(std::move(dataset)), std::move(options)) {}
  /// Loads from a shared data set (std::invalid_argument when null).
  explicit DataLoader(std::shared_ptr<Dataset> dataset,
                      DataLoaderOptions options = DataLoaderOptions())
      : DataLoaderBase(std::move(options)), dataset_(std::move(dataset)) {
    if (!dataset_) throw InvalidArgument("accelerate: DataLoader: null data set");
    if constexpr (kIterable) check_iterable_options();
  }
  /// Copies share the data set, not the active pass.
  DataLoader(const DataLoader&) = default;
  /// Copies share the data set, not the active pass.
  DataLoader& operator=(const DataLoader&) = default;
  /// Stops and joins the workers of an active pass.
  ~DataLoader() override { detach_pass(); }

  /// The data set.
  const std::shared_ptr<Dataset>& dataset() const { return dataset_; }
  /// Number of samples in the data set; accelerate::InvalidArgument for an iterable one.
  int64_t dataset_size() const override {
    if constexpr (kIterable) {
      throw InvalidArgument("accelerate: DataLoader: an iterable data set has no size");
    } else {
      return detail::dataset_length(*dataset_);
    }
  }
  /// True for an iterable data set.
  bool iterable() const override { return kIterable; }

  /// A prepared copy for one process of `sharding.num_processes()` (what
  /// `Accelerator::prepare` returns): its own batches, on `sharding.device()`, calling
  /// `context` (may be null: no gradient state, no collectives) while it runs. The loader
  /// does not own the context: once it is destroyed, using the loader throws
  /// accelerate::InvalidArgument. Throws std::invalid_argument for a bad process index, a
  /// batch size that split_batches cannot divide, or a dispatching loader over several
  /// processes whose context has no collectives.
  std::shared_ptr<DataLoader> shard(const ShardingOptions& sharding,
                                    std::shared_ptr<DataContext> context = nullptr) const {
    auto copy = std::make_shared<DataLoader>(*this);
    copy->set_sharding(sharding, std::move(context));
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
    if constexpr (kIterable) {
      maker.stream = [dataset = dataset_, batching = options(), sharding = sharding()](
                         int64_t epoch, bool shard, bool pin) {
        return std::unique_ptr<detail::BatchSource>(
            std::make_unique<StreamSource>(dataset, epoch, batching, sharding, shard, pin));
      };
    } else {
      maker.load = [dataset = dataset_](const std::vector<int64_t>& indices, bool pin) {
        return std::static_pointer_cast<void>(
            std::make_shared<BatchType>(load_batch(*dataset, indices, pin)));
      };
    }
    if constexpr (detail::HasTensors<CollateType, BatchType>::value) {
      maker.to_tensors = [](const void* batch) {
        return CollateType::to_tensors(*static_cast<const BatchType*>(batch));
      };
      maker.from_tensors = [](std::vector<at::Tensor> tensors) {
        return std::static_pointer_cast<void>(
            std::make_shared<BatchType>(CollateType::from_tensors(std::move(tensors))));
      };
    }
    if constexpr (detail::HasToDevice<CollateType, BatchType>::value) {
      maker.to_device = [](void* batch, c10::Device device, bool non_blocking) {
        auto& b = *static_cast<BatchType*>(batch);
        b = CollateType::to_device(std::move(b), device, non_blocking);
      };
    }
    return maker;
  }

  // The batches of one pass over an iterable data set, read in the loop's thread.
  class StreamSource : public detail::BatchSource {
   public:
    StreamSource(std::shared_ptr<Dataset> dataset, int64_t epoch, const DataLoaderOptions& batching,
                 const ShardingOptions& sharding, bool shard, bool pin)
        : dataset_(std::move(dataset)),
          pin_(pin),
          batcher_([this] { return pull(); }, batching, sharding, shard) {
      if constexpr (detail::HasSetEpoch<Dataset>::value) dataset_->set_epoch(epoch);
      dataset_->reset();
    }
    std::shared_ptr<void> next() override {
      std::optional<std::vector<ExampleType>> examples = batcher_.next();
      if (!examples) return nullptr;
      auto batch = std::make_shared<BatchType>(collate(std::move(*examples)));
      if constexpr (detail::HasPinMemory<CollateType, BatchType>::value) {
        if (pin_) *batch = CollateType::pin_memory(std::move(*batch));
      }
      return batch;
    }
    int64_t remainder() const override { return batcher_.remainder(); }

   private:
    std::optional<ExampleType> pull() {
      std::optional<ExampleType> example;
      try {
        auto sample = dataset_->next();
        if (!sample.has_value()) return std::nullopt;
        example.emplace(std::move(*sample));
      } catch (...) {
        std::throw_with_nested(
            std::runtime_error("accelerate: DataLoader: dataset.next() failed after " +
                               std::to_string(read_) + " samples of this pass"));
      }
      ++read_;
      return example;
    }
    std::shared_ptr<Dataset> dataset_;
    bool pin_;
    int64_t read_ = 0;
    detail::StreamBatcher<ExampleType> batcher_;
  };

  // Collates examples (with no collation, the static_assert above has spoken: the list).
  static BatchType collate(std::vector<ExampleType> examples) {
    if constexpr (detail::HasCollate<CollateType, ExampleType>::value)
      return CollateType::collate(std::move(examples));
    else
      return examples;
  }

  // The samples `indices`, loaded and collated; any thread.
  static BatchType fetch(Dataset& dataset, const std::vector<int64_t>& indices) {
    if constexpr (detail::HasGetItems<Dataset, BatchType>::value ||
                  kFetch == detail::Fetch::ExampleList || kWholeBatches) {
      const char* call = detail::HasGetItems<Dataset, BatchType>::value ? "get_items" : "get_batch";
      try {
        if constexpr (detail::HasGetItems<Dataset, BatchType>::value) {
          return dataset.get_items(indices);
        } else {
          // torch::data's batch request: the indices as size_t.
          const std::vector<size_t> request(indices.begin(), indices.end());
          if constexpr (kWholeBatches)
            return dataset.get_batch(c10::ArrayRef<size_t>(request));
          else
            return collate(dataset.get_batch(c10::ArrayRef<size_t>(request)));
        }
      } catch (...) {
        std::throw_with_nested(std::runtime_error(detail::get_items_failed_message(indices, call)));
      }
    } else {
      std::vector<ExampleType> examples;
      examples.reserve(indices.size());
      for (int64_t index : indices) {
        try {
          examples.push_back(dataset.get(static_cast<size_t>(index)));
        } catch (...) {
          std::throw_with_nested(std::runtime_error(detail::get_failed_message(index)));
        }
      }
      return collate(std::move(examples));
    }
  }

  // Loads, collates and pins the samples `indices`; any thread.
  static BatchType load_batch(Dataset& dataset, const std::vector<int64_t>& indices, bool pin) {
    BatchType batch = fetch(dataset, indices);
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
///   accelerate::Accelerator accelerator;
///   accelerate::TensorDataset data(torch::randn({100, 4}), torch::randn({100, 1}));
///   auto loader = accelerator.prepare(accelerate::DataLoader<accelerate::TensorDataset>(data));
///   auto rest = accelerate::skip_first_batches(loader, 10);  // from the 11th batch on
template <typename Dataset>
std::shared_ptr<DataLoader<Dataset>> skip_first_batches(
    const std::shared_ptr<DataLoader<Dataset>>& loader, int64_t n) {
  if (!loader) throw InvalidArgument("accelerate: skip_first_batches: null data loader");
  return loader->skip_first_batches(n);
}

}  // namespace accelerate
