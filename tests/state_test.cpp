// State: the launcher's environment resolved once; joining the job and its failures.
#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "reserved_port.h"
#include "test_util.h"

namespace acc = accelerate;

TEST(ResolveLaunchInfo, NoLauncherMeansOneProcess) {
  auto info = acc::resolve_launch_info({});
  EXPECT_EQ(info.launcher, "none");
  EXPECT_EQ(info.rank, 0);
  EXPECT_EQ(info.world_size, 1);
  EXPECT_EQ(info.local_rank, 0);
  EXPECT_EQ(info.local_world_size, 1);
  EXPECT_EQ(info.master_addr, "127.0.0.1");
  EXPECT_EQ(info.master_port, 29500);
  EXPECT_FALSE(info.mixed_precision.has_value());
  EXPECT_FALSE(info.use_cpu.has_value());
}

TEST(ResolveLaunchInfo, Torchrun) {
  auto info = acc::resolve_launch_info({{"RANK", "5"},
                                        {"WORLD_SIZE", "8"},
                                        {"LOCAL_RANK", "1"},
                                        {"LOCAL_WORLD_SIZE", "4"},
                                        {"MASTER_ADDR", "node7"},
                                        {"MASTER_PORT", "1234"},
                                        {"ACCELERATE_MIXED_PRECISION", "bf16"},
                                        {"ACCELERATE_USE_CPU", "True"},
                                        {"OMP_NUM_THREADS", "3"}});
  EXPECT_EQ(info.launcher, "torchrun");
  EXPECT_EQ(info.rank, 5);
  EXPECT_EQ(info.world_size, 8);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_world_size, 4);
  EXPECT_EQ(info.master_addr, "node7");
  EXPECT_EQ(info.master_port, 1234);
  EXPECT_EQ(info.mixed_precision, acc::MixedPrecision::BF16);
  EXPECT_EQ(info.use_cpu, true);
  EXPECT_EQ(info.omp_num_threads, 3);
}

TEST(ResolveLaunchInfo, OpenMpi) {
  auto info = acc::resolve_launch_info({{"OMPI_COMM_WORLD_RANK", "3"},
                                        {"OMPI_COMM_WORLD_SIZE", "4"},
                                        {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                        {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  EXPECT_EQ(info.launcher, "openmpi");
  EXPECT_EQ(info.rank, 3);
  EXPECT_EQ(info.world_size, 4);
  EXPECT_EQ(info.local_rank, 1);
  EXPECT_EQ(info.local_world_size, 2);
}

TEST(ResolveLaunchInfo, Slurm) {
  auto info = acc::resolve_launch_info(
      {{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "3"}, {"SLURM_LOCALID", "0"}});
  EXPECT_EQ(info.launcher, "slurm");
  EXPECT_EQ(info.rank, 2);
  EXPECT_EQ(info.world_size, 3);
  EXPECT_EQ(info.local_rank, 0);
}

TEST(ResolveLaunchInfo, TorchrunWinsOverSlurm) {
  auto info = acc::resolve_launch_info(
      {{"RANK", "1"}, {"WORLD_SIZE", "2"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}});
  EXPECT_EQ(info.launcher, "torchrun");
  EXPECT_EQ(info.rank, 1);
  EXPECT_EQ(info.world_size, 2);
}

// Expects `fn` to throw std::invalid_argument whose message contains every one of `parts`.
template <typename F>
void expect_invalid(F fn, std::initializer_list<const char*> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << " lacks " << p;
  }
}

TEST(ResolveLaunchInfo, MalformedValuesNameTheVariable) {
  expect_invalid(
      [] {
        acc::resolve_launch_info({{"RANK", "abc"}, {"WORLD_SIZE", "2"}});
      },
      {"RANK", "abc"});
  expect_invalid(
      [] {
        acc::resolve_launch_info({{"RANK", "2"}, {"WORLD_SIZE", "2"}});
      },
      {"RANK=2", "WORLD_SIZE=2"});
  expect_invalid(
      [] {
        acc::resolve_launch_info({{"RANK", "0"}, {"WORLD_SIZE", "0"}});
      },
      {"WORLD_SIZE", "0"});
  expect_invalid(
      [] {
        acc::resolve_launch_info(
            {{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}});
      },
      {"LOCAL_RANK=2"});
  expect_invalid([] { acc::resolve_launch_info({{"MASTER_PORT", "70000"}}); }, {"MASTER_PORT"});
  expect_invalid(
      [] {
        acc::resolve_launch_info({{"ACCELERATE_MIXED_PRECISION", "fp8"}});
      },
      {"ACCELERATE_MIXED_PRECISION", "fp8"});
  expect_invalid(
      [] {
        acc::resolve_launch_info({{"ACCELERATE_USE_CPU", "maybe"}});
      },
      {"ACCELERATE_USE_CPU", "maybe"});
  expect_invalid([] { acc::AcceleratorOptions().mixed_precision("fp32"); }, {"fp32"});
}

TEST(State, OneProcessHasNoGroup) {
  acc::State state(acc::StateOptions().environment({}).cpu(true));
  EXPECT_EQ(state.num_processes(), 1);
  EXPECT_EQ(state.distributed_type(), acc::DistributedType::NO);
  EXPECT_EQ(state.process_group(), nullptr);
  EXPECT_EQ(state.device(), c10::Device(c10::kCPU));
  EXPECT_TRUE(state.is_main_process());
  EXPECT_TRUE(state.is_last_process());
  state.wait_for_everyone();  // a no-op, not a hang
}

TEST(State, OptionsWinOverEnvironment) {
  acc::State from_env(acc::StateOptions().environment({{"ACCELERATE_MIXED_PRECISION", "bf16"}}));
  EXPECT_EQ(from_env.mixed_precision(), acc::MixedPrecision::BF16);
  acc::State explicit_option(acc::StateOptions()
                                 .environment({{"ACCELERATE_MIXED_PRECISION", "bf16"}})
                                 .mixed_precision(acc::MixedPrecision::NO));
  EXPECT_EQ(explicit_option.mixed_precision(), acc::MixedPrecision::NO);
}

TEST(State, TwoProcessesFormAGlooGroup) {
  acc::testing::run_ranks(2, [](acc::Accelerator& a) {
    EXPECT_EQ(a.distributed_type(), acc::DistributedType::MULTI_CPU);
    EXPECT_NE(a.state().process_group(), nullptr);
    EXPECT_EQ(a.state().launch_info().launcher, "torchrun");
  });
}

// StateOptions::backend / AcceleratorOptions::backend: the default of the device, an explicit
// choice, and a clear error for an unknown or unavailable one (before any connection).
TEST(State, BackendDefaultsToGlooOnTheCpuAndCanBeChosen) {
  acc::testing::run_ranks(2, [](acc::Accelerator& a) {
    EXPECT_EQ(a.state().backend(), "gloo");
    EXPECT_EQ(a.reduce(at::ones({2}), "sum").sum().item<double>(), 4.0);
  });
  acc::testing::run_ranks(
      3,
      [](acc::Accelerator& a) {
        EXPECT_EQ(a.state().backend(), "gloo");
        EXPECT_EQ(a.reduce(at::ones({1}), "sum").item<double>(), 3.0);
      },
      acc::AcceleratorOptions().backend("GLOO"));
  acc::State one(acc::StateOptions().environment({}).cpu(true).backend("gloo"));
  EXPECT_EQ(one.backend(), "");  // one process: no group
}

TEST(State, UnknownOrUnavailableBackendIsAClearError) {
  expect_invalid([] { acc::State s(acc::StateOptions().environment({}).cpu(true).backend("mpi")); },
                 {"unknown backend \"mpi\"", "gloo", "nccl"});
  expect_invalid(
      [] { acc::State s(acc::StateOptions().environment({}).cpu(true).backend("nccl")); },
      {"backend \"nccl\"", "gloo"});
  // Several processes: every rank throws before it meets the others (no hang on the store).
  const auto store = acc::testing::make_store();
  std::atomic<int> refused{0};
  acc::testing::spawn_threads(2, [&](int rank) {
    try {
      acc::Accelerator a(
          acc::testing::rank_options(rank, 2, store, acc::AcceleratorOptions().backend("nccl")));
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("nccl"), std::string::npos) << e.what();
      ++refused;
    }
  });
  EXPECT_EQ(refused.load(), 2);
}

// A rank whose peer never starts: a clear error after the join timeout (here the collective
// timeout, which is shorter than the default join timeout), not a hang (a hang is ctest's
// TIMEOUT). Over TCP, where process 0 serves the store and says which rank never arrived,
// and a process above 0 says that nothing accepted connections at the address; and through a
// store given in the options.
TEST(State, MissingPeerTimesOutWithAClearError) {
  const acc::testing::ReservedPort port;
  for (int rank : {0, 1}) {
    auto env = acc::testing::rank_environment(rank, 2);
    env["MASTER_ADDR"] = "127.0.0.1";
    env["MASTER_PORT"] = std::to_string(port.number());
    try {
      acc::Accelerator a(
          acc::AcceleratorOptions().cpu(true).timeout(std::chrono::seconds(1)).environment(env));
      ADD_FAILURE() << "rank " << rank << " joined a job whose peer never started";
    } catch (const acc::DistributedError& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("accelerate: State: rank " + std::to_string(rank) + " of 2", 0), 0u)
          << what;
      EXPECT_NE(what.find("could not join the process group at 127.0.0.1:" +
                          std::to_string(port.number()) + " within the join timeout of 1 s"),
                std::string::npos)
          << what;
      EXPECT_NE(
          what.find(rank == 0 ? "rank 1 never arrived" : "nothing accepted connections there"),
          std::string::npos)
          << what;
    }
  }
  for (int rank : {0, 1}) {
    try {
      acc::Accelerator a(
          acc::testing::rank_options(rank, 2, acc::testing::make_store(),
                                     acc::AcceleratorOptions().timeout(std::chrono::seconds(1))));
      ADD_FAILURE() << "rank " << rank << " joined a job whose peer never started";
    } catch (const acc::DistributedError& e) {
      const std::string what = e.what();
      EXPECT_NE(
          what.find("rank " + std::to_string(rank) + " of 2 could not join the process group " +
                    "through the given store within the join timeout of 1 s"),
          std::string::npos)
          << what;
      EXPECT_NE(what.find("1 of 2 processes came to the store"), std::string::npos) << what;
    }
  }
}

// One store serves one job after another: each job's keys are its own.
namespace {

/// SIGPIPE's disposition now; `set`, when given, replaces it.
struct sigaction sigpipe_disposition(const struct sigaction* set = nullptr) {
  struct sigaction previous {};
  EXPECT_EQ(sigaction(SIGPIPE, set, &previous), 0);
  return previous;
}

void own_sigpipe_handler(int) {}

}  // namespace

// Gloo writes with writev(): with SIGPIPE's default disposition, a peer that went away would
// kill the process without a word (CI saw a timeout test die so). Once a process group exists,
// a write to a closed pipe or socket is an EPIPE error; the disposition is a handler, not
// SIG_IGN (which programs started later would inherit), and a program's own handler is kept.
TEST(State, ABrokenPipeIsAnErrorNotADeath) {
  struct sigaction default_disposition {};
  default_disposition.sa_handler = SIG_DFL;
  sigemptyset(&default_disposition.sa_mask);
  const struct sigaction saved = sigpipe_disposition(&default_disposition);
  acc::testing::run_ranks(2, [](acc::Accelerator& a) {
    a.wait_for_everyone();
    const struct sigaction now = sigpipe_disposition();
    EXPECT_NE(now.sa_handler, SIG_DFL);
    EXPECT_NE(now.sa_handler, SIG_IGN);
    if (a.process_index() != 0) return;
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    close(fds[0]);
    errno = 0;
    // With the default disposition this write would end the test program.
    EXPECT_EQ(write(fds[1], "x", 1), -1);
    EXPECT_EQ(errno, EPIPE);
    close(fds[1]);
  });

  struct sigaction own {};
  own.sa_handler = own_sigpipe_handler;
  sigemptyset(&own.sa_mask);
  sigpipe_disposition(&own);
  acc::testing::run_ranks(2, [](acc::Accelerator& a) { a.wait_for_everyone(); });
  EXPECT_EQ(sigpipe_disposition().sa_handler, own_sigpipe_handler);

  // One process: no group, no change.
  sigpipe_disposition(&default_disposition);
  { acc::State one(acc::StateOptions().environment({}).cpu(true)); }
  EXPECT_EQ(sigpipe_disposition().sa_handler, SIG_DFL);
  sigpipe_disposition(&saved);
}

TEST(State, AGivenStoreServesJobAfterJob) {
  const auto store = acc::testing::make_store();
  for (int job = 0; job < 3; ++job) {
    acc::testing::spawn_threads(2, [&](int rank) {
      acc::Accelerator a(acc::testing::rank_options(rank, 2, store));
      EXPECT_EQ(a.reduce(at::full({1}, job + 1.0), "sum").item<double>(), 2.0 * (job + 1));
    });
  }
  EXPECT_EQ(store->add("accelerate/joined", 0), 6);
}

// Threads: a State (and so an Accelerator) leaves LibTorch's thread count alone unless
// num_cpu_threads_per_process is given; OMP_NUM_THREADS is the launcher's way to set it.
class Threads : public ::testing::Test {
 protected:
  void TearDown() override { at::set_num_threads(initial_); }
  const int initial_ = at::get_num_threads();
};

TEST_F(Threads, APlainStateOrAcceleratorLeavesTheThreadCountAlone) {
  // Two counts, so that no number of cores can make "cores / local processes" look unchanged.
  for (const int threads : {1, 3}) {
    at::set_num_threads(threads);
    { acc::State alone(acc::StateOptions().environment({})); }
    EXPECT_EQ(at::get_num_threads(), threads) << "one process, no OMP_NUM_THREADS";
    { acc::State told(acc::StateOptions().environment({{"OMP_NUM_THREADS", "2"}})); }
    EXPECT_EQ(at::get_num_threads(), threads) << "OMP_NUM_THREADS is OpenMP's, read at start";
    {
      // One process of a job, but two on this machine (what "cores / 2" used to be set for).
      acc::Accelerator accelerator(acc::AcceleratorOptions().cpu(true).environment(
          {{"RANK", "0"}, {"WORLD_SIZE", "1"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "2"}}));
      EXPECT_EQ(accelerator.state().num_local_processes(), 2);
    }
    EXPECT_EQ(at::get_num_threads(), threads) << "two local processes";
  }
  // Ranks as threads of one process, over a real process group.
  at::set_num_threads(3);
  acc::testing::run_ranks(2, [](acc::Accelerator& a) {
    EXPECT_EQ(a.reduce(at::ones({1}), "sum").item<double>(), 2.0);
  });
  EXPECT_EQ(at::get_num_threads(), 3);
}

TEST_F(Threads, TheOptionSetsTheThreadCount) {
  at::set_num_threads(1);
  {
    acc::State state(acc::StateOptions().environment({}).num_cpu_threads_per_process(3));
    EXPECT_EQ(at::get_num_threads(), 3);
  }
  EXPECT_EQ(at::get_num_threads(), 3) << "a setting, not a guard";
  // The option wins over OMP_NUM_THREADS in the environment.
  acc::Accelerator accelerator(acc::AcceleratorOptions()
                                   .cpu(true)
                                   .environment({{"OMP_NUM_THREADS", "5"}})
                                   .num_cpu_threads_per_process(2));
  EXPECT_EQ(at::get_num_threads(), 2);
  EXPECT_EQ(accelerator.state().launch_info().omp_num_threads, 5);
  EXPECT_EQ(acc::AcceleratorOptions()
                .num_cpu_threads_per_process(2)
                .state_options()
                .num_cpu_threads_per_process(),
            2);
}

TEST_F(Threads, LessThanOneThreadIsRefusedNamingTheValue) {
  for (const int bad : {0, -2}) {
    const std::string value = std::to_string(bad);
    try {
      acc::AcceleratorOptions().num_cpu_threads_per_process(bad);
      ADD_FAILURE() << "AcceleratorOptions accepted " << bad;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("num_cpu_threads_per_process: " + value + " is not"),
                std::string::npos)
          << e.what();
    }
    try {
      acc::StateOptions().num_cpu_threads_per_process(bad);
      ADD_FAILURE() << "StateOptions accepted " << bad;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("num_cpu_threads_per_process: " + value + " is not"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_FALSE(acc::AcceleratorOptions().num_cpu_threads_per_process().has_value());
}

// A port already in use fails at once, and the message says so instead of blaming a timeout.
TEST(State, PortInUseSaysItFailedAtOnce) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const int port = ntohs(addr.sin_port);
  auto env = acc::testing::rank_environment(0, 2);
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = std::to_string(port);
  try {
    acc::State state(
        acc::StateOptions().cpu(true).timeout(std::chrono::seconds(600)).environment(env));
    ADD_FAILURE() << "rank 0 served a store on a port in use";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("it failed after"), std::string::npos) << what;
    EXPECT_EQ(what.find("within"), std::string::npos) << what;
  }
  ::close(fd);
}

// The join timeout: code, else ACCELERATE_JOIN_TIMEOUT (seconds, from `launch --join_timeout`),
// else 300 s or the collective timeout when that is shorter; malformed values are refused.
TEST(State, JoinTimeoutFromTheEnvironment) {
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  EXPECT_EQ(acc::State(acc::StateOptions().environment({})).join_timeout(), seconds(300));
  EXPECT_EQ(
      acc::State(acc::StateOptions().environment({{"ACCELERATE_TIMEOUT", "20"}})).join_timeout(),
      seconds(20));
  EXPECT_EQ(acc::State(acc::StateOptions().environment({{"ACCELERATE_JOIN_TIMEOUT", "2.5"}}))
                .join_timeout(),
            milliseconds(2500));
  EXPECT_EQ(acc::State(acc::StateOptions().environment(
                           {{"ACCELERATE_JOIN_TIMEOUT", "600"}, {"ACCELERATE_TIMEOUT", "20"}}))
                .join_timeout(),
            seconds(600));
  EXPECT_EQ(acc::State(acc::StateOptions()
                           .join_timeout(seconds(7))
                           .environment({{"ACCELERATE_JOIN_TIMEOUT", "2.5"}}))
                .join_timeout(),
            seconds(7));
  EXPECT_EQ(acc::Accelerator(acc::AcceleratorOptions().join_timeout(seconds(9)).environment({}))
                .state()
                .join_timeout(),
            seconds(9));
  for (const char* bad : {"0", "-3", "ten", "5s", ""}) {
    try {
      acc::State state(acc::StateOptions().environment({{"ACCELERATE_JOIN_TIMEOUT", bad}}));
      ADD_FAILURE() << "accepted ACCELERATE_JOIN_TIMEOUT='" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("ACCELERATE_JOIN_TIMEOUT='" + std::string(bad) + "'"),
                std::string::npos)
          << e.what();
    }
  }
}

// GLOO_SOCKET_IFNAME reaches LaunchInfo as given. A name this machine does not have is a clear
// error at once, naming it, before anything waits for the other processes.
TEST(State, GlooSocketIfnameNamesTheInterfaces) {
  EXPECT_EQ(acc::resolve_launch_info({{"GLOO_SOCKET_IFNAME", "eth1,eth2"}}).gloo_socket_ifname,
            "eth1,eth2");
  EXPECT_EQ(acc::resolve_launch_info({}).gloo_socket_ifname, "");
  const acc::testing::ReservedPort port;
  auto env = acc::testing::rank_environment(1, 2);
  env["MASTER_ADDR"] = "127.0.0.1";
  env["MASTER_PORT"] = std::to_string(port.number());
  env["GLOO_SOCKET_IFNAME"] = "lo,accnosuch0";
  const auto start = std::chrono::steady_clock::now();
  try {
    acc::State state(acc::StateOptions().cpu(true).environment(env));
    ADD_FAILURE() << "joined with an interface this machine does not have";
  } catch (const acc::DistributedError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("accelerate: State: rank 1 of 2 could not join", 0), 0u) << what;
    EXPECT_NE(what.find("GLOO_SOCKET_IFNAME='lo,accnosuch0' names accnosuch0, which has no IPv4 "
                        "or IPv6 address on this machine (its interfaces: lo 127.0.0.1"),
              std::string::npos)
        << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
}

// The timeout: code, else ACCELERATE_TIMEOUT (seconds, from `launch --timeout`), else 1800 s.
TEST(State, TimeoutFromTheEnvironment) {
  EXPECT_EQ(acc::State(acc::StateOptions().environment({})).timeout(), std::chrono::seconds(1800));
  EXPECT_EQ(acc::State(acc::StateOptions().environment({{"ACCELERATE_TIMEOUT", "2.5"}})).timeout(),
            std::chrono::milliseconds(2500));
  EXPECT_EQ(acc::State(acc::StateOptions()
                           .timeout(std::chrono::seconds(7))
                           .environment({{"ACCELERATE_TIMEOUT", "2.5"}}))
                .timeout(),
            std::chrono::seconds(7));
  for (const char* bad : {"0", "-3", "ten", "5s", ""}) {
    try {
      acc::State state(acc::StateOptions().environment({{"ACCELERATE_TIMEOUT", bad}}));
      ADD_FAILURE() << "accepted ACCELERATE_TIMEOUT='" << bad << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("ACCELERATE_TIMEOUT='" + std::string(bad) + "'"),
                std::string::npos)
          << e.what();
    }
  }
}
