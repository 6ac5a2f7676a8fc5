// launch_env.h - the names of the launch environment, written once.
//
// A launcher tells each process of a job who it is through environment variables; the library
// reads them (resolve_launch_info() in state.cpp), `accelerate-cpp launch` sets them
// (tools/accelerate-cpp/launch.cpp) and the tests check what the launcher set
// (tests/launcher/launcher_variables.h). All three spell the names through this header. Plain
// C++ (no LibTorch): the command-line tool, which does not link LibTorch, includes it too.
#pragma once

namespace accelerate::launch_env {

// torchrun's contract (what `torchrun` exports, and what `accelerate-cpp launch` exports too).

/// Global rank of the process, 0 <= RANK < WORLD_SIZE.
inline constexpr const char* kRank = "RANK";
/// Processes in the whole job.
inline constexpr const char* kWorldSize = "WORLD_SIZE";
/// Rank of the process on its machine.
inline constexpr const char* kLocalRank = "LOCAL_RANK";
/// Processes on this machine.
inline constexpr const char* kLocalWorldSize = "LOCAL_WORLD_SIZE";
/// Rank of this machine (torchrun's node rank).
inline constexpr const char* kGroupRank = "GROUP_RANK";
/// Rank within the role (torchrun: one role, so the global rank).
inline constexpr const char* kRoleRank = "ROLE_RANK";
/// Processes in the role (torchrun: one role, so the world size).
inline constexpr const char* kRoleWorldSize = "ROLE_WORLD_SIZE";
/// Address of the machine whose process 0 runs the rendezvous store.
inline constexpr const char* kMasterAddr = "MASTER_ADDR";
/// TCP port of the rendezvous store.
inline constexpr const char* kMasterPort = "MASTER_PORT";
/// Which restart of the job this is (0 for the first run).
inline constexpr const char* kRestartCount = "TORCHELASTIC_RESTART_COUNT";
/// How many restarts the launcher allows.
inline constexpr const char* kMaxRestarts = "TORCHELASTIC_MAX_RESTARTS";
/// Threads of the process's CPU operations.
inline constexpr const char* kOmpNumThreads = "OMP_NUM_THREADS";

// Accelerate's variables.

/// "no", "fp16" or "bf16".
inline constexpr const char* kMixedPrecision = "ACCELERATE_MIXED_PRECISION";
/// "true": train on the CPU even where CUDA is available.
inline constexpr const char* kUseCpu = "ACCELERATE_USE_CPU";
/// Seconds a collective may wait.
inline constexpr const char* kTimeout = "ACCELERATE_TIMEOUT";
/// Seconds joining the job may take.
inline constexpr const char* kJoinTimeout = "ACCELERATE_JOIN_TIMEOUT";
/// The Accelerator's default gradient accumulation steps.
inline constexpr const char* kGradientAccumulationSteps = "ACCELERATE_GRADIENT_ACCUMULATION_STEPS";
/// Folder where each rank keeps the collective it last entered (read by the launcher's
/// report when it stops a job).
inline constexpr const char* kStatusDir = "ACCELERATE_STATUS_DIR";
/// Level of the library's loggers (read by the library, never set by the launcher).
inline constexpr const char* kLogLevel = "ACCELERATE_LOG_LEVEL";

// Other launchers' contracts, which the library reads as well as torchrun's.

/// Open MPI's (mpirun) rank, size, local rank and local size.
inline constexpr const char* kOmpiRank = "OMPI_COMM_WORLD_RANK";
inline constexpr const char* kOmpiSize = "OMPI_COMM_WORLD_SIZE";
inline constexpr const char* kOmpiLocalRank = "OMPI_COMM_WORLD_LOCAL_RANK";
inline constexpr const char* kOmpiLocalSize = "OMPI_COMM_WORLD_LOCAL_SIZE";
/// Slurm's (srun) rank, size, local rank and local size.
inline constexpr const char* kSlurmRank = "SLURM_PROCID";
inline constexpr const char* kSlurmSize = "SLURM_NTASKS";
inline constexpr const char* kSlurmLocalRank = "SLURM_LOCALID";
inline constexpr const char* kSlurmLocalSize = "SLURM_NTASKS_PER_NODE";

// Gloo's variable (read by the library and shown by `accelerate-cpp env`).

/// Interface(s) of the Gloo process group, comma-separated.
inline constexpr const char* kGlooSocketIfname = "GLOO_SOCKET_IFNAME";

/// Every variable `accelerate-cpp launch` may set for the processes it starts.
inline constexpr const char* kLaunchedVariables[] = {
    kRank,
    kWorldSize,
    kLocalRank,
    kLocalWorldSize,
    kGroupRank,
    kRoleRank,
    kRoleWorldSize,
    kMasterAddr,
    kMasterPort,
    kRestartCount,
    kMaxRestarts,
    kOmpNumThreads,
    kUseCpu,
    kMixedPrecision,
    kTimeout,
    kJoinTimeout,
    kGradientAccumulationSteps,
    kStatusDir,
};

}  // namespace accelerate::launch_env
