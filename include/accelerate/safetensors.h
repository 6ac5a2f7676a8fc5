// accelerate/safetensors.h: reading and writing the safetensors format.
//
// safetensors (https://github.com/huggingface/safetensors) is the default format of
// Accelerate's `save_model`: an 8-byte little-endian header length N, N bytes of JSON that
// name each tensor's dtype, shape and byte range, then the raw little-endian data. This is an
// independent implementation of its rules: files written here are byte-identical to those of
// the reference writer (tensors sorted by dtype alignment, then by name; the JSON padded with
// spaces to a multiple of 8 bytes), and every malformed file is refused with a
// std::runtime_error naming the file and the broken rule, never a crash. Loading maps the
// file, so tensors alias the mapped pages instead of being read and copied.
//
// Example:
//   accelerate::save_safetensors({{"w", at::ones({2, 3})}}, "/tmp/w.safetensors",
//                                {{"step", "10"}});
//   auto tensors = accelerate::load_safetensors("/tmp/w.safetensors");  // aliases the file
//   accelerate::SafetensorsFile file("/tmp/w.safetensors");
//   auto info = file.info("w");                 // dtype and shape, nothing loaded
//   at::Tensor w = file.get("w").clone();       // an owning copy
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace accelerate {

/// The largest JSON header the format allows (100,000,000 bytes), as the reference does.
constexpr uint64_t kSafetensorsMaxHeaderSize = 100000000;

/// The safetensors name of a LibTorch dtype ("F32" for at::kFloat, ...): BOOL, U8, I8, I16,
/// I32, I64, F16, BF16, F32, F64. Throws std::invalid_argument for any other dtype.
std::string safetensors_dtype_name(at::ScalarType dtype);

/// What a safetensors header says about one tensor.
struct SafetensorsTensorInfo {
  /// The dtype as written in the file ("F32", "BF16", ...).
  std::string dtype_name;
  /// The LibTorch dtype it stands for.
  at::ScalarType dtype = at::kFloat;
  /// The shape; empty for a 0-d tensor.
  std::vector<int64_t> shape;
  /// First byte of the tensor, counted from the start of the data section.
  uint64_t begin = 0;
  /// One past its last byte, counted from the start of the data section.
  uint64_t end = 0;
};

/// A parsed and fully validated safetensors header.
struct SafetensorsHeader {
  /// N, the length of the JSON header in bytes.
  uint64_t header_size = 0;
  /// The `__metadata__` entries (string to string); empty when there are none.
  std::map<std::string, std::string> metadata;
  /// Every tensor, in the order of its data in the file.
  std::vector<std::pair<std::string, SafetensorsTensorInfo>> tensors;
  /// Where the data section starts in the file: 8 + N.
  uint64_t data_offset() const { return 8 + header_size; }
  /// Length of the data section in bytes: the file size - 8 - N.
  uint64_t data_size = 0;
};

/// Parses and validates the header of the safetensors file held in `data` (the whole file,
/// `size` bytes) against every rule of the format: N <= 100,000,000 and 8 + N <= size; UTF-8
/// JSON starting with `{` and without duplicate keys; `__metadata__` maps strings to
/// strings; each tensor entry has exactly `dtype`, `shape` and `data_offsets`; the offsets
/// tile the data section from 0 to its end without holes or overlaps; each range holds
/// numel x element size bytes (overflow-checked). Throws std::runtime_error whose message
/// starts with `name` and names the rule otherwise.
///
/// Example:
///   auto header = accelerate::parse_safetensors_header(bytes.data(), bytes.size(), "buf");
SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& name);

/// A safetensors file opened for reading: the file is mapped (read-only on disk; the
/// mapping is private, so writes to returned tensors stay in this process, copy-on-write)
/// and its header validated on construction. Copies share the mapping, which stays alive as
/// long as the object or any tensor returned by `get` does.
///
/// Example:
///   accelerate::SafetensorsFile file("model.safetensors");
///   for (const auto& name : file.keys()) std::cout << name << file.info(name).shape;
///   at::Tensor w = file.get("fc1.weight");
class SafetensorsFile {
 public:
  /// Maps and validates `path`; throws std::runtime_error naming the path and the broken rule
  /// when the file cannot be read or is malformed.
  explicit SafetensorsFile(const std::string& path);

  /// The path given to the constructor.
  const std::string& path() const { return path_; }
  /// The tensor names, sorted (as Python's `safe_open(...).keys()`).
  std::vector<std::string> keys() const;
  /// Whether the file holds a tensor named `name`.
  bool contains(const std::string& name) const;
  /// The `__metadata__` entries.
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  /// The whole validated header.
  const SafetensorsHeader& header() const { return header_; }
  /// Dtype, shape and byte range of `name`, without loading it; throws std::out_of_range
  /// naming the file and the tensor when there is none.
  const SafetensorsTensorInfo& info(const std::string& name) const;
  /// The tensor `name` on the CPU, aliasing the mapping (no copy) when its bytes are aligned
  /// for its dtype, an aligned copy otherwise; throws std::out_of_range when there is none.
  at::Tensor get(const std::string& name) const;
  /// Copies tensor `name` into `target` (any device; `copy_` converts the dtype). Throws
  /// std::runtime_error naming the file and the tensor when the shapes differ, and
  /// std::out_of_range when there is no such tensor.
  void read_into(const std::string& name, const at::Tensor& target) const;

 private:
  struct Mapping;
  std::string path_;
  std::shared_ptr<Mapping> mapping_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

/// Every tensor of the safetensors file `path`. By default they alias the file's mapping (no
/// copy; writes stay private to this process); with `clone` each is an owning copy and the
/// mapping is released before returning. Throws std::runtime_error naming the path and the
/// broken rule for a malformed file.
///
/// Example:
///   auto tensors = accelerate::load_safetensors("model.safetensors");
std::map<std::string, at::Tensor> load_safetensors(const std::string& path, bool clone = false);

/// Every tensor of the safetensors file held in memory in `data` (`size` bytes), as owning
/// copies; `name` names the buffer in error messages.
std::map<std::string, at::Tensor> load_safetensors_from_memory(const uint8_t* data, size_t size,
                                                               const std::string& name);

/// The bytes of the safetensors file holding `tensors` and `metadata`, exactly as the
/// reference writer lays them out. `{"format": "pt"}` is added to the metadata unless it
/// has a "format" entry. Non-contiguous tensors are written contiguous, tensors on other
/// devices are copied to the CPU. Throws std::invalid_argument naming the tensor for an
/// undefined or non-strided tensor, a dtype safetensors cannot store (complex, quantized,
/// ...), or the reserved name `__metadata__`.
std::vector<uint8_t> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                           const std::map<std::string, std::string>& metadata = {});

/// Writes `tensors` and `metadata` to the safetensors file `path`, laid out as
/// `serialize_safetensors` does but streamed to disk. The file is written to `path + ".tmp"`
/// and renamed, so `path` never holds a partial file. Throws std::runtime_error naming the
/// path when it cannot be written, std::invalid_argument as `serialize_safetensors`.
///
/// Example:
///   accelerate::save_safetensors({{"w", w}, {"b", b}}, "model.safetensors");
void save_safetensors(const std::map<std::string, at::Tensor>& tensors, const std::string& path,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace accelerate
