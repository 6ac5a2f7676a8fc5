// The one temporary folder of the tests: `TempDir` makes a fresh folder under the system's
// temporary directory and removes it, with everything in it, when it goes out of scope (also
// when an assertion returns early); `TempDirTest` is the GoogleTest fixture holding one per
// test as `dir_`. Plain C++ (no LibTorch), so the launcher tests use it too.
//
// Example:
//   TEST(Checkpoint, RoundTrip) {
//     accelerate::testing::TempDir dir;
//     accelerator.save_state(dir.path("ckpt"));
//   }  // the folder is gone
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>

namespace accelerate::testing {

/// A fresh folder, removed with its contents on destruction. Not copyable or movable.
class TempDir {
 public:
  /// Creates <temp>/accelerate_test_XXXXXX; throws std::runtime_error when it cannot.
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "accelerate_test_XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error("TempDir: mkdtemp(" + pattern + "): " + std::strerror(errno));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// The folder.
  const std::filesystem::path& path() const { return path_; }
  /// `name` inside the folder, as a string.
  std::string path(const std::string& name) const { return (path_ / name).string(); }
  /// The folder, as a string.
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

/// A GoogleTest fixture with a fresh temporary folder per test (`dir_`), removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  /// `name` inside the folder.
  std::string path(const std::string& name) const { return temp_.path(name); }

  TempDir temp_;
  const std::filesystem::path dir_ = temp_.path();
};

}  // namespace accelerate::testing
