// accelerate/tracking.h: experiment trackers (Accelerate's `accelerate.tracking`).
//
// The Accelerator owns the trackers named by AcceleratorOptions().log_with(...) and drives
// them on the main process only:
//
//   acc::Accelerator accelerator(acc::AcceleratorOptions().log_with("all").project_dir("runs"));
//   accelerator.init_trackers("mnist", {{"lr", 1e-3}, {"batch_size", 64}});
//   accelerator.log({{"train_loss", loss}, {"lr", lr}}, step);
//   accelerator.end_training();
//
// Built in: "tensorboard" (event files TensorBoard reads, and hparams.yml) and "csv"
// (metrics.csv and config.json). Other trackers implement GeneralTracker and are given to
// log_with as objects.
#pragma once

#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <variant>

namespace accelerate {

/// One value of a run's configuration: a bool, an integer, a floating-point number or a
/// string (what TensorBoard's hyper-parameters hold).
class ConfigValue {
 public:
  /// The value itself.
  using Variant = std::variant<bool, int64_t, double, std::string>;
  /// A bool.
  ConfigValue(bool value) : value_(value) {}
  /// Any integer type but bool.
  template <typename T,
            std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
  ConfigValue(T value) : value_(static_cast<int64_t>(value)) {}
  /// Any floating-point type.
  template <typename T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
  ConfigValue(T value) : value_(static_cast<double>(value)) {}
  /// A string.
  ConfigValue(std::string value) : value_(std::move(value)) {}
  /// A string literal.
  ConfigValue(const char* value) : value_(std::string(value)) {}
  /// The value.
  const Variant& value() const { return value_; }
  /// Equal when of the same kind and value.
  bool operator==(const ConfigValue& other) const { return value_ == other.value_; }

 private:
  Variant value_;
};

/// A run's configuration (hyper-parameters), as given to init_trackers:
/// `{{"lr", 1e-3}, {"batch_size", 64}, {"model", "cnn"}}`.
using TrackerConfig = std::map<std::string, ConfigValue>;

/// The interface of a tracker (Accelerate's `GeneralTracker`).
class GeneralTracker {
 public:
  virtual ~GeneralTracker() = default;
  /// "tensorboard", "csv", or a custom tracker's name (unique per Accelerator).
  virtual std::string name() const = 0;
  /// Records the run's configuration (hyper-parameters) once, at init_trackers.
  virtual void store_init_configuration(const TrackerConfig& config) = 0;
  /// Records scalar values at `step` (the tracker's own counter when empty).
  virtual void log(const std::map<std::string, double>& values, std::optional<int64_t> step) = 0;
  /// Flushes and closes (end_training).
  virtual void finish() {}
  /// Where this tracker writes, if it writes files.
  virtual std::string logging_dir() const { return {}; }
};

/// Writes TensorBoard event files (`events.out.tfevents.TIME.HOST.PID`, scalars as
/// simple values) into `logging_dir/run_name`, and the configuration to `hparams.yml` there.
class TensorBoardTracker : public GeneralTracker {
 public:
  /// Creates the folder and the event file. Throws std::runtime_error naming the path when it
  /// cannot be written.
  TensorBoardTracker(const std::string& run_name, const std::string& logging_dir);
  ~TensorBoardTracker() override;
  std::string name() const override { return "tensorboard"; }
  void store_init_configuration(const TrackerConfig& config) override;
  void log(const std::map<std::string, double>& values, std::optional<int64_t> step) override;
  void finish() override;
  std::string logging_dir() const override { return dir_; }
  /// The event file's path.
  const std::string& event_file() const { return path_; }

 private:
  void write_record(const std::string& data);
  std::string dir_;
  std::string path_;
  std::ofstream out_;
  int64_t next_step_ = 0;
};

/// Writes `metrics.csv` (columns wall_time,step,name,value: one row per value, so new names
/// may appear at any step) and `config.json` into `logging_dir/run_name`.
class CSVTracker : public GeneralTracker {
 public:
  /// Creates the folder and the file (appending when it exists, to continue a resumed run).
  /// Throws std::runtime_error naming the path when it cannot be written.
  CSVTracker(const std::string& run_name, const std::string& logging_dir);
  std::string name() const override { return "csv"; }
  void store_init_configuration(const TrackerConfig& config) override;
  void log(const std::map<std::string, double>& values, std::optional<int64_t> step) override;
  void finish() override;
  std::string logging_dir() const override { return dir_; }

 private:
  std::string dir_;
  std::ofstream out_;
  int64_t next_step_ = 0;
};

/// Throws std::invalid_argument naming `name` unless it is a built-in tracker ("tensorboard",
/// "csv").
void check_tracker_name(const std::string& name);

/// Creates the built-in tracker `name` ("tensorboard" or "csv"); throws std::invalid_argument
/// naming an unknown name.
std::unique_ptr<GeneralTracker> make_tracker(const std::string& name, const std::string& run_name,
                                             const std::string& logging_dir);

/// CRC-32C (Castagnoli) of `size` bytes, as TFRecord framing uses it (exposed for tests).
uint32_t crc32c(const void* data, size_t size);

}  // namespace accelerate
