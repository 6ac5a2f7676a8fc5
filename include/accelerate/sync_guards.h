// accelerate/sync_guards.h: the guards that scope gradient synchronisation: `NoSyncGuard`
// (what `Accelerator::no_sync` and `Accelerator::accumulate` return) and `JoinGuard` (what
// `Accelerator::join_uneven_inputs` returns). Each saves what it changes on entry and restores
// it on exit, as LibTorch's NoGradGuard.
//
// Example:
//   namespace acc = accelerate;
//   acc::Accelerator accelerator;
//   auto model = accelerator.prepare(std::make_shared<torch::nn::Module>());
//   at::Tensor w = model->register_parameter("w", torch::ones({2}));
//   {
//     acc::NoSyncGuard local = accelerator.no_sync(model);
//     accelerator.backward((w * 3).sum());
//   }  // w.grad() was not averaged over the processes
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "accelerate/data_loader.h"
#include "accelerate/ddp.h"

namespace accelerate {

/// RAII guard of `no_sync(model)` and `accumulate(model)`: while it lives, backward passes
/// of the given models do not all-reduce gradients (they accumulate locally). Restores the
/// previous setting on exit. Not copyable or movable.
class [[nodiscard]] NoSyncGuard {
 public:
  /// Turns synchronisation off for `engines` when `disable` is true; else does nothing.
  NoSyncGuard(std::vector<DistributedDataParallel*> engines, bool disable);
  ~NoSyncGuard();
  NoSyncGuard(const NoSyncGuard&) = delete;
  NoSyncGuard& operator=(const NoSyncGuard&) = delete;

 private:
  std::vector<std::pair<DistributedDataParallel*, bool>> saved_;
};

/// RAII guard of `join_uneven_inputs(...)` (PyTorch's `Join` context manager with DDP):
/// while it lives, processes may run different numbers of training steps. On leaving, a
/// process that ran out of data shadows the synchronising steps of the others until all have
/// left (a collective), then all take the model of the last one to leave, and the loaders'
/// even_batches come back. Not copyable or movable. A failed collective in the destructor
/// cannot be thrown: it is reported on stderr with the rank and ends the process with exit
/// code 1; call `join()` to get the exception instead. While an exception leaves the scope,
/// the guard only restores the loaders.
class [[nodiscard]] JoinGuard {
 public:
  /// `engine`: the model's engine in join mode, or null (nothing to join); `loaders`: the
  /// loaders and the even_batches to give them back.
  JoinGuard(DistributedDataParallel* engine,
            std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> loaders);
  ~JoinGuard();
  JoinGuard(const JoinGuard&) = delete;
  JoinGuard& operator=(const JoinGuard&) = delete;

  /// Leaves the guard here (what the destructor does, throwing DistributedError when a
  /// collective fails); the destructor then does nothing.
  void join();

 private:
  DistributedDataParallel* engine_;
  std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> loaders_;
  int exceptions_;
  bool done_ = false;
};

}  // namespace accelerate
