// Accelerator::save_state / load_state / save_model / save.
//
// Note [checkpoint layout]: a checkpoint folder holds
//   accelerator_state.json          counts, step, iteration, data loader positions (written last)
//   model.safetensors, model_1...   each prepared model's state dict (Python-readable)
//   optimizer.bin, optimizer_1...   LibTorch archives of each prepared optimizer
//   scheduler.json                  each prepared scheduler's step count
//   scaler.json                     the fp16 gradient scaler's state (PyTorch's keys), fp16 only
//   random_states_<rank>.pt         each process's CPU (and CUDA) generator state
//   custom_checkpoint_<i>.bin/.safetensors  registered objects (object_bytes.h / modules)
// It is written into "<folder>.tmp" and renamed into place by process 0 once every process
// has written its part, so an interrupted save never replaces a complete checkpoint.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <regex>
#include <sstream>
#include <type_traits>

#include "accelerate/accelerator.h"
#include "accelerate/safetensors.h"
#include "compat.h"
#include "errors.h"
#include "files.h"
#include "json_file.h"

namespace fs = std::filesystem;

namespace accelerate {

using detail::message_of;

namespace {

constexpr const char* kStateFile = "accelerator_state.json";
constexpr int kFormatVersion = 2;  // 2: one file per object, listed under "objects"

std::string indexed(const std::string& stem, size_t i, const std::string& ext) {
  return i == 0 ? stem + ext : stem + "_" + std::to_string(i) + ext;
}

std::map<std::string, at::Tensor> as_map(const StateDict& dict) {
  return std::map<std::string, at::Tensor>(dict.begin(), dict.end());
}

// A LibTorch archive, serialised in memory first: writing it straight to a file makes
// LibTorch throw from a destructor when the disk is full, which aborts the process.
void write_archive(const fs::path& path, torch::serialize::OutputArchive& archive) {
  std::ostringstream out;
  archive.save_to(out);
  detail::write_file_synced(path.string(), out.str(), "save_state");
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

// The numbered checkpoint_<n> folders under `dir`, oldest first.
std::vector<std::pair<int64_t, fs::path>> numbered_checkpoints(const fs::path& dir) {
  std::vector<std::pair<int64_t, fs::path>> out;
  if (!fs::is_directory(dir)) return out;
  static const std::regex name("checkpoint_([0-9]+)");
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    const std::string file = entry.path().filename().string();
    if (entry.is_directory() && std::regex_match(file, m, name))
      out.emplace_back(std::stoll(m[1]), entry.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

void Accelerator::save_model_impl(const torch::nn::Module& model, const std::string& dir,
                                  const SaveModelOptions& options) {
  wait_for_everyone();
  if (is_main_process()) save_model_files(model, dir, options);
  wait_for_everyone();
}

void Accelerator::save(const at::Tensor& tensor, const std::string& path) const {
  save(std::map<std::string, at::Tensor>{{"tensor", tensor}}, path);
}

void Accelerator::save(const std::map<std::string, at::Tensor>& tensors,
                       const std::string& path) const {
  if (!is_main_process()) return;
  const bool safetensors = fs::path(path).extension() == ".safetensors";
  if (safetensors)
    save_safetensors(tensors, path);
  else
    save_pytorch_bin(StateDict(tensors.begin(), tensors.end()), path);
}

// The folder of automatic checkpoints, or an error naming `what` when there is none.
static fs::path automatic_checkpoints(const ProjectConfiguration& project, const char* what) {
  if (!project.automatic_checkpoint_naming())
    throw InvalidArgument(std::string("accelerate: ") + what +
                          " needs a folder, or ProjectConfiguration with "
                          "automatic_checkpoint_naming(true)");
  return fs::path(project.project_dir()) / "checkpoints";
}

void Accelerator::save_state(const std::string& output_dir) {
  const ProjectConfiguration& project = options_.project_config();
  // As Accelerate: with automatic naming the folder is always the next checkpoint_N (a given
  // folder is ignored), and every save advances the iteration.
  const bool automatic = output_dir.empty() || project.automatic_checkpoint_naming();
  fs::path target = output_dir;
  if (automatic) {
    target =
        automatic_checkpoints(project, "save_state") / ("checkpoint_" + std::to_string(iteration_));
    if (fs::exists(target))
      throw InvalidArgument("accelerate: save_state: checkpoint folder " + target.string() +
                            " already exists (iteration " + std::to_string(iteration_) +
                            "); set ProjectConfiguration().iteration(n) to continue after it");
  }
  const fs::path tmp = target.string() + ".tmp";
  if (is_main_process()) {
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  wait_for_everyone();

  // Note [save_state errors]: no write may end the process (a full disk, a read-only folder):
  // each process catches its own error, the processes then agree (one gather), and on any
  // failure process 0 removes the partial folder and every process throws the same error.
  // The previous checkpoint is not touched until every process has written its part.
  std::string failure;
  try {
    // Every process: its own random states.
    torch::serialize::OutputArchive rng;
    rng.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
    const auto cuda = compat::cuda_rng_states();
    for (size_t i = 0; i < cuda.size(); ++i) rng.write("cuda_" + std::to_string(i), cuda[i]);
    write_archive(tmp / ("random_states_" + std::to_string(process_index()) + ".pt"), rng);
    if (is_main_process()) save_main_process_files(tmp, iteration_);
  } catch (const std::exception& e) {
    failure = message_of(e);
  }
  std::vector<std::string> failures =
      num_processes() > 1 ? gather_object(failure) : std::vector<std::string>{failure};
  std::string report;
  for (size_t r = 0; r < failures.size(); ++r)
    if (!failures[r].empty())
      report += (report.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
                failures[r];
  if (!report.empty()) {
    if (is_main_process()) {
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
    }
    throw FileError("accelerate: save_state: the checkpoint " + target.string() +
                    " was not written (" + report +
                    "); the partial folder was removed and any previous checkpoint "
                    "there is unchanged");
  }

  std::string rename_failure;
  if (is_main_process()) {
    try {
      const fs::path previous = target.string() + ".previous";
      if (!fs::exists(target) && fs::exists(previous))
        fs::rename(previous, target);  // an earlier save died between its two renames
      else
        fs::remove_all(previous);
      if (fs::exists(target)) fs::rename(target, previous);
      detail::sync_folder(tmp.string(), "save_state");
      fs::rename(tmp, target);
      detail::sync_folder(target.parent_path().empty() ? "." : target.parent_path().string(),
                          "save_state");
      fs::remove_all(previous);
      if (automatic && project.total_limit() > 0) {
        auto all = numbered_checkpoints(target.parent_path());
        for (size_t i = 0; i + project.total_limit() < all.size(); ++i)
          fs::remove_all(all[i].second);
      }
    } catch (const std::exception& e) {
      rename_failure =
          "accelerate: save_state: moving " + tmp.string() + " into place failed: " + e.what();
    }
  }
  // Also the final barrier: every process learns whether process 0 could finish.
  if (num_processes() > 1) rename_failure = broadcast_object(rename_failure);
  if (!rename_failure.empty()) throw FileError(rename_failure);
  ++iteration_;
}

void Accelerator::save_main_process_files(const fs::path& tmp, int iteration) {
  nlohmann::json objects = nlohmann::json::array();
  for (const Checkpointed& object : checkpointed_) {
    object.save((tmp / object.file).string());
    objects.push_back({{"kind", object.kind}, {"file", object.file}});
  }
  // Written last: its presence marks a complete folder.
  detail::write_json((tmp / kStateFile).string(), {{"format", "accelerate-cpp"},
                                                   {"version", kFormatVersion},
                                                   {"num_processes", num_processes()},
                                                   {"step", step_},
                                                   {"iteration", iteration},
                                                   {"objects", objects}});
}

// ---- the registry of checkpointed objects ----

void Accelerator::add_checkpointed(const std::string& kind, const std::string& file,
                                   std::function<void(const std::string&)> save,
                                   std::function<void(const std::string&)> load) {
  checkpointed_.push_back({kind, file, std::move(save), std::move(load)});
}

std::string Accelerator::next_file(const std::string& kind, const std::string& stem,
                                   const std::string& extension, bool always_numbered) const {
  const auto i =
      static_cast<size_t>(std::count_if(checkpointed_.begin(), checkpointed_.end(),
                                        [&](const Checkpointed& c) { return c.kind == kind; }));
  return always_numbered ? stem + std::to_string(i) + extension : indexed(stem, i, extension);
}

void Accelerator::checkpoint_module(const std::string& kind, const std::string& stem,
                                    std::shared_ptr<torch::nn::Module> module) {
  add_checkpointed(
      kind, next_file(kind, stem, ".safetensors", kind == "custom_objects"),
      [module](const std::string& path) {
        save_safetensors(as_map(model_state_dict(*module)), path);
      },
      [module](const std::string& path) { load_checkpoint_in_model(*module, path); });
}

void Accelerator::checkpoint_custom(
    std::function<std::string()> save,
    std::function<void(const std::string&, const std::string&)> load) {
  add_checkpointed(
      "custom_objects", next_file("custom_objects", "custom_checkpoint_", ".bin", true),
      [save](const std::string& path) { detail::write_file_synced(path, save(), "save_state"); },
      [load](const std::string& path) { load(detail::read_file(path, "load_state"), path); });
}

void Accelerator::checkpoint_loader(std::shared_ptr<DataLoaderBase> loader) {
  add_checkpointed(
      "data_loaders", next_file("data_loaders", "data_loader", ".json"),
      [loader](const std::string& path) { detail::write_json(path, loader->state_dict()); },
      [this, loader](const std::string& path) {
        auto state = detail::read_integers(path);
        // Batches are counted per process: with another number of processes, restart the
        // saved epoch.
        if (!load_same_world_) state["batches"] = 0;
        try {
          loader->load_state_dict(state);
        } catch (const std::invalid_argument& e) {
          throw FileError("accelerate: load_state: " + path + ": " + e.what());
        }
      });
}

void Accelerator::checkpoint_scaler() {
  auto scaler = scaler_;
  add_checkpointed(
      "scaler", "scaler.json",
      [scaler](const std::string& path) {
        detail::write_json(path, scaler_json(scaler->state_dict()));
      },
      [scaler](const std::string& path) {
        try {
          scaler->load_state_dict(detail::read_json_as<std::map<std::string, double>>(path));
        } catch (const std::invalid_argument& e) {
          throw FileError("accelerate: load_state: " + path + ": " + e.what());
        }
      });
}

void Accelerator::load_state(const std::string& input_dir) {
  const ProjectConfiguration& project = options_.project_config();
  fs::path dir = input_dir;
  if (dir.empty()) {
    const fs::path checkpoints = automatic_checkpoints(project, "load_state");
    auto all = numbered_checkpoints(checkpoints);
    if (all.empty())
      throw FileError("accelerate: load_state: no checkpoint_<n> folder in " +
                      checkpoints.string());
    dir = all.back().second;
  }
  // A save interrupted between its two renames leaves the old checkpoint here.
  if (!fs::exists(dir / kStateFile) &&
      fs::exists(fs::path(dir.string() + ".previous") / kStateFile))
    dir = dir.string() + ".previous";
  const fs::path state_file = dir / kStateFile;
  if (!fs::exists(state_file))
    throw FileError("accelerate: load_state: " + dir.string() +
                    " is not a complete checkpoint (no " + kStateFile + ")");
  const std::string state_path = state_file.string();
  const nlohmann::json state = detail::read_json(state_path);
  const int version = detail::field<int>(state, "version", state_path);
  if (version != kFormatVersion)
    throw FileError("accelerate: load_state: " + state_path + " is format version " +
                    std::to_string(version) + "; this accelerate-cpp reads version " +
                    std::to_string(kFormatVersion));
  // The same objects, of the same kinds, in the same order.
  const auto saved = detail::field<std::vector<nlohmann::json>>(state, "objects", state_path);
  auto count = [](const auto& list, const std::string& kind, auto kind_of) {
    return std::count_if(list.begin(), list.end(),
                         [&](const auto& x) { return kind_of(x) == kind; });
  };
  auto saved_kind = [&](const nlohmann::json& o) {
    return detail::field<std::string>(o, "kind", state_path);
  };
  auto our_kind = [](const Checkpointed& c) { return c.kind; };
  for (const char* kind :
       {"models", "optimizers", "schedulers", "data_loaders", "scaler", "custom_objects"}) {
    const auto theirs = count(saved, kind, saved_kind), ours = count(checkpointed_, kind, our_kind);
    if (theirs != ours)
      throw FileError("accelerate: load_state: " + state_path + " holds " + std::to_string(theirs) +
                      " " + kind + " but this Accelerator has " + std::to_string(ours) +
                      (std::string(kind) == "scaler"
                           ? " (a scaler exists with mixed_precision fp16)"
                           : " (prepare / register the same objects in the same "
                             "order before load_state)"));
  }
  for (size_t i = 0; i < saved.size(); ++i)
    if (saved_kind(saved[i]) != checkpointed_[i].kind ||
        detail::field<std::string>(saved[i], "file", state_path) != checkpointed_[i].file)
      throw FileError("accelerate: load_state: " + state_path + " lists " + saved[i].dump() +
                      " as object " + std::to_string(i) + " but this Accelerator's is " +
                      checkpointed_[i].kind + " (" + checkpointed_[i].file +
                      "); prepare / register the objects in the order they were saved");

  const int saved_processes = detail::field<int>(state, "num_processes", state_path);
  const int64_t saved_step = detail::field<int64_t>(state, "step", state_path);
  const int saved_iteration = detail::field<int>(state, "iteration", state_path);
  load_same_world_ = saved_processes == num_processes();
  for (const Checkpointed& object : checkpointed_) object.load((dir / object.file).string());
  if (!load_same_world_)
    print("accelerate: load_state: the checkpoint was written by", saved_processes,
          "processes, this job has", num_processes(),
          "; data loaders restart their saved epoch from its beginning");
  load_same_world_ = true;
  step_ = saved_step;
  if (project.automatic_checkpoint_naming()) iteration_ = std::max(iteration_, saved_iteration + 1);

  const fs::path rng_file = dir / ("random_states_" + std::to_string(process_index()) + ".pt");
  if (fs::exists(rng_file)) {
    std::string key = "cpu";
    try {
      torch::serialize::InputArchive rng;
      rng.load_from(rng_file.string());
      at::Tensor cpu;
      rng.read("cpu", cpu);
      at::Generator generator = at::detail::getDefaultCPUGenerator();
      generator.set_state(cpu);
      std::vector<at::Tensor> cuda;
      for (size_t i = 0;; ++i) {
        at::Tensor t;
        key = "cuda_" + std::to_string(i);
        if (!rng.try_read(key, t)) break;
        cuda.push_back(t);
      }
      compat::set_cuda_rng_states(cuda);
    } catch (const std::exception& e) {
      throw FileError("accelerate: load_state: cannot restore the random state \"" + key +
                      "\" from " + rng_file.string() +
                      " (a corrupt or foreign file?): " + message_of(e));
    }
  } else {
    print("accelerate: load_state: no", rng_file.filename().string(),
          "in the checkpoint; random states are not restored");
  }
  wait_for_everyone();
}

}  // namespace accelerate
