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
//
// Note [checkpoint checksums]: neither safetensors nor LibTorch's zip reader checks its bytes,
// so a damaged file would load without a word. save_state records, under "checksums" in
// accelerator_state.json (accelerate-cpp's own metadata: no file is added to the folder), the
// size and XXH3-64 of every file of the folder, whichever process wrote it: each process
// computes them while it writes (a ChecksumRecorder around its writes, files.h: no file is read
// back), sends them with its success or failure in the one gather that follows the writes, and
// the process that writes the state file of a folder records those written into that folder
// (with save_on_each_node and separate file systems, each machine's folder lists its own
// processes' random states). load_state first verifies every file this process will read (the
// objects' files and its own random states) by reading each once; the file's pages then stay
// in the page cache for the loads that follow. A folder without "checksums" (written before
// them, or with ProjectConfiguration::checksums false) loads unverified.
//
// Note [load_state errors]: load_state runs in two steps, each ended by one gather through
// which every process learns whether any process failed, so that an error on one process is an
// error on all of them instead of a process waiting for the others in a collective. Step 1
// finds the folder, reads accelerator_state.json, checks it against this Accelerator and
// verifies the checksums: a failure there leaves everything as it was on every process. Step 2
// runs the pre-hooks and loads.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <limits>
#include <optional>
#include <regex>
#include <sstream>
#include <tuple>
#include <type_traits>

#include "accelerate/accelerator.h"
#include "accelerate/safetensors.h"
#include "checksum.h"
#include "compat.h"
#include "errors.h"
#include "files.h"
#include "json_file.h"

namespace fs = std::filesystem;

namespace accelerate {

using detail::message_of;

namespace {

constexpr const char* kStateFile = "accelerator_state.json";
constexpr int kFormatVersion = 2;                // 2: one file per object, listed under "objects"
constexpr const char* kChecksumKey = "xxh3_64";  // of each entry of "checksums"

// File name -> (size, XXH3-64): the checksums one process recorded while it wrote.
using Checksums = std::map<std::string, std::pair<uint64_t, uint64_t>>;

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

bool Accelerator::checkpoint_writer() const {
  return is_main_process() ||
         (options_.project_config().save_on_each_node() && is_local_main_process());
}

StateDict Accelerator::cpu_state_dict(const torch::nn::Module& model) {
  StateDict dict = model_state_dict(model);
  for (auto& entry : dict) entry.second = entry.second.detach().to(c10::kCPU);
  return dict;
}

std::vector<std::shared_ptr<torch::nn::Module>> Accelerator::checkpointed_models() const {
  std::vector<std::shared_ptr<torch::nn::Module>> models;
  for (const Checkpointed& c : checkpointed_)
    if (c.model) models.push_back(c.model);
  return models;
}

namespace {

// Adds `hook` to `hooks` under `id`; returns what removes it (nothing once the Accelerator and
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

HookHandle Accelerator::register_save_state_pre_hook(SaveStatePreHook hook) {
  return HookHandle(add_hook(save_state_pre_hooks_, std::move(hook), next_hook_id_++,
                             "register_save_state_pre_hook"));
}

HookHandle Accelerator::register_load_state_pre_hook(LoadStatePreHook hook) {
  return HookHandle(add_hook(load_state_pre_hooks_, std::move(hook), next_hook_id_++,
                             "register_load_state_pre_hook"));
}

void Accelerator::save_model_impl(const torch::nn::Module& model, const std::string& dir,
                                  const SaveModelOptions& options) {
  wait_for_everyone();
  if (!options_.project_config().save_on_each_node() || num_processes() == 1) {
    if (is_main_process()) save_model_files(model, dir, options);
  } else {
    // Each machine's local main process writes, one after the other: machines that share the
    // folder then rewrite the same files instead of writing them at the same time.
    const std::vector<int> writers = gather_object(std::vector<int>{checkpoint_writer() ? 1 : 0});
    for (int rank = 0; rank < num_processes(); ++rank) {
      if (!writers[static_cast<size_t>(rank)]) continue;
      if (rank == process_index()) save_model_files(model, dir, options);
      wait_for_everyone();
    }
  }
  wait_for_everyone();
}

void Accelerator::save(const at::Tensor& tensor, const std::string& path) const {
  save(std::map<std::string, at::Tensor>{{"tensor", tensor}}, path);
}

void Accelerator::save(const std::map<std::string, at::Tensor>& tensors,
                       const std::string& path) const {
  if (!checkpoint_writer()) return;
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
  // The state dicts to write, given to the pre-hooks first (on every process, as Accelerate).
  // Without hooks, only the processes that write copy their models to the CPU.
  const bool writer = checkpoint_writer();
  const auto save_hooks = *save_state_pre_hooks_;  // a copy: a hook may remove itself
  const auto models = checkpointed_models();
  std::vector<StateDict> weights;
  if (writer || !save_hooks.empty())
    for (const auto& model : models) weights.push_back(cpu_state_dict(*model));
  for (const auto& [id, hook] : save_hooks) {
    (void)id;
    hook(models, weights, target.string());
    if (weights.size() != models.size())
      throw InvalidArgument("accelerate: save_state: a save_state pre-hook left " +
                            std::to_string(weights.size()) + " state dicts for " +
                            std::to_string(models.size()) +
                            " models; it may change the dicts, not add or remove them");
  }
  // Who writes: process 0, or with save_on_each_node the local main process of each machine.
  // Note [save_on_each_node]: machines may still share the folder; then the writers agree
  // that the lowest rank among those that see each other's marker owns the folder (writes the
  // shared files and renames it into place), so one complete copy is written.
  const bool each_node = options_.project_config().save_on_each_node() && num_processes() > 1;
  if (writer) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
  }
  if (each_node) wait_for_everyone();
  if (writer) fs::create_directories(tmp);
  wait_for_everyone();
  bool owner = is_main_process();
  int folder_owner = 0;  // the process that writes the state file of the folder we write into
  const std::string marker = ".writer_";
  if (each_node) {
    if (writer)
      detail::write_file_synced((tmp / (marker + std::to_string(process_index()))).string(), "",
                                "save_state");
    wait_for_everyone();
    // Every process, writer or not, looks: its random states go into the folder it sees.
    folder_owner = std::numeric_limits<int>::max();
    std::error_code no_folder;  // then writing the random states fails below, with a message
    for (fs::directory_iterator it(tmp, no_folder), end; !no_folder && it != end;
         it.increment(no_folder)) {
      const std::string name = it->path().filename().string();
      if (name.rfind(marker, 0) == 0)
        folder_owner = std::min(folder_owner, std::stoi(name.substr(marker.size())));
    }
    owner = writer && folder_owner == process_index();
  }

  // Note [save_state errors]: no write may end the process (a full disk, a read-only folder):
  // each process catches its own error, the processes then agree (one gather), and on any
  // failure process 0 removes the partial folder and every process throws the same error.
  // The previous checkpoint is not touched until every process has written its part.
  // Note [checkpoint checksums]: the checksums travel in the same gather.
  const bool checksums = project.checksums();
  std::string failure;
  Checksums written;
  try {
    std::optional<detail::ChecksumRecorder> recorder;
    if (checksums) recorder.emplace();
    // Every process: its own random states.
    torch::serialize::OutputArchive rng;
    rng.write("cpu", at::detail::getDefaultCPUGenerator().get_state());
    const auto cuda = compat::cuda_rng_states();
    for (size_t i = 0; i < cuda.size(); ++i) rng.write("cuda_" + std::to_string(i), cuda[i]);
    write_archive(tmp / ("random_states_" + std::to_string(process_index()) + ".pt"), rng);
    if (owner) save_main_process_files(tmp, weights);
    if (recorder)
      for (const auto& [path, sum] : recorder->files())
        if (fs::path(path).parent_path() == tmp)
          written[fs::path(path).filename().string()] = {sum.size, sum.digest};
  } catch (const std::exception& e) {
    failure = message_of(e);
  }
  using Report = std::tuple<std::string, int, Checksums>;  // failure, folder owner, checksums
  const std::vector<Report> reports = num_processes() > 1
                                          ? gather_object(Report{failure, folder_owner, written})
                                          : std::vector<Report>{{failure, folder_owner, written}};
  std::string report;
  for (size_t r = 0; r < reports.size(); ++r)
    if (!std::get<0>(reports[r]).empty())
      report += (report.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
                std::get<0>(reports[r]);
  if (!report.empty()) {
    if (owner) {
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
    }
    throw FileError("accelerate: save_state: the checkpoint " + target.string() +
                    " was not written (" + report +
                    "); the partial folder was removed and any previous checkpoint "
                    "there is unchanged");
  }

  std::string rename_failure;
  if (owner) {
    // Written last: its presence marks a complete folder.
    try {
      nlohmann::json objects = nlohmann::json::array();
      for (const Checkpointed& object : checkpointed_)
        objects.push_back({{"kind", object.kind}, {"file", object.file}});
      nlohmann::json state = {{"format", "accelerate-cpp"},       {"version", kFormatVersion},
                              {"num_processes", num_processes()}, {"step", step_},
                              {"iteration", iteration_},          {"objects", objects}};
      if (checksums) {
        nlohmann::json files = nlohmann::json::object();  // of the processes that wrote here
        for (const auto& [unused, owner_rank, sums] : reports)
          if (owner_rank == process_index())
            for (const auto& [name, sum] : sums)
              files[name] = {{"size", sum.first}, {kChecksumKey, detail::checksum_hex(sum.second)}};
        state["checksums"] = files;
      }
      detail::write_json((tmp / kStateFile).string(), state);
    } catch (const std::exception& e) {
      std::error_code ignored;
      fs::remove_all(tmp, ignored);
      rename_failure = "accelerate: save_state: the checkpoint " + target.string() +
                       " was not written (rank " + std::to_string(process_index()) + ": " +
                       message_of(e) +
                       "); the partial folder was removed and any previous checkpoint there "
                       "is unchanged";
    }
  }
  if (owner && rename_failure.empty()) {
    try {
      if (each_node)
        for (const auto& entry : fs::directory_iterator(tmp))
          if (entry.path().filename().string().rfind(marker, 0) == 0) fs::remove(entry.path());
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
  // Also the final barrier: every process learns whether the owners could finish.
  if (num_processes() > 1) {
    std::string all;
    for (const std::string& failure : gather_object(std::vector<std::string>{rename_failure}))
      if (!failure.empty()) all += (all.empty() ? "" : "; ") + failure;
    rename_failure = all;
  }
  if (!rename_failure.empty()) throw FileError(rename_failure);
  ++iteration_;
}

void Accelerator::save_main_process_files(const fs::path& tmp,
                                          const std::vector<StateDict>& weights) {
  size_t model = 0;
  for (const Checkpointed& object : checkpointed_) {
    if (object.model)  // the state dict the pre-hooks saw
      save_safetensors(as_map(weights.at(model++)), (tmp / object.file).string());
    else
      object.save((tmp / object.file).string());
  }
}

// ---- the registry of checkpointed objects ----

void Accelerator::add_checkpointed(const std::string& kind, const std::string& file,
                                   std::function<void(const std::string&)> save,
                                   std::function<void(const std::string&)> load) {
  checkpointed_.push_back({kind, file, std::move(save), std::move(load), nullptr});
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
  if (kind == "models") checkpointed_.back().model = module;
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

namespace {

// Note [load_state errors]: runs `fn` on every process; when it throws on any process, every
// process throws. With one process, or when every process failed with the same message, that
// error itself; else one message naming each failing rank and its error, after `what`: an
// InvalidArgument when the lowest failing rank's error was one, else a FileError. A
// DistributedError (the group itself failed) is thrown at once: no agreement is possible.
void on_every_process(const Accelerator& accelerator, const std::string& what,
                      const std::function<void()>& fn) {
  std::exception_ptr error;
  std::string message;
  bool invalid_argument = false;
  try {
    fn();
  } catch (const DistributedError&) {
    throw;
  } catch (const InvalidArgument& e) {
    error = std::current_exception();
    message = e.what();
    invalid_argument = true;
  } catch (const std::exception& e) {
    error = std::current_exception();
    message = message_of(e);
  }
  if (accelerator.num_processes() == 1) {
    if (error) std::rethrow_exception(error);
    return;
  }
  const auto all = accelerator.gather_object(std::make_pair(message, invalid_argument));
  std::string report;
  bool same = true;
  int first = -1;
  for (size_t r = 0; r < all.size(); ++r) {
    same = same && all[r].first == all[0].first;
    if (all[r].first.empty()) continue;
    if (first < 0) first = static_cast<int>(r);
    report += (report.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
              all[r].first;
  }
  if (first < 0) return;
  if (same && error) std::rethrow_exception(error);  // every process failed alike
  const std::string text = "accelerate: load_state: " + what + " (" + report + ")";
  if (all[static_cast<size_t>(first)].second) throw InvalidArgument(text);
  throw FileError(text);
}

// Note [checkpoint checksums]: checks `path` against its entry in `checksums` (the "checksums"
// object of `state_path`), reading the file once.
void verify_file(const fs::path& path, const nlohmann::json& checksums,
                 const std::string& state_path) {
  const std::string name = path.filename().string();
  const auto entry = checksums.find(name);
  if (entry == checksums.end())
    throw FileError("accelerate: load_state: " + path.string() + " has no checksum in " +
                    state_path +
                    ", which records every file save_state wrote into the folder; the file "
                    "does not belong to this checkpoint");
  const std::string where = state_path + " (checksums, \"" + name + "\")";
  const auto size = detail::field<uint64_t>(*entry, "size", where);
  const auto expected = detail::field<std::string>(*entry, kChecksumKey, where);
  std::error_code error;
  if (!fs::exists(path, error))
    throw FileError("accelerate: load_state: " + path.string() + " is missing; save_state wrote " +
                    std::to_string(size) + " bytes there (XXH3-64 " + expected + ")");
  const detail::FileChecksum got = detail::checksum_file(path.string(), "load_state");
  const std::string got_hex = detail::checksum_hex(got.digest);
  if (got.size != size || got_hex != expected)
    throw FileError(
        "accelerate: load_state: " + path.string() + " is damaged: expected XXH3-64 checksum " +
        expected + " (" + std::to_string(size) + " bytes), got " + got_hex + " (" +
        std::to_string(got.size) + " bytes); the file changed after save_state " + "wrote it");
}

}  // namespace

void Accelerator::load_state(const std::string& input_dir) {
  const ProjectConfiguration& project = options_.project_config();
  // Step 1 (Note [load_state errors]): find and check the checkpoint, verify the files.
  fs::path dir;
  int saved_processes = 0, saved_iteration = 0;
  int64_t saved_step = 0;
  const std::string folder = input_dir.empty() ? "the newest checkpoint" : input_dir;
  on_every_process(*this, "nothing was loaded from " + folder, [&] {
    dir = input_dir;
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
      const auto theirs = count(saved, kind, saved_kind),
                 ours = count(checkpointed_, kind, our_kind);
      if (theirs != ours)
        throw FileError(
            "accelerate: load_state: " + state_path + " holds " + std::to_string(theirs) + " " +
            kind + " but this Accelerator has " + std::to_string(ours) +
            (std::string(kind) == "scaler" ? " (a scaler exists with mixed_precision fp16)"
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
    saved_processes = detail::field<int>(state, "num_processes", state_path);
    saved_step = detail::field<int64_t>(state, "step", state_path);
    saved_iteration = detail::field<int>(state, "iteration", state_path);

    // Every file this process will read, before anything is loaded.
    const auto checksums = state.find("checksums");
    if (!project.checksums() || checksums == state.end()) return;  // unverified
    if (!checksums->is_object())
      throw FileError("accelerate: load_state: " + state_path +
                      ": key \"checksums\" must be an object, got " + checksums->dump());
    for (const Checkpointed& object : checkpointed_)
      verify_file(dir / object.file, *checksums, state_path);
    const fs::path rng_file = dir / ("random_states_" + std::to_string(process_index()) + ".pt");
    if (fs::exists(rng_file) || checksums->contains(rng_file.filename().string()))
      verify_file(rng_file, *checksums, state_path);
  });

  // Step 2: the pre-hooks, then the objects and this process's random states.
  on_every_process(*this, "loading " + dir.string() + " failed", [&] {
    load_same_world_ = saved_processes == num_processes();
    struct Restore {
      bool& same_world;
      ~Restore() { same_world = true; }
    } restore{load_same_world_};
    const auto prepared_models = checkpointed_models();
    auto models = prepared_models;
    const auto load_hooks = *load_state_pre_hooks_;  // a copy: a hook may remove itself
    for (const auto& [id, hook] : load_hooks) {
      (void)id;
      hook(models, dir.string());
      if (models.size() != prepared_models.size())
        throw InvalidArgument("accelerate: load_state: a load_state pre-hook left " +
                              std::to_string(models.size()) + " models of " +
                              std::to_string(prepared_models.size()) +
                              "; set an entry to nullptr to skip loading that model");
    }
    size_t model = 0;
    for (const Checkpointed& object : checkpointed_) {
      if (object.model && !models[model++]) continue;  // the hook loaded it
      object.load((dir / object.file).string());
    }
    if (!load_same_world_)
      print("accelerate: load_state: the checkpoint was written by", saved_processes,
            "processes, this job has", num_processes(),
            "; data loaders restart their saved epoch from its beginning");
    step_ = saved_step;
    if (project.automatic_checkpoint_naming())
      iteration_ = std::max(iteration_, saved_iteration + 1);

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
  });
}

}  // namespace accelerate
