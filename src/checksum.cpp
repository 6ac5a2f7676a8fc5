#include "checksum.h"

#include "accelerate/errors.h"

// Header only: the hash is compiled here, so nothing links libxxhash (static library users
// need no extra dependency).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

namespace accelerate::detail {

struct Checksum::State {
  XXH3_state_t xxh;
};

Checksum::Checksum() : state_(std::make_unique<State>()) { XXH3_64bits_reset(&state_->xxh); }

Checksum::~Checksum() = default;

void Checksum::update(const void* data, std::size_t n) {
  if (n > 0) XXH3_64bits_update(&state_->xxh, data, n);
}

uint64_t Checksum::digest() const { return XXH3_64bits_digest(&state_->xxh); }

uint64_t checksum_of(const void* data, std::size_t n) { return XXH3_64bits(data, n); }

std::string checksum_hex(uint64_t digest) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(digest));
  return text;
}

FileChecksum checksum_file(const std::string& path, const std::string& api) {
  auto fail = [&](int error) {
    return FileError("accelerate: " + api + ": cannot read " + path + ": " + std::strerror(error));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail(errno);
  // read() into a buffer that stays in the core's cache (about as fast as a mapping when the
  // file is cached, as fast when it is not); SEQUENTIAL widens the kernel's read-ahead and,
  // unlike MADV_SEQUENTIAL on a mapping, does not mark the pages for early reclaim.
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<char> buffer(1 << 20);
  Checksum sum;
  FileChecksum result;
  for (;;) {
    const ssize_t n = ::read(fd, buffer.data(), buffer.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      throw fail(error);
    }
    if (n == 0) break;
    sum.update(buffer.data(), static_cast<std::size_t>(n));
    result.size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  result.digest = sum.digest();
  return result;
}

}  // namespace accelerate::detail
