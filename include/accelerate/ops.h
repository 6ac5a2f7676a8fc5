// accelerate/ops.h: collectives with Accelerate's semantics, over a `State`.
//
// Each function is the identity (or a copy) with one process and a c10d collective with
// several. The `Accelerator` methods of the same names call these; they are also usable on
// their own with a `State`.
//
// Example:
//   accelerate::State state;
//   auto t = torch::arange(4) + 1 + 4 * state.process_index();
//   auto all = accelerate::gather(state, t);             // 1..4N on every process
//   auto sum = accelerate::reduce(state, t, accelerate::ReduceOp::SUM);
//   auto names = accelerate::gather_object(state, std::string("worker"));
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "accelerate/object_bytes.h"
#include "accelerate/state.h"

namespace accelerate {

/// The reductions of `reduce`.
enum class ReduceOp { SUM, MEAN, MAX, MIN, PRODUCT };

/// Parses "sum" | "mean" | "max" | "min" | "product"; throws std::invalid_argument otherwise.
ReduceOp parse_reduce_op(const std::string& name);

/// Concatenates every process's tensor along dim 0, in process order; a 0-d tensor counts as
/// shape [1]. Tensors may differ in their first dimension only (padded for the transfer and
/// trimmed after); any other difference throws std::invalid_argument naming both ranks.
at::Tensor gather(const State& state, const at::Tensor& tensor);

/// A new tensor holding the reduction over all processes of `tensor` × `scale`. MEAN divides
/// the sum by num_processes() and needs a floating-point tensor.
at::Tensor reduce(const State& state, const at::Tensor& tensor, ReduceOp op = ReduceOp::SUM,
                  double scale = 1.0);

/// Copies `tensor` of process `from_process` into `tensor` on every process (in place) and
/// returns it. Shapes must match.
at::Tensor broadcast(const State& state, at::Tensor tensor, int from_process = 0);

/// Pads `tensor` along `dim` with `pad_index` to the largest size any process has there, at
/// the end, or at the front when `pad_first`. Returns `tensor` itself when no padding is
/// needed or `dim` is out of range (as Accelerate does).
at::Tensor pad_across_processes(const State& state, const at::Tensor& tensor, int64_t dim = 0,
                                double pad_index = 0, bool pad_first = false);

/// Every process's bytes, in process order.
std::vector<std::string> gather_bytes(const State& state, const std::string& bytes);

/// The bytes of `from_process`, on every process.
std::string broadcast_bytes(const State& state, const std::string& bytes, int from_process);

/// [start, end) of the share of `process_index` when `length` items are split over
/// `num_processes` (the first length % num_processes get one more), as Accelerate does.
std::pair<int64_t, int64_t> split_range(int64_t length, int process_index, int num_processes);

namespace detail {
template <typename T>
struct is_vector : std::false_type {};
template <typename T, typename A>
struct is_vector<std::vector<T, A>> : std::true_type {};
void check_process(const State& state, int process, const char* what);
}  // namespace detail

/// Gathers an object that ObjectCodec can write (numbers, strings, vectors, maps, pairs,
/// tuples, optionals, or a type with its own ObjectCodec; see object_bytes.h). A std::vector
/// is concatenated over the processes, as Accelerate's `gather_object` does with lists;
/// anything else gives one element per process.
///
/// Example: auto ranks = gather_object(state, std::vector<int>{rank});  // {0, 1, ..., N-1}
template <typename T>
auto gather_object(const State& state, const T& object) {
  using Out = std::conditional_t<detail::is_vector<T>::value, T, std::vector<T>>;
  Out out;
  for (const std::string& part : gather_bytes(state, to_object_bytes(object))) {
    T value = from_object_bytes<T>(part, "gather_object");
    if constexpr (detail::is_vector<T>::value)
      out.insert(out.end(), std::make_move_iterator(value.begin()),
                 std::make_move_iterator(value.end()));
    else
      out.push_back(std::move(value));
  }
  return out;
}

/// `object` as process `from_process` has it, on every process.
template <typename T>
T broadcast_object(const State& state, const T& object, int from_process = 0) {
  if (state.num_processes() == 1) {
    detail::check_process(state, from_process, "broadcast_object");
    return object;
  }
  const std::string mine =
      state.process_index() == from_process ? to_object_bytes(object) : std::string();
  return from_object_bytes<T>(broadcast_bytes(state, mine, from_process), "broadcast_object");
}

/// This process's contiguous share of `items` (17 items over 4 processes: 5, 4, 4, 4; with
/// fewer items than processes the last processes get none), as Accelerate's
/// `split_between_processes`. With `apply_padding` every share has the length of the longest,
/// padded with the last item of `items`. With one process, all of `items`.
template <typename T>
std::vector<T> split_between_processes(const State& state, const std::vector<T>& items,
                                       bool apply_padding = false) {
  if (state.num_processes() == 1 || items.empty()) return items;
  const auto n = static_cast<int64_t>(items.size());
  auto [start, end] = split_range(n, state.process_index(), state.num_processes());
  std::vector<T> share(items.begin() + start, items.begin() + end);  // empty past the end
  if (apply_padding) {
    const int64_t longest = n / state.num_processes() + (n % state.num_processes() ? 1 : 0);
    share.resize(static_cast<size_t>(longest), items.back());  // the input's last item
  }
  return share;
}

/// A map of lists split value by value (Accelerate's `split_between_processes` of a dict): this
/// process's share of each list, under the same key.
template <typename K, typename T>
std::map<K, std::vector<T>> split_between_processes(const State& state,
                                                    const std::map<K, std::vector<T>>& items,
                                                    bool apply_padding = false) {
  std::map<K, std::vector<T>> shares;
  for (const auto& [key, values] : items)
    shares.emplace(key, split_between_processes(state, values, apply_padding));
  return shares;
}

/// This process's share of `tensor` along dim 0, with the same rules as for vectors (padding
/// repeats the last row of `tensor`).
at::Tensor split_between_processes(const State& state, const at::Tensor& tensor,
                                   bool apply_padding = false);

/// A map of tensors split value by value along dim 0, as a map of lists.
template <typename K>
std::map<K, at::Tensor> split_between_processes(const State& state,
                                                const std::map<K, at::Tensor>& items,
                                                bool apply_padding = false) {
  std::map<K, at::Tensor> shares;
  for (const auto& [key, value] : items)
    shares.emplace(key, split_between_processes(state, value, apply_padding));
  return shares;
}

}  // namespace accelerate
