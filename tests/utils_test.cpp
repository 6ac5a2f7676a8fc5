// Utilities: find_executable_batch_size, free_memory, get_logger, ProgressBar, options.h,
// set_seed.
#include <ATen/CPUGeneratorImpl.h>
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "temp_dir.h"
#include "test_util.h"
#include "torch_version.h"

namespace acc = accelerate;

namespace {

struct Tiny : torch::nn::Module {
  Tiny() { fc = register_module("fc", torch::nn::Linear(4, 2)); }
  at::Tensor forward(const at::Tensor& x) { return fc->forward(x); }
  torch::nn::Linear fc{nullptr};
};

}  // namespace

// Accelerate's rule: int(batch_size * 0.9) after each out-of-memory error (the expected lists
// come from that Python expression).
TEST(FindExecutableBatchSize, ShrinksByTenPercentOnRealCpuOutOfMemory) {
  // A real allocation failure of LibTorch's CPU allocator: (batch - 1) TiB fails for every
  // batch size above 1.
  std::vector<int64_t> tried;
  auto run = acc::find_executable_batch_size(
      [&](int64_t batch_size) {
        tried.push_back(batch_size);
        auto t = torch::empty({(batch_size - 1) << 40}, torch::kUInt8);
        return batch_size;
      },
      128);
  EXPECT_EQ(run(), 1);
  EXPECT_EQ(tried,
            (std::vector<int64_t>{128, 115, 103, 92, 82, 73, 65, 58, 52, 46, 41, 36, 32, 28, 25,
                                  22,  19,  17,  15, 13, 11, 9,  8,  7,  6,  5,  4,  3,  2,  1}));
  // The batch size that worked is kept for the next call.
  tried.clear();
  EXPECT_EQ(run(), 1);
  EXPECT_EQ(tried, (std::vector<int64_t>{1}));
}

TEST(FindExecutableBatchSize, PassesArgumentsAndOtherErrors) {
  auto run = acc::find_executable_batch_size(
      [](int64_t batch_size, int offset) {
        if (batch_size > 20) throw std::bad_alloc();
        return batch_size + offset;
      },
      100);
  EXPECT_EQ(run(1000), 1019);  // 100, 90, 81, 72, 64, 57, 51, 45, 40, 36, 32, 28, 25, 22, 19

  auto failing = acc::find_executable_batch_size(
      [](int64_t) -> int { throw std::runtime_error("shape mismatch"); }, 8);
  try {
    failing();
    FAIL() << "expected the function's own error";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "shape mismatch");
  }

  auto never = acc::find_executable_batch_size(
      [](int64_t) -> int {
        throw acc::testing::c10_error("CUDA out of memory. Tried to allocate 2 GiB");
      },
      4);
  try {
    never();
    FAIL() << "expected the zero batch size error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("reached zero"), std::string::npos) << e.what();
  }
  EXPECT_THROW(acc::find_executable_batch_size([](int64_t) { return 0; }, 0),
               std::invalid_argument);
}

TEST(ShouldReduceBatchSize, RecognisesOutOfMemoryOnly) {
  EXPECT_TRUE(acc::should_reduce_batch_size(std::bad_alloc()));
  EXPECT_TRUE(acc::should_reduce_batch_size(acc::testing::c10_error(
      "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1")));
  EXPECT_TRUE(acc::should_reduce_batch_size(
      acc::testing::c10_error("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED")));
  EXPECT_FALSE(acc::should_reduce_batch_size(std::runtime_error("index out of range")));
}

TEST(FreeMemory, ReleasesPreparedObjectsAndResetsPointers) {
  acc::Accelerator accelerator(acc::AcceleratorOptions().cpu(true));
  auto model = std::make_shared<Tiny>();
  auto sgd =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  auto [m, opt] = accelerator.prepare(model, sgd);
  std::weak_ptr<acc::AcceleratedOptimizer> weak_opt = opt;
  std::weak_ptr<Tiny> weak_model = model;
  { auto g = accelerator.accumulate(m); }
  EXPECT_EQ(accelerator.step(), 1);
  accelerator.free_memory(model, m, sgd, opt);
  EXPECT_EQ(model, nullptr);
  EXPECT_EQ(opt, nullptr);
  EXPECT_TRUE(weak_opt.expired());  // the accelerator held the only other reference
  EXPECT_TRUE(weak_model.expired());
  EXPECT_EQ(accelerator.step(), 0);
  // save_state now has nothing prepared to save, and preparing again works.
  auto model2 = std::make_shared<Tiny>();
  auto m2 = accelerator.prepare(model2);
  EXPECT_EQ(m2, model2);  // one object: the object itself, not a tuple
}

TEST(FreeMemory, DetachesDdpEnginesOnEveryRank) {
  acc::testing::run_ranks(2, [](acc::Accelerator& accelerator) {
    auto model = std::make_shared<Tiny>();
    auto m = accelerator.prepare(model);
    accelerator.free_memory(m);
    // Without the engine a backward pass no longer all-reduces: each rank keeps its own
    // gradient (with an engine still attached, both would see the mean).
    const double v = accelerator.process_index() + 1.0;
    auto loss = model->forward(torch::full({1, 4}, v)).sum();
    accelerator.backward(loss);
    const double expected = v;  // d(sum)/d(weight[j][k]) = input[k]
    EXPECT_DOUBLE_EQ(model->fc->weight.grad()[0][0].item<double>(), expected);
  });
}

namespace {

// Captures what a logger writes.
struct Capture {
  std::shared_ptr<std::ostringstream> lines = std::make_shared<std::ostringstream>();
  Capture(const acc::Logger& logger) {
    logger.add_sink([lines = lines](acc::LogLevel level, const std::string& line) {
      *lines << acc::to_string(level) << '|' << line << '\n';
    });
  }
  std::string str() const { return lines->str(); }
};

}  // namespace

TEST(Logger, MainProcessOnlyByDefault) {
  acc::testing::run_ranks(2, [](acc::Accelerator& accelerator) {
    auto logger = acc::get_logger("t_main_" + std::to_string(accelerator.process_index()),
                                  accelerator.state(), "info");
    Capture c(logger);
    logger.info("epoch {} loss {:.2f}", 3, 0.25);
    logger.debug("hidden {}", 1);
    logger.all_processes().warning("shard {}", accelerator.process_index());
    const std::string r = std::to_string(accelerator.process_index());
    if (accelerator.is_main_process())
      EXPECT_EQ(c.str(), "info|epoch 3 loss 0.25\nwarning|[rank 0] shard 0\n");
    else
      EXPECT_EQ(c.str(), "warning|[rank 1] shard 1\n");
  });
}

TEST(Logger, InOrderWritesByProcessIndex) {
  // Each rank's logger (its State's) writes into one shared capture: the lines must come in
  // process order, whatever the threads' timing (each rank sleeps a different time first).
  std::mutex mutex;
  std::string lines;
  acc::testing::run_ranks(3, [&](acc::Accelerator& accelerator) {
    auto logger = acc::get_logger("t_in_order", accelerator.state(), "info");
    logger.add_sink([&](acc::LogLevel level, const std::string& line) {
      std::lock_guard<std::mutex> lock(mutex);
      lines += acc::to_string(level) + '|' + line + '\n';
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(30 * (2 - accelerator.process_index())));
    logger.in_order(accelerator.state()).info("hello from {}", accelerator.process_index());
  });
  EXPECT_EQ(lines,
            "info|[rank 0] hello from 0\ninfo|[rank 1] hello from 1\ninfo|[rank 2] hello from 2\n");
}

// Each State owns its loggers: a level set by one rank (thread) does not change another's, and
// the level of ACCELERATE_LOG_LEVEL is read once, with the rest of the environment.
TEST(Logger, LoggersBelongToTheirState) {
  acc::testing::run_ranks(2, [](acc::Accelerator& accelerator) {
    auto logger = acc::get_logger("t_owned", accelerator.state());
    if (accelerator.process_index() == 0) logger.set_level("error");
    accelerator.wait_for_everyone();
    EXPECT_EQ(logger.all_processes().enabled(acc::LogLevel::info),
              accelerator.process_index() == 1);
    // Asking again gives the same logger, its level kept.
    EXPECT_EQ(acc::get_logger("t_owned", accelerator.state())
                  .all_processes()
                  .enabled(acc::LogLevel::warning),
              accelerator.process_index() == 1);
  });
  acc::State quiet(acc::StateOptions().environment({{"ACCELERATE_LOG_LEVEL", "warning"}}));
  EXPECT_FALSE(acc::get_logger("t_env", quiet).enabled(acc::LogLevel::info));
  EXPECT_TRUE(acc::get_logger("t_env", quiet).enabled(acc::LogLevel::warning));
  EXPECT_THROW(acc::State(acc::StateOptions().environment({{"ACCELERATE_LOG_LEVEL", "loud"}})),
               std::invalid_argument);
}

TEST(Logger, LevelsAndErrors) {
  auto logger = acc::get_logger("t_levels", "error");
  Capture c(logger);
  logger.warning("no");
  logger.error("yes {}", 1);
  EXPECT_EQ(c.str(), "error|yes 1\n");
  EXPECT_FALSE(logger.enabled(acc::LogLevel::info));
  try {
    logger.set_level("loud");
    FAIL() << "expected an error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'loud'"), std::string::npos) << e.what();
  }
}

// ---- ProgressBar ----

TEST(ProgressBar, LinesAtEveryTenthIntoAFile) {
  std::ostringstream out;
  {
    acc::ProgressBar bar(20, acc::ProgressBarOptions().desc("train").out(out).terminal(false));
    for (int i = 0; i < 20; ++i) {
      if (i == 19) bar.set_postfix({{"loss", 0.125}});
      bar.update();
    }
    EXPECT_EQ(bar.n(), 20);
  }  // the destructor closes: the 100% line
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 10u) << out.str();  // 10%, 20%, ..., 90%, then 100%
  EXPECT_EQ(lines[0].rfind("train:  10%|##                  | 2/20 [", 0), 0u) << lines[0];
  EXPECT_EQ(lines[9].rfind("train: 100%|####################| 20/20 [", 0), 0u) << lines[9];
  EXPECT_NE(lines[9].find("it/s, loss=0.125]"), std::string::npos) << lines[9];
}

TEST(ProgressBar, TerminalRedrawsOneLine) {
  std::ostringstream out;
  acc::ProgressBar bar(3, acc::ProgressBarOptions().out(out).terminal(true).min_interval(
                              std::chrono::milliseconds(0)));
  bar.update();
  bar.update(2);
  bar.close();
  bar.close();  // idempotent
  const std::string s = out.str();
  EXPECT_EQ(std::count(s.begin(), s.end(), '\r'), 4) << s;  // start, 1/3, 3/3, final
  EXPECT_EQ(std::count(s.begin(), s.end(), '\n'), 1) << s;
  EXPECT_NE(s.find("3/3"), std::string::npos) << s;
  EXPECT_THROW(acc::ProgressBar(-1), std::invalid_argument);
}

TEST(ProgressBar, ShownOnTheLocalMainProcessOnly) {
  std::vector<std::string> outputs(2);
  acc::testing::run_ranks(2, [&](acc::Accelerator& accelerator) {
    std::ostringstream out;
    {
      acc::ProgressBar bar(accelerator.state(), 0,
                           acc::ProgressBarOptions().out(out).terminal(false));
      bar.update(5);
    }
    outputs[accelerator.process_index()] = out.str();
  });
  EXPECT_NE(outputs[0].find("5 ["), std::string::npos) << outputs[0];  // unknown total: a count
  EXPECT_EQ(outputs[1], "");
}

// ---- options (options.h) ----

namespace {
struct ClipOptions {  // the example of options.h
  ACCELERATE_ARG(double, max_norm) = 1.0;
  ACCELERATE_ARG(std::optional<double>, norm_type);
};
}  // namespace

TEST(Options, OneMacroDeclaresSetterGetterAndDefault) {
  const ClipOptions defaults;
  EXPECT_EQ(defaults.max_norm(), 1.0);
  EXPECT_FALSE(defaults.norm_type().has_value());
  auto options = ClipOptions().max_norm(0.5).norm_type(1.0);  // an optional is set with a value
  EXPECT_EQ(options.max_norm(), 0.5);
  EXPECT_EQ(options.norm_type(), 1.0);
  static_assert(std::is_same_v<decltype(ClipOptions().max_norm(2.0)), ClipOptions&>);
  static_assert(std::is_same_v<decltype(options.norm_type()), const std::optional<double>&>);
  // A braced map still reaches an optional option, and a hand-written setter chains alike.
  auto state = acc::StateOptions().environment({{"RANK", "0"}, {"WORLD_SIZE", "1"}});
  EXPECT_EQ(state.environment()->at("WORLD_SIZE"), "1");
  auto accelerator = acc::AcceleratorOptions().mixed_precision("bf16").cpu(true);
  EXPECT_EQ(accelerator.mixed_precision(), acc::MixedPrecision::BF16);
  EXPECT_EQ(accelerator.cpu(), true);
}

// The Accelerator keeps its options as given; the checkpoint iteration is its own.
TEST(Options, AcceleratorCountsCheckpointsWithoutChangingItsOptions) {
  const acc::testing::TempDir dir;
  auto options = acc::AcceleratorOptions().cpu(true).environment({}).project_config(
      acc::ProjectConfiguration()
          .project_dir(dir.str())
          .automatic_checkpoint_naming(true)
          .iteration(3));
  acc::Accelerator accelerator(options);
  accelerator.save_state();
  EXPECT_EQ(accelerator.project_configuration().iteration(), 4);
  EXPECT_EQ(accelerator.project_configuration().project_dir(), dir.str());
  EXPECT_EQ(options.project_config().iteration(), 3);
}

// synchronize_rng_states over ranks as threads: each rank's own generator ("generator") gets
// process 0's state; the default CPU generator is shared by the threads of one process, so
// "cpu" is checked with real processes (multiprocess_test.cpp, RngAndProfile).
TEST(SynchronizeRngStates, GeneratorsBecomeProcessZeros) {
  for (int n : {2, 3}) {
    acc::testing::run_ranks(n, [n](acc::Accelerator& a) {
      at::Generator generator = at::detail::createCPUGenerator(1000 + a.process_index());
      const at::Generator before = generator.clone();
      const at::Tensor unsynced = a.gather(at::rand({1, 4}, generator));
      for (int r = 1; r < n; ++r) EXPECT_FALSE(unsynced[r].equal(unsynced[0])) << r;
      acc::synchronize_rng_states(a.state(), {"generator"}, generator);
      const at::Tensor draw = at::rand({1, 4}, generator);
      const at::Tensor synced = a.gather(draw);
      for (int r = 1; r < n; ++r) EXPECT_TRUE(synced[r].equal(synced[0])) << r;
      if (a.is_main_process()) {
        // Process 0's state is the one everybody got: its draws went on from where they were.
        at::Generator mine = before.clone();
        at::rand({1, 4}, mine);
        EXPECT_TRUE(draw.equal(at::rand({1, 4}, mine)));
      }
    });
  }
}

TEST(SynchronizeRngStates, BadTypesAreClearErrors) {
  auto expect_error = [](auto fn, const std::string& part) {
    try {
      fn();
      ADD_FAILURE() << "no exception for " << part;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  acc::State one(acc::StateOptions().environment(acc::Environment{}).cpu(true));
  expect_error(
      [&] {
        acc::synchronize_rng_states(one, {"cpu", "tpu"});
      },
      "unknown rng type \"tpu\"");
  expect_error([&] { acc::synchronize_rng_states(one, {"generator"}); }, "needs a generator");
  expect_error([&] { acc::synchronize_rng_states(one, {"cuda"}); }, "\"cuda\" needs a CUDA device");
  acc::synchronize_rng_states(one);  // one process: nothing to do
  acc::synchronize_rng_states(one, {"torch", "cpu"});
  expect_error(
      [] {
        acc::Accelerator a(acc::AcceleratorOptions()
                               .cpu(true)
                               .environment(acc::Environment{})
                               .rng_types({"cpu", "xla"}));
      },
      "rng_types: unknown rng type \"xla\"");
  // Several processes: every rank refuses before anything is sent (no hang).
  acc::testing::run_ranks(2, [&](acc::Accelerator& a) {
    expect_error([&] { acc::synchronize_rng_states(a.state(), {"bogus"}); }, "bogus");
    EXPECT_EQ(a.reduce(at::ones({1}), "sum").item<double>(), 2.0);  // still in step
  });
}

namespace {

// Sets (or, with nullopt, removes) environment variables of this process for one scope, and
// puts back what was there.
class ScopedEnvironment {
 public:
  explicit ScopedEnvironment(const std::map<std::string, std::optional<std::string>>& changes) {
    for (const auto& [name, value] : changes) {
      const char* old = std::getenv(name.c_str());
      saved_.emplace_back(name, old ? std::optional<std::string>(old) : std::nullopt);
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnvironment() {
    for (const auto& [name, value] : saved_) {
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    }
  }
  ScopedEnvironment(const ScopedEnvironment&) = delete;
  ScopedEnvironment& operator=(const ScopedEnvironment&) = delete;

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

at::Tensor draws_after_manual_seed(uint64_t seed) {
  torch::manual_seed(seed);
  return torch::rand({6});
}

}  // namespace

// set_seed(seed, device_specific): seed + the process index the launcher's environment gives
// (the default CPU generator is the process's, so ranks as threads cannot show it; the real
// processes of multiprocess_test.cpp, RngAndProfile, do).
TEST(SetSeed, DeviceSpecificAddsTheProcessIndexFromTheEnvironment) {
  const std::map<std::string, std::optional<std::string>> no_launcher = {
      {"RANK", std::nullopt},
      {"WORLD_SIZE", std::nullopt},
      {"LOCAL_RANK", std::nullopt},
      {"LOCAL_WORLD_SIZE", std::nullopt},
      {"OMPI_COMM_WORLD_RANK", std::nullopt},
      {"OMPI_COMM_WORLD_SIZE", std::nullopt},
      {"SLURM_PROCID", std::nullopt},
      {"SLURM_NTASKS", std::nullopt}};
  {
    ScopedEnvironment env(no_launcher);
    acc::set_seed(41, /*device_specific=*/true);  // process 0: the seed itself
    EXPECT_TRUE(torch::rand({6}).equal(draws_after_manual_seed(41)));
  }
  {
    ScopedEnvironment env(no_launcher);
    ScopedEnvironment rank3({{"RANK", "3"}, {"WORLD_SIZE", "4"}});
    acc::set_seed(41, /*device_specific=*/true);
    const at::Tensor specific = torch::rand({6});
    EXPECT_TRUE(specific.equal(draws_after_manual_seed(44)));
    EXPECT_FALSE(specific.equal(draws_after_manual_seed(41)));
    acc::set_seed(41);  // not device specific: the same seed on every process
    EXPECT_TRUE(torch::rand({6}).equal(draws_after_manual_seed(41)));
    acc::set_seed(41, false);
    EXPECT_TRUE(torch::rand({6}).equal(draws_after_manual_seed(41)));
  }
  {
    ScopedEnvironment env(no_launcher);
    ScopedEnvironment mpi({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}});
    acc::set_seed(7, true);
    EXPECT_TRUE(torch::rand({6}).equal(draws_after_manual_seed(8)));
  }
  {
    ScopedEnvironment env(no_launcher);
    ScopedEnvironment bad({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
    try {
      acc::set_seed(7, true);
      ADD_FAILURE() << "RANK=2 of WORLD_SIZE=2 was accepted";
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("RANK=2 must be below WORLD_SIZE=2"), std::string::npos)
          << e.what();
    }
  }
}
