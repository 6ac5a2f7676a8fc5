#include "collective_protocol.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "accelerate/state.h"
#include "collective_trace.h"
#include "errors.h"

namespace accelerate::detail {
namespace {

constexpr int64_t kRowLength = 6 + kMaxSignatureDims;  // kind, number, dtype, extra, payload,
                                                       // ndim, sizes
static_assert(kRowLength * 8 == kHeaderBytes, "the header is the row");

// Collectives by kind number: the number is what processes exchange.
constexpr const char* kKinds[] = {
    "reduce",        "gather",           "broadcast",         "pad_across_processes",
    "gather_object", "broadcast_object", "wait_for_everyone", "shutdown"};

int64_t kind_of(const char* name) {
  for (size_t i = 0; i < sizeof(kKinds) / sizeof(kKinds[0]); ++i)
    if (std::string(kKinds[i]) == name) return static_cast<int64_t>(i);
  throw std::logic_error(std::string("accelerate: unknown collective ") + name);
}

std::string kind_name(int64_t kind) {
  return kind >= 0 && kind < static_cast<int64_t>(sizeof(kKinds) / sizeof(kKinds[0]))
             ? kKinds[kind]
             : "collective " + std::to_string(kind);
}

}  // namespace

void wait_collective(const State& state, const c10::intrusive_ptr<c10d::Work>& work,
                     const char* what) {
  try {
    work->wait(state.timeout());
  } catch (const std::exception& e) {
    rethrow_collective_error(state, what, e);
  }
}

std::vector<at::Tensor> all_gather_equal(const State& state, const at::Tensor& tensor,
                                         const char* what) {
  std::vector<at::Tensor> inputs{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < state.num_processes(); ++r) outputs[0].push_back(at::empty_like(inputs[0]));
  wait_collective(state, state.process_group()->allgather(outputs, inputs), what);
  return outputs[0];
}

int64_t slot_bytes(int num_processes) {
  return std::clamp<int64_t>(65536 / std::max(num_processes, 1), 1024, 16384);
}

const uint8_t* Exchange::payload(size_t r) const {
  return rows[r].payload_bytes < 0 ? nullptr : slots[r].data_ptr<uint8_t>() + kHeaderBytes;
}

bool Exchange::all_sent() const {
  return std::all_of(rows.begin(), rows.end(),
                     [](const CallRow& row) { return row.payload_bytes >= 0; });
}

Exchange enter_collective(const State& state, const CallSignature& signature, const void* payload,
                          int64_t bytes) {
  const int64_t kind = kind_of(signature.name);
  const uint64_t number = state.collective_trace()->enter(signature.name);
  const int64_t capacity = payload_capacity(state.num_processes());
  auto slot = at::zeros({slot_bytes(state.num_processes())}, at::kByte);
  int64_t row[kRowLength] = {};
  const bool sent = bytes >= 0 && bytes <= capacity && (bytes == 0 || payload != nullptr);
  row[0] = kind;
  row[1] = static_cast<int64_t>(number);
  row[2] = signature.dtype;
  row[3] = signature.extra;
  row[4] = sent ? bytes : -1;
  row[5] = static_cast<int64_t>(signature.sizes.size());
  for (size_t d = 0; d < signature.sizes.size(); ++d) row[6 + d] = signature.sizes[d];
  std::memcpy(slot.data_ptr<uint8_t>(), row, sizeof(row));
  if (sent && bytes > 0)
    std::memcpy(slot.data_ptr<uint8_t>() + kHeaderBytes, payload, static_cast<size_t>(bytes));
  Exchange exchange;
  for (const at::Tensor& t : all_gather_equal(state, slot.to(state.device()), signature.name)) {
    exchange.slots.push_back(t.cpu());
    int64_t v[kRowLength];
    std::memcpy(v, exchange.slots.back().data_ptr<uint8_t>(), sizeof(v));
    const int64_t ndim = std::min<int64_t>(std::max<int64_t>(v[5], 0), kMaxSignatureDims);
    const int64_t carried = v[4] >= 0 && v[4] <= capacity ? v[4] : -1;
    exchange.rows.push_back(
        {v[0], v[1], v[2], v[3], carried, std::vector<int64_t>(v + 6, v + 6 + ndim)});
  }
  const auto& rows = exchange.rows;
  // "rank 1 is in gather #17", or, for a process whose Accelerator is being destroyed,
  // "rank 1 has ended (shutdown #17)".
  auto where = [&](size_t p) {
    const std::string at = kind_name(rows[p].kind) + " #" + std::to_string(rows[p].number);
    return "rank " + std::to_string(p) +
           (kind_name(rows[p].kind) == "shutdown" ? " has ended (" + at + ")" : " is in " + at);
  };
  for (size_t p = 1; p < rows.size(); ++p) {
    if (rows[p].kind != rows[0].kind || rows[p].number != rows[0].number)
      throw InvalidArgument("accelerate: collectives out of step: " + where(0) + " but " +
                            where(p) +
                            "; every process must call the same collectives in the same "
                            "order");
  }
  return exchange;
}

void rethrow_collective_error(const State& state, const std::string& what,
                              const std::exception& error) {
  throw DistributedError("accelerate: " + what + ": " + state.describe() + " failed (" +
                         state.describe_positions() + "): " + message_of(error));
}

}  // namespace accelerate::detail
