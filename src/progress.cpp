#include "accelerate/progress.h"
#include "accelerate/errors.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace accelerate {
namespace {

std::string clock_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  else
    std::snprintf(buf, sizeof(buf), "%02lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  return buf;
}

}  // namespace

ProgressBar::ProgressBar(int64_t total, ProgressBarOptions options)
    : total_(total),
      options_(std::move(options)),
      desc_(options_.desc()),
      out_(options_.out() ? options_.out() : &std::cerr) {
  if (total < 0)
    throw InvalidArgument("accelerate: ProgressBar: total " + std::to_string(total) +
                          " is negative");
  terminal_ =
      options_.terminal() ? *options_.terminal() : (out_ == &std::cerr && ::isatty(STDERR_FILENO));
  start_ = last_draw_ = std::chrono::steady_clock::now();
  if (!options_.disable() && terminal_) draw(false);
}

ProgressBar::ProgressBar(const State& state, int64_t total, ProgressBarOptions options)
    : ProgressBar(total, options.disable(options.disable() || !state.is_local_main_process())) {}

ProgressBar::~ProgressBar() {
  try {
    close();
  } catch (...) {  // a destructor must not throw: the stream is the user's
  }
}

void ProgressBar::update(int64_t n) {
  if (closed_) return;
  n_ += n;
  if (options_.disable()) return;
  const auto now = std::chrono::steady_clock::now();
  if (terminal_) {
    if (now - last_draw_ >= options_.min_interval() || (total_ > 0 && n_ >= total_)) draw(false);
  } else if (total_ > 0) {
    const int64_t decile = std::min<int64_t>(10, n_ * 10 / total_);
    if (decile > last_decile_ && decile < 10) draw(false);  // the 100% line comes from close()
  }
}

void ProgressBar::set_postfix(const std::map<std::string, double>& values) {
  std::ostringstream s;
  const char* sep = "";
  for (const auto& [k, v] : values) {
    s << sep << k << '=' << std::setprecision(4) << v;
    sep = ", ";
  }
  postfix_ = s.str();
}

void ProgressBar::set_description(const std::string& desc) { desc_ = desc; }

void ProgressBar::close() {
  if (closed_) return;
  closed_ = true;
  if (!options_.disable()) draw(true);
}

std::string ProgressBar::render() const {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? n_ / elapsed : 0;
  std::ostringstream s;
  if (!desc_.empty()) s << desc_ << ": ";
  if (total_ > 0) {
    const double frac = std::min(1.0, static_cast<double>(n_) / total_);
    constexpr int kWidth = 20;
    const int filled = static_cast<int>(frac * kWidth);
    s << std::setw(3) << static_cast<int>(frac * 100) << "%|" << std::string(filled, '#')
      << std::string(kWidth - filled, ' ') << "| " << n_ << '/' << total_ << " ["
      << clock_text(elapsed) << '<' << clock_text(rate > 0 ? (total_ - n_) / rate : std::nan(""))
      << ", ";
  } else {
    s << n_ << " [" << clock_text(elapsed) << ", ";
  }
  s << std::fixed << std::setprecision(2) << rate << options_.unit() << "/s";
  if (!postfix_.empty()) s << ", " << postfix_;
  s << ']';
  return s.str();
}

void ProgressBar::draw(bool final) {
  std::ostream& out = *out_;
  if (terminal_) {
    out << '\r' << render() << (final ? "\n" : "") << std::flush;
  } else {
    out << render() << '\n' << std::flush;
    if (total_ > 0) last_decile_ = std::min<int64_t>(10, n_ * 10 / total_);
  }
  last_draw_ = std::chrono::steady_clock::now();
}

}  // namespace accelerate
