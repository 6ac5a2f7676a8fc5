// accelerate/accelerator.h: the `Accelerator`, the one object a training program talks to.
//
// It resolves where this process stands in the job once (see state.h), places work on the
// right device, and offers Accelerate's process control (print once, run on one process,
// barriers, triggers) and collectives (gather, reduce, broadcast, ...). This header shows the
// API: its options are in accelerator_options.h, the guards it returns in sync_guards.h
// (no_sync, accumulate, join_uneven_inputs) and state.h (main_process_first), the save_state
// hooks in checkpoint_hooks.h; what save_state writes lives in src/ (checkpoint_registry.h).
//
// Example:
//   #include <accelerate/accelerate.h>
//   namespace acc = accelerate;
//   int main() {
//     acc::Accelerator accelerator(acc::AcceleratorOptions().cpu(true));
//     accelerator.print("running on", accelerator.num_processes(), "processes");
//     auto total = accelerator.reduce(torch::ones({1}), "sum");  // == num_processes()
//     accelerator.on_main_process([] { std::cout << "once per job\n"; })();
//   }
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "accelerate/accelerator_options.h"
#include "accelerate/checkpoint_hooks.h"
#include "accelerate/data_loader.h"
#include "accelerate/ddp.h"
#include "accelerate/errors.h"
#include "accelerate/format.h"
#include "accelerate/gradient_state.h"
#include "accelerate/handles.h"
#include "accelerate/mixed_precision.h"
#include "accelerate/model_files.h"
#include "accelerate/ops.h"
#include "accelerate/optimizer.h"
#include "accelerate/options.h"
#include "accelerate/profiler.h"
#include "accelerate/scheduler.h"
#include "accelerate/state.h"
#include "accelerate/sync_guards.h"
#include "accelerate/tracking.h"

namespace accelerate {

namespace detail {
class CheckpointRegistry;
}  // namespace detail

/// The main entry point of accelerate-cpp, as `accelerate.Accelerator` in Python.
/// Not copyable or movable: guards and prepared objects refer to it.
class Accelerator {
 public:
  /// Resolves the environment and joins the other processes of the job. Throws
  /// std::invalid_argument for invalid options or environment, std::runtime_error when the
  /// processes cannot meet within the join timeout.
  explicit Accelerator(const AcceleratorOptions& options = AcceleratorOptions());
  ~Accelerator();
  Accelerator(const Accelerator&) = delete;
  Accelerator& operator=(const Accelerator&) = delete;

  // ---- where this process stands ----
  /// The device tensors and models are placed on.
  c10::Device device() const { return state_.device(); }
  /// Global index of this process.
  int process_index() const { return state_.process_index(); }
  /// Index of this process on its machine.
  int local_process_index() const { return state_.local_process_index(); }
  /// Number of processes in the job.
  int num_processes() const { return state_.num_processes(); }
  /// True on process 0.
  bool is_main_process() const { return state_.is_main_process(); }
  /// True on the first process of each machine.
  bool is_local_main_process() const { return state_.is_local_main_process(); }
  /// True on the process with the highest index.
  bool is_last_process() const { return state_.is_last_process(); }
  /// NO, MULTI_CPU or MULTI_GPU.
  DistributedType distributed_type() const { return state_.distributed_type(); }
  /// The resolved mixed-precision mode.
  MixedPrecision mixed_precision() const { return state_.mixed_precision(); }
  /// The resolved state (process group, launch information).
  const State& state() const { return state_; }

  // ---- process control ----
  /// Prints its arguments, separated by spaces and ended by a newline, on the local main
  /// process only: once per machine, as Accelerate's `print`. Stream manipulators (std::fixed,
  /// std::setprecision(n), std::setw(n), std::hex, ...) apply to the arguments after them and
  /// add no space of their own; for Python's f-string formatting, print an accelerate::format.
  ///
  /// Example:
  ///   accelerator.print("epoch", 3, "loss", std::fixed, std::setprecision(4), 0.25);
  ///   // epoch 3 loss 0.2500
  ///   accelerator.print(acc::format("epoch {} loss {:.4f}", 3, 0.25));  // the same
  template <typename... Args>
  void print(const Args&... args) const {
    if (!is_local_main_process()) return;
    std::ostringstream os;
    bool first = true;
    auto put = [&](const auto& arg) {
      if constexpr (!detail::is_stream_manipulator_v<std::decay_t<decltype(arg)>>) {
        if (!first) os.put(' ');  // unformatted, so that a pending std::setw is for the argument
        first = false;
      }
      os << arg;
    };
    (put(args), ...);
    os.put('\n');
    std::cout << os.str() << std::flush;
  }

  /// Returns a callable that runs `fn` on the main process only. On the others it returns
  /// nothing (void) or an empty std::optional.
  /// Example: auto save = accelerator.on_main_process([&] { write_report(); }); save();
  template <typename F>
  auto on_main_process(F fn) const {
    return run_if([this] { return is_main_process(); }, std::move(fn));
  }
  /// Returns a callable that runs `fn` only on the first process of each machine.
  template <typename F>
  auto on_local_main_process(F fn) const {
    return run_if([this] { return is_local_main_process(); }, std::move(fn));
  }
  /// Returns a callable that runs `fn` only on the last process.
  template <typename F>
  auto on_last_process(F fn) const {
    return run_if([this] { return is_last_process(); }, std::move(fn));
  }
  /// Returns a callable that runs `fn` only on the process of global index `process_index`.
  template <typename F>
  auto on_process(F fn, int process_index) const {
    return run_if([this, process_index] { return this->process_index() == process_index; },
                  std::move(fn));
  }
  /// Returns a callable that runs `fn` only on the process of local index
  /// `local_process_index` of each machine.
  template <typename F>
  auto on_local_process(F fn, int local_process_index) const {
    return run_if(
        [this, local_process_index] { return this->local_process_index() == local_process_index; },
        std::move(fn));
  }

  /// Guard: the main process runs the scope first, then the others.
  /// Example: { auto first = accelerator.main_process_first(); write_report(); }
  MainProcessFirstGuard main_process_first() const { return MainProcessFirstGuard(state_, false); }
  /// Guard: the first process of each machine runs the scope first, then the others.
  MainProcessFirstGuard local_main_process_first() const {
    return MainProcessFirstGuard(state_, true);
  }
  /// Callable form: runs `fn` on the main process first, then on the others, and returns its
  /// result. A failed barrier throws.
  template <typename F>
  auto main_process_first(F&& fn) const {
    return run_first(is_main_process(), std::forward<F>(fn));
  }
  /// Callable form of `local_main_process_first()`.
  template <typename F>
  auto local_main_process_first(F&& fn) const {
    return run_first(is_local_main_process(), std::forward<F>(fn));
  }

  /// Blocks until every process reaches this call (a barrier). No-op with one process.
  void wait_for_everyone() const { state_.wait_for_everyone(); }

  /// Sets this process's trigger flag (e.g. to stop early when a condition is met).
  void set_trigger() { trigger_ = true; }
  /// True on every process when any process called `set_trigger()` since the last check;
  /// resets the flag. A collective: call it on every process.
  bool check_trigger();

  // ---- training loop ----
  /// Prepares any mix of models (std::shared_ptr to a torch::nn::Module subclass, or a
  /// TORCH_MODULE holder such as `Net` after `TORCH_MODULE(Net)`), optimizers
  /// (std::shared_ptr to a torch::optim::Optimizer), data loaders (acc::DataLoader by value
  /// or std::shared_ptr) and schedulers (std::shared_ptr to a torch::optim::LRScheduler, e.g.
  /// from get_linear_schedule_with_warmup), in any order, and returns a std::tuple of the
  /// prepared objects in the same order: models as the same handle (pointer or holder) to the
  /// same module, optimizers as std::shared_ptr<AcceleratedOptimizer>, schedulers as
  /// std::shared_ptr<AcceleratedScheduler>, loaders as a std::shared_ptr to the sharded loader.
  /// With one object it returns that prepared object itself, as Accelerate. Anything else (a
  /// module or optimizer by value, a raw or unique pointer, a torch::data data loader) is one
  /// compile error saying what to pass instead (see handles.h).
  ///
  /// Example:
  ///   auto [m, opt, dl, sched] = accelerator.prepare(model, optimizer, loader, scheduler);
  ///   auto dl2 = accelerator.prepare(eval_loader);
  ///   torch::nn::Linear linear(4, 1);                    // a TORCH_MODULE holder
  ///   torch::nn::Linear same = accelerator.prepare(linear);  // the same module
  template <typename... Objects>
  auto prepare(Objects&&... objects) {
    static_assert(sizeof...(Objects) > 0, "prepare needs at least one object");
    // As Accelerate: models, optimizers and loaders first; schedulers after, since they
    // attach to the prepared optimizers. Braced initialisation keeps left-to-right order.
    auto first = std::tuple<decltype(prepare_first(std::forward<Objects>(objects)))...>{
        prepare_first(std::forward<Objects>(objects))...};
    if constexpr (sizeof...(Objects) == 1) {
      return prepare_second(std::get<0>(first));
    } else {
      return std::apply(
          [this](auto&... items) {
            return std::tuple<decltype(prepare_second(items))...>{prepare_second(items)...};
          },
          first);
    }
  }

  /// Prepares an optimizer: its state moves to device(); step() and zero_grad() act only
  /// when gradients are synchronised. Preparing it again returns the same wrapper.
  std::shared_ptr<AcceleratedOptimizer> prepare_optimizer(
      std::shared_ptr<torch::optim::Optimizer> optimizer);
  /// Prepares a scheduler: it steps only when the optimizer really stepped, and (unless
  /// split_batches or step_scheduler_with_optimizer(false)) num_processes() times per call.
  std::shared_ptr<AcceleratedScheduler> prepare_scheduler(
      std::shared_ptr<torch::optim::LRScheduler> scheduler);
  /// Prepares a data loader: sharded over the processes, batches on device(), reshuffled
  /// each epoch with a seed shared by all processes, and known end (sync_gradients,
  /// gather_for_metrics).
  template <typename Dataset>
  std::shared_ptr<DataLoader<Dataset>> prepare_data_loader(
      const std::shared_ptr<DataLoader<Dataset>>& loader) {
    if (!loader) throw InvalidArgument("accelerate: prepare: the data loader is a null pointer");
    if (loader->prepared()) return loader;  // already prepared
    auto prepared = loader->shard(sharding_options(), data_context_);
    checkpoint_loader(prepared);
    loaders_.push_back(prepared);
    return prepared;
  }
  /// Prepares a data loader given by value.
  template <typename Dataset>
  std::shared_ptr<DataLoader<Dataset>> prepare_data_loader(const DataLoader<Dataset>& loader) {
    return prepare_data_loader(std::make_shared<DataLoader<Dataset>>(loader));
  }
  /// A copy of a prepared loader that skips its first `num_batches` batches (to resume in
  /// the middle of an epoch).
  template <typename Dataset>
  std::shared_ptr<DataLoader<Dataset>> skip_first_batches(
      const std::shared_ptr<DataLoader<Dataset>>& loader, int64_t num_batches) const {
    return loader->skip_first_batches(num_batches);
  }

  /// Prepares a model: moves it to device(), broadcasts parameters and buffers from process
  /// 0, and with several processes attaches the DDP engine. `model`: a std::shared_ptr to a
  /// torch::nn::Module subclass or a TORCH_MODULE holder; returns the same handle (the user
  /// keeps calling model->forward(...)). Preparing it again returns it unchanged.
  /// InvalidArgument for a null pointer or an empty holder.
  template <typename Model>
  auto prepare_model(Model&& model) {
    using M = std::decay_t<Model>;
    if constexpr (detail::kIsModelHandle<M>) {
      auto module = detail::module_ptr(model);
      if (!module && detail::IsModuleHolder<M>::value)
        throw InvalidArgument("accelerate: prepare: the model is an empty TORCH_MODULE holder");
      register_model(module);
      return M(std::forward<Model>(model));
    } else if constexpr (detail::IsSharedPtr<M>::value) {
      static_assert(detail::kDependentFalse<M>,
                    "accelerate: prepare_model needs a model: a std::shared_ptr to a "
                    "torch::nn::Module subclass or a TORCH_MODULE holder");
      return detail::NotPrepared{};
    } else {
      return detail::refuse_prepare<M>();
    }
  }
  /// The model as the user wrote it: the same handle (std::shared_ptr or TORCH_MODULE
  /// holder), since nothing wraps it.
  template <typename Model>
  Model unwrap_model(Model model) const {
    static_assert(detail::kIsModelHandle<Model>,
                  "accelerate: unwrap_model: pass the model prepare returned (a std::shared_ptr "
                  "to the module or its TORCH_MODULE holder)");
    return model;
  }

  /// `loss.backward()`, with the loss divided by the accumulation steps (and scaled under
  /// fp16); the gradients of the prepared models it reaches are averaged over the processes
  /// unless no_sync / accumulate says otherwise. Under mixed precision, the first backward
  /// warns (once, on stderr) when no part of the loss was computed in the low precision: the
  /// model cannot be wrapped, so its forward must run inside `accelerator.autocast()`.
  void backward(const at::Tensor& loss, const BackwardOptions& options = BackwardOptions());

  /// Guard of one accumulation micro-step (Python's `with accelerator.accumulate(model):`):
  /// decides sync_gradients() (every num_steps micro-steps and at the end of the data
  /// loader) and, when not syncing, keeps the models' gradients local. `models`: as prepare
  /// returned them (std::shared_ptr or TORCH_MODULE holder), or the modules themselves.
  template <typename... Models>
  NoSyncGuard accumulate(const Models&... models) {
    static_assert((detail::kIsModelRef<Models> && ...),
                  "accelerate: accumulate: pass the prepared models (std::shared_ptr<Net>, a "
                  "TORCH_MODULE holder, or the module itself)");
    do_sync();
    const bool allow =
        sync_gradients() || (num_processes() > 1 && gradient_state_->plugin().sync_each_batch());
    return NoSyncGuard({engine_of(detail::module_address(models))...}, !allow);
  }
  /// Guard: backward passes of `models` do not synchronise gradients while it lives.
  /// `models`: as for accumulate().
  template <typename... Models>
  NoSyncGuard no_sync(const Models&... models) {
    static_assert((detail::kIsModelRef<Models> && ...),
                  "accelerate: no_sync: pass the prepared models (std::shared_ptr<Net>, a "
                  "TORCH_MODULE holder, or the module itself)");
    return NoSyncGuard({engine_of(detail::module_address(models))...}, true);
  }
  /// Guard under which processes may run different numbers of steps (Accelerate's
  /// `join_uneven_inputs(joinables, even_batches=None)`, over PyTorch's `Join`). `models`: the
  /// prepared model being trained (one model with a DDP engine; InvalidArgument for an empty
  /// list, a null or unprepared model, or two models with engines). `even_batches`, when
  /// given, replaces every prepared loader's even_batches while the guard lives. Joining is on
  /// when the resulting even_batches (the override, else the Accelerator's) is false: each
  /// synchronising backward then tells the processes that have run out of data, and these
  /// shadow its collectives with zero gradients when they leave the guard, so nobody hangs and
  /// gradients are divided by the full number of processes (PyTorch's
  /// divide_by_initial_world_size). With even_batches true, or one process, it only restores
  /// the loaders. Only gradient synchronisation is shadowed: other collectives in the loop
  /// (gather, wait_for_everyone) must not run unevenly. DdpEngine::Reducer: InvalidArgument.
  ///
  /// Example:
  ///   {
  ///     auto join = accelerator.join_uneven_inputs({model}, /*even_batches=*/false);
  ///     for (auto& batch : *loader) {
  ///       accelerator.backward(loss_fn(model->forward(batch.data), batch.target));
  ///       optimizer->step();
  ///       optimizer->zero_grad();
  ///     }
  ///   }  // waits here for the processes with more batches
  JoinGuard join_uneven_inputs(const std::vector<std::shared_ptr<torch::nn::Module>>& models,
                               std::optional<bool> even_batches = std::nullopt);
  /// join_uneven_inputs with a braced list of prepared models of any handle kind
  /// (std::shared_ptr or TORCH_MODULE holder): `join_uneven_inputs({net}, false)`.
  JoinGuard join_uneven_inputs(std::initializer_list<detail::ModelPtr> models,
                               std::optional<bool> even_batches = std::nullopt) {
    std::vector<std::shared_ptr<torch::nn::Module>> list;
    for (const auto& model : models) list.push_back(model.ptr);
    return join_uneven_inputs(list, even_batches);
  }
  /// True when this step synchronises gradients and prepared optimizers really step.
  bool sync_gradients() const { return gradient_state_->sync_gradients(); }
  /// Number of gradient accumulation steps.
  int gradient_accumulation_steps() const { return gradient_state_->num_steps(); }
  /// Changes the number of gradient accumulation steps from the next micro-step on
  /// (Accelerate's `accelerator.gradient_accumulation_steps = n`); InvalidArgument when < 1.
  void set_gradient_accumulation_steps(int steps) { gradient_state_->set_num_steps(steps); }
  /// The shared step state (used by prepared objects).
  const std::shared_ptr<GradientState>& gradient_state() const { return gradient_state_; }
  /// Micro-steps counted by `accumulate` (Accelerate's `accelerator.step`).
  int64_t step() const { return step_; }

  /// Guard of a mixed-precision region (Python's `with accelerator.autocast():`): with
  /// mixed_precision "bf16" or "fp16", eligible operations inside run in that dtype on
  /// device(); with "no" it changes nothing. Hold it around the forward pass and the loss
  /// (LibTorch modules cannot be wrapped as Accelerate wraps model.forward in Python).
  /// Example: { auto amp = accelerator.autocast(); loss = loss_fn(model->forward(x), y); }
  AutocastGuard autocast() const;
  /// Divides the gradients of every prepared optimizer by the fp16 loss scale (done by
  /// clip_grad_norm_ / clip_grad_value_ and by the optimizers' step(); call it yourself only
  /// to look at true gradients). No-op without fp16. At most once per optimizer step.
  void unscale_gradients();
  /// The fp16 gradient scaler, or nullptr without fp16.
  const std::shared_ptr<GradScaler>& scaler() const { return scaler_; }

  /// Clips the gradients of `parameters` to a total `norm_type`-norm of at most `max_norm`
  /// and returns the total norm before clipping (torch::nn::utils::clip_grad_norm_).
  double clip_grad_norm_(const std::vector<at::Tensor>& parameters, double max_norm,
                         double norm_type = 2.0);
  /// Clamps every gradient of `parameters` to [-clip_value, clip_value].
  void clip_grad_value_(const std::vector<at::Tensor>& parameters, double clip_value);

  /// Gathers tensors for metrics: like gather(), but on the last batch of a prepared data
  /// loader drops the samples that even_batches repeated to fill the processes' batches, so
  /// the result has exactly one row per sample of the data set. One tensor in, one out;
  /// several in, a std::tuple out.
  template <typename... Tensors>
  auto gather_for_metrics(const Tensors&... tensors) const {
    static_assert(sizeof...(Tensors) > 0, "gather_for_metrics needs at least one tensor");
    if constexpr (sizeof...(Tensors) == 1)
      return gather_for_metrics_one(tensors...);
    else
      return std::make_tuple(gather_for_metrics_one(tensors)...);
  }
  /// Gathers a list of objects for metrics (Accelerate's gather_for_metrics of non-tensor data,
  /// e.g. decoded strings): this process's items concatenated over the processes (as
  /// gather_object), with the items even_batches repeated on the last batch of a prepared
  /// loader dropped. Example: auto labels = accelerator.gather_for_metrics(batch_labels);
  template <typename T>
  std::vector<T> gather_for_metrics(const std::vector<T>& items) const {
    std::vector<T> all = gather_object(items);
    all.resize(static_cast<size_t>(metrics_rows(static_cast<int64_t>(all.size()))));
    return all;
  }

  // ---- saving and loading ----
  /// Saves the model's state dict (the keys Python's state_dict() would use) to `dir`:
  /// model.safetensors, shards + index past max_shard_size, or pytorch_model.bin without
  /// safe serialization. Written by the main process only, once every process got here.
  /// `model`: a std::shared_ptr, a TORCH_MODULE holder or the module itself; InvalidArgument
  /// for a null pointer or an empty holder.
  template <typename Model>
  void save_model(const Model& model, const std::string& dir,
                  const SaveModelOptions& options = SaveModelOptions()) {
    static_assert(detail::kIsModelRef<Model>,
                  "accelerate: save_model: pass the model (std::shared_ptr<Net>, a TORCH_MODULE "
                  "holder, or the module itself)");
    const torch::nn::Module* module = detail::module_address(model);
    if (!module) throw InvalidArgument("accelerate: save_model: the model is a null pointer");
    save_model_impl(*module, dir, options);
  }
  /// Saves a tensor (main process only): safetensors when `path` ends in .safetensors, else
  /// the pickle format Python's torch.load reads.
  void save(const at::Tensor& tensor, const std::string& path) const;
  /// Saves a map of tensors (main process only), as above.
  void save(const std::map<std::string, at::Tensor>& tensors, const std::string& path) const;

  /// Saves everything needed to resume exactly: every prepared model, optimizer and
  /// scheduler, the RNG states of every process, each prepared data loader's position, the
  /// step counter and the registered objects. Written to a temporary folder that is renamed
  /// into place, so a crash during a save leaves the previous checkpoint loadable. With
  /// automatic naming (ProjectConfiguration) or no folder, writes the next checkpoint_N, as
  /// Accelerate. Every save advances the project's iteration. The size and checksum of every
  /// file, whichever process wrote it, are recorded in the folder's accelerator_state.json
  /// (ProjectConfiguration::checksums), computed while the file is written. A collective.
  void save_state(const std::string& output_dir = "");
  /// Restores what save_state wrote; with no folder, the newest automatic checkpoint. Prepared
  /// data loaders then continue from the saved position. Every file this process will read is
  /// first verified against the checksum save_state recorded (ProjectConfiguration::checksums),
  /// and nothing is loaded unless every process found its files intact. Throws
  /// std::runtime_error naming the file and the problem when the checkpoint does not match
  /// what was prepared, or a file is damaged (expected against got checksum); an error on one
  /// process is thrown on every process. A collective.
  void load_state(const std::string& input_dir = "");
  /// Adds an object to save_state / load_state. T is a torch::nn::Module (saved as
  /// safetensors), or has `S state_dict() const` and `void load_state_dict(const S&)` for a
  /// type S that ObjectCodec can write (numbers, strings, vectors, maps, ...; object_bytes.h),
  /// saved as `custom_checkpoint_<i>.bin`.
  template <typename T>
  void register_for_checkpointing(std::shared_ptr<T> object) {
    if (!object) throw InvalidArgument("accelerate: register_for_checkpointing: null object");
    if constexpr (std::is_base_of_v<torch::nn::Module, T>) {
      checkpoint_module("custom_objects", "custom_checkpoint_", object);
    } else {
      using S = std::decay_t<decltype(object->state_dict())>;
      checkpoint_custom([object] { return to_object_bytes(object->state_dict()); },
                        [object](const std::string& bytes, const std::string& file) {
                          object->load_state_dict(from_object_bytes<S>(bytes, file));
                        });
    }
  }
  /// Adds a hook that save_state calls on every process, in the order they were registered,
  /// after the models' state dicts are taken and before anything is written (Accelerate's
  /// `register_save_state_pre_hook`): e.g. to write a configuration beside the weights, or to
  /// change what is written for a model. Returns a handle whose remove() takes it out.
  ///
  /// Example:
  ///   auto handle = accelerator.register_save_state_pre_hook(
  ///       [](const auto& models, std::vector<acc::StateDict>& weights, const std::string& dir) {
  ///         std::ofstream(dir + "/config.json") << "{}";
  ///       });
  ///   accelerator.save_state("ckpt");
  ///   handle.remove();
  HookHandle register_save_state_pre_hook(SaveStatePreHook hook);
  /// Adds a hook that load_state calls on every process, in the order they were registered,
  /// once the checkpoint is found to match and before anything is loaded (Accelerate's
  /// `register_load_state_pre_hook`). A model the hook sets to nullptr in the list is not
  /// loaded by load_state. Returns a handle whose remove() takes it out.
  HookHandle register_load_state_pre_hook(LoadStatePreHook hook);
  /// The model's full state dict as save_model would write it: the keys Python's
  /// `state_dict()` uses, every tensor on the CPU (Accelerate's `get_state_dict`). A model on
  /// the CPU shares its storage with the returned tensors: clone before changing them.
  /// `unwrap` is there for Accelerate's signature: a prepared model is not wrapped here, so
  /// both give the same dict.
  /// Example: auto weights = accelerator.get_state_dict(model);  // [0].first: "fc1.weight"
  /// `model`: a std::shared_ptr, a TORCH_MODULE holder or the module itself.
  template <typename Model>
  StateDict get_state_dict(const Model& model, bool unwrap = true) const {
    static_assert(detail::kIsModelRef<Model>,
                  "accelerate: get_state_dict: pass the model (std::shared_ptr<Net>, a "
                  "TORCH_MODULE holder, or the module itself)");
    (void)unwrap;
    const torch::nn::Module* module = detail::module_address(model);
    if (!module) throw InvalidArgument("accelerate: get_state_dict: the model is a null pointer");
    return cpu_state_dict(*module);
  }

  /// The project configuration given in the options, with the iteration of the next
  /// automatic checkpoint (which save_state and load_state advance).
  ProjectConfiguration project_configuration() const {
    return ProjectConfiguration(options_.project_config()).iteration(iteration_);
  }

  // ---- profiling (see profiler.h) ----
  /// Guard: records what this process runs while it lives (forward, backward, the gradient
  /// all-reduce, the optimizer step; LibTorch's profiler) and then writes a Chrome trace, as
  /// Accelerate's `with accelerator.profile():` with `ProfileKwargs(output_trace_dir=...)`.
  /// The file: `path` with one process; with several, each process writes its own, the rank
  /// before the extension ("trace.json" → trace_0.json, trace_1.json, ...). A `path` that is
  /// a folder (it exists, or ends in '/') gets profile_<rank>.json inside, Accelerate's names.
  /// When it ends, every process waits for the others. Throws InvalidArgument for an empty
  /// path, a bad option, or while another profile runs on this thread.
  ///
  /// Example:
  ///   {
  ///     auto p = accelerator.profile("trace.json");
  ///     accelerator.backward(loss_fn(model->forward(x), y));
  ///     optimizer->step();
  ///   }  // trace_<rank>.json written
  Profile profile(const std::string& path, const ProfileOptions& options = ProfileOptions()) const {
    return Profile(state_, profile_path(path), options);
  }
  /// The trace file profile(path) writes on this process.
  std::string profile_path(const std::string& path) const;

  // ---- experiment tracking (main process only; see tracking.h) ----
  /// Starts the trackers of log_with(...) for the run `project_name` (a sub-folder of the
  /// logging dir) and records `config`. Does nothing on the other processes.
  /// Example: accelerator.init_trackers("mnist", {{"lr", 1e-3}, {"epochs", 4}});
  void init_trackers(const std::string& project_name, const TrackerConfig& config = {});
  /// Records scalar values at `step` on every tracker (main process only).
  /// Example: accelerator.log({{"loss", loss.item<double>()}}, step);
  void log(const std::map<std::string, double>& values, std::optional<int64_t> step = std::nullopt);
  /// Flushes and closes the trackers, then waits for every process (Accelerate's
  /// `end_training`).
  void end_training();
  /// The started tracker named `name`, or nullptr (always on the other processes).
  GeneralTracker* get_tracker(const std::string& name) const;
  /// The folder trackers write into: logging_dir, else project_dir.
  std::string logging_dir() const;

  // ---- memory ----
  /// Lets go of everything this accelerator holds of prepared objects (models and their DDP
  /// engines, optimizers, schedulers, data loaders, objects registered for checkpointing),
  /// resets step() and clears the device cache (Accelerate's `free_memory`). The arguments,
  /// what prepare returned (std::shared_ptr objects, TORCH_MODULE holders), are reset to
  /// null / empty, so the memory goes once the caller's other copies are gone. Use it between
  /// trainings in one program, e.g. with find_executable_batch_size.
  /// Example: accelerator.free_memory(model, optimizer, loader);
  template <typename... Objects>
  void free_memory(Objects&... objects) {
    static_assert(
        ((detail::IsSharedPtr<Objects>::value || detail::IsModuleHolder<Objects>::value) && ...),
        "accelerate: free_memory takes what prepare returned: std::shared_ptr objects "
        "(models, optimizers, loaders, ...) or TORCH_MODULE holders");
    (free_one(objects), ...);
    release_prepared();
  }
  /// Same as free_memory(): Accelerate's `clear`.
  template <typename... Objects>
  void clear(Objects&... objects) {
    free_memory(objects...);
  }

  // ---- collectives (see ops.h) ----
  /// Concatenation over all processes along dim 0 (0-d tensors count as shape [1]).
  at::Tensor gather(const at::Tensor& tensor) const { return accelerate::gather(state_, tensor); }
  /// Reduction over all processes: "sum" | "mean" | "max" | "min" | "product".
  at::Tensor reduce(const at::Tensor& tensor, const std::string& reduction = "sum",
                    double scale = 1.0) const {
    return accelerate::reduce(state_, tensor, parse_reduce_op(reduction), scale);
  }
  /// Reduction over all processes.
  at::Tensor reduce(const at::Tensor& tensor, ReduceOp op, double scale = 1.0) const {
    return accelerate::reduce(state_, tensor, op, scale);
  }
  /// `tensor` of process `from_process` on every process (in place; returns it).
  at::Tensor broadcast(at::Tensor tensor, int from_process = 0) const {
    return accelerate::broadcast(state_, std::move(tensor), from_process);
  }
  /// Pads `tensor` along `dim` to the largest size over the processes.
  at::Tensor pad_across_processes(const at::Tensor& tensor, int64_t dim = 0, double pad_index = 0,
                                  bool pad_first = false) const {
    return accelerate::pad_across_processes(state_, tensor, dim, pad_index, pad_first);
  }
  /// Every process's object; vectors are concatenated (see ops.h).
  template <typename T>
  auto gather_object(const T& object) const {
    return accelerate::gather_object(state_, object);
  }
  /// `object` of process `from_process` on every process.
  template <typename T>
  T broadcast_object(const T& object, int from_process = 0) const {
    return accelerate::broadcast_object(state_, object, from_process);
  }
  /// This process's share of `items` (see ops.h).
  template <typename T>
  auto split_between_processes(const T& items, bool apply_padding = false) const {
    return accelerate::split_between_processes(state_, items, apply_padding);
  }

 private:
  template <typename Pred, typename F>
  auto run_if(Pred pred, F fn) const {
    return [pred = std::move(pred), fn = std::move(fn)](auto&&... args) mutable {
      using R = std::invoke_result_t<F&, decltype(args)...>;
      if constexpr (std::is_void_v<R>) {
        if (pred()) fn(std::forward<decltype(args)>(args)...);
      } else {
        return pred() ? std::optional<R>(fn(std::forward<decltype(args)>(args)...))
                      : std::optional<R>();
      }
    };
  }
  template <typename F>
  auto run_first(bool first, F&& fn) const {
    if (!first) wait_for_everyone();
    if constexpr (std::is_void_v<std::invoke_result_t<F>>) {
      fn();
      if (first) wait_for_everyone();
    } else {
      auto result = fn();
      if (first) wait_for_everyone();
      return result;
    }
  }

  template <typename T>
  static void free_one(T& object) {
    if constexpr (detail::IsModuleHolder<T>::value)
      object = T(nullptr);
    else
      object.reset();
  }
  template <typename T>
  auto prepare_first(T&& object) {
    using U = std::decay_t<T>;
    if constexpr (detail::IsSharedPtr<U>::value) {
      using E = typename detail::IsSharedPtr<U>::element;
      if constexpr (std::is_base_of_v<torch::nn::Module, E>)
        return prepare_model(object);
      else if constexpr (std::is_base_of_v<AcceleratedOptimizer, E> ||
                         std::is_base_of_v<AcceleratedScheduler, E>)
        return object;  // already prepared
      else if constexpr (std::is_base_of_v<torch::optim::Optimizer, E>)
        return prepare_optimizer(object);
      else if constexpr (std::is_base_of_v<DataLoaderBase, E>)
        return prepare_data_loader(object);
      else if constexpr (std::is_base_of_v<torch::optim::LRScheduler, E>)
        return object;  // second pass
      else
        return detail::refuse_prepare<U>();
    } else if constexpr (detail::IsModuleHolder<U>::value) {
      return prepare_model(object);
    } else if constexpr (std::is_base_of_v<DataLoaderBase, U>) {
      return prepare_data_loader(object);
    } else {
      return detail::refuse_prepare<U>();
    }
  }
  template <typename T>
  auto prepare_second(T& object) {
    if constexpr (detail::IsSharedPtr<T>::value) {
      using E = typename detail::IsSharedPtr<T>::element;
      if constexpr (std::is_base_of_v<torch::optim::LRScheduler, E>)
        return prepare_scheduler(object);
      else
        return object;
    } else {
      return object;
    }
  }
  // Add an object to save_state's registry (accelerator_checkpoint.cpp).
  void checkpoint_module(const std::string& kind, const std::string& stem,
                         std::shared_ptr<torch::nn::Module> module);
  void checkpoint_custom(std::function<std::string()> save,
                         std::function<void(const std::string&, const std::string&)> load);
  void checkpoint_loader(std::shared_ptr<DataLoaderBase> loader);
  void save_model_impl(const torch::nn::Module& model, const std::string& dir,
                       const SaveModelOptions& options);
  static StateDict cpu_state_dict(const torch::nn::Module& model);
  // The sharding of a prepared loader.
  ShardingOptions sharding_options();
  void register_model(const std::shared_ptr<torch::nn::Module>& model);
  DistributedDataParallel* engine_of(const torch::nn::Module* model) const;
  void do_sync();
  void release_prepared();
  // Warns (once per job) when `loss` reaches parameters of a prepared optimizer that no
  // prepared model holds (backward, with several processes).
  void warn_if_unprepared_model(const at::Tensor& loss);
  at::Tensor gather_for_metrics_one(const at::Tensor& tensor) const;
  // How many of `gathered` rows gather_for_metrics keeps: all, except on the last batch of a
  // prepared loader, where the rows even_batches repeated are dropped.
  int64_t metrics_rows(int64_t gathered) const;

  State state_;
  std::shared_ptr<GradientState> gradient_state_;
  const AcceleratorOptions options_;    // as given; what changes while training is below
  int iteration_;                       // of the next automatic checkpoint (save_state)
  bool autocast_checked_ = false;       // the first backward under bf16/fp16 was looked at
  int unprepared_checks_ = 0;           // backward passes looked at by warn_if_unprepared_model
  std::shared_ptr<GradScaler> scaler_;  // fp16 only
  std::vector<std::shared_ptr<GeneralTracker>> trackers_;  // main process, after init_trackers
  bool trigger_ = false;
  int64_t step_ = 0;
  // One DDP engine per prepared model (declared after state_: destroyed before the group).
  std::map<const torch::nn::Module*, std::unique_ptr<DistributedDataParallel>> models_;
  std::map<const torch::optim::Optimizer*, std::shared_ptr<AcceleratedOptimizer>> optimizers_;
  std::vector<std::shared_ptr<AcceleratedOptimizer>> optimizer_order_;
  std::vector<std::shared_ptr<AcceleratedScheduler>> schedulers_;
  // What save_state writes and the hooks it calls (src/checkpoint_registry.h).
  std::unique_ptr<detail::CheckpointRegistry> checkpoints_;
  std::vector<std::shared_ptr<DataLoaderBase>> loaders_;  // prepared, for join_uneven_inputs
  // What prepared loaders call (they hold it weakly); last, so destroyed first.
  std::shared_ptr<DataContext> data_context_;
};

}  // namespace accelerate
