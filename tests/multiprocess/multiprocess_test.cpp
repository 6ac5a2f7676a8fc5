// Real processes: accelerate-cpp launch running dist_check (no LibTorch in this binary).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

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

// One rank exits with code 3 while the others wait in a barrier: the launcher stops them and
// exits non-zero within 10 s, naming the rank and the code.
TEST(RealProcessFailure, RankExitCodeStopsTheJob) {
  Result r = run(launch(3, "--fail-rank 1 --exit-code 3"));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.seconds, 10.0) << r.output;
  EXPECT_NE(r.output.find("rank 1"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("code 3"), std::string::npos) << r.output;
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

// The same job with PyTorch's own DDP in Python (Debian's python3-torch, gloo, same initial
// weights and data order) ends with the same parameters within 1e-5.
TEST(PythonParity, SameParametersAsPyTorchDdp) {
  for (int n : {1, 2}) {
    const std::string cpp_out = temp_file("parity_cpp" + std::to_string(n));
    const std::string py_out = temp_file("parity_py" + std::to_string(n));
    const std::string launcher = std::string(LAUNCHER) + " launch --num_processes " +
                                 std::to_string(n) + " --num_cpu_threads_per_process 1 ";
    Result cpp = run(launcher + DDP_PARITY + " " + cpp_out);
    ASSERT_EQ(cpp.exit_code, 0) << cpp.output;
    Result py = run(launcher + "/usr/bin/python3 " + DDP_PARITY_PY + " " + py_out);
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
