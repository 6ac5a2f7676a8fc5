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
//   accelerate::DataLoader<accelerate::TensorDataset> loader(accelerate::TensorDataset(x, y),
//       accelerate::DataLoaderOptions().batch_size(64).shuffle(true));
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/stack.h>
#include <c10/core/Device.h>
#include <c10/util/ArrayRef.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include "accelerate/errors.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <map>
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

/// A custom order of sample indices per epoch: PyTorch's `sampler=` argument (a
/// `torch.utils.data.Sampler` with `set_epoch`). The loader batches the indices it returns
/// (batch_size, drop_last) and, once prepared, shards those batches as Accelerate's
/// `BatchSamplerShard` does. Use it for weighted or subset sampling.
///
/// `indices(epoch)` must depend on the epoch only: a prepared loader calls it on every process
/// and they must agree, and `size()`, `resume_from` and `skip_first_batches` call it again for
/// the same epoch. Draw random orders from a generator seeded with a seed shared by all
/// processes plus the epoch.
///
/// Example (a random half of the data set, a new half every epoch):
///   struct RandomHalf : accelerate::Sampler {
///     std::vector<int64_t> indices(int64_t epoch) override {
///       auto all = accelerate::shuffled_indices(1000, 1234 + epoch);
///       return {all.begin(), all.begin() + 500};
///     }
///   };
///   accelerate::DataLoader<MyDataset> loader(MyDataset(), accelerate::DataLoaderOptions()
///       .batch_size(32).sampler(std::make_shared<RandomHalf>()));
class Sampler {
 public:
  virtual ~Sampler() = default;
  /// The sample indices to visit in epoch `epoch`, in order (Python's `list(sampler)` after
  /// `sampler.set_epoch(epoch)`). Indices may repeat and need not cover the data set; each
  /// must be in [0, dataset size) (the loader throws accelerate::InvalidArgument otherwise).
  virtual std::vector<int64_t> indices(int64_t epoch) = 0;
};

/// A custom list of batches per epoch: PyTorch's `batch_sampler=` argument (e.g. bucketing
/// samples of similar length). A prepared loader shards these batches exactly as
/// Accelerate's `BatchSamplerShard` shards a batch sampler, using its `batch_size()` and
/// `drop_last()` (Python's `batch_sampler.batch_size` and `.drop_last`): without split_batches
/// each process takes every num_processes-th batch and, with even_batches, the last round is
/// completed from the first batches; split_batches cuts each batch of `batch_size()` samples
/// into one slice per process (it needs a `batch_size()`). As with `Sampler`, `batches(epoch)`
/// must depend on the epoch only.
///
/// Example (batches of samples of similar length):
///   struct ByLength : accelerate::BatchSampler {
///     std::vector<std::vector<int64_t>> batches(int64_t epoch) override {
///       return {{0, 3, 5}, {1, 2}, {4, 6, 7, 8}};  // any lists of sample indices
///     }
///   };
///   accelerate::DataLoader<MyDataset> loader(MyDataset(), accelerate::DataLoaderOptions()
///       .batch_sampler(std::make_shared<ByLength>()));
class BatchSampler {
 public:
  virtual ~BatchSampler() = default;
  /// The batches (lists of sample indices, each in [0, dataset size)) of epoch `epoch`.
  virtual std::vector<std::vector<int64_t>> batches(int64_t epoch) = 0;
  /// The nominal batch size, or nullopt (the default) for batches of any length. Sharding
  /// treats a batch shorter than this as incomplete, as Accelerate does.
  virtual std::optional<int64_t> batch_size() const { return std::nullopt; }
  /// True when the sampler drops its incomplete last batch (default false); a prepared
  /// loader then drops an incomplete last round instead of completing it.
  virtual bool drop_last() const { return false; }
};

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
  /// The order of the samples per epoch (PyTorch's `sampler`; see `Sampler`). Not together
  /// with `shuffle` (accelerate::InvalidArgument, as PyTorch).
  ACCELERATE_ARG(std::shared_ptr<Sampler>, sampler);
  /// The batches per epoch (PyTorch's `batch_sampler`; see `BatchSampler`). Not together with
  /// `batch_size`, `shuffle`, `sampler` or `drop_last` (accelerate::InvalidArgument, as
  /// PyTorch): the batch sampler's own `batch_size()` and `drop_last()` count.
  ACCELERATE_ARG(std::shared_ptr<BatchSampler>, batch_sampler);
  /// With `shuffle`, draw each pass's permutation from this generator, as PyTorch's
  /// `DataLoader(shuffle=True, generator=g)`: each pass draws the iterator's base seed (an
  /// int64) and then `torch.randperm(n, generator=g)`, and a pass that runs to its end draws
  /// one more, unused permutation, as PyTorch's RandomSampler does; the order thus depends on
  /// the generator's state, not on `seed` or `set_epoch`. Copies of the loader share the generator.
  /// A prepared loader gives every process process 0's generator state at the start of each pass
  /// (Accelerate's synchronised generator, `AcceleratorOptions::rng_types` "generator"); restore
  /// its state yourself to resume a shuffled epoch. Not together with `seed`, and only with
  /// `shuffle` (accelerate::InvalidArgument).
  ACCELERATE_ARG(std::optional<at::Generator>, generator);
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
  /// Accelerate's `dispatch_batches`: true, process 0 reads whole batches and sends each
  /// process its slice (`DataLoaderDispatcher`); false, every process reads its own share
  /// (`BatchSamplerShard`, or `IterableDatasetShard` for an iterable data set). Unset (the
  /// default): dispatch iterable data sets and shard map-style ones, as Accelerate 1.15 does
  /// with its batches placed on the device. Dispatching needs `broadcast` and
  /// `broadcast_bytes` when there are several processes.
  ACCELERATE_ARG(std::optional<bool>, dispatch_batches);
  /// Dispatching: returns process 0's `tensor` on every process (a collective every process
  /// calls in turn; other processes pass a tensor of the same shape, dtype and device), e.g.
  /// `accelerate::broadcast(state, t, 0)`. `Accelerator::prepare` sets it (and the loader
  /// must then not be iterated after the Accelerator is gone).
  ACCELERATE_ARG(std::function<at::Tensor(at::Tensor)>, broadcast);
  /// Dispatching: returns process 0's `bytes` on every process, e.g.
  /// `accelerate::broadcast_bytes(state, bytes, 0)`; set by `Accelerator::prepare`.
  ACCELERATE_ARG(std::function<std::string(const std::string&)>, broadcast_bytes);
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

/// The batches that process `sharding.process_index()` gets from `batches`, exactly as
/// Accelerate's `BatchSamplerShard` over a batch sampler yielding `batches` whose `batch_size`
/// is `batch_size` (nullopt: None, batches of any length) and whose `drop_last` is
/// `drop_last`. With one process: `batches` unchanged. Throws accelerate::InvalidArgument for
/// a bad process index, and for `split_batches` without a batch size or with one that is not
/// a multiple of the number of processes.
///
/// Example:
///   auto b = accelerate::shard_batch_sampler({{0, 1}, {2, 3}, {4, 5}}, 2, false,
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // b == {{2, 3}, {0, 1}}: the last round completed from the start
std::vector<std::vector<int64_t>> shard_batch_sampler(
    const std::vector<std::vector<int64_t>>& batches, std::optional<int64_t> batch_size,
    bool drop_last, const ShardingOptions& sharding);

/// The samples that process `sharding.process_index()` reads from a stream yielding
/// `stream`, exactly as Accelerate's `IterableDatasetShard(stream, batch_size, drop_last,
/// num_processes, process_index, split_batches)` with the batch size and drop_last of
/// `batching`: of every buffer of batch_size × num_processes samples (batch_size with
/// split_batches) it takes its slice; the last incomplete buffer is dropped with drop_last,
/// else completed with the samples of the first buffer. With one process: `stream`, as
/// Accelerate leaves the data set alone. Throws accelerate::InvalidArgument as shard_batches.
///
/// Example:
///   std::vector<int64_t> stream(10);
///   std::iota(stream.begin(), stream.end(), 0);
///   auto mine = accelerate::shard_iterable(stream, accelerate::DataLoaderOptions().batch_size(2),
///       accelerate::ShardingOptions().num_processes(2).process_index(1));
///   // mine == {2, 3, 6, 7, 0, 1}
std::vector<int64_t> shard_iterable(const std::vector<int64_t>& stream,
                                    const DataLoaderOptions& batching,
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
/// Example:
///   struct Pair { at::Tensor a, b; };
///   template <> struct accelerate::Collate<Pair> {
///     static Pair collate(std::vector<Pair> xs) { ... stack the a's and the b's ... }
///   };
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

namespace detail {

/// "accelerate: DataLoader: dataset.get(<index>) failed", for errors of `get`.
std::string get_failed_message(int64_t index);

/// "dataset.get_items([3, 7, ...]) failed (sample indices 3, 7, ...)"; `call` names the
/// function ("get_items", or torch::data's "get_batch").
std::string get_items_failed_message(const std::vector<int64_t>& indices,
                                     const char* call = "get_items");

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

template <typename D, typename = void>
struct HasNext : std::false_type {};
template <typename D>
struct HasNext<
    D, std::void_t<decltype(std::declval<D&>().next().has_value()),
                   decltype(*std::declval<D&>().next()), decltype(std::declval<D&>().reset())>>
    : std::true_type {};
template <typename D, typename = void>
struct HasGet : std::false_type {};
template <typename D>
struct HasGet<D, std::void_t<decltype(std::declval<D&>().get(size_t{}))>> : std::true_type {};
template <typename D, typename = void>
struct HasSetEpoch : std::false_type {};
template <typename D>
struct HasSetEpoch<D, std::void_t<decltype(std::declval<D&>().set_epoch(int64_t{}))>>
    : std::true_type {};
template <typename C, typename B, typename = void>
struct HasTensors : std::false_type {};
template <typename C, typename B>
struct HasTensors<C, B,
                  std::void_t<decltype(C::to_tensors(std::declval<const B&>())),
                              decltype(C::from_tensors(std::declval<std::vector<at::Tensor>>()))>>
    : std::true_type {};

/// A torch::data batch data set: `get_batch(c10::ArrayRef<size_t>)` (e.g. a `MapDataset`
/// made by `.map(transform)`), which the loader uses when there is no `get(size_t)`.
template <typename D, typename = void>
struct HasGetBatch : std::false_type {};
template <typename D>
struct HasGetBatch<
    D, std::void_t<decltype(std::declval<D&>().get_batch(std::declval<c10::ArrayRef<size_t>>()))>>
    : std::true_type {};
/// What `get_batch` returns.
template <typename D>
using GetBatchResult =
    std::decay_t<decltype(std::declval<D&>().get_batch(std::declval<c10::ArrayRef<size_t>>()))>;

template <typename T>
struct IsVector : std::false_type {};
template <typename T, typename A>
struct IsVector<std::vector<T, A>> : std::true_type {};
/// The element type of a std::vector, else the type itself.
template <typename T>
struct ElementOr {
  using type = T;
};
template <typename T, typename A>
struct ElementOr<std::vector<T, A>> {
  using type = T;
};
template <typename T, typename = void>
struct IsOptionalLike : std::false_type {};
template <typename T>
struct IsOptionalLike<
    T, std::void_t<decltype(std::declval<T&>().has_value()), decltype(*std::declval<T&>())>>
    : std::true_type {};

/// How a map-style data set gives its samples: one by one (`get`), or a batch at a time
/// (`get_batch`, no `get`): a list of examples to collate, or one batch already made (a
/// torch::data `Stack`).
enum class Fetch { Sample, ExampleList, WholeBatch, Stream };
template <typename Dataset>
constexpr Fetch fetch_of() {
  if constexpr (HasGet<Dataset>::value) {
    return Fetch::Sample;
  } else if constexpr (HasGetBatch<Dataset>::value) {
    return IsVector<GetBatchResult<Dataset>>::value ? Fetch::ExampleList : Fetch::WholeBatch;
  } else {
    return Fetch::Stream;
  }
}

/// What a data set yields: `get(i)` of a map-style one, an element of `get_batch`'s list, the
/// batch `get_batch` makes, or `*next()` of an iterable one.
template <typename Dataset, typename = void>
struct ExampleOf {
  static_assert(HasGet<Dataset>::value || HasNext<Dataset>::value,
                "accelerate: DataLoader: a data set needs `get(size_t)` and `size()` "
                "(map-style), `get_batch(c10::ArrayRef<size_t>)` and `size()` (torch::data, "
                "e.g. after .map(...)), or `std::optional<Example> next()` and `void reset()` "
                "(iterable)");
  using type = void;
};
template <typename Dataset>
struct ExampleOf<Dataset, std::enable_if_t<HasGet<Dataset>::value>> {
  using type = std::decay_t<decltype(std::declval<Dataset&>().get(size_t{}))>;
};
template <typename Dataset>
struct ExampleOf<Dataset,
                 std::enable_if_t<!HasGet<Dataset>::value && HasGetBatch<Dataset>::value>> {
  static_assert(!IsOptionalLike<GetBatchResult<Dataset>>::value,
                "accelerate: DataLoader: get_batch returns an optional (a stateful torch::data "
                "data set, e.g. ChunkDataset): give the data set `std::optional<Example> next()` "
                "and `void reset()` instead (an iterable data set)");
  using type = typename ElementOr<GetBatchResult<Dataset>>::type;
};
template <typename Dataset>
struct ExampleOf<Dataset,
                 std::enable_if_t<!HasGet<Dataset>::value && !HasGetBatch<Dataset>::value &&
                                  HasNext<Dataset>::value>> {
  using type = std::decay_t<decltype(*std::declval<Dataset&>().next())>;
};

template <typename C, typename E, typename = void>
struct HasCollate : std::false_type {};
template <typename C, typename E>
struct HasCollate<C, E, std::void_t<decltype(C::collate(std::declval<std::vector<E>>()))>>
    : std::true_type {};
/// The batch a loader yields: what `Collate<Example>::collate` makes, or the batch a whole-batch
/// data set makes (with no collation, a placeholder: the DataLoader's static_assert speaks).
template <typename C, typename E, bool kWhole, typename = void>
struct BatchOf {
  using type = std::vector<E>;
};
template <typename C, typename E>
struct BatchOf<C, E, true, void> {
  using type = E;
};
template <typename C, typename E>
struct BatchOf<C, E, false, std::enable_if_t<HasCollate<C, E>::value>> {
  using type = decltype(C::collate(std::declval<std::vector<E>>()));
};

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

/// Cuts a stream of samples into batches: plain ones (`batch_size` each, the last one short
/// unless `drop_last`), or, with `shard`, this process's batch of every buffer as Accelerate's
/// `IterableDatasetShard` (see shard_iterable).
template <typename T>
class StreamBatcher {
 public:
  /// `pull` returns the next sample, nullopt at the end (then it is not called again).
  StreamBatcher(std::function<std::optional<T>()> pull, const DataLoaderOptions& batching,
                const ShardingOptions& sharding, bool shard)
      : pull_(std::move(pull)), drop_last_(batching.drop_last()), shard_(shard) {
    const int64_t B = batching.batch_size(), N = sharding.num_processes();
    const bool split = sharding.split_batches();
    real_ = !shard ? B : split ? B : B * N;
    per_ = !shard ? B : split ? B / N : B;
    start_ = !shard ? 0 : sharding.process_index() * per_;
  }
  /// This process's next batch, or nullopt at the end.
  std::optional<std::vector<T>> next() {
    if (done_) return std::nullopt;
    std::vector<T> buffer;
    buffer.reserve(static_cast<size_t>(real_));
    while (static_cast<int64_t>(buffer.size()) < real_) {
      std::optional<T> sample = pull_();
      if (!sample) break;
      buffer.push_back(std::move(*sample));
    }
    if (static_cast<int64_t>(buffer.size()) == real_) {
      if (shard_ && first_.empty()) first_ = buffer;
      return slice(std::move(buffer));
    }
    done_ = true;
    if (buffer.empty() || drop_last_) return std::nullopt;
    if (!shard_) return buffer;
    remainder_ = static_cast<int64_t>(buffer.size());
    const std::vector<T> first = first_.empty() ? buffer : first_;
    while (static_cast<int64_t>(buffer.size()) < real_)
      buffer.insert(buffer.end(), first.begin(), first.end());
    return slice(std::move(buffer));
  }
  /// Real samples of the completed last buffer, or -1 when none was completed.
  int64_t remainder() const { return remainder_; }

 private:
  std::vector<T> slice(std::vector<T> buffer) const {
    if (start_ == 0 && per_ == static_cast<int64_t>(buffer.size())) return buffer;
    return std::vector<T>(std::make_move_iterator(buffer.begin() + start_),
                          std::make_move_iterator(buffer.begin() + start_ + per_));
  }
  std::function<std::optional<T>()> pull_;
  bool drop_last_;
  bool shard_;
  int64_t real_ = 1, per_ = 1, start_ = 0;
  bool done_ = false;
  int64_t remainder_ = -1;
  std::vector<T> first_;
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
  /// Sets and validates the sharding (std::invalid_argument).
  void set_sharding(const ShardingOptions& sharding);
  /// Sets the skip of every pass (std::invalid_argument when negative).
  void set_skip_first(int64_t n);
  /// Stops the active pass, if any.
  void detach_pass();

 private:
  class ActivePass;  // src/data_loader_pass.cpp
  class StreamPass;  // src/data_loader_pass.cpp
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

  DataLoaderOptions options_;
  bool prepared_ = false;
  ShardingOptions sharding_;
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
///   accelerate::DataLoader<MyDataset> loader(MyDataset(), accelerate::DataLoaderOptions()
///       .batch_size(32).shuffle(true).seed(0));
///   for (int epoch = 0; epoch < 3; ++epoch)
///     for (auto& batch : loader) train_step(batch.data, batch.target);
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
///   accelerate::DataLoader<Counter> stream(Counter(),
///   accelerate::DataLoaderOptions().batch_size(4)); for (auto& batch : stream) {}  // [4, 1], [4,
///   1], [2, 1]
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
