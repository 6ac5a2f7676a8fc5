// config.h - Accelerate-compatible YAML configuration of the accelerate-cpp command line.
//
// `accelerate-cpp config` writes, and `launch` / `test` / `env` read, the same file that
// Python's `accelerate config` writes (default: $HF_HOME/accelerate/default_config.yaml, with
// HF_HOME defaulting to $XDG_CACHE_HOME/huggingface or ~/.cache/huggingface). Keys that
// accelerate-cpp uses: num_processes, num_machines, machine_rank, main_process_ip,
// main_process_port, mixed_precision, use_cpu, distributed_type, and its own keys timeout,
// join_timeout, num_cpu_threads_per_process and gradient_accumulation_steps (named as the launch
// flags; Python's Accelerate knows none of them as keys). Other keys Accelerate writes are accepted
// and ignored when they hold their neutral value; anything else is an error that names the file and
// the key.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

namespace accelerate::cli {

/// A malformed configuration file; the message names the file and the key.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Largest configuration file read_config() accepts, in bytes (1 MiB); larger ones are refused
/// before they are parsed.
inline constexpr std::uintmax_t kMaxConfigFileBytes = std::uintmax_t{1} << 20;

/// True when `text` is a positive number of seconds written as digits with an optional decimal
/// part ("1800", "0.5", "2."); no sign, exponent, "inf" or "nan". What `launch --timeout` and
/// `--join_timeout` and the keys `timeout` and `join_timeout` accept.
bool is_positive_seconds(const std::string& text);

/// The value of `text` when it is a whole number from 1 to 2^30 written as digits only ("4",
/// "016"); no sign, spaces, decimals or exponent. What `launch --gradient_accumulation_steps`
/// and the keys gradient_accumulation_steps and num_cpu_threads_per_process accept.
std::optional<int> parse_positive_int(const std::string& text);

/// What a configuration file says; unset fields were not in the file.
struct LaunchConfig {
  std::optional<int> num_processes;
  std::optional<int> num_machines;
  std::optional<int> machine_rank;
  std::optional<std::string> main_process_ip;
  std::optional<int> main_process_port;
  std::optional<std::string> mixed_precision;  ///< "no" | "fp16" | "bf16"
  std::optional<bool> use_cpu;
  std::optional<std::string> distributed_type;  ///< NO | MULTI_CPU | MULTI_GPU
  /// Seconds, as written in the file (see is_positive_seconds()); exported as ACCELERATE_TIMEOUT.
  std::optional<std::string> timeout;
  /// Seconds, as written in the file; exported as ACCELERATE_JOIN_TIMEOUT (launch's
  /// --join_timeout).
  std::optional<std::string> join_timeout;
  /// OMP_NUM_THREADS of each process (launch's --num_cpu_threads_per_process), >= 1.
  std::optional<int> num_cpu_threads_per_process;
  /// Exported as ACCELERATE_GRADIENT_ACCUMULATION_STEPS (launch's
  /// --gradient_accumulation_steps), >= 1.
  std::optional<int> gradient_accumulation_steps;
};

/// Accelerate's default location of the configuration file, from `environ`.
std::string default_config_file();

/// Reads `path`. Throws ConfigError naming the file (and the key) when it cannot be read (missing,
/// a directory, no permission), is larger than kMaxConfigFileBytes, is not a YAML mapping, holds an
/// unknown key, a value of the wrong type, or asks for something accelerate-cpp does not do
/// (DeepSpeed, FSDP, TPU, ...).
LaunchConfig read_config(const std::string& path);

/// Writes `config` to `path` in Accelerate's layout (creating the folders), filling the keys
/// Python's Accelerate expects with their neutral values. Throws ConfigError on I/O errors.
void write_config(const std::string& path, const LaunchConfig& config);

}  // namespace accelerate::cli
