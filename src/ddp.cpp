#include "accelerate/ddp.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "accelerate/ops.h"
#include "autograd_graph.h"
#include "compat.h"
#include "ddp_reducer.h"
#include "errors.h"
#include "grad_sync.h"

namespace accelerate {
namespace {

using detail::kBroadcastBucketBytes;
using detail::message_of;

}  // namespace

struct DistributedDataParallel::Engine {
  const State* state = nullptr;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::unique_ptr<c10d::Reducer> reducer;             // DdpEngine::Reducer
  std::unique_ptr<detail::BucketedGradSync> buckets;  // DdpEngine::Buckets
  std::vector<at::Tensor> buffers;
  std::unordered_set<const torch::autograd::Node*> accumulators;
  DistributedDataParallelOptions options;

  void broadcast(const std::vector<at::Tensor>& tensors, const char* what) const {
    if (tensors.empty()) return;
    try {
      c10d::broadcast_coalesced(group, tensors, kBroadcastBucketBytes, 0);
    } catch (const std::exception& e) {
      throw DistributedError("accelerate: prepare: " + state->describe() + ": broadcasting the " +
                             what + " from process 0 failed: " + message_of(e));
    }
  }
};

DistributedDataParallel::DistributedDataParallel(std::shared_ptr<torch::nn::Module> module,
                                                 const State& state,
                                                 const DistributedDataParallelOptions& options)
    : module_(std::move(module)) {
  if (!module_) throw InvalidArgument("accelerate: prepare: the model is a null pointer");
  if (state.num_processes() == 1) return;
  if (options.bucket_cap_mb() <= 0)
    throw InvalidArgument(
        "accelerate: DistributedDataParallelOptions.bucket_cap_mb must be "
        "positive, got " +
        std::to_string(options.bucket_cap_mb()));
  if (options.spin_wait_us() < 0)
    throw InvalidArgument(
        "accelerate: DistributedDataParallelOptions.spin_wait_us must be >= 0, got " +
        std::to_string(options.spin_wait_us()));
  engine_ = std::make_unique<Engine>();
  Engine& e = *engine_;
  e.state = &state;
  e.options = options;
  e.group = c10::intrusive_ptr<c10d::ProcessGroup>::reclaim_copy(state.process_group());

  std::vector<at::Tensor> all_params, trained;
  std::vector<std::string> names;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    all_params.push_back(item.value());
    if (!item.value().requires_grad()) continue;
    names.push_back(item.key());
    trained.push_back(item.value());
  }
  for (const auto& buffer : module_->buffers(/*recurse=*/true)) e.buffers.push_back(buffer);

  // Same parameters everywhere (checked on every process, so that all of them fail alike),
  // then process 0's values everywhere.
  std::vector<std::string> signature;
  for (const auto& item : module_->named_parameters(/*recurse=*/true)) {
    std::ostringstream os;
    os << item.key() << ": " << item.value().scalar_type() << " " << item.value().sizes();
    signature.push_back(os.str());
  }
  const auto signatures = gather_bytes(state, nlohmann::json(signature).dump());
  for (int r = 0; r < state.num_processes(); ++r) {
    const auto other = nlohmann::json::parse(signatures[r]).get<std::vector<std::string>>();
    const auto mine = nlohmann::json::parse(signatures[0]).get<std::vector<std::string>>();
    if (other == mine) continue;
    size_t i = 0;
    while (i < mine.size() && i < other.size() && mine[i] == other[i]) ++i;
    auto at = [](const std::vector<std::string>& v, size_t k) {
      return k < v.size() ? v[k] : std::string("(no parameter)");
    };
    throw InvalidArgument("accelerate: prepare: " + state.describe() +
                          ": the model differs between processes: parameter " + std::to_string(i) +
                          " is " + at(mine, i) + " on rank 0 but " + at(other, i) + " on rank " +
                          std::to_string(r));
  }
  {
    at::NoGradGuard no_grad;
    e.broadcast(all_params, "parameters");
    e.broadcast(e.buffers, "buffers");
  }
  if (trained.empty()) return;  // nothing to synchronise (frozen or parameter-free model)

  const auto bucket_bytes = static_cast<size_t>(options.bucket_cap_mb() * 1024 * 1024);
  if (options.engine() == DdpEngine::Reducer) {
    std::unordered_map<size_t, std::string> by_index;
    for (size_t i = 0; i < names.size(); ++i) by_index.emplace(i, names[i]);
    e.reducer = detail::make_ddp_reducer(trained, std::move(by_index), e.group, bucket_bytes,
                                         options.find_unused_parameters(),
                                         options.gradient_as_bucket_view());
    if (options.static_graph()) e.reducer->set_static_graph();
  } else {
    detail::GradSyncOptions sync_options;
    sync_options.first_bucket_bytes = static_cast<size_t>(c10d::kDefaultFirstBucketBytes);
    sync_options.bucket_bytes = bucket_bytes;
    sync_options.find_unused_parameters = options.find_unused_parameters();
    sync_options.gradient_as_bucket_view = options.gradient_as_bucket_view();
    sync_options.static_graph = options.static_graph();
    sync_options.spin = std::chrono::microseconds(options.spin_wait_us());
    e.buckets = std::make_unique<detail::BucketedGradSync>(
        trained, std::move(names), e.group, sync_options,
        [this] { return require_backward_grad_sync_; }, state.describe());
  }
  for (const auto& p : trained)
    e.accumulators.insert(torch::autograd::impl::grad_accumulator(p).get());
}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::before_backward(const at::Tensor& loss) {
  if (!engine_ || engine_->accumulators.empty() || !require_backward_grad_sync_) return;
  Engine& e = *engine_;
  // The buckets engine needs nothing here but the buffers; the Reducer must be armed, and
  // only for a loss that reaches the module: an armed Reducer that gets no gradient stays
  // armed and all-reduces in the next backward, no_sync or not.
  if (!e.reducer && (!e.options.broadcast_buffers() || e.buffers.empty())) return;
  if (!is_reached_by(loss)) return;
  if (e.reducer) {
    // PyTorch's DDP does this at the start of forward; there is no forward to hook here, and
    // doing it before backward is equivalent: the buckets are rebuilt (once, in the order the
    // gradients arrived during the first step, by a collective every process reaches here)
    // before any hook of this pass fires.
    e.reducer->rebuild_buckets();
    e.reducer->prepare_for_forward();
    if (e.options.find_unused_parameters() && !e.options.static_graph())
      e.reducer->prepare_for_backward({loss});
    else
      e.reducer->prepare_for_backward({});
  }
  if (e.options.broadcast_buffers()) {
    // Buffers after this step's forward, from process 0: what PyTorch's DDP copies at the
    // start of the next forward.
    at::NoGradGuard no_grad;
    e.broadcast(e.buffers, "buffers");
  }
}

bool DistributedDataParallel::is_reached_by(const at::Tensor& loss) const {
  if (!engine_ || engine_->accumulators.empty()) return false;
  return detail::any_graph_node(
      loss, [&](const torch::autograd::Node& node) { return engine_->accumulators.count(&node); });
}

}  // namespace accelerate
