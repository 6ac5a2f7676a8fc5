#include "accelerate/accelerator.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

namespace accelerate {

StateOptions AcceleratorOptions::state_options() const {
  StateOptions options;
  options.timeout(timeout_);
  if (cpu_) options.cpu(*cpu_);
  if (mixed_precision_) options.mixed_precision(*mixed_precision_);
  if (environment_) options.environment(*environment_);
  return options;
}

Accelerator::Accelerator(const AcceleratorOptions& options) : state_(options.state_options()) {}

Accelerator::~Accelerator() = default;

bool Accelerator::check_trigger() {
  auto flag =
      at::full({1}, trigger_ ? 1 : 0, at::TensorOptions().dtype(at::kLong).device(device()));
  const bool fired = accelerate::reduce(state_, flag, ReduceOp::SUM).item<int64_t>() > 0;
  if (fired) trigger_ = false;
  return fired;
}

MainProcessFirstGuard::MainProcessFirstGuard(const State& state, bool local)
    : state_(state),
      first_(local ? state.is_local_main_process() : state.is_main_process()),
      exceptions_(std::uncaught_exceptions()) {
  if (!first_) state_.wait_for_everyone();
}

MainProcessFirstGuard::~MainProcessFirstGuard() {
  // While an exception leaves the scope, skip the barrier: the peers are stopped by the
  // launcher (or time out) rather than this process hanging here.
  if (!first_ || std::uncaught_exceptions() > exceptions_) return;
  try {
    state_.wait_for_everyone();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    std::fflush(stderr);
    std::_Exit(1);
  }
}

}  // namespace accelerate
