// accelerate/logging.h: a logger that knows which process it runs in (Accelerate's
// `accelerate.logging.get_logger`, over spdlog).
//
// By default a message is written once per job, by the main process; `all_processes()` writes
// it on every process with a "[rank N]" prefix, and `in_order(state)` writes it on every
// process one after the other (a collective: every process must make the call).
//
// Example:
//   auto logger = acc::get_logger("train");              // level: ACCELERATE_LOG_LEVEL or info
//   logger.info("epoch {} loss {:.4f}", epoch, loss);    // once per job
//   logger.all_processes().debug("shard has {} samples", n);
//   logger.in_order(accelerator.state()).info("rank done");
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <utility>

#include "accelerate/state.h"

namespace accelerate {

/// A process-aware logger; cheap to copy (it shares one spdlog logger per name).
class Logger {
 public:
  /// Wraps `logger` for the process of global index `process_index`.
  Logger(std::shared_ptr<spdlog::logger> logger, int process_index);

  /// Writes a trace message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void trace(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::trace, format, std::forward<Args>(args)...);
  }
  /// Writes a debug message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void debug(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::debug, format, std::forward<Args>(args)...);
  }
  /// Writes an info message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void info(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::info, format, std::forward<Args>(args)...);
  }
  /// Writes a warning (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void warning(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::warn, format, std::forward<Args>(args)...);
  }
  /// Writes an error message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void error(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::err, format, std::forward<Args>(args)...);
  }
  /// Writes a critical message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void critical(fmt::format_string<Args...> format, Args&&... args) const {
    log(spdlog::level::critical, format, std::forward<Args>(args)...);
  }

  /// A copy that writes on every process (Accelerate's `main_process_only=False`).
  Logger all_processes() const;
  /// A copy that writes on every process in process order, with a barrier of `state` after
  /// each process's turn (Accelerate's `in_order=True`). A collective: call it on every
  /// process, whatever the level. The copy refers to `state`: do not keep it longer.
  Logger in_order(const State& state) const;

  /// Sets the level: "trace", "debug", "info", "warning", "error", "critical" or "off"
  /// (case-insensitive). Throws std::invalid_argument naming the value otherwise.
  void set_level(const std::string& level);
  /// True when a message of `level` would be written by this process.
  bool enabled(spdlog::level::level_enum level) const;
  /// The spdlog logger underneath (sinks, pattern).
  const std::shared_ptr<spdlog::logger>& spdlog_logger() const { return logger_; }

 private:
  template <typename... Args>
  void log(spdlog::level::level_enum level, fmt::format_string<Args...> format,
           Args&&... args) const {
    if (in_order_) {
      for (int i = 0; i < in_order_->num_processes(); ++i) {
        if (i == process_index_ && logger_->should_log(level))
          emit(level, fmt::format(format, std::forward<Args>(args)...));
        in_order_->wait_for_everyone();
      }
      return;
    }
    if (!enabled(level)) return;
    emit(level, fmt::format(format, std::forward<Args>(args)...));
  }
  void emit(spdlog::level::level_enum level, const std::string& message) const;

  std::shared_ptr<spdlog::logger> logger_;
  int process_index_;
  bool main_process_only_ = true;
  const State* in_order_ = nullptr;
};

/// The logger `name` (created on first use, shared afterwards, writing to stderr). The
/// process index comes from the launch environment (RANK, ...; see resolve_launch_info), so it
/// works before and without an Accelerator. `log_level` (see Logger::set_level), else the
/// ACCELERATE_LOG_LEVEL environment variable, else "info", sets the level when not empty.
Logger get_logger(const std::string& name, const std::string& log_level = "");

/// The same, for the process described by `state` (e.g. ranks run as threads in one process).
Logger get_logger(const std::string& name, const State& state, const std::string& log_level = "");

}  // namespace accelerate
