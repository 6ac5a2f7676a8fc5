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

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <type_traits>

#include "accelerate/accelerator.h"
#include "accelerate/safetensors.h"
#include "atomic_file.h"
#include "compat.h"
#include "errors.h"

namespace fs = std::filesystem;

namespace accelerate {

using detail::message_of;

namespace {

constexpr const char* kStateFile = "accelerator_state.json";
constexpr int kFormatVersion = 1;

// LRScheduler keeps its step count protected; a pointer to member taken through a derived
// class reads it without changing LibTorch.
struct SchedulerAccess : torch::optim::LRScheduler {
  static unsigned torch::optim::LRScheduler::*step_count() { return &SchedulerAccess::step_count_; }
};

std::string indexed(const std::string& stem, size_t i, const std::string& ext) {
  return i == 0 ? stem + ext : stem + "_" + std::to_string(i) + ext;
}

std::map<std::string, at::Tensor> as_map(const StateDict& dict) {
  return std::map<std::string, at::Tensor>(dict.begin(), dict.end());
}

void write_bytes(const fs::path& path, const std::string& bytes) {
  detail::write_file_synced(path.string(), bytes, "save_state");
}

void write_json(const fs::path& path, const nlohmann::json& value) {
  write_bytes(path, value.dump(2) + "\n");
}

// A LibTorch archive, serialised in memory first: writing it straight to a file makes
// LibTorch throw from a destructor when the disk is full, which aborts the process.
void write_archive(const fs::path& path, torch::serialize::OutputArchive& archive) {
  std::ostringstream out;
  archive.save_to(out);
  write_bytes(path, out.str());
}

// `key` of the JSON object `j` read from `file` as a T; throws std::runtime_error naming the
// file, the key and what it holds when it is missing or of another type.
template <typename T>
T field(const nlohmann::json& j, const std::string& key, const fs::path& file) {
  const char* expected = std::is_integral_v<T> ? "an integer" : "a value of the expected type";
  auto it = j.is_object() ? j.find(key) : j.end();
  if (it == j.end())
    throw std::runtime_error("accelerate: load_state: " + file.string() + ": key \"" + key +
                             "\" is missing");
  if constexpr (std::is_integral_v<T>) {
    if (!it->is_number_integer())
      throw std::runtime_error("accelerate: load_state: " + file.string() + ": key \"" + key +
                               "\" must be " + expected + ", got " + it->dump());
  }
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw std::runtime_error("accelerate: load_state: " + file.string() + ": key \"" + key +
                             "\" must be " + expected + ", got " + it->dump());
  }
}

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("accelerate: load_state: cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
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

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("accelerate: load_state: cannot read " + path.string());
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw std::runtime_error("accelerate: load_state: " + path.string() +
                             " is not valid JSON: " + e.what());
  }
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

void expect_count(const nlohmann::json& state, const char* key, size_t have, const fs::path& file) {
  const auto saved = field<size_t>(state, key, file);
  if (saved != have)
    throw std::runtime_error("accelerate: load_state: " + file.string() + " holds " +
                             std::to_string(saved) + " " + key + " but this Accelerator has " +
                             std::to_string(have) + " (prepare / register the same objects " +
                             "in the same order before load_state)");
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
  if (!project.automatic_checkpoint_naming_)
    throw std::invalid_argument(std::string("accelerate: ") + what +
                                " needs a folder, or ProjectConfiguration with "
                                "automatic_checkpoint_naming(true)");
  return fs::path(project.project_dir_) / "checkpoints";
}

void Accelerator::save_state(const std::string& output_dir) {
  ProjectConfiguration& project = options_.project_config_;
  fs::path target = output_dir;
  if (target.empty()) {
    target = automatic_checkpoints(project, "save_state") /
             ("checkpoint_" + std::to_string(project.iteration_));
    if (fs::exists(target))
      throw std::invalid_argument(
          "accelerate: save_state: checkpoint folder " + target.string() +
          " already exists (iteration " + std::to_string(project.iteration_) +
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
    if (is_main_process()) save_main_process_files(tmp, project.iteration_);
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
    throw std::runtime_error("accelerate: save_state: the checkpoint " + target.string() +
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
      if (output_dir.empty() && project.total_limit_ > 0) {
        auto all = numbered_checkpoints(target.parent_path());
        for (size_t i = 0; i + project.total_limit_ < all.size(); ++i)
          fs::remove_all(all[i].second);
      }
    } catch (const std::exception& e) {
      rename_failure =
          "accelerate: save_state: moving " + tmp.string() + " into place failed: " + e.what();
    }
  }
  // Also the final barrier: every process learns whether process 0 could finish.
  if (num_processes() > 1) rename_failure = broadcast_object(rename_failure);
  if (!rename_failure.empty()) throw std::runtime_error(rename_failure);
  if (output_dir.empty()) ++project.iteration_;
}

void Accelerator::save_main_process_files(const fs::path& tmp, int iteration) {
  for (size_t i = 0; i < model_order_.size(); ++i)
    save_safetensors(as_map(model_state_dict(*model_order_[i])),
                     (tmp / indexed("model", i, ".safetensors")).string());
  for (size_t i = 0; i < optimizer_order_.size(); ++i) {
    torch::serialize::OutputArchive archive;
    optimizer_order_[i]->optimizer()->save(archive);
    write_archive(tmp / indexed("optimizer", i, ".bin"), archive);
  }
  nlohmann::json schedulers = nlohmann::json::array();
  for (const auto& s : schedulers_)
    schedulers.push_back({{"step_count", (*s->scheduler()).*SchedulerAccess::step_count()}});
  write_json(tmp / "scheduler.json", schedulers);
  if (scaler_) write_json(tmp / "scaler.json", scaler_json(scaler_->state_dict()));
  for (size_t i = 0; i < custom_.size(); ++i) {
    if (custom_[i].module)
      save_safetensors(
          as_map(model_state_dict(*custom_[i].module)),
          (tmp / ("custom_checkpoint_" + std::to_string(i) + ".safetensors")).string());
    else
      write_bytes(tmp / ("custom_checkpoint_" + std::to_string(i) + ".bin"), custom_[i].save());
  }
  nlohmann::json loaders = nlohmann::json::array();
  for (const auto& l : loaders_)
    loaders.push_back({{"epoch", l->position().epoch}, {"batches", l->position().batches}});
  // Written last: its presence marks a complete folder.
  write_json(tmp / kStateFile, {{"format", "accelerate-cpp"},
                                {"version", kFormatVersion},
                                {"num_processes", num_processes()},
                                {"step", step_},
                                {"iteration", iteration},
                                {"models", model_order_.size()},
                                {"optimizers", optimizer_order_.size()},
                                {"schedulers", schedulers_.size()},
                                {"data_loaders", loaders},
                                {"custom_objects", custom_.size()}});
}

void Accelerator::load_state(const std::string& input_dir) {
  ProjectConfiguration& project = options_.project_config_;
  fs::path dir = input_dir;
  if (dir.empty()) {
    const fs::path checkpoints = automatic_checkpoints(project, "load_state");
    auto all = numbered_checkpoints(checkpoints);
    if (all.empty())
      throw std::runtime_error("accelerate: load_state: no checkpoint_<n> folder in " +
                               checkpoints.string());
    dir = all.back().second;
  }
  // A save interrupted between its two renames leaves the old checkpoint here.
  if (!fs::exists(dir / kStateFile) &&
      fs::exists(fs::path(dir.string() + ".previous") / kStateFile))
    dir = dir.string() + ".previous";
  const fs::path state_file = dir / kStateFile;
  if (!fs::exists(state_file))
    throw std::runtime_error("accelerate: load_state: " + dir.string() +
                             " is not a complete checkpoint (no " + kStateFile + ")");
  const nlohmann::json state = read_json(state_file);
  try {
    expect_count(state, "models", model_order_.size(), state_file);
    expect_count(state, "optimizers", optimizer_order_.size(), state_file);
    expect_count(state, "schedulers", schedulers_.size(), state_file);
    expect_count(state, "custom_objects", custom_.size(), state_file);
    if (state.at("data_loaders").size() != loaders_.size())
      throw std::runtime_error("accelerate: load_state: " + state_file.string() + " holds " +
                               std::to_string(state.at("data_loaders").size()) +
                               " data loaders but this Accelerator has " +
                               std::to_string(loaders_.size()));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("accelerate: load_state: " + state_file.string() +
                             " lacks a field: " + e.what());
  }

  for (size_t i = 0; i < model_order_.size(); ++i)
    load_checkpoint_in_model(*model_order_[i],
                             (dir / indexed("model", i, ".safetensors")).string());
  for (size_t i = 0; i < optimizer_order_.size(); ++i) {
    const fs::path file = dir / indexed("optimizer", i, ".bin");
    torch::serialize::InputArchive archive;
    try {
      archive.load_from(file.string());
      optimizer_order_[i]->optimizer()->load(archive);
    } catch (const c10::Error& e) {
      throw std::runtime_error("accelerate: load_state: cannot load " + file.string() + ": " +
                               e.what_without_backtrace());
    }
    move_optimizer_state_to(*optimizer_order_[i]->optimizer(), device());
  }
  const fs::path scheduler_file = dir / "scheduler.json";
  const nlohmann::json schedulers = read_json(scheduler_file);
  if (!schedulers.is_array() || schedulers.size() != schedulers_.size())
    throw std::runtime_error("accelerate: load_state: " + scheduler_file.string() +
                             " must be an array of " + std::to_string(schedulers_.size()) +
                             " schedulers");
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    const auto count = field<unsigned>(schedulers[i], "step_count", scheduler_file);
    auto& scheduler = *schedulers_[i]->scheduler();
    if (auto* lambda = dynamic_cast<LambdaLR*>(&scheduler))
      lambda->set_last_epoch(count);
    else
      scheduler.*SchedulerAccess::step_count() = count;  // its lrs came back with the optimizer
  }
  if (scaler_) {
    const fs::path file = dir / "scaler.json";
    if (!fs::exists(file))
      throw std::runtime_error("accelerate: load_state: " + dir.string() +
                               " has no scaler.json: it was not saved with mixed_precision fp16");
    try {
      scaler_->load_state_dict(read_json(file).get<std::map<std::string, double>>());
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error("accelerate: load_state: " + file.string() +
                               ": expected an object of numbers: " + e.what());
    } catch (const std::invalid_argument& e) {
      throw std::runtime_error("accelerate: load_state: " + file.string() + ": " + e.what());
    }
  }
  for (size_t i = 0; i < custom_.size(); ++i) {
    if (custom_[i].module)
      load_checkpoint_in_model(
          *custom_[i].module,
          (dir / ("custom_checkpoint_" + std::to_string(i) + ".safetensors")).string());
    else {
      const fs::path file = dir / ("custom_checkpoint_" + std::to_string(i) + ".bin");
      custom_[i].load(read_bytes(file), file.string());
    }
  }

  const int saved_processes = field<int>(state, "num_processes", state_file);
  const bool same_world = saved_processes == num_processes();
  const int64_t saved_step = field<int64_t>(state, "step", state_file);
  const int saved_iteration = field<int>(state, "iteration", state_file);
  for (size_t i = 0; i < loaders_.size(); ++i) {
    const auto& loader = state["data_loaders"][i];
    LoaderPosition position{field<int64_t>(loader, "epoch", state_file),
                            field<int64_t>(loader, "batches", state_file)};
    // Batches are counted per process: with another number of processes, restart the epoch.
    if (!same_world) position.batches = 0;
    loaders_[i]->resume_from(position);
  }
  if (!same_world)
    print("accelerate: load_state: the checkpoint was written by", saved_processes,
          "processes, this job has", num_processes(),
          "; data loaders restart their saved epoch from its beginning");
  step_ = saved_step;
  if (project.automatic_checkpoint_naming_)
    project.iteration_ = std::max(project.iteration_, saved_iteration + 1);

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
      throw std::runtime_error("accelerate: load_state: cannot restore the random state \"" + key +
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
