// The logger's process side: where the process index and the in_order barrier come from.
// Kept apart from logging.cpp, which must not see LibTorch's headers (see there).
#include "accelerate/logging.h"
#include "accelerate/state.h"

#include "launch_env.h"

namespace accelerate {

Logger Logger::in_order(const State& state) const {
  Logger copy = *this;
  copy.main_process_only_ = false;
  copy.process_index_ = state.process_index();
  copy.in_order_processes_ = state.num_processes();
  copy.in_order_barrier_ = [&state] { state.wait_for_everyone(); };
  return copy;
}

Logger get_logger(const std::string& name, const std::string& log_level) {
  // The process's own loggers, for code that runs before or without a State: the environment
  // is read once, here.
  struct Process {
    int rank;
    std::shared_ptr<detail::LoggerRegistry> loggers;
  };
  static const Process process = [] {
    const LaunchInfo info = resolve_launch_info(process_environment());
    return Process{info.rank, detail::make_logger_registry(info.log_level, launch_env::kLogLevel)};
  }();
  return detail::make_logger(*process.loggers, name, process.rank, log_level);
}

Logger get_logger(const std::string& name, const State& state, const std::string& log_level) {
  return detail::make_logger(state.loggers(), name, state.process_index(), log_level);
}

}  // namespace accelerate
