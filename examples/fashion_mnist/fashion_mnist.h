// fashion_mnist.h: Fashion-MNIST as a map-style LibTorch data set, read from Debian's
// dataset-fashion-mnist package (/usr/share/datasets/fashion-mnist).
//
// The four files are gzipped IDX files (the MNIST format): images with magic 2051, a count
// and 28 × 28 pixels each; labels with magic 2049, a count and one byte each. They are read
// once with zlib and checked (missing file, bad magic, wrong shape, truncated or trailing
// data, label out of range, counts that disagree); every error is a std::runtime_error that
// names the file. An example is the image as float [1, 28, 28], scaled to [0, 1] and
// normalised with Fashion-MNIST's mean 0.2860 and std 0.3530, and its class as an int64
// scalar in [0, 9]. Header-only: link zlib (`-lz`, CMake's ZLIB::ZLIB).
//
// Example:
//   #include "fashion_mnist.h"
//   fashion_mnist::FashionMnist train(fashion_mnist::Split::kTrain);
//   accelerate::DataLoader<fashion_mnist::FashionMnist> loader(
//       train, accelerate::DataLoaderOptions().batch_size(64).shuffle(true));
//   for (auto& batch : loader) { /* batch.data: [64, 1, 28, 28], batch.target: [64] */ }
#pragma once

#include <ATen/ATen.h>
#include <torch/data/datasets/base.h>
#include <torch/data/example.h>
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace fashion_mnist {

/// Which part of Fashion-MNIST to read.
enum class Split {
  kTrain,  ///< 60000 examples (train-*-ubyte.gz)
  kTest,   ///< 10000 examples (t10k-*-ubyte.gz)
};

/// Where Debian's dataset-fashion-mnist package puts the files.
inline const char* const kDefaultFolder = "/usr/share/datasets/fashion-mnist";

/// The ten classes, by label.
inline const char* const kClassNames[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                            "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                            "Bag",         "Ankle boot"};

/// Fashion-MNIST, one split, held in memory as bytes (47 MB for the train split).
class FashionMnist : public torch::data::datasets::Dataset<FashionMnist, torch::data::Example<>> {
 public:
  /// Mean of the training pixels scaled to [0, 1].
  static constexpr double kMean = 0.2860;
  /// Standard deviation of the training pixels scaled to [0, 1].
  static constexpr double kStd = 0.3530;
  /// Image height and width.
  static constexpr int64_t kSide = 28;

  /// Reads `split` from `folder`. Throws std::runtime_error naming the file on any problem.
  explicit FashionMnist(Split split = Split::kTrain, const std::string& folder = kDefaultFolder)
      : split_(split) {
    const std::string prefix = folder + "/" + (split == Split::kTrain ? "train" : "t10k");
    auto image_file = resolve(prefix + "-images-idx3-ubyte");
    auto label_file = resolve(prefix + "-labels-idx1-ubyte");
    auto image_bytes = read_gzip(image_file);
    auto label_bytes = read_gzip(label_file);

    const uint32_t image_count = header(image_file, image_bytes, 2051, 16);
    if (word(image_bytes, 8) != kSide || word(image_bytes, 12) != kSide)
      fail(image_file, "images are " + std::to_string(word(image_bytes, 8)) + "x" +
                           std::to_string(word(image_bytes, 12)) + ", expected 28x28");
    check_length(image_file, image_bytes, 16, uint64_t{image_count} * kSide * kSide);
    const uint32_t label_count = header(label_file, label_bytes, 2049, 8);
    check_length(label_file, label_bytes, 8, label_count);
    if (image_count != label_count)
      fail(label_file, "holds " + std::to_string(label_count) + " labels but " + image_file +
                           " holds " + std::to_string(image_count) + " images");

    images_ = at::empty({int64_t{image_count}, kSide, kSide}, at::kByte);
    std::memcpy(images_.data_ptr<uint8_t>(), image_bytes.data() + 16, images_.numel());
    targets_ = at::empty({int64_t{label_count}}, at::kLong);
    auto* targets = targets_.data_ptr<int64_t>();
    for (uint32_t i = 0; i < label_count; ++i) {
      const uint8_t label = label_bytes[8 + i];
      if (label > 9)
        fail(label_file, "label " + std::to_string(label) + " of example " + std::to_string(i) +
                             " is not in [0, 9]");
      targets[i] = label;
    }
  }

  /// Reads `split` (default train) from `folder`.
  explicit FashionMnist(const std::string& folder, Split split = Split::kTrain)
      : FashionMnist(split, folder) {}

  /// Example `index`: data float [1, 28, 28] normalised, target int64 scalar in [0, 9].
  /// Safe to call from several threads at once.
  torch::data::Example<> get(size_t index) override {
    const auto n = static_cast<size_t>(images_.size(0));
    if (index >= n)
      throw std::out_of_range("FashionMnist: index " + std::to_string(index) +
                              " out of range [0, " + std::to_string(n) + ")");
    const auto i = static_cast<int64_t>(index);
    at::Tensor data = images_[i].to(at::kFloat).div_(255.0).sub_(kMean).div_(kStd).unsqueeze(0);
    return {data, targets_[i].clone()};
  }

  /// Number of examples: 60000 (train) or 10000 (test).
  c10::optional<size_t> size() const override { return static_cast<size_t>(images_.size(0)); }

  /// Which split this is.
  Split split() const { return split_; }
  /// All images as read, uint8 [N, 28, 28].
  const at::Tensor& images() const { return images_; }
  /// All labels, int64 [N].
  const at::Tensor& targets() const { return targets_; }

 private:
  [[noreturn]] static void fail(const std::string& file, const std::string& what) {
    throw std::runtime_error("FashionMnist: " + file + ": " + what);
  }

  static bool exists(const std::string& path) { return std::ifstream(path).good(); }

  // The gzipped file, else an uncompressed one of the same name (zlib reads both).
  static std::string resolve(const std::string& stem) {
    if (exists(stem + ".gz")) return stem + ".gz";
    if (exists(stem)) return stem;
    fail(stem + ".gz", "missing (is the dataset-fashion-mnist package installed?)");
  }

  static std::vector<uint8_t> read_gzip(const std::string& file) {
    gzFile in = gzopen(file.c_str(), "rb");
    if (!in) fail(file, "cannot be opened");
    std::vector<uint8_t> bytes;
    std::vector<uint8_t> chunk(1 << 20);
    for (;;) {
      const int got = gzread(in, chunk.data(), static_cast<unsigned>(chunk.size()));
      if (got < 0) {
        int code = 0;
        std::string message = gzerror(in, &code);
        gzclose(in);
        fail(file, "corrupt or truncated gzip data (" + message + ")");
      }
      if (got == 0) break;
      bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + got);
    }
    int code = Z_OK;
    std::string message = gzerror(in, &code);
    gzclose(in);
    // gzread reports a stream cut short as an end of file, with Z_BUF_ERROR set.
    if (code != Z_OK) fail(file, "corrupt or truncated gzip data (" + message + ")");
    return bytes;
  }

  static uint32_t word(const std::vector<uint8_t>& bytes, size_t at) {
    return uint32_t{bytes[at]} << 24 | uint32_t{bytes[at + 1]} << 16 |
           uint32_t{bytes[at + 2]} << 8 | uint32_t{bytes[at + 3]};
  }

  // Checks the magic number and returns the count.
  static uint32_t header(const std::string& file, const std::vector<uint8_t>& bytes, uint32_t magic,
                         size_t header_size) {
    if (bytes.size() < header_size)
      fail(file, "truncated: " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                     std::to_string(header_size) + "-byte IDX header");
    if (word(bytes, 0) != magic)
      fail(file, "bad magic number " + std::to_string(word(bytes, 0)) + ", expected " +
                     std::to_string(magic));
    return word(bytes, 4);
  }

  static void check_length(const std::string& file, const std::vector<uint8_t>& bytes,
                           size_t header_size, uint64_t payload) {
    const uint64_t have = bytes.size() - header_size;
    if (have < payload)
      fail(file, "truncated: " + std::to_string(have) + " data bytes, expected " +
                     std::to_string(payload));
    if (have > payload)
      fail(file, std::to_string(have - payload) + " unexpected bytes after the data");
  }

  Split split_;
  at::Tensor images_;
  at::Tensor targets_;
};

}  // namespace fashion_mnist
