#include "ddp/buckets_engine.h"

#include <ATen/ATen.h>
#include <ATen/ScalarOps.h>
#include <torch/csrc/autograd/engine.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <chrono>
#include <thread>
#include <utility>

#include "accelerate/errors.h"
#include "ddp/compress_hook.h"

namespace accelerate::detail {
namespace {

// Waits for `work`. On the CPU (Gloo) the caller first polls for up to `spin` with yields
// before blocking: on a machine with few cores, a thread that blocks lets its core go idle, and
// being woken from there costs more than the all-reduce of a small bucket
// (bench_gloo_latency). On CUDA, wait() only orders the streams and returns at once.
void wait_for(c10d::Work& work, bool cpu, std::chrono::microseconds spin) {
  if (cpu && spin.count() > 0) {
    const auto until = std::chrono::steady_clock::now() + spin;
    while (!work.isCompleted() && std::chrono::steady_clock::now() < until)
      std::this_thread::yield();
  }
  work.wait();
}

std::string names_of(const std::vector<std::string>& names, const std::vector<size_t>& which) {
  std::string out;
  const size_t shown = std::min<size_t>(which.size(), 10);
  for (size_t k = 0; k < shown; ++k) out += (k ? ", " : "") + names[which[k]];
  if (which.size() > shown) out += " and " + std::to_string(which.size() - shown) + " more";
  return out;
}

}  // namespace

BucketsEngine::BucketsEngine(EngineContext context)
    : context_(std::move(context)), world_(context_.group->getSize()) {
  build_buckets(initial_bucket_layout(params_, options_.bucket_sizes).buckets);
  ready_.assign(params_.size(), 0);
  used_ = at::zeros({static_cast<int64_t>(params_.size())}, at::kInt);

  for (size_t i = 0; i < params_.size(); ++i) {
    auto accumulator = torch::autograd::impl::grad_accumulator(params_[i]);
    hook_keys_.push_back(
        accumulator->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
            [this, i](const torch::autograd::variable_list& outputs,
                      const torch::autograd::variable_list& /*inputs*/) {
              on_gradient(i);
              return outputs;
            })));
    // Kept alive here: a parameter holds its accumulator only weakly, and a new one would not
    // carry the hook.
    accumulators_.push_back(std::move(accumulator));
  }
}

BucketsEngine::~BucketsEngine() {
  for (size_t i = 0; i < accumulators_.size(); ++i) accumulators_[i]->del_post_hook(hook_keys_[i]);
}

void BucketsEngine::build_buckets(const std::vector<std::vector<size_t>>& assignment) {
  at::NoGradGuard no_grad;
  std::vector<Bucket> buckets;
  locators_.assign(params_.size(), Locator{});
  for (const auto& indices : assignment) {
    Bucket b;
    int64_t total = 0;
    for (size_t i : indices) total += params_[i].numel();
    const at::Tensor& first = params_[indices.front()];
    b.flat = at::zeros({total}, first.options().requires_grad(false));
    if (!options_.gradient_as_bucket_view) b.grads = at::zeros_like(b.flat);
    int64_t offset = 0;
    for (size_t i : indices) {
      locators_[i] = Locator{buckets.size(), b.params.size()};
      b.params.push_back(i);
      b.views.push_back(bucket_view(b.flat, params_[i], offset));
      b.homes.push_back(b.grads.defined() ? bucket_view(b.grads, params_[i], offset)
                                          : b.views.back());
      offset += params_[i].numel();
      // A gradient that exists (set before prepare, or living in the buckets being replaced)
      // moves to its new home, as c10d's Reducer moves it into its bucket view.
      at::Tensor& grad = params_[i].mutable_grad();
      if (grad.defined() && !grad.is_sparse()) {
        b.homes.back().copy_(grad);
        grad = b.homes.back();
      }
    }
    b.pending = b.params.size();
    buckets.push_back(std::move(b));
  }
  buckets_ = std::move(buckets);
}

void BucketsEngine::on_gradient(size_t index) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (options_.find_unused_parameters || options_.static_graph) {
    // Used since the last synchronisation (no_sync passes included), as c10d's Reducer counts.
    if (params_[index].grad().defined()) used_.data_ptr<int>()[index] = 1;
  }
  if (!in_pass_) {
    if (!context_.sync()) return;  // no_sync: the gradient stays where AccumulateGrad put it
    if (context_.pass_start) context_.pass_start();
    in_pass_ = true;
    if (!rebuilt_.buckets.empty()) {
      // The buckets in arrival order, built where c10d's Reducer builds them: before the
      // second synchronising pass accumulates (gradients already there move into them).
      build_buckets(rebuilt_.buckets);
      rebuilt_ = {};
    }
    torch::autograd::Engine::get_default_engine().queue_callback([this] { finish_pass(); });
  }
  if (!arrival_agreed_) arrival_.push_back(static_cast<int64_t>(index));
  mark_ready(index);
}

void BucketsEngine::mark_ready(size_t index) {
  if (ready_[index]) {
    throw InvalidArgument("accelerate: backward: " + context_.where + ": parameter " +
                          names_[index] +
                          " received its gradient twice in one backward pass (a reentrant "
                          "backward, such as reentrant activation checkpointing); the gradient "
                          "synchronisation handles one gradient per parameter per pass");
  }
  ready_[index] = 1;
  if (--buckets_[locators_[index].bucket].pending == 0) launch_ready_buckets();
}

void BucketsEngine::fill(Bucket& b) {
  at::NoGradGuard no_grad;
  const auto scale = at::native::wrapped_scalar_tensor(1.0 / world_);
  // How each gradient stands: at home (accumulated where the engine put it), elsewhere (a new
  // tensor, e.g. after zero_grad to none) or undefined.
  size_t at_home = 0, elsewhere = 0;
  bool contiguous = true;
  for (size_t k = 0; k < b.params.size(); ++k) {
    const at::Tensor& grad = params_[b.params[k]].grad();
    if (!grad.defined()) continue;
    if (grad.is_sparse())
      throw InvalidArgument("accelerate: backward: " + context_.where + ": parameter " +
                            names_[b.params[k]] +
                            " has a sparse gradient, which DdpEngine::Buckets does not support "
                            "(use DdpEngine::Reducer)");
    if (grad.is_alias_of(b.homes[k]) && grad.data_ptr() == b.homes[k].data_ptr()) {
      ++at_home;
    } else {
      ++elsewhere;
      contiguous = contiguous && grad.is_contiguous() && b.views[k].is_contiguous();
    }
  }
  const size_t n = b.params.size();
  // The values are c10d's Reducer's: a gradient in its bucket view is divided by the world
  // size in place, any other is multiplied by 1 / world while copied in; with a compression
  // hook, the hook divides, and gradients are copied in as they are. Whole-bucket kernels
  // where every gradient stands alike: one or two kernels instead of one per parameter.
  const bool scale_here = !options_.compress;
  if (at_home == n && options_.gradient_as_bucket_view) {
    if (scale_here) b.flat.div_(world_);
  } else if (at_home == n) {
    if (scale_here)
      at::mul_out(b.flat, b.grads, scale);
    else
      b.flat.copy_(b.grads);
  } else if (elsewhere == n && contiguous) {
    std::vector<at::Tensor> flat_grads;
    flat_grads.reserve(n);
    for (size_t i : b.params) flat_grads.push_back(params_[i].grad().view({-1}));
    at::cat_out(b.flat, flat_grads);
    if (scale_here) b.flat.mul_(scale);
  } else {
    for (size_t k = 0; k < n; ++k) {
      const at::Tensor& grad = params_[b.params[k]].grad();
      if (!grad.defined())
        b.views[k].zero_();
      else if (options_.gradient_as_bucket_view && grad.is_alias_of(b.views[k])) {
        if (scale_here) b.views[k].div_(world_);
      } else if (scale_here) {
        at::mul_out(b.views[k], grad.detach(), scale);
      } else {
        b.views[k].copy_(grad.detach());
      }
    }
  }
  if (options_.gradient_as_bucket_view) {
    // Gradients that were elsewhere now live in the bucket.
    for (size_t k = 0; k < n; ++k) {
      at::Tensor& grad = params_[b.params[k]].mutable_grad();
      if (grad.defined() && grad.data_ptr() != b.views[k].data_ptr()) grad = b.views[k];
    }
  }
}

void BucketsEngine::launch_ready_buckets() {
  // Buckets go out in index order on every process, so that the collectives pair up.
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].pending == 0) {
    Bucket& b = buckets_[next_launch_++];
    fill(b);
    start_reduction(b);
  }
}

void BucketsEngine::start_reduction(Bucket& b) {
  if (options_.compress) {
    // The result is cast back into the bucket once every collective is done (hand_back).
    auto started = start_compressed_allreduce(*group_, b.flat, *options_.compress);
    b.wire = std::move(started.wire);
    b.work = std::move(started.work);
    return;
  }
  b.wire = b.flat;
  std::vector<at::Tensor> tensors{b.wire};
  b.work = group_->allreduce(tensors);
}

void BucketsEngine::hand_back(Bucket& b, const std::vector<char>& globally_used) {
  at::NoGradGuard no_grad;
  if (!b.wire.is_same(b.flat)) decompress_into(b.flat, b.wire);
  const size_t n = b.params.size();
  bool all_used = true;
  for (size_t i : b.params) all_used = all_used && globally_used[i];
  // Without bucket views, when every parameter takes the averaged gradients (a parameter no
  // process used keeps its gradient untouched), the two buffers trade places instead of
  // copying: the all-reduced buffer becomes the gradients' home and the old home is what the
  // next synchronisation fills and all-reduces. The gradients never share storage with the
  // buffer being all-reduced, and no copy back is made.
  if (b.grads.defined() && all_used) {
    std::swap(b.flat, b.grads);
    std::swap(b.views, b.homes);
  }
  for (size_t k = 0; k < n; ++k) {
    const size_t i = b.params[k];
    if (!globally_used[i]) continue;
    at::Tensor& grad = params_[i].mutable_grad();
    if (!b.grads.defined()) {
      if (!grad.defined()) grad = b.views[k];
    } else if (!all_used) {
      b.homes[k].copy_(b.views[k]);
      grad = b.homes[k];
    } else {
      grad = b.homes[k];
    }
  }
}

void BucketsEngine::reset_pass() {
  in_pass_ = false;
  std::fill(ready_.begin(), ready_.end(), 0);
  next_launch_ = 0;
  for (auto& b : buckets_) {
    b.pending = b.params.size();
    b.work.reset();
    b.wire.reset();
  }
}

void BucketsEngine::finish_pass() {
  std::lock_guard<std::mutex> lock(mutex_);
  struct Reset {
    BucketsEngine* self;
    ~Reset() { self->reset_pass(); }
  } reset{this};

  // Parameters no gradient reached in this pass still take part (with the gradient they have,
  // or zeros), so that every process runs the same collectives; it is an error below unless
  // unused parameters are allowed.
  std::vector<size_t> missing;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!ready_[i]) missing.push_back(i);
  for (size_t i : missing) mark_ready(i);

  const bool track_used = options_.find_unused_parameters || options_.static_graph;
  at::Tensor used;
  c10::intrusive_ptr<c10d::Work> used_work;
  if (track_used) {
    std::vector<at::Tensor> tensors{used_.to(params_.front().device())};
    used_work = group_->allreduce(tensors);
    used = tensors[0];
  }
  for (auto& b : buckets_) wait_for(*b.work, b.flat.is_cpu(), options_.spin);
  std::vector<char> globally_used(params_.size(), 1);
  if (track_used) {
    used_work->wait();
    const at::Tensor counts = used.to(at::kCPU);
    for (size_t i = 0; i < params_.size(); ++i) globally_used[i] = counts.data_ptr<int>()[i] != 0;
    used_.zero_();
  }

  for (auto& b : buckets_) hand_back(b, globally_used);

  if (!arrival_agreed_ && (options_.static_graph || !options_.find_unused_parameters))
    agree_on_arrival_order();
  arrival_agreed_ = true;
  arrival_.clear();
  if (context_.pass_end) context_.pass_end();

  if (!missing.empty() && !track_used) {
    throw InvalidArgument(
        "accelerate: backward: " + context_.where + ": " + std::to_string(missing.size()) +
        " trained parameter(s) got no gradient in this backward pass: " +
        names_of(names_, missing) +
        ". If the model does not use every parameter in every step, set "
        "DistributedDataParallelOptions().find_unused_parameters(true); if those parameters are "
        "not to be trained, set requires_grad(false) before prepare");
  }
}

void BucketsEngine::shadow_pass() {
  std::lock_guard<std::mutex> lock(mutex_);
  at::NoGradGuard no_grad;
  if (!rebuilt_.buckets.empty()) {
    build_buckets(rebuilt_.buckets);
    rebuilt_ = {};
  }
  // finish_pass's collectives in its order: the buckets in index order (zeros, compressed
  // when a hook compresses, as PyTorch's join hook runs the comm hook on zero buckets), the
  // map of used parameters (this process's own, as PyTorch's), the agreement on the rebuilt
  // buckets' order at the first synchronising pass.
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  for (const auto& b : buckets_) works.push_back(start_shadow_reduction(b));
  if (options_.find_unused_parameters || options_.static_graph) {
    std::vector<at::Tensor> tensors{used_.to(params_.front().device(), /*non_blocking=*/false,
                                             /*copy=*/true)};
    works.push_back(group_->allreduce(tensors));
  }
  for (auto& work : works) work->wait();
  if (!arrival_agreed_ && (options_.static_graph || !options_.find_unused_parameters))
    agree_on_arrival_order();
  arrival_agreed_ = true;
  arrival_.clear();
}

c10::intrusive_ptr<c10d::Work> BucketsEngine::start_shadow_reduction(const Bucket& b) {
  std::vector<at::Tensor> tensors{at::zeros(
      {b.flat.numel()}, b.flat.options().dtype(options_.compress.value_or(b.flat.scalar_type())))};
  return group_->allreduce(tensors);
}

void BucketsEngine::agree_on_arrival_order() {
  // The order of process 0 for everyone, so that all processes build the same buckets.
  std::vector<int64_t> order = arrival_;
  std::vector<char> seen(params_.size(), 0);
  for (int64_t i : order) seen[static_cast<size_t>(i)] = 1;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!seen[i]) order.push_back(static_cast<int64_t>(i));
  std::vector<at::Tensor> tensors{at::tensor(order, at::kLong).to(params_.front().device())};
  group_->broadcast(tensors)->wait();
  const at::Tensor agreed = tensors[0].to(at::kCPU);
  order.assign(agreed.data_ptr<int64_t>(), agreed.data_ptr<int64_t>() + agreed.numel());

  rebuilt_ = bucket_layout_in_order(params_, order, options_.bucket_sizes);
}

}  // namespace accelerate::detail
