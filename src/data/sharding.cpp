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

// Every process's batches in one run: Python's loop for one process_index, run for all of
// them at once (what process q yields goes to out[q]).
std::vector<ShardedBatches> batch_sampler_shard(const Batches& in, std::optional<int64_t> bs,
                                                bool drop_last, const ShardingOptions& s) {
  const int64_t N = s.num_processes(), K = static_cast<int64_t>(in.size());
  std::vector<ShardedBatches> out(static_cast<size_t>(N));
  auto size = [](const std::vector<int64_t>& b) { return static_cast<int64_t>(b.size()); };
  if (s.split_batches()) {
    const int64_t bl = *bs / N;
    std::vector<int64_t> initial;
    for (int64_t idx = 0; idx < K; ++idx) {
      if (idx == 0) initial = in[0];
      if (size(in[idx]) == *bs)
        for (int64_t q = 0; q < N; ++q) out[q].emit(py_slice(in[idx], bl * q, bl * (q + 1)), bl);
    }
    if (!drop_last && !initial.empty() && size(in[K - 1]) < *bs) {
      const auto& last = in[K - 1];
      std::vector<int64_t> batch = last;
      if (s.even_batches()) {
        while (size(initial) < *bs) initial.insert(initial.end(), initial.begin(), initial.end());
        batch.insert(batch.end(), initial.begin(), initial.end());
      }
      for (int64_t q = 0; q < N; ++q)
        if (s.even_batches() || size(last) > bl * q)
          out[q].emit(py_slice(batch, bl * q, bl * (q + 1)),
                      std::clamp<int64_t>(size(last) - bl * q, 0, bl));
    }
    return out;
  }
  std::vector<int64_t> initial_flat;  // with a batch size
  Batches initial_batches;            // without one
  std::vector<std::optional<std::vector<int64_t>>> to_yield(static_cast<size_t>(N));
  for (int64_t idx = 0; idx < K; ++idx) {
    const auto& batch = in[idx];
    if (!drop_last && idx < N) {
      if (bs)
        initial_flat.insert(initial_flat.end(), batch.begin(), batch.end());
      else
        initial_batches.push_back(batch);
    }
    to_yield[idx % N] = batch;
    if (idx % N == N - 1 && (!bs || size(batch) == *bs)) {
      for (int64_t q = 0; q < N; ++q)
        if (to_yield[q]) out[q].emit(*to_yield[q], size(*to_yield[q]));
      std::fill(to_yield.begin(), to_yield.end(), std::nullopt);
    }
  }
  const bool any = bs ? !initial_flat.empty() : !initial_batches.empty();
  if (drop_last || !any) return out;
  for (int64_t q = 0; q < N; ++q) {
    const bool pending = to_yield[q] && !to_yield[q]->empty();  // Python's truthiness of a list
    if (pending && (!s.even_batches() || !bs || size(*to_yield[q]) == *bs))
      out[q].emit(*to_yield[q], size(*to_yield[q]));
  }
  if (!s.even_batches()) return out;
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
      out[idx % N].emit(batch, 0);
      cycle += 1;
    } else {
      const int64_t real = size(batch);
      const int64_t end = cycle + *bs - size(batch);
      auto more = py_slice(initial_flat, cycle, end);
      batch.insert(batch.end(), more.begin(), more.end());
      out[idx % N].emit(batch, real);
      cycle = end;
    }
    batch.clear();
    idx += 1;
  }
  return out;
}

// The real samples of the last step over all processes, when that step was completed with
// repeated samples, else -1.
int64_t last_step_remainder(const std::vector<ShardedBatches>& all, bool even_batches) {
  if (!even_batches) return -1;
  int64_t real = 0, total = 0;
  for (const auto& mine : all) {
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
  auto all = batch_sampler_shard(batches, batch_size, drop_last, sharding);
  remainder = drop_last ? -1 : last_step_remainder(all, sharding.even_batches());
  return std::move(all[static_cast<size_t>(sharding.process_index())].batches);
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
  auto all = detail::batch_sampler_shard(batches, batch_size, drop_last, sharding);
  return std::move(all[static_cast<size_t>(sharding.process_index())].batches);
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
