// Internal: where each process is in the job's sequence of collectives (hang diagnostics).
//
// Every collective of ops.cpp, wait_for_everyone and the DDP backward enter() here first: the
// position (name, call number, time) is kept in memory and published to the c10d store by a
// background thread (key accelerate/where/<rank>), at most every kPublishPeriod, so the
// collective itself pays only a mutex. When a collective fails or times out, describe()
// reads every other process's last published position, e.g.
//   "rank 0 waits in reduce #18; rank 1 last entered gather #17 3.2 s ago".
#pragma once

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace accelerate::detail {

class CollectiveTrace {
 public:
  /// Publishes to `store` for process `rank` of `world`, and, when `status_file` is not
  /// empty, to that file too (the launcher's ACCELERATE_STATUS_DIR/rank_<rank>, which it reads
  /// to say where each process was when it stops a job); starts the publishing thread.
  CollectiveTrace(c10::intrusive_ptr<c10d::Store> store, int rank, int world,
                  std::string status_file = "");
  /// Stops the thread (before the store goes away).
  ~CollectiveTrace();
  CollectiveTrace(const CollectiveTrace&) = delete;
  CollectiveTrace& operator=(const CollectiveTrace&) = delete;

  /// Records that this process enters collective `name`; returns its call number (1, 2, ...,
  /// counted over the collectives whose signatures are exchanged, which every process must
  /// call in the same order). A DDP backward is recorded with `counted` false: it has its
  /// own count, since processes with uneven data may run different numbers of them.
  uint64_t enter(const std::string& name, bool counted = true);
  /// "rank R waits in NAME #N; rank S last entered NAME #M 3.2 s ago; rank T has not entered
  /// any collective" for every process (this one from memory, the others from the store).
  std::string describe();

 private:
  void publish_loop();

  c10::intrusive_ptr<c10d::Store> store_;
  std::string status_file_;
  int rank_;
  int world_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool stop_ = false;
  bool idle_ = false;       // the publisher waits for a change (not in its rate-limit pause)
  uint64_t number_ = 0;     // counted collectives
  uint64_t uncounted_ = 0;  // DDP backward passes
  uint64_t changes_ = 0;    // what the publisher compares with published_
  uint64_t shown_ = 0;      // the number of the current position
  std::string name_;
  int64_t entered_ms_ = 0;  // wall clock (ms since the epoch), comparable across machines
  uint64_t published_ = 0;
  std::thread publisher_;
};

}  // namespace accelerate::detail
