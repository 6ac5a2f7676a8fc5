#include "files.h"

#include "accelerate/errors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace accelerate::detail {

namespace {
FileError failure(const std::string& api, const char* step, const std::string& path, int error) {
  return FileError("accelerate: " + api + ": cannot " + step + " " + path + ": " +
                   std::strerror(error));
}
thread_local ChecksumRecorder* current_recorder = nullptr;
}  // namespace

ChecksumRecorder::ChecksumRecorder() : outer_(current_recorder) { current_recorder = this; }

ChecksumRecorder::~ChecksumRecorder() { current_recorder = outer_; }

ChecksumRecorder* ChecksumRecorder::current() { return current_recorder; }

SyncedFile::SyncedFile(std::string path, std::string api, std::string record_as)
    : path_(std::move(path)),
      api_(std::move(api)),
      record_as_(std::move(record_as)),
      recorder_(ChecksumRecorder::current()) {
  if (recorder_) checksum_ = std::make_unique<Checksum>();
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("create");
}

SyncedFile::~SyncedFile() {
  if (fd_ >= 0) ::close(fd_);
}

void SyncedFile::fail(const char* step) {
  const int error = errno;
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  throw failure(api_, step, path_, error);
}

void SyncedFile::write(const void* data, std::size_t n) {
  const char* bytes = static_cast<const char*>(data);
  if (!checksum_) return write_all(bytes, n);
  // In pieces that stay in the core's cache between the checksum and the copy into the page
  // cache, so that the bytes come from memory once.
  constexpr std::size_t kPiece = 256 << 10;
  while (n > 0) {
    const std::size_t piece = std::min(n, kPiece);
    checksum_->update(bytes, piece);
    write_all(bytes, piece);
    size_ += piece;
    bytes += piece;
    n -= piece;
  }
}

void SyncedFile::write_all(const char* bytes, std::size_t n) {
  while (n > 0) {
    const ssize_t written = ::write(fd_, bytes, n);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) {
      if (written == 0) errno = ENOSPC;
      fail("write");
    }
    bytes += written;
    n -= static_cast<std::size_t>(written);
  }
}

void SyncedFile::close() {
  if (::fsync(fd_) != 0) fail("flush");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) throw failure(api_, "close", path_, errno);
  if (recorder_)
    recorder_->record(record_as_.empty() ? path_ : record_as_, {size_, checksum_->digest()});
}

AtomicFile::AtomicFile(const std::string& path, const std::string& api)
    : path_(path), api_(api), file_(path + ".tmp", api, path) {}

AtomicFile::~AtomicFile() {
  if (!committed_) std::remove(file_.path().c_str());
}

void AtomicFile::commit() {
  file_.close();
  if (std::rename(file_.path().c_str(), path_.c_str()) != 0)
    throw failure(api_, "rename", file_.path() + " to " + path_, errno);
  committed_ = true;
  const auto folder = std::filesystem::path(path_).parent_path();
  sync_folder(folder.empty() ? "." : folder.string(), api_);
}

void write_file_atomically(const std::string& path, std::string_view bytes,
                           const std::string& api) {
  AtomicFile file(path, api);
  file.write(bytes.data(), bytes.size());
  file.commit();
}

void write_file_synced(const std::string& path, std::string_view bytes, const std::string& api) {
  SyncedFile file(path, api);
  file.write(bytes.data(), bytes.size());
  file.close();
}

std::string read_file(const std::string& path, const std::string& api) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw failure(api, "read", path, errno);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw failure(api, "read", path, errno);
  return bytes;
}

void sync_folder(const std::string& dir, const std::string& api) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw failure(api, "open", dir, errno);
  const bool ok = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok) throw failure(api, "flush", dir, error);
}

}  // namespace accelerate::detail
