#include "accelerate/accelerator.h"
#include "accelerate/errors.h"
#include "collective_protocol.h"
#include "collective_trace.h"

#include "accelerate/utils.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/nn/utils/clip_grad.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <sstream>
#include <unordered_set>

#include "autograd_graph.h"
#include "checkpoint_registry.h"
#include "helpers.h"
#include "json_file.h"
#include "warnings.h"

namespace accelerate {

namespace {

// The code's plugin or steps, else ACCELERATE_GRADIENT_ACCUMULATION_STEPS, else 1 (Accelerate's
// order).
GradientAccumulationPlugin resolve_plugin(const AcceleratorOptions& options,
                                          const LaunchInfo& info) {
  if (options.gradient_accumulation_plugin() && options.gradient_accumulation_steps())
    throw InvalidArgument(
        "accelerate: pass either gradient_accumulation_steps or gradient_accumulation_plugin, "
        "not both");
  if (options.gradient_accumulation_plugin()) return *options.gradient_accumulation_plugin();
  return GradientAccumulationPlugin().num_steps(
      options.gradient_accumulation_steps().value_or(info.gradient_accumulation_steps.value_or(1)));
}

}  // namespace

Accelerator::Accelerator(const AcceleratorOptions& options)
    : state_(options.state_options()),
      gradient_state_(
          std::make_shared<GradientState>(resolve_plugin(options, state_.launch_info()))),
      options_(options),
      iteration_(options.project_config().iteration()),
      checkpoints_(std::make_unique<detail::CheckpointRegistry>()) {
  if (state_.mixed_precision() == MixedPrecision::FP16) {
    // As Accelerate: fp16 needs a GPU (CPU autocast of LibTorch 1.13 has no float16).
    if (!device().is_cuda())
      throw InvalidArgument("accelerate: mixed_precision 'fp16' needs a CUDA device, and " +
                            state_.describe() + " runs on " + device().str() +
                            "; use 'bf16' on the CPU");
    scaler_ = std::make_shared<GradScaler>(options.grad_scaler());
    checkpoints_->add_scaler(scaler_);
  }
  if (!options.log_with().empty() && logging_dir().empty())
    throw InvalidArgument("accelerate: logging with " + options.log_with().front() +
                          " needs a folder: set project_dir or logging_dir in "
                          "ProjectConfiguration");
  for (const auto& tracker : options.custom_trackers())
    if (!tracker) throw InvalidArgument("accelerate: log_with: null tracker");
  // "generator" is each prepared loader's own generator, synchronised when it has one.
  check_rng_types(state_, options.rng_types(), /*has_generator=*/true, "Accelerator: rng_types");
  data_context_ = std::make_shared<DataContext>(state_, gradient_state_, options.rng_types());
}

std::string Accelerator::logging_dir() const {
  const auto& p = options_.project_config();
  return p.logging_dir().empty() ? p.project_dir() : p.logging_dir();
}

void Accelerator::init_trackers(const std::string& project_name, const TrackerConfig& config) {
  if (!is_main_process()) return;
  if (!trackers_.empty())
    throw std::logic_error(
        "accelerate: init_trackers was already called; call end_training "
        "first");
  std::vector<std::shared_ptr<GeneralTracker>> started;
  for (const auto& name : options_.log_with())
    started.push_back(make_tracker(name, project_name, logging_dir()));
  for (const auto& tracker : options_.custom_trackers()) started.push_back(tracker);
  for (const auto& tracker : started) tracker->store_init_configuration(config);
  trackers_ = std::move(started);
}

void Accelerator::log(const std::map<std::string, double>& values, std::optional<int64_t> step) {
  for (const auto& tracker : trackers_) tracker->log(values, step);
}

void Accelerator::end_training() {
  for (const auto& tracker : trackers_) tracker->finish();
  trackers_.clear();
  wait_for_everyone();
}

GeneralTracker* Accelerator::get_tracker(const std::string& name) const {
  for (const auto& tracker : trackers_)
    if (tracker->name() == name) return tracker.get();
  return nullptr;
}

AutocastGuard Accelerator::autocast() const {
  switch (mixed_precision()) {
    case MixedPrecision::BF16:
      return AutocastGuard(device().type(), at::kBFloat16);
    case MixedPrecision::FP16:
      return AutocastGuard(device().type(), at::kHalf);
    case MixedPrecision::NO:
      break;
  }
  return AutocastGuard::none();
}

void Accelerator::unscale_gradients() {
  if (!scaler_) return;
  for (const auto& opt : optimizer_order_) scaler_->unscale_(*opt->optimizer());
}

Accelerator::~Accelerator() = default;

bool Accelerator::check_trigger() {
  auto flag =
      at::full({1}, trigger_ ? 1 : 0, at::TensorOptions().dtype(at::kLong).device(device()));
  const bool fired = accelerate::reduce(state_, flag, ReduceOp::SUM).item<int64_t>() > 0;
  if (fired) trigger_ = false;
  return fired;
}

void Accelerator::register_model(const std::shared_ptr<torch::nn::Module>& model) {
  if (!model) throw InvalidArgument("accelerate: prepare: the model is a null pointer");
  if (models_.count(model.get())) return;
  model->to(device());
  checkpoint_module("models", "model", model);
  models_.emplace(model.get(),
                  std::make_unique<DistributedDataParallel>(model, state_, options_.ddp_options()));
}

std::shared_ptr<AcceleratedOptimizer> Accelerator::prepare_optimizer(
    std::shared_ptr<torch::optim::Optimizer> optimizer) {
  if (!optimizer) throw InvalidArgument("accelerate: prepare: the optimizer is a null pointer");
  auto it = optimizers_.find(optimizer.get());
  if (it != optimizers_.end()) return it->second;
  auto prepared = std::make_shared<AcceleratedOptimizer>(optimizer, gradient_state_, device());
  if (scaler_) prepared->attach_scaler(scaler_);
  optimizers_.emplace(optimizer.get(), prepared);
  optimizer_order_.push_back(prepared);
  checkpoints_->add(
      "optimizers", checkpoints_->next_file("optimizers", "optimizer", ".bin"),
      [prepared](const std::string& path) {
        detail::write_file_synced(path, prepared->state_dict(), "save_state");
      },
      [prepared](const std::string& path) {
        prepared->load_state_dict(detail::read_file(path, "load_state"), path);
      });
  return prepared;
}

std::shared_ptr<AcceleratedScheduler> Accelerator::prepare_scheduler(
    std::shared_ptr<torch::optim::LRScheduler> scheduler) {
  if (!scheduler) throw InvalidArgument("accelerate: prepare: the scheduler is a null pointer");
  for (const auto& s : schedulers_)
    if (s->scheduler() == scheduler) return s;
  // Attach to the prepared optimizer the scheduler drives when that is known (LambdaLR),
  // else to every prepared optimizer, as Accelerate does.
  std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizers;
  if (auto* lambda = dynamic_cast<LambdaLR*>(scheduler.get())) {
    optimizers.push_back(prepare_optimizer(lambda->optimizer()));
  } else {
    optimizers = optimizer_order_;
  }
  if (optimizers.empty())
    throw InvalidArgument(
        "accelerate: prepare: prepare the scheduler's optimizer too (in the same call or before)");
  auto prepared = std::make_shared<AcceleratedScheduler>(
      std::move(scheduler), std::move(optimizers), gradient_state_,
      AcceleratedSchedulerOptions()
          .num_processes(num_processes())
          .split_batches(options_.split_batches())
          .step_with_optimizer(options_.step_scheduler_with_optimizer()));
  schedulers_.push_back(prepared);
  checkpoints_->add(
      "schedulers", checkpoints_->next_file("schedulers", "scheduler", ".json"),
      [prepared](const std::string& path) { detail::write_json(path, prepared->state_dict()); },
      [prepared](const std::string& path) {
        prepared->load_state_dict(detail::read_integers(path));
      });
  return prepared;
}

ShardingOptions Accelerator::sharding_options() {
  ShardingOptions sharding;
  if (options_.dispatch_batches()) sharding.dispatch_batches(*options_.dispatch_batches());
  return sharding.num_processes(num_processes())
      .process_index(process_index())
      .split_batches(options_.split_batches())
      .even_batches(options_.even_batches())
      .device(device())
      // One shuffling seed for all processes: process 0's, unless the loader has its own.
      .seed(broadcast_object(at::detail::getDefaultCPUGenerator().current_seed()));
}

DistributedDataParallel* Accelerator::engine_of(const torch::nn::Module* model) const {
  auto it = models_.find(model);
  return it == models_.end() ? nullptr : it->second.get();
}

void Accelerator::release_prepared() {
  models_.clear();  // DDP engines: their Reducers remove their autograd hooks
  optimizers_.clear();
  optimizer_order_.clear();
  schedulers_.clear();
  checkpoints_->clear();
  loaders_.clear();
  if (scaler_) checkpoints_->add_scaler(scaler_);
  step_ = 0;
  clear_device_cache();
}

void Accelerator::do_sync() {
  // Accelerate's rule: sync at the end of the data loader (when asked to), else every
  // num_steps micro-steps.
  if (gradient_state_->plugin().sync_with_dataloader() && gradient_state_->end_of_dataloader()) {
    step_ = 0;
    gradient_state_->set_sync_gradients(true);
  } else {
    ++step_;
    gradient_state_->set_sync_gradients(step_ % gradient_state_->num_steps() == 0);
  }
}

namespace {

// True when some operation of `loss`'s graph produced a tensor of `dtype`.
bool graph_has_dtype(const at::Tensor& loss, at::ScalarType dtype) {
  const caffe2::TypeMeta meta = c10::scalarTypeToTypeMeta(dtype);
  return detail::any_graph_node(loss, [&](const torch::autograd::Node& node) {
    for (uint32_t i = 0; i < node.num_inputs(); ++i)
      if (node.input_metadata(i).dtype() == meta) return true;
    return false;
  });
}

}  // namespace

void Accelerator::warn_if_unprepared_model(const at::Tensor& loss) {
  // Parameters a prepared optimizer trains that no prepared model holds: their gradients are
  // never all-reduced, so each process's copy drifts away from the others'.
  std::unordered_set<const at::TensorImpl*> prepared;
  for (const auto& [module, engine] : models_)
    for (const auto& p : module->parameters()) prepared.insert(p.unsafeGetTensorImpl());
  std::unordered_set<const torch::autograd::Node*> orphans;
  std::vector<int64_t> shape;
  for (const auto& opt : optimizer_order_)
    for (const auto& group : opt->optimizer()->param_groups())
      for (const auto& p : group.params())
        if (p.requires_grad() && !prepared.count(p.unsafeGetTensorImpl())) {
          orphans.insert(torch::autograd::impl::grad_accumulator(p).get());
          if (shape.empty()) shape = p.sizes().vec();
        }
  if (orphans.empty() || !detail::any_graph_node(loss, [&](const torch::autograd::Node& node) {
        return orphans.count(&node) != 0;
      }))
    return;
  detail::warn_once(
      "unprepared model",
      "backward: the loss reaches parameters that a prepared optimizer trains but no prepared "
      "model holds (the first of shape " +
          detail::shape_string(shape) + "), in a job of " + std::to_string(num_processes()) +
          " processes: their gradients are not averaged over the processes, so each process's "
          "weights drift apart. Prepare the model that holds them: model = "
          "accelerator.prepare(model)");
}

void Accelerator::backward(const at::Tensor& loss, const BackwardOptions& options) {
  const MixedPrecision precision = mixed_precision();
  if (!autocast_checked_ && precision != MixedPrecision::NO && loss.grad_fn()) {
    autocast_checked_ = true;
    const auto low = precision == MixedPrecision::BF16 ? at::kBFloat16 : at::kHalf;
    if (!graph_has_dtype(loss, low) && is_local_main_process())
      std::cerr << "accelerate: warning: backward: mixed_precision is '"
                << (precision == MixedPrecision::BF16 ? "bf16" : "fp16")
                << "' but no operation of this loss ran in " << c10::toString(low)
                << ": the forward pass ran in full precision. The model is not wrapped, so run "
                   "it inside the autocast guard: { auto amp = accelerator.autocast(); loss = "
                   "loss_fn(model->forward(x), y); }"
                << std::endl;
  }
  // Looked for in the first backward passes only: a graph walk is not free.
  if (num_processes() > 1 && unprepared_checks_ < 16) {
    ++unprepared_checks_;
    warn_if_unprepared_model(loss);
  }
  const int steps = gradient_state_->num_steps();
  at::Tensor scaled = steps > 1 ? loss / steps : loss;
  // Each engine looks at the loss itself (only the models it reaches are synchronised).
  if (num_processes() > 1)
    for (auto& [module, engine] : models_) engine->before_backward(scaled);
  if (scaler_) scaled = scaler_->scale(scaled);
  const auto run = [&] { scaled.backward({}, options.retain_graph(), options.create_graph()); };
  if (num_processes() == 1 || models_.empty()) {
    run();
    return;
  }
  state_.collective_trace()->enter("backward", /*counted=*/false);
  try {
    run();
    for (auto& [module, engine] : models_) engine->after_backward();
  } catch (const InvalidArgument&) {
    throw;  // the engine's own verdict (e.g. a parameter without gradient), already clear
  } catch (const std::exception& e) {
    // A timeout or a lost peer in the DDP all-reduce: say where every process is.
    detail::rethrow_collective_error(state_, "backward (the DDP gradient all-reduce)", e);
  }
}

double Accelerator::clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                                    double norm_type) {
  unscale_gradients();
  return torch::nn::utils::clip_grad_norm_(parameters, max_norm, norm_type);
}

void Accelerator::clip_grad_value_(const std::vector<at::Tensor>& parameters, double clip_value) {
  unscale_gradients();
  torch::nn::utils::clip_grad_value_(parameters, clip_value);
}

at::Tensor Accelerator::gather_for_metrics_one(const at::Tensor& tensor) const {
  at::Tensor all = gather(tensor);
  const int64_t rows = metrics_rows(all.size(0));
  return rows == all.size(0) ? all : all.narrow(0, 0, rows);
}

int64_t Accelerator::metrics_rows(int64_t gathered) const {
  if (!gradient_state_->end_of_dataloader()) return gathered;
  const int64_t remainder = gradient_state_->remainder();
  return remainder > 0 && remainder < gathered ? remainder : gathered;
}

std::string Accelerator::profile_path(const std::string& path) const {
  if (path.empty()) throw InvalidArgument("accelerate: profile: the trace file name is empty");
  namespace fs = std::filesystem;
  const std::string rank = std::to_string(process_index());
  // A folder: Accelerate's output_trace_dir and its PROFILE_PATTERN_NAME, profile_<rank>.json.
  if (path.back() == '/' || fs::is_directory(path))
    return (fs::path(path) / ("profile_" + rank + ".json")).string();
  if (num_processes() == 1) return path;
  const fs::path file(path);
  return (file.parent_path() / (file.stem().string() + "_" + rank + file.extension().string()))
      .string();
}

}  // namespace accelerate
