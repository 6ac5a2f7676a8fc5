#include "ddp/reducer_engine.h"

#include <utility>

#include "compat.h"
#include "ddp/compress_hook.h"
#include "errors.h"

namespace accelerate::detail {

std::unique_ptr<c10d::Reducer> make_ddp_reducer(const std::vector<at::Tensor>& params,
                                                std::unordered_map<size_t, std::string> names,
                                                const c10::intrusive_ptr<c10d::ProcessGroup>& group,
                                                size_t bucket_bytes, bool find_unused_parameters,
                                                bool gradient_as_bucket_view) {
  const BucketSizes sizes{static_cast<size_t>(c10d::kDefaultFirstBucketBytes), bucket_bytes};
  BucketLayout layout = initial_bucket_layout(params, sizes);
  return compat::make_reducer(params, std::move(layout.buckets), std::move(layout.limits), group,
                              static_cast<int64_t>(sizes.rest), find_unused_parameters,
                              gradient_as_bucket_view, std::move(names),
                              static_cast<int64_t>(sizes.first));
}

ReducerEngine::ReducerEngine(EngineContext context, std::function<bool(const at::Tensor&)> reaches)
    : context_(std::move(context)), reaches_(std::move(reaches)) {
  const EngineOptions& options = context_.options;
  std::unordered_map<size_t, std::string> by_index;
  for (size_t i = 0; i < context_.names.size(); ++i) by_index.emplace(i, context_.names[i]);
  reducer_ = make_ddp_reducer(context_.params, std::move(by_index), context_.group,
                              options.bucket_sizes.rest, options.find_unused_parameters,
                              options.gradient_as_bucket_view);
  if (options.static_graph) reducer_->set_static_graph();
  if (options.compress)
    reducer_->register_comm_hook(make_compress_hook(context_.group, *options.compress));
}

void ReducerEngine::begin_backward(const at::Tensor& loss) {
  armed_ = false;
  if (!context_.sync() || !reaches_(loss)) return;
  if (context_.pass_start) context_.pass_start();
  // PyTorch's DDP does this at the start of forward; there is no forward to hook here, and
  // doing it before backward is equivalent: the buckets are rebuilt (once, in the order the
  // gradients arrived during the first step, by a collective every process reaches here)
  // before any hook of this pass fires.
  reducer_->rebuild_buckets();
  reducer_->prepare_for_forward();
  if (context_.options.find_unused_parameters && !context_.options.static_graph)
    reducer_->prepare_for_backward({loss});
  else
    reducer_->prepare_for_backward({});
  armed_ = true;
}

void ReducerEngine::end_backward() {
  if (!armed_) return;
  armed_ = false;
  if (context_.pass_end) context_.pass_end();
}

void ReducerEngine::begin_join() {
  throw InvalidArgument(
      "accelerate: join_uneven_inputs: DdpEngine::Reducer cannot join uneven inputs (c10d's "
      "Reducer has no join in C++); use DdpEngine::Buckets, the default, or even_batches");
}

void ReducerEngine::shadow_pass() {
  // Unreachable through DistributedDataParallel: begin_join refused join mode.
  begin_join();
}

}  // namespace accelerate::detail
