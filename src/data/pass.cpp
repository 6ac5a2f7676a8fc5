// The passes of a DataLoader: the batches of one epoch, loaded in order, ahead of the training
// loop on worker threads when the loader has `num_workers`, moved to the device and reported
// to the loader (position, gradient state). The typed half, how a data set makes a batch, is
// `detail::BatchMaker` in data/detail/pass.h; batches cross here as `std::shared_ptr<void>`.
//
// Why c10::ThreadPool and not torch::data's own machinery: `DataShuttle` hands results back in
// the order they finish and needs an `OrderedSequencer` on top plus hand-written worker loops
// and quit jobs to stop them; `c10::ThreadPool` already owns the threads, runs jobs in the
// order they were queued, and on destruction drops the queued ones and joins the running
// ones, which is exactly an abandoned pass. What is left here is the bounded, ordered window:
// a job is queued only when the consumer is fewer than `window` batches behind it, and results
// wait in a map until the consumer asks for them in order.
//
// Device prefetch (Accelerate's DataLoaderShard): a prepared loader whose device is not the CPU
// loads batch i + 1 and queues its copy to the device (non-blocking from page-locked memory)
// before handing batch i over, so that the copy overlaps the training step on batch i. What
// loading batch i + 1 throws is kept and thrown when the loop advances to it. On the CPU
// nothing is loaded ahead in the loop's thread.
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <c10/core/thread_pool.h>

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <utility>

#include "accelerate/data/loader.h"
#include "compat.h"
#include "dispatcher.h"
#include "warnings.h"

namespace accelerate {

namespace {

// Runs `load(i)` for i = 0, 1, ..., count - 1 on `workers` threads, at most `window` batches
// ahead of the consumer, and hands the results back in order.
class Prefetcher {
 public:
  using Load = std::function<std::shared_ptr<void>(size_t)>;

  Prefetcher(size_t count, int workers, size_t window, Load load)
      : load_(std::move(load)),
        count_(count),
        window_(window),
        pool_(std::make_unique<c10::ThreadPool>(workers)) {
    for (size_t i = 0; i < std::min(count_, window_); ++i) queue(i);
  }

  // Joins the running jobs; queued ones are dropped.
  ~Prefetcher() { pool_.reset(); }

  // The result of job `i` (called for 0, 1, ... in order); rethrows what it threw.
  std::shared_ptr<void> take(size_t i) {
    Loaded loaded;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      filled_.wait(lock, [&] { return ready_.count(i) > 0; });
      auto it = ready_.find(i);
      loaded = std::move(it->second);
      ready_.erase(it);
    }
    if (i + window_ < count_) queue(i + window_);  // the window moves on
    if (loaded.error) std::rethrow_exception(loaded.error);
    return std::move(loaded.batch);
  }

 private:
  struct Loaded {
    std::shared_ptr<void> batch;  // the batch, when it was made
    std::exception_ptr error;     // what making it threw
  };

  void queue(size_t i) {
    pool_->run([this, i] {
      Loaded loaded;
      try {
        loaded.batch = load_(i);
      } catch (...) {
        loaded.error = std::current_exception();
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ready_.emplace(i, std::move(loaded));
      }
      filled_.notify_all();
    });
  }

  const Load load_;
  const size_t count_;
  const size_t window_;
  std::mutex mutex_;
  std::condition_variable filled_;  // the consumer waits for its batch
  std::map<size_t, Loaded> ready_;
  std::unique_ptr<c10::ThreadPool> pool_;  // last: joined before the state its jobs use dies
};

// Whether a prepared loader moving batches to `device` loads the next batch ahead: everywhere
// but on the CPU, where there is no copy to overlap.
bool prefetches_to(c10::Device device) { return !device.is_cpu(); }

// The batches of index lists `batches`, one at a time: what process 0 of a dispatching loader
// over a map-style data set reads.
class IndexSource final : public detail::BatchSource {
 public:
  IndexSource(std::vector<std::vector<int64_t>> batches, detail::BatchMaker maker)
      : batches_(std::move(batches)), maker_(std::move(maker)) {}
  std::shared_ptr<void> next() override {
    if (next_ == batches_.size()) return nullptr;
    return maker_.load(batches_[next_++], false);
  }

 private:
  const std::vector<std::vector<int64_t>> batches_;
  const detail::BatchMaker maker_;
  size_t next_ = 0;
};

}  // namespace

// A pass read one batch ahead from a BatchSource (iterable data sets, dispatching loaders):
// reading ahead is how it knows that a batch is the last one. Skipped batches are read and
// dropped. What reading batch i + 1 throws is thrown when the loop advances to it.
class DataLoaderBase::StreamPass final : public detail::Pass {
 public:
  StreamPass(DataLoaderBase* owner, detail::BatchMaker maker)
      : loader_(owner),
        maker_(std::move(maker)),
        pin_(owner->options().pin_memory() && compat::cuda_available()),
        move_(owner->prepared() && maker_.to_device),
        device_(owner->sharding().device()) {}

  ~StreamPass() override { detach(); }

  void* current() const override { return current_.get(); }

  void detach() override {
    if (loader_ && !done_) loader_->end_pass(false);
    done_ = true;
    current_.reset();
    ahead_.reset();
    source_.reset();
    loader_ = nullptr;
  }

  void advance() override {
    if (done_) return;
    ++index_;
    produce();
  }

  void start() {
    try {
      const int64_t skip = loader_->begin_stream_pass();
      source_ = loader_->stream_source(maker_);
      for (; index_ < skip; ++index_)
        if (!source_->next()) {
          finish();
          return;
        }
      ahead_ = source_->next();
    } catch (...) {
      detach();
      throw;
    }
    produce();
  }

 private:
  void produce() {
    try {
      if (ahead_error_) std::rethrow_exception(std::exchange(ahead_error_, nullptr));
      if (!ahead_) {
        finish();
        return;
      }
      current_ = std::move(ahead_);
      ahead_.reset();
      try {
        ahead_ = source_->next();
      } catch (...) {
        ahead_error_ = std::current_exception();
      }
      const bool last = !ahead_ && !ahead_error_;
      if (last) loader_->on_stream_end(source_->remainder());
      if (move_) maker_.to_device(current_.get(), device_, pin_);
      loader_->on_yield(index_, last);
    } catch (...) {
      detach();
      throw;
    }
  }

  void finish() {
    current_.reset();
    source_.reset();
    if (loader_ && !done_) loader_->end_pass(true);
    done_ = true;
  }

  DataLoaderBase* loader_;
  const detail::BatchMaker maker_;
  const bool pin_;
  const bool move_;
  const c10::Device device_;
  std::unique_ptr<detail::BatchSource> source_;
  int64_t index_ = 0;
  bool done_ = false;
  std::shared_ptr<void> current_;
  std::shared_ptr<void> ahead_;
  std::exception_ptr ahead_error_;
};

std::unique_ptr<detail::BatchSource> DataLoaderBase::stream_source(
    const detail::BatchMaker& maker) {
  const bool pin = options_.pin_memory() && compat::cuda_available();
  if (!dispatches()) return maker.stream(epoch_, prepared_ && sharding_.num_processes() > 1, pin);
  if (!maker.to_tensors || !maker.from_tensors)
    throw InvalidArgument(
        "accelerate: DataLoader: dispatch_batches needs the batch as tensors: give "
        "accelerate::Collate of this example type `to_tensors` and `from_tensors`");
  std::unique_ptr<detail::BatchSource> base;
  if (sharding_.process_index() == 0) {
    if (iterable()) {
      base = maker.stream(epoch_, false, false);
    } else {
      int64_t unused = -1;
      base = std::make_unique<IndexSource>(epoch_batches(true, unused), maker);
    }
  }
  return detail::make_dispatcher(std::move(base), maker, sharding_, context_, options_.drop_last());
}

// Only the consumer's thread touches this object; the workers see the Prefetcher and the
// data set (through the BatchMaker), never the loader.
class DataLoaderBase::ActivePass final : public detail::Pass {
 public:
  ActivePass(DataLoaderBase* owner, detail::BatchMaker maker, PassPlan plan)
      : loader_(owner),
        maker_(std::move(maker)),
        batches_(std::move(plan.batches)),
        first_(plan.first),
        pin_(owner->options().pin_memory() && compat::cuda_available()),
        move_(owner->prepared() && maker_.to_device),
        device_(owner->sharding().device()),
        prefetch_(move_ && prefetches_to(device_)) {}

  ~ActivePass() override { detach(); }

  void* current() const override { return current_.get(); }

  void detach() override {
    prefetcher_.reset();
    if (loader_ && !done_) loader_->end_pass(false);
    done_ = true;
    current_.reset();
    next_ = {};
    loader_ = nullptr;
  }

  void advance() override {
    if (done_) return;
    if (++cur_ == batches_.size()) {
      finish();
      return;
    }
    produce();
  }

  void start() {
    if (batches_.empty()) {
      finish();
      return;
    }
    const int workers = static_cast<int>(
        std::min<int64_t>(loader_->options().num_workers(), static_cast<int64_t>(batches_.size())));
    if (workers > 0) {
      // The jobs read this pass, which joins them (prefetcher_.reset()) before it dies.
      prefetcher_ =
          std::make_unique<Prefetcher>(batches_.size(), workers, 2 * static_cast<size_t>(workers),
                                       [this](size_t i) { return maker_.load(batches_[i], pin_); });
    }
    produce();
  }

 private:
  // A batch loaded ahead (device prefetch): the batch, or what loading it threw.
  struct Ahead {
    bool loaded = false;
    std::shared_ptr<void> batch;
    std::exception_ptr error;
  };

  // Makes batch `cur_` the current one; on failure the pass ends and the error propagates.
  // With device prefetch, then loads batch `cur_ + 1` and queues its copy to the device.
  void produce() {
    try {
      std::shared_ptr<void> batch;
      if (next_.loaded) {
        Ahead ahead = std::exchange(next_, Ahead{});
        if (ahead.error) std::rethrow_exception(ahead.error);
        batch = std::move(ahead.batch);
      } else {
        batch = fetch(cur_);
      }
      current_ = std::move(batch);
      loader_->on_yield(first_ + static_cast<int64_t>(cur_), cur_ + 1 == batches_.size());
    } catch (...) {
      detach();
      throw;
    }
    if (prefetch_ && cur_ + 1 < batches_.size()) {
      next_.loaded = true;
      try {
        next_.batch = fetch(cur_ + 1);
      } catch (...) {
        next_.error = std::current_exception();  // thrown when the loop advances to it
      }
    }
  }

  // Loads batch `i` (from the workers when there are some) and moves it to the device.
  std::shared_ptr<void> fetch(size_t i) {
    std::shared_ptr<void> batch =
        prefetcher_ ? prefetcher_->take(i) : maker_.load(batches_[i], pin_);
    if (move_) maker_.to_device(batch.get(), device_, pin_);
    return batch;
  }

  void finish() {
    prefetcher_.reset();
    current_.reset();
    next_ = {};
    if (loader_ && !done_) loader_->end_pass(true);
    done_ = true;
  }

  DataLoaderBase* loader_;
  const detail::BatchMaker maker_;
  const std::vector<std::vector<int64_t>> batches_;
  const int64_t first_;
  const bool pin_;
  const bool move_;
  const c10::Device device_;
  const bool prefetch_;  // load the next batch ahead and queue its copy to the device
  size_t cur_ = 0;
  bool done_ = false;
  std::shared_ptr<void> current_;
  Ahead next_;                              // batch cur_ + 1 when prefetch_ loaded it
  std::unique_ptr<Prefetcher> prefetcher_;  // null without workers
};

std::shared_ptr<detail::Pass> DataLoaderBase::start_pass(detail::BatchMaker maker) {
  detach_pass();
  if (!prepared() && detail::job_processes() > 1) {
    const std::string n = std::to_string(detail::job_processes());
    detail::warn_once("unprepared data loader",
                      "a data loader that was not prepared is iterated in a job of " + n +
                          " processes: every process reads every batch, so each trains on the "
                          "whole data set, and gather_for_metrics counts each sample " +
                          n +
                          " times. Prepare it: auto dl = accelerator.prepare(loader); then loop "
                          "over *dl (ignore this where every process is meant to read "
                          "everything)");
  }
  if (iterable() || dispatches()) {
    auto pass = std::make_shared<StreamPass>(this, std::move(maker));
    active_.pass = pass;
    pass->start();
    return pass;
  }
  auto pass = std::make_shared<ActivePass>(this, std::move(maker), begin_pass());
  active_.pass = pass;
  pass->start();
  return pass;
}

}  // namespace accelerate
