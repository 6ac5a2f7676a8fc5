// main.cpp - entry point of the `accelerate-cpp` command-line tool.
//
// Each subcommand registers its options on the CLI11 app (add_*_command) and has a run_* function
// that is called when it was selected: `launch` (launch.h: building a launch; supervisor.h:
// running it; ports.h: the job's port), `config` (writes Accelerate's YAML file, config.h), `env`
// (what is installed, and the configuration) and `test` (launches accelerate-cpp-test with the
// configuration). This file deliberately does not link LibTorch so that the launcher starts in a
// few milliseconds.
//
// Exit codes: 0 success, 2 usage error (including a bad configuration file); `launch` and `test`
// otherwise return what the supervisor reports (see supervisor.h).
#include <CLI/CLI.hpp>

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "config.h"
#include "launch.h"
#include "launch_env.h"
#include "network.h"
#include "supervisor.h"

#ifndef ACCELERATE_CPP_VERSION
#define ACCELERATE_CPP_VERSION "0.0.0"
#endif
#ifndef ACCELERATE_CPP_TORCH_VERSION
#define ACCELERATE_CPP_TORCH_VERSION "unknown"
#endif

namespace accelerate::cli {
namespace {

constexpr int kUsageExitCode = 2;

int report_usage_error(const std::string& command, const std::string& what) {
  std::cerr << command << ": error: " << what << "\n"
            << "Run '" << command << " --help' for usage.\n";
  return kUsageExitCode;
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
  const char* ifname = std::getenv(launch_env::kGlooSocketIfname);
  network.socket_ifname = ifname ? ifname : "";
  network.master_addr = config.main_process_ip.value_or("127.0.0.1");
  network.master_port = config.main_process_port.value_or(29500);
  network.several_machines = config.num_machines.value_or(1) > 1;
  const char* omp_threads = std::getenv(launch_env::kOmpNumThreads);
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
            << "- OMP_NUM_THREADS: " << (omp_threads ? omp_threads : "(unset)") << "\n"
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
