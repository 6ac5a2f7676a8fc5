// Internal: where each process is in the job's sequence of collectives (hang diagnostics).
//
// Every collective of ops.cpp, wait_for_everyone and the DDP backward enter() here first: the
// position (name, call number, time) is kept in memory and published to the c10d store by a
// background thread (key accelerate/where/<rank>), at most every kPublishPeriod, so the
// collective itself pays only a mutex. When a collective fails or times out, describe()
// reads every other process's last published position, e.g.
//   "rank 0 waits in reduce #18; rank 1 last entered gather #17 3.2 s ago".
#pragma once

#include <ATen/Tensor.h>
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

namespace accelerate {
class State;
namespace detail {

/// What a process passes to a collective, exchanged before it runs so that a mismatch gives
/// the same clear error on every process instead of a silent wrong sum, an abort in a Gloo
/// thread or a hang.
struct CallSignature {
  const char* name;            ///< "reduce", "gather", ...
  int64_t dtype = -1;          ///< at::ScalarType, or -1 when not a tensor collective
  std::vector<int64_t> sizes;  ///< the tensor's shape (or [byte count] for objects)
  int64_t extra = 0;           ///< the reduction, the source process or the padded dim
};

/// One row per process: its signature as exchanged.
struct CallRow {
  int64_t kind, number, dtype, extra;
  int64_t payload_bytes;  ///< the bytes it sent along in its slot, or -1 when they did not fit
  std::vector<int64_t> sizes;
};

/// Each process's slot in the exchange: a header (its CallRow) and as much of its data as
/// fits, so that a small collective is done by the exchange alone (one Gloo/NCCL allgather
/// instead of a check followed by the data collective). A slot is 64 KiB / processes, within
/// [1 KiB, 16 KiB]: on Gloo an allgather of 16 KiB costs what one of a few bytes does.
int64_t slot_bytes(int num_processes);
constexpr int64_t kHeaderBytes = 22 * 8;  // kind, number, dtype, extra, payload, ndim, 16 sizes
/// The data bytes that travel in the exchange.
inline int64_t payload_capacity(int num_processes) {
  return slot_bytes(num_processes) - kHeaderBytes;
}

/// What enter_collective brings back.
struct Exchange {
  std::vector<CallRow> rows;      ///< one per process
  std::vector<at::Tensor> slots;  ///< one uint8 CPU tensor of slot_bytes() per process

  /// Process `r`'s payload (rows[r].payload_bytes of them), or nullptr when it did not fit.
  const uint8_t* payload(size_t r) const;
  /// Whether every process's payload came along.
  bool all_sent() const;
};

/// Records the call in the trace and exchanges signatures, with `bytes` of `payload` when they
/// fit into payload_capacity(), with every process (one allgather, which is also a barrier). Throws
/// the same std::invalid_argument on every process when they are not in the same collective
/// (name and call number), and std::runtime_error naming where every process is when the
/// exchange fails or times out. Requires more than one process.
Exchange enter_collective(const State& state, const CallSignature& signature,
                          const void* payload = nullptr, int64_t bytes = -1);

/// Throws std::runtime_error "accelerate: <rank>: <what> failed (<positions>): <error>".
[[noreturn]] void rethrow_collective_error(const State& state, const std::string& what,
                                           const std::exception& error);

}  // namespace detail
}  // namespace accelerate
