#include "accelerate/logging.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace accelerate {
namespace {

spdlog::level::level_enum parse_level(const std::string& text) {
  std::string v = text;
  std::transform(v.begin(), v.end(), v.begin(), [](unsigned char c) { return std::tolower(c); });
  if (v == "trace") return spdlog::level::trace;
  if (v == "debug") return spdlog::level::debug;
  if (v == "info") return spdlog::level::info;
  if (v == "warning" || v == "warn") return spdlog::level::warn;
  if (v == "error") return spdlog::level::err;
  if (v == "critical") return spdlog::level::critical;
  if (v == "off") return spdlog::level::off;
  throw std::invalid_argument("accelerate: log level '" + text +
                              "' is not one of trace, debug, info, warning, error, critical, off");
}

std::shared_ptr<spdlog::logger> named_logger(const std::string& name) {
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = spdlog::stderr_color_mt(name);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%n] [%l] %v");
  return logger;
}

Logger make_logger(const std::string& name, int rank, const std::string& log_level) {
  Logger logger(named_logger(name), rank);
  std::string level = log_level;
  if (level.empty()) {
    const char* from_env = std::getenv("ACCELERATE_LOG_LEVEL");
    if (from_env) level = from_env;
  }
  if (!level.empty()) {
    try {
      logger.set_level(level);
    } catch (const std::invalid_argument& e) {
      if (!log_level.empty()) throw;
      throw std::invalid_argument(std::string(e.what()) + " (from ACCELERATE_LOG_LEVEL)");
    }
  }
  return logger;
}

}  // namespace

Logger::Logger(std::shared_ptr<spdlog::logger> logger, int process_index)
    : logger_(std::move(logger)), process_index_(process_index) {
  if (!logger_) throw std::invalid_argument("accelerate: Logger: null spdlog logger");
}

Logger Logger::all_processes() const {
  Logger copy = *this;
  copy.main_process_only_ = false;
  copy.in_order_ = nullptr;
  return copy;
}

Logger Logger::in_order(const State& state) const {
  Logger copy = *this;
  copy.main_process_only_ = false;
  copy.in_order_ = &state;
  copy.process_index_ = state.process_index();
  return copy;
}

void Logger::set_level(const std::string& level) { logger_->set_level(parse_level(level)); }

bool Logger::enabled(spdlog::level::level_enum level) const {
  if (main_process_only_ && process_index_ != 0) return false;
  return logger_->should_log(level);
}

void Logger::emit(spdlog::level::level_enum level, const std::string& message) const {
  if (main_process_only_) {
    logger_->log(level, message);
  } else {
    logger_->log(level, "[rank {}] {}", process_index_, message);
  }
}

Logger get_logger(const std::string& name, const std::string& log_level) {
  const LaunchInfo info = resolve_launch_info(process_environment());
  return make_logger(name, info.rank, log_level);
}

Logger get_logger(const std::string& name, const State& state, const std::string& log_level) {
  return make_logger(name, state.process_index(), log_level);
}

}  // namespace accelerate
