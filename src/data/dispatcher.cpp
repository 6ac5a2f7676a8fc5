#include "dispatcher.h"

#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/util/accumulate.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "accelerate/data/detail/share_rule.h"
#include "accelerate/errors.h"
#include "accelerate/object_bytes.h"
#include "live_context.h"

namespace accelerate::detail {

namespace {

// Accelerate's DataLoaderDispatcher: process 0 reads whole batches (one with split_batches,
// else num_processes of them concatenated), every process receives them (a header through
// broadcast_bytes, then all the tensors' bytes in one broadcast) and keeps its slice of the
// rows. The
// last global batch, when its rows do not divide among the processes and drop_last is off,
// is completed with the first num_processes rows of the first batch. Every process calls the
// same collectives in the same order, decided by process 0's header.
class Dispatcher final : public BatchSource {
 public:
  Dispatcher(std::unique_ptr<BatchSource> base, BatchMaker maker, const ShardingOptions& sharding,
             std::weak_ptr<DataContext> context, bool drop_last)
      : base_(std::move(base)),
        maker_(std::move(maker)),
        sharding_(sharding),
        context_(std::move(context)),
        rule_(dispatch_rule(drop_last, sharding)),
        drop_last_(drop_last),
        n_(sharding.num_processes()),
        p_(sharding.process_index()) {}

  std::shared_ptr<void> next() override {
    if (!started_) {
      ahead_ = fetch();
      started_ = true;
    }
    if (!ahead_) return nullptr;
    Fetched cur = std::move(*ahead_);
    ahead_.reset();
    bool stop = cur.last;
    if (!stop) {
      ahead_ = fetch();
      stop = !ahead_.has_value();
    }
    std::vector<at::Tensor>& t = cur.tensors;
    const int64_t observed = t.empty() || t[0].dim() == 0 ? 0 : t[0].size(0);
    if (!drop_last_ && first_rows_.empty())
      for (const auto& x : t)
        first_rows_.push_back(x.narrow(0, 0, std::min<int64_t>(n_, x.size(0))));
    const Share share = share_of_step(rule_, observed, stop);
    if (share.padded > 0)  // completed with the first rows of the first batch
      for (size_t i = 0; i < t.size(); ++i) t[i] = at::cat({t[i], first_rows_[i]}, 0);
    std::vector<at::Tensor> mine;
    mine.reserve(t.size());
    for (const auto& x : t) {
      const int64_t begin = std::min<int64_t>(share.begin, x.size(0));
      const int64_t end = std::min<int64_t>(share.begin + share.length, x.size(0));
      mine.push_back(x.narrow(0, begin, end - begin));
    }
    if (stop) remainder_ = observed;
    return maker_.from_tensors(std::move(mine));
  }
  int64_t remainder() const override { return remainder_; }

 private:
  struct Fetched {
    std::vector<at::Tensor> tensors;
    bool last = false;  // nothing comes after it
  };
  // A tensor's dtype and sizes.
  using Shape = std::pair<at::ScalarType, std::vector<int64_t>>;
  // What process 0 sends ahead of each global batch through the object codec: nothing at the
  // end, else whether it is the last and its tensors' shapes.
  using Header = std::optional<std::pair<bool, std::vector<Shape>>>;
  // The alignment of each tensor in the flat payload: a multiple of every element size.
  static constexpr int64_t kAlign = 16;

  static at::Tensor concatenate(const std::vector<std::vector<at::Tensor>>& group, size_t i) {
    std::vector<at::Tensor> parts;
    for (const auto& batch : group) parts.push_back(batch.at(i));
    try {
      return at::cat(parts, 0);
    } catch (const std::exception& e) {
      throw InvalidArgument(
          std::string("accelerate: DataLoader: dispatch_batches: the batches of one step "
                      "cannot be concatenated (") +
          e.what() +
          "); batches of different shapes need dispatch_batches(false), each process reading "
          "its own batches, or split_batches, process 0 reading one batch and slicing it");
    }
  }

  // Process 0 reads the next global batch; every process receives it. nullopt at the end.
  std::optional<Fetched> fetch() {
    Fetched fetched;
    Header header;
    if (p_ == 0) {
      fetched = read_global_batch();
      if (!fetched.tensors.empty()) {
        header.emplace();
        header->first = fetched.last;
        for (auto& x : fetched.tensors) {
          x = x.to(sharding_.device()).contiguous();
          header->second.emplace_back(x.scalar_type(), x.sizes().vec());
        }
      }
    }
    const auto context = live_context(context_);
    header = from_object_bytes<Header>(context->broadcast_bytes(to_object_bytes(header)),
                                       "dispatch_batches header");
    if (!header) return std::nullopt;
    fetched.last = header->first;
    receive(*context, header->second, fetched.tensors);
    return fetched;
  }

  // Process 0's tensors, described by `shapes`, on every process: their bytes in one flat
  // broadcast (one checked collective for the whole batch), each at an offset aligned for any
  // dtype so that the others view them in place.
  void receive(DataContext& context, const std::vector<Shape>& shapes,
               std::vector<at::Tensor>& tensors) const {
    std::vector<int64_t> offsets;
    int64_t total = 0;
    for (const auto& [dtype, sizes] : shapes) {
      offsets.push_back(total);
      const int64_t bytes = c10::multiply_integers(sizes) * int64_t(c10::elementSize(dtype));
      total += (bytes + kAlign - 1) / kAlign * kAlign;
    }
    at::Tensor payload =
        at::empty({total}, at::TensorOptions(at::kByte).device(sharding_.device()));
    auto bytes_of = [&](size_t i) {
      const auto& [dtype, sizes] = shapes[i];
      return payload.narrow(0, offsets[i],
                            c10::multiply_integers(sizes) * int64_t(c10::elementSize(dtype)));
    };
    if (p_ == 0)
      for (size_t i = 0; i < tensors.size(); ++i)
        bytes_of(i).copy_(tensors[i].reshape({-1}).view(at::kByte));
    payload = context.broadcast(payload);
    if (p_ == 0) return;
    for (size_t i = 0; i < shapes.size(); ++i)
      tensors.push_back(bytes_of(i).view(shapes[i].first).view(shapes[i].second));
  }

  // Process 0: the next global batch, one batch with split_batches, else num_processes of
  // them concatenated; no tensors at the end.
  Fetched read_global_batch() {
    Fetched fetched;
    if (sharding_.split_batches()) {
      if (auto b = base_->next()) fetched.tensors = maker_.to_tensors(b.get());
      return fetched;
    }
    std::vector<std::vector<at::Tensor>> group;
    for (int i = 0; i < n_; ++i) {
      auto b = base_->next();
      if (!b) break;
      group.push_back(maker_.to_tensors(b.get()));
    }
    if (static_cast<int>(group.size()) < n_) {
      fetched.last = true;
      if (drop_last_) group.clear();  // the incomplete step is dropped
    }
    if (!group.empty())
      for (size_t i = 0; i < group[0].size(); ++i)
        fetched.tensors.push_back(group.size() == 1 ? group[0][i] : concatenate(group, i));
    return fetched;
  }

  std::unique_ptr<BatchSource> base_;  // process 0 only
  const BatchMaker maker_;
  const ShardingOptions sharding_;
  const std::weak_ptr<DataContext> context_;  // the loader's: weak, as the loader's own
  const ShareRule rule_;
  const bool drop_last_;
  const int n_;
  const int p_;
  bool started_ = false;
  std::optional<Fetched> ahead_;
  std::vector<at::Tensor> first_rows_;  // the first num_processes rows of the first batch
  int64_t remainder_ = -1;
};

}  // namespace

std::unique_ptr<BatchSource> make_dispatcher(std::unique_ptr<BatchSource> base, BatchMaker maker,
                                             const ShardingOptions& sharding,
                                             std::weak_ptr<DataContext> context, bool drop_last) {
  return std::make_unique<Dispatcher>(std::move(base), std::move(maker), sharding,
                                      std::move(context), drop_last);
}

}  // namespace accelerate::detail
