// accelerate/progress.h: a progress bar for training loops (what Python users get from tqdm,
// shown by Accelerate on the local main process only).
//
// On a terminal it redraws one line ("\r"); into a file or pipe it writes a line at every
// 10% and at the end, so logs stay readable.
//
// Example:
//   acc::ProgressBar bar(accelerator.state(), dl->size(), acc::ProgressBarOptions().desc("epoch
//   1")); for (auto& batch : *dl) {
//     ...
//     bar.set_postfix({{"loss", loss.item<double>()}});
//     bar.update();
//   }
//   bar.close();   // also done by the destructor
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <map>
#include <string>

#include "accelerate/state.h"

namespace accelerate {

/// Options of a ProgressBar, with chained setters.
struct ProgressBarOptions {
  /// Text before the bar.
  ProgressBarOptions& desc(std::string value) {
    desc_ = std::move(value);
    return *this;
  }
  /// Shows nothing at all.
  ProgressBarOptions& disable(bool value) {
    disable_ = value;
    return *this;
  }
  /// Where to write (default std::cerr).
  ProgressBarOptions& out(std::ostream& value) {
    out_ = &value;
    return *this;
  }
  /// Redraw like a terminal ("\r", at most every min_interval) or write lines at every 10%;
  /// default: a terminal when writing to std::cerr and stderr is one.
  ProgressBarOptions& terminal(bool value) {
    terminal_ = value ? 1 : 0;
    return *this;
  }
  /// Least time between two redraws on a terminal.
  ProgressBarOptions& min_interval(std::chrono::milliseconds value) {
    min_interval_ = value;
    return *this;
  }
  /// Name of one step in the rate ("it" gives "12.5it/s").
  ProgressBarOptions& unit(std::string value) {
    unit_ = std::move(value);
    return *this;
  }
  std::string desc_;                             ///< see desc()
  bool disable_ = false;                         ///< see disable()
  std::ostream* out_ = nullptr;                  ///< see out()
  int terminal_ = -1;                            ///< see terminal()
  std::chrono::milliseconds min_interval_{100};  ///< see min_interval()
  std::string unit_ = "it";                      ///< see unit()
};

/// A text progress bar: "desc:  45%|#####     | 45/100 [00:01<00:02, 33.20it/s, loss=0.123]".
/// Not copyable.
class ProgressBar {
 public:
  /// A bar of `total` steps (0: unknown, then no percentage). Throws std::invalid_argument for
  /// a negative total.
  explicit ProgressBar(int64_t total, ProgressBarOptions options = ProgressBarOptions());
  /// The same, shown on the local main process of `state` only (Accelerate's default).
  ProgressBar(const State& state, int64_t total, ProgressBarOptions options = ProgressBarOptions());
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  /// Advances by `n` steps and redraws when due.
  void update(int64_t n = 1);
  /// Values shown after the rate, e.g. {{"loss", 0.12}}; shown from the next redraw.
  void set_postfix(const std::map<std::string, double>& values);
  /// Replaces the text before the bar.
  void set_description(const std::string& desc);
  /// Draws the final state and ends the line. Idempotent.
  void close();

  /// Steps done so far.
  int64_t n() const { return n_; }
  /// The current line, without "\r" or newline.
  std::string render() const;

 private:
  void draw(bool final);
  int64_t total_;
  int64_t n_ = 0;
  ProgressBarOptions options_;
  bool terminal_ = false;
  bool closed_ = false;
  std::string postfix_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  int64_t last_decile_ = 0;  // the 0% line is not written
};

}  // namespace accelerate
