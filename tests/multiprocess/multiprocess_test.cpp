// Real processes: accelerate-cpp launch running dist_check (no LibTorch in this binary).
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "reserved_port.h"
#include "subprocess.h"
#include "temp_dir.h"

namespace {

using accelerate::testing::Command;
using accelerate::testing::Outcome;
using accelerate::testing::TempDir;

// Runs argv, stdout and stderr together in Outcome::out; past Subprocess::kDefaultTimeout
// the test fails rather than hangs.
Outcome run(const std::vector<std::string>& argv) {
  const Outcome r = accelerate::testing::run_command(Command(argv).merge_stderr(true));
  EXPECT_FALSE(r.timed_out) << "killed after " << r.seconds << " s:\n" << r.out;
  return r;
}

// `accelerate-cpp launch --num_processes N PROGRAM ARGS...`.
std::vector<std::string> launch(int n, const std::string& program,
                                const std::vector<std::string>& args = {}) {
  std::vector<std::string> argv = {LAUNCHER, "launch", "--num_processes", std::to_string(n),
                                   program};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

// The launcher's command line for `program` (its path and arguments) on n processes of one
// thread each (the parity tests: PyTorch's and ours on the same footing).
std::vector<std::string> launch_one_thread(int n, const std::vector<std::string>& program) {
  std::vector<std::string> argv = {
      LAUNCHER, "launch", "--num_processes", std::to_string(n), "--num_cpu_threads_per_process",
      "1"};
  argv.insert(argv.end(), program.begin(), program.end());
  return argv;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> lines_of(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

class RealProcesses : public ::testing::TestWithParam<int> {};

}  // namespace

TEST_P(RealProcesses, CollectivesAndMainProcessFirst) {
  const int n = GetParam();
  const TempDir dir;
  const std::string order = dir.path("order");
  const Outcome r = run(launch(n, DIST_CHECK, {"--order-file", order}));
  ASSERT_EQ(r.code(), 0) << r.out;
  std::string line;
  size_t printed = 0;
  for (std::istringstream in(r.out); std::getline(in, line);)
    printed += line.find("printed once by the main process") != std::string::npos;
  EXPECT_EQ(printed, 1u) << r.out;
  const std::vector<std::string> lines = lines_of(order);
  ASSERT_EQ(static_cast<int>(lines.size()), n);
  EXPECT_EQ(lines[0], "rank 0") << "main_process_first let another rank run first";
}

INSTANTIATE_TEST_SUITE_P(Processes, RealProcesses, ::testing::Values(2, 3));

// Two "machines" on this host: two launchers with --num_machines 2 share one rendezvous (the
// main machine's store, at a port held for the test). Four ranks run every collective, the
// local indices restart per machine, and main_process_first orders all four.
TEST(RealProcesses, TwoMachinesOnOneHost) {
  const TempDir dir;
  const std::string order = dir.path("order");
  const accelerate::testing::ReservedPort port;
  auto machine = [&](int rank) {
    return Command({LAUNCHER, "launch", "--num_processes", "4", "--num_machines", "2",
                    "--machine_rank", std::to_string(rank), "--main_process_ip", "127.0.0.1",
                    "--main_process_port", std::to_string(port.number()),
                    "--num_cpu_threads_per_process", "1", DIST_CHECK, "--order-file", order})
        .merge_stderr(true);
  };
  accelerate::testing::Subprocess machine1(machine(1));
  accelerate::testing::Subprocess machine0(machine(0));
  const Outcome r0 = machine0.wait(), r1 = machine1.wait();
  const std::string log = "machine 0:\n" + r0.out + "machine 1:\n" + r1.out;
  EXPECT_EQ(r0.code(), 0) << log;
  EXPECT_EQ(r1.code(), 0) << log;
  const std::vector<std::string> lines = lines_of(order);
  ASSERT_EQ(lines.size(), 4u) << log;
  EXPECT_EQ(lines[0], "rank 0");
}

// One rank exits with code 3 while the others wait in a barrier: the job ends non-zero, and
// says that rank 1 left. Either the others learn it at once from its shutdown (collectives
// out of step) and the launcher reports the first of them, or the launcher sees rank 1's code
// 3 first and stops the others; which comes first is a race, the diagnosis is always there.
TEST(RealProcessFailure, RankExitCodeStopsTheJob) {
  const Outcome r = run(launch(3, DIST_CHECK, {"--fail-rank", "1", "--exit-code", "3"}));
  EXPECT_NE(r.code(), 0) << r.out;
  EXPECT_TRUE(r.out.find("rank 1 has ended (shutdown #1)") != std::string::npos ||
              r.out.find("rank 1 (pid") != std::string::npos &&
                  r.out.find("code 3") != std::string::npos)
      << r.out;
  // "dist_chec[k]" matches dist_check but not this pgrep's own command line.
  const Outcome leftover = run({"pgrep", "-f", "dist_chec[k] --fail-rank"});
  EXPECT_EQ(leftover.out, "") << "processes left behind: " << leftover.out;
}

// 50 consecutive 2-process runs that end normally all exit 0: the Accelerator's teardown
// neither aborts ("terminate called without an active exception") nor hangs.
TEST(RealProcessShutdown, FiftyCleanRuns) {
  for (int i = 0; i < 50; ++i) {
    const Outcome r = run(launch(2, DIST_CHECK, {"--quick"}));
    ASSERT_EQ(r.code(), 0) << "run " << i << ":\n" << r.out;
    ASSERT_EQ(r.out.find("terminate called"), std::string::npos) << r.out;
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

// Accelerators made one after the other, and two at once, in every process (as Python programs
// and Accelerate's tests do), with 2 and 3 processes.
TEST(ManyAccelerators, OneAfterTheOtherAndTwoAtOnce) {
  for (int n : {2, 3}) {
    const Outcome r = run(launch(n, DIST_CHECK, {"--many-accelerators"}));
    EXPECT_EQ(r.code(), 0) << n << " processes: " << r.out;
  }
}

// The same job with PyTorch's own DDP in Python (ACCELERATE_TEST_PYTHON's torch, gloo, same initial
// weights and data order) ends with the same parameters, bit for bit, with either engine and 1
// to 3 processes (3: the 1/3 scaling and Gloo's ring order matter).
TEST(PythonParity, SameParametersAsPyTorchDdp) {
  for (int n : {1, 2, 3}) {
    const TempDir dir;
    const std::string py_out = dir.path("py");
    const Outcome py = run(launch_one_thread(n, {ACCELERATE_TEST_PYTHON, DDP_PARITY_PY, py_out}));
    ASSERT_EQ(py.code(), 0) << py.out;
    const auto b = read_values(py_out);
    for (const std::string engine : {"buckets", "reducer"}) {
      if (n == 1 && engine == "reducer") continue;  // no engine with one process
      const std::string cpp_out = dir.path("cpp-" + engine);
      const Outcome cpp = run(launch_one_thread(n, {DDP_PARITY, cpp_out, "8", engine}));
      ASSERT_EQ(cpp.code(), 0) << cpp.out;
      const auto a = read_values(cpp_out);
      ASSERT_EQ(a.size(), 3u * 16 + 16 + 16 + 1) << "C++ output of " << n << " processes";
      ASSERT_EQ(b.size(), a.size()) << "Python output of " << n << " processes";
      double worst = 0;
      for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
      EXPECT_EQ(worst, 0.0) << n << " processes, engine " << engine;
      // The job must have moved the weights away from their start.
      EXPECT_GT(std::abs(a[0] - 0.0), 1e-3);
    }
  }
}

// DDP's fp16 communication hook and uneven inputs (join_uneven_inputs against PyTorch's
// `with ddp.join():`, rank r running out of data first; with find_unused_parameters too) give
// PyTorch's parameters bit for bit, with 2 and 3 processes, the hook with either engine.
TEST(PythonParity, CommHooksAndUnevenInputsMatchPyTorchDdp) {
  struct Case {
    std::string hook, join, find_unused;
    bool reducer;  // also with DdpEngine::Reducer (which cannot join)
  };
  // No bf16 case: PyTorch's bf16_compress_hook refuses anything but CUDA with NCCL 2.10+ (the
  // engines agree with each other in ddp_test.cpp).
  const std::vector<Case> cases = {{"fp16", "0", "0", true},
                                   {"no", "1", "0", false},
                                   {"fp16", "1", "0", false},
                                   {"no", "1", "1", false}};
  for (int n : {2, 3}) {
    for (const Case& c : cases) {
      const std::string what = std::to_string(n) + " processes, hook " + c.hook + ", join " +
                               c.join + ", find_unused " + c.find_unused;
      const TempDir dir;
      const std::string py_out = dir.path("py");
      const Outcome py = run(launch_one_thread(n, {ACCELERATE_TEST_PYTHON, DDP_PARITY_PY, py_out,
                                                   "8", "-", c.hook, c.join, c.find_unused}));
      ASSERT_EQ(py.code(), 0) << what << ": " << py.out;
      const auto b = read_values(py_out);
      ASSERT_EQ(b.size(), 3u * 16 + 16 + 16 + 1) << what;
      std::vector<std::string> engines = {"buckets"};
      if (c.reducer) engines.push_back("reducer");
      for (const std::string& engine : engines) {
        const std::string cpp_out = dir.path("cpp-" + engine);
        const Outcome cpp = run(launch_one_thread(
            n, {DDP_PARITY, cpp_out, "8", engine, c.hook, c.join, c.find_unused}));
        ASSERT_EQ(cpp.code(), 0) << what << ", engine " << engine << ": " << cpp.out;
        const auto a = read_values(cpp_out);
        ASSERT_EQ(a.size(), b.size()) << what;
        double worst = 0;
        for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
        EXPECT_EQ(worst, 0.0) << what << ", engine " << engine;
        EXPECT_GT(std::abs(a[0] - 0.0), 1e-3) << what;
      }
    }
  }
}

// A model with BatchNorm2d and BatchNorm1d under default options, with 2 and 3 processes, both
// engines, with and without accumulation: the parameters, process 0's buffers and every
// process's evaluation output equal those of PyTorch's DDP. Under join_uneven_inputs the
// parameters do (training BatchNorm does not read its running statistics), and every process
// ends with the same buffers; which process's statistics the others take while some have
// joined differs from PyTorch's (README, "Gradient synchronisation").
TEST(PythonParity, BatchNormMatchesPyTorchDdp) {
  struct Case {
    std::string engine, join, accumulation;
  };
  const std::vector<Case> cases = {{"buckets", "0", "1"},
                                   {"reducer", "0", "1"},
                                   {"buckets", "0", "2"},
                                   {"reducer", "0", "2"},
                                   {"buckets", "1", "1"}};
  for (int n : {2, 3}) {
    for (const Case& c : cases) {
      const std::string what = std::to_string(n) + " processes, engine " + c.engine + ", join " +
                               c.join + ", accumulation " + c.accumulation;
      const TempDir dir;
      const std::string py_out = dir.path("py"), cpp_out = dir.path("cpp");
      const Outcome py =
          run(launch_one_thread(n, {ACCELERATE_TEST_PYTHON, DDP_PARITY_PY, py_out, "8", "-", "no",
                                    c.join, "0", "bn", c.accumulation}));
      ASSERT_EQ(py.code(), 0) << what << ": " << py.out;
      const Outcome cpp = run(launch_one_thread(
          n, {DDP_PARITY, cpp_out, "8", c.engine, "no", c.join, "0", "bn", c.accumulation}));
      ASSERT_EQ(cpp.code(), 0) << what << ": " << cpp.out;
      const auto a = read_values(cpp_out), b = read_values(py_out);
      // Parameters: conv 2 + 2, bn2 2 + 2, fc1 96 + 16, bn1 16 + 16, fc2 16 + 1; buffers: bn2
      // 2 + 2 + 1, bn1 16 + 16 + 1.
      const size_t params = 4 + 4 + 112 + 32 + 17, buffers = 5 + 33;
      ASSERT_EQ(a.size(), params + buffers) << what;
      ASSERT_EQ(b.size(), a.size()) << what;
      const size_t compared = c.join == "1" ? params : a.size();
      double worst = 0;
      for (size_t i = 0; i < compared; ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
      EXPECT_LE(worst, 1e-6) << what;
      EXPECT_GT(std::abs(a[params] - 0.0), 1e-3) << what << ": the running mean never moved";
      const auto eval0 = read_values(cpp_out + ".0");
      ASSERT_EQ(eval0.size(), 16u) << what;
      for (int r = 0; r < n; ++r) {
        const auto mine = read_values(cpp_out + "." + std::to_string(r));
        const auto theirs = read_values(py_out + "." + std::to_string(r));
        ASSERT_EQ(mine.size(), 16u) << what << ", rank " << r;
        ASSERT_EQ(theirs.size(), 16u) << what << ", rank " << r;
        for (size_t i = 0; i < mine.size(); ++i) {
          if (c.join == "1")
            EXPECT_EQ(mine[i], eval0[i]) << what << ", rank " << r << ": buffers differ";
          else
            EXPECT_NEAR(mine[i], theirs[i], 1e-6) << what << ", rank " << r;
        }
      }
    }
  }
}

// Where Gloo cannot all-reduce bfloat16 (LibTorch 1.x), CommHook::BF16 is refused at prepare
// with a message that names it, on every process, and the job ends instead of hanging.
TEST(PythonParity, Bf16HookIsRefusedWhereTheBackendCannotAllReduceBf16) {
  if (std::string(ACCELERATE_TEST_TORCH_VERSION).rfind("1.", 0) != 0)
    GTEST_SKIP() << "LibTorch " << ACCELERATE_TEST_TORCH_VERSION << ": Gloo all-reduces bf16";
  for (const std::string engine : {"buckets", "reducer"}) {
    const TempDir dir;
    const Outcome r = run(launch(2, DDP_PARITY, {dir.path("out"), "8", engine, "bf16"}));
    EXPECT_NE(r.code(), 0) << r.out;
    EXPECT_NE(r.out.find("comm_hook(CommHook::BF16) needs a backend that all-reduces bfloat16"),
              std::string::npos)
        << r.out;
  }
}

// Train 3 epochs in one go; separately stop in the middle of epoch 2, save_state, and finish
// in a new process after load_state: parameters, optimizer state, learning rate and the next
// random draws are bit-identical, with 1 and 2 processes.
TEST(ExactResume, MidEpochResumeIsBitIdentical) {
  for (int n : {1, 2}) {
    const TempDir dir;
    const std::string full = dir.path("full"), resumed = dir.path("resumed"),
                      ckpt = dir.path("ckpt");
    const Outcome a = run(launch(n, RESUME_CHECK, {"full", full}));
    ASSERT_EQ(a.code(), 0) << a.out;
    const Outcome b = run(launch(n, RESUME_CHECK, {"part", ckpt}));
    ASSERT_EQ(b.code(), 0) << b.out;
    ASSERT_TRUE(std::filesystem::exists(ckpt + "/accelerator_state.json")) << b.out;
    const Outcome c = run(launch(n, RESUME_CHECK, {"resume", ckpt, resumed}));
    ASSERT_EQ(c.code(), 0) << c.out;
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
  }
}

// A checkpoint of 2 real processes with one byte flipped in a file: load_state fails on both
// ranks with the error naming the file and its checksums, also when only rank 1 reads that file
// (its random states), so no rank waits for the other; repaired, the folder resumes.
TEST(ExactResume, ADamagedCheckpointIsRefusedOnEveryRank) {
  const TempDir dir;
  const std::string ckpt = dir.path("ckpt"), resumed = dir.path("resumed");
  const Outcome part = run(launch(2, RESUME_CHECK, {"part", ckpt}));
  ASSERT_EQ(part.code(), 0) << part.out;
  auto read = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  };
  for (const std::string file : {"random_states_1.pt", "model.safetensors", "optimizer.bin"}) {
    const std::string path = ckpt + "/" + file, original = read(path);
    ASSERT_GT(original.size(), 100u) << path;
    std::string damaged = original;
    size_t at = damaged.size() / 2;
    if (file == "model.safetensors") {  // in the tensor data, past the header
      uint64_t header = 0;
      std::memcpy(&header, damaged.data(), 8);
      at = 8 + header + (damaged.size() - 8 - header) / 2;
    }
    damaged[at] ^= 0x01;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << damaged;
    const Outcome c = run(launch(2, RESUME_CHECK, {"resume", ckpt, resumed}));
    EXPECT_NE(c.code(), 0) << c.out;
    for (int rank : {0, 1}) {
      const std::string prefix = "[rank " + std::to_string(rank) + "] resume_check: rank " +
                                 std::to_string(rank) + ": accelerate: load_state: ";
      bool found = false;
      std::string line;
      for (std::istringstream in(c.out); std::getline(in, line);)
        found = found ||
                (line.rfind(prefix, 0) == 0 &&
                 line.find(path + " is damaged: expected XXH3-64 checksum ") != std::string::npos &&
                 line.find(", got ") != std::string::npos);
      EXPECT_TRUE(found) << file << ": rank " << rank << " did not report it:\n" << c.out;
    }
    std::ofstream(path, std::ios::binary | std::ios::trunc) << original;
  }
  const Outcome ok = run(launch(2, RESUME_CHECK, {"resume", ckpt, resumed}));
  EXPECT_EQ(ok.code(), 0) << ok.out;
}

// A process killed (SIGKILL) in the middle of save_state leaves a loadable, complete
// checkpoint: the previous one or the new one, never a mix.
TEST(CrashSafeSave, KilledDuringSaveStateLeavesACompleteCheckpoint) {
  for (int delay_ms : {30, 90, 170, 260, 400}) {
    const TempDir dir;
    const std::string ckpt = dir.path("ckpt");
    accelerate::testing::Subprocess saver(Command({RESUME_CHECK, "save-loop", ckpt}));
    // Wait for the first complete save (the bound only keeps a broken saver from hanging).
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(2);
    while (!std::filesystem::exists(ckpt + "/accelerator_state.json") &&
           std::chrono::steady_clock::now() < give_up)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_TRUE(std::filesystem::exists(ckpt + "/accelerator_state.json")) << "no first save";
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(saver.pid(), SIGKILL);
    const Outcome killed = saver.wait();
    ASSERT_EQ(killed.signal(), SIGKILL) << "the saver ended on its own:\n" << killed.output();
    const Outcome v = run({RESUME_CHECK, "verify", ckpt});
    EXPECT_EQ(v.code(), 0) << "killed after " << delay_ms << " ms: " << v.out;
  }
}

// A rank that never comes to a collective: the others time out (launch --timeout) with an error
// that says where every rank is, and the launcher, stopping the job (the stuck rank would
// sleep for 120 s), says it too.
TEST(StuckJob, TimeoutAndLauncherSayWhereEveryRankIs) {
  const Outcome r = run({LAUNCHER, "launch", "--num_processes", "2", "--timeout", "3", DIST_CHECK,
                         "--stuck-rank", "1"});
  EXPECT_NE(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("rank 0 waits in reduce #2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rank 1 last entered gather #1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("where the ranks were: rank 0 last entered reduce #2"), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("stopping the other 1 process"), std::string::npos)
      << "the launcher must stop the sleeping rank:\n"
      << r.out;
}

// Ports of Accelerate 1.15's test scripts (accelerate/test_utils/scripts/test_ops.py,
// test_sync.py, test_script.py), each a program run under the launcher; see the header comment
// of each program for what is ported and what is skipped.
class AccelerateScripts : public ::testing::TestWithParam<int> {};

TEST_P(AccelerateScripts, TestOps) {
  const Outcome r = run(launch(GetParam(), ACCELERATE_TEST_OPS));
  ASSERT_EQ(r.code(), 0) << r.out;
  for (const char* step :
       {"testing gather", "testing broadcast", "testing reduce_max", "testing op_checker"})
    EXPECT_NE(r.out.find(step), std::string::npos) << step << " did not run:\n" << r.out;
}

TEST_P(AccelerateScripts, TestSync) {
  for (int n : {1, GetParam()}) {
    if (n == 1 && GetParam() != 2) continue;  // the one-process run (no-op no_sync) once
    const Outcome r = run(launch(n, ACCELERATE_TEST_SYNC));
    ASSERT_EQ(r.code(), 0) << r.out;
    EXPECT_NE(r.out.find(n == 1 ? "NOOP `no_sync`" : "with multiple forwards"), std::string::npos)
        << r.out;
    for (const char* flags : {"split_batches=False dispatch_batches=False sync_each_batch=False",
                              "split_batches=True dispatch_batches=True sync_each_batch=True",
                              "split_batches=False dispatch_batches=True sync_each_batch=False"})
      EXPECT_NE(r.out.find(std::string("with optimizer and scheduler, ") + flags),
                std::string::npos)
          << flags << " did not run:\n"
          << r.out;
  }
}

TEST_P(AccelerateScripts, TestScript) {
  const TempDir dir;
  const Outcome r = run(
      launch(GetParam(), ACCELERATE_TEST_SCRIPT, {ACCELERATE_REFERENCE_JSON, dir.path().string()}));
  ASSERT_EQ(r.code(), 0) << r.out;
  // The eight trainings (generator and seedable sampler, four each) reached Python
  // Accelerate's model (the program checks the values).
  size_t trained = 0;
  for (size_t at = r.out.find("Python Accelerate)"); at != std::string::npos;
       at = r.out.find("Python Accelerate)", at + 1))
    ++trained;
  EXPECT_EQ(trained, 8u) << r.out;
  EXPECT_NE(r.out.find("generator no_split: a = "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("All rng are properly synched."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Breakpoint trigger test"), std::string::npos) << r.out;
}

INSTANTIATE_TEST_SUITE_P(Processes, AccelerateScripts, ::testing::Values(2, 3));

// Accelerate's test_distributed_data_loop.py data-loader checks, 2 and 3 processes.
TEST_P(RealProcesses, DataLoopChecks) {
  const Outcome r = run(launch(GetParam(), DATA_LOOP_CHECK));
  EXPECT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("data_loop_check: ok"), std::string::npos) << r.out;
}

// synchronize_rng_states and rng_types with real processes (each its own default CPU
// generator), and accelerator.profile around a DDP step: every process writes its own trace
// with the forward, backward, all-reduce and optimizer step (rng_profile_check.cpp).
class RngAndProfile : public ::testing::TestWithParam<int> {};

TEST_P(RngAndProfile, RandomStatesBecomeEqual) {
  const Outcome r = run(launch(GetParam(), RNG_PROFILE_CHECK, {"--rng"}));
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("rng checks passed on " + std::to_string(GetParam()) + " processes"),
            std::string::npos)
      << r.out;
}

TEST_P(RngAndProfile, EachProcessWritesItsTrace) {
  const int n = GetParam();
  const TempDir dir;
  const Outcome r = run(launch(n, RNG_PROFILE_CHECK, {"--profile", dir.path("traces")}));
  ASSERT_EQ(r.code(), 0) << r.out;
  for (int rank = 0; rank < n; ++rank) {
    const std::string file = dir.path("traces") + "/trace_" + std::to_string(rank) + ".json";
    EXPECT_TRUE(std::filesystem::exists(file)) << file;
    EXPECT_NE(r.out.find("profile checks passed on rank " + std::to_string(rank)),
              std::string::npos)
        << r.out;
  }
}

INSTANTIATE_TEST_SUITE_P(Processes, RngAndProfile, ::testing::Values(2, 3));
