// accelerate/data/context.h: what a prepared loader needs from the job it runs in.
//
// A loader is sharded by values (`ShardingOptions`); what it must call while it runs, the
// collectives of a dispatched pass, the gradient state it tells where a pass stands and the
// random states synchronised at the start of each pass, comes from a `DataContext`. The
// Accelerator owns one and gives it to every loader it prepares; the loader keeps only a
// weak reference, so a loader used after its Accelerator is gone throws
// accelerate::InvalidArgument instead of touching freed memory.
//
// Example (sharding by hand, dispatching from process 0 over a State):
//   accelerate::State state;
//   auto context = std::make_shared<accelerate::DataContext>(state);
//   accelerate::DataLoader<accelerate::TensorDataset> loader(
//       accelerate::TensorDataset(torch::randn({8, 2}), torch::randn({8, 1})));
//   auto sharding = accelerate::ShardingOptions()
//                       .num_processes(state.num_processes())
//                       .process_index(state.process_index())
//                       .dispatch_batches(true);
//   auto shard = loader.shard(sharding, context);  // keep `context` alive while it is used
//   for (auto& batch : *shard) {}
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "accelerate/gradient_state.h"

namespace accelerate {

class State;

/// The job a prepared loader runs in: collectives from process 0, the gradient state told
/// where each pass stands, and the random states synchronised when a pass begins. The
/// default context has no collectives (a loader on one process, or one that does not
/// dispatch); one made from a `State` has that State's. Subclass it to route the calls
/// elsewhere (tests replay process 0's broadcasts this way).
class DataContext {
 public:
  /// No collectives: tells `gradient_state` (may be null) where passes stand.
  explicit DataContext(std::shared_ptr<GradientState> gradient_state = nullptr);
  /// The collectives of `state`, which must outlive this context; tells `gradient_state` (may
  /// be null) where passes stand and synchronises `rng_types` (AcceleratorOptions::rng_types,
  /// see synchronize_rng_states) at the start of every pass when there are several processes.
  explicit DataContext(const State& state, std::shared_ptr<GradientState> gradient_state = nullptr,
                       std::vector<std::string> rng_types = {});
  virtual ~DataContext();
  DataContext(const DataContext&) = delete;             ///< loaders refer to it; not copied
  DataContext& operator=(const DataContext&) = delete;  ///< loaders refer to it; not copied

  /// The gradient state a prepared loader tells when a pass begins, reaches its last batch
  /// and ends (null: nobody).
  const std::shared_ptr<GradientState>& gradient_state() const { return gradient_state_; }
  /// True when `broadcast` and `broadcast_bytes` reach the other processes (a dispatching
  /// loader over several processes needs them).
  virtual bool has_collectives() const { return state_ != nullptr; }
  /// Process 0's `tensor` on every process; the others pass a tensor of the same shape,
  /// dtype and device. A collective: every process calls it in turn.
  virtual at::Tensor broadcast(at::Tensor tensor);
  /// Process 0's `bytes` on every process (a collective).
  virtual std::string broadcast_bytes(const std::string& bytes);
  /// Called by a prepared loader at the start of every pass, before its order is drawn, with
  /// its shuffling generator: synchronises the random states (a collective when there are
  /// several processes and rng types; "generator" only when the loader has one).
  virtual void begin_pass(const std::optional<at::Generator>& generator);

 private:
  const State* state_ = nullptr;
  std::shared_ptr<GradientState> gradient_state_;
  std::vector<std::string> rng_types_;
};

}  // namespace accelerate
