// Process control: print once, on_*_process, main_process_first, barriers, triggers.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <atomic>
#include <iomanip>
#include <mutex>
#include <thread>

#include "test_util.h"

namespace acc = accelerate;
using acc::testing::run_ranks;

namespace {
class ProcessControl : public ::testing::TestWithParam<int> {};
}  // namespace

TEST_P(ProcessControl, Identity) {
  const int n = GetParam();
  std::vector<int> seen(n, -1);
  run_ranks(n, [&](acc::Accelerator& a) {
    EXPECT_EQ(a.num_processes(), n);
    EXPECT_EQ(a.local_process_index(), a.process_index());
    EXPECT_EQ(a.is_main_process(), a.process_index() == 0);
    EXPECT_EQ(a.is_local_main_process(), a.process_index() == 0);
    EXPECT_EQ(a.is_last_process(), a.process_index() == n - 1);
    EXPECT_EQ(a.device(), c10::Device(c10::kCPU));
    EXPECT_EQ(a.distributed_type(),
              n == 1 ? acc::DistributedType::NO : acc::DistributedType::MULTI_CPU);
    seen[a.process_index()] = a.process_index();
  });
  for (int r = 0; r < n; ++r) EXPECT_EQ(seen[r], r);
}

TEST_P(ProcessControl, PrintOncePerJob) {
  ::testing::internal::CaptureStdout();
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    a.print("epoch", 3, "loss", 0.5);
    a.wait_for_everyone();
  });
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "epoch 3 loss 0.5\n");
}

// Stream manipulators change how the arguments after them are written, without a space of
// their own; a width set before an argument pads the argument, not the space before it.
TEST(ProcessControlPrint, StreamManipulatorsAddNoSeparator) {
  acc::Accelerator a(acc::AcceleratorOptions().cpu(true).environment(acc::Environment{}));
  ::testing::internal::CaptureStdout();
  a.print("loss", std::fixed, std::setprecision(4), 0.25, "lr", std::scientific,
          std::setprecision(1), 0.001);
  a.print("step", std::setw(5), 42, std::setfill('0'), std::setw(3), 7, "end");
  a.print(std::hex, 255, std::dec, 255, std::boolalpha, true, std::noboolalpha, true);
  a.print(std::setprecision(2));  // only a manipulator: an empty line
  a.print("x", std::setw(4));     // a width left pending does not pad the newline
  a.print(acc::format("epoch {} loss {:.4f}", 3, 0.25));
  EXPECT_EQ(::testing::internal::GetCapturedStdout(),
            "loss 0.2500 lr 1.0e-03\n"
            "step    42 007 end\n"
            "ff 255 true 1\n"
            "\n"
            "x\n"
            "epoch 3 loss 0.2500\n");
  // std::cout's own formatting is untouched.
  EXPECT_EQ(std::cout.precision(), 6);
  EXPECT_FALSE(std::cout.flags() & std::ios_base::fixed);
}

// Accelerate prints once per machine: 4 processes on 2 machines print twice.
TEST(ProcessControlMachines, PrintOncePerMachine) {
  const auto store = acc::testing::make_store();
  ::testing::internal::CaptureStdout();
  acc::testing::spawn_threads(4, [&](int rank) {
    auto env = acc::testing::rank_environment(rank, 4);
    env["LOCAL_RANK"] = std::to_string(rank % 2);
    env["LOCAL_WORLD_SIZE"] = "2";
    acc::Accelerator a(acc::testing::rank_options(rank, 4, store).environment(env));
    a.print("machine", rank / 2);
    a.wait_for_everyone();
  });
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(out == "machine 0\nmachine 1\n" || out == "machine 1\nmachine 0\n") << out;
}

TEST_P(ProcessControl, OnProcessRunsOnlyThere) {
  const int n = GetParam();
  std::atomic<int> main{0}, local_main{0}, last{0}, index1{0}, local0{0};
  std::vector<std::optional<int>> results(n);
  run_ranks(n, [&](acc::Accelerator& a) {
    a.on_main_process([&] { ++main; })();
    a.on_local_main_process([&] { ++local_main; })();
    a.on_last_process([&] { ++last; })();
    a.on_process([&] { ++index1; }, n - 1)();
    a.on_local_process([&] { ++local0; }, 0)();
    results[a.process_index()] =
        a.on_main_process([&](int x) { return x * a.num_processes(); })(21);
  });
  EXPECT_EQ(main, 1);
  EXPECT_EQ(local_main, 1);
  EXPECT_EQ(last, 1);
  EXPECT_EQ(index1, 1);
  EXPECT_EQ(local0, 1);
  EXPECT_EQ(results[0], 21 * n);
  for (int r = 1; r < n; ++r) EXPECT_FALSE(results[r].has_value());
}

TEST_P(ProcessControl, MainProcessFirst) {
  const int n = GetParam();
  for (int form = 0; form < 3; ++form) {
    std::mutex m;
    std::vector<std::string> log;
    auto record = [&](const acc::Accelerator& a, const char* what) {
      std::lock_guard<std::mutex> lock(m);
      log.push_back(std::to_string(a.process_index()) + what);
    };
    run_ranks(n, [&](acc::Accelerator& a) {
      auto body = [&] {
        record(a, "+");
        if (a.is_main_process()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        record(a, "-");
        return a.process_index();
      };
      if (form == 0) {
        auto first = a.main_process_first();
        body();
      } else if (form == 1) {
        EXPECT_EQ(a.main_process_first(body), a.process_index());
      } else {
        auto first = a.local_main_process_first();
        body();
      }
    });
    ASSERT_EQ(static_cast<int>(log.size()), 2 * n);
    EXPECT_EQ(log[0], "0+") << "form " << form;
    EXPECT_EQ(log[1], "0-") << "form " << form;
  }
}

TEST_P(ProcessControl, WaitForEveryone) {
  std::atomic<bool> written{false};
  run_ranks(GetParam(), [&](acc::Accelerator& a) {
    if (a.is_main_process()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      written = true;
    }
    a.wait_for_everyone();
    EXPECT_TRUE(written.load()) << "rank " << a.process_index() << " passed the barrier early";
  });
}

TEST_P(ProcessControl, Trigger) {
  const int n = GetParam();
  run_ranks(n, [&](acc::Accelerator& a) {
    EXPECT_FALSE(a.check_trigger());
    if (a.process_index() == n - 1) a.set_trigger();
    EXPECT_TRUE(a.check_trigger());
    EXPECT_FALSE(a.check_trigger()) << "the trigger must reset after a check";
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, ProcessControl, ::testing::Values(1, 2, 3));

// ACCELERATE_GRADIENT_ACCUMULATION_STEPS is used when the code passes no steps (Accelerate);
// the steps can be changed later.
TEST(GradientAccumulationSteps, FromTheEnvironmentAndChangeable) {
  auto with_env = [](const std::string& value) {
    return acc::AcceleratorOptions().environment(
        {{"ACCELERATE_GRADIENT_ACCUMULATION_STEPS", value}});
  };
  EXPECT_EQ(acc::Accelerator(with_env("3")).gradient_accumulation_steps(), 3);
  EXPECT_EQ(
      acc::Accelerator(with_env("3").gradient_accumulation_steps(2)).gradient_accumulation_steps(),
      2);
  EXPECT_EQ(
      acc::Accelerator(acc::AcceleratorOptions().environment({})).gradient_accumulation_steps(), 1);
  for (const char* bad : {"0", "two", "-1"}) {
    try {
      acc::Accelerator a(with_env(bad));
      ADD_FAILURE() << "accepted ACCELERATE_GRADIENT_ACCUMULATION_STEPS=" << bad;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("ACCELERATE_GRADIENT_ACCUMULATION_STEPS"),
                std::string::npos)
          << e.what();
    }
  }
  acc::Accelerator a(acc::AcceleratorOptions().environment({}));
  a.set_gradient_accumulation_steps(4);
  EXPECT_EQ(a.gradient_accumulation_steps(), 4);
  // The loss is divided by the new number of steps.
  auto p = torch::ones({1}, torch::requires_grad());
  a.backward((p * 8).sum());
  EXPECT_EQ(p.grad().item<float>(), 2.0f);
  EXPECT_THROW(a.set_gradient_accumulation_steps(0), acc::InvalidArgument);
}

// backward(loss, BackwardOptions().retain_graph(true)) keeps the graph for a second pass.
TEST(Backward, RetainGraph) {
  acc::Accelerator a(acc::AcceleratorOptions().environment({}));
  auto p = torch::full({2}, 3.0, torch::requires_grad());
  auto loss = (p * p).sum();
  a.backward(loss, acc::BackwardOptions().retain_graph(true));
  a.backward(loss);
  EXPECT_TRUE(torch::equal(p.grad(), torch::full({2}, 12.0)));
  EXPECT_THROW(a.backward(loss), std::exception) << "the graph was freed by the second pass";
}
