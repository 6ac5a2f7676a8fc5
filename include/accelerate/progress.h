// accelerate/progress.h: a progress bar for training loops (what Python users get from tqdm,
// shown by Accelerate on the local main process only).
//
// On a terminal it redraws one line ("\r"); into a file or pipe it writes a line at every
// 10% and at the end, so logs stay readable.
//
// Example:
//   auto options = acc::ProgressBarOptions().desc("epoch 1");
//   acc::ProgressBar bar(accelerator.state(), dl->size(), options);
//   for (auto& batch : *dl) {
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
#include <optional>
#include <string>

#include "accelerate/options.h"
#include "accelerate/state.h"

namespace accelerate {

/// Options of a ProgressBar, with chained setters.
struct ProgressBarOptions {
  /// Text before the bar.
  ACCELERATE_ARG(std::string, desc);
  /// Shows nothing at all.
  ACCELERATE_ARG(bool, disable) = false;
  /// Redraw like a terminal ("\r", at most every min_interval) or write lines at every 10%;
  /// unset: a terminal when writing to std::cerr and stderr is one.
  ACCELERATE_ARG(std::optional<bool>, terminal);
  /// Least time between two redraws on a terminal.
  ACCELERATE_ARG(std::chrono::milliseconds, min_interval){100};
  /// Name of one step in the rate ("it" gives "12.5it/s").
  ACCELERATE_ARG(std::string, unit) = "it";

 public:
  /// Where to write (default std::cerr).
  ProgressBarOptions& out(std::ostream& value) {
    out_ = &value;
    return *this;
  }
  /// Where to write; null for std::cerr.
  std::ostream* out() const noexcept { return out_; }

 private:
  std::ostream* out_ = nullptr;
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
  const ProgressBarOptions options_;  // as given
  std::string desc_;                  // options_.desc() until set_description
  std::ostream* out_;                 // options_.out(), else std::cerr
  bool terminal_ = false;
  bool closed_ = false;
  std::string postfix_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  int64_t last_decile_ = 0;  // the 0% line is not written
};

}  // namespace accelerate
