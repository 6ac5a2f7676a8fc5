// tests/multiprocess/script_check.h: what the ports of Accelerate's test scripts
// (accelerate_test_*.cpp) share: a failure count that names the rank and the check, and
// tensors as plain vectors for comparisons.
#pragma once

#include <ATen/ATen.h>

#include <iostream>
#include <string>
#include <vector>

namespace accelerate::testing {

class ScriptCheck {
 public:
  ScriptCheck(std::string program, int rank) : program_(std::move(program)), rank_(rank) {}
  /// Records a failure of `what` unless `ok`.
  void operator()(bool ok, const std::string& what) {
    if (ok) return;
    ++failures_;
    std::cerr << program_ << ": rank " << rank_ << ": FAILED: " << what << std::endl;
  }
  /// Runs `fn`, which must throw E; records a failure otherwise.
  template <typename E, typename F>
  void throws(F&& fn, const std::string& what) {
    try {
      fn();
    } catch (const E&) {
      return;
    } catch (const std::exception& e) {
      (*this)(false, what + ": threw another error: " + e.what());
      return;
    }
    (*this)(false, what + ": did not throw");
  }
  int failures() const { return failures_; }
  /// 0 when every check passed, else 1 (after saying how many failed).
  int exit_code() const {
    if (failures_ == 0) return 0;
    std::cerr << program_ << ": rank " << rank_ << ": " << failures_ << " check(s) failed\n";
    return 1;
  }

 private:
  std::string program_;
  int rank_;
  int failures_ = 0;
};

/// The elements of `t` as doubles, in order.
inline std::vector<double> values_of(const at::Tensor& t) {
  auto c = t.detach().to(at::kCPU).to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace accelerate::testing
