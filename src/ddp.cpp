#include "accelerate/ddp.h"

#include <ATen/ATen.h>
#include <nlohmann/json.hpp>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/nn/module.h>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <chrono>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "accelerate/ops.h"
#include "autograd_graph.h"
#include "ddp/buckets_engine.h"
#include "ddp/compress_hook.h"
#include "ddp/engine.h"
#include "ddp/reducer_engine.h"
#include "errors.h"

namespace accelerate {

using detail::kBroadcastBucketBytes;
using detail::message_of;

struct DistributedDataParallel::Peers {
  const State* state = nullptr;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  std::vector<at::Tensor> buffers;
  std::unordered_set<const torch::autograd::Node*> accumulators;
  DistributedDataParallelOptions options;
  at::Device device = at::kCPU;  // of the parameters: where the join collectives run
  // Join mode (active process): the pending all-reduce telling joined processes that this one
  // still trains; waited for at the next pass start or at the end of the join.
  c10::intrusive_ptr<c10d::Work> notify;

  void broadcast(const std::vector<at::Tensor>& tensors, const char* what, int root = 0,
                 const char* api = "prepare") const {
    if (tensors.empty()) return;
    try {
      c10d::broadcast_coalesced(group, tensors, kBroadcastBucketBytes, root);
    } catch (const std::exception& e) {
      throw DistributedError("accelerate: " + std::string(api) + ": " + state->describe() +
                             ": broadcasting the " + what + " from process " +
                             std::to_string(root) + " failed: " + message_of(e));
    }
  }

  // All-reduces one value with `op` (PyTorch's join collectives: the number of processes still
  // training, the common rank).
  int64_t allreduce_scalar(int64_t value, c10d::ReduceOp::RedOpType op) const {
    std::vector<at::Tensor> tensors{
        at::full({1}, value, at::TensorOptions(at::kLong).device(device))};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp(op);
    group->allreduce(tensors, opts)->wait();
    return tensors[0].to(at::kCPU).item<int64_t>();
  }

  // PyTorch DDP's _find_common_rank: the highest rank among those that are candidates.
  int common_rank(bool candidate) const {
    const int64_t rank =
        allreduce_scalar(candidate ? state->process_index() : -1, c10d::ReduceOp::MAX);
    if (rank < 0)
      throw DistributedError("accelerate: join_uneven_inputs: " + state->describe() +
                             ": no process offered its model to the others");
    return static_cast<int>(rank);
  }

  bool buffers_to_sync() const { return options.broadcast_buffers() && !buffers.empty(); }

  // The buffers of process `root` into every process's, as PyTorch's DDP does at the start of
  // a forward that follows a synchronising one. Done at the end of the synchronising backward
  // instead (there is no forward to hook): the next forward sees the same values. Through
  // shallow copies that share the buffers' storage but not their version counters, so that a
  // graph kept for another backward (retain_graph) still finds what it saved (BatchNorm saves
  // running_mean / running_var), as nothing touches them between PyTorch's backward passes.
  void sync_buffers(int root, const char* api) const {
    std::vector<at::Tensor> storage;
    storage.reserve(buffers.size());
    for (const auto& b : buffers) storage.push_back(b.variable_data());
    at::NoGradGuard no_grad;
    broadcast(storage, "buffers", root, api);
  }

  // Join mode, a process still training, at the start of each synchronising backward pass: as
  // PyTorch's DDP forward under Join, tell the joined processes (notify all-reduce of 1).
  void join_pass_start() {
    if (notify) notify->wait();
    std::vector<at::Tensor> ones{at::ones({1}, at::TensorOptions(at::kLong).device(device))};
    notify = group->allreduce(ones);
  }

  // The end of each synchronising pass (the engine's pass_end): the buffers from process 0, or
  // under join from the highest process that trained this pass (a joined process runs the same
  // collectives after its shadow pass).
  void pass_end(bool joining) const {
    if (!buffers_to_sync()) return;
    if (joining)
      sync_buffers(common_rank(true), "backward");
    else
      sync_buffers(0, "backward");
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
  const auto compress = detail::compress_dtype(options.comm_hook());
  if (compress) {
    for (const auto& item : module_->named_parameters(/*recurse=*/true))
      if (item.value().requires_grad() && item.value().is_complex())
        throw InvalidArgument("accelerate: prepare: DistributedDataParallelOptions.comm_hook(" +
                              std::string(detail::hook_name(options.comm_hook())) +
                              ") cannot take parameter " + item.key() + " of complex dtype " +
                              std::string(c10::toString(item.value().scalar_type())) +
                              ": the cast would drop its imaginary part");
  }
  peers_ = std::make_unique<Peers>();
  Peers& e = *peers_;
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
  e.device = trained.front().device();

  if (compress == at::kBFloat16) {
    // Not every backend all-reduces bfloat16 (Gloo before LibTorch 2 does not); find out
    // here, on every process alike, rather than in the first backward.
    std::vector<at::Tensor> probe{
        at::zeros({1}, at::TensorOptions(at::kBFloat16).device(e.device))};
    try {
      e.group->allreduce(probe)->wait();
    } catch (const std::exception& ex) {
      throw InvalidArgument("accelerate: prepare: " + state.describe() +
                            ": DistributedDataParallelOptions.comm_hook(CommHook::BF16) needs "
                            "a backend that all-reduces bfloat16, and " +
                            e.group->getBackendName() + " here does not (" + message_of(ex) +
                            "); use CommHook::FP16");
    }
  }

  detail::EngineContext context;
  context.params = trained;
  context.names = std::move(names);
  context.group = e.group;
  context.options.bucket_sizes = {static_cast<size_t>(c10d::kDefaultFirstBucketBytes),
                                  static_cast<size_t>(options.bucket_cap_mb() * 1024 * 1024)};
  context.options.find_unused_parameters = options.find_unused_parameters();
  context.options.gradient_as_bucket_view = options.gradient_as_bucket_view();
  context.options.static_graph = options.static_graph();
  context.options.spin = std::chrono::microseconds(options.spin_wait_us());
  context.options.compress = compress;
  context.sync = [this] { return require_backward_grad_sync_; };
  context.pass_start = [this] {
    if (joining_) peers_->join_pass_start();
  };
  context.pass_end = [this] { peers_->pass_end(joining_); };
  context.where = state.describe();
  if (options.engine() == DdpEngine::Reducer)
    engine_ = std::make_unique<detail::ReducerEngine>(
        std::move(context), [this](const at::Tensor& loss) { return is_reached_by(loss); });
  else
    engine_ = std::make_unique<detail::BucketsEngine>(std::move(context));
  // After the engine: it keeps the accumulators alive (a parameter holds its own weakly).
  for (const auto& p : trained)
    e.accumulators.insert(torch::autograd::impl::grad_accumulator(p).get());
}

DistributedDataParallel::~DistributedDataParallel() = default;

void DistributedDataParallel::before_backward(const at::Tensor& loss) {
  if (engine_) engine_->begin_backward(loss);
}

void DistributedDataParallel::after_backward() {
  if (engine_) engine_->end_backward();
}

void DistributedDataParallel::begin_join() {
  if (!engine_ || joining_) return;
  engine_->begin_join();
  joining_ = true;
}

void DistributedDataParallel::abandon_join() {
  if (!joining_) return;
  joining_ = false;
  peers_->notify.reset();
}

void DistributedDataParallel::end_join() {
  if (!joining_) return;
  Peers& e = *peers_;
  joining_ = false;
  try {
    if (e.notify) e.notify->wait();
    e.notify.reset();
    // PyTorch's Join.__exit__: count the processes still training (they send 1 at each
    // synchronising pass, this one 0); while there are any, shadow their pass.
    bool last_to_join = true;
    while (e.allreduce_scalar(0, c10d::ReduceOp::SUM) > 0) {
      last_to_join = false;
      engine_->shadow_pass();
      // The pass end of the processes still training (Peers::pass_end).
      if (e.buffers_to_sync()) e.sync_buffers(e.common_rank(false), "join_uneven_inputs");
    }
    // DDP's join post-hook: everyone takes the model of the last process to join.
    const int root = e.common_rank(last_to_join);
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> params;
    for (const auto& p : module_->parameters(/*recurse=*/true)) params.push_back(p);
    e.broadcast(params, "parameters", root, "join_uneven_inputs");
    if (e.options.broadcast_buffers()) e.sync_buffers(root, "join_uneven_inputs");
  } catch (const InvalidArgument&) {
    throw;
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& ex) {
    throw DistributedError(
        "accelerate: join_uneven_inputs: " + e.state->describe() +
        ": waiting for the other processes to run out of data failed: " + message_of(ex));
  }
}

bool DistributedDataParallel::is_reached_by(const at::Tensor& loss) const {
  if (!engine_) return false;
  return detail::any_graph_node(
      loss, [&](const torch::autograd::Node& node) { return peers_->accumulators.count(&node); });
}

}  // namespace accelerate
