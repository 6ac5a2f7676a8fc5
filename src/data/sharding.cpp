#include "accelerate/data/sharding.h"

#include <algorithm>

#include "accelerate/data/detail/share_rule.h"
#include "accelerate/data/detail/stream_batcher.h"
#include "accelerate/errors.h"
#include "sharding_detail.h"

namespace accelerate {

namespace detail {

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

void check_batching(const DataLoaderOptions& b, const ShardingOptions& s) {
  check_batch_size(b);
  check_sharding(s);
  if (s.split_batches() && b.batch_size() % s.num_processes() != 0)
    throw InvalidArgument("accelerate: DataLoader: with split_batches, the batch size (" +
                          std::to_string(b.batch_size()) +
                          ") must be a round multiple of the number of processes (" +
                          std::to_string(s.num_processes()) + ")");
}

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

namespace {

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

}  // namespace

Batches shard_batch_sampler_with_remainder(const Batches& batches,
                                           std::optional<int64_t> batch_size, bool drop_last,
                                           const ShardingOptions& sharding, int64_t& remainder) {
  if (sharding.num_processes() == 1) {
    remainder = -1;
    return batches;
  }
  remainder = batch_sampler_remainder(batches, batch_size, drop_last, sharding);
  return batch_sampler_shard(batches, batch_size, drop_last, sharding).batches;
}

Share share_of_step(const ShareRule& rule, int64_t real, bool last) {
  if (real <= 0) return {};
  const int64_t p = rule.process_index;
  if (rule.pad == Pad::Rows) {  // DataLoaderDispatcher: rows split evenly, the last step padded
    int64_t per = real / rule.num_processes;
    int64_t padded = 0;
    if (last && !rule.drop_last && real % rule.num_processes != 0) {
      per += 1;
      padded = per * rule.num_processes - real;
    }
    return {p * per, per, padded};
  }
  const int64_t begin = p * rule.per;
  if (real >= rule.step) return {begin, rule.per, 0};
  if (rule.drop_last) return {};
  if (rule.pad == Pad::Step) return {begin, rule.per, rule.step - real};
  return {begin, std::clamp<int64_t>(real - begin, 0, rule.per), 0};
}

ShareRule sample_rule(const DataLoaderOptions& batching, const ShardingOptions& sharding) {
  ShareRule rule;
  const int64_t B = batching.batch_size(), N = sharding.num_processes();
  rule.drop_last = batching.drop_last();
  if (N == 1) {  // no sharding, as Accelerate with one process: plain batches
    rule.step = rule.per = B;
    return rule;
  }
  rule.num_processes = sharding.num_processes();
  rule.process_index = sharding.process_index();
  rule.step = sharding.split_batches() ? B : N * B;
  rule.per = sharding.split_batches() ? B / N : B;
  rule.pad = sharding.even_batches() ? Pad::Step : Pad::None;
  return rule;
}

ShareRule stream_rule(const DataLoaderOptions& batching, const ShardingOptions& sharding,
                      bool shard) {
  // IterableDatasetShard always completes its last buffer: even_batches plays no part.
  return sample_rule(batching,
                     shard ? ShardingOptions(sharding).even_batches(true) : ShardingOptions());
}

ShareRule dispatch_rule(bool drop_last, const ShardingOptions& sharding) {
  ShareRule rule;
  rule.num_processes = sharding.num_processes();
  rule.process_index = sharding.process_index();
  rule.drop_last = drop_last;
  rule.pad = Pad::Rows;
  return rule;
}

std::vector<Span> share_spans(int64_t n, const ShareRule& rule) {
  std::vector<Span> out;
  for (int64_t start = 0; start < n; start += rule.step) {
    const int64_t real = std::min(rule.step, n - start);
    const Share share = share_of_step(rule, real, start + rule.step >= n);
    if (share.length > 0) out.push_back({start + share.begin, share.length});
  }
  return out;
}

int64_t count_shares(int64_t n, const ShareRule& rule) {
  if (n <= 0) return 0;
  const int64_t whole = n / rule.step, rest = n % rule.step;
  const bool whole_share = share_of_step(rule, rule.step, false).length > 0;
  return (whole_share ? whole : 0) + (rest > 0 && share_of_step(rule, rest, true).length > 0);
}

}  // namespace detail

using detail::check_batch_sampler_split;
using detail::check_sharding;

std::vector<std::vector<int64_t>> shard_batches(const std::vector<int64_t>& order,
                                                const DataLoaderOptions& batching,
                                                const ShardingOptions& sharding) {
  detail::check_batching(batching, sharding);
  const auto rule = detail::sample_rule(batching, sharding);
  const int64_t n = static_cast<int64_t>(order.size());
  // Padding repeats the first step's samples (Note [one sharding rule]).
  const int64_t cycle = std::min(n, rule.step);
  std::vector<std::vector<int64_t>> out;
  for (const auto& span : detail::share_spans(n, rule)) {
    std::vector<int64_t> batch;
    batch.reserve(static_cast<size_t>(span.length));
    for (int64_t s = span.start; s < span.start + span.length; ++s)
      batch.push_back(order[static_cast<size_t>(s < n ? s : (s - n) % cycle)]);
    out.push_back(std::move(batch));
  }
  return out;
}

int64_t shard_num_batches(int64_t n, const DataLoaderOptions& batching,
                          const ShardingOptions& sharding) {
  detail::check_batching(batching, sharding);
  if (n < 0) throw InvalidArgument("accelerate: DataLoader: negative data set size");
  return detail::count_shares(n, detail::sample_rule(batching, sharding));
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
  return detail::batch_sampler_shard(batches, batch_size, drop_last, sharding).batches;
}

std::vector<int64_t> shard_iterable(const std::vector<int64_t>& stream,
                                    const DataLoaderOptions& batching,
                                    const ShardingOptions& sharding) {
  detail::check_batching(batching, sharding);
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

}  // namespace accelerate
