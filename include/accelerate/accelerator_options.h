// accelerate/accelerator_options.h: the options of an `Accelerator` (Accelerate's constructor
// arguments), of its checkpoints (`ProjectConfiguration`) and of `Accelerator::backward`.
//
// Options are values with chained setters (see options.h); the Accelerator resolves them once,
// with the environment the launcher set, and keeps them as given.
//
// Example:
//   namespace acc = accelerate;
//   auto options = acc::AcceleratorOptions()
//                      .mixed_precision("bf16")
//                      .gradient_accumulation_steps(2)
//                      .project_config(acc::ProjectConfiguration().project_dir("runs/exp1"));
//   auto backward = acc::BackwardOptions().retain_graph(true);
#pragma once

#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "accelerate/ddp.h"
#include "accelerate/gradient_state.h"
#include "accelerate/mixed_precision.h"
#include "accelerate/options.h"
#include "accelerate/state.h"
#include "accelerate/tracking.h"

namespace accelerate {

/// Where checkpoints go (Accelerate's `ProjectConfiguration`), with chained setters (see
/// options.h).
///
/// Example:
///   auto project = acc::ProjectConfiguration().project_dir("runs/exp1").total_limit(2);
///   acc::Accelerator accelerator(
///       acc::AcceleratorOptions().project_config(project.automatic_checkpoint_naming(true)));
///   accelerator.save_state();  // runs/exp1/checkpoints/checkpoint_0, _1, ...
struct ProjectConfiguration {
  /// Folder of the project; automatic checkpoints go to project_dir/checkpoints.
  ACCELERATE_ARG(std::string, project_dir);
  /// save_state() writes project_dir/checkpoints/checkpoint_N (N: iteration), also when given
  /// a folder (as Accelerate, which then ignores the folder).
  ACCELERATE_ARG(bool, automatic_checkpoint_naming) = false;
  /// Keep at most this many automatic checkpoints, removing the oldest (0: keep all).
  ACCELERATE_ARG(int, total_limit) = 0;
  /// Folder the trackers write into (default: project_dir).
  ACCELERATE_ARG(std::string, logging_dir);
  /// Number of the first automatic checkpoint; the Accelerator counts on from it (see
  /// Accelerator::project_configuration()).
  ACCELERATE_ARG(int, iteration) = 0;
  /// Write checkpoints and models on every machine (for machines without a shared file
  /// system): save_state, save_model and save write on each machine's local main process
  /// instead of on process 0 only (default false). Where several machines do share the folder,
  /// save_state and save_model still leave one complete copy.
  ACCELERATE_ARG(bool, save_on_each_node) = false;
  /// save_state records the size and checksum (XXH3-64) of every file it writes, and
  /// load_state verifies every file it will read against them before it loads anything,
  /// refusing a damaged file with a FileError that names it, on every process (default true).
  /// false: save_state records none and load_state verifies none (e.g. to load a folder whose
  /// files were replaced on purpose). A folder saved without checksums loads unverified.
  ACCELERATE_ARG(bool, checksums) = true;
};

/// Options of `Accelerator::backward`, as the keyword arguments Accelerate passes on to
/// `loss.backward()`.
struct BackwardOptions {
  /// Keep the graph for another backward pass through it (default false).
  ACCELERATE_ARG(bool, retain_graph) = false;
  /// Build the graph of the derivative, for higher-order gradients (default false).
  ACCELERATE_ARG(bool, create_graph) = false;
};

/// Options of an `Accelerator` (Accelerate's constructor arguments), with chained setters
/// (see options.h). Unset values come from the environment the launcher set, then from
/// Accelerate's defaults.
struct AcceleratorOptions {
  /// "no" | "fp16" | "bf16"; throws std::invalid_argument for anything else.
  AcceleratorOptions& mixed_precision(const std::string& value) {
    mixed_precision_ = parse_mixed_precision(value);
    return *this;
  }
  /// Mixed-precision mode as an enum.
  ACCELERATE_ARG(std::optional<MixedPrecision>, mixed_precision);
  /// Run on the CPU even when CUDA is available.
  ACCELERATE_ARG(std::optional<bool>, cpu);
  /// Timeout of every collective (Accelerate's `InitProcessGroupKwargs(timeout=...)`); unset
  /// reads ACCELERATE_TIMEOUT (seconds, set by `accelerate-cpp launch --timeout` or the config
  /// key `timeout`), else 1800 s.
  ACCELERATE_ARG(std::optional<std::chrono::milliseconds>, timeout);
  /// How long joining the job may take (reaching process 0's store, every process arriving);
  /// unset reads ACCELERATE_JOIN_TIMEOUT (seconds, set by `accelerate-cpp launch
  /// --join_timeout` or the config key `join_timeout`), else 300 s or the collective timeout
  /// when that is shorter. See StateOptions::join_timeout.
  ACCELERATE_ARG(std::optional<std::chrono::milliseconds>, join_timeout);
  /// The process group's backend, "gloo" or "nccl" (Accelerate's
  /// `InitProcessGroupKwargs(backend=...)`); unset: "nccl" on CUDA, else "gloo". An unknown or
  /// unavailable one (nccl on the CPU) makes the Accelerator throw InvalidArgument naming it.
  /// See StateOptions::backend.
  ACCELERATE_ARG(std::optional<std::string>, backend);
  /// Resolve the launcher's variables from this map instead of the process environment:
  /// for tests that run ranks as threads, and for programs embedding the library.
  ACCELERATE_ARG(std::optional<Environment>, environment);
  /// Meet the other processes through this c10d store instead of a TCPStore at
  /// MASTER_ADDR:MASTER_PORT (`torch.distributed.init_process_group(store=...)`); the rank
  /// and the number of processes still come from the environment. See StateOptions::store.
  ///
  /// Example (ranks as threads of one process; `store` is one c10d::HashStore for all):
  ///   c10::intrusive_ptr<c10d::Store> store;  // c10::make_intrusive<c10d::HashStore>()
  ///   int rank = 0;                            // this thread's rank
  ///   acc::Accelerator accelerator(acc::AcceleratorOptions().store(store).environment(
  ///       {{"RANK", std::to_string(rank)}, {"WORLD_SIZE", "2"}}));
  ACCELERATE_ARG(c10::intrusive_ptr<c10d::Store>, store);

  /// Accumulate gradients over this many micro-steps (≥ 1). Giving this and
  /// `gradient_accumulation_plugin` both makes the Accelerator throw std::invalid_argument.
  ACCELERATE_ARG(std::optional<int>, gradient_accumulation_steps);
  /// Accumulation settings as a plugin (num_steps, adjust_scheduler, sync_with_dataloader,
  /// sync_each_batch). Not together with `gradient_accumulation_steps`.
  ACCELERATE_ARG(std::optional<GradientAccumulationPlugin>, gradient_accumulation_plugin);
  /// Prepared data loaders cut each batch into one slice per process instead of giving each
  /// process whole batches (Accelerate's `split_batches`; default false).
  ACCELERATE_ARG(bool, split_batches) = false;
  /// Prepared data loaders wrap around so every process gets the same number of batches
  /// (default true).
  ACCELERATE_ARG(bool, even_batches) = true;
  /// Accelerate's `dispatch_batches`: prepared loaders read their batches on process 0 and
  /// send each process its slice (true), or every process reads its own (false). Unset (the
  /// default): dispatch loaders over iterable data sets only. See
  /// ShardingOptions::dispatch_batches.
  ACCELERATE_ARG(std::optional<bool>, dispatch_batches);
  /// Random states that prepared data loaders synchronise from process 0 at the start of every
  /// pass (Accelerate's `rng_types`; see synchronize_rng_states in utils.h): "cpu" (or
  /// "torch"), "cuda", "generator". Default: {"generator"}, as Accelerate: the loader's own
  /// shuffling generator (`DataLoaderOptions::generator`), so that every process draws the
  /// same order; nothing is sent for a loader without one (a seeded shuffle already uses a
  /// seed all processes share, ShardingOptions::seed). Give "cpu" when the loop draws random
  /// numbers that must agree across processes (e.g. data augmentation that must be the same
  /// on all). An unknown type, or "cuda" without a CUDA device, makes the Accelerator throw
  /// InvalidArgument naming it.
  ///
  /// Example:
  ///   acc::Accelerator accelerator(acc::AcceleratorOptions().rng_types({"cpu"}));
  ///   // each pass of a prepared loader: torch::rand draws the same on every process
  ACCELERATE_ARG(std::vector<std::string>, rng_types) = {"generator"};
  /// Prepared schedulers step only with the optimizer, num_processes times per call unless
  /// split_batches (default true, as Accelerate).
  ACCELERATE_ARG(bool, step_scheduler_with_optimizer) = true;
  /// Options of the DDP engine attached to prepared models (Accelerate's
  /// `DistributedDataParallelKwargs`).
  ACCELERATE_ARG(DistributedDataParallelOptions, ddp_options);
  /// Options of the fp16 gradient scaler (Accelerate's `GradScalerKwargs`); used with
  /// mixed_precision("fp16") only.
  ACCELERATE_ARG(GradScalerOptions, grad_scaler);
  /// Where checkpoints go (see ProjectConfiguration).
  ACCELERATE_ARG(ProjectConfiguration, project_config);

 public:
  /// Threads LibTorch computes with in this process (at::set_num_threads), as `accelerate
  /// launch --num_cpu_threads_per_process` would give it. Unset (the default): the Accelerator
  /// leaves LibTorch's thread count alone (OMP_NUM_THREADS, which `accelerate-cpp launch` sets
  /// for each process, else one thread per core). Throws accelerate::InvalidArgument naming
  /// the value when `threads` < 1. See StateOptions::num_cpu_threads_per_process.
  ///
  /// Example:
  ///   acc::Accelerator accelerator(acc::AcceleratorOptions().num_cpu_threads_per_process(4));
  AcceleratorOptions& num_cpu_threads_per_process(int threads);
  /// The number of threads given, if any.
  const std::optional<int>& num_cpu_threads_per_process() const noexcept {
    return num_cpu_threads_per_process_;
  }

  /// Shortcut for project_config(ProjectConfiguration().project_dir(dir)).
  AcceleratorOptions& project_dir(std::string dir) {
    project_config_.project_dir(std::move(dir));
    return *this;
  }

  /// Experiment trackers: "tensorboard", "csv", "all", or several separated by commas
  /// (Accelerate's `log_with`). They write into the project's logging_dir (see
  /// ProjectConfiguration), which must then be set.
  AcceleratorOptions& log_with(const std::string& names);
  /// Adds a tracker of your own; it is used on the main process only.
  AcceleratorOptions& log_with(std::shared_ptr<GeneralTracker> tracker) {
    custom_trackers_.push_back(std::move(tracker));
    return *this;
  }
  /// The names of the trackers given to log_with(names), each once, in order.
  const std::vector<std::string>& log_with() const noexcept { return log_with_; }
  /// The trackers of your own given to log_with(tracker), in order.
  const std::vector<std::shared_ptr<GeneralTracker>>& custom_trackers() const noexcept {
    return custom_trackers_;
  }

  /// The `StateOptions` these options resolve to.
  StateOptions state_options() const;

 private:
  std::optional<int> num_cpu_threads_per_process_;
  std::vector<std::string> log_with_;
  std::vector<std::shared_ptr<GeneralTracker>> custom_trackers_;
};

}  // namespace accelerate
