#include "accelerate/ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <cstring>
#include <functional>
#include <stdexcept>

#include "collective_protocol.h"
#include "errors.h"
#include "helpers.h"

namespace accelerate {

using detail::message_of;
using detail::shape_string;

namespace {

using detail::all_gather_equal;
using detail::kMaxSignatureDims;
using detail::wait_collective;

c10d::ProcessGroup& group(const State& state) { return *state.process_group(); }

// "rank 1 passed [3, 4] (Int)" for a tensor collective's row.
std::string passed(int rank, const detail::CallRow& row) {
  return "rank " + std::to_string(rank) + " passed " + shape_string(row.sizes) + " (" +
         c10::toString(static_cast<at::ScalarType>(row.dtype)) + ")";
}

// Throws when any process's dtype or number of dimensions differs from process 0's.
void expect_same_dtype_and_rank(const char* what, const std::vector<detail::CallRow>& rows) {
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].dtype != rows[0].dtype || rows[r].sizes.size() != rows[0].sizes.size())
      throw InvalidArgument(std::string("accelerate: ") + what + ": " + passed(0, rows[0]) +
                            " but " + passed(static_cast<int>(r), rows[r]) +
                            "; every process must pass the same dtype and number of "
                            "dimensions");
}

// Throws when any process's dtype or shape differs from process 0's.
void expect_same_dtype_and_shape(const char* what, const std::vector<detail::CallRow>& rows) {
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].dtype != rows[0].dtype || rows[r].sizes != rows[0].sizes)
      throw InvalidArgument(std::string("accelerate: ") + what + ": " + passed(0, rows[0]) +
                            " but " + passed(static_cast<int>(r), rows[r]) +
                            "; every process must pass the same dtype and shape");
}

// Throws when any process's `extra` (reduction, source process, dim) differs from process 0's.
void expect_same_extra(const char* what, const char* name, const std::vector<detail::CallRow>& rows,
                       const std::function<std::string(int64_t)>& show) {
  for (size_t r = 1; r < rows.size(); ++r)
    if (rows[r].extra != rows[0].extra)
      throw InvalidArgument(std::string("accelerate: ") + what + ": rank 0 passed " + name + " " +
                            show(rows[0].extra) + " but rank " + std::to_string(r) + " passed " +
                            show(rows[r].extra) + "; every process must pass the same " + name);
}

std::string show_number(int64_t v) { return std::to_string(v); }

const char* reduce_name(int64_t op) {
  static const char* names[] = {"sum", "mean", "max", "min", "product"};
  return op >= 0 && op < 5 ? names[op] : "?";
}

detail::CallSignature tensor_signature(const char* name, const at::Tensor& tensor, int64_t extra) {
  if (tensor.dim() > kMaxSignatureDims)
    throw InvalidArgument(std::string("accelerate: ") + name + ": tensors of more than " +
                          std::to_string(kMaxSignatureDims) + " dimensions are not supported");
  return {name, static_cast<int64_t>(tensor.scalar_type()), tensor.sizes().vec(), extra};
}

// A CPU copy of `tensor`'s elements when they fit into the exchange's slot, else undefined.
at::Tensor small_copy(const State& state, const at::Tensor& tensor) {
  if (tensor.numel() * static_cast<int64_t>(tensor.element_size()) >
      detail::payload_capacity(state.num_processes()))
    return {};
  return tensor.cpu().contiguous();
}

int64_t byte_count(const at::Tensor& t) {
  return t.defined() ? t.numel() * static_cast<int64_t>(t.element_size()) : -1;
}

const void* bytes_of(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// Process r's tensor as it came in the exchange (a view of the slot).
at::Tensor sent_tensor(const detail::Exchange& exchange, size_t r) {
  const auto& row = exchange.rows[r];
  return at::from_blob(const_cast<uint8_t*>(exchange.payload(r)), row.sizes,
                       at::TensorOptions().dtype(static_cast<at::ScalarType>(row.dtype)));
}

}  // namespace

namespace detail {

void check_process(const State& state, int process, const char* what) {
  if (process < 0 || process >= state.num_processes())
    throw InvalidArgument(std::string("accelerate: ") + what + ": process " +
                          std::to_string(process) + " does not exist (num_processes is " +
                          std::to_string(state.num_processes()) + ")");
}
}  // namespace detail

ReduceOp parse_reduce_op(const std::string& name) {
  if (name == "sum") return ReduceOp::SUM;
  if (name == "mean") return ReduceOp::MEAN;
  if (name == "max") return ReduceOp::MAX;
  if (name == "min") return ReduceOp::MIN;
  if (name == "product") return ReduceOp::PRODUCT;
  throw InvalidArgument("accelerate: reduce: unknown reduction \"" + name +
                        "\" (expected sum, mean, max, min or product)");
}

at::Tensor gather(const State& state, const at::Tensor& tensor) {
  at::Tensor t = tensor.dim() == 0 ? tensor.reshape({1}) : tensor;
  if (state.num_processes() == 1) return t;
  const at::Tensor small = small_copy(state, t);
  const auto exchange = detail::enter_collective(state, tensor_signature("gather", t, 0),
                                                 bytes_of(small), byte_count(small));
  const auto& rows = exchange.rows;
  expect_same_dtype_and_rank("gather", rows);
  int64_t longest = 0;
  bool uneven = false;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!std::equal(rows[r].sizes.begin() + 1, rows[r].sizes.end(), rows[0].sizes.begin() + 1))
      throw InvalidArgument("accelerate: gather: rank 0 has shape " + shape_string(rows[0].sizes) +
                            " but rank " + std::to_string(r) + " has " +
                            shape_string(rows[r].sizes) + "; only the first dimension may differ");
    longest = std::max(longest, rows[r].sizes[0]);
    uneven = uneven || rows[r].sizes[0] != rows[0].sizes[0];
  }
  if (exchange.all_sent()) {  // the exchange brought every process's rows
    std::vector<at::Tensor> parts;
    for (size_t r = 0; r < rows.size(); ++r) parts.push_back(sent_tensor(exchange, r));
    return at::cat(parts, 0).to(t.device());
  }
  if (!uneven) return at::cat(all_gather_equal(state, t, "gather"), 0);
  at::Tensor padded = t;
  if (t.size(0) < longest) {
    auto sizes = t.sizes().vec();
    sizes[0] = longest;
    padded = at::zeros(sizes, t.options());
    padded.narrow(0, 0, t.size(0)).copy_(t);
  }
  auto parts = all_gather_equal(state, padded, "gather");
  for (size_t r = 0; r < rows.size(); ++r) parts[r] = parts[r].narrow(0, 0, rows[r].sizes[0]);
  return at::cat(parts, 0);
}

at::Tensor reduce(const State& state, const at::Tensor& tensor, ReduceOp op, double scale) {
  at::Tensor out = tensor.clone(at::MemoryFormat::Contiguous);
  if (scale != 1.0) out.mul_(scale);
  detail::Exchange exchange;
  if (state.num_processes() > 1) {
    const at::Tensor small = small_copy(state, out);
    exchange =
        detail::enter_collective(state, tensor_signature("reduce", tensor, static_cast<int>(op)),
                                 bytes_of(small), byte_count(small));
    expect_same_dtype_and_shape("reduce", exchange.rows);
    expect_same_extra("reduce", "reduction", exchange.rows, reduce_name);
  }
  if (op == ReduceOp::MEAN && !at::isFloatingType(tensor.scalar_type()))
    throw InvalidArgument(std::string("accelerate: reduce(mean) needs a floating-point ") +
                          "tensor, got " + c10::toString(tensor.scalar_type()));
  if (state.num_processes() == 1) return out;
  if (exchange.all_sent()) {
    // Every process's elements came in the exchange: reduce them here, in process order, the
    // same on every process.
    at::Tensor acc = sent_tensor(exchange, 0).clone();
    for (size_t r = 1; r < exchange.rows.size(); ++r) {
      const at::Tensor part = sent_tensor(exchange, r);
      switch (op) {
        case ReduceOp::SUM:
        case ReduceOp::MEAN:
          acc.add_(part);
          break;
        case ReduceOp::MAX:
          acc = at::maximum(acc, part);
          break;
        case ReduceOp::MIN:
          acc = at::minimum(acc, part);
          break;
        case ReduceOp::PRODUCT:
          acc.mul_(part);
          break;
      }
    }
    if (op == ReduceOp::MEAN) acc.div_(state.num_processes());
    return acc.to(tensor.device());
  }
  c10d::AllreduceOptions options;
  switch (op) {
    case ReduceOp::SUM:
    case ReduceOp::MEAN:
      options.reduceOp = c10d::ReduceOp::SUM;
      break;
    case ReduceOp::MAX:
      options.reduceOp = c10d::ReduceOp::MAX;
      break;
    case ReduceOp::MIN:
      options.reduceOp = c10d::ReduceOp::MIN;
      break;
    case ReduceOp::PRODUCT:
      options.reduceOp = c10d::ReduceOp::PRODUCT;
      break;
  }
  std::vector<at::Tensor> tensors{out};
  wait_collective(state, group(state).allreduce(tensors, options), "reduce");
  if (op == ReduceOp::MEAN) out.div_(state.num_processes());
  return out;
}

namespace {
// The broadcast itself, after the signatures were checked.
at::Tensor broadcast_unchecked(const State& state, at::Tensor tensor, int from_process,
                               const char* what) {
  const bool contiguous = tensor.is_contiguous();
  std::vector<at::Tensor> tensors{contiguous ? tensor : tensor.contiguous()};
  c10d::BroadcastOptions options;
  options.rootRank = from_process;
  wait_collective(state, group(state).broadcast(tensors, options), what);
  if (!contiguous) tensor.copy_(tensors[0]);
  return tensor;
}
}  // namespace

at::Tensor broadcast(const State& state, at::Tensor tensor, int from_process) {
  if (state.num_processes() == 1) {
    detail::check_process(state, from_process, "broadcast");
    return tensor;
  }
  const at::Tensor small =
      state.process_index() == from_process ? small_copy(state, tensor) : at::Tensor();
  const auto exchange =
      detail::enter_collective(state, tensor_signature("broadcast", tensor, from_process),
                               bytes_of(small), byte_count(small));
  expect_same_extra("broadcast", "source process", exchange.rows, show_number);
  detail::check_process(state, from_process, "broadcast");
  expect_same_dtype_and_shape("broadcast", exchange.rows);
  if (exchange.payload(static_cast<size_t>(from_process)) != nullptr) {
    if (state.process_index() != from_process)
      tensor.copy_(sent_tensor(exchange, static_cast<size_t>(from_process)));
    return tensor;
  }
  return broadcast_unchecked(state, std::move(tensor), from_process, "broadcast");
}

at::Tensor pad_across_processes(const State& state, const at::Tensor& tensor, int64_t dim,
                                double pad_index, bool pad_first) {
  if (dim >= tensor.dim() || dim < -tensor.dim()) return tensor;
  if (dim < 0) dim += tensor.dim();
  if (state.num_processes() == 1) return tensor;
  const auto rows =
      detail::enter_collective(state, tensor_signature("pad_across_processes", tensor, dim)).rows;
  expect_same_extra("pad_across_processes", "dim", rows, show_number);
  expect_same_dtype_and_rank("pad_across_processes", rows);
  int64_t longest = 0;
  for (const auto& row : rows) longest = std::max(longest, row.sizes[dim]);
  const int64_t mine = tensor.size(dim);
  if (longest == mine) return tensor;
  auto sizes = tensor.sizes().vec();
  sizes[dim] = longest;
  at::Tensor out = at::full(sizes, pad_index, tensor.options());
  out.narrow(dim, pad_first ? longest - mine : 0, mine).copy_(tensor);
  return out;
}

std::vector<std::string> gather_bytes(const State& state, const std::string& bytes) {
  if (state.num_processes() == 1) return {bytes};
  const auto n = static_cast<int64_t>(bytes.size());
  const auto exchange =
      detail::enter_collective(state, {"gather_object", -1, {n}, 0}, bytes.data(), n);
  const auto& rows = exchange.rows;
  if (exchange.all_sent()) {
    std::vector<std::string> out;
    for (size_t r = 0; r < rows.size(); ++r)
      out.emplace_back(reinterpret_cast<const char*>(exchange.payload(r)),
                       static_cast<std::size_t>(rows[r].payload_bytes));
    return out;
  }
  int64_t longest = 0;
  for (const auto& row : rows) longest = std::max(longest, row.sizes.at(0));
  at::Tensor data = at::zeros({longest}, at::kByte);
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(data.data_ptr<uint8_t>()));
  auto parts = all_gather_equal(state, data.to(state.device()), "gather_object");
  std::vector<std::string> out;
  for (size_t r = 0; r < rows.size(); ++r) {
    auto part = parts[r].cpu();
    out.emplace_back(reinterpret_cast<const char*>(part.data_ptr<uint8_t>()),
                     static_cast<std::size_t>(rows[r].sizes[0]));
  }
  return out;
}

std::string broadcast_bytes(const State& state, const std::string& bytes, int from_process) {
  if (state.num_processes() == 1) {
    detail::check_process(state, from_process, "broadcast_object");
    return bytes;
  }
  const auto n = static_cast<int64_t>(bytes.size());
  const bool source = state.process_index() == from_process;
  const auto exchange = detail::enter_collective(state, {"broadcast_object", -1, {n}, from_process},
                                                 source ? bytes.data() : nullptr, source ? n : -1);
  const auto& rows = exchange.rows;
  expect_same_extra("broadcast_object", "source process", rows, show_number);
  detail::check_process(state, from_process, "broadcast_object");
  if (const uint8_t* sent = exchange.payload(static_cast<size_t>(from_process)))
    return std::string(
        reinterpret_cast<const char*>(sent),
        static_cast<std::size_t>(rows[static_cast<size_t>(from_process)].payload_bytes));
  const int64_t length = rows[static_cast<size_t>(from_process)].sizes.at(0);
  at::Tensor data = at::empty({length}, at::kByte);
  if (state.process_index() == from_process)
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(data.data_ptr<uint8_t>()));
  data =
      broadcast_unchecked(state, data.to(state.device()), from_process, "broadcast_object").cpu();
  return std::string(reinterpret_cast<const char*>(data.data_ptr<uint8_t>()),
                     static_cast<std::size_t>(length));
}

std::pair<int64_t, int64_t> split_range(int64_t length, int process_index, int num_processes) {
  const int64_t per = length / num_processes;
  const int64_t extras = length % num_processes;
  const int64_t start = process_index * per + std::min<int64_t>(process_index, extras);
  const int64_t end = start + per + (process_index < extras ? 1 : 0);
  return {start, end};
}

at::Tensor split_between_processes(const State& state, const at::Tensor& tensor,
                                   bool apply_padding) {
  if (state.num_processes() == 1 || tensor.dim() == 0 || tensor.size(0) == 0) return tensor;
  const int64_t n = tensor.size(0);
  auto [start, end] = split_range(n, state.process_index(), state.num_processes());
  at::Tensor share = tensor.narrow(0, start, end - start);  // empty past the end
  if (!apply_padding) return share;
  const int64_t longest = n / state.num_processes() + (n % state.num_processes() ? 1 : 0);
  if (share.size(0) == longest) return share;
  auto last = tensor.narrow(0, n - 1, 1);
  std::vector<int64_t> repeat(static_cast<std::size_t>(tensor.dim()), 1);
  repeat[0] = longest - share.size(0);
  return at::cat({share, last.repeat(repeat)}, 0);
}

}  // namespace accelerate
