// Internal: the folder save_state writes and load_state reads, and its rename protocol.
//
// Note [checkpoint folder]: a save never writes into the checkpoint it replaces. It stages
// everything in "<dir>.tmp"; the process that owns the folder then renames the old "<dir>" to
// "<dir>.previous", the staging folder to "<dir>", and removes "<dir>.previous". A crash at any
// point leaves one complete checkpoint: the old "<dir>" (the staging folder is not yet renamed),
// or "<dir>.previous" (between the two renames), which the next load (readable()) and the next
// save (commit()) take back. A folder is complete when it holds kStateFile, written last.
//
// Note [save_on_each_node]: with save_on_each_node each machine's local main process writes,
// but machines may still share the folder. Each writer drops a marker ".writer_<rank>" into
// the staging folder; every process then looks, and the lowest rank among the markers it sees
// owns the folder it writes into (writes the shared files, the state file and renames it into
// place), so one complete copy is written per file system.
#pragma once

#include <cstdint>
#include <filesystem>
#include <utility>
#include <vector>

#include "accelerate/state.h"

namespace accelerate::detail {

/// One save_state's folder: staged on construction, renamed into place by commit().
class CheckpointFolder {
 public:
  /// The file written last into a checkpoint folder: its presence marks a complete folder.
  static constexpr const char* kStateFile = "accelerator_state.json";

  /// Stages a save into `target` (a collective: every process of `state` calls it). The
  /// `writer` processes (process 0, or each machine's local main with `each_node`) empty
  /// "<target>.tmp" and create it; with `each_node` they elect the folder's owner
  /// (Note [save_on_each_node]).
  CheckpointFolder(const State& state, std::filesystem::path target, bool writer, bool each_node);

  /// The folder the checkpoint becomes.
  const std::filesystem::path& target() const { return target_; }
  /// The staging folder, "<target>.tmp", where every process writes its files.
  const std::filesystem::path& staging() const { return staging_; }
  /// True on the process that writes the shared files and commits this folder.
  bool owner() const { return owner_; }
  /// The rank that owns the folder this process writes into.
  int folder_owner() const { return folder_owner_; }

  /// Removes the staging folder (the owner, after a failed save); never throws.
  void discard() const;
  /// Renames the staging folder into place (the owner; Note [checkpoint folder]), then removes
  /// the oldest numbered checkpoints beside it beyond `keep_newest` (0: keeps all). Throws
  /// FileError "accelerate: save_state: moving <staging> into place failed: ...".
  void commit(int keep_newest = 0) const;

  /// The numbered checkpoint_<n> folders in `dir`, oldest first.
  static std::vector<std::pair<int64_t, std::filesystem::path>> numbered(
      const std::filesystem::path& dir);
  /// The folder a load reads for `dir`: `dir`, or "<dir>.previous" when a save died between
  /// its two renames (Note [checkpoint folder]).
  static std::filesystem::path readable(const std::filesystem::path& dir);

 private:
  void rename_into_place() const;

  std::filesystem::path target_, staging_;
  bool each_node_;
  bool owner_;
  int folder_owner_ = 0;
};

}  // namespace accelerate::detail
