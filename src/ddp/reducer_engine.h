// Internal: ReducerEngine, c10d's DDP engine (a c10d::Reducer, the one PyTorch's DDP uses)
// behind the GradSyncEngine interface (DdpEngine::Reducer; Note [gradient sync engines] in
// engine.h), and make_ddp_reducer, the one place that builds a Reducer the way PyTorch's DDP
// does, also used by the benchmarks' hand-made baseline (bench/c10d_util.h).
//
// The Reducer is armed for each synchronising backward pass in begin_backward (only for a loss
// that reaches the parameters: an armed Reducer that gets no gradient stays armed and
// all-reduces in the next backward, no_sync or not); end_backward then runs the context's
// pass_end. c10d's Reducer has no join in C++: begin_join throws.
#pragma once

#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ddp/engine.h"

namespace accelerate::detail {

/// A c10d::Reducer over `params` (`names`: index -> parameter name) with PyTorch DDP's
/// buckets (bucket_layout.h's initial layout): the first of c10d::kDefaultFirstBucketBytes
/// (1 MiB), the others of `bucket_bytes`.
std::unique_ptr<c10d::Reducer> make_ddp_reducer(const std::vector<at::Tensor>& params,
                                                std::unordered_map<size_t, std::string> names,
                                                const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                                                size_t bucket_bytes, bool find_unused_parameters,
                                                bool gradient_as_bucket_view);

class ReducerEngine : public GradSyncEngine {
 public:
  /// `reaches(loss)`: whether the loss's graph reaches one of the trained parameters.
  ReducerEngine(EngineContext context, std::function<bool(const at::Tensor&)> reaches);

  void begin_backward(const at::Tensor& loss) override;
  void end_backward() override;
  void begin_join() override;
  void shadow_pass() override;

 private:
  const EngineContext context_;
  const std::function<bool(const at::Tensor&)> reaches_;
  std::unique_ptr<c10d::Reducer> reducer_;
  bool armed_ = false;  // begin_backward armed the Reducer for the backward in progress
};

}  // namespace accelerate::detail
