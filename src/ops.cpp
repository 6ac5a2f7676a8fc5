#include "accelerate/ops.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <sstream>
#include <stdexcept>

namespace accelerate {
namespace {

constexpr int64_t kMaxDims = 16;

c10d::ProcessGroup& group(const State& state) { return *state.process_group(); }

std::string shape_string(at::IntArrayRef sizes) {
  std::ostringstream os;
  os << sizes;
  return os.str();
}

void wait(const State& state, const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  try {
    work->wait(state.timeout());
  } catch (const c10::Error& e) {
    throw std::runtime_error("accelerate: " + state.describe() + ": " + what +
                             " failed: " + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error("accelerate: " + state.describe() + ": " + what +
                             " failed: " + e.what());
  }
}

// all_gather of equally shaped contiguous tensors; returns one tensor per process.
std::vector<at::Tensor> all_gather(const State& state, const at::Tensor& tensor, const char* what) {
  std::vector<at::Tensor> inputs{tensor.contiguous()};
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < state.num_processes(); ++r) outputs[0].push_back(at::empty_like(inputs[0]));
  wait(state, group(state).allgather(outputs, inputs), what);
  return outputs[0];
}

// Every process's [ndim, dtype, sizes...]; throws when ranks disagree on ndim or dtype.
std::vector<std::vector<int64_t>> gather_shapes(const State& state, const at::Tensor& tensor,
                                                const char* what) {
  if (tensor.dim() > kMaxDims)
    throw std::invalid_argument(std::string("accelerate: ") + what + ": tensors of more than " +
                                std::to_string(kMaxDims) + " dimensions are not supported");
  auto meta = at::zeros({kMaxDims + 2}, at::kLong);
  auto m = meta.accessor<int64_t, 1>();
  m[0] = tensor.dim();
  m[1] = static_cast<int64_t>(tensor.scalar_type());
  for (int64_t d = 0; d < tensor.dim(); ++d) m[d + 2] = tensor.size(d);
  std::vector<std::vector<int64_t>> out;
  for (const at::Tensor& t : all_gather(state, meta.to(state.device()), what)) {
    auto c = t.cpu();
    out.emplace_back(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + kMaxDims + 2);
  }
  for (int r = 0; r < state.num_processes(); ++r) {
    if (out[r][0] != out[0][0] || out[r][1] != out[0][1]) {
      auto describe = [&](int rank) {
        std::vector<int64_t> sizes(out[rank].begin() + 2, out[rank].begin() + 2 + out[rank][0]);
        return "rank " + std::to_string(rank) + " has shape " + shape_string(sizes) + " (" +
               c10::toString(static_cast<at::ScalarType>(out[rank][1])) + ")";
      };
      throw std::invalid_argument(std::string("accelerate: ") + what + ": " + describe(0) +
                                  " but " + describe(r) +
                                  "; every process must pass the same dtype and number of "
                                  "dimensions");
    }
  }
  return out;
}

}  // namespace

namespace detail {
void check_process(const State& state, int process, const char* what) {
  if (process < 0 || process >= state.num_processes())
    throw std::invalid_argument(std::string("accelerate: ") + what + ": process " +
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
  throw std::invalid_argument("accelerate: reduce: unknown reduction \"" + name +
                              "\" (expected sum, mean, max, min or product)");
}

at::Tensor gather(const State& state, const at::Tensor& tensor) {
  at::Tensor t = tensor.dim() == 0 ? tensor.reshape({1}) : tensor;
  if (state.num_processes() == 1) return t;
  const auto shapes = gather_shapes(state, t, "gather");
  int64_t longest = 0;
  bool uneven = false;
  for (int r = 0; r < state.num_processes(); ++r) {
    for (int64_t d = 1; d < t.dim(); ++d) {
      if (shapes[r][d + 2] != shapes[0][d + 2]) {
        std::vector<int64_t> a(shapes[0].begin() + 2, shapes[0].begin() + 2 + t.dim());
        std::vector<int64_t> b(shapes[r].begin() + 2, shapes[r].begin() + 2 + t.dim());
        throw std::invalid_argument("accelerate: gather: rank 0 has shape " + shape_string(a) +
                                    " but rank " + std::to_string(r) + " has " + shape_string(b) +
                                    "; only the first dimension may differ");
      }
    }
    longest = std::max(longest, shapes[r][2]);
    uneven = uneven || shapes[r][2] != shapes[0][2];
  }
  if (!uneven) return at::cat(all_gather(state, t, "gather"), 0);
  auto padded = pad_across_processes(state, t, 0, 0, false);
  auto parts = all_gather(state, padded, "gather");
  for (int r = 0; r < state.num_processes(); ++r) parts[r] = parts[r].narrow(0, 0, shapes[r][2]);
  return at::cat(parts, 0);
}

at::Tensor reduce(const State& state, const at::Tensor& tensor, ReduceOp op, double scale) {
  if (op == ReduceOp::MEAN && !at::isFloatingType(tensor.scalar_type()))
    throw std::invalid_argument(std::string("accelerate: reduce(mean) needs a floating-point ") +
                                "tensor, got " + c10::toString(tensor.scalar_type()));
  at::Tensor out = tensor.clone(at::MemoryFormat::Contiguous);
  if (scale != 1.0) out.mul_(scale);
  if (state.num_processes() == 1) return out;
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
  wait(state, group(state).allreduce(tensors, options), "reduce");
  if (op == ReduceOp::MEAN) out.div_(state.num_processes());
  return out;
}

at::Tensor broadcast(const State& state, at::Tensor tensor, int from_process) {
  detail::check_process(state, from_process, "broadcast");
  if (state.num_processes() == 1) return tensor;
  const bool contiguous = tensor.is_contiguous();
  std::vector<at::Tensor> tensors{contiguous ? tensor : tensor.contiguous()};
  c10d::BroadcastOptions options;
  options.rootRank = from_process;
  wait(state, group(state).broadcast(tensors, options), "broadcast");
  if (!contiguous) tensor.copy_(tensors[0]);
  return tensor;
}

at::Tensor pad_across_processes(const State& state, const at::Tensor& tensor, int64_t dim,
                                double pad_index, bool pad_first) {
  if (dim >= tensor.dim() || dim < -tensor.dim()) return tensor;
  if (dim < 0) dim += tensor.dim();
  if (state.num_processes() == 1) return tensor;
  const auto shapes = gather_shapes(state, tensor, "pad_across_processes");
  int64_t longest = 0;
  for (const auto& s : shapes) longest = std::max(longest, s[dim + 2]);
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
  auto options = at::TensorOptions().dtype(at::kByte).device(state.device());
  auto data = at::from_blob(const_cast<char*>(bytes.data()), {static_cast<int64_t>(bytes.size())},
                            at::kByte)
                  .to(options, /*non_blocking=*/false, /*copy=*/true);
  auto lengths =
      gather(state, at::full({1}, static_cast<int64_t>(bytes.size()),
                             at::TensorOptions().dtype(at::kLong).device(state.device())))
          .cpu();
  auto parts = all_gather(state, pad_across_processes(state, data, 0, 0, false), "gather_object");
  std::vector<std::string> out;
  for (int r = 0; r < state.num_processes(); ++r) {
    auto part = parts[r].cpu();
    out.emplace_back(reinterpret_cast<const char*>(part.data_ptr<uint8_t>()),
                     static_cast<std::size_t>(lengths.data_ptr<int64_t>()[r]));
  }
  return out;
}

std::string broadcast_bytes(const State& state, const std::string& bytes, int from_process) {
  detail::check_process(state, from_process, "broadcast_object");
  if (state.num_processes() == 1) return bytes;
  auto long_options = at::TensorOptions().dtype(at::kLong).device(state.device());
  auto length = broadcast(state, at::full({1}, static_cast<int64_t>(bytes.size()), long_options),
                          from_process)
                    .cpu()
                    .item<int64_t>();
  at::Tensor data = at::empty({length}, at::TensorOptions().dtype(at::kByte));
  if (state.process_index() == from_process)
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(data.data_ptr<uint8_t>()));
  data = broadcast(state, data.to(state.device()), from_process).cpu();
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
  at::Tensor share = start >= n ? tensor.narrow(0, n - 1, 1) : tensor.narrow(0, start, end - start);
  if (!apply_padding) return share;
  const int64_t longest = n / state.num_processes() + (n % state.num_processes() ? 1 : 0);
  if (share.size(0) == longest) return share;
  auto last = tensor.narrow(0, n - 1, 1);
  std::vector<int64_t> repeat(static_cast<std::size_t>(tensor.dim()), 1);
  repeat[0] = longest - share.size(0);
  return at::cat({share, last.repeat(repeat)}, 0);
}

}  // namespace accelerate
