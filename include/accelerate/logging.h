// accelerate/logging.h: a logger that knows which process it runs in (Accelerate's
// `accelerate.logging.get_logger`).
//
// By default a message is written once per job, by the main process; `all_processes()` writes
// it on every process with a "[rank N]" prefix, and `in_order(state)` writes it on every
// process one after the other (a collective: every process must make the call). Messages use
// fmt's syntax ("{}", "{:.4f}", "{:>8}"); they are formatted inside the library (spdlog and
// fmt), so this header needs neither and a program may use whatever fmt its LibTorch bundles.
//
// Example:
//   auto logger = acc::get_logger("train");              // level: ACCELERATE_LOG_LEVEL or info
//   logger.info("epoch {} loss {:.4f}", epoch, loss);    // once per job
//   logger.all_processes().debug("shard has {} samples", n);
//   logger.in_order(accelerator.state()).info("rank done");
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "accelerate/format.h"

namespace accelerate {

class State;
class Logger;

/// The severity of a log message, lowest first; `off` writes nothing.
enum class LogLevel { trace, debug, info, warning, error, critical, off };

/// The level's name as set_level accepts it ("trace", ..., "warning", ..., "off").
std::string to_string(LogLevel level);

namespace detail {
/// One argument of a log message, captured by value and formatted inside the library (see
/// format_arg in format.h).
using LogArg = FormatArg;
struct LoggerImpl;
/// The loggers of one `State` (each State owns one), or of the process before any State.
struct LoggerRegistry;
/// A registry whose loggers start at `default_level` ("" is info). Throws
/// std::invalid_argument naming the level and `source` (e.g. "ACCELERATE_LOG_LEVEL") when it
/// is not a level.
std::shared_ptr<LoggerRegistry> make_logger_registry(const std::string& default_level,
                                                     const std::string& source);
/// The logger `name` of `registry` (created at the registry's default level on first use),
/// for process `process_index`; a non-empty `log_level` sets its level.
Logger make_logger(LoggerRegistry& registry, const std::string& name, int process_index,
                   const std::string& log_level);
}  // namespace detail

/// A process-aware logger; cheap to copy (copies share one underlying logger per name).
class Logger {
 public:
  /// Receives each line a logger writes on this process: its level and its text (with the
  /// "[rank N] " prefix of all_processes / in_order messages), without time or name.
  using Sink = std::function<void(LogLevel level, const std::string& line)>;

  /// Writes a trace message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void trace(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::trace))
      log(LogLevel::trace, format, {detail::format_arg(args)...});
  }
  /// Writes a debug message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void debug(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::debug))
      log(LogLevel::debug, format, {detail::format_arg(args)...});
  }
  /// Writes an info message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void info(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::info))
      log(LogLevel::info, format, {detail::format_arg(args)...});
  }
  /// Writes a warning (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void warning(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::warning))
      log(LogLevel::warning, format, {detail::format_arg(args)...});
  }
  /// Writes an error message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void error(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::error))
      log(LogLevel::error, format, {detail::format_arg(args)...});
  }
  /// Writes a critical message (fmt syntax: "loss {:.3f}"), if the level and the process allow it.
  template <typename... Args>
  void critical(const std::string& format, const Args&... args) const {
    if (in_order_processes_ > 0 || enabled(LogLevel::critical))
      log(LogLevel::critical, format, {detail::format_arg(args)...});
  }
  /// Writes `format` with `args` at `level`. Throws std::invalid_argument naming the format
  /// string when it does not fit the arguments (an unknown specification, too few arguments).
  void log(LogLevel level, const std::string& format, std::vector<detail::LogArg> args) const;

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
  bool enabled(LogLevel level) const;
  /// Sends every line this logger name writes (on this process) to `sink` as well as to
  /// standard error, e.g. to capture or forward them.
  void add_sink(Sink sink) const;

 private:
  friend Logger detail::make_logger(detail::LoggerRegistry&, const std::string&, int,
                                    const std::string&);
  Logger(std::shared_ptr<detail::LoggerImpl> impl, int process_index);
  void emit(LogLevel level, const std::string& message) const;

  std::shared_ptr<detail::LoggerImpl> impl_;
  int process_index_;
  bool main_process_only_ = true;
  // in_order: the number of processes and a barrier over them (the State's).
  int in_order_processes_ = 0;
  std::function<void()> in_order_barrier_;
};

/// The logger `name` of the process (created on first use, shared afterwards, writing to
/// stderr), for use before or without an Accelerator. The process index and the default level
/// (ACCELERATE_LOG_LEVEL, else info) are read from the environment once, at the first call.
/// `log_level` (see Logger::set_level) sets the level when not empty.
Logger get_logger(const std::string& name, const std::string& log_level = "");
/// The logger `name` of `state`: each State owns its loggers, at the level its environment
/// gave (LaunchInfo::log_level), so ranks run as threads in one process do not share levels
/// or sinks.
Logger get_logger(const std::string& name, const State& state, const std::string& log_level = "");
}  // namespace accelerate
