// The logger's spdlog side. This file sees spdlog and fmt but not LibTorch (it is compiled
// without LibTorch's include folders): LibTorch 2.x bundles its own fmt in its include folder,
// which would otherwise shadow the fmt that Debian's spdlog was built for.
#include "accelerate/logging.h"
#include "accelerate/errors.h"

#include <fmt/args.h>
#include <fmt/format.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <stdexcept>

namespace accelerate {
namespace detail {

struct LoggerImpl {
  std::shared_ptr<spdlog::logger> logger;
};

struct LoggerRegistry {
  std::mutex mutex;
  spdlog::level::level_enum default_level = spdlog::level::info;
  std::shared_ptr<spdlog::sinks::sink> stderr_sink;
  std::map<std::string, std::shared_ptr<LoggerImpl>> loggers;
};

}  // namespace detail

namespace {

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace:
      return spdlog::level::trace;
    case LogLevel::debug:
      return spdlog::level::debug;
    case LogLevel::info:
      return spdlog::level::info;
    case LogLevel::warning:
      return spdlog::level::warn;
    case LogLevel::error:
      return spdlog::level::err;
    case LogLevel::critical:
      return spdlog::level::critical;
    case LogLevel::off:
      break;
  }
  return spdlog::level::off;
}

LogLevel from_spdlog(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return LogLevel::trace;
    case spdlog::level::debug:
      return LogLevel::debug;
    case spdlog::level::info:
      return LogLevel::info;
    case spdlog::level::warn:
      return LogLevel::warning;
    case spdlog::level::err:
      return LogLevel::error;
    case spdlog::level::critical:
      return LogLevel::critical;
    default:
      return LogLevel::off;
  }
}

LogLevel parse_level(const std::string& text) {
  std::string v = text;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "warn") v = "warning";
  for (LogLevel level : {LogLevel::trace, LogLevel::debug, LogLevel::info, LogLevel::warning,
                         LogLevel::error, LogLevel::critical, LogLevel::off})
    if (v == to_string(level)) return level;
  throw InvalidArgument("accelerate: log level '" + text +
                        "' is not one of trace, debug, info, warning, error, critical, off");
}

// Hands each message's level and text to a Logger::Sink.
class FunctionSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit FunctionSink(Logger::Sink sink) : sink_(std::move(sink)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    sink_(from_spdlog(msg.level), std::string(msg.payload.data(), msg.payload.size()));
  }
  void flush_() override {}

 private:
  Logger::Sink sink_;
};

}  // namespace

std::string to_string(LogLevel level) {
  switch (level) {
    case LogLevel::trace:
      return "trace";
    case LogLevel::debug:
      return "debug";
    case LogLevel::info:
      return "info";
    case LogLevel::warning:
      return "warning";
    case LogLevel::error:
      return "error";
    case LogLevel::critical:
      return "critical";
    case LogLevel::off:
      break;
  }
  return "off";
}

std::shared_ptr<detail::LoggerRegistry> detail::make_logger_registry(
    const std::string& default_level, const std::string& source) {
  auto registry = std::make_shared<LoggerRegistry>();
  if (!default_level.empty()) {
    try {
      registry->default_level = to_spdlog(parse_level(default_level));
    } catch (const std::invalid_argument& e) {
      throw InvalidArgument(std::string(e.what()) + " (from " + source + ")");
    }
  }
  registry->stderr_sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
  return registry;
}

Logger detail::make_logger(LoggerRegistry& registry, const std::string& name, int process_index,
                           const std::string& log_level) {
  std::shared_ptr<LoggerImpl> impl;
  {
    std::lock_guard<std::mutex> lock(registry.mutex);
    auto& slot = registry.loggers[name];
    if (!slot) {
      // Not in spdlog's process-wide registry: each State's loggers are its own.
      auto logger = std::make_shared<spdlog::logger>(name, registry.stderr_sink);
      logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %v");
      logger->set_level(registry.default_level);
      slot = std::make_shared<LoggerImpl>(LoggerImpl{std::move(logger)});
    }
    impl = slot;
  }
  Logger logger(std::move(impl), process_index);
  if (!log_level.empty()) logger.set_level(log_level);
  return logger;
}

Logger::Logger(std::shared_ptr<detail::LoggerImpl> impl, int process_index)
    : impl_(std::move(impl)), process_index_(process_index) {}

Logger Logger::all_processes() const {
  Logger copy = *this;
  copy.main_process_only_ = false;
  copy.in_order_processes_ = 0;
  copy.in_order_barrier_ = nullptr;
  return copy;
}

void Logger::set_level(const std::string& level) {
  impl_->logger->set_level(to_spdlog(parse_level(level)));
}

bool Logger::enabled(LogLevel level) const {
  if (main_process_only_ && process_index_ != 0) return false;
  return impl_->logger->should_log(to_spdlog(level));
}

void Logger::add_sink(Sink sink) const {
  if (!sink) throw InvalidArgument("accelerate: Logger::add_sink: empty sink");
  auto s = std::make_shared<FunctionSink>(std::move(sink));
  s->set_level(spdlog::level::trace);
  impl_->logger->sinks().push_back(std::move(s));
}

void Logger::log(LogLevel level, const std::string& format,
                 std::vector<detail::LogArg> args) const {
  auto message = [&] {
    fmt::dynamic_format_arg_store<fmt::format_context> store;
    for (const auto& arg : args) std::visit([&](const auto& v) { store.push_back(v); }, arg);
    try {
      return fmt::vformat(format, store);
    } catch (const fmt::format_error& e) {
      throw InvalidArgument("accelerate: Logger: the format string \"" + format +
                            "\" does not fit its " + std::to_string(args.size()) +
                            " argument(s): " + e.what());
    }
  };
  if (in_order_processes_ > 0) {
    for (int i = 0; i < in_order_processes_; ++i) {
      if (i == process_index_ && impl_->logger->should_log(to_spdlog(level)))
        emit(level, message());
      in_order_barrier_();
    }
    return;
  }
  if (!enabled(level)) return;
  emit(level, message());
}

void Logger::emit(LogLevel level, const std::string& message) const {
  if (main_process_only_)
    impl_->logger->log(to_spdlog(level), message);
  else
    impl_->logger->log(to_spdlog(level), "[rank {}] {}", process_index_, message);
}

}  // namespace accelerate
