#include "checkpoint_registry.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "accelerate/errors.h"
#include "accelerate/safetensors.h"
#include "files.h"
#include "json_file.h"

namespace fs = std::filesystem;

namespace accelerate::detail {

namespace {

std::string indexed(const std::string& stem, size_t i, const std::string& ext) {
  return i == 0 ? stem + ext : stem + "_" + std::to_string(i) + ext;
}

std::map<std::string, at::Tensor> as_map(const StateDict& dict) {
  return std::map<std::string, at::Tensor>(dict.begin(), dict.end());
}

// The scaler's state as PyTorch's GradScaler.state_dict() holds it (integers as integers).
nlohmann::json scaler_json(const std::map<std::string, double>& state) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [key, value] : state)
    j[key] = key == "growth_interval" || key == "_growth_tracker"
                 ? nlohmann::json(static_cast<int64_t>(value))
                 : nlohmann::json(value);
  return j;
}

// Adds `hook` to `hooks` under `id`; returns what removes it (nothing once the registry and
// its hooks are gone).
template <typename Hook>
std::function<void()> add_hook(const std::shared_ptr<std::map<int64_t, Hook>>& hooks, Hook hook,
                               int64_t id, const char* api) {
  if (!hook) throw InvalidArgument(std::string("accelerate: ") + api + ": empty hook");
  hooks->emplace(id, std::move(hook));
  std::weak_ptr<std::map<int64_t, Hook>> weak = hooks;
  return [weak, id] {
    if (auto h = weak.lock()) h->erase(id);
  };
}

}  // namespace

void CheckpointRegistry::add(const std::string& kind, const std::string& file,
                             std::function<void(const std::string&)> save,
                             std::function<void(const std::string&)> load) {
  entries_.push_back({kind, file, std::move(save), std::move(load), nullptr});
}

std::string CheckpointRegistry::next_file(const std::string& kind, const std::string& stem,
                                          const std::string& extension,
                                          bool always_numbered) const {
  const auto i = static_cast<size_t>(std::count_if(entries_.begin(), entries_.end(),
                                                   [&](const Entry& e) { return e.kind == kind; }));
  return always_numbered ? stem + std::to_string(i) + extension : indexed(stem, i, extension);
}

void CheckpointRegistry::add_module(const std::string& kind, const std::string& stem,
                                    std::shared_ptr<torch::nn::Module> module) {
  add(
      kind, next_file(kind, stem, ".safetensors", kind == "custom_objects"),
      [module](const std::string& path) {
        save_safetensors(as_map(model_state_dict(*module)), path);
      },
      [module](const std::string& path) { load_checkpoint_in_model(*module, path); });
  if (kind == "models") entries_.back().model = module;
}

void CheckpointRegistry::add_custom(
    std::function<std::string()> save,
    std::function<void(const std::string&, const std::string&)> load) {
  add(
      "custom_objects", next_file("custom_objects", "custom_checkpoint_", ".bin", true),
      [save](const std::string& path) { write_file_synced(path, save(), "save_state"); },
      [load](const std::string& path) { load(read_file(path, "load_state"), path); });
}

void CheckpointRegistry::add_loader(std::shared_ptr<DataLoaderBase> loader) {
  add(
      "data_loaders", next_file("data_loaders", "data_loader", ".json"),
      [loader](const std::string& path) { write_json(path, loader->state_dict()); },
      [this, loader](const std::string& path) {
        auto state = read_integers(path);
        // Batches are counted per process: with another number of processes, restart the
        // saved epoch.
        if (!same_world_) state["batches"] = 0;
        try {
          loader->load_state_dict(state);
        } catch (const std::invalid_argument& e) {
          throw FileError("accelerate: load_state: " + path + ": " + e.what());
        }
      });
}

void CheckpointRegistry::add_scaler(std::shared_ptr<GradScaler> scaler) {
  add(
      "scaler", "scaler.json",
      [scaler](const std::string& path) { write_json(path, scaler_json(scaler->state_dict())); },
      [scaler](const std::string& path) {
        try {
          scaler->load_state_dict(read_json_as<std::map<std::string, double>>(path));
        } catch (const std::invalid_argument& e) {
          throw FileError("accelerate: load_state: " + path + ": " + e.what());
        }
      });
}

std::vector<std::shared_ptr<torch::nn::Module>> CheckpointRegistry::models() const {
  std::vector<std::shared_ptr<torch::nn::Module>> models;
  for (const Entry& e : entries_)
    if (e.model) models.push_back(e.model);
  return models;
}

nlohmann::json CheckpointRegistry::describe() const {
  nlohmann::json objects = nlohmann::json::array();
  for (const Entry& e : entries_) objects.push_back({{"kind", e.kind}, {"file", e.file}});
  return objects;
}

void CheckpointRegistry::check(const std::vector<nlohmann::json>& saved,
                               const std::string& state_path) const {
  auto count = [](const auto& list, const std::string& kind, auto kind_of) {
    return std::count_if(list.begin(), list.end(),
                         [&](const auto& x) { return kind_of(x) == kind; });
  };
  auto saved_kind = [&](const nlohmann::json& o) {
    return field<std::string>(o, "kind", state_path);
  };
  auto our_kind = [](const Entry& e) { return e.kind; };
  for (const char* kind :
       {"models", "optimizers", "schedulers", "data_loaders", "scaler", "custom_objects"}) {
    const auto theirs = count(saved, kind, saved_kind), ours = count(entries_, kind, our_kind);
    if (theirs != ours)
      throw FileError("accelerate: load_state: " + state_path + " holds " + std::to_string(theirs) +
                      " " + kind + " but this Accelerator has " + std::to_string(ours) +
                      (std::string(kind) == "scaler"
                           ? " (a scaler exists with mixed_precision fp16)"
                           : " (prepare / register the same objects in the same "
                             "order before load_state)"));
  }
  for (size_t i = 0; i < saved.size(); ++i)
    if (saved_kind(saved[i]) != entries_[i].kind ||
        field<std::string>(saved[i], "file", state_path) != entries_[i].file)
      throw FileError("accelerate: load_state: " + state_path + " lists " + saved[i].dump() +
                      " as object " + std::to_string(i) + " but this Accelerator's is " +
                      entries_[i].kind + " (" + entries_[i].file +
                      "); prepare / register the objects in the order they were saved");
}

void CheckpointRegistry::save(const fs::path& folder, const std::vector<StateDict>& weights) const {
  size_t model = 0;
  for (const Entry& e : entries_) {
    if (e.model)  // the state dict the pre-hooks saw
      save_safetensors(as_map(weights.at(model++)), (folder / e.file).string());
    else
      e.save((folder / e.file).string());
  }
}

void CheckpointRegistry::load(const fs::path& folder,
                              const std::vector<std::shared_ptr<torch::nn::Module>>& models,
                              bool same_world) {
  same_world_ = same_world;
  struct Restore {
    bool& same_world;
    ~Restore() { same_world = true; }
  } restore{same_world_};
  size_t model = 0;
  for (const Entry& e : entries_) {
    if (e.model && !models[model++]) continue;  // a pre-hook loaded it
    e.load((folder / e.file).string());
  }
}

std::function<void()> CheckpointRegistry::add_save_hook(SaveStatePreHook hook) {
  return add_hook(save_hooks_, std::move(hook), next_hook_id_++, "register_save_state_pre_hook");
}

std::function<void()> CheckpointRegistry::add_load_hook(LoadStatePreHook hook) {
  return add_hook(load_hooks_, std::move(hook), next_hook_id_++, "register_load_state_pre_hook");
}

void CheckpointRegistry::run_save_hooks(
    const std::vector<std::shared_ptr<torch::nn::Module>>& models, std::vector<StateDict>& weights,
    const std::string& output_dir) const {
  const auto hooks = *save_hooks_;  // a copy: a hook may remove itself
  for (const auto& [id, hook] : hooks) {
    (void)id;
    hook(models, weights, output_dir);
    if (weights.size() != models.size())
      throw InvalidArgument("accelerate: save_state: a save_state pre-hook left " +
                            std::to_string(weights.size()) + " state dicts for " +
                            std::to_string(models.size()) +
                            " models; it may change the dicts, not add or remove them");
  }
}

std::vector<std::shared_ptr<torch::nn::Module>> CheckpointRegistry::run_load_hooks(
    const std::string& input_dir) const {
  const auto prepared = this->models();
  auto models = prepared;
  const auto hooks = *load_hooks_;  // a copy: a hook may remove itself
  for (const auto& [id, hook] : hooks) {
    (void)id;
    hook(models, input_dir);
    if (models.size() != prepared.size())
      throw InvalidArgument("accelerate: load_state: a load_state pre-hook left " +
                            std::to_string(models.size()) + " models of " +
                            std::to_string(prepared.size()) +
                            "; set an entry to nullptr to skip loading that model");
  }
  return models;
}

}  // namespace accelerate::detail
