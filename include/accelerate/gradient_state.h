// accelerate/gradient_state.h: whether gradients are synchronised at this step.
//
// Accelerate's `GradientState`. One per `Accelerator`, shared (std::shared_ptr) with the
// objects it prepares: the `accumulate` guard decides `sync_gradients`; prepared optimizers
// and schedulers step only when it is true; prepared data loaders tell it when they yield
// their last batch (so accumulation syncs at the end of an epoch) and how many samples the
// last gathered batch really holds (`gather_for_metrics` drops the duplicates).
//
// Example:
//   auto plugin = accelerate::GradientAccumulationPlugin().num_steps(2);
//   auto gs = std::make_shared<accelerate::GradientState>(plugin);
//   gs->set_sync_gradients(false);   // inside an accumulation window
#pragma once

#include <cstdint>
#include <vector>

#include "accelerate/options.h"

namespace accelerate {

class DataLoaderBase;

/// Accelerate's `GradientAccumulationPlugin`, with chained setters.
struct GradientAccumulationPlugin {
  /// Number of micro-steps whose gradients are accumulated before an optimizer step (≥ 1).
  ACCELERATE_ARG(int, num_steps) = 1;
  /// Count the skipped micro-steps in the scheduler's step counter (default true).
  ACCELERATE_ARG(bool, adjust_scheduler) = true;
  /// Synchronise at the end of each data loader pass even inside a window (default true).
  ACCELERATE_ARG(bool, sync_with_dataloader) = true;
  /// All-reduce gradients at every micro-step (less memory for DDP buckets, more traffic).
  ACCELERATE_ARG(bool, sync_each_batch) = false;
};

/// Shared step state of one `Accelerator` and what it prepared.
class GradientState {
 public:
  /// Throws std::invalid_argument when plugin.num_steps() < 1.
  explicit GradientState(GradientAccumulationPlugin plugin = GradientAccumulationPlugin());

  /// The accumulation settings.
  const GradientAccumulationPlugin& plugin() const { return plugin_; }
  /// Number of accumulation steps.
  int num_steps() const { return plugin_.num_steps(); }
  /// Changes the number of accumulation steps (Accelerate's
  /// `accelerator.gradient_accumulation_steps = n`); InvalidArgument when `steps` < 1.
  void set_num_steps(int steps);
  /// True when this step synchronises gradients and the optimizer really steps.
  bool sync_gradients() const { return sync_gradients_; }
  /// Set by the `accumulate` guard (and by tests).
  void set_sync_gradients(bool value) { sync_gradients_ = value; }

  /// True while a prepared data loader is being iterated.
  bool in_dataloader() const { return !active_.empty(); }
  /// The innermost prepared data loader being iterated, or null (Accelerate's
  /// `GradientState.active_dataloader`).
  const DataLoaderBase* active_dataloader() const {
    return active_.empty() ? nullptr : active_.back().loader;
  }
  /// True when the innermost active data loader has yielded (is yielding) its last batch.
  bool end_of_dataloader() const { return !active_.empty() && active_.back().end; }
  /// Samples of the innermost active loader's last global batch that are real, i.e. the
  /// data set size modulo the total batch size; -1 when unknown or when nothing is padded.
  int64_t remainder() const { return active_.empty() ? -1 : active_.back().remainder; }

  /// A prepared loader starts a pass (`remainder` as above).
  void loader_begin(const DataLoaderBase* loader, int64_t remainder);
  /// The loader is about to yield its last batch of the pass.
  void loader_at_end(const DataLoaderBase* loader);
  /// The loader's pass is over (or was abandoned).
  void loader_finish(const DataLoaderBase* loader);
  /// The loader learned its remainder during the pass (a stream, found at its end).
  void loader_remainder(const DataLoaderBase* loader, int64_t remainder);

 private:
  struct Active {
    const DataLoaderBase* loader;
    int64_t remainder;
    bool end;
  };
  GradientAccumulationPlugin plugin_;
  bool sync_gradients_ = true;
  std::vector<Active> active_;
};

}  // namespace accelerate
