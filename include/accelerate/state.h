// accelerate/state.h: where this process stands in the job, resolved once.
//
// A `State` reads the launcher's environment (torchrun, Open MPI, Slurm, or the
// `accelerate-cpp launch` variables) exactly once, when it is constructed, picks the device,
// and, with more than one process, owns the process group that
// every collective uses and the c10d store it meets through (a TCPStore, unless
// StateOptions::store gives one). Nothing reads the environment after that. It is not a
// singleton: each `Accelerator` owns one, which is also what lets tests run several ranks as
// threads of one process.
//
// Example:
//   accelerate::State state(accelerate::StateOptions().cpu(true));
//   if (state.is_main_process()) std::cout << state.num_processes() << " processes\n";
#pragma once

#include <c10/core/Device.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "accelerate/options.h"

namespace c10d {
class ProcessGroup;
}  // namespace c10d

namespace accelerate {

/// How the processes of a job are connected (Accelerate's `DistributedType`).
enum class DistributedType {
  NO,         ///< one process
  MULTI_CPU,  ///< several processes on CPU, Gloo
  MULTI_GPU,  ///< several processes on CUDA devices, NCCL
};

/// Mixed-precision mode (Accelerate's `mixed_precision`).
enum class MixedPrecision { NO, FP16, BF16 };

/// "NO", "MULTI_CPU", "MULTI_GPU", as Accelerate prints them.
std::string to_string(DistributedType type);
/// "no", "fp16", "bf16".
std::string to_string(MixedPrecision mode);
/// Parses "no" | "fp16" | "bf16" (case-insensitive); throws std::invalid_argument otherwise.
MixedPrecision parse_mixed_precision(const std::string& text);

/// A snapshot of environment variables: name → value.
using Environment = std::map<std::string, std::string>;

/// The variables of the current process (`environ`), copied once.
Environment process_environment();

/// What the launcher told this process, before any connection is made.
struct LaunchInfo {
  int rank = 0;                           ///< global process index
  int world_size = 1;                     ///< number of processes in the job
  int local_rank = 0;                     ///< index on this machine
  int local_world_size = 1;               ///< processes on this machine
  std::string master_addr = "127.0.0.1";  ///< where process 0's store listens
  int master_port = 29500;                ///< its port
  std::string launcher = "none";  ///< "torchrun" (also accelerate-cpp), "openmpi", "slurm", "none"
  std::optional<MixedPrecision> mixed_precision;  ///< from ACCELERATE_MIXED_PRECISION
  std::optional<bool> use_cpu;                    ///< from ACCELERATE_USE_CPU
  /// From OMP_NUM_THREADS, which LibTorch's OpenMP reads at start (`accelerate-cpp launch`
  /// sets it; the State does not act on it).
  std::optional<int> omp_num_threads;
  /// From ACCELERATE_GRADIENT_ACCUMULATION_STEPS (>= 1): used when the code passes neither
  /// `gradient_accumulation_steps` nor a plugin, as Accelerate.
  std::optional<int> gradient_accumulation_steps;
  /// From ACCELERATE_TIMEOUT (seconds; `accelerate-cpp launch --timeout`, config key timeout).
  std::optional<std::chrono::milliseconds> timeout;
  /// From ACCELERATE_JOIN_TIMEOUT (seconds; `accelerate-cpp launch --join_timeout`, config key
  /// join_timeout): how long joining the job may take (see StateOptions::join_timeout).
  std::optional<std::chrono::milliseconds> join_timeout;
  /// From GLOO_SOCKET_IFNAME, as PyTorch reads it: the network interfaces the Gloo process group
  /// uses, separated by commas ("" when unset: see State::gloo_network()).
  std::string gloo_socket_ifname;
  /// From ACCELERATE_STATUS_DIR (set by `accelerate-cpp launch`): where each process keeps a
  /// one-line file of the collective it last entered, for the launcher's diagnostics.
  std::string status_dir;
  /// From ACCELERATE_LOG_LEVEL: the level the `State`'s loggers start at ("" is info).
  std::string log_level;
};

/// Resolves `LaunchInfo` from an environment. torchrun's variables (RANK, WORLD_SIZE,
/// LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) win over Open MPI's
/// (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE), which win over Slurm's
/// (SLURM_PROCID/NTASKS/LOCALID). Throws std::invalid_argument naming the variable and its
/// value when one is malformed or inconsistent (e.g. RANK >= WORLD_SIZE).
///
/// Example:
///   auto info = accelerate::resolve_launch_info({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
///   // info.rank == 1, info.world_size == 2, info.launcher == "torchrun"
LaunchInfo resolve_launch_info(const Environment& env);

/// Options of a `State`, with chained setters. Unset values come from the environment.
struct StateOptions {
  /// Force the CPU even when CUDA is available (Accelerate's `cpu=True`).
  ACCELERATE_ARG(std::optional<bool>, cpu);
  /// Mixed-precision mode; unset reads ACCELERATE_MIXED_PRECISION, else "no".
  ACCELERATE_ARG(std::optional<MixedPrecision>, mixed_precision);
  /// Timeout of every collective; unset reads ACCELERATE_TIMEOUT (seconds), else 1800 s, as
  /// Accelerate.
  ACCELERATE_ARG(std::optional<std::chrono::milliseconds>, timeout);
  /// How long joining the job may take: reaching process 0's store at MASTER_ADDR:MASTER_PORT
  /// and every process arriving there. Past it the State throws accelerate::DistributedError
  /// naming the address and port and, on the processes that got there, the ranks (and
  /// machines) that never arrived. Unset reads ACCELERATE_JOIN_TIMEOUT (seconds), else 300 s,
  /// or the collective timeout when that is shorter.
  ///
  /// Example:
  ///   accelerate::State state(accelerate::StateOptions().join_timeout(std::chrono::seconds(60)));
  ACCELERATE_ARG(std::optional<std::chrono::milliseconds>, join_timeout);
  /// Resolve from this map instead of the process environment (tests, embedding).
  ACCELERATE_ARG(std::optional<Environment>, environment);

 public:
  /// Threads LibTorch computes with in this process (Accelerate's
  /// `--num_cpu_threads_per_process`): the State calls at::set_num_threads(threads). Unset
  /// (the default): the State leaves LibTorch's setting alone, which is OMP_NUM_THREADS when
  /// set (`accelerate-cpp launch` sets it for each process it starts), else one thread per
  /// core. Inter-op threads are not changed (LibTorch allows that only once per process,
  /// before any inter-op work). Throws accelerate::InvalidArgument naming the value when
  /// `threads` < 1.
  ///
  /// Example:
  ///   accelerate::State state(accelerate::StateOptions().num_cpu_threads_per_process(4));
  StateOptions& num_cpu_threads_per_process(int threads);
  /// The number of threads given, if any.
  const std::optional<int>& num_cpu_threads_per_process() const noexcept {
    return num_cpu_threads_per_process_;
  }
  /// Meet the other processes through this c10d store instead of a TCPStore at
  /// MASTER_ADDR:MASTER_PORT, as `torch.distributed.init_process_group(store=...)`: e.g. one
  /// `c10d::HashStore` shared by ranks that are threads of one process, or a `c10d::FileStore`
  /// on a file system every process sees. The rank and the number of processes still come
  /// from the environment (RANK and WORLD_SIZE, or another launcher's variables). The keys of
  /// a job live under "accelerate/N/", N counting the jobs that met through the store, so one
  /// store serves one job after another (after a job whose processes did not all come, use a
  /// new store). Unused with one process.
  ///
  /// Example:
  ///   auto store = c10::make_intrusive<c10d::HashStore>();  // shared by both threads
  ///   accelerate::State state(accelerate::StateOptions().store(store).environment(
  ///       {{"RANK", "0"}, {"WORLD_SIZE", "2"}}));
  ACCELERATE_ARG(c10::intrusive_ptr<c10d::Store>, store);
  /// The c10d backend of the process group (Accelerate's `InitProcessGroupKwargs(backend=...)`):
  /// "gloo" or "nccl" (case-insensitive). Unset: "nccl" on CUDA devices, else "gloo". "nccl"
  /// needs a CUDA device (not with cpu(true)) and a LibTorch built with NCCL; "gloo" also
  /// works on CUDA devices. Anything else, or an unavailable backend, makes the State throw
  /// accelerate::InvalidArgument naming it, also with one process (which has no group).
  ///
  /// Example:
  ///   accelerate::State state(accelerate::StateOptions().backend("gloo"));
  ACCELERATE_ARG(std::optional<std::string>, backend);

 private:
  std::optional<int> num_cpu_threads_per_process_;
};

namespace detail {
class CollectiveTrace;
struct LoggerRegistry;
}  // namespace detail

/// The resolved, immutable state of this process in the job, and the process group it owns.
/// Not copyable or movable: guards and prepared objects refer to it.
class State {
 public:
  /// Resolves the environment and, with more than one process, connects to the others.
  /// Throws std::invalid_argument for a malformed environment and std::runtime_error naming
  /// the rank, the address and the timeout when the processes cannot meet.
  explicit State(const StateOptions& options = StateOptions());
  /// Tears the process group down in an order that neither hangs nor aborts: a barrier
  /// (skipped while an exception unwinds), the group, then the store, whose server on
  /// process 0 waits until every process has let go of it (a store given in the options
  /// outlives the State, so there is no server to wait for).
  ~State();
  State(const State&) = delete;
  State& operator=(const State&) = delete;

  /// Global index of this process, 0 ≤ index < num_processes().
  int process_index() const { return info_.rank; }
  /// Index of this process on its machine.
  int local_process_index() const { return info_.local_rank; }
  /// Number of processes in the job.
  int num_processes() const { return info_.world_size; }
  /// Number of processes on this machine.
  int num_local_processes() const { return info_.local_world_size; }
  /// True on process 0.
  bool is_main_process() const { return info_.rank == 0; }
  /// True on the first process of each machine.
  bool is_local_main_process() const { return info_.local_rank == 0; }
  /// True on the process with the highest index.
  bool is_last_process() const { return info_.rank == info_.world_size - 1; }
  /// The device this process computes on: cuda:LOCAL_RANK when CUDA is there and cpu is not
  /// forced, else cpu.
  c10::Device device() const { return device_; }
  /// NO, MULTI_CPU or MULTI_GPU.
  DistributedType distributed_type() const { return distributed_type_; }
  /// The resolved mixed-precision mode.
  MixedPrecision mixed_precision() const { return mixed_precision_; }
  /// Timeout of collectives.
  std::chrono::milliseconds timeout() const { return timeout_; }
  /// How long joining the job could take (StateOptions::join_timeout resolved).
  std::chrono::milliseconds join_timeout() const { return join_timeout_; }
  /// The network the Gloo process group uses, e.g. "10.0.0.5 (eth0), the address of this
  /// machine's route to MASTER_ADDR 10.0.0.1" or "eth1 (192.168.1.5), from GLOO_SOCKET_IFNAME";
  /// "" with one process or another backend.
  const std::string& gloo_network() const { return gloo_network_; }
  /// The backend of the process group: "gloo" or "nccl"; "" with one process (Accelerate's
  /// `state.backend`, None there).
  const std::string& backend() const { return backend_; }
  /// What the launcher said.
  const LaunchInfo& launch_info() const { return info_; }
  /// The c10d process group, or nullptr with one process.
  c10d::ProcessGroup* process_group() const;
  /// The c10d store shared by all processes (for a store given in the options: its part that
  /// belongs to this job), or nullptr with one process.
  c10d::Store* store() const;
  /// Blocks until every process reaches this call. No-op with one process.
  void wait_for_everyone() const;
  /// "rank 1 of 2": for error messages.
  std::string describe() const;
  /// Where every process is in the sequence of collectives, e.g. "rank 0 waits in reduce #18;
  /// rank 1 last entered gather #17 3.2 s ago" (what a timeout error says). Empty with one
  /// process.
  std::string describe_positions() const;
  /// Internal: the record of collectives (ops, the DDP engine); nullptr with one process.
  detail::CollectiveTrace* collective_trace() const;
  /// Internal: this State's loggers (see get_logger(name, state)).
  detail::LoggerRegistry& loggers() const { return *loggers_; }

 private:
  LaunchInfo info_;
  c10::Device device_{c10::kCPU};
  DistributedType distributed_type_ = DistributedType::NO;
  MixedPrecision mixed_precision_ = MixedPrecision::NO;
  std::chrono::milliseconds timeout_;
  std::chrono::milliseconds join_timeout_;
  std::string gloo_network_;                         // "" unless Gloo with several processes
  std::string backend_;                              // "" with one process
  std::shared_ptr<detail::LoggerRegistry> loggers_;  // get_logger(name, state)
  struct Comm;                                       // store + process group; defined in state.cpp
  std::shared_ptr<Comm> comm_;  // null with one process; shared by the States of a process
};

/// RAII guard of `main_process_first()` / `local_main_process_first()`: the main process
/// runs the guarded block first, the others wait for it, then run theirs. Not copyable or
/// movable. A failed barrier in the destructor cannot be thrown: it is reported on stderr
/// with the rank and ends the process with exit code 1. Use the callable forms to get an
/// exception instead.
class [[nodiscard]] MainProcessFirstGuard {
 public:
  /// Enters: the non-main processes wait here for the main one.
  MainProcessFirstGuard(const State& state, bool local);
  /// Leaves: the main process waits here for the others.
  ~MainProcessFirstGuard();
  MainProcessFirstGuard(const MainProcessFirstGuard&) = delete;
  MainProcessFirstGuard& operator=(const MainProcessFirstGuard&) = delete;

 private:
  const State& state_;
  bool first_;
  int exceptions_;
};

}  // namespace accelerate
