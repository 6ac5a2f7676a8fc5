// accelerator.profile: the guard, its file names and its errors (the trace of a DDP step over
// real processes is checked in multiprocess/rng_profile_check.cpp).
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "temp_dir.h"
#include "test_util.h"

namespace acc = accelerate;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

acc::AcceleratorOptions one_process() {
  return acc::AcceleratorOptions().cpu(true).environment(acc::Environment{});
}

template <typename F>
void expect_invalid(F fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "no exception for " << part;
  } catch (const acc::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

}  // namespace

// One process: the file is the path given; it holds the operators run inside the guard and
// none run after it; stop() ends it early and the destructor then does nothing.
TEST(Profile, OneProcessWritesThePathGiven) {
  const acc::testing::TempDir temp;
  acc::Accelerator a(one_process());
  const fs::path file = temp.path() / "sub" / "trace.json";
  auto x = torch::randn({3, 3});
  {
    auto p = a.profile(file.string(), acc::ProfileOptions().record_shapes(true));
    EXPECT_EQ(p.path(), file.string());
    auto y = torch::mm(x, x);
    p.stop();
    torch::cumsum(y, 0);  // after stop(): not recorded
  }
  const std::string trace = slurp(file);
  EXPECT_NE(trace.find("\"traceEvents\""), std::string::npos);
  EXPECT_NE(trace.find("aten::mm"), std::string::npos);
  EXPECT_EQ(trace.find("aten::cumsum"), std::string::npos);
  // A second profile after the first ended is fine.
  { auto again = a.profile((temp.path() / "again.json").string()); }
  EXPECT_TRUE(fs::exists(temp.path() / "again.json"));
}

TEST(Profile, FileNamesPerProcessAndFolders) {
  const acc::testing::TempDir temp;
  acc::Accelerator one(one_process());
  EXPECT_EQ(one.profile_path("out/trace.json"), "out/trace.json");
  EXPECT_EQ(one.profile_path(temp.path().string()), (temp.path() / "profile_0.json").string());
  EXPECT_EQ(one.profile_path("traces/"), "traces/profile_0.json");
  acc::testing::run_ranks(3, [](acc::Accelerator& a) {
    const std::string rank = std::to_string(a.process_index());
    EXPECT_EQ(a.profile_path("out/trace.json"), "out/trace_" + rank + ".json");
    EXPECT_EQ(a.profile_path("trace"), "trace_" + rank);
    EXPECT_EQ(a.profile_path("traces/"), "traces/profile_" + rank + ".json");
  });
}

TEST(Profile, BadUseIsAClearError) {
  const acc::testing::TempDir temp;
  acc::Accelerator a(one_process());
  expect_invalid([&] { (void)a.profile(""); }, "file name is empty");
  expect_invalid([&] { (void)a.profile("t.json", acc::ProfileOptions().activities({"tpu"})); },
                 "unknown activity \"tpu\"");
  expect_invalid([&] { (void)a.profile("t.json", acc::ProfileOptions().activities({"cuda"})); },
                 "\"cuda\" needs a CUDA device");
  auto outer = a.profile((temp.path() / "outer.json").string());
  expect_invalid([&] { (void)a.profile((temp.path() / "inner.json").string()); },
                 "already running");
  outer.stop();
  EXPECT_TRUE(fs::exists(temp.path() / "outer.json"));
  EXPECT_FALSE(fs::exists(temp.path() / "inner.json"));
}
