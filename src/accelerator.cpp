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
#include "helpers.h"
#include "json_file.h"
#include "warnings.h"

namespace accelerate {

StateOptions AcceleratorOptions::state_options() const {
  StateOptions options;
  if (timeout_) options.timeout(*timeout_);
  if (join_timeout_) options.join_timeout(*join_timeout_);
  if (cpu_) options.cpu(*cpu_);
  if (mixed_precision_) options.mixed_precision(*mixed_precision_);
  if (environment_) options.environment(*environment_);
  if (store_) options.store(store_);
  if (backend_) options.backend(*backend_);
  if (num_cpu_threads_per_process_)
    options.num_cpu_threads_per_process(*num_cpu_threads_per_process_);
  return options;
}

AcceleratorOptions& AcceleratorOptions::num_cpu_threads_per_process(int threads) {
  if (threads < 1)
    throw InvalidArgument("accelerate: AcceleratorOptions::num_cpu_threads_per_process: " +
                          std::to_string(threads) + " is not a number of threads (>= 1)");
  num_cpu_threads_per_process_ = threads;
  return *this;
}

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
      iteration_(options.project_config().iteration()) {
  if (state_.mixed_precision() == MixedPrecision::FP16) {
    // As Accelerate: fp16 needs a GPU (CPU autocast of LibTorch 1.13 has no float16).
    if (!device().is_cuda())
      throw InvalidArgument("accelerate: mixed_precision 'fp16' needs a CUDA device, and " +
                            state_.describe() + " runs on " + device().str() +
                            "; use 'bf16' on the CPU");
    scaler_ = std::make_shared<GradScaler>(options.grad_scaler());
    checkpoint_scaler();
  }
  if (!options.log_with().empty() && logging_dir().empty())
    throw InvalidArgument("accelerate: logging with " + options.log_with().front() +
                          " needs a folder: set project_dir or logging_dir in "
                          "ProjectConfiguration");
  for (const auto& tracker : options.custom_trackers())
    if (!tracker) throw InvalidArgument("accelerate: log_with: null tracker");
  // "generator" is each prepared loader's own generator, synchronised when it has one.
  check_rng_types(state_, options.rng_types(), /*has_generator=*/true, "Accelerator: rng_types");
}

AcceleratorOptions& AcceleratorOptions::log_with(const std::string& names) {
  std::stringstream in(names);
  std::string name;
  while (std::getline(in, name, ',')) {
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name.empty()) continue;
    if (name == "all") {
      log_with_ = {"tensorboard", "csv"};
      continue;
    }
    check_tracker_name(name);
    if (std::find(log_with_.begin(), log_with_.end(), name) == log_with_.end())
      log_with_.push_back(name);
  }
  return *this;
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
  add_checkpointed(
      "optimizers", next_file("optimizers", "optimizer", ".bin"),
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
  add_checkpointed(
      "schedulers", next_file("schedulers", "scheduler", ".json"),
      [prepared](const std::string& path) { detail::write_json(path, prepared->state_dict()); },
      [prepared](const std::string& path) {
        prepared->load_state_dict(detail::read_integers(path));
      });
  return prepared;
}

ShardingOptions Accelerator::sharding_options(const std::optional<at::Generator>& generator) {
  ShardingOptions sharding;
  if (options_.dispatch_batches()) sharding.dispatch_batches(*options_.dispatch_batches());
  return sharding.num_processes(num_processes())
      .process_index(process_index())
      .split_batches(options_.split_batches())
      .even_batches(options_.even_batches())
      .device(device())
      .gradient_state(gradient_state_)
      // One shuffling seed for all processes: process 0's, unless the loader has its own.
      .seed(broadcast_object(at::detail::getDefaultCPUGenerator().current_seed()))
      // Dispatching loaders receive process 0's batches through this State.
      .broadcast([state = &state_](at::Tensor t) { return accelerate::broadcast(*state, t, 0); })
      .broadcast_bytes([state = &state_](const std::string& bytes) {
        return accelerate::broadcast_bytes(*state, bytes, 0);
      })
      .on_pass_begin(rng_synchronizer(generator));
}

std::function<void()> Accelerator::rng_synchronizer(
    const std::optional<at::Generator>& generator) const {
  // "generator" is the loader's own generator: synchronised when it has one (Accelerate drops
  // the type when the sampler has no generator).
  std::vector<std::string> types;
  for (const std::string& type : options_.rng_types())
    if ((type != "generator" || generator) &&
        std::find(types.begin(), types.end(), type) == types.end())
      types.push_back(type);
  if (types.empty() || num_processes() == 1) return nullptr;
  // The loader must not outlive the Accelerator that prepared it (its batches, gradient state
  // and collectives all belong to it).
  const State* state = &state_;
  return [state, types, generator] { synchronize_rng_states(*state, types, generator); };
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
  checkpointed_.clear();
  loaders_.clear();
  if (scaler_) checkpoint_scaler();
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
  if (!gradient_state_->end_of_dataloader()) return all;
  const int64_t remainder = gradient_state_->remainder();
  if (remainder <= 0 || remainder >= all.size(0)) return all;
  return all.narrow(0, 0, remainder);
}

NoSyncGuard::NoSyncGuard(std::vector<DistributedDataParallel*> engines, bool disable) {
  if (!disable) return;
  for (DistributedDataParallel* e : engines) {
    if (!e) continue;
    saved_.emplace_back(e, e->require_backward_grad_sync());
    e->set_require_backward_grad_sync(false);
  }
}

NoSyncGuard::~NoSyncGuard() {
  for (auto& [engine, value] : saved_) engine->set_require_backward_grad_sync(value);
}

namespace {

// Gives each loader back the even_batches it had before join_uneven_inputs.
void restore_even_batches(
    const std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>>& loaders) {
  for (const auto& [loader, value] : loaders) loader->set_even_batches(value);
}

// What a guard's destructor does when its collective fails: destructors must not throw, and a
// process that cannot reach its peers must not go on as if it had; the launcher (or the peers'
// timeout) stops the others.
[[noreturn]] void exit_from_destructor(const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace

JoinGuard Accelerator::join_uneven_inputs(
    const std::vector<std::shared_ptr<torch::nn::Module>>& models,
    std::optional<bool> even_batches) {
  if (models.empty())
    throw InvalidArgument(
        "accelerate: join_uneven_inputs: no model given (pass the prepared "
        "model: join_uneven_inputs({model}))");
  DistributedDataParallel* engine = nullptr;
  for (size_t i = 0; i < models.size(); ++i) {
    if (!models[i])
      throw InvalidArgument("accelerate: join_uneven_inputs: model " + std::to_string(i) +
                            " is a null pointer");
    DistributedDataParallel* e = engine_of(models[i].get());
    if (!e)
      throw InvalidArgument("accelerate: join_uneven_inputs: model " + std::to_string(i) +
                            " was not prepared (pass models returned by accelerator.prepare)");
    if (engine && e != engine)
      throw InvalidArgument(
          "accelerate: join_uneven_inputs: one model at a time: the steps of two "
          "synchronised models cannot be shadowed apart (got two prepared models)");
    engine = e;
  }
  // As Accelerate: with one process, nothing at all (not even the even_batches override).
  if (num_processes() == 1) return JoinGuard(nullptr, {});
  std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> restore;
  if (even_batches) {
    for (const auto& loader : loaders_) {
      restore.emplace_back(loader, loader->sharding().even_batches());
      loader->set_even_batches(*even_batches);
    }
  }
  const bool enable = !even_batches.value_or(options_.even_batches());
  if (enable) {
    try {
      engine->begin_join();
    } catch (...) {  // a refusal (DdpEngine::Reducer) leaves the loaders as they were
      restore_even_batches(restore);
      throw;
    }
  }
  return JoinGuard(enable ? engine : nullptr, std::move(restore));
}

JoinGuard::JoinGuard(DistributedDataParallel* engine,
                     std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> loaders)
    : engine_(engine), loaders_(std::move(loaders)), exceptions_(std::uncaught_exceptions()) {}

void JoinGuard::join() {
  if (done_) return;
  done_ = true;
  struct Restore {
    JoinGuard* self;
    ~Restore() { restore_even_batches(self->loaders_); }
  } restore{this};
  if (engine_) engine_->end_join();
}

JoinGuard::~JoinGuard() {
  if (done_) return;
  if (std::uncaught_exceptions() > exceptions_) {
    // As PyTorch's Join.__exit__: an exception leaves the scope without the collectives.
    done_ = true;
    if (engine_) engine_->abandon_join();
    restore_even_batches(loaders_);
    return;
  }
  try {
    join();
  } catch (const std::exception& e) {
    exit_from_destructor(e);
  }
}

MainProcessFirstGuard::MainProcessFirstGuard(const State& state, bool local)
    : state_(state),
      first_(local ? state.is_local_main_process() : state.is_main_process()),
      exceptions_(std::uncaught_exceptions()) {
  if (!first_) state_.wait_for_everyone();
}

MainProcessFirstGuard::~MainProcessFirstGuard() {
  // While an exception leaves the scope, skip the barrier: the peers are stopped by the
  // launcher (or time out) rather than this process hanging here.
  if (!first_ || std::uncaught_exceptions() > exceptions_) return;
  try {
    state_.wait_for_everyone();
  } catch (const std::exception& e) {
    exit_from_destructor(e);
  }
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
