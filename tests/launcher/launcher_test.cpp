// launcher_test.cpp - end-to-end tests of `accelerate-cpp launch`.
//
// Every test runs the real launcher binary (ACCELERATE_CPP_LAUNCHER) on the helper program
// fake_rank (FAKE_RANK_PROGRAM) as a Subprocess (subprocess.h) and checks exit codes,
// messages, the environment the ranks saw, that no rank process (nor one a rank started)
// survives, that jobs started together get distinct ports, and how configuration files and
// --timeout are handled.
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#if defined(__linux__)
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#endif

#include <gtest/gtest.h>

#include "launcher_variables.h"
#include "subprocess.h"
#include "temp_dir.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#ifndef ACCELERATE_CPP_LAUNCHER
#error "ACCELERATE_CPP_LAUNCHER must be defined to the path of the accelerate-cpp executable"
#endif
#ifndef FAKE_RANK_PROGRAM
#error "FAKE_RANK_PROGRAM must be defined to the path of the fake_rank helper"
#endif

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const std::string kLauncher = ACCELERATE_CPP_LAUNCHER;
const std::string kFake = FAKE_RANK_PROGRAM;

using accelerate::testing::kLauncherVariables;

using accelerate::testing::Command;
using accelerate::testing::Outcome;
using accelerate::testing::TempDir;
using EnvChanges = std::map<std::string, std::optional<std::string>>;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

/// Splits into lines without their '\n'; a final partial line is kept.
std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::string::size_type start = 0;
  while (start < text.size()) {
    const auto nl = text.find('\n', start);
    if (nl == std::string::npos) {
      lines.push_back(text.substr(start));
      break;
    }
    lines.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return lines;
}

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

/// Physical cores this process may run on, counted apart from the launcher's way: the distinct
/// sibling lists (hyper-threads of one core) of the CPUs in the affinity mask.
long physical_cores() {
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  EXPECT_EQ(sched_getaffinity(0, sizeof cpus, &cpus), 0);
  std::set<std::string> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &cpus)) continue;
    std::ifstream in("/sys/devices/system/cpu/cpu" + std::to_string(cpu) +
                     "/topology/thread_siblings_list");
    std::string siblings;
    if (!std::getline(in, siblings)) return CPU_COUNT(&cpus);  // no topology: CPUs
    cores.insert(siblings);
  }
  return static_cast<long>(cores.size());
}

/// OMP_NUM_THREADS the launcher gives each of `local` processes by default (Accelerate's rule).
std::string default_threads(long local) {
  return std::to_string(std::max(1L, physical_cores() / local));
}

/// `accelerate-cpp ARGS` with this process's environment less the variables the launcher sets
/// (so that what a rank sees came from the launcher), changed by `env_changes`.
Command launcher_command(const std::vector<std::string>& args, const EnvChanges& env_changes,
                         bool own_process_group) {
  std::vector<std::string> argv = {kLauncher};
  argv.insert(argv.end(), args.begin(), args.end());
  Command command(argv);
  for (const char* name : kLauncherVariables) command.unset(name);
  for (const auto& [name, value] : env_changes) {
    if (value)
      command.env(name, *value);
    else
      command.unset(name);
  }
  return command.own_process_group(own_process_group);
}

/// A running launcher with stdout/stderr captured; in a process group of its own when
/// `own_process_group` (like a job a shell started), else in ours.
class Launcher : public accelerate::testing::Subprocess {
 public:
  explicit Launcher(const std::vector<std::string>& args, const EnvChanges& env_changes = {},
                    bool own_process_group = false)
      : Subprocess(launcher_command(args, env_changes, own_process_group)) {}

  /// Waits for the launcher to exit; on timeout kills it and sets Outcome::timed_out.
  Outcome wait(std::chrono::milliseconds timeout = 30s) { return Subprocess::wait(timeout); }
};

Outcome run_launcher(const std::vector<std::string>& args, const EnvChanges& env = {},
                     std::chrono::milliseconds timeout = 30s) {
  Launcher launcher(args, env);
  Outcome outcome = launcher.wait(timeout);
  EXPECT_FALSE(outcome.timed_out) << "launcher did not finish; stderr:\n" << outcome.err;
  return outcome;
}

/// rank -> (variable -> value) from "[rank K] ENV NAME=value" lines (from "ENV NAME=value" for
/// rank 0 when the job has one process, whose output is not prefixed); "unset" variables are
/// absent.
std::map<int, std::map<std::string, std::string>> env_by_rank(const std::string& out) {
  std::map<int, std::map<std::string, std::string>> result;
  for (const std::string& line : lines_of(out)) {
    int rank = -1;
    char rest[4096];
    if (std::sscanf(line.c_str(), "[rank %d] ENV %4095[^\n]", &rank, rest) != 2) {
      if (std::sscanf(line.c_str(), "ENV %4095[^\n]", rest) != 1) continue;
      rank = 0;
    }
    const std::string assignment = rest;
    const auto eq = assignment.find('=');
    if (eq == std::string::npos) {
      result[rank];  // "NAME unset"
      continue;
    }
    result[rank][assignment.substr(0, eq)] = assignment.substr(eq + 1);
  }
  return result;
}

/// Waits until `dir` holds `count` pid files; returns their pids by rank.
std::map<int, pid_t> wait_for_pids(const fs::path& dir, size_t count,
                                   std::chrono::milliseconds timeout = 10s) {
  const auto deadline = Clock::now() + timeout;
  std::map<int, pid_t> pids;
  while (true) {
    pids.clear();
    for (const auto& entry : fs::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      int rank = -1;
      if (std::sscanf(name.c_str(), "rank%d.pid", &rank) == 1 &&
          entry.path().extension() == ".pid") {
        pids[rank] = static_cast<pid_t>(std::stol(read_file(entry.path())));
      }
    }
    if (pids.size() >= count || Clock::now() >= deadline) return pids;
    std::this_thread::sleep_for(5ms);
  }
}

/// True once `pid` no longer exists (reaping it if it became our child, see the SIGKILL test).
bool gone(pid_t pid, std::chrono::milliseconds timeout = 3s) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    waitpid(pid, nullptr, WNOHANG);
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(10ms);
  }
}

void expect_all_gone(const std::map<int, pid_t>& pids) {
  for (const auto& [rank, pid] : pids) {
    EXPECT_TRUE(gone(pid)) << "rank " << rank << " pid " << pid << " survived";
    if (kill(pid, 0) == 0) kill(pid, SIGKILL);  // don't leak it into later tests
  }
}

/// Pids of the processes fake_rank --spawn-child started, by rank (DIR/rank<K>.child).
std::map<int, pid_t> child_pids(const fs::path& dir) {
  std::map<int, pid_t> pids;
  for (const auto& entry : fs::directory_iterator(dir)) {
    int rank = -1;
    if (std::sscanf(entry.path().filename().c_str(), "rank%d.child", &rank) == 1 &&
        entry.path().extension() == ".child") {
      pids[rank] = static_cast<pid_t>(std::stol(read_file(entry.path())));
    }
  }
  return pids;
}

std::string pid_of(const std::map<int, pid_t>& pids, int rank) {
  auto it = pids.find(rank);
  return it == pids.end() ? "?" : std::to_string(it->second);
}

/// The ACCELERATE_STATUS_DIR a rank saw: a folder "accelerate-cpp-status-XXXXXX" the launcher
/// made for the job (its name is random; empty when the rank saw none, which fails the test).
std::string status_dir(const std::map<std::string, std::string>& vars) {
  const auto it = vars.find("ACCELERATE_STATUS_DIR");
  const std::string dir = it == vars.end() ? "" : it->second;
  EXPECT_TRUE(contains(dir, "/accelerate-cpp-status-")) << "ACCELERATE_STATUS_DIR=" << dir;
  return dir;
}

// ---------------------------------------------------------------------------------------------

TEST(LauncherEnv, TwoProcessesGetTheTorchrunContract) {
  const Outcome r =
      run_launcher({"launch", "--num_processes", "2", kFake, "--print-env"},
                   {{"OMP_NUM_THREADS", std::nullopt}, {"FAKE_RANK_INHERITED", "yes"}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(r.err, "");
  const auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 2u) << r.out;
  const std::string port = env.at(0).count("MASTER_PORT") ? env.at(0).at("MASTER_PORT") : "";
  ASSERT_FALSE(port.empty());
  EXPECT_GT(std::stoi(port), 0);
  EXPECT_LE(std::stoi(port), 65535);
  for (int k = 0; k < 2; ++k) {
    const std::map<std::string, std::string> expected = {
        {"RANK", std::to_string(k)},
        {"WORLD_SIZE", "2"},
        {"LOCAL_RANK", std::to_string(k)},
        {"LOCAL_WORLD_SIZE", "2"},
        {"GROUP_RANK", "0"},
        {"ROLE_RANK", std::to_string(k)},
        {"ROLE_WORLD_SIZE", "2"},
        {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", port},
        {"OMP_NUM_THREADS", default_threads(2)},
        {"ACCELERATE_USE_CPU", "false"},
        {"ACCELERATE_STATUS_DIR", status_dir(env.at(k))},
        {"TORCHELASTIC_RESTART_COUNT", "0"},
        {"TORCHELASTIC_MAX_RESTARTS", "0"},
        {"FAKE_RANK_INHERITED", "yes"},  // ACCELERATE_MIXED_PRECISION absent: not given
    };
    EXPECT_EQ(env.at(k), expected) << "rank " << k;
  }
}

TEST(LauncherEnv, ThreeProcessesOnSecondMachine) {
  const Outcome r =
      run_launcher({"launch", "--num_processes", "6", "--num_machines", "2", "--machine_rank", "1",
                    "--main_process_ip", "10.1.2.3", "--main_process_port", "29533",
                    "--mixed_precision", "bf16", "--cpu", kFake, "--print-env"},
                   {{"OMP_NUM_THREADS", "7"}});  // inherited value is kept
  ASSERT_EQ(r.code(), 0) << r.err;
  const auto env = env_by_rank(r.out);
  ASSERT_EQ(env.size(), 3u) << r.out;
  for (int k = 0; k < 3; ++k) {
    const int rank = 3 + k;
    const std::map<std::string, std::string> expected = {
        {"RANK", std::to_string(rank)},
        {"WORLD_SIZE", "6"},
        {"LOCAL_RANK", std::to_string(k)},
        {"LOCAL_WORLD_SIZE", "3"},
        {"GROUP_RANK", "1"},
        {"ROLE_RANK", std::to_string(rank)},
        {"ROLE_WORLD_SIZE", "6"},
        {"MASTER_ADDR", "10.1.2.3"},
        {"MASTER_PORT", "29533"},
        {"OMP_NUM_THREADS", "7"},
        {"ACCELERATE_USE_CPU", "true"},
        {"ACCELERATE_MIXED_PRECISION", "bf16"},
        {"ACCELERATE_STATUS_DIR", status_dir(env.at(rank))},
        {"TORCHELASTIC_RESTART_COUNT", "0"},
        {"TORCHELASTIC_MAX_RESTARTS", "0"},
    };
    ASSERT_EQ(env.count(rank), 1u) << r.out;
    EXPECT_EQ(env.at(rank), expected) << "rank " << rank;
  }
}

TEST(LauncherEnv, ThreeProcessesThreadsDefaultAndOverride) {
  {
    const Outcome r = run_launcher(
        {"launch", "--num_processes", "3", "--main_process_port", "0", kFake, "--print-env"},
        {{"OMP_NUM_THREADS", std::nullopt}});
    ASSERT_EQ(r.code(), 0) << r.err;
    const auto env = env_by_rank(r.out);
    ASSERT_EQ(env.size(), 3u) << r.out;
    const std::string port = env.at(0).at("MASTER_PORT");
    EXPECT_GT(std::stoi(port), 0);
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(env.at(k).at("RANK"), std::to_string(k));
      EXPECT_EQ(env.at(k).at("WORLD_SIZE"), "3");
      EXPECT_EQ(env.at(k).at("LOCAL_WORLD_SIZE"), "3");
      EXPECT_EQ(env.at(k).at("MASTER_PORT"), port);
      EXPECT_EQ(env.at(k).at("OMP_NUM_THREADS"), default_threads(3));
      EXPECT_EQ(env.at(k).count("ACCELERATE_MIXED_PRECISION"), 0u);
    }
  }
  {
    const Outcome r =
        run_launcher({"launch", "--num_processes", "3", "--num_cpu_threads_per_process", "4",
                      "--mixed_precision", "fp16", kFake, "--print-env"},
                     {{"OMP_NUM_THREADS", "7"}});
    ASSERT_EQ(r.code(), 0) << r.err;
    const auto env = env_by_rank(r.out);
    ASSERT_EQ(env.size(), 3u) << r.out;
    for (int k = 0; k < 3; ++k) {
      EXPECT_EQ(env.at(k).at("OMP_NUM_THREADS"), "4");
      EXPECT_EQ(env.at(k).at("ACCELERATE_MIXED_PRECISION"), "fp16");
      EXPECT_EQ(env.at(k).at("ACCELERATE_USE_CPU"), "false");
    }
  }
}

// OMP_NUM_THREADS: --num_cpu_threads_per_process, else the config key of the same name, else what
// the launcher inherited, else physical cores / local processes (at least 1), as Accelerate's
// launcher; one process gets all the cores.
TEST(LauncherEnv, ThreadsFromFlagConfigKeyInheritanceOrCores) {
  TempDir dir;
  const fs::path file = dir.path() / "job.yaml";
  std::ofstream(file) << "num_processes: 2\nnum_cpu_threads_per_process: 3\n";
  auto threads = [](const Outcome& r) {
    std::vector<std::string> values;
    for (const auto& [rank, vars] : env_by_rank(r.out))
      values.push_back(vars.count("OMP_NUM_THREADS") ? vars.at("OMP_NUM_THREADS") : "unset");
    return values;
  };
  Outcome r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"},
                           {{"OMP_NUM_THREADS", "7"}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(threads(r), (std::vector<std::string>{"3", "3"})) << "the key wins over the inherited";
  r = run_launcher({"launch", "--config_file", file.string(), "--num_cpu_threads_per_process", "5",
                    kFake, "--print-env"},
                   {{"OMP_NUM_THREADS", "7"}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(threads(r), (std::vector<std::string>{"5", "5"})) << "the flag wins over the key";
  r = run_launcher({"launch", kFake, "--print-env"}, {{"OMP_NUM_THREADS", "7"}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(threads(r), (std::vector<std::string>{"7"})) << "inherited, one process";
  r = run_launcher({"launch", kFake, "--print-env"}, {{"OMP_NUM_THREADS", std::nullopt}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(threads(r), (std::vector<std::string>{default_threads(1)})) << "every physical core";
  // More processes than cores: one thread each.
  r = run_launcher(
      {"launch", "--num_processes", std::to_string(physical_cores() + 1), kFake, "--print-env"},
      {{"OMP_NUM_THREADS", std::nullopt}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(threads(r), std::vector<std::string>(static_cast<size_t>(physical_cores() + 1), "1"));

  for (const std::string bad : {"0", "-2", "two", "1.5", "[1]"}) {
    std::ofstream(file) << "num_cpu_threads_per_process: " << bad << "\n";
    r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
    EXPECT_EQ(r.code(), 2) << bad << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "config file " + file.string() +
                                    ": key 'num_cpu_threads_per_process': expected a whole "
                                    "number of at least 1"))
        << r.err;
    EXPECT_EQ(r.out, "") << "no process may start";
  }
}

// ---------------------------------------------------------------------------------------------

TEST(LauncherOutput, LinesArePrefixedPerRankAndStream) {
  const Outcome r = run_launcher({"launch", "--num_processes", "2", kFake, "--print", "hello",
                                  "--eprint", "oops", "--partial", "tail"});
  ASSERT_EQ(r.code(), 0) << r.err;
  const std::vector<std::string> out = lines_of(r.out);
  EXPECT_EQ(sorted(out), (std::vector<std::string>{"[rank 0] hello", "[rank 0] tail",
                                                   "[rank 1] hello", "[rank 1] tail"}))
      << r.out;
  EXPECT_EQ(r.out.back(), '\n');  // the partial line is completed at EOF
  for (const std::string rank : {"0", "1"}) {
    const auto hello = std::find(out.begin(), out.end(), "[rank " + rank + "] hello");
    const auto tail = std::find(out.begin(), out.end(), "[rank " + rank + "] tail");
    EXPECT_LT(hello, tail);
  }
  EXPECT_EQ(sorted(lines_of(r.err)), (std::vector<std::string>{"[rank 0] oops", "[rank 1] oops"}));
}

TEST(LauncherOutput, NoRankPrefix) {
  const Outcome two = run_launcher({"launch", "--num_processes", "2", "--no_rank_prefix", kFake,
                                    "--print", "hello", "--eprint", "oops"});
  ASSERT_EQ(two.code(), 0) << two.err;
  EXPECT_EQ(two.out, "hello\nhello\n");
  EXPECT_EQ(two.err, "oops\noops\n");

  const Outcome one =
      run_launcher({"launch", "--no_rank_prefix", kFake, "--print", "hello", "--partial", "tail"});
  ASSERT_EQ(one.code(), 0) << one.err;
  EXPECT_EQ(one.out, "hello\ntail");
}

// A job of one process has nobody to tell apart: its output is not prefixed (also with
// --num_processes 1 given, and on stderr); one of two machines with one process each is.
TEST(LauncherOutput, OneProcessIsNotPrefixed) {
  const Outcome one = run_launcher({"launch", "--num_processes", "1", kFake, "--print", "hello",
                                    "--eprint", "oops", "--write", "0:\rstep 1\rstep 2\n"});
  ASSERT_EQ(one.code(), 0) << one.err;
  EXPECT_EQ(one.out, "hello\n\rstep 1\rstep 2\n");
  EXPECT_EQ(one.err, "oops\n");
  const Outcome machine = run_launcher({"launch", "--num_processes", "2", "--num_machines", "2",
                                        "--machine_rank", "1", "--main_process_ip", "127.0.0.1",
                                        "--main_process_port", "29999", kFake, "--print", "hi"});
  ASSERT_EQ(machine.code(), 0) << machine.err;
  EXPECT_EQ(machine.out, "[rank 1] hi\n");
}

// '\r' ends a line for prefixing and is kept, so that each redraw of a progress bar carries the
// prefix and still overwrites the last one (instead of one growing line); "\r\n" ends one line,
// also when two reads split it; a bare '\r' gets no prefix. The same however the launcher's reads
// cut the output (each --write is one write(), 20 ms apart).
TEST(LauncherOutput, CarriageReturnEndsALineAndIsKept) {
  const Outcome r = run_launcher({"launch",  "--num_processes",
                                  "2",       kFake,
                                  "--print", "hello",
                                  "--write", "1:\rstep 1/3",
                                  "--write", "1:\rstep 2/3",
                                  "--write", "1:\rstep 3/3",
                                  "--write", "1:\r",
                                  "--write", "1:\n",
                                  "--write", "1:done\r\n",
                                  "--write", "1:x\ry\n",
                                  "--write", "1:\r\rz\r"});
  ASSERT_EQ(r.code(), 0) << r.err;
  std::string out = r.out;
  const std::string rank0 = "[rank 0] hello\n";  // rank 0's line may come between any two of 1's
  const auto at = out.find(rank0);
  ASSERT_NE(at, std::string::npos) << out;
  out.erase(at, rank0.size());
  EXPECT_EQ(out,
            "[rank 1] hello\n"
            "\r[rank 1] step 1/3\r[rank 1] step 2/3\r[rank 1] step 3/3\r\n"
            "[rank 1] done\r\n"
            "[rank 1] x\r[rank 1] y\n"
            "\r\r[rank 1] z\r");
}

TEST(LauncherOutput, LongLinesFromManyRanksAreNeverMixed) {
  constexpr int kLines = 300;
  const Outcome r =
      run_launcher({"launch", "--num_processes", "3", kFake, "--lines", std::to_string(kLines)});
  ASSERT_EQ(r.code(), 0) << r.err;
  std::map<int, int> next_line;
  for (const std::string& line : lines_of(r.out)) {
    int prefix_rank = -1, rank = -1, index = -1, consumed = 0;
    ASSERT_EQ(std::sscanf(line.c_str(), "[rank %d] rank %d line %d %n", &prefix_rank, &rank, &index,
                          &consumed),
              3)
        << line.substr(0, 80);
    ASSERT_EQ(prefix_rank, rank);
    ASSERT_EQ(index, next_line[rank]++) << "lines of rank " << rank << " out of order";
    ASSERT_EQ(line.substr(static_cast<size_t>(consumed)),
              std::string(2000, static_cast<char>('a' + rank)));
  }
  EXPECT_EQ(next_line, (std::map<int, int>{{0, kLines}, {1, kLines}, {2, kLines}}));
}

TEST(LauncherArgs, EverythingAfterProgramIsPassedUntouched) {
  const std::vector<std::string> program_args = {
      "--print-args", "--lr", "3",   "--num_processes", "7", "--",
      "--help",       "",     "a b", "launch",          "-x"};
  for (const bool separator : {false, true}) {
    std::vector<std::string> args = {"launch", "--num_processes", "2"};
    if (separator) args.push_back("--");
    args.push_back(kFake);
    args.insert(args.end(), program_args.begin(), program_args.end());
    const Outcome r = run_launcher(args);
    ASSERT_EQ(r.code(), 0) << r.err;
    for (int rank = 0; rank < 2; ++rank) {
      const std::string p = "[rank " + std::to_string(rank) + "] ";
      std::vector<std::string> expected = {p + "ARGC=" + std::to_string(program_args.size() + 1),
                                           p + "ARGV[0]=" + kFake};
      for (size_t i = 0; i < program_args.size(); ++i) {
        expected.push_back(p + "ARGV[" + std::to_string(i + 1) + "]=" + program_args[i]);
      }
      std::vector<std::string> actual;
      for (const std::string& line : lines_of(r.out)) {
        if (line.rfind(p, 0) == 0) actual.push_back(line);
      }
      EXPECT_EQ(actual, expected) << "separator=" << separator;
    }
  }
}

TEST(LauncherArgs, ProgramIsLookedUpInPath) {
  const std::string dir = fs::path(kFake).parent_path().string();
  const std::string name = fs::path(kFake).filename().string();
  const Outcome r = run_launcher({"launch", name, "--print", "found"},
                                 {{"PATH", dir + ":/usr/local/bin:/usr/bin:/bin"}});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(r.out, "found\n");  // one process: no prefix
}

// ---------------------------------------------------------------------------------------------

TEST(LauncherFailure, FailingRankStopsTheOthers) {
  TempDir pids_dir;
  const Outcome r = run_launcher({"launch", "--num_processes", "3", kFake, "--pid-dir",
                                  pids_dir.str(), "--sleep", "60", "--exit", "1:3"},
                                 {}, 20s);
  EXPECT_EQ(r.code(), 3) << r.err;
  const auto pids = wait_for_pids(pids_dir.path(), 3, 0ms);
  ASSERT_EQ(pids.size(), 3u);
  EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: rank 1 (pid " + pid_of(pids, 1) +
                                  ") exited with code 3; stopping the other 2 processes"))
      << r.err;
  expect_all_gone(pids);
}

class LauncherSignalDeath : public ::testing::TestWithParam<int> {};

TEST_P(LauncherSignalDeath, RankKilledBySignalStopsTheOthers) {
  const int sig = GetParam();
  TempDir pids_dir;
  const Outcome r =
      run_launcher({"launch", "--num_processes", "2", kFake, "--pid-dir", pids_dir.str(), "--sleep",
                    "60", "--signal", "1:" + std::to_string(sig)},
                   {}, 20s);
  EXPECT_EQ(r.code(), 128 + sig) << r.err;
  const auto pids = wait_for_pids(pids_dir.path(), 2, 0ms);
  ASSERT_EQ(pids.size(), 2u);
  const std::string name = sig == SIGSEGV ? "SIGSEGV" : "SIGKILL";
  EXPECT_TRUE(contains(r.err, "rank 1 (pid " + pid_of(pids, 1) + ") was killed by signal " + name +
                                  " (" + std::to_string(sig) + ")"))
      << r.err;
  EXPECT_TRUE(contains(r.err, "stopping the other 1 process\n")) << r.err;
  expect_all_gone(pids);
}

INSTANTIATE_TEST_SUITE_P(Signals, LauncherSignalDeath, ::testing::Values(SIGSEGV, SIGKILL),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return info.param == SIGSEGV ? std::string("SIGSEGV")
                                                        : std::string("SIGKILL");
                         });

TEST(LauncherFailure, RankIgnoringSigtermIsKilledAfterGracePeriod) {
  TempDir pids_dir;
  const Outcome r = run_launcher(
      {"launch", "--num_processes", "2", "--grace_period", "0.5", kFake, "--ignore-sigterm",
       "--pid-dir", pids_dir.str(), "--sleep", "60", "--exit", "0:3"},
      {}, 20s);
  EXPECT_EQ(r.code(), 3) << r.err;
  EXPECT_GE(r.seconds, 0.5);
  const auto pids = wait_for_pids(pids_dir.path(), 2, 0ms);
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_TRUE(contains(r.err, "rank 0 (pid " + pid_of(pids, 0) + ") exited with code 3")) << r.err;
  EXPECT_TRUE(contains(r.err, "rank 1 (pid " + pid_of(pids, 1) +
                                  ") still running 0.5s after the stop signal; sending SIGKILL"))
      << r.err;
  expect_all_gone(pids);
}

// ---------------------------------------------------------------------------------------------

TEST(LauncherSignals, SigtermToLauncherStopsAllRanks) {
  TempDir pids_dir;
  Launcher launcher(
      {"launch", "--num_processes", "3", kFake, "--pid-dir", pids_dir.str(), "--sleep", "60"});
  const auto pids = wait_for_pids(pids_dir.path(), 3);
  ASSERT_EQ(pids.size(), 3u);
  ASSERT_EQ(kill(launcher.pid(), SIGTERM), 0);
  const Outcome r = launcher.wait(20s);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.code(), 128 + SIGTERM) << r.err;
  EXPECT_TRUE(contains(r.err, "received SIGTERM; forwarding it to 3 processes")) << r.err;
  expect_all_gone(pids);
}

TEST(LauncherSignals, SigintToLauncherIsForwarded) {
  TempDir pids_dir;
  Launcher launcher(
      {"launch", "--num_processes", "2", kFake, "--pid-dir", pids_dir.str(), "--sleep", "60"});
  const auto pids = wait_for_pids(pids_dir.path(), 2);
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(launcher.pid(), SIGINT), 0);
  const Outcome r = launcher.wait(20s);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.code(), 128 + SIGINT) << r.err;
  EXPECT_TRUE(contains(r.err, "received SIGINT; forwarding it to 2 processes")) << r.err;
  EXPECT_FALSE(contains(r.err, "sending SIGKILL")) << "SIGINT kills fake_rank at once:\n" << r.err;
  expect_all_gone(pids);
}

TEST(LauncherSignals, SigtermToLauncherEscalatesToSigkill) {
  TempDir pids_dir;
  Launcher launcher({"launch", "--num_processes", "2", "--grace_period", "0.3", kFake,
                     "--ignore-sigterm", "--pid-dir", pids_dir.str(), "--sleep", "60"});
  const auto pids = wait_for_pids(pids_dir.path(), 2);
  ASSERT_EQ(pids.size(), 2u);
  const auto sent = Clock::now();
  ASSERT_EQ(kill(launcher.pid(), SIGTERM), 0);
  const Outcome r = launcher.wait(20s);
  const double after_signal = std::chrono::duration<double>(Clock::now() - sent).count();
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.code(), 128 + SIGTERM) << r.err;
  EXPECT_GE(after_signal, 0.3);
  for (int rank = 0; rank < 2; ++rank) {
    EXPECT_TRUE(contains(r.err, "rank " + std::to_string(rank) + " (pid " + pid_of(pids, rank) +
                                    ") still running 0.3s after the stop signal; sending SIGKILL"))
        << r.err;
  }
  expect_all_gone(pids);
}

#if defined(__linux__)
TEST(LauncherSignals, RanksDieWhenLauncherIsKilled) {
  // Orphans are reparented to us (so we can reap them and see them disappear).
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir pids_dir;
  Launcher launcher({"launch", "--num_processes", "2", kFake, "--ignore-sigterm", "--pid-dir",
                     pids_dir.str(), "--sleep", "60"});
  const auto pids = wait_for_pids(pids_dir.path(), 2);
  ASSERT_EQ(pids.size(), 2u);
  ASSERT_EQ(kill(launcher.pid(), SIGKILL), 0);
  const Outcome r = launcher.wait(20s);
  ASSERT_FALSE(r.timed_out);
  ASSERT_TRUE(WIFSIGNALED(r.status));
  expect_all_gone(pids);
}

/// Reaps every exited process that was reparented to us (we are a subreaper in these tests).
void reap_orphans() {
  while (waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

/// Pids of our live (not zombie) children, from /proc.
std::vector<pid_t> live_children() {
  std::vector<pid_t> result;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = read_file(entry.path() / "stat");
    const auto close_paren = stat.rfind(')');
    if (close_paren == std::string::npos) continue;
    char state = 0;
    long ppid = 0;
    if (std::sscanf(stat.c_str() + close_paren + 1, " %c %ld", &state, &ppid) != 2) continue;
    const pid_t pid = static_cast<pid_t>(std::stol(name));
    if (ppid == getpid() && state != 'Z') result.push_back(pid);
  }
  return result;
}

/// How the launcher is killed: its pid alone, or its whole process group (as a job control or
/// CI system may do); the watchdog must survive both.
class LauncherKilled : public ::testing::TestWithParam<bool> {};

TEST_P(LauncherKilled, ProcessesStartedByRanksDieWithTheLauncher) {
  const bool whole_group = GetParam();
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // orphans come to us, see gone()
  TempDir dir;
  Launcher launcher({"launch", "--num_processes", "2", kFake, "--spawn-child", dir.str(),
                     "--pid-dir", dir.str(), "--sleep", "60"},
                    {}, /*own_process_group=*/whole_group);
  const auto pids = wait_for_pids(dir.path(), 2);
  ASSERT_EQ(pids.size(), 2u);
  const auto children = child_pids(dir.path());  // written before the ranks' pid files
  ASSERT_EQ(children.size(), 2u);
  for (const auto& [rank, pid] : children) ASSERT_EQ(kill(pid, 0), 0) << "child of rank " << rank;

  ASSERT_EQ(kill(whole_group ? -launcher.pid() : launcher.pid(), SIGKILL), 0);
  const Outcome r = launcher.wait(20s);
  ASSERT_FALSE(r.timed_out);
  ASSERT_TRUE(WIFSIGNALED(r.status));
  expect_all_gone(pids);
  for (const auto& [rank, pid] : children) {
    EXPECT_TRUE(gone(pid, 10s)) << "pid " << pid << ", started by rank " << rank
                                << ", survived the launcher's SIGKILL";
    if (kill(pid, 0) == 0) kill(pid, SIGKILL);
  }
  reap_orphans();  // the watchdog, once done
}

INSTANTIATE_TEST_SUITE_P(Watchdog, LauncherKilled, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? std::string("ProcessGroup")
                                             : std::string("LauncherOnly");
                         });

TEST(LauncherWatchdog, NothingIsLeftAfterANormalExit) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  reap_orphans();
  const std::vector<pid_t> before = live_children();
  TempDir dir;
  const Outcome r = run_launcher(
      {"launch", "--num_processes", "2", kFake, "--spawn-child", dir.str(), "--print", "done"});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(sorted(lines_of(r.out)), (std::vector<std::string>{"[rank 0] done", "[rank 1] done"}));
  for (const auto& [rank, pid] : child_pids(dir.path())) {
    EXPECT_TRUE(gone(pid, 10s)) << "child of rank " << rank;
  }
  // The watchdog exits before the launcher does; had it lingered it would be our child now.
  reap_orphans();
  EXPECT_EQ(live_children(), before);
}

TEST(LauncherSignals, CtrlCToTheLaunchersProcessGroupStopsEverything) {
  // A terminal's Ctrl-C reaches the launcher's whole process group; the ranks (and what they
  // started) are in groups of their own and get it from the launcher.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir dir;
  Launcher launcher({"launch", "--num_processes", "2", kFake, "--spawn-child", dir.str(),
                     "--pid-dir", dir.str(), "--sleep", "60"},
                    {}, /*own_process_group=*/true);
  const auto pids = wait_for_pids(dir.path(), 2);
  ASSERT_EQ(pids.size(), 2u);
  const auto children = child_pids(dir.path());
  ASSERT_EQ(children.size(), 2u);
  ASSERT_EQ(kill(-launcher.pid(), SIGINT), 0);
  const Outcome r = launcher.wait(20s);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.code(), 128 + SIGINT) << r.err;
  EXPECT_TRUE(contains(r.err, "received SIGINT; forwarding it to 2 processes")) << r.err;
  expect_all_gone(pids);
  expect_all_gone(children);
  reap_orphans();
}
#endif

// ---------------------------------------------------------------------------------------------

/// Writes `text` to `path`.
void write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

#if defined(__linux__)
/// Moves this process (single-threaded) into a new network namespace (and a user namespace
/// when that is what it takes) with loopback up and the local port range [low, high]. Returns
/// "" or why the system does not allow it.
std::string enter_port_range_namespace(int low, int high) {
  const uid_t uid = getuid();
  const gid_t gid = getgid();
  if (unshare(CLONE_NEWNET) != 0) {
    if (unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      return std::string("unshare(CLONE_NEWUSER | CLONE_NEWNET): ") + std::strerror(errno);
    }
    write_file("/proc/self/setgroups", "deny");
    write_file("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1\n");
    write_file("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1\n");
  }
  const int fd = socket(AF_INET, SOCK_DGRAM, 0);
  ifreq request{};
  std::strcpy(request.ifr_name, "lo");
  const bool up = fd >= 0 && ioctl(fd, SIOCGIFFLAGS, &request) == 0 &&
                  (request.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &request) == 0);
  const int error = errno;
  if (fd >= 0) close(fd);
  if (!up) return std::string("cannot bring loopback up: ") + std::strerror(error);
  const std::string range = std::to_string(low) + " " + std::to_string(high);
  const char* const kRangeFile = "/proc/sys/net/ipv4/ip_local_port_range";
  write_file(kRangeFile, range + "\n");
  std::istringstream written(read_file(kRangeFile));
  int got_low = 0, got_high = 0;
  written >> got_low >> got_high;
  if (got_low != low || got_high != high) return "cannot set the local port range";
  return {};
}
#endif

TEST(LauncherPorts, ConcurrentLaunchesGetDistinctPorts) {
  // Jobs started at the same moment with --main_process_port 0; rank 0 of each listens on its
  // MASTER_PORT while rank 1 checks that it reached its own job, so two jobs on one port fail.
  // On the host's ~28000 ports a shared port is rare; so where the system allows it the jobs run
  // in a network namespace of their own with 40 ports, where launchers that do not coordinate
  // collide in most rounds. The runner is a child process (a namespace cannot be left).
  constexpr int kRounds = 8;
  constexpr int kJobs = 6;
  TempDir results;
  const pid_t runner = fork();
  ASSERT_GE(runner, 0);
  if (runner == 0) {
    std::string why = "not Linux";
#if defined(__linux__)
    why = enter_port_range_namespace(40000, 40039);
#endif
    write_file(results.path() / "namespace", why);
    for (int round = 0; round < kRounds; ++round) {
      std::vector<std::unique_ptr<Launcher>> jobs;
      for (int job = 0; job < kJobs; ++job) {
        const std::string token = "round" + std::to_string(round) + "-job" + std::to_string(job);
        jobs.push_back(std::make_unique<Launcher>(
            std::vector<std::string>{"launch", "--num_processes", "2", "--main_process_port", "0",
                                     kFake, "--print-env", "--listen", token, "--sleep", "0.5"}));
      }
      for (int job = 0; job < kJobs; ++job) {
        const Outcome r = jobs[static_cast<size_t>(job)]->wait(60s);
        const fs::path base =
            results.path() / ("r" + std::to_string(round) + "j" + std::to_string(job));
        write_file(base.string() + ".code", std::to_string(r.timed_out ? -2 : r.code()));
        write_file(base.string() + ".out", r.out);
        write_file(base.string() + ".err", r.err);
      }
    }
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(runner, &status, 0), runner);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  const std::string why = read_file(results.path() / "namespace");
  if (!why.empty()) {
    std::cout << "note: ran on the host's port range (no network namespace: " << why << ")\n";
  }
  for (int round = 0; round < kRounds; ++round) {
    std::set<std::string> ports;
    for (int job = 0; job < kJobs; ++job) {
      const fs::path base =
          results.path() / ("r" + std::to_string(round) + "j" + std::to_string(job));
      const std::string code = read_file(base.string() + ".code");
      const std::string out = read_file(base.string() + ".out");
      const std::string err = read_file(base.string() + ".err");
      EXPECT_EQ(code, "0") << "round " << round << " job " << job << ":\n" << err;
      const auto env = env_by_rank(out);
      ASSERT_EQ(env.size(), 2u) << out << err;
      const auto port = [&](int rank) {
        const auto it = env.at(rank).find("MASTER_PORT");
        return it == env.at(rank).end() ? std::string() : it->second;
      };
      EXPECT_EQ(port(1), port(0));
      ports.insert(port(0));
    }
    EXPECT_EQ(ports.size(), static_cast<size_t>(kJobs))
        << "round " << round << ": jobs running at the same time shared a port";
  }
}

#if defined(__linux__)
constexpr int kOnePort = 40000;

/// What a launcher started in a namespace whose local port range is the one port kOnePort
/// printed; `why` says why there was no such namespace ("" when there was); `code` is the
/// launcher's exit code, or what went wrong around it.
struct OnePortJob {
  std::string why, code, out, err;
};

/// Runs `accelerate-cpp launch --num_processes 2 --main_process_port 0 FAKE ARGS` in a network
/// namespace whose local port range is kOnePort (from a child process: a namespace cannot be
/// left); `before` runs in the namespace first.
OnePortJob launch_with_one_port(const std::vector<std::string>& args,
                                const std::function<void()>& before = {}) {
  TempDir results;
  const pid_t runner = fork();
  if (runner < 0) return {"", "fork(): " + std::string(std::strerror(errno)), "", ""};
  if (runner == 0) {
    const std::string why = enter_port_range_namespace(kOnePort, kOnePort);
    write_file(results.path() / "namespace", why);
    if (why.empty()) {
      if (before) before();
      std::vector<std::string> argv = {"launch", "--num_processes", "2", "--main_process_port", "0",
                                       kFake};
      argv.insert(argv.end(), args.begin(), args.end());
      const Outcome r = Launcher(argv).wait(60s);
      write_file(results.path() / "code", std::to_string(r.timed_out ? -2 : r.code()));
      write_file(results.path() / "out", r.out);
      write_file(results.path() / "err", r.err);
    }
    _exit(0);
  }
  int status = 0;
  waitpid(runner, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return {"", "the runner failed", "", ""};
  return {read_file(results.path() / "namespace"), read_file(results.path() / "code"),
          read_file(results.path() / "out"), read_file(results.path() / "err")};
}

// Between the launcher's choice of a port and rank 0's listen, the kernel must not give the
// port to another program: a server on port 0 (as Gloo's listeners are), which would keep rank
// 0's store from listening there, or a connection's local port. In a namespace whose local port
// range is that one port, rank 1 asks for a port both ways before rank 0 listens; the
// launcher's bound socket leaves them none, and rank 0 then listens on it with SO_REUSEADDR,
// as c10d's TCPStore does.
TEST(LauncherPorts, NoOtherProgramTakesThePortBeforeRankZeroListens) {
  const TempDir dir;
  const OnePortJob r = launch_with_one_port({"--take-ports", "45000:" + dir.str()});
  if (!r.why.empty()) GTEST_SKIP() << "no network namespace of our own: " << r.why;
  EXPECT_EQ(r.code, "0") << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "[rank 0] LISTENING " + std::to_string(kOnePort))) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "[rank 1] LISTEN0 none")) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "[rank 1] CONNECT none")) << r.out << r.err;
}

// When the port's lock file cannot be used (here a symbolic link, which the launcher does not
// follow), the launcher says that other launchers could pick the same port, and still holds
// the port against other programs.
TEST(LauncherPorts, AnUnusableLockWarnsAndStillHoldsThePort) {
  const TempDir dir;
  const std::string lock = "/tmp/accelerate-cpp-ports/" + std::to_string(kOnePort) + ".lock";
  const OnePortJob r = launch_with_one_port({"--take-ports", "45000:" + dir.str()}, [&] {
    fs::create_directories("/tmp/accelerate-cpp-ports");
    // Another launcher's job on the host may hold that port's lock for a moment.
    for (int i = 0; i < 500 && symlink("/nonexistent", lock.c_str()) != 0; ++i) usleep(10000);
  });
  std::error_code ignored;
  if (fs::is_symlink(fs::symlink_status(lock, ignored))) fs::remove(lock, ignored);
  if (!r.why.empty()) GTEST_SKIP() << "no network namespace of our own: " << r.why;
  EXPECT_EQ(r.code, "0") << r.out << r.err;
  EXPECT_TRUE(contains(r.err, "warning: cannot lock ports (" + lock)) << r.err;
  EXPECT_TRUE(contains(r.out, "[rank 0] LISTENING " + std::to_string(kOnePort))) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, "[rank 1] LISTEN0 none")) << r.out << r.err;
}
#endif

// ---------------------------------------------------------------------------------------------

/// ACCELERATE_TIMEOUT of every rank ("unset" when a rank did not have it).
std::vector<std::string> timeouts(const Outcome& r) {
  std::vector<std::string> result;
  for (const auto& [rank, vars] : env_by_rank(r.out)) {
    const auto it = vars.find("ACCELERATE_TIMEOUT");
    result.push_back(it == vars.end() ? "unset" : it->second);
  }
  return result;
}

TEST(LauncherTimeout, FlagIsExportedToEveryRank) {
  TempDir home;  // HF_HOME without a default configuration
  const EnvChanges env = {{"HF_HOME", home.str()}};
  Outcome r = run_launcher(
      {"launch", "--num_processes", "2", "--timeout", "90.5", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"90.5", "90.5"})) << r.out;
  r = run_launcher({"launch", "--timeout", "1800", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"1800"})) << r.out;
  r = run_launcher({"launch", "--num_processes", "2", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"unset", "unset"})) << r.out;
}

TEST(LauncherTimeout, ConfigFileKeyIsExportedAndTheFlagWins) {
  TempDir dir;
  const fs::path file = dir.path() / "job.yaml";
  write_file(file, "num_processes: 2\ntimeout: 120\n");
  Outcome r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"120", "120"})) << r.out;

  r = run_launcher(
      {"launch", "--config_file", file.string(), "--timeout", "7", kFake, "--print-env"});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"7", "7"})) << r.out;

  write_file(file, "num_processes: 2\ntimeout: 0.25\n");
  r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"0.25", "0.25"})) << r.out;
}

TEST(LauncherTimeout, ConfigCommandWritesTheKey) {
  TempDir home;
  const EnvChanges env = {{"HF_HOME", home.str()}};
  const Outcome config = run_launcher({"config", "--num_processes", "2", "--timeout", "45"}, env);
  ASSERT_EQ(config.code(), 0) << config.err;
  const std::string yaml = read_file(home.path() / "accelerate" / "default_config.yaml");
  EXPECT_TRUE(contains(yaml, "\ntimeout: 45\n")) << yaml;
  const Outcome r = run_launcher({"launch", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(timeouts(r), (std::vector<std::string>{"45", "45"})) << r.out;

  // Without --timeout the key is not written (Python's Accelerate does not know it).
  ASSERT_EQ(run_launcher({"config", "--num_processes", "2"}, env).code(), 0);
  EXPECT_FALSE(contains(read_file(home.path() / "accelerate" / "default_config.yaml"), "timeout"));
}

TEST(LauncherTimeout, BadValuesInTheFileNameFileAndKey) {
  TempDir dir;
  const fs::path file = dir.path() / "job.yaml";
  for (const std::string value : {"abc", "[1, 2]", "0", "-3", "true", "1e3", "{a: 1}"}) {
    write_file(file, "num_processes: 2\ntimeout: " + value + "\n");
    const Outcome r =
        run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
    EXPECT_EQ(r.code(), 2) << value << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: error: config file " + file.string() +
                                    ": key 'timeout': expected a positive number of seconds"))
        << value << "\n"
        << r.err;
    EXPECT_EQ(r.out, "") << "no process may start";
  }
}

/// ACCELERATE_JOIN_TIMEOUT of every rank ("unset" when a rank did not have it).
std::vector<std::string> join_timeouts(const Outcome& r) {
  std::vector<std::string> result;
  for (const auto& [rank, vars] : env_by_rank(r.out)) {
    const auto it = vars.find("ACCELERATE_JOIN_TIMEOUT");
    result.push_back(it == vars.end() ? "unset" : it->second);
  }
  return result;
}

// --join_timeout and the config key join_timeout reach every rank as ACCELERATE_JOIN_TIMEOUT
// (the flag wins); `config` writes the key only when the flag is given; a value that is not a
// positive number of seconds is a usage error naming the flag, or the file and the key.
TEST(LauncherJoinTimeout, FlagConfigKeyAndBadValues) {
  TempDir home;
  const EnvChanges env = {{"HF_HOME", home.str()}};
  Outcome r = run_launcher(
      {"launch", "--num_processes", "2", "--join_timeout", "12.5", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(join_timeouts(r), (std::vector<std::string>{"12.5", "12.5"})) << r.out;
  r = run_launcher({"launch", "--num_processes", "2", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(join_timeouts(r), (std::vector<std::string>{"unset", "unset"})) << r.out;

  ASSERT_EQ(run_launcher({"config", "--num_processes", "2"}, env).code(), 0);
  EXPECT_FALSE(
      contains(read_file(home.path() / "accelerate" / "default_config.yaml"), "join_timeout"));
  const Outcome config =
      run_launcher({"config", "--num_processes", "2", "--join_timeout", "60"}, env);
  ASSERT_EQ(config.code(), 0) << config.err;
  EXPECT_TRUE(contains(read_file(home.path() / "accelerate" / "default_config.yaml"),
                       "\njoin_timeout: 60\n"));
  r = run_launcher({"launch", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(join_timeouts(r), (std::vector<std::string>{"60", "60"})) << r.out;
  r = run_launcher({"launch", "--join_timeout", "5", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(join_timeouts(r), (std::vector<std::string>{"5", "5"})) << r.out;

  for (const std::string bad : {"0", "-1", "ten", "1e3"}) {
    r = run_launcher({"launch", "--join_timeout", bad, kFake, "--print-env"}, env);
    EXPECT_EQ(r.code(), 2) << bad << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "--join_timeout must be a positive number of seconds")) << r.err;
    EXPECT_EQ(r.out, "") << "no process may start";
  }
  const fs::path file = home.path() / "job.yaml";
  write_file(file, "num_processes: 2\njoin_timeout: abc\n");
  r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, "config file " + file.string() +
                                  ": key 'join_timeout': expected a positive number of seconds"))
      << r.err;
}

/// ACCELERATE_GRADIENT_ACCUMULATION_STEPS of every rank ("unset" when a rank did not have it).
std::vector<std::string> accumulation_steps(const Outcome& r) {
  std::vector<std::string> result;
  for (const auto& [rank, vars] : env_by_rank(r.out)) {
    const auto it = vars.find("ACCELERATE_GRADIENT_ACCUMULATION_STEPS");
    result.push_back(it == vars.end() ? "unset" : it->second);
  }
  return result;
}

// --gradient_accumulation_steps and the config key reach every rank as the variable the
// Accelerator reads when the code passes no steps; the flag wins over the key.
TEST(LauncherGradientAccumulation, FlagAndConfigKeyAreExported) {
  TempDir home;  // HF_HOME without a default configuration
  const EnvChanges env = {{"HF_HOME", home.str()}};
  Outcome r = run_launcher({"launch", "--num_processes", "2", "--gradient_accumulation_steps", "4",
                            kFake, "--print-env"},
                           env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(accumulation_steps(r), (std::vector<std::string>{"4", "4"})) << r.out;
  r = run_launcher({"launch", "--num_processes", "2", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(accumulation_steps(r), (std::vector<std::string>{"unset", "unset"})) << r.out;

  const fs::path file = home.path() / "job.yaml";
  write_file(file, "num_processes: 2\ngradient_accumulation_steps: 8\n");
  r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(accumulation_steps(r), (std::vector<std::string>{"8", "8"})) << r.out;
  r = run_launcher({"launch", "--config_file", file.string(), "--gradient_accumulation_steps", "02",
                    kFake, "--print-env"},
                   env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(accumulation_steps(r), (std::vector<std::string>{"2", "2"})) << r.out;

  // `config` writes the key only when given (Python's Accelerate does not know it), and launch
  // reads it back from the default file.
  ASSERT_EQ(run_launcher({"config", "--num_processes", "2", "--gradient_accumulation_steps", "3",
                          "--num_cpu_threads_per_process", "1"},
                         env)
                .code(),
            0);
  const std::string yaml = read_file(home.path() / "accelerate" / "default_config.yaml");
  EXPECT_TRUE(contains(yaml, "\ngradient_accumulation_steps: 3\n")) << yaml;
  EXPECT_TRUE(contains(yaml, "\nnum_cpu_threads_per_process: 1\n")) << yaml;
  r = run_launcher({"launch", kFake, "--print-env"}, env);
  ASSERT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(accumulation_steps(r), (std::vector<std::string>{"3", "3"})) << r.out;
  ASSERT_EQ(run_launcher({"config", "--num_processes", "2"}, env).code(), 0);
  const std::string plain = read_file(home.path() / "accelerate" / "default_config.yaml");
  EXPECT_FALSE(contains(plain, "gradient_accumulation_steps")) << plain;
  EXPECT_FALSE(contains(plain, "num_cpu_threads_per_process")) << plain;
}

TEST(LauncherGradientAccumulation, BadValuesAreUsageErrors) {
  for (const std::string bad : {"0", "-1", "abc", "2.5", "", "1e3", "+3", "99999999999"}) {
    const Outcome r = run_launcher({"launch", "--gradient_accumulation_steps", bad, kFake});
    EXPECT_EQ(r.code(), 2) << bad << "\n" << r.err;
    EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: error: --gradient_accumulation_steps"))
        << bad << "\n"
        << r.err;
    EXPECT_EQ(r.out, "") << "no process may start";
  }
  const Outcome r = run_launcher({"launch", "--gradient_accumulation_steps", "0", kFake});
  EXPECT_TRUE(contains(r.err,
                       "--gradient_accumulation_steps must be a whole number of at least 1, "
                       "e.g. 4 (got '0')"))
      << r.err;
  TempDir dir;
  const fs::path file = dir.path() / "job.yaml";
  for (const std::string bad : {"0", "-3", "abc", "1.5", "true", "[2]", "{a: 1}"}) {
    write_file(file, "num_processes: 2\ngradient_accumulation_steps: " + bad + "\n");
    const Outcome k =
        run_launcher({"launch", "--config_file", file.string(), kFake, "--print-env"});
    EXPECT_EQ(k.code(), 2) << bad << "\n" << k.err;
    EXPECT_TRUE(contains(k.err, "accelerate-cpp launch: error: config file " + file.string() +
                                    ": key 'gradient_accumulation_steps': expected a whole number "
                                    "of at least 1, got '"))
        << bad << "\n"
        << k.err;
    EXPECT_EQ(k.out, "") << "no process may start";
  }
}

// ---------------------------------------------------------------------------------------------

TEST(LauncherConfigFile, DirectoryIsAUsageError) {
  TempDir dir;
  const Outcome r = run_launcher({"launch", "--config_file", dir.str(), kFake, "--print", "ran"});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: error: config file " + dir.str() +
                                  ": cannot be read: it is a directory"))
      << r.err;
  EXPECT_EQ(r.out, "");
}

TEST(LauncherConfigFile, UnreadableFileIsAUsageError) {
  TempDir dir;
  const fs::path file = dir.path() / "job.yaml";
  write_file(file, "num_processes: 2\n");
  // A path through a regular file fails to open for every user, root included.
  const std::string below_file = (file / "job.yaml").string();
  Outcome r = run_launcher({"launch", "--config_file", below_file, kFake, "--print", "ran"});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(
      contains(r.err, "config file " + below_file + ": cannot be read: " + std::strerror(ENOTDIR)))
      << r.err;
  EXPECT_EQ(r.out, "");
  // No read permission (root reads the file regardless; then only the case above applies).
  ASSERT_EQ(chmod(file.c_str(), 0), 0);
  if (access(file.c_str(), R_OK) != 0) {
    r = run_launcher({"launch", "--config_file", file.string(), kFake, "--print", "ran"});
    EXPECT_EQ(r.code(), 2) << r.err;
    EXPECT_TRUE(contains(
        r.err, "config file " + file.string() + ": cannot be read: " + std::strerror(EACCES)))
        << r.err;
    EXPECT_EQ(r.out, "");
  }
}

TEST(LauncherConfigFile, FilesOverOneMiBAreRefusedBeforeParsing) {
  TempDir dir;
  constexpr size_t kLimit = size_t{1} << 20;
  // Exactly at the limit: accepted (a valid file padded with a comment).
  const std::string head = "num_processes: 2\n#";
  const fs::path at_limit = dir.path() / "at_limit.yaml";
  write_file(at_limit, head + std::string(kLimit - head.size() - 1, 'x') + "\n");
  ASSERT_EQ(fs::file_size(at_limit), kLimit);
  Outcome r = run_launcher({"launch", "--config_file", at_limit.string(), kFake, "--print-env"});
  EXPECT_EQ(r.code(), 0) << r.err;
  EXPECT_EQ(env_by_rank(r.out).size(), 2u) << r.err;

  // One byte more, and a 64 MiB file (sparse; never read): refused, naming size and limit.
  for (const size_t size : {kLimit + 1, size_t{64} << 20}) {
    const fs::path big = dir.path() / ("big" + std::to_string(size) + ".yaml");
    write_file(big, head);
    fs::resize_file(big, size);
    r = run_launcher({"launch", "--config_file", big.string(), kFake, "--print", "ran"});
    EXPECT_EQ(r.code(), 2) << r.err;
    EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: error: config file " + big.string() +
                                    ": is " + std::to_string(size) +
                                    " bytes, more than the limit of 1048576 bytes (1 MiB)"))
        << r.err;
    EXPECT_EQ(r.out, "");
  }

  // A device without a size is cut off at the limit while it is read.
  r = run_launcher({"launch", "--config_file", "/dev/zero", kFake, "--print", "ran"});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, "config file /dev/zero: is more than the limit of 1048576 bytes"))
      << r.err;
}

// ---------------------------------------------------------------------------------------------

struct UsageCase {
  std::string name;
  std::vector<std::string> args;
  std::string message;
};

void PrintTo(const UsageCase& c, std::ostream* os) { *os << c.name; }

class LauncherUsage : public ::testing::TestWithParam<UsageCase> {};

TEST_P(LauncherUsage, ExitsWithCode2AndNamesTheProblem) {
  const UsageCase& c = GetParam();
  std::vector<std::string> args = {"launch"};
  args.insert(args.end(), c.args.begin(), c.args.end());
  const Outcome r = run_launcher(args);
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, c.message)) << r.err;
  EXPECT_TRUE(contains(r.err, "accelerate-cpp launch: error: ")) << r.err;
  EXPECT_EQ(r.out, "");
}

INSTANTIATE_TEST_SUITE_P(
    BadArguments, LauncherUsage,
    ::testing::Values(
        UsageCase{"UnknownFlag", {"--bogus", kFake}, "--bogus"},
        UsageCase{"ZeroProcesses",
                  {"--num_processes", "0", kFake},
                  "--num_processes must be at least 1 (got 0)"},
        UsageCase{"NotANumber", {"--num_processes", "two", kFake}, "--num_processes"},
        UsageCase{"BadMixedPrecision",
                  {"--mixed_precision", "fp8", kFake},
                  "--mixed_precision: fp8 not in {no,fp16,bf16}"},
        UsageCase{"MissingProgram", {"--num_processes", "2"}, "PROGRAM is required"},
        UsageCase{"NonexistentProgram",
                  {"/nonexistent/train"},
                  "cannot run PROGRAM '/nonexistent/train': No such file or directory"},
        UsageCase{"ProgramNotInPath",
                  {"no-such-program-4711"},
                  "cannot run PROGRAM 'no-such-program-4711': command not found in PATH"},
        UsageCase{"DirectoryAsProgram", {"/"}, "is a directory"},
        UsageCase{"MultiMachineWithoutIp",
                  {"--num_machines", "2", kFake},
                  "--main_process_ip is required when --num_machines > 1"},
        UsageCase{"MultiMachineWithoutPort",
                  {"--num_machines", "2", "--main_process_ip", "10.0.0.1", kFake},
                  "--main_process_port is required when --num_machines > 1"},
        UsageCase{"MachineRankOutOfRange",
                  {"--machine_rank", "1", kFake},
                  "--machine_rank must be in [0, 0] (got 1)"},
        UsageCase{"ProcessesNotAMultipleOfMachines",
                  {"--num_processes", "3", "--num_machines", "2", "--main_process_ip", "10.0.0.1",
                   "--main_process_port", "29500", kFake},
                  "--num_processes (3) must be a multiple of --num_machines (2)"},
        UsageCase{"NegativeGracePeriod", {"--grace_period", "-1", kFake}, "--grace_period"},
        UsageCase{"ZeroThreads",
                  {"--num_cpu_threads_per_process", "0", kFake},
                  "--num_cpu_threads_per_process must be at least 1"},
        UsageCase{"ZeroTimeout",
                  {"--timeout", "0", kFake},
                  "--timeout must be a positive number of seconds, e.g. 1800 or 0.5 (got '0')"},
        UsageCase{"NegativeTimeout", {"--timeout", "-5", kFake}, "--timeout"},
        UsageCase{"TimeoutNotANumber",
                  {"--timeout", "soon", kFake},
                  "--timeout must be a positive number of seconds, e.g. 1800 or 0.5 (got 'soon')"},
        UsageCase{"TimeoutInfinite", {"--timeout", "inf", kFake}, "(got 'inf')"},
        UsageCase{"TimeoutWithExponent", {"--timeout", "1e3", kFake}, "(got '1e3')"}),
    [](const ::testing::TestParamInfo<UsageCase>& info) { return info.param.name; });

TEST(LauncherUsageFiles, NonExecutableFileIsAUsageError) {
  TempDir dir;
  const fs::path script = dir.path() / "train.sh";
  std::ofstream(script) << "#!/bin/sh\nexit 0\n";
  chmod(script.c_str(), 0644);
  const Outcome r = run_launcher({"launch", script.string()});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, "cannot run PROGRAM '" + script.string() + "': Permission denied"))
      << r.err;
}

TEST(LauncherUsageFiles, ExecFailureIsReported) {
  // Executable bit set but neither ELF nor "#!": execve() fails with ENOEXEC in the child.
  TempDir dir;
  const fs::path bogus = dir.path() / "bogus";
  std::ofstream(bogus) << "\x7f"
                       << "garbage";
  chmod(bogus.c_str(), 0755);
  const Outcome r = run_launcher({"launch", "--num_processes", "2", bogus.string()});
  EXPECT_EQ(r.code(), 2) << r.err;
  EXPECT_TRUE(contains(r.err, "failed to start rank 0: cannot execute '" + bogus.string() +
                                  "': " + std::strerror(ENOEXEC)))
      << r.err;
  EXPECT_FALSE(contains(r.err, "rank 1")) << "rank 1 must not be started after rank 0 failed";
}

TEST(LauncherCli, HelpAndVersion) {
  const Outcome top = run_launcher({"--help"});
  EXPECT_EQ(top.code(), 0);
  EXPECT_TRUE(contains(top.out, "launch")) << top.out;
  const Outcome launch = run_launcher({"launch", "--help"});
  EXPECT_EQ(launch.code(), 0);
  for (const char* flag : {"--num_processes", "--num_machines", "--machine_rank",
                           "--main_process_ip", "--main_process_port", "--mixed_precision", "--cpu",
                           "--num_cpu_threads_per_process", "--no_rank_prefix", "--grace_period",
                           "--timeout", "--gradient_accumulation_steps", "PROGRAM"}) {
    EXPECT_TRUE(contains(launch.out, flag)) << flag;
  }
  const Outcome none = run_launcher({});
  EXPECT_EQ(none.code(), 2);
  EXPECT_TRUE(contains(none.err, "subcommand")) << none.err;
}

}  // namespace
