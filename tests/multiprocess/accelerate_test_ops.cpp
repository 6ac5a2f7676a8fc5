// The checks of Accelerate 1.15's accelerate/test_utils/scripts/test_ops.py, as a program run
// under `accelerate-cpp launch` (multiprocess_test.cpp: 2 and 3 processes). Prints one line per
// check ("testing gather", ...) on the main process, exits 1 naming the first failures.
//
// Ported: gather, gather_object, gather of a non-contiguous tensor, broadcast,
// pad_across_processes, reduce sum / mean / max (Python runs them with 2 processes only and
// compares to literals; here the truth is computed for any number of processes), and the
// operation checker (tensors of different shapes on different processes make pad, reduce and
// broadcast fail on every process, where Accelerate raises DistributedOperationException in
// debug mode; accelerate-cpp always checks and throws accelerate::InvalidArgument).
// Skipped: copy_tensor_to_devices (Python runs it on multi-GPU / XLA only; accelerate-cpp has
// no such function); XLA special cases.
#include <accelerate/accelerate.h>

#include <ATen/ATen.h>

#include <iostream>
#include <string>
#include <vector>

#include "script_check.h"
#include "test_ops_values.h"

namespace acc = accelerate;
using accelerate::testing::create_tensor;
using accelerate::testing::values_of;

namespace {

std::vector<double> iota(int64_t from, int64_t to) {  // [from, to)
  std::vector<double> v;
  for (int64_t i = from; i < to; ++i) v.push_back(static_cast<double>(i));
  return v;
}

int run() {
  acc::Accelerator a;
  acc::testing::ScriptCheck check("accelerate_test_ops", a.process_index());
  const int n = a.num_processes();

  a.print("testing gather");
  check(values_of(a.gather(create_tensor(a))) == iota(1, n * n + 1), "gather");

  a.print("testing gather_object");
  const std::vector<int> objects = a.gather_object(std::vector<int>{a.process_index()});
  std::vector<int> expected_objects;
  for (int i = 0; i < n; ++i) expected_objects.push_back(i);
  check(objects == expected_objects, "gather_object");

  a.print("testing gather non-contiguous");
  const at::Tensor nc = at::arange(12, at::TensorOptions().device(a.device())).view({4, 3}).t();
  check(!nc.is_contiguous(), "the tensor should be non-contiguous");
  const at::Tensor gathered = a.gather(nc);
  check(gathered.sizes() == at::IntArrayRef({3 * n, 4}) &&
            at::equal(gathered.cpu(), at::cat(std::vector<at::Tensor>(n, nc.cpu()))),
        "gather of a non-contiguous tensor");

  a.print("testing broadcast");
  const at::Tensor b = a.broadcast(create_tensor(a));
  check(b.sizes() == at::IntArrayRef({n}) && values_of(b) == iota(1, n + 1), "broadcast");

  a.print("testing pad_across_processes");
  const at::Tensor mine = at::arange(a.is_main_process() ? n + 1 : n).to(a.device());
  const at::Tensor padded = a.pad_across_processes(mine);
  check(padded.sizes() == at::IntArrayRef({n + 1}), "pad_across_processes: shape");
  if (!a.is_main_process()) {
    std::vector<double> want = iota(0, n);
    want.push_back(0);
    check(values_of(padded) == want, "pad_across_processes: values");
  }

  const auto [sum, mean, max] = acc::testing::expected_reductions(n);
  a.print("testing reduce_sum");
  check(at::allclose(a.reduce(create_tensor(a), "sum").cpu(), at::tensor(sum, at::kFloat)),
        "reduce sum");
  a.print("testing reduce_mean");
  check(at::allclose(a.reduce(create_tensor(a), "mean").cpu(), at::tensor(mean, at::kFloat)),
        "reduce mean");
  a.print("testing reduce_max");
  check(at::allclose(a.reduce(create_tensor(a), "max").cpu(), at::tensor(max, at::kFloat)),
        "reduce max");

  a.print("testing op_checker");
  if (n > 1) {
    const auto dev = at::TensorOptions().device(a.device());
    const at::Tensor row = at::arange(5, dev.dtype(at::kFloat)).view({1, 5});
    const at::Tensor deeper =
        a.process_index() == 0 ? row : at::arange(6, dev.dtype(at::kFloat)).view({1, 1, 6});
    check.throws<acc::InvalidArgument>([&] { a.pad_across_processes(deeper, 0); },
                                       "pad_across_processes of tensors of different ranks");
    const at::Tensor two_rows =
        a.process_index() == 0 ? row : at::arange(10, dev.dtype(at::kFloat)).view({1, 2, 5});
    check.throws<acc::InvalidArgument>([&] { a.reduce(two_rows); },
                                       "reduce of tensors of different shapes");
    check.throws<acc::InvalidArgument>([&] { a.broadcast(two_rows.clone()); },
                                       "broadcast of tensors of different shapes");
    // The job is still usable after the failed calls.
    check(values_of(a.gather(create_tensor(a))) == iota(1, n * n + 1), "gather after the errors");
  }
  a.wait_for_everyone();
  return check.exit_code();
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::cerr << "accelerate_test_ops: " << e.what() << std::endl;
    return 1;
  }
}
