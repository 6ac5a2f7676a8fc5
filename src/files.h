// Internal: the one way the library writes files that must survive a crash or a full disk,
// and reads whole files.
//
// SyncedFile writes a file and flushes it to the disk (fsync) before it counts as written;
// AtomicFile writes `<path>.tmp` that way, renames it over `path` and flushes the folder, so a
// crash leaves the old file or the new one, never a mix. Every failure (a full disk, a
// read-only folder) is an accelerate::FileError
//   "accelerate: <api>: cannot <write|create|flush|rename> <path>: <the system's reason>"
// and the temporary file is removed; nothing here can end the process.
//
// While a ChecksumRecorder lives on a thread, every SyncedFile (and AtomicFile) that thread
// completes is recorded in it with its size and checksum (checksum.h), computed from the bytes
// on their way to the disk: save_state records its files so, without reading them back.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "checksum.h"

namespace accelerate::detail {

/// Records the size and checksum of every SyncedFile / AtomicFile completed on this thread
/// while it lives (a scope, as LibTorch's NoGradGuard; nested ones restore the outer one).
///
/// Example:
///   ChecksumRecorder recorder;
///   write_file_synced("ckpt.tmp/a.json", "{}", "save_state");
///   recorder.files().at("ckpt.tmp/a.json").size;   // 2
class ChecksumRecorder {
 public:
  ChecksumRecorder();
  ~ChecksumRecorder();
  ChecksumRecorder(const ChecksumRecorder&) = delete;
  ChecksumRecorder& operator=(const ChecksumRecorder&) = delete;

  /// The files completed so far, by the path they were written under (an AtomicFile: its
  /// final path).
  const std::map<std::string, FileChecksum>& files() const { return files_; }
  /// This thread's innermost recorder, or nullptr.
  static ChecksumRecorder* current();
  /// Records `path` (what a completed SyncedFile calls).
  void record(const std::string& path, const FileChecksum& checksum) { files_[path] = checksum; }

 private:
  std::map<std::string, FileChecksum> files_;
  ChecksumRecorder* outer_;
};

/// A file written from the start and flushed to the disk by close().
class SyncedFile {
 public:
  /// Creates (or truncates) `path`; `api` names the caller in errors ("save_state");
  /// `record_as` is the name a ChecksumRecorder records it under (default: `path`).
  SyncedFile(std::string path, std::string api, std::string record_as = {});
  /// Closes without flushing if close() was not called (after an error).
  ~SyncedFile();
  SyncedFile(const SyncedFile&) = delete;
  SyncedFile& operator=(const SyncedFile&) = delete;

  /// Appends `n` bytes.
  void write(const void* data, std::size_t n);
  /// Flushes to the disk and closes.
  void close();
  /// The path being written.
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void fail(const char* step);
  void write_all(const char* bytes, std::size_t n);

  std::string path_, api_, record_as_;
  int fd_ = -1;
  ChecksumRecorder* recorder_;          // this thread's when the file was created
  std::unique_ptr<Checksum> checksum_;  // only with a recorder
  uint64_t size_ = 0;
};

/// A file that replaces `path` only once it is completely on the disk.
class AtomicFile {
 public:
  /// Starts writing `<path>.tmp`.
  AtomicFile(const std::string& path, const std::string& api);
  /// Removes the temporary file unless commit() succeeded.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Appends `n` bytes.
  void write(const void* data, std::size_t n) { file_.write(data, n); }
  /// Flushes, renames over the final path and flushes its folder.
  void commit();

 private:
  std::string path_, api_;
  SyncedFile file_;
  bool committed_ = false;
};

/// `bytes` into `path` through an AtomicFile.
void write_file_atomically(const std::string& path, std::string_view bytes, const std::string& api);

/// `bytes` into `path` through a SyncedFile (for files inside a folder that is itself moved
/// into place afterwards).
void write_file_synced(const std::string& path, std::string_view bytes, const std::string& api);

/// The whole content of `path`; FileError "accelerate: <api>: cannot read <path>:
/// <reason>".
std::string read_file(const std::string& path, const std::string& api);

/// Flushes the folder's entries (new names, renames) to the disk; throws like the writers.
void sync_folder(const std::string& dir, const std::string& api);

}  // namespace accelerate::detail
