// accelerate/data/detail/stream_batcher.h: cuts a stream of samples (an iterable data set)
// into this process's batches, as Accelerate's IterableDatasetShard; not for users.
#pragma once

#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <vector>

#include "accelerate/data/detail/share_rule.h"
#include "accelerate/data/sharding.h"

namespace accelerate {
namespace detail {

/// Cuts a stream of samples into batches: plain ones (`batch_size` each, the last one short
/// unless `drop_last`), or, with `shard`, this process's batch of every buffer as Accelerate's
/// `IterableDatasetShard` (see shard_iterable).
template <typename T>
class StreamBatcher {
 public:
  /// `pull` returns the next sample, nullopt at the end (then it is not called again).
  StreamBatcher(std::function<std::optional<T>()> pull, const DataLoaderOptions& batching,
                const ShardingOptions& sharding, bool shard)
      : pull_(std::move(pull)), rule_(stream_rule(batching, sharding, shard)) {}
  /// This process's next batch, or nullopt at the end.
  std::optional<std::vector<T>> next() {
    if (done_) return std::nullopt;
    std::vector<T> step;
    step.reserve(static_cast<size_t>(rule_.step));
    while (static_cast<int64_t>(step.size()) < rule_.step) {
      std::optional<T> sample = pull_();
      if (!sample) break;
      step.push_back(std::move(*sample));
    }
    const int64_t real = static_cast<int64_t>(step.size());
    done_ = real < rule_.step;
    const Share share = share_of_step(rule_, real, done_);
    if (share.length == 0) return std::nullopt;
    if (rule_.pad == Pad::Step && first_.empty()) first_ = step;
    if (share.padded > 0) {  // completed from the first step's samples
      remainder_ = real;
      for (int64_t i = 0; i < share.padded; ++i) step.push_back(first_[i % first_.size()]);
    }
    if (share.begin == 0 && share.length == static_cast<int64_t>(step.size())) return step;
    return std::vector<T>(std::make_move_iterator(step.begin() + share.begin),
                          std::make_move_iterator(step.begin() + share.begin + share.length));
  }
  /// Real samples of the completed last step, or -1 when none was completed.
  int64_t remainder() const { return remainder_; }

 private:
  std::function<std::optional<T>()> pull_;
  const ShareRule rule_;
  bool done_ = false;
  int64_t remainder_ = -1;
  std::vector<T> first_;  // the first step's samples, which complete the last one
};

}  // namespace detail
}  // namespace accelerate
