#include "accelerate/data_loader.h"
#include "accelerate/errors.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/randperm.h>

#include <numeric>

#include "helpers.h"

namespace accelerate {

namespace {

void check_batch_size(const DataLoaderOptions& b) {
  if (b.batch_size() < 1)
    throw InvalidArgument("accelerate: DataLoader: batch_size must be >= 1, got " +
                          std::to_string(b.batch_size()));
}

void check_sharding(const ShardingOptions& s) {
  if (s.num_processes() < 1)
    throw InvalidArgument("accelerate: DataLoader: num_processes must be >= 1, got " +
                          std::to_string(s.num_processes()));
  if (s.process_index() < 0 || s.process_index() >= s.num_processes())
    throw InvalidArgument("accelerate: DataLoader: process_index " +
                          std::to_string(s.process_index()) + " is not in [0, " +
                          std::to_string(s.num_processes()) + ")");
}

void check(const DataLoaderOptions& b, const ShardingOptions& s) {
  check_batch_size(b);
  check_sharding(s);
  if (s.split_batches() && b.batch_size() % s.num_processes() != 0)
    throw InvalidArgument("accelerate: DataLoader: with split_batches, the batch size (" +
                          std::to_string(b.batch_size()) +
                          ") must be a round multiple of the number of processes (" +
                          std::to_string(s.num_processes()) + ")");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_batch_sampler_split(std::optional<int64_t> batch_size, const ShardingOptions& s) {
  if (!s.split_batches() || s.num_processes() == 1) return;
  if (!batch_size)
    throw InvalidArgument(
        "accelerate: DataLoader: split_batches needs a batch size, and the batch sampler's "
        "batch_size() is nullopt");
  if (*batch_size < 1 || *batch_size % s.num_processes() != 0)
    throw InvalidArgument("accelerate: DataLoader: with split_batches, the batch size (" +
                          std::to_string(*batch_size) +
                          ") must be a round multiple of the number of processes (" +
                          std::to_string(s.num_processes()) + ")");
}

using Batches = std::vector<std::vector<int64_t>>;

// A slice [begin, end) of `v`, clamped as Python's v[begin:end].
std::vector<int64_t> py_slice(const std::vector<int64_t>& v, int64_t begin, int64_t end) {
  const int64_t n = static_cast<int64_t>(v.size());
  begin = std::clamp<int64_t>(begin, 0, n);
  end = std::clamp<int64_t>(end, begin, n);
  return std::vector<int64_t>(v.begin() + begin, v.begin() + end);
}

// Accelerate's BatchSamplerShard, step for step, with the number of real (not wrapped-around)
// samples at the front of each batch it yields.
struct ShardedBatches {
  Batches batches;
  std::vector<int64_t> real;
  void emit(std::vector<int64_t> batch, int64_t real_count) {
    real.push_back(std::min<int64_t>(real_count, static_cast<int64_t>(batch.size())));
    batches.push_back(std::move(batch));
  }
};

ShardedBatches batch_sampler_shard(const Batches& in, std::optional<int64_t> bs, bool drop_last,
                                   const ShardingOptions& s) {
  const int64_t N = s.num_processes(), p = s.process_index(), K = static_cast<int64_t>(in.size());
  ShardedBatches out;
  auto size = [](const std::vector<int64_t>& b) { return static_cast<int64_t>(b.size()); };
  if (s.split_batches()) {
    const int64_t bl = *bs / N;
    std::vector<int64_t> initial;
    for (int64_t idx = 0; idx < K; ++idx) {
      if (idx == 0) initial = in[0];
      if (size(in[idx]) == *bs) out.emit(py_slice(in[idx], bl * p, bl * (p + 1)), bl);
    }
    if (!drop_last && !initial.empty() && size(in[K - 1]) < *bs) {
      const auto& last = in[K - 1];
      const int64_t real = std::clamp<int64_t>(size(last) - bl * p, 0, bl);
      if (!s.even_batches()) {
        if (size(last) > bl * p) out.emit(py_slice(last, bl * p, bl * (p + 1)), real);
      } else {
        while (size(initial) < *bs) initial.insert(initial.end(), initial.begin(), initial.end());
        std::vector<int64_t> batch = last;
        batch.insert(batch.end(), initial.begin(), initial.end());
        out.emit(py_slice(batch, bl * p, bl * (p + 1)), real);
      }
    }
    return out;
  }
  std::vector<int64_t> initial_flat;  // with a batch size
  Batches initial_batches;            // without one
  std::optional<std::vector<int64_t>> to_yield;
  for (int64_t idx = 0; idx < K; ++idx) {
    const auto& batch = in[idx];
    if (!drop_last && idx < N) {
      if (bs)
        initial_flat.insert(initial_flat.end(), batch.begin(), batch.end());
      else
        initial_batches.push_back(batch);
    }
    if (idx % N == p) to_yield = batch;
    if (idx % N == N - 1 && (!bs || size(batch) == *bs)) {
      if (to_yield) out.emit(*to_yield, size(*to_yield));
      to_yield.reset();
    }
  }
  const bool any = bs ? !initial_flat.empty() : !initial_batches.empty();
  if (drop_last || !any) return out;
  const bool pending = to_yield && !to_yield->empty();  // Python's truthiness of a list
  if (!s.even_batches()) {
    if (pending) out.emit(*to_yield, size(*to_yield));
    return out;
  }
  if (pending && (!bs || size(*to_yield) == *bs)) out.emit(*to_yield, size(*to_yield));
  if (bs) {
    while (size(initial_flat) < N * *bs)
      initial_flat.insert(initial_flat.end(), initial_flat.begin(), initial_flat.end());
  } else {
    while (static_cast<int64_t>(initial_batches.size()) < N)
      initial_batches.insert(initial_batches.end(), initial_batches.begin(), initial_batches.end());
  }
  int64_t idx = K - 1;
  std::vector<int64_t> batch = in[K - 1];
  if (!bs || size(batch) == *bs) {
    batch.clear();
    idx += 1;
  }
  int64_t cycle = 0;
  while (idx % N != 0 || !batch.empty()) {
    if (!bs) {
      batch = initial_batches[static_cast<size_t>(cycle)];
      if (idx % N == p) out.emit(batch, 0);
      cycle += 1;
    } else {
      const int64_t real = size(batch);
      const int64_t end = cycle + *bs - size(batch);
      auto more = py_slice(initial_flat, cycle, end);
      batch.insert(batch.end(), more.begin(), more.end());
      if (idx % N == p) out.emit(batch, real);
      cycle = end;
    }
    batch.clear();
    idx += 1;
  }
  return out;
}

// The real samples of the last step over all processes, when that step was completed with
// repeated samples, else -1.
int64_t batch_sampler_remainder(const Batches& in, std::optional<int64_t> bs, bool drop_last,
                                const ShardingOptions& s) {
  if (drop_last || in.empty() || !s.even_batches()) return -1;
  int64_t real = 0, total = 0;
  for (int q = 0; q < s.num_processes(); ++q) {
    auto mine = batch_sampler_shard(in, bs, drop_last, ShardingOptions(s).process_index(q));
    if (mine.batches.empty()) continue;
    real += mine.real.back();
    total += static_cast<int64_t>(mine.batches.back().size());
  }
  return real < total ? real : -1;
}

void check_indices(const std::vector<int64_t>& indices, int64_t n, const char* what) {
  for (int64_t i : indices)
    if (i < 0 || i >= n)
      throw InvalidArgument(std::string("accelerate: DataLoader: the ") + what + " gave index " +
                            std::to_string(i) + ", not in [0, " + std::to_string(n) +
                            ") (the data set's size)");
}

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

// Every layout below reads a "stream": the order itself, then, where even_batches pads the
// end, the first `cycle` samples of the order repeated. Accelerate pads from the samples of
// the first batch (split_batches) or of the first num_processes batches (otherwise),
// doubled until long enough, which is this cycle.
std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order,
                                                const DataLoaderOptions& b,
                                                const ShardingOptions& s) {
  check(b, s);
  const int64_t n = static_cast<int64_t>(order.size());
  const int64_t B = b.batch_size(), N = s.num_processes(), p = s.process_index();
  std::vector<std::vector<int64_t>> out;
  if (n == 0) return out;
  auto take = [&](int64_t start, int64_t length, int64_t cycle) {
    std::vector<int64_t> batch;
    batch.reserve(static_cast<size_t>(length));
    for (int64_t s = start; s < start + length; ++s)
      batch.push_back(order[static_cast<size_t>(s < n ? s : (s - n) % cycle)]);
    out.push_back(std::move(batch));
  };
  const int64_t full = n / B, rest = n % B;
  if (N == 1) {  // no sharding, as Accelerate with one process
    for (int64_t i = 0; i < full; ++i) take(i * B, B, n);
    if (rest > 0 && !b.drop_last()) take(full * B, rest, n);
  } else if (s.split_batches()) {
    const int64_t slice = B / N;
    for (int64_t i = 0; i < full; ++i) take(i * B + p * slice, slice, n);
    if (rest > 0 && !b.drop_last()) {
      if (s.even_batches())
        take(full * B + p * slice, slice, std::min(n, B));
      else if (rest > p * slice)
        take(full * B + p * slice, std::min(slice, rest - p * slice), n);
    }
  } else if (b.drop_last()) {  // only complete rounds of full batches
    for (int64_t round = 0; round < full / N; ++round) take((round * N + p) * B, B, n);
  } else if (!s.even_batches()) {  // batch i to process i mod N, the last one short
    const int64_t count = full + (rest > 0 ? 1 : 0);
    for (int64_t i = p; i < count; i += N) take(i * B, std::min(B, n - i * B), n);
  } else {  // padded to whole rounds of full batches
    const int64_t count = ceil_div(n, N * B) * N;
    for (int64_t i = p; i < count; i += N) take(i * B, B, std::min(n, N * B));
  }
  return out;
}

int64_t shard_num_batches(int64_t n, const DataLoaderOptions& b, const ShardingOptions& s) {
  check(b, s);
  if (n < 0) throw InvalidArgument("accelerate: DataLoader: negative data set size");
  if (n == 0) return 0;
  const int64_t B = b.batch_size(), N = s.num_processes(), p = s.process_index();
  const int64_t full = n / B, rest = n % B;
  if (N == 1) return full + (rest > 0 && !b.drop_last() ? 1 : 0);
  if (s.split_batches()) {
    bool extra = rest > 0 && !b.drop_last() && (s.even_batches() || rest > p * (B / N));
    return full + (extra ? 1 : 0);
  }
  if (b.drop_last()) return full / N;
  if (!s.even_batches()) {
    const int64_t count = full + (rest > 0 ? 1 : 0);
    return count > p ? ceil_div(count - p, N) : 0;
  }
  return ceil_div(n, N * B);
}

std::vector<std::vector<int64_t>> shard_batch_sampler(
    const std::vector<std::vector<int64_t>>& batches, std::optional<int64_t> batch_size,
    bool drop_last, const ShardingOptions& sharding) {
  check_sharding(sharding);
  if (batch_size && *batch_size < 1)
    throw InvalidArgument(
        "accelerate: DataLoader: the batch sampler's batch_size() must be >= 1, got " +
        std::to_string(*batch_size));
  check_batch_sampler_split(batch_size, sharding);
  if (sharding.num_processes() == 1) return batches;
  return batch_sampler_shard(batches, batch_size, drop_last, sharding).batches;
}

std::vector<int64_t> shard_iterable(const std::vector<int64_t>& stream,
                                    const DataLoaderOptions& batching,
                                    const ShardingOptions& sharding) {
  check(batching, sharding);
  if (sharding.num_processes() == 1) return stream;
  size_t next = 0;
  detail::StreamBatcher<int64_t> batcher(
      [&]() -> std::optional<int64_t> {
        if (next == stream.size()) return std::nullopt;
        return stream[next++];
      },
      batching, sharding, true);
  std::vector<int64_t> out;
  while (auto batch = batcher.next()) out.insert(out.end(), batch->begin(), batch->end());
  return out;
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  if (n < 0) throw InvalidArgument("accelerate: shuffled_indices: negative size");
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong)).contiguous();
  const int64_t* data = perm.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + n);
}

namespace detail {

std::string get_items_failed_message(const std::vector<int64_t>& indices, const char* call) {
  std::string list;
  for (size_t i = 0; i < indices.size() && i < 8; ++i)
    list += (i ? ", " : "") + std::to_string(indices[i]);
  if (indices.size() > 8) list += ", ...";
  return "accelerate: DataLoader: dataset." + std::string(call) + "([" + list +
         "]) failed (sample indices " + list + ")";
}

std::string get_failed_message(int64_t index) {
  return "accelerate: DataLoader: dataset.get(" + std::to_string(index) +
         ") failed (sample index " + std::to_string(index) + ")";
}

}  // namespace detail

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

DataLoaderBase::DataLoaderBase(DataLoaderOptions options) : options_(std::move(options)) {
  check_batch_size(options_);
  if (options_.num_workers() < 0)
    throw InvalidArgument("accelerate: DataLoader: num_workers must be >= 0, got " +
                          std::to_string(options_.num_workers()));
  // PyTorch's DataLoader refuses the same combinations.
  if (options_.batch_sampler()) {
    if (options_.batch_size() != 1 || options_.shuffle() || options_.sampler() ||
        options_.drop_last())
      throw InvalidArgument(
          "accelerate: DataLoader: batch_sampler option is mutually exclusive with batch_size, "
          "shuffle, sampler, and drop_last (the batch sampler's batch_size() and drop_last() "
          "count)");
    if (auto b = options_.batch_sampler()->batch_size(); b && *b < 1)
      throw InvalidArgument(
          "accelerate: DataLoader: the batch sampler's batch_size() must be >= 1, got " +
          std::to_string(*b));
  }
  if (options_.sampler() && options_.shuffle())
    throw InvalidArgument(
        "accelerate: DataLoader: sampler option is mutually exclusive with shuffle");
  if (options_.generator()) {
    if (!options_.shuffle())
      throw InvalidArgument(
          "accelerate: DataLoader: generator is used to shuffle; set shuffle(true) with it (a "
          "sampler draws its own random numbers)");
    if (options_.seed())
      throw InvalidArgument(
          "accelerate: DataLoader: generator and seed are mutually exclusive (the generator's "
          "state decides the order)");
    if (!options_.generator()->defined())
      throw InvalidArgument("accelerate: DataLoader: generator is an undefined at::Generator");
  }
}

void DataLoaderBase::check_iterable_options() const {
  auto refuse = [](const char* what) {
    throw InvalidArgument(
        std::string("accelerate: DataLoader: an iterable data set comes in its own order: ") +
        what + " is not allowed with it (as PyTorch's DataLoader with an IterableDataset)");
  };
  if (options_.shuffle()) refuse("shuffle");
  if (options_.sampler()) refuse("sampler");
  if (options_.batch_sampler()) refuse("batch_sampler");
  if (options_.generator()) refuse("generator");
  if (options_.seed()) refuse("seed");
  if (options_.num_workers() != 0)
    throw InvalidArgument(
        "accelerate: DataLoader: an iterable data set is read in the loop's thread; "
        "num_workers must be 0, got " +
        std::to_string(options_.num_workers()));
}

bool DataLoaderBase::dispatches() const {
  if (!prepared_ || sharding_.num_processes() == 1) return false;
  return sharding_.dispatch_batches().value_or(iterable());
}

DataLoaderBase::~DataLoaderBase() { detach_pass(); }

int64_t DataLoaderBase::total_batch_size() const {
  int64_t batch_size = options_.batch_size();
  if (options_.batch_sampler()) {
    auto b = options_.batch_sampler()->batch_size();
    if (!b)
      throw InvalidArgument(
          "accelerate: DataLoader::total_batch_size: the batch sampler has no batch_size()");
    batch_size = *b;
  }
  if (!prepared_ || sharding_.split_batches()) return batch_size;
  return batch_size * sharding_.num_processes();
}

int64_t DataLoaderBase::size() const {
  if (iterable())
    throw InvalidArgument(
        "accelerate: DataLoader::size: a loader over an iterable data set has no length");
  int64_t count;
  const ShardingOptions none;
  if (options_.batch_sampler()) {
    auto& sampler = *options_.batch_sampler();
    const auto batches = sampler.batches(epoch_);
    const auto& s = prepared_ ? sharding_ : none;
    if (dispatches()) {
      count = static_cast<int64_t>(batches.size());  // Accelerate's DataLoaderDispatcher.__len__
      if (!s.split_batches())
        count =
            sampler.drop_last() ? count / s.num_processes() : ceil_div(count, s.num_processes());
    } else {
      count = static_cast<int64_t>(
          shard_batch_sampler(batches, sampler.batch_size(), sampler.drop_last(), s).size());
    }
  } else {
    const int64_t n = options_.sampler()
                          ? static_cast<int64_t>(options_.sampler()->indices(epoch_).size())
                          : dataset_size();
    if (dispatches()) {
      const int64_t whole = shard_num_batches(n, options_, none);
      count = sharding_.split_batches() ? whole
              : options_.drop_last()    ? whole / sharding_.num_processes()
                                        : ceil_div(whole, sharding_.num_processes());
    } else {
      count = shard_num_batches(n, options_, sharding_);
    }
  }
  return std::max<int64_t>(0, count - skip_first_);
}

void DataLoaderBase::set_epoch(int64_t epoch) {
  if (epoch != epoch_) {
    resume_skip_.reset();
    batches_yielded_ = 0;
  }
  epoch_ = epoch;
}

void DataLoaderBase::resume_from(LoaderPosition position) {
  if (position.batches < 0)
    throw InvalidArgument("accelerate: DataLoader::resume_from: negative batch count " +
                          std::to_string(position.batches));
  epoch_ = position.epoch;
  resume_skip_ = position.batches;
  batches_yielded_ = position.batches;
}

std::map<std::string, int64_t> DataLoaderBase::state_dict() const {
  return {{"epoch", epoch_}, {"batches", batches_yielded_}};
}

void DataLoaderBase::load_state_dict(const std::map<std::string, int64_t>& state) {
  auto get = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end())
      throw InvalidArgument(std::string("accelerate: DataLoader::load_state_dict: no \"") + key +
                            "\"");
    return it->second;
  };
  resume_from({get("epoch"), get("batches")});
}

void DataLoaderBase::set_sharding(const ShardingOptions& sharding) {
  if (options_.batch_sampler()) {
    check_sharding(sharding);
    check_batch_sampler_split(options_.batch_sampler()->batch_size(), sharding);
  } else {
    check(options_, sharding);
  }
  const bool was_prepared = prepared_;
  const ShardingOptions before = sharding_;
  sharding_ = sharding;
  prepared_ = true;
  if (dispatches() && (!sharding_.broadcast() || !sharding_.broadcast_bytes())) {
    sharding_ = before;
    prepared_ = was_prepared;
    throw InvalidArgument(
        "accelerate: DataLoader: dispatch_batches with several processes needs "
        "ShardingOptions::broadcast and broadcast_bytes (Accelerator::prepare sets them)");
  }
}

void DataLoaderBase::set_even_batches(bool even_batches) {
  if (!prepared_)
    throw InvalidArgument(
        "accelerate: set_even_batches: the loader is not prepared (even_batches is part of "
        "the sharding that prepare or shard gives)");
  ShardingOptions sharding = sharding_;
  sharding.even_batches(even_batches);
  set_sharding(sharding);
}

void DataLoaderBase::set_skip_first(int64_t n) {
  if (n < 0)
    throw InvalidArgument("accelerate: skip_first_batches: negative count " + std::to_string(n));
  skip_first_ = n;
}

void DataLoaderBase::detach_pass() {
  if (auto pass = active_.pass.lock()) pass->detach();
  active_.pass.reset();
}

std::vector<std::vector<int64_t>> DataLoaderBase::epoch_batches(bool plain, int64_t& remainder) {
  const ShardingOptions none;
  const ShardingOptions& s = plain || !prepared_ ? none : sharding_;
  const int64_t n = dataset_size();
  if (options_.batch_sampler()) {
    auto& sampler = *options_.batch_sampler();
    auto batches = sampler.batches(epoch_);
    for (const auto& b : batches) check_indices(b, n, "batch sampler");
    remainder = s.num_processes() == 1 ? -1
                                       : batch_sampler_remainder(batches, sampler.batch_size(),
                                                                 sampler.drop_last(), s);
    if (s.num_processes() == 1) return batches;
    return batch_sampler_shard(batches, sampler.batch_size(), sampler.drop_last(), s).batches;
  }
  std::vector<int64_t> order;
  if (options_.sampler()) {
    order = options_.sampler()->indices(epoch_);
    check_indices(order, n, "sampler");
  } else if (options_.shuffle() && options_.generator()) {
    at::Generator generator = *options_.generator();
    // As PyTorch's DataLoader: each iterator first draws its base seed from the generator
    // (`_BaseDataLoaderIter._base_seed`), then RandomSampler draws the permutation.
    at::empty({}, at::kLong).random_(generator);
    at::Tensor perm = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong)).contiguous();
    order.assign(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n);
    generator_pass_ = true;
  } else if (options_.shuffle()) {
    uint64_t seed;
    if (options_.seed()) {
      seed = *options_.seed();
    } else if (prepared_ && sharding_.seed()) {
      seed = *sharding_.seed();
    } else {
      if (!default_seed_) default_seed_ = at::detail::getDefaultCPUGenerator().current_seed();
      seed = *default_seed_;
    }
    order = shuffled_indices(n, seed + static_cast<uint64_t>(epoch_));
  } else {
    order.resize(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
  }
  // The samples actually visited, which a sampler may make fewer or more than the data set.
  remainder = options_.drop_last() ? -1 : static_cast<int64_t>(order.size()) % total_batch_size();
  return shard_batches(order, options_, s);
}

DataLoaderBase::PassPlan DataLoaderBase::begin_pass() {
  if (prepared_ && sharding_.on_pass_begin()) sharding_.on_pass_begin()();
  PassPlan plan;
  int64_t remainder = -1;
  plan.batches = epoch_batches(false, remainder);
  plan.first = std::min<int64_t>(std::max(skip_first_, resume_skip_.value_or(0)),
                                 static_cast<int64_t>(plan.batches.size()));
  resume_skip_.reset();
  plan.batches.erase(plan.batches.begin(), plan.batches.begin() + plan.first);
  batches_yielded_ = plan.first;
  if (prepared_ && sharding_.gradient_state())
    sharding_.gradient_state()->loader_begin(this, remainder);
  return plan;
}

int64_t DataLoaderBase::begin_stream_pass() {
  if (prepared_ && sharding_.on_pass_begin()) sharding_.on_pass_begin()();
  const int64_t first = std::max(skip_first_, resume_skip_.value_or(0));
  resume_skip_.reset();
  batches_yielded_ = first;
  // The remainder is known at the end of the stream (GradientState::loader_remainder).
  if (prepared_ && sharding_.gradient_state()) sharding_.gradient_state()->loader_begin(this, -1);
  return first;
}

void DataLoaderBase::on_yield(int64_t index, bool last) {
  batches_yielded_ = index + 1;
  if (last && prepared_ && sharding_.gradient_state())
    sharding_.gradient_state()->loader_at_end(this);
}

void DataLoaderBase::on_stream_end(int64_t remainder) {
  if (prepared_ && sharding_.gradient_state())
    sharding_.gradient_state()->loader_remainder(this, remainder);
}

void DataLoaderBase::end_pass(bool complete) {
  if (prepared_ && sharding_.gradient_state()) sharding_.gradient_state()->loader_finish(this);
  if (complete && generator_pass_) {
    // PyTorch's RandomSampler, once its permutation is used up, still evaluates
    // `torch.randperm(n, generator=generator).tolist()[:num_samples % n]`: a pass that runs to
    // its end draws a second permutation it does not use, and the next pass starts after it.
    at::randperm(dataset_size(), *options_.generator(), at::TensorOptions().dtype(at::kLong));
  }
  generator_pass_ = false;
  if (complete) {
    ++epoch_;
    batches_yielded_ = 0;
  }
}

}  // namespace accelerate
