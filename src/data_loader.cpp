#include "accelerate/data_loader.h"
#include "accelerate/errors.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/index_select.h>

#include <numeric>

#include "helpers.h"

namespace accelerate {

namespace {

void check_batch_size(const DataLoaderOptions& b) {
  if (b.batch_size() < 1)
    throw InvalidArgument("accelerate: DataLoader: batch_size must be >= 1, got " +
                          std::to_string(b.batch_size()));
}

void check(const DataLoaderOptions& b, const ShardingOptions& s) {
  check_batch_size(b);
  if (s.num_processes() < 1)
    throw InvalidArgument("accelerate: DataLoader: num_processes must be >= 1, got " +
                          std::to_string(s.num_processes()));
  if (s.process_index() < 0 || s.process_index() >= s.num_processes())
    throw InvalidArgument("accelerate: DataLoader: process_index " +
                          std::to_string(s.process_index()) + " is not in [0, " +
                          std::to_string(s.num_processes()) + ")");
  if (s.split_batches() && b.batch_size() % s.num_processes() != 0)
    throw InvalidArgument("accelerate: DataLoader: with split_batches, the batch size (" +
                          std::to_string(b.batch_size()) +
                          ") must be a round multiple of the number of processes (" +
                          std::to_string(s.num_processes()) + ")");
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

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

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  if (n < 0) throw InvalidArgument("accelerate: shuffled_indices: negative size");
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong)).contiguous();
  const int64_t* data = perm.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + n);
}

namespace detail {

std::string get_items_failed_message(const std::vector<int64_t>& indices) {
  std::string list;
  for (size_t i = 0; i < indices.size() && i < 8; ++i)
    list += (i ? ", " : "") + std::to_string(indices[i]);
  if (indices.size() > 8) list += ", ...";
  return "accelerate: DataLoader: dataset.get_items([" + list + "]) failed (sample indices " +
         list + ")";
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
}

DataLoaderBase::~DataLoaderBase() { detach_pass(); }

int64_t DataLoaderBase::total_batch_size() const {
  if (!prepared_ || sharding_.split_batches()) return options_.batch_size();
  return options_.batch_size() * sharding_.num_processes();
}

int64_t DataLoaderBase::size() const {
  return std::max<int64_t>(0, shard_num_batches(dataset_size(), options_, sharding_) - skip_first_);
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
  check(options_, sharding);
  sharding_ = sharding;
  prepared_ = true;
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

DataLoaderBase::PassPlan DataLoaderBase::begin_pass() {
  if (prepared_ && sharding_.on_pass_begin()) sharding_.on_pass_begin()();
  const int64_t n = dataset_size();
  std::vector<int64_t> order;
  if (options_.shuffle()) {
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
  PassPlan plan;
  plan.batches = shard_batches(order, options_, sharding_);
  plan.first = std::min<int64_t>(std::max(skip_first_, resume_skip_.value_or(0)),
                                 static_cast<int64_t>(plan.batches.size()));
  resume_skip_.reset();
  plan.batches.erase(plan.batches.begin(), plan.batches.begin() + plan.first);
  batches_yielded_ = plan.first;
  if (prepared_ && sharding_.gradient_state()) {
    int64_t remainder = options_.drop_last() ? -1 : n % total_batch_size();
    sharding_.gradient_state()->loader_begin(this, remainder);
  }
  return plan;
}

void DataLoaderBase::on_yield(int64_t index, bool last) {
  batches_yielded_ = index + 1;
  if (last && prepared_ && sharding_.gradient_state())
    sharding_.gradient_state()->loader_at_end(this);
}

void DataLoaderBase::end_pass(bool complete) {
  if (prepared_ && sharding_.gradient_state()) sharding_.gradient_state()->loader_finish(this);
  if (complete) {
    ++epoch_;
    batches_yielded_ = 0;
  }
}

}  // namespace accelerate
