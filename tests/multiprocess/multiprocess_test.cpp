// Real processes: accelerate-cpp launch running dist_check (no LibTorch in this binary).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <unistd.h>
#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

namespace {

struct Result {
  int exit_code;
  std::string output;  // stdout and stderr
  double seconds;
};

Result run(const std::string& command) {
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  std::string output;
  std::array<char, 4096> buffer;
  size_t got;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0)
    output.append(buffer.data(), got);
  const int status = ::pclose(pipe);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output, seconds};
}

std::string launch(int n, const std::string& args) {
  return std::string(LAUNCHER) + " launch --num_processes " + std::to_string(n) + " " + DIST_CHECK +
         " " + args;
}

std::string temp_file(const std::string& name) {
  std::string path =
      ::testing::TempDir() + "/accelerate_" + name + "_" + std::to_string(::getpid());
  std::remove(path.c_str());
  return path;
}

class RealProcesses : public ::testing::TestWithParam<int> {};

}  // namespace

TEST_P(RealProcesses, CollectivesAndMainProcessFirst) {
  const int n = GetParam();
  const std::string order = temp_file("order" + std::to_string(n));
  Result r = run(launch(n, "--order-file " + order));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::string line;
  size_t printed = 0;
  for (std::istringstream in(r.output); std::getline(in, line);)
    printed += line.find("printed once by the main process") != std::string::npos;
  EXPECT_EQ(printed, 1u) << r.output;
  std::ifstream in(order);
  std::vector<std::string> lines;
  while (std::getline(in, line)) lines.push_back(line);
  ASSERT_EQ(static_cast<int>(lines.size()), n);
  EXPECT_EQ(lines[0], "rank 0") << "main_process_first let another rank run first";
  std::remove(order.c_str());
}

INSTANTIATE_TEST_SUITE_P(Processes, RealProcesses, ::testing::Values(2, 3));

// Two "machines" on this host: two launchers with --num_machines 2 share one rendezvous (the
// main machine's store). Four ranks run every collective, the local indices restart per
// machine, and main_process_first orders all four.
TEST(RealProcesses, TwoMachinesOnOneHost) {
  const std::string order = temp_file("order_machines");
  const int port = 20000 + ::getpid() % 20000;
  auto machine = [&](int rank) {
    return std::string(LAUNCHER) + " launch --num_processes 4 --num_machines 2 --machine_rank " +
           std::to_string(rank) + " --main_process_ip 127.0.0.1 --main_process_port " +
           std::to_string(port) + " --num_cpu_threads_per_process 1 " + DIST_CHECK +
           " --order-file " + order;
  };
  const std::string out0 = temp_file("machine0"), out1 = temp_file("machine1");
  Result r = run("sh -c '" + machine(1) + " > " + out1 + " 2>&1 & p=$!; " + machine(0) + " > " +
                 out0 + " 2>&1; r0=$?; wait $p; r1=$?; echo RC $r0 $r1'");
  auto slurp = [](const std::string& f) {
    std::ifstream in(f);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  };
  const std::string log = slurp(out0) + slurp(out1);
  EXPECT_NE(r.output.find("RC 0 0"), std::string::npos) << r.output << log;
  std::ifstream in(order);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 4u) << log;
  EXPECT_EQ(lines[0], "rank 0");
  for (const auto& f : {order, out0, out1}) std::remove(f.c_str());
}

// One rank exits with code 3 while the others wait in a barrier: the job ends non-zero within
// 10 s, and says that rank 1 left. Either the others learn it at once from its shutdown
// (collectives out of step) and the launcher reports the first of them, or the launcher sees
// rank 1's code 3 first; which comes first is a race, the diagnosis is always there.
TEST(RealProcessFailure, RankExitCodeStopsTheJob) {
  Result r = run(launch(3, "--fail-rank 1 --exit-code 3"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.seconds, 10.0) << r.output;
  EXPECT_TRUE(r.output.find("rank 1 has ended (shutdown #1)") != std::string::npos ||
              r.output.find("rank 1 (pid") != std::string::npos &&
                  r.output.find("code 3") != std::string::npos)
      << r.output;
  // "dist_chec[k]" matches dist_check but not this pgrep's own shell command line.
  Result leftover = run("pgrep -f 'dist_chec[k] --fail-rank' || true");
  EXPECT_EQ(leftover.output, "") << "processes left behind: " << leftover.output;
}

// 50 consecutive 2-process runs that end normally all exit 0: the Accelerator's teardown
// neither aborts ("terminate called without an active exception") nor hangs.
TEST(RealProcessShutdown, FiftyCleanRuns) {
  for (int i = 0; i < 50; ++i) {
    Result r = run(launch(2, "--quick"));
    ASSERT_EQ(r.exit_code, 0) << "run " << i << ":\n" << r.output;
    ASSERT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
  }
}

namespace {
std::vector<double> read_values(const std::string& path) {
  std::ifstream in(path);
  std::vector<double> v;
  double x;
  while (in >> x) v.push_back(x);
  return v;
}
}  // namespace

// The same job with PyTorch's own DDP in Python (ACCELERATE_TEST_PYTHON's torch, gloo, same initial
// weights and data order) ends with the same parameters within 1e-5.
TEST(PythonParity, SameParametersAsPyTorchDdp) {
  for (int n : {1, 2}) {
    const std::string cpp_out = temp_file("parity_cpp" + std::to_string(n));
    const std::string py_out = temp_file("parity_py" + std::to_string(n));
    const std::string launcher = std::string(LAUNCHER) + " launch --num_processes " +
                                 std::to_string(n) + " --num_cpu_threads_per_process 1 ";
    Result cpp = run(launcher + DDP_PARITY + " " + cpp_out);
    ASSERT_EQ(cpp.exit_code, 0) << cpp.output;
    Result py = run(launcher + ACCELERATE_TEST_PYTHON " " + DDP_PARITY_PY + " " + py_out);
    ASSERT_EQ(py.exit_code, 0) << py.output;
    const auto a = read_values(cpp_out), b = read_values(py_out);
    ASSERT_EQ(a.size(), 3u * 16 + 16 + 16 + 1) << "C++ output of " << n << " processes";
    ASSERT_EQ(b.size(), a.size()) << "Python output of " << n << " processes";
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
    EXPECT_LE(worst, 1e-5) << n << " processes";
    // The job must have moved the weights away from their start.
    EXPECT_GT(std::abs(a[0] - 0.0), 1e-3);
  }
}

namespace {
std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
}  // namespace

// Train 3 epochs in one go; separately stop in the middle of epoch 2, save_state, and finish
// in a new process after load_state: parameters, optimizer state, learning rate and the next
// random draws are bit-identical, with 1 and 2 processes.
TEST(ExactResume, MidEpochResumeIsBitIdentical) {
  for (int n : {1, 2}) {
    const std::string tag = std::to_string(n);
    const std::string full = temp_file("resume_full" + tag),
                      resumed = temp_file("resume_out" + tag);
    const std::string dir = temp_file("resume_ckpt" + tag);
    std::filesystem::remove_all(dir);
    const std::string launcher =
        std::string(LAUNCHER) + " launch --num_processes " + tag + " " + RESUME_CHECK + " ";
    Result a = run(launcher + "full " + full);
    ASSERT_EQ(a.exit_code, 0) << a.output;
    Result b = run(launcher + "part " + dir);
    ASSERT_EQ(b.exit_code, 0) << b.output;
    ASSERT_TRUE(std::filesystem::exists(dir + "/accelerator_state.json")) << b.output;
    Result c = run(launcher + "resume " + dir + " " + resumed);
    ASSERT_EQ(c.exit_code, 0) << c.output;
    const std::string expected = slurp(full), got = slurp(resumed);
    ASSERT_GT(expected.size(), 1000u);
    std::istringstream e(expected), g(got);
    std::string le, lg;
    int line = 0, differing = 0, first = -1;
    while (std::getline(e, le)) {
      ++line;
      if (!std::getline(g, lg) || lg != le) {
        ++differing;
        if (first < 0) first = line;
      }
    }
    EXPECT_EQ(differing, 0) << n << " processes: the resumed run differs in " << differing << " of "
                            << line << " lines, first at line " << first;
    EXPECT_EQ(got.size(), expected.size());
    std::filesystem::remove_all(dir);
  }
}

// A process killed (SIGKILL) in the middle of save_state leaves a loadable, complete
// checkpoint: the previous one or the new one, never a mix.
TEST(CrashSafeSave, KilledDuringSaveStateLeavesACompleteCheckpoint) {
  const std::string dir = temp_file("killed_ckpt");
  for (int delay_ms : {30, 90, 170, 260, 400}) {
    std::filesystem::remove_all(dir);
    std::filesystem::remove_all(dir + ".tmp");
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(RESUME_CHECK, RESUME_CHECK, "save-loop", dir.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!std::filesystem::exists(dir + "/accelerator_state.json") &&
           std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(std::filesystem::exists(dir + "/accelerator_state.json")) << "no first save";
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the saver ended on its own";
    Result v = run(std::string(RESUME_CHECK) + " verify " + dir);
    EXPECT_EQ(v.exit_code, 0) << "killed after " << delay_ms << " ms: " << v.output;
  }
  std::filesystem::remove_all(dir);
  std::filesystem::remove_all(dir + ".tmp");
}

// A rank that never comes to a collective: the others time out (launch --timeout) with an error
// that says where every rank is, and the launcher, stopping the job, says it too.
TEST(StuckJob, TimeoutAndLauncherSayWhereEveryRankIs) {
  Result r = run(std::string(LAUNCHER) + " launch --num_processes 2 --timeout 3 " + DIST_CHECK +
                 " --stuck-rank 1");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("rank 0 waits in reduce #2"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("rank 1 last entered gather #1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("where the ranks were: rank 0 last entered reduce #2"), std::string::npos)
      << r.output;
  EXPECT_LT(r.seconds, 60.0) << "the launcher must stop the sleeping rank";
}
