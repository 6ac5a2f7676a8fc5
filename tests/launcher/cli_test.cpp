// cli_test.cpp - `accelerate-cpp config`, `env`, `test`, and `launch` reading Accelerate's YAML
// configuration. Each test runs the real binary with HF_HOME pointing into a fresh folder, so
// the user's own default configuration never leaks in.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "subprocess.h"
#include "temp_dir.h"

#ifndef ACCELERATE_CPP_LAUNCHER
#error "ACCELERATE_CPP_LAUNCHER must name the accelerate-cpp executable"
#endif
#ifndef FAKE_RANK_PROGRAM
#error "FAKE_RANK_PROGRAM must name the fake_rank helper"
#endif

namespace fs = std::filesystem;

namespace {

using accelerate::testing::Command;
using accelerate::testing::Outcome;
using accelerate::testing::run_command;

class CliTest : public accelerate::testing::TempDirTest {
 protected:
  // Runs `accelerate-cpp ARGS` (split at spaces) with HF_HOME=dir_/hf and none of the
  // launcher's variables; Outcome::out holds stdout and stderr.
  Outcome run(const std::string& args) const {
    std::vector<std::string> argv = {ACCELERATE_CPP_LAUNCHER};
    std::istringstream words(args);
    for (std::string word; words >> word;) argv.push_back(word);
    Command command(argv);
    command.env("HF_HOME", (dir_ / "hf").string()).merge_stderr(true);
    for (const char* name :
         {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS",
          "ACCELERATE_TIMEOUT", "ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "XDG_CACHE_HOME"})
      command.unset(name);
    return run_command(command, std::chrono::seconds(100));  // below ctest's TIMEOUT
  }
  void write(const fs::path& path, const std::string& text) const {
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
  }
  fs::path default_config() const { return dir_ / "hf" / "accelerate" / "default_config.yaml"; }
};

int count(const std::string& text, const std::string& what) {
  int n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

}  // namespace

TEST_F(CliTest, ConfigWritesAccelerateYamlThatPythonReads) {
  const Outcome r =
      run("config --num_processes 4 --num_machines 2 --machine_rank 1 "
          "--main_process_ip 10.0.0.1 --main_process_port 29555 "
          "--mixed_precision bf16 --cpu");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find(default_config().string()), std::string::npos) << r.out;
  ASSERT_TRUE(fs::exists(default_config()));
  // Python's YAML reader (as Accelerate's config loader uses) sees the same values and types.
  const Outcome py = run_command(Command(
      {"/usr/bin/python3", "-c",
       "import yaml,json,sys; print(json.dumps(yaml.safe_load(open(sys.argv[1])), sort_keys=True))",
       default_config().string()}));
  ASSERT_EQ(py.code(), 0) << py.output();
  const std::string& json = py.out;
  for (const char* expected :
       {"\"num_processes\": 4", "\"num_machines\": 2", "\"machine_rank\": 1",
        "\"main_process_ip\": \"10.0.0.1\"", "\"main_process_port\": 29555",
        "\"mixed_precision\": \"bf16\"", "\"use_cpu\": true", "\"distributed_type\": \"MULTI_CPU\"",
        "\"compute_environment\": \"LOCAL_MACHINE\""})
    EXPECT_NE(json.find(expected), std::string::npos) << expected << " in " << json;
}

TEST_F(CliTest, LaunchTakesTheConfigFileAndFlagsWin) {
  const fs::path file = dir_ / "job.yaml";
  write(file,
        "distributed_type: MULTI_CPU\nnum_processes: 3\nmixed_precision: 'bf16'\n"
        "use_cpu: true\nmain_process_ip: null\ncompute_environment: LOCAL_MACHINE\n");
  Outcome r = run("launch --config_file " + file.string() + " " FAKE_RANK_PROGRAM " --print-env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_EQ(count(r.out, "ENV WORLD_SIZE=3"), 3) << r.out;
  EXPECT_EQ(count(r.out, "ENV ACCELERATE_MIXED_PRECISION=bf16"), 3) << r.out;
  EXPECT_EQ(count(r.out, "ENV ACCELERATE_USE_CPU=true"), 3) << r.out;

  r = run("launch --config_file " + file.string() + " --num_processes 2 --mixed_precision no " +
          FAKE_RANK_PROGRAM " --print-env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_EQ(count(r.out, "ENV WORLD_SIZE=2"), 2) << r.out;
  EXPECT_EQ(count(r.out, "ENV ACCELERATE_MIXED_PRECISION=no"), 2) << r.out;
}

TEST_F(CliTest, LaunchUsesTheDefaultConfigFileWhenPresent) {
  Outcome r = run("launch " FAKE_RANK_PROGRAM " --print-env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_EQ(count(r.out, "ENV WORLD_SIZE=1"), 1) << r.out;  // no file: one process
  ASSERT_EQ(run("config --num_processes 2 --cpu").code(), 0);
  r = run("launch " FAKE_RANK_PROGRAM " --print-env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_EQ(count(r.out, "ENV WORLD_SIZE=2"), 2) << r.out;
}

TEST_F(CliTest, BadConfigFilesAreUsageErrorsNamingFileAndKey) {
  struct Case {
    const char* yaml;
    const char* expect;
  };
  const Case cases[] = {
      {"num_processes: two\n", "key 'num_processes': expected an integer"},
      {"num_procesess: 2\n", "key 'num_procesess': unknown key"},
      {"distributed_type: DEEPSPEED\n", "'DEEPSPEED' is not supported"},
      {"deepspeed_config:\n  zero_stage: 2\n", "key 'deepspeed_config': is not supported"},
      {"mixed_precision: fp8\n", "expected no, fp16 or bf16"},
      {"- just\n- a list\n", "is not a mapping"},
      {"num_processes: [\n", "is not valid YAML"},
      {"timeout: soon\n", "key 'timeout': expected a positive number of seconds"},
  };
  for (const Case& c : cases) {
    const fs::path file = dir_ / "bad.yaml";
    write(file, c.yaml);
    const Outcome r = run("launch --config_file " + file.string() + " " FAKE_RANK_PROGRAM);
    EXPECT_EQ(r.code(), 2) << c.yaml << r.out;
    EXPECT_NE(r.out.find(file.string()), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.expect << " in " << r.out;
    EXPECT_EQ(r.out.find("ENV"), std::string::npos) << "no process may start: " << r.out;
  }
  const Outcome missing = run("launch --config_file " + (dir_ / "nope.yaml").string() + " true");
  EXPECT_EQ(missing.code(), 2);
  EXPECT_NE(missing.out.find("cannot be read"), std::string::npos) << missing.out;
}

TEST_F(CliTest, EnvPrintsVersionsAndTheConfig) {
  Outcome r = run("env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("- accelerate-cpp version: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("- LibTorch version (built against): "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("not found (defaults apply)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("- Physical CPU cores (usable by this process): "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("- Threads per process under launch (OMP_NUM_THREADS): "), std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find(" physical cores / 1 processes on this machine)"), std::string::npos)
      << r.out;
  ASSERT_EQ(run("config --num_processes 2").code(), 0);
  r = run("env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("\tnum_processes: 2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" physical cores / 2 processes on this machine)"), std::string::npos)
      << r.out;
  ASSERT_EQ(run("config --num_processes 2 --num_cpu_threads_per_process 3").code(), 0);
  r = run("env");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("- Threads per process under launch (OMP_NUM_THREADS): 3 "),
            std::string::npos)
      << r.out;
  write(default_config(), "bogus: 1\n");
  r = run("env");
  EXPECT_EQ(r.code(), 2) << r.out;
  EXPECT_NE(r.out.find("key 'bogus'"), std::string::npos) << r.out;
}

TEST_F(CliTest, TestCommandRunsTheChecksOnTwoProcesses) {
  // The checks step the optimizer every batch, whatever gradient_accumulation_steps says.
  ASSERT_EQ(run("config --num_processes 2 --cpu --gradient_accumulation_steps 2").code(), 0);
  const Outcome r = run("test --num_cpu_threads_per_process 1");
  ASSERT_EQ(r.code(), 0) << r.out;
  EXPECT_NE(r.out.find("2 processes"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("distributed data parallel: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("Test is a success!"), std::string::npos) << r.out;
}

TEST_F(CliTest, MaxRestartsRestartsTheGroupAfterAFailure) {
  // Rank 1 fails on attempts 0 and 1; with --max_restarts 2 the third attempt succeeds.
  Outcome r =
      run("launch --num_processes 2 --max_restarts 2 " FAKE_RANK_PROGRAM " --fail-attempts 1:2");
  EXPECT_EQ(r.code(), 0) << r.out;
  // Rank 1 runs every attempt; rank 0 may be stopped before it prints in the failed ones (a
  // race under load), but runs the last one to its end.
  EXPECT_EQ(count(r.out, "[rank 1] ATTEMPT 0"), 1) << r.out;
  EXPECT_EQ(count(r.out, "[rank 1] ATTEMPT 1"), 1) << r.out;
  EXPECT_EQ(count(r.out, "ATTEMPT 2"), 2) << r.out;
  EXPECT_EQ(count(r.out, "restarting all processes"), 2) << r.out;
  // With one restart only, the job fails with the rank's exit code.
  r = run("launch --num_processes 2 --max_restarts 1 " FAKE_RANK_PROGRAM " --fail-attempts 1:2");
  EXPECT_EQ(r.code(), 3) << r.out;
  EXPECT_EQ(count(r.out, "restarting all processes"), 1) << r.out;
  EXPECT_EQ(run("launch --max_restarts -1 true").code(), 2);
}
