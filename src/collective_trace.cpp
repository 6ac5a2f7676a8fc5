#include "collective_trace.h"

#include <cstdio>
#include <fstream>
#include <sstream>

namespace accelerate::detail {
namespace {

constexpr auto kPublishPeriod = std::chrono::milliseconds(200);

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string key_of(int rank) { return "accelerate/where/" + std::to_string(rank); }

std::string seconds_ago(int64_t since_ms) {
  std::ostringstream out;
  out.precision(1);
  out << std::fixed << static_cast<double>(now_ms() - since_ms) / 1000.0 << " s ago";
  return out.str();
}

}  // namespace

CollectiveTrace::CollectiveTrace(c10::intrusive_ptr<c10d::Store> store, int rank, int world,
                                 std::string status_file)
    : store_(std::move(store)), status_file_(std::move(status_file)), rank_(rank), world_(world) {
  publisher_ = std::thread([this] { publish_loop(); });
}

CollectiveTrace::~CollectiveTrace() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  changed_.notify_all();
  publisher_.join();
}

uint64_t CollectiveTrace::enter(const std::string& name, bool counted) {
  uint64_t number;
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    number = counted ? ++number_ : ++uncounted_;
    shown_ = number;
    ++changes_;
    name_ = name;
    entered_ms_ = now_ms();
    wake = idle_;  // during its pause the publisher picks the change up when the pause ends
  }
  if (wake) changed_.notify_all();
  return number;
}

void CollectiveTrace::publish_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    idle_ = true;
    changed_.wait(lock, [&] { return stop_ || changes_ != published_; });
    idle_ = false;
    if (stop_) break;
    const uint64_t change = changes_;
    std::ostringstream value;
    value << name_ << ' ' << shown_ << ' ' << entered_ms_;
    lock.unlock();
    try {
      const std::string text = value.str();
      store_->set(key_of(rank_), std::vector<uint8_t>(text.begin(), text.end()));
    } catch (const std::exception&) {
      // The store is gone (process 0 ended): nothing to publish to any more.
    }
    if (!status_file_.empty()) {
      // Replaced whole (write, then rename), so a reader never sees half a line.
      const std::string tmp = status_file_ + ".tmp";
      std::ofstream(tmp, std::ios::trunc) << value.str() << '\n';
      std::rename(tmp.c_str(), status_file_.c_str());
    }
    lock.lock();
    published_ = change;
    // Rate limit: a tight loop of collectives publishes its latest position a few times a
    // second, not once per call.
    changed_.wait_for(lock, kPublishPeriod, [&] { return stop_; });
  }
}

std::string CollectiveTrace::describe() {
  std::ostringstream out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out << "rank " << rank_;
    if (changes_ == 0)
      out << " has not entered any collective";
    else
      out << " waits in " << name_ << " #" << shown_;
  }
  for (int r = 0; r < world_; ++r) {
    if (r == rank_) continue;
    out << "; rank " << r;
    try {
      if (!store_->check({key_of(r)})) {
        out << " has not entered any collective";
        continue;
      }
      const auto bytes = store_->get(key_of(r));
      std::istringstream in(std::string(bytes.begin(), bytes.end()));
      std::string name;
      uint64_t number = 0;
      int64_t entered = 0;
      in >> name >> number >> entered;
      out << " last entered " << name << " #" << number << ' ' << seconds_ago(entered);
    } catch (const std::exception&) {
      out << ": unknown (the store on rank 0 cannot be reached)";
    }
  }
  return out.str();
}

}  // namespace accelerate::detail
