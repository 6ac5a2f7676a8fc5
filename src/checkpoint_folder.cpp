#include "checkpoint_folder.h"

#include <algorithm>
#include <limits>
#include <regex>
#include <string>
#include <system_error>

#include "accelerate/errors.h"
#include "files.h"

namespace fs = std::filesystem;

namespace accelerate::detail {

namespace {

const std::string kMarker = ".writer_";  // Note [save_on_each_node]

fs::path with_suffix(const fs::path& dir, const char* suffix) { return dir.string() + suffix; }

}  // namespace

CheckpointFolder::CheckpointFolder(const State& state, fs::path target, bool writer, bool each_node)
    : target_(std::move(target)),
      staging_(with_suffix(target_, ".tmp")),
      each_node_(each_node),
      owner_(state.is_main_process()) {
  if (writer) {
    std::error_code ignored;
    fs::remove_all(staging_, ignored);
  }
  if (each_node_) state.wait_for_everyone();
  if (writer) fs::create_directories(staging_);
  state.wait_for_everyone();
  if (!each_node_) return;
  const int rank = state.process_index();
  if (writer)
    write_file_synced((staging_ / (kMarker + std::to_string(rank))).string(), "", "save_state");
  state.wait_for_everyone();
  // Every process, writer or not, looks: its random states go into the folder it sees.
  folder_owner_ = std::numeric_limits<int>::max();
  std::error_code no_folder;  // then writing into it fails later, with a message
  for (fs::directory_iterator it(staging_, no_folder), end; !no_folder && it != end;
       it.increment(no_folder)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kMarker, 0) == 0)
      folder_owner_ = std::min(folder_owner_, std::stoi(name.substr(kMarker.size())));
  }
  owner_ = writer && folder_owner_ == rank;
}

void CheckpointFolder::discard() const {
  std::error_code ignored;
  fs::remove_all(staging_, ignored);
}

void CheckpointFolder::commit(int keep_newest) const {
  try {
    rename_into_place();
    if (keep_newest > 0) {
      const auto all = numbered(target_.parent_path());
      for (size_t i = 0; i + static_cast<size_t>(keep_newest) < all.size(); ++i)
        fs::remove_all(all[i].second);
    }
  } catch (const std::exception& e) {
    throw FileError("accelerate: save_state: moving " + staging_.string() +
                    " into place failed: " + e.what());
  }
}

void CheckpointFolder::rename_into_place() const {
  if (each_node_)
    for (const auto& entry : fs::directory_iterator(staging_))
      if (entry.path().filename().string().rfind(kMarker, 0) == 0) fs::remove(entry.path());
  const fs::path previous = with_suffix(target_, ".previous");
  if (!fs::exists(target_) && fs::exists(previous))
    fs::rename(previous, target_);  // an earlier save died between its two renames
  else
    fs::remove_all(previous);
  if (fs::exists(target_)) fs::rename(target_, previous);
  sync_folder(staging_.string(), "save_state");
  fs::rename(staging_, target_);
  sync_folder(target_.parent_path().empty() ? "." : target_.parent_path().string(), "save_state");
  fs::remove_all(previous);
}

std::vector<std::pair<int64_t, fs::path>> CheckpointFolder::numbered(const fs::path& dir) {
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

fs::path CheckpointFolder::readable(const fs::path& dir) {
  const fs::path previous = with_suffix(dir, ".previous");
  if (!fs::exists(dir / kStateFile) && fs::exists(previous / kStateFile)) return previous;
  return dir;
}

}  // namespace accelerate::detail
