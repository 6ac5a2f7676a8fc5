// Internal: the collective signature protocol of ops.h's collectives.
//
// Before it runs, every checked collective (ops.cpp, wait_for_everyone) exchanges a fixed-size
// slot per process in one allgather: a header (the collective's kind, its call number in the
// trace, dtype, shape, one option) and, when they fit, the data itself. Every process then
// sees every process's signature: a mismatch is the same clear error everywhere instead of a
// silent wrong sum, an abort in a Gloo thread or a hang, and a small collective is done by the
// exchange alone. The trace of where each process is lives in collective_trace.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace c10d {
class Work;
}

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

/// The most dimensions a tensor collective's signature carries.
constexpr int64_t kMaxSignatureDims = 16;

/// Each process's slot in the exchange: a header (its CallRow) and as much of its data as
/// fits, so that a small collective is done by the exchange alone (one Gloo/NCCL allgather
/// instead of a check followed by the data collective). A slot is 64 KiB / processes, within
/// [1 KiB, 16 KiB]: on Gloo an allgather of 16 KiB costs what one of a few bytes does.
int64_t slot_bytes(int num_processes);
constexpr int64_t kHeaderBytes = (6 + kMaxSignatureDims) * 8;  // kind, number, dtype, extra,
                                                               // payload, ndim, sizes
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

/// Waits for `work` within the state's timeout; a failure goes through
/// rethrow_collective_error.
void wait_collective(const State& state, const c10::intrusive_ptr<c10d::Work>& work,
                     const char* what);

/// All-gathers equally shaped tensors (`tensor` made contiguous); one tensor per process.
std::vector<at::Tensor> all_gather_equal(const State& state, const at::Tensor& tensor,
                                         const char* what);

}  // namespace detail
}  // namespace accelerate
