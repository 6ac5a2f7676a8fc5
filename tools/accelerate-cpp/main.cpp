// main.cpp - entry point of the `accelerate-cpp` command-line tool.
//
// Each subcommand registers its options on the CLI11 app (add_*_command) and has a run_* function
// that is called when it was selected: `launch`, `config` (writes Accelerate's YAML file),
// `env` (what is installed, and the configuration) and `test` (launches accelerate-cpp-test with
// the configuration). This file deliberately does not link LibTorch so that the launcher starts
// in a few milliseconds.
//
// Exit codes: 0 success, 2 usage error (including a bad configuration file); `launch` and `test`
// otherwise return what the supervisor reports (see supervisor.h).
#include <CLI/CLI.hpp>

#include <sched.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "network.h"
#include "supervisor.h"

#ifndef ACCELERATE_CPP_VERSION
#define ACCELERATE_CPP_VERSION "0.0.0"
#endif
#ifndef ACCELERATE_CPP_TORCH_VERSION
#define ACCELERATE_CPP_TORCH_VERSION "unknown"
#endif

extern char** environ;

namespace accelerate::cli {
namespace {

/// A private temporary folder for the ranks' status lines (ACCELERATE_STATUS_DIR), removed with
/// its files at the end; empty path when none could be made (the report is then skipped).
struct StatusFolder {
  std::string path;
  StatusFolder() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = std::string(tmp && *tmp ? tmp : "/tmp") + "/accelerate-cpp-status-XXXXXX";
    if (::mkdtemp(pattern.data())) path = pattern;
  }
  ~StatusFolder() {
    if (path.empty()) return;
    std::error_code ignored;
    std::filesystem::remove_all(path, ignored);
  }
  StatusFolder(const StatusFolder&) = delete;
  StatusFolder& operator=(const StatusFolder&) = delete;
};

constexpr int kUsageExitCode = 2;

/// A problem with the command line; reported as "<command>: error: <what>" with exit code 2.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

int report_usage_error(const std::string& command, const std::string& what) {
  std::cerr << command << ": error: " << what << "\n"
            << "Run '" << command << " --help' for usage.\n";
  return kUsageExitCode;
}

/// The environment of a child process, as "NAME=value" entries in their original order.
class Environment {
 public:
  static Environment inherited() {
    Environment env;
    for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
      env.entries_.emplace_back(*entry);
    }
    return env;
  }

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

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

/// Physical cores this process may run on: the distinct cores (package and core id in sysfs) of
/// the CPUs in its affinity mask, so that a container or `taskset` limit counts; the number of
/// those CPUs when the topology cannot be read. Python's Accelerate counts
/// psutil.cpu_count(logical=False), the whole machine's physical cores.
long usable_physical_cores() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  if (::sched_getaffinity(0, sizeof cpus, &cpus) != 0)
    return std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  std::set<std::pair<std::string, std::string>> cores;
  long usable = 0;
  bool topology = true;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    ++usable;
    const std::string dir = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
    const std::string package = first_line(dir + "physical_package_id");
    const std::string core = first_line(dir + "core_id");
    topology = topology && !package.empty() && !core.empty();
    cores.emplace(package, core);
  }
  return std::max(1L, topology ? static_cast<long>(cores.size()) : usable);
}

/// OMP_NUM_THREADS for each process the launcher starts, and where it came from.
struct ThreadsChoice {
  std::string value;
  std::string source;
};

/// Accelerate's rule: --num_cpu_threads_per_process (or the config key: `given` > 0), else an
/// inherited OMP_NUM_THREADS, else physical cores / processes on this machine when that is
/// more than 1, else 1.
ThreadsChoice threads_per_process(int given, const Environment& env, int local_processes) {
  if (given > 0)
    return {std::to_string(given), "--num_cpu_threads_per_process or the configuration"};
  if (const std::optional<std::string> inherited = env.get("OMP_NUM_THREADS"))
    return {*inherited, "OMP_NUM_THREADS of the launcher's environment"};
  const long cores = usable_physical_cores();
  return {std::to_string(std::max(1L, cores / std::max(1, local_processes))),
          std::to_string(cores) + " physical cores / " + std::to_string(local_processes) +
              " processes on this machine"};
}

// ---------------------------------------------------------------------------------------------
// launch
// ---------------------------------------------------------------------------------------------

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
bool given(const CLI::App* cmd, const std::string& name) {
  const CLI::Option* o = cmd->get_option_no_throw(name);
  return o != nullptr && o->count() > 0;
}

/// The flags shared by `launch` and `config` (Accelerate's names).
void add_job_options(CLI::App* cmd, LaunchOptions& opts) {
  cmd->add_option("--num_processes", opts.num_processes,
                  "Total number of processes over all machines (each machine runs "
                  "num_processes / num_machines)")
      ->capture_default_str();
  cmd->add_option("--num_machines", opts.num_machines, "Number of machines")->capture_default_str();
  cmd->add_option("--machine_rank", opts.machine_rank, "Rank of this machine (0-based)")
      ->capture_default_str();
  cmd->add_option("--main_process_ip", opts.main_process_ip,
                  "Address of the machine with rank 0 (default 127.0.0.1; required when "
                  "--num_machines > 1)");
  cmd->add_option("--main_process_port", opts.main_process_port,
                  "Port of the rendezvous on the main machine; 0 picks a free port (single "
                  "machine only)")
      ->capture_default_str();
  cmd->add_option("--mixed_precision", opts.mixed_precision,
                  "Sets ACCELERATE_MIXED_PRECISION for the processes")
      ->check(CLI::IsMember({"no", "fp16", "bf16"}));
  cmd->add_flag("--cpu", opts.cpu, "Force training on the CPU (ACCELERATE_USE_CPU=true)");
  cmd->add_option("--timeout", opts.timeout,
                  "Seconds the processes' collectives may wait (a positive number, decimals "
                  "allowed); exported as ACCELERATE_TIMEOUT");
  cmd->add_option("--join_timeout", opts.join_timeout,
                  "Seconds joining the job may take: reaching the main process's store and every "
                  "process arriving there (a positive number, decimals allowed; default 300, or "
                  "--timeout when shorter); exported as ACCELERATE_JOIN_TIMEOUT");
  cmd->add_option("--gradient_accumulation_steps", opts.gradient_accumulation_steps,
                  "Micro-steps per optimizer step (a whole number >= 1), exported as "
                  "ACCELERATE_GRADIENT_ACCUMULATION_STEPS: the Accelerator's default when the "
                  "program passes no gradient_accumulation_steps");
  cmd->add_option("--config_file", opts.config_file,
                  "Accelerate's YAML configuration (default: " + default_config_file() +
                      ", when it exists); flags given here win over it");
}

void add_threads_option(CLI::App* cmd, LaunchOptions& opts) {
  cmd->add_option(
      "--num_cpu_threads_per_process", opts.num_cpu_threads_per_process,
      "OMP_NUM_THREADS of each process (default: the inherited OMP_NUM_THREADS, else physical "
      "cores / processes on this machine when that is more than 1, else 1)");
}

/// Fills what the command line did not give from the configuration file: --config_file, else
/// the default file when it exists. Throws ConfigError for a bad file.
void apply_config(LaunchOptions& opts) {
  std::string path = opts.config_file;
  if (path.empty()) {
    path = default_config_file();
    std::error_code ec;  // e.g. no permission on a parent folder: read_config() says so
    if (!std::filesystem::exists(path, ec) && !ec) return;
  }
  const LaunchConfig c = read_config(path);
  const CLI::App* cmd = opts.command;
  if (c.num_processes && !given(cmd, "--num_processes")) opts.num_processes = *c.num_processes;
  if (c.num_machines && !given(cmd, "--num_machines")) opts.num_machines = *c.num_machines;
  if (c.machine_rank && !given(cmd, "--machine_rank")) opts.machine_rank = *c.machine_rank;
  if (c.main_process_ip && !given(cmd, "--main_process_ip"))
    opts.main_process_ip = *c.main_process_ip;
  if (c.main_process_port && !given(cmd, "--main_process_port"))
    opts.main_process_port = *c.main_process_port;
  if (c.mixed_precision && !given(cmd, "--mixed_precision"))
    opts.mixed_precision = *c.mixed_precision;
  if (c.use_cpu && !given(cmd, "--cpu")) opts.cpu = *c.use_cpu;
  if (c.timeout && !given(cmd, "--timeout")) opts.timeout = *c.timeout;
  if (c.join_timeout && !given(cmd, "--join_timeout")) opts.join_timeout = *c.join_timeout;
  if (c.num_cpu_threads_per_process && !given(cmd, "--num_cpu_threads_per_process"))
    opts.num_cpu_threads_per_process = *c.num_cpu_threads_per_process;
  if (c.gradient_accumulation_steps && !given(cmd, "--gradient_accumulation_steps"))
    opts.gradient_accumulation_steps = std::to_string(*c.gradient_accumulation_steps);
}

CLI::App* add_launch_command(CLI::App& app, LaunchOptions& opts) {
  CLI::App* cmd = app.add_subcommand(
      "launch",
      "Start PROGRAM as N local processes with the torchrun environment (RANK, WORLD_SIZE, "
      "LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT, ...) and supervise them: if one "
      "fails, the others are stopped.");
  add_job_options(cmd, opts);
  opts.command = cmd;
  add_threads_option(cmd, opts);
  cmd->add_flag("--no_rank_prefix", opts.no_rank_prefix,
                "Do not prefix output lines with \"[rank K] \"");
  cmd->add_option("--max_restarts", opts.max_restarts,
                  "Restart all processes of this machine up to N times when one fails "
                  "(TORCHELASTIC_RESTART_COUNT tells them which attempt this is)")
      ->capture_default_str();
  cmd->add_option("--grace_period", opts.grace_period,
                  "Seconds between SIGTERM and SIGKILL when stopping the processes")
      ->capture_default_str();
  cmd->add_option("PROGRAM", opts.program, "Program to run")->required();
  cmd->add_option("ARGS", opts.args, "Arguments passed to PROGRAM unchanged");
  // The first positional ends the launcher's options: everything after PROGRAM belongs to it.
  cmd->positionals_at_end();
  cmd->footer(
      "Everything after PROGRAM is passed to it unchanged, even arguments that look like "
      "launcher flags. Exit code: 0 if every process succeeded, the exit code of the "
      "first failed process (128+signal if it was killed), 128+signal if the launcher "
      "was interrupted, 2 on usage errors.");
  return cmd;
}

void validate(const LaunchOptions& opts) {
  if (opts.num_processes < 1) {
    throw UsageError("--num_processes must be at least 1 (got " +
                     std::to_string(opts.num_processes) + ")");
  }
  if (opts.num_machines < 1) {
    throw UsageError("--num_machines must be at least 1 (got " + std::to_string(opts.num_machines) +
                     ")");
  }
  if (opts.machine_rank < 0 || opts.machine_rank >= opts.num_machines) {
    throw UsageError("--machine_rank must be in [0, " + std::to_string(opts.num_machines - 1) +
                     "] (got " + std::to_string(opts.machine_rank) + ")");
  }
  if (opts.main_process_port < 0 || opts.main_process_port > 65535) {
    throw UsageError("--main_process_port must be in [0, 65535] (got " +
                     std::to_string(opts.main_process_port) + ")");
  }
  if (opts.num_machines > 1 && opts.main_process_ip.empty()) {
    throw UsageError("--main_process_ip is required when --num_machines > 1");
  }
  if (opts.num_machines > 1 && opts.main_process_port == 0) {
    throw UsageError("--main_process_port is required when --num_machines > 1");
  }
  if (given(opts.command, "--num_cpu_threads_per_process") &&
      opts.num_cpu_threads_per_process < 1) {
    throw UsageError("--num_cpu_threads_per_process must be at least 1 (got " +
                     std::to_string(opts.num_cpu_threads_per_process) + ")");
  }
  if (opts.max_restarts < 0) {
    throw UsageError("--max_restarts must be at least 0 (got " + std::to_string(opts.max_restarts) +
                     ")");
  }
  if (!std::isfinite(opts.grace_period) || opts.grace_period < 0 || opts.grace_period > 86400.0) {
    throw UsageError("--grace_period must be between 0 and 86400 seconds");
  }
  if (given(opts.command, "--gradient_accumulation_steps") &&
      !parse_positive_int(opts.gradient_accumulation_steps)) {
    throw UsageError(
        "--gradient_accumulation_steps must be a whole number of at least 1, e.g. 4 (got '" +
        opts.gradient_accumulation_steps + "')");
  }
  if (given(opts.command, "--timeout") && !is_positive_seconds(opts.timeout)) {
    throw UsageError("--timeout must be a positive number of seconds, e.g. 1800 or 0.5 (got '" +
                     opts.timeout + "')");
  }
  if (given(opts.command, "--join_timeout") && !is_positive_seconds(opts.join_timeout)) {
    throw UsageError("--join_timeout must be a positive number of seconds, e.g. 300 or 0.5 (got '" +
                     opts.join_timeout + "')");
  }
  if (opts.num_processes % opts.num_machines != 0) {
    throw UsageError("--num_processes (" + std::to_string(opts.num_processes) +
                     ") must be a multiple of --num_machines (" +
                     std::to_string(opts.num_machines) + ")");
  }
}

int launch_once(const LaunchOptions& opts, const std::string& executable, int attempt,
                bool* interrupted);

int run_launch(LaunchOptions opts) {
  apply_config(opts);
  validate(opts);
  const ExecutableLookup exe = find_executable(opts.program);
  if (!exe.ok()) throw UsageError("cannot run PROGRAM '" + opts.program + "': " + exe.error);

  for (int attempt = 0;; ++attempt) {
    bool interrupted = false;
    const int code = launch_once(opts, exe.path, attempt, &interrupted);
    if (code == 0 || interrupted || attempt >= opts.max_restarts) return code;
    std::cerr << "accelerate-cpp launch: restarting all processes (restart " << attempt + 1
              << " of " << opts.max_restarts << ") after exit code " << code << "\n";
  }
}

int launch_once(const LaunchOptions& opts, const std::string& executable, int attempt,
                bool* interrupted) {
  // A port we pick is locked against other launchers on this host for the whole job (the
  // supervisor's watchdog keeps the lock until the processes are gone, even if we are killed),
  // and held against other programs by a bound socket that rank 0's store can listen beside.
  PortReservation reservation;
  int port = opts.main_process_port;
  if (port == 0) {
    std::string why, warning;
    reservation = reserve_free_tcp_port(&why, &warning);
    if (!warning.empty()) std::cerr << "accelerate-cpp launch: warning: " << warning << "\n";
    port = reservation.port();
    if (port == 0) {
      std::cerr << "accelerate-cpp launch: cannot find a free port (" << why
                << "); pass --main_process_port\n";
      return 1;
    }
  }

  const int n = opts.num_processes / opts.num_machines;  // processes on this machine
  const long long world_size = opts.num_processes;
  Environment base = Environment::inherited();
  base.set("WORLD_SIZE", std::to_string(world_size));
  base.set("LOCAL_WORLD_SIZE", std::to_string(n));
  base.set("GROUP_RANK", std::to_string(opts.machine_rank));
  base.set("ROLE_WORLD_SIZE", std::to_string(world_size));
  base.set("MASTER_ADDR", opts.main_process_ip.empty() ? "127.0.0.1" : opts.main_process_ip);
  base.set("MASTER_PORT", std::to_string(port));
  if (!opts.mixed_precision.empty()) base.set("ACCELERATE_MIXED_PRECISION", opts.mixed_precision);
  base.set("ACCELERATE_USE_CPU", opts.cpu ? "true" : "false");
  if (!opts.timeout.empty()) base.set("ACCELERATE_TIMEOUT", opts.timeout);
  if (!opts.join_timeout.empty()) base.set("ACCELERATE_JOIN_TIMEOUT", opts.join_timeout);
  if (!opts.gradient_accumulation_steps.empty())
    base.set("ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
             std::to_string(*parse_positive_int(opts.gradient_accumulation_steps)));
  // Where the ranks keep their last collective, reported when the job is stopped.
  StatusFolder status;
  if (!status.path.empty()) base.set("ACCELERATE_STATUS_DIR", status.path);
  base.set("TORCHELASTIC_RESTART_COUNT", std::to_string(attempt));
  base.set("TORCHELASTIC_MAX_RESTARTS", std::to_string(opts.max_restarts));
  base.set("OMP_NUM_THREADS", threads_per_process(opts.num_cpu_threads_per_process, base, n).value);

  std::vector<ProcessSpec> specs(static_cast<size_t>(n));
  for (int local_rank = 0; local_rank < n; ++local_rank) {
    const long long rank = static_cast<long long>(opts.machine_rank) * n + local_rank;
    Environment env = base;
    env.set("RANK", std::to_string(rank));
    env.set("LOCAL_RANK", std::to_string(local_rank));
    env.set("ROLE_RANK", std::to_string(rank));
    ProcessSpec& spec = specs[static_cast<size_t>(local_rank)];
    spec.rank = static_cast<int>(rank);
    spec.executable = executable;
    spec.argv.reserve(opts.args.size() + 1);
    spec.argv.push_back(opts.program);
    spec.argv.insert(spec.argv.end(), opts.args.begin(), opts.args.end());
    spec.env = env.entries();
  }

  SupervisorOptions supervision;
  // One process in the whole job has no other output to be told apart from.
  supervision.prefix_output = !opts.no_rank_prefix && world_size > 1;
  supervision.grace_period =
      std::chrono::milliseconds(static_cast<long long>(std::llround(opts.grace_period * 1000.0)));
  supervision.name = "accelerate-cpp launch";
  supervision.interrupted = interrupted;
  supervision.watchdog_keep_fd = reservation.lock_fd();
  supervision.status_dir = status.path;
  return run_processes(specs, supervision);
}

// ---------------------------------------------------------------------------------------------
// config, env, test
// ---------------------------------------------------------------------------------------------

CLI::App* add_config_command(CLI::App& app, LaunchOptions& opts) {
  CLI::App* cmd = app.add_subcommand(
      "config",
      "Write the configuration file that launch, test and env read (Accelerate's YAML layout; "
      "Python's `accelerate launch` reads it too), from the flags given (defaults otherwise).");
  add_job_options(cmd, opts);
  add_threads_option(cmd, opts);
  opts.command = cmd;
  return cmd;
}

int run_config(const LaunchOptions& opts) {
  validate(opts);
  LaunchConfig c;
  c.num_processes = opts.num_processes;
  c.num_machines = opts.num_machines;
  c.machine_rank = opts.machine_rank;
  if (!opts.main_process_ip.empty()) c.main_process_ip = opts.main_process_ip;
  if (opts.main_process_port != 0) c.main_process_port = opts.main_process_port;
  c.mixed_precision = opts.mixed_precision.empty() ? "no" : opts.mixed_precision;
  c.use_cpu = opts.cpu;
  if (!opts.timeout.empty()) c.timeout = opts.timeout;
  if (!opts.join_timeout.empty()) c.join_timeout = opts.join_timeout;
  if (given(opts.command, "--num_cpu_threads_per_process"))
    c.num_cpu_threads_per_process = opts.num_cpu_threads_per_process;
  if (!opts.gradient_accumulation_steps.empty())
    c.gradient_accumulation_steps = parse_positive_int(opts.gradient_accumulation_steps);
  const std::string path = opts.config_file.empty() ? default_config_file() : opts.config_file;
  write_config(path, c);
  std::cout << "accelerate-cpp configuration saved at " << path << "\n";
  return 0;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string blas_in_use() {
  std::error_code ec;
  const auto target =
      std::filesystem::canonical("/etc/alternatives/libblas.so.3-x86_64-linux-gnu", ec);
  return ec ? std::string("unknown (no Debian libblas.so.3 alternative)") : target.string();
}

int run_env(const std::string& config_file) {
  utsname u{};
  ::uname(&u);
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  int gpus = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)e;
    ++gpus;
  }
  const std::string path = config_file.empty() ? default_config_file() : config_file;
  std::error_code config_error;  // e.g. no permission on a parent folder: read_config() says so
  const bool have_config = std::filesystem::exists(path, config_error) || config_error;
  // Validates: a bad file is reported like launch would.
  const LaunchConfig config = have_config ? read_config(path) : LaunchConfig();
  const int local_processes =
      std::max(1, config.num_processes.value_or(1) / std::max(1, config.num_machines.value_or(1)));
  const ThreadsChoice threads = threads_per_process(config.num_cpu_threads_per_process.value_or(0),
                                                    Environment::inherited(), local_processes);
  // The network the Gloo process group of each process on this machine would use: the
  // library's own rule (src/network.h), for the main process's address in the configuration.
  detail::GlooNetworkQuery network;
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  network.socket_ifname = ifname ? ifname : "";
  network.master_addr = config.main_process_ip.value_or("127.0.0.1");
  network.master_port = config.main_process_port.value_or(29500);
  network.several_machines = config.num_machines.value_or(1) > 1;
  std::string gloo;
  try {
    gloo = detail::choose_gloo_network(network).description;
  } catch (const std::exception& e) {
    gloo = std::string("none: ") + e.what();
  }
  std::cout << "Copy-and-paste the text below in your GitHub issue\n\n"
            << "- accelerate-cpp version: " << ACCELERATE_CPP_VERSION << "\n"
            << "- Platform: " << u.sysname << " " << u.release << " " << u.machine << "\n"
            << "- LibTorch version (built against): " << ACCELERATE_CPP_TORCH_VERSION << "\n"
            << "- CPU cores (online): " << sysconf(_SC_NPROCESSORS_ONLN) << "\n"
            << "- Physical CPU cores (usable by this process): " << usable_physical_cores() << "\n"
            << "- RAM: "
            << (pages > 0 && page > 0 ? static_cast<double>(pages) * page / (1 << 30) : 0)
            << " GiB\n"
            << "- NVIDIA GPUs (driver): " << gpus << "\n"
            << "- BLAS (libblas.so.3): " << blas_in_use() << "\n"
            << "- OMP_NUM_THREADS: "
            << (std::getenv("OMP_NUM_THREADS") ? std::getenv("OMP_NUM_THREADS") : "(unset)") << "\n"
            << "- Threads per process under launch (OMP_NUM_THREADS): " << threads.value << " ("
            << threads.source << ")\n"
            << "- Network interfaces: "
            << detail::describe_interfaces(detail::interface_addresses()) << "\n"
            << "- GLOO_SOCKET_IFNAME: " << (ifname ? ifname : "(unset)") << "\n"
            << "- Gloo network of each process (main process at " << network.master_addr << ":"
            << network.master_port << ", " << config.num_machines.value_or(1)
            << (config.num_machines.value_or(1) == 1 ? " machine" : " machines") << "): " << gloo
            << "\n"
            << "- Configuration file: " << path << "\n";
  if (!have_config) {
    std::cout << "- Configuration: not found (defaults apply)\n";
    return 0;
  }
  std::cout << "- Configuration:\n";
  std::istringstream lines(read_text(path));
  for (std::string line; std::getline(lines, line);) std::cout << "\t" << line << "\n";
  return 0;
}

/// accelerate-cpp-test next to this executable, else on PATH.
std::string find_test_program() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto sibling = self.parent_path() / "accelerate-cpp-test";
    if (::access(sibling.c_str(), X_OK) == 0) return sibling.string();
  }
  const ExecutableLookup lookup = find_executable("accelerate-cpp-test");
  if (lookup.ok()) return lookup.path;
  throw UsageError(
      "cannot find accelerate-cpp-test next to accelerate-cpp or on PATH (build "
      "with ACCELERATE_BUILD_TOOLS=ON and install it)");
}

}  // namespace
}  // namespace accelerate::cli

int main(int argc, char** argv) {
  using namespace accelerate::cli;
  CLI::App app{"accelerate-cpp: launch and manage accelerate-cpp training programs.",
               "accelerate-cpp"};
  app.set_version_flag("--version", ACCELERATE_CPP_VERSION);
  app.require_subcommand(1);

  LaunchOptions launch_options;
  CLI::App* launch = add_launch_command(app, launch_options);
  LaunchOptions config_options;
  CLI::App* config = add_config_command(app, config_options);
  std::string env_config_file;
  CLI::App* env = app.add_subcommand(
      "env",
      "Print what accelerate-cpp runs on (versions, cores, memory, BLAS, GPUs) and the "
      "configuration, for bug reports");
  env->add_option("--config_file", env_config_file, "Configuration file to show");
  LaunchOptions test_options;
  CLI::App* test = app.add_subcommand(
      "test",
      "Launch accelerate-cpp-test with the configuration (or the flags given): checks "
      "collectives, data sharding and DDP on the real process group");
  add_job_options(test, test_options);
  add_threads_option(test, test_options);
  test_options.command = test;
  auto command_name = [&] {
    for (CLI::App* c : {launch, config, env, test})
      if (c->parsed()) return "accelerate-cpp " + c->get_name();
    return std::string("accelerate-cpp");
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ExtrasError& e) {
    return report_usage_error(
        command_name(),
        std::string(e.what()) + (launch->parsed() ? " (launcher options go before PROGRAM)" : ""));
  } catch (const CLI::ParseError& e) {
    return report_usage_error(command_name(), e.what());
  }

  try {
    if (launch->parsed()) return run_launch(launch_options);
    if (config->parsed()) return run_config(config_options);
    if (env->parsed()) return run_env(env_config_file);
    if (test->parsed()) {
      test_options.program = find_test_program();
      return run_launch(test_options);
    }
  } catch (const UsageError& e) {
    return report_usage_error(command_name(), e.what());
  } catch (const ConfigError& e) {
    return report_usage_error(command_name(), e.what());
  } catch (const std::exception& e) {
    std::cerr << command_name() << ": error: " << e.what() << "\n";
    return 1;
  }
  return report_usage_error("accelerate-cpp", "no command given");
}
