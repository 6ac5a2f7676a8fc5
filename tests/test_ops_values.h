// The tensors of Accelerate's test_ops.py and what reducing them gives: process r of n holds
// [1 + n r, ..., n + n r] (test_ops.py's create_tensor). Shared by the rank-thread collective
// tests and the real-process programs.
#pragma once

#include <accelerate/accelerate.h>

#include <ATen/ATen.h>
#include <vector>

namespace accelerate::testing {

/// arange(n) + 1 + n * rank, on the accelerator's device.
inline at::Tensor create_tensor(const Accelerator& a) {
  const int n = a.num_processes();
  return (at::arange(n, at::kFloat) + 1 + n * a.process_index()).to(a.device());
}

/// Element by element, the sum, mean and max over the n processes of create_tensor().
struct ExpectedReductions {
  std::vector<double> sum, mean, max;
};

inline ExpectedReductions expected_reductions(int n) {
  ExpectedReductions e;
  for (int i = 0; i < n; ++i) {
    double s = 0;
    for (int r = 0; r < n; ++r) s += i + 1 + n * r;
    e.sum.push_back(s);
    e.mean.push_back(s / n);
    e.max.push_back(i + 1 + n * (n - 1));
  }
  return e;
}

}  // namespace accelerate::testing
