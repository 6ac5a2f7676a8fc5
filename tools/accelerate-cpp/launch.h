// launch.h - building a launch: what `accelerate-cpp launch` (and `test`) start, and how.
//
// From the command line and the configuration file (LaunchOptions) to the processes of this
// machine: each one's environment (the names in src/launch_env.h: torchrun's contract and
// Accelerate's variables), its threads, the executable; then the supervisor (supervisor.h) runs
// them, restarting the group up to --max_restarts times, with the job's port (ports.h) reserved
// and the ranks' status lines (ACCELERATE_STATUS_DIR) reported when the job is stopped.
#pragma once

#include <CLI/CLI.hpp>

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace accelerate::cli {

/// A problem with the command line; reported as "<command>: error: <what>" with exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The environment of a child process, as "NAME=value" entries in their original order.
class Environment {
 public:
  /// The launcher's own environment.
  static Environment inherited();

  void set(const std::string& name, const std::string& value) {
    auto it = find(name);
    if (it != entries_.end()) {
      *it = name + "=" + value;
    } else {
      entries_.push_back(name + "=" + value);
    }
  }

  const std::vector<std::string>& entries() const { return entries_; }

  /// The value of `name`, if it is set.
  std::optional<std::string> get(const std::string& name) const {
    auto it = find(name);
    if (it == entries_.end()) return std::nullopt;
    return it->substr(name.size() + 1);
  }

 private:
  std::vector<std::string>::iterator find(const std::string& name) {
    return std::find_if(entries_.begin(), entries_.end(), [&](const std::string& e) {
      return e.size() > name.size() && e.compare(0, name.size(), name) == 0 &&
             e[name.size()] == '=';
    });
  }
  std::vector<std::string>::const_iterator find(const std::string& name) const {
    return const_cast<Environment*>(this)->find(name);
  }

  std::vector<std::string> entries_;
};

/// Physical cores this process may run on: the distinct cores (package and core id in sysfs) of
/// the CPUs in its affinity mask, so that a container or `taskset` limit counts; the number of
/// those CPUs when the topology cannot be read. Python's Accelerate counts
/// psutil.cpu_count(logical=False), the whole machine's physical cores.
long usable_physical_cores();

/// OMP_NUM_THREADS for each process the launcher starts, and where it came from.
struct ThreadsChoice {
  std::string value;
  std::string source;
};

/// Accelerate's rule: --num_cpu_threads_per_process (or the config key: `given` > 0), else an
/// inherited OMP_NUM_THREADS, else physical cores / processes on this machine when that is
/// more than 1, else 1.
ThreadsChoice threads_per_process(int given, const Environment& env, int local_processes);

/// Options of `accelerate-cpp launch` (flag names follow Hugging Face Accelerate).
struct LaunchOptions {
  int num_processes = 1;  ///< processes in the whole job (Accelerate: total over all machines)
  int num_machines = 1;
  int machine_rank = 0;
  std::string main_process_ip;  ///< empty: 127.0.0.1 (single machine only)
  int main_process_port = 0;    ///< 0: pick a free port
  std::string mixed_precision;  ///< empty: not given, ACCELERATE_MIXED_PRECISION is not set
  bool cpu = false;
  int num_cpu_threads_per_process = 0;  ///< 0: neither the flag nor the config key gave it
  /// ACCELERATE_GRADIENT_ACCUMULATION_STEPS as given; empty: not given
  std::string gradient_accumulation_steps;
  bool no_rank_prefix = false;
  double grace_period = 5.0;  ///< seconds between SIGTERM and SIGKILL
  int max_restarts = 0;       ///< restarts of the whole group after a failure (torchrun's)
  std::string program;
  std::vector<std::string> args;  ///< everything after PROGRAM, untouched
  std::string config_file;        ///< empty: the default file, if it exists
  std::string timeout;            ///< seconds as given (ACCELERATE_TIMEOUT); empty: not given
  std::string join_timeout;       ///< seconds as given (ACCELERATE_JOIN_TIMEOUT); empty: not given

  CLI::App* command = nullptr;  ///< to tell which flags were given (they win over the file)
};

/// True when `--name` was given on the command line of `cmd`.
bool given(const CLI::App* cmd, const std::string& name);

/// The flags shared by `launch`, `config` and `test` (Accelerate's names).
void add_job_options(CLI::App* cmd, LaunchOptions& opts);

/// --num_cpu_threads_per_process.
void add_threads_option(CLI::App* cmd, LaunchOptions& opts);

/// Registers `launch` on `app`, filling `opts` when it is parsed.
CLI::App* add_launch_command(CLI::App& app, LaunchOptions& opts);

/// Throws UsageError for options out of range or inconsistent with each other.
void validate(const LaunchOptions& opts);

/// Runs `launch` (and `test`): applies the configuration file, validates, finds PROGRAM and
/// supervises its processes on this machine, restarting them up to --max_restarts times.
/// Returns the exit code (see run_processes()). Throws UsageError and ConfigError.
int run_launch(LaunchOptions opts);

/// Result of find_executable().
struct ExecutableLookup {
  /// Path to pass to execve() (absolute, or relative to the current directory); empty on failure.
  std::string path;
  /// Why the program cannot be run (e.g. "No such file or directory"); empty on success.
  std::string error;
  /// True when `path` names an executable regular file.
  bool ok() const { return error.empty(); }
};

/// Resolves `program` the way execvp() does: a name containing '/' is used as is, otherwise it is
/// looked up in $PATH. Checks that the result is a regular file the caller may execute.
ExecutableLookup find_executable(const std::string& program);

/// "rank 0 last entered reduce #18 3.2 s ago; rank 1 has not entered a collective" from the
/// status lines in `dir` (ACCELERATE_STATUS_DIR: accelerate-cpp programs keep "<collective>
/// <number> <unix ms>" of the collective they last entered in rank_<K>) of `ranks`; empty when
/// none of them wrote one.
std::string describe_rank_positions(const std::string& dir, const std::vector<int>& ranks);

}  // namespace accelerate::cli
