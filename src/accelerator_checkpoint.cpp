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
// has written its part, so an interrupted save never replaces a complete checkpoint
// (detail::CheckpointFolder, Note [checkpoint folder]). What is written, object by object, is
// the Accelerator's detail::CheckpointRegistry.
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
#include <optional>
#include <sstream>
#include <tuple>

#include "accelerate/accelerator.h"
#include "accelerate/safetensors.h"
#include "checkpoint_folder.h"
#include "checkpoint_registry.h"
#include "checksum.h"
#include "compat.h"
#include "errors.h"
#include "files.h"
#include "json_file.h"

namespace fs = std::filesystem;

namespace accelerate {

using detail::CheckpointFolder;
using detail::message_of;

namespace {

constexpr const char* kStateFile = CheckpointFolder::kStateFile;
constexpr int kFormatVersion = 2;                // 2: one file per object, listed under "objects"
constexpr const char* kChecksumKey = "xxh3_64";  // of each entry of "checksums"

// File name -> (size, XXH3-64): the checksums one process recorded while it wrote.
using Checksums = std::map<std::string, std::pair<uint64_t, uint64_t>>;
// What one process tells the others after writing: its failure ("" if none), the owner of the
// folder it wrote into, the checksums of its files.
using Report = std::tuple<std::string, int, Checksums>;

// Writes checkpoints and models: process 0, or with save_on_each_node each local main.
bool writes_files(const State& state, const ProjectConfiguration& project) {
  return state.is_main_process() || (project.save_on_each_node() && state.is_local_main_process());
}

// The folder of automatic checkpoints, or an error naming `what` when there is none.
fs::path automatic_checkpoints(const ProjectConfiguration& project, const char* what) {
  if (!project.automatic_checkpoint_naming())
    throw InvalidArgument(std::string("accelerate: ") + what +
                          " needs a folder, or ProjectConfiguration with "
                          "automatic_checkpoint_naming(true)");
  return fs::path(project.project_dir()) / "checkpoints";
}

// The next automatic checkpoint_<iteration>, which must not exist yet.
fs::path next_checkpoint(const ProjectConfiguration& project, int iteration) {
  fs::path target =
      automatic_checkpoints(project, "save_state") / ("checkpoint_" + std::to_string(iteration));
  if (fs::exists(target))
    throw InvalidArgument("accelerate: save_state: checkpoint folder " + target.string() +
                          " already exists (iteration " + std::to_string(iteration) +
                          "); set ProjectConfiguration().iteration(n) to continue after it");
  return target;
}

std::string random_states_file(int rank) { return "random_states_" + std::to_string(rank) + ".pt"; }

// A LibTorch archive, serialised in memory first: writing it straight to a file makes
// LibTorch throw from a destructor when the disk is full, which aborts the process.
void write_archive(const fs::path& path, torch::serialize::OutputArchive& archive) {
  std::ostringstream out;
  archive.save_to(out);
  detail::write_file_synced(path.string(), out.str(), "save_state");
}

// Note [save_state errors]: no write may end the process (a full disk, a read-only folder):
// each process catches its own error, the processes then agree (one gather), and on any
// failure the owner removes the partial folder and every process throws the same error. The
// previous checkpoint is not touched until every process has written its part.
// Note [checkpoint checksums]: the checksums travel in the same gather.
Report write_part(const CheckpointFolder& folder, int rank,
                  const detail::CheckpointRegistry& registry, const std::vector<StateDict>& weights,
                  bool checksums) {
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
    write_archive(folder.staging() / random_states_file(rank), rng);
    if (folder.owner()) registry.save(folder.staging(), weights);
    if (recorder)
      for (const auto& [path, sum] : recorder->files())
        if (fs::path(path).parent_path() == folder.staging())
          written[fs::path(path).filename().string()] = {sum.size, sum.digest};
  } catch (const std::exception& e) {
    failure = message_of(e);
  }
  return {failure, folder.folder_owner(), written};
}

// Every process's report; on any failure the owner removes the staging folder and every process
// throws the same FileError (Note [save_state errors]).
std::vector<Report> agree_on_writes(const Accelerator& accelerator, const CheckpointFolder& folder,
                                    Report mine) {
  const std::vector<Report> reports = accelerator.num_processes() > 1
                                          ? accelerator.gather_object(mine)
                                          : std::vector<Report>{std::move(mine)};
  std::string report;
  for (size_t r = 0; r < reports.size(); ++r)
    if (!std::get<0>(reports[r]).empty())
      report += (report.empty() ? "" : "; ") + std::string("rank ") + std::to_string(r) + ": " +
                std::get<0>(reports[r]);
  if (report.empty()) return reports;
  if (folder.owner()) folder.discard();
  throw FileError("accelerate: save_state: the checkpoint " + folder.target().string() +
                  " was not written (" + report +
                  "); the partial folder was removed and any previous checkpoint "
                  "there is unchanged");
}

// The owner's last step: writes the state file (last: its presence marks a complete folder)
// with the checksums of the processes that wrote into this folder, then renames the folder into
// place. Returns the error, or "".
std::string commit(const CheckpointFolder& folder, int rank, nlohmann::json state,
                   const std::vector<Report>& reports, bool checksums, int keep_newest) {
  try {
    if (checksums) {
      nlohmann::json files = nlohmann::json::object();
      for (const auto& [unused, owner_rank, sums] : reports)
        if (owner_rank == rank)
          for (const auto& [name, sum] : sums)
            files[name] = {{"size", sum.first}, {kChecksumKey, detail::checksum_hex(sum.second)}};
      state["checksums"] = files;
    }
    detail::write_json((folder.staging() / kStateFile).string(), state);
  } catch (const std::exception& e) {
    folder.discard();
    return "accelerate: save_state: the checkpoint " + folder.target().string() +
           " was not written (rank " + std::to_string(rank) + ": " + message_of(e) +
           "); the partial folder was removed and any previous checkpoint there is unchanged";
  }
  try {
    folder.commit(keep_newest);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

StateDict Accelerator::cpu_state_dict(const torch::nn::Module& model) {
  StateDict dict = model_state_dict(model);
  for (auto& entry : dict) entry.second = entry.second.detach().to(c10::kCPU);
  return dict;
}

HookHandle Accelerator::register_save_state_pre_hook(SaveStatePreHook hook) {
  return HookHandle(checkpoints_->add_save_hook(std::move(hook)));
}

HookHandle Accelerator::register_load_state_pre_hook(LoadStatePreHook hook) {
  return HookHandle(checkpoints_->add_load_hook(std::move(hook)));
}

void Accelerator::save_model_impl(const torch::nn::Module& model, const std::string& dir,
                                  const SaveModelOptions& options) {
  wait_for_everyone();
  if (!options_.project_config().save_on_each_node() || num_processes() == 1) {
    if (is_main_process()) save_model_files(model, dir, options);
  } else {
    // Each machine's local main process writes, one after the other: machines that share the
    // folder then rewrite the same files instead of writing them at the same time.
    const std::vector<int> writers =
        gather_object(std::vector<int>{writes_files(state_, options_.project_config()) ? 1 : 0});
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
  if (!writes_files(state_, options_.project_config())) return;
  const bool safetensors = fs::path(path).extension() == ".safetensors";
  if (safetensors)
    save_safetensors(tensors, path);
  else
    save_pytorch_bin(StateDict(tensors.begin(), tensors.end()), path);
}

void Accelerator::save_state(const std::string& output_dir) {
  const ProjectConfiguration& project = options_.project_config();
  // As Accelerate: with automatic naming the folder is always the next checkpoint_N (a given
  // folder is ignored), and every save advances the iteration.
  const bool automatic = output_dir.empty() || project.automatic_checkpoint_naming();
  const fs::path target = automatic ? next_checkpoint(project, iteration_) : fs::path(output_dir);
  // 1. The state dicts to write, given to the pre-hooks first (on every process, as
  // Accelerate). Without hooks, only the processes that write copy their models to the CPU.
  const bool writer = writes_files(state_, project);
  const auto models = checkpoints_->models();
  std::vector<StateDict> weights;
  if (writer || checkpoints_->has_save_hooks())
    for (const auto& model : models) weights.push_back(cpu_state_dict(*model));
  checkpoints_->run_save_hooks(models, weights, target.string());
  // 2. The staging folder, and who owns it.
  const CheckpointFolder folder(state_, target, writer,
                                project.save_on_each_node() && num_processes() > 1);
  // 3. Every process writes its part; 4. all agree on the outcome.
  const std::vector<Report> reports = agree_on_writes(
      *this, folder,
      write_part(folder, process_index(), *checkpoints_, weights, project.checksums()));
  // 5. The owner writes the state file and renames the folder into place.
  std::string failure;
  if (folder.owner()) {
    const nlohmann::json state = {
        {"format", "accelerate-cpp"},       {"version", kFormatVersion},
        {"num_processes", num_processes()}, {"step", step_},
        {"iteration", iteration_},          {"objects", checkpoints_->describe()}};
    failure = commit(folder, process_index(), state, reports, project.checksums(),
                     automatic ? project.total_limit() : 0);
  }
  // Also the final barrier: every process learns whether the owners could finish.
  if (num_processes() > 1) {
    std::string all;
    for (const std::string& f : gather_object(std::vector<std::string>{failure}))
      if (!f.empty()) all += (all.empty() ? "" : "; ") + f;
    failure = all;
  }
  if (!failure.empty()) throw FileError(failure);
  ++iteration_;
}

// ---- the registry of checkpointed objects (checkpoint_registry.h) ----

void Accelerator::checkpoint_module(const std::string& kind, const std::string& stem,
                                    std::shared_ptr<torch::nn::Module> module) {
  checkpoints_->add_module(kind, stem, std::move(module));
}

void Accelerator::checkpoint_custom(
    std::function<std::string()> save,
    std::function<void(const std::string&, const std::string&)> load) {
  checkpoints_->add_custom(std::move(save), std::move(load));
}

void Accelerator::checkpoint_loader(std::shared_ptr<DataLoaderBase> loader) {
  checkpoints_->add_loader(std::move(loader));
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

// The newest automatic checkpoint_<n>.
fs::path newest_checkpoint(const ProjectConfiguration& project) {
  const fs::path checkpoints = automatic_checkpoints(project, "load_state");
  const auto all = CheckpointFolder::numbered(checkpoints);
  if (all.empty())
    throw FileError("accelerate: load_state: no checkpoint_<n> folder in " + checkpoints.string());
  return all.back().second;
}

// The state file of the checkpoint `dir`, of the format this accelerate-cpp reads.
nlohmann::json read_state_file(const fs::path& dir) {
  const fs::path state_file = dir / kStateFile;
  if (!fs::exists(state_file))
    throw FileError("accelerate: load_state: " + dir.string() +
                    " is not a complete checkpoint (no " + kStateFile + ")");
  const std::string state_path = state_file.string();
  nlohmann::json state = detail::read_json(state_path);
  const int version = detail::field<int>(state, "version", state_path);
  if (version != kFormatVersion)
    throw FileError("accelerate: load_state: " + state_path + " is format version " +
                    std::to_string(version) + "; this accelerate-cpp reads version " +
                    std::to_string(kFormatVersion));
  return state;
}

// Note [checkpoint checksums]: verifies every file this process will read from `dir` (the
// objects' files and its own random states) against the "checksums" of `state`.
void verify_files(const fs::path& dir, const nlohmann::json& state, const std::string& state_path,
                  const detail::CheckpointRegistry& registry, int rank) {
  const auto checksums = state.find("checksums");
  if (checksums == state.end()) return;  // unverified
  if (!checksums->is_object())
    throw FileError("accelerate: load_state: " + state_path +
                    ": key \"checksums\" must be an object, got " + checksums->dump());
  for (const auto& object : registry.entries())
    verify_file(dir / object.file, *checksums, state_path);
  const fs::path rng_file = dir / random_states_file(rank);
  if (fs::exists(rng_file) || checksums->contains(rng_file.filename().string()))
    verify_file(rng_file, *checksums, state_path);
}

// Restores this process's generators from `file`.
void load_random_states(const fs::path& file) {
  std::string key = "cpu";
  try {
    torch::serialize::InputArchive rng;
    rng.load_from(file.string());
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
                    "\" from " + file.string() + " (a corrupt or foreign file?): " + message_of(e));
  }
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
    dir = CheckpointFolder::readable(input_dir.empty() ? newest_checkpoint(project)
                                                       : fs::path(input_dir));
    const std::string state_path = (dir / kStateFile).string();
    const nlohmann::json state = read_state_file(dir);
    checkpoints_->check(detail::field<std::vector<nlohmann::json>>(state, "objects", state_path),
                        state_path);
    saved_processes = detail::field<int>(state, "num_processes", state_path);
    saved_step = detail::field<int64_t>(state, "step", state_path);
    saved_iteration = detail::field<int>(state, "iteration", state_path);
    if (project.checksums()) verify_files(dir, state, state_path, *checkpoints_, process_index());
  });

  // Step 2: the pre-hooks, then the objects and this process's random states.
  on_every_process(*this, "loading " + dir.string() + " failed", [&] {
    const bool same_world = saved_processes == num_processes();
    checkpoints_->load(dir, checkpoints_->run_load_hooks(dir.string()), same_world);
    if (!same_world)
      print("accelerate: load_state: the checkpoint was written by", saved_processes,
            "processes, this job has", num_processes(),
            "; data loaders restart their saved epoch from its beginning");
    step_ = saved_step;
    if (project.automatic_checkpoint_naming())
      iteration_ = std::max(iteration_, saved_iteration + 1);
    const fs::path rng_file = dir / random_states_file(process_index());
    if (fs::exists(rng_file))
      load_random_states(rng_file);
    else
      print("accelerate: load_state: no", rng_file.filename().string(),
            "in the checkpoint; random states are not restored");
  });
}

}  // namespace accelerate
