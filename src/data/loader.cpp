#include "accelerate/data/loader.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/randperm.h>

#include <numeric>

#include "accelerate/data/detail/share_rule.h"
#include "accelerate/errors.h"
#include "live_context.h"
#include "sharding_detail.h"

namespace accelerate {

using detail::check_batch_sampler_split;
using detail::check_batch_size;
using detail::check_sharding;

namespace {

void check_indices(const std::vector<int64_t>& indices, int64_t n, const char* what) {
  for (int64_t i : indices)
    if (i < 0 || i >= n)
      throw InvalidArgument(std::string("accelerate: DataLoader: the ") + what + " gave index " +
                            std::to_string(i) + ", not in [0, " + std::to_string(n) +
                            ") (the data set's size)");
}

}  // namespace

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
  context();  // throws when the Accelerator that prepared this loader is gone
  if (iterable())
    throw InvalidArgument(
        "accelerate: DataLoader::size: a loader over an iterable data set has no length");
  // A dispatched pass yields one batch per step of num_processes plain batches (one with
  // split_batches), Accelerate's DataLoaderDispatcher.__len__; drop_last drops an incomplete
  // step.
  auto dispatched_steps = [&](int64_t plain_batches, bool drop_last) {
    detail::ShareRule steps;
    steps.step = sharding_.split_batches() ? 1 : sharding_.num_processes();
    steps.drop_last = drop_last && !sharding_.split_batches();
    steps.pad = detail::Pad::Step;
    return detail::count_shares(plain_batches, steps);
  };
  const ShardingOptions none;
  int64_t count;
  if (options_.batch_sampler()) {
    auto& sampler = *options_.batch_sampler();
    const auto batches = sampler.batches(epoch_);
    if (dispatches())
      count = dispatched_steps(static_cast<int64_t>(batches.size()), sampler.drop_last());
    else
      count = static_cast<int64_t>(shard_batch_sampler(batches, sampler.batch_size(),
                                                       sampler.drop_last(),
                                                       prepared_ ? sharding_ : none)
                                       .size());
  } else {
    const int64_t n = options_.sampler()
                          ? static_cast<int64_t>(options_.sampler()->indices(epoch_).size())
                          : dataset_size();
    if (dispatches())
      count = dispatched_steps(shard_num_batches(n, options_, none), options_.drop_last());
    else
      count = shard_num_batches(n, options_, sharding_);
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
  context();  // throws when the Accelerator that prepared this loader is gone
  return {{"epoch", epoch_}, {"batches", batches_yielded_}};
}

void DataLoaderBase::load_state_dict(const std::map<std::string, int64_t>& state) {
  context();  // throws when the Accelerator that prepared this loader is gone
  auto get = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end())
      throw InvalidArgument(std::string("accelerate: DataLoader::load_state_dict: no \"") + key +
                            "\"");
    return it->second;
  };
  resume_from({get("epoch"), get("batches")});
}

void DataLoaderBase::set_sharding(const ShardingOptions& sharding,
                                  std::shared_ptr<DataContext> context) {
  if (options_.batch_sampler()) {
    check_sharding(sharding);
    check_batch_sampler_split(options_.batch_sampler()->batch_size(), sharding);
  } else {
    detail::check_batching(options_, sharding);
  }
  const bool was_prepared = prepared_;
  const ShardingOptions before = sharding_;
  sharding_ = sharding;
  prepared_ = true;
  if (dispatches() && !(context && context->has_collectives())) {
    sharding_ = before;
    prepared_ = was_prepared;
    throw InvalidArgument(
        "accelerate: DataLoader: dispatch_batches with several processes needs collectives: "
        "give shard() a DataContext made from a State (Accelerator::prepare gives its own)");
  }
  has_context_ = context != nullptr;
  context_ = std::move(context);
}

// Note [a loader outliving its Accelerator]: a prepared loader calls its Accelerator's State
// (collectives, random states) and GradientState while it runs, but the user may keep it after
// the Accelerator is gone. The loader holds the Accelerator's DataContext weakly, so that such
// a loader throws here instead of touching freed memory; a destructor (ending an abandoned
// pass) quietly skips the gradient state instead.
std::shared_ptr<DataContext> DataLoaderBase::context() const {
  if (!has_context_) return nullptr;
  return detail::live_context(context_);
}

std::shared_ptr<GradientState> DataLoaderBase::gradient_state_if_alive() const {
  auto context = context_.lock();
  return context ? context->gradient_state() : nullptr;
}

void DataLoaderBase::set_even_batches(bool even_batches) {
  if (!prepared_)
    throw InvalidArgument(
        "accelerate: set_even_batches: the loader is not prepared (even_batches is part of "
        "the sharding that prepare or shard gives)");
  ShardingOptions sharding = sharding_;
  sharding.even_batches(even_batches);
  set_sharding(sharding, has_context_ ? context() : nullptr);
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
    return detail::shard_batch_sampler_with_remainder(batches, sampler.batch_size(),
                                                      sampler.drop_last(), s, remainder);
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
  const auto context = prepared_ ? this->context() : nullptr;
  if (context) context->begin_pass(options_.generator());
  PassPlan plan;
  int64_t remainder = -1;
  plan.batches = epoch_batches(false, remainder);
  plan.first = std::min<int64_t>(std::max(skip_first_, resume_skip_.value_or(0)),
                                 static_cast<int64_t>(plan.batches.size()));
  resume_skip_.reset();
  plan.batches.erase(plan.batches.begin(), plan.batches.begin() + plan.first);
  batches_yielded_ = plan.first;
  if (context && context->gradient_state())
    context->gradient_state()->loader_begin(this, remainder);
  return plan;
}

int64_t DataLoaderBase::begin_stream_pass() {
  const auto context = prepared_ ? this->context() : nullptr;
  if (context) context->begin_pass(options_.generator());
  const int64_t first = std::max(skip_first_, resume_skip_.value_or(0));
  resume_skip_.reset();
  batches_yielded_ = first;
  // The remainder is known at the end of the stream (GradientState::loader_remainder).
  if (context && context->gradient_state()) context->gradient_state()->loader_begin(this, -1);
  return first;
}

void DataLoaderBase::on_yield(int64_t index, bool last) {
  // Every batch asks: a loop must not go on after the Accelerator is gone.
  const auto context = prepared_ ? this->context() : nullptr;
  batches_yielded_ = index + 1;
  if (last && context && context->gradient_state()) context->gradient_state()->loader_at_end(this);
}

void DataLoaderBase::on_stream_end(int64_t remainder) {
  if (auto gradient_state = prepared_ && has_context_ ? context()->gradient_state() : nullptr)
    gradient_state->loader_remainder(this, remainder);
}

void DataLoaderBase::end_pass(bool complete) {
  if (auto gradient_state = prepared_ ? gradient_state_if_alive() : nullptr)
    gradient_state->loader_finish(this);
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
