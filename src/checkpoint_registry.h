// Internal: what save_state writes besides the random states, and the hooks it calls first.
//
// One entry per prepared or registered object, in the order they came; save_state and
// load_state are one loop over it (Note [checkpoint layout], accelerator_checkpoint.cpp). The
// Accelerator owns one registry behind a pointer, so that its header shows the API only.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "accelerate/checkpoint_hooks.h"
#include "accelerate/data_loader.h"
#include "accelerate/mixed_precision.h"
#include "accelerate/model_files.h"

namespace accelerate::detail {

/// The objects save_state writes, with their files, and the pre-hooks of save and load.
class CheckpointRegistry {
 public:
  /// One object of the checkpoint.
  struct Entry {
    std::string kind;  // "models", "optimizers", ...: counted in accelerator_state.json
    std::string file;  // its file in the checkpoint folder
    std::function<void(const std::string& path)> save;
    std::function<void(const std::string& path)> load;
    std::shared_ptr<torch::nn::Module> model;  // kind "models": the prepared model
  };

  /// Adds an object of `kind` saved to and loaded from `file`.
  void add(const std::string& kind, const std::string& file,
           std::function<void(const std::string&)> save,
           std::function<void(const std::string&)> load);
  /// The name of the next object of `kind`: stem + ext, then stem_1 + ext, ...
  /// ("model.safetensors"); `always_numbered`: stem0 + ext, stem1 + ext, ...
  std::string next_file(const std::string& kind, const std::string& stem,
                        const std::string& extension, bool always_numbered = false) const;
  /// Adds a module saved as safetensors (kind "models": a prepared model).
  void add_module(const std::string& kind, const std::string& stem,
                  std::shared_ptr<torch::nn::Module> module);
  /// Adds a registered object saved as the bytes `save` returns.
  void add_custom(std::function<std::string()> save,
                  std::function<void(const std::string&, const std::string&)> load);
  /// Adds a prepared data loader's position.
  void add_loader(std::shared_ptr<DataLoaderBase> loader);
  /// Adds the fp16 gradient scaler.
  void add_scaler(std::shared_ptr<GradScaler> scaler);
  /// Forgets every object (the hooks stay).
  void clear() { entries_.clear(); }

  /// The objects, in the order they were added.
  const std::vector<Entry>& entries() const { return entries_; }
  /// The prepared models, in the order they were prepared.
  std::vector<std::shared_ptr<torch::nn::Module>> models() const;
  /// The "objects" list of accelerator_state.json: each object's kind and file.
  nlohmann::json describe() const;
  /// Throws FileError unless the "objects" list `saved` of `state_path` holds the same objects
  /// as this registry, of the same kinds, in the same order.
  void check(const std::vector<nlohmann::json>& saved, const std::string& state_path) const;

  /// Writes every object into `folder`; the models' files hold `weights` (same order).
  void save(const std::filesystem::path& folder, const std::vector<StateDict>& weights) const;
  /// Loads every object from `folder`, except the models whose entry in `models` (the prepared
  /// models, as the load pre-hooks left them) is null. `same_world`: the checkpoint was saved
  /// by as many processes as now (else the data loaders restart their saved epoch).
  void load(const std::filesystem::path& folder,
            const std::vector<std::shared_ptr<torch::nn::Module>>& models, bool same_world);

  /// Adds a save_state pre-hook; returns what removes it (nothing once the registry is gone).
  std::function<void()> add_save_hook(SaveStatePreHook hook);
  /// Adds a load_state pre-hook; returns what removes it.
  std::function<void()> add_load_hook(LoadStatePreHook hook);
  /// True when a save_state pre-hook is registered.
  bool has_save_hooks() const { return !save_hooks_->empty(); }
  /// Runs the save_state pre-hooks in the order they were registered; InvalidArgument when a
  /// hook adds or drops a state dict.
  void run_save_hooks(const std::vector<std::shared_ptr<torch::nn::Module>>& models,
                      std::vector<StateDict>& weights, const std::string& output_dir) const;
  /// Runs the load_state pre-hooks; returns the models they left (null: not to load).
  std::vector<std::shared_ptr<torch::nn::Module>> run_load_hooks(
      const std::string& input_dir) const;

 private:
  std::vector<Entry> entries_;
  bool same_world_ = true;  // during load(): what the data loaders' entries read
  // The pre-hooks by id (what add_*_hook returns removes through a weak_ptr).
  std::shared_ptr<std::map<int64_t, SaveStatePreHook>> save_hooks_ =
      std::make_shared<std::map<int64_t, SaveStatePreHook>>();
  std::shared_ptr<std::map<int64_t, LoadStatePreHook>> load_hooks_ =
      std::make_shared<std::map<int64_t, LoadStatePreHook>>();
  int64_t next_hook_id_ = 0;
};

}  // namespace accelerate::detail
