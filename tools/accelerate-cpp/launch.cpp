// launch.cpp - building a launch (see launch.h).
#include "launch.h"

#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
#include <utility>

#include "config.h"
#include "launch_env.h"
#include "ports.h"
#include "supervisor.h"

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

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

}  // namespace

Environment Environment::inherited() {
  Environment env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    env.entries_.emplace_back(*entry);
  }
  return env;
}

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

ThreadsChoice threads_per_process(int given, const Environment& env, int local_processes) {
  if (given > 0)
    return {std::to_string(given), "--num_cpu_threads_per_process or the configuration"};
  if (const std::optional<std::string> inherited = env.get(launch_env::kOmpNumThreads))
    return {*inherited, "OMP_NUM_THREADS of the launcher's environment"};
  const long cores = usable_physical_cores();
  return {std::to_string(std::max(1L, cores / std::max(1, local_processes))),
          std::to_string(cores) + " physical cores / " + std::to_string(local_processes) +
              " processes on this machine"};
}

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

namespace {

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
  base.set(launch_env::kWorldSize, std::to_string(world_size));
  base.set(launch_env::kLocalWorldSize, std::to_string(n));
  base.set(launch_env::kGroupRank, std::to_string(opts.machine_rank));
  base.set(launch_env::kRoleWorldSize, std::to_string(world_size));
  base.set(launch_env::kMasterAddr,
           opts.main_process_ip.empty() ? "127.0.0.1" : opts.main_process_ip);
  base.set(launch_env::kMasterPort, std::to_string(port));
  if (!opts.mixed_precision.empty()) base.set(launch_env::kMixedPrecision, opts.mixed_precision);
  base.set(launch_env::kUseCpu, opts.cpu ? "true" : "false");
  if (!opts.timeout.empty()) base.set(launch_env::kTimeout, opts.timeout);
  if (!opts.join_timeout.empty()) base.set(launch_env::kJoinTimeout, opts.join_timeout);
  if (!opts.gradient_accumulation_steps.empty())
    base.set(launch_env::kGradientAccumulationSteps,
             std::to_string(*parse_positive_int(opts.gradient_accumulation_steps)));
  // Where the ranks keep their last collective, reported when the job is stopped.
  StatusFolder status;
  if (!status.path.empty()) base.set(launch_env::kStatusDir, status.path);
  base.set(launch_env::kRestartCount, std::to_string(attempt));
  base.set(launch_env::kMaxRestarts, std::to_string(opts.max_restarts));
  base.set(launch_env::kOmpNumThreads,
           threads_per_process(opts.num_cpu_threads_per_process, base, n).value);

  std::vector<ProcessSpec> specs(static_cast<size_t>(n));
  for (int local_rank = 0; local_rank < n; ++local_rank) {
    const long long rank = static_cast<long long>(opts.machine_rank) * n + local_rank;
    Environment env = base;
    env.set(launch_env::kRank, std::to_string(rank));
    env.set(launch_env::kLocalRank, std::to_string(local_rank));
    env.set(launch_env::kRoleRank, std::to_string(rank));
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
  if (!status.path.empty()) {
    supervision.describe_positions = [dir = status.path](const std::vector<int>& ranks) {
      return describe_rank_positions(dir, ranks);
    };
  }
  return run_processes(specs, supervision);
}

}  // namespace

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

ExecutableLookup find_executable(const std::string& program) {
  ExecutableLookup result;
  auto check = [](const std::string& path) -> std::string {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) return std::strerror(errno);
    if (S_ISDIR(st.st_mode)) return "is a directory";
    if (!S_ISREG(st.st_mode)) return "not a regular file";
    if (access(path.c_str(), X_OK) != 0) return std::string(std::strerror(errno));
    return {};
  };
  if (program.empty()) {
    result.error = "empty program name";
    return result;
  }
  if (program.find('/') != std::string::npos) {
    result.error = check(program);
    if (result.ok()) result.path = program;
    return result;
  }
  const char* env_path = std::getenv("PATH");
  const std::string search = env_path != nullptr ? env_path : "/usr/local/bin:/usr/bin:/bin";
  std::string first_error;
  size_t start = 0;
  while (true) {
    const size_t end = search.find(':', start);
    std::string dir = search.substr(start, end == std::string::npos ? end : end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + program;
    const std::string error = check(candidate);
    if (error.empty()) {
      result.path = candidate;
      return result;
    }
    // Remember why an existing file was rejected (e.g. "Permission denied").
    struct stat st {};
    if (first_error.empty() && stat(candidate.c_str(), &st) == 0) {
      first_error = candidate + ": " + error;
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  result.error = first_error.empty() ? "command not found in PATH" : first_error;
  return result;
}

std::string describe_rank_positions(const std::string& dir, const std::vector<int>& ranks) {
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  std::string out;
  bool any = false;  // programs that do not use accelerate-cpp's collectives write nothing
  for (int rank : ranks) {
    if (!out.empty()) out += "; ";
    out += "rank " + std::to_string(rank);
    std::ifstream in(dir + "/rank_" + std::to_string(rank));
    std::string name;
    long long number = 0, entered_ms = 0;
    if (!(in >> name >> number >> entered_ms)) {
      out += " has not entered a collective";
      continue;
    }
    any = true;
    char ago[32];
    std::snprintf(ago, sizeof(ago), "%.1f", static_cast<double>(now_ms - entered_ms) / 1000.0);
    out += " last entered " + name + " #" + std::to_string(number) + " " + ago + " s ago";
  }
  return any ? out : std::string();
}

}  // namespace accelerate::cli
