// Internal: the checksum that save_state records for every file it writes and load_state
// verifies before it uses a file (Note [checkpoint checksums] in accelerator_checkpoint.cpp).
//
// The checksum is XXH3-64 (seed 0), from Debian's libxxhash-dev, compiled into the library
// (header only, nothing to link): 21 GB/s on one core of the test machine, where zlib's
// crc32 gives 4 GB/s and a hardware CRC-32C of one stream 10 GB/s (bench/RESULTS.md). A
// digest is written as `xxhsum -H3` prints it: 16 lowercase hexadecimal digits.
//
// Example:
//   detail::Checksum sum;
//   sum.update(bytes.data(), bytes.size());
//   std::string hex = detail::checksum_hex(sum.digest());
//   detail::FileChecksum file = detail::checksum_file("ckpt/model.safetensors", "load_state");
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace accelerate::detail {

/// XXH3-64 of a stream of bytes given in pieces (the same digest as of the bytes at once).
class Checksum {
 public:
  Checksum();
  ~Checksum();
  Checksum(const Checksum&) = delete;
  Checksum& operator=(const Checksum&) = delete;

  /// Adds `n` bytes.
  void update(const void* data, std::size_t n);
  /// The digest of every byte added so far.
  uint64_t digest() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

/// XXH3-64 of `n` bytes.
uint64_t checksum_of(const void* data, std::size_t n);

/// `digest` as 16 lowercase hexadecimal digits (as `xxhsum -H3` prints it).
std::string checksum_hex(uint64_t digest);

/// What is recorded of a file: its size and checksum.
struct FileChecksum {
  uint64_t size = 0;
  uint64_t digest = 0;
  bool operator==(const FileChecksum& o) const { return size == o.size && digest == o.digest; }
  bool operator!=(const FileChecksum& o) const { return !(*this == o); }
};

/// Reads `path` once, from the start to its end, and returns its size and checksum. The pages
/// stay in the page cache, so that a reader right after it does not go to the disk again.
/// FileError "accelerate: <api>: cannot read <path>: <reason>" when it cannot be read.
FileChecksum checksum_file(const std::string& path, const std::string& api);

}  // namespace accelerate::detail
