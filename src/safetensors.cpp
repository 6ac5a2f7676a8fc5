#include "accelerate/safetensors.h"
#include "accelerate/errors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <unordered_set>

#include "dtypes.h"
#include "files.h"
#include "helpers.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; this code copies it byte for byte");

namespace accelerate {
namespace {

using detail::DtypeEntry;
using detail::find_dtype;
using detail::shape_string;

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw FileError("accelerate: safetensors: " + name + ": " + what);
}

std::string range_string(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + "," + std::to_string(end) + ")";
}

// Records the first duplicate key of any JSON object: nlohmann::json keeps only one of them
// silently, while the format refuses them.
// Builds the JSON value and finds the first key repeated within one object, in one linear
// SAX pass. (nlohmann's parse with a callback is quadratic in the number of keys: 50 s for
// 40k tensors; its plain parse silently keeps the last of two equal keys.)
class DuplicateKeyDetector {
 public:
  using json = nlohmann::json;
  explicit DuplicateKeyDetector(json& result) : dom_(result, /*allow_exceptions=*/true) {}
  bool null() { return dom_.null(); }
  bool boolean(bool v) { return dom_.boolean(v); }
  bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
  bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
  bool number_float(json::number_float_t v, const json::string_t& s) {
    return dom_.number_float(v, s);
  }
  bool string(json::string_t& v) { return dom_.string(v); }
  bool binary(json::binary_t& v) { return dom_.binary(v); }
  bool start_object(std::size_t n) {
    open_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(json::string_t& key) {
    if (!open_.empty() && duplicate_.empty() && !open_.back().insert(key).second)
      duplicate_ = key.empty() ? "\"\"" : key;
    return dom_.key(key);
  }
  bool end_object() {
    if (!open_.empty()) open_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) { return dom_.start_array(n); }
  bool end_array() { return dom_.end_array(); }
  template <typename Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& e) {
    return dom_.parse_error(position, token, e);
  }
  const std::string& duplicate() const { return duplicate_; }

 private:
  nlohmann::detail::json_sax_dom_parser<json> dom_;
  std::vector<std::unordered_set<std::string>> open_;
  std::string duplicate_;
};

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

SafetensorsTensorInfo parse_entry(const std::string& file, const std::string& tensor,
                                  const nlohmann::json& entry) {
  const std::string where = "tensor '" + tensor + "': ";
  if (!entry.is_object()) fail(file, where + "entry is not a JSON object");
  for (const auto& item : entry.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      fail(file, where + "unexpected key '" + item.key() +
                     "' (an entry has exactly dtype, shape and data_offsets)");
    }
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) fail(file, where + "missing key '" + key + "'");
  }
  SafetensorsTensorInfo info;
  const auto& dtype = entry["dtype"];
  if (!dtype.is_string()) fail(file, where + "dtype is not a string");
  info.dtype_name = dtype.get<std::string>();
  const DtypeEntry* known = find_dtype(info.dtype_name);
  if (known == nullptr) fail(file, where + "unknown dtype '" + info.dtype_name + "'");
  info.dtype = known->type;

  const auto& shape = entry["shape"];
  if (!shape.is_array()) fail(file, where + "shape is not an array");
  for (const auto& dim : shape) {
    if (!dim.is_number_unsigned() ||
        dim.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      fail(file, where + "shape " + shape.dump() + " is not a list of non-negative integers");
    }
    info.shape.push_back(static_cast<int64_t>(dim.get<uint64_t>()));
  }
  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    fail(file, where + "data_offsets " + offsets.dump() + " is not [begin, end]");
  }
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.end < info.begin) {
    fail(file,
         where + "data_offsets " + range_string(info.begin, info.end) + " end before they begin");
  }
  // numel x element size, overflow-checked in the reference's order.
  uint64_t numel = 1;
  for (int64_t dim : info.shape) {
    if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
      fail(file, where + "shape " + shape_string(info.shape) + " overflows 64 bits");
    }
    numel *= static_cast<uint64_t>(dim);
  }
  // LibTorch's contiguous strides are products of max(dim, 1) in int64 (a zero-size tensor
  // may still have huge dims).
  int64_t stride_product = 1;
  for (int64_t dim : info.shape) {
    if (__builtin_mul_overflow(stride_product, std::max<int64_t>(dim, 1), &stride_product)) {
      fail(file, where + "shape " + shape_string(info.shape) + " overflows 64 bits");
    }
  }
  if (numel > std::numeric_limits<uint64_t>::max() / known->size) {
    fail(file, where + "shape " + shape_string(info.shape) + " x " + info.dtype_name +
                   " overflows 64 bits");
  }
  const uint64_t needed = numel * known->size;
  if (info.end - info.begin != needed) {
    fail(file, where + "data_offsets " + range_string(info.begin, info.end) + " but " +
                   std::to_string(numel) + " x " + info.dtype_name + " (shape " +
                   shape_string(info.shape) + ") needs " + std::to_string(needed) + " bytes");
  }
  return info;
}

// An open file descriptor, closed on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string errno_string() { return std::strerror(errno); }

// Validates a tensor for writing and returns its dtype entry.
const DtypeEntry& check_writable(const std::string& name, const at::Tensor& tensor) {
  if (name == "__metadata__") {
    throw InvalidArgument(
        "accelerate: save_safetensors: '__metadata__' is reserved and cannot name a tensor");
  }
  if (!tensor.defined()) {
    throw InvalidArgument("accelerate: save_safetensors: tensor '" + name + "' is undefined");
  }
  if (tensor.layout() != at::kStrided) {
    throw InvalidArgument("accelerate: save_safetensors: tensor '" + name +
                          "' is not a dense (strided) tensor and cannot be saved");
  }
  if (tensor.is_meta()) {
    throw InvalidArgument("accelerate: save_safetensors: tensor '" + name +
                          "' is on the meta device");
  }
  const DtypeEntry* entry = find_dtype(tensor.scalar_type());
  if (entry == nullptr) {
    throw InvalidArgument("accelerate: save_safetensors: tensor '" + name + "' has dtype " +
                          std::string(c10::toString(tensor.scalar_type())) +
                          ", which safetensors cannot store (BOOL, U8, I8, I16, I32, I64, "
                          "F16, BF16, F32, F64 only)");
  }
  return *entry;
}

std::string json_string(const std::string& s, const char* what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    throw InvalidArgument(std::string("accelerate: save_safetensors: ") + what +
                          " is not valid UTF-8");
  }
}

// The reference writer's layout: tensors sorted by dtype alignment (descending), then by name;
// the compact JSON header padded with spaces to a multiple of 8 bytes.
struct Layout {
  std::string header;
  std::vector<std::pair<std::string, at::Tensor>> ordered;
  uint64_t data_size = 0;
};

Layout make_layout(const std::map<std::string, at::Tensor>& tensors,
                   const std::map<std::string, std::string>& metadata) {
  struct Item {
    const std::string* name;
    const at::Tensor* tensor;
    const DtypeEntry* dtype;
  };
  std::vector<Item> items;
  items.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    items.push_back({&name, &tensor, &check_writable(name, tensor)});
  }
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.dtype->rank != b.dtype->rank) return a.dtype->rank > b.dtype->rank;
    return *a.name < *b.name;
  });

  std::map<std::string, std::string> full_metadata = metadata;
  full_metadata.emplace("format", "pt");

  Layout layout;
  std::string& h = layout.header;
  h = "{\"__metadata__\":{";
  bool first = true;
  for (const auto& [key, value] : full_metadata) {
    if (!first) h += ',';
    first = false;
    h += json_string(key, "a metadata key") + ":" + json_string(value, "a metadata value");
  }
  h += "}";
  uint64_t offset = 0;
  for (const auto& item : items) {
    const uint64_t nbytes = static_cast<uint64_t>(item.tensor->numel()) * item.dtype->size;
    h += "," + json_string(*item.name, "a tensor name") + ":{\"dtype\":\"" + item.dtype->name +
         "\",\"shape\":[";
    for (int64_t d = 0; d < item.tensor->dim(); ++d) {
      h += (d ? "," : "") + std::to_string(item.tensor->size(d));
    }
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + nbytes) +
         "]}";
    offset += nbytes;
    layout.ordered.emplace_back(*item.name, *item.tensor);
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  layout.data_size = offset;
  return layout;
}

// The bytes of `tensor` as the format stores them: on the CPU, contiguous.
at::Tensor cpu_contiguous(const at::Tensor& tensor) { return tensor.to(at::kCPU).contiguous(); }

void put_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

}  // namespace

std::string safetensors_dtype_name(at::ScalarType dtype) {
  const DtypeEntry* entry = find_dtype(dtype);
  if (entry == nullptr) {
    throw InvalidArgument("accelerate: save_safetensors: cannot store dtype " +
                          std::string(c10::toString(dtype)));
  }
  return entry->name;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* data, size_t size,
                                           const std::string& name) {
  if (size < 8) {
    fail(name,
         "truncated: " + std::to_string(size) + " bytes, fewer than the 8 of the header length");
  }
  SafetensorsHeader header;
  const uint64_t n = read_u64_le(data);
  if (n > kSafetensorsMaxHeaderSize) {
    fail(name, "header length " + std::to_string(n) + " exceeds " +
                   std::to_string(kSafetensorsMaxHeaderSize));
  }
  if (n > size - 8) {
    fail(name, "truncated: header length " + std::to_string(n) + " but only " +
                   std::to_string(size - 8) + " bytes follow it");
  }
  header.header_size = n;
  header.data_size = size - 8 - n;
  const char* text = reinterpret_cast<const char*>(data + 8);
  if (n == 0 || text[0] != '{') fail(name, "header does not start with '{'");

  // nlohmann::json stops at a NUL byte as at the end of input; valid JSON never holds one.
  if (const void* nul = std::memchr(text, 0, n)) {
    fail(name, "header is not valid JSON: NUL byte at offset " +
                   std::to_string(static_cast<const char*>(nul) - text));
  }
  nlohmann::json json;
  DuplicateKeyDetector detector(json);
  try {
    nlohmann::json::sax_parse(text, text + n, &detector);
  } catch (const nlohmann::json::exception& e) {
    fail(name, std::string("header is not valid JSON: ") + e.what());
  }
  if (!detector.duplicate().empty()) {
    fail(name, "header has duplicate key '" + detector.duplicate() + "'");
  }
  if (!json.is_object()) fail(name, "header is not a JSON object");

  for (const auto& item : json.items()) {
    if (item.key() == "__metadata__") {
      if (item.value().is_null()) continue;
      if (!item.value().is_object()) fail(name, "__metadata__ is not a JSON object");
      for (const auto& meta : item.value().items()) {
        if (!meta.value().is_string()) {
          fail(name, "__metadata__ value of '" + meta.key() + "' is not a string");
        }
        header.metadata.emplace(meta.key(), meta.value().get<std::string>());
      }
      continue;
    }
    header.tensors.emplace_back(item.key(), parse_entry(name, item.key(), item.value()));
  }

  // The offsets, sorted, must tile [0, data size) exactly.
  std::stable_sort(header.tensors.begin(), header.tensors.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second.begin, a.second.end) <
           std::make_pair(b.second.begin, b.second.end);
  });
  uint64_t expected = 0;
  for (const auto& [tensor, info] : header.tensors) {
    if (info.begin != expected) {
      fail(name, "tensor '" + tensor + "': data_offsets " + range_string(info.begin, info.end) +
                     (info.begin > expected ? " leave a hole: the previous data ends at "
                                            : " overlap the previous data, which ends at ") +
                     std::to_string(expected));
    }
    expected = info.end;
  }
  if (expected != header.data_size) {
    fail(name, "the tensors' data ends at byte " + std::to_string(expected) +
                   " but the data section has " + std::to_string(header.data_size) +
                   " bytes (last offset must equal the data length)");
  }
  return header;
}

// A private, copy-on-write mapping of a whole file.
struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (address != nullptr) ::munmap(address, size);
  }
};

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), mapping_(std::make_shared<Mapping>()) {
  Fd fd;
  fd.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd.fd < 0) fail(path, "cannot open: " + errno_string());
  struct stat st {};
  if (::fstat(fd.fd, &st) != 0) fail(path, "cannot stat: " + errno_string());
  if (!S_ISREG(st.st_mode)) fail(path, "not a regular file");
  const auto size = static_cast<size_t>(st.st_size);
  const uint8_t* bytes = nullptr;
  if (size > 0) {
    // PROT_WRITE on a MAP_PRIVATE mapping: writes to returned tensors copy the page in this
    // process and never reach the file, instead of faulting.
    void* address = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd.fd, 0);
    if (address == MAP_FAILED) fail(path, "cannot map: " + errno_string());
    mapping_->address = address;
    mapping_->size = size;
    bytes = static_cast<const uint8_t*>(address);
  }
  header_ = parse_safetensors_header(bytes, size, path);
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_[header_.tensors[i].first] = i;
}

std::vector<std::string> SafetensorsFile::keys() const {
  std::vector<std::string> keys;
  keys.reserve(index_.size());
  for (const auto& entry : index_) keys.push_back(entry.first);
  return keys;
}

bool SafetensorsFile::contains(const std::string& name) const { return index_.count(name) > 0; }

const SafetensorsTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) {
    throw std::out_of_range("accelerate: SafetensorsFile: " + path_ + ": no tensor '" + name + "'");
  }
  return header_.tensors[it->second].second;
}

at::Tensor SafetensorsFile::get(const std::string& name) const {
  const SafetensorsTensorInfo& meta = info(name);
  if (meta.dtype == at::ScalarType::Undefined) {
    fail(path_, "tensor '" + name + "' has dtype " + meta.dtype_name +
                    ", which LibTorch 1.13 cannot hold");
  }
  const auto options = at::TensorOptions().dtype(meta.dtype).device(at::kCPU);
  const uint64_t nbytes = meta.end - meta.begin;
  if (nbytes == 0) return at::empty(meta.shape, options);
  uint8_t* address = static_cast<uint8_t*>(mapping_->address) + header_.data_offset() + meta.begin;
  const auto element_size = static_cast<uintptr_t>(c10::elementSize(meta.dtype));
  if (reinterpret_cast<uintptr_t>(address) % element_size != 0) {
    // Files whose header length is not a multiple of 8 (older writers) leave data unaligned.
    at::Tensor copy = at::empty(meta.shape, options);
    std::memcpy(copy.data_ptr(), address, nbytes);
    return copy;
  }
  std::shared_ptr<Mapping> keep = mapping_;
  return at::from_blob(
      address, meta.shape, [keep](void*) mutable { keep.reset(); }, options);
}

void SafetensorsFile::read_into(const std::string& name, const at::Tensor& target) const {
  const SafetensorsTensorInfo& meta = info(name);
  if (target.sizes() != at::IntArrayRef(meta.shape)) {
    std::ostringstream os;
    os << "tensor '" << name << "' has shape " << shape_string(meta.shape)
       << " but the target's is " << target.sizes();
    fail(path_, os.str());
  }
  target.copy_(get(name));
}

std::map<std::string, at::Tensor> load_safetensors(const std::string& path, bool clone) {
  SafetensorsFile file(path);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [name, info] : file.header().tensors) {
    at::Tensor tensor = file.get(name);
    tensors.emplace(name, clone ? tensor.clone() : tensor);
  }
  return tensors;
}

std::map<std::string, at::Tensor> load_safetensors_from_memory(const uint8_t* data, size_t size,
                                                               const std::string& name) {
  const SafetensorsHeader header = parse_safetensors_header(data, size, name);
  std::map<std::string, at::Tensor> tensors;
  for (const auto& [tensor_name, info] : header.tensors) {
    if (info.dtype == at::ScalarType::Undefined) {
      fail(name, "tensor '" + tensor_name + "' has dtype " + info.dtype_name +
                     ", which LibTorch 1.13 cannot hold");
    }
    at::Tensor tensor = at::empty(info.shape, at::TensorOptions().dtype(info.dtype));
    const uint64_t nbytes = info.end - info.begin;
    if (nbytes > 0) {
      std::memcpy(tensor.data_ptr(), data + header.data_offset() + info.begin, nbytes);
    }
    tensors.emplace(tensor_name, std::move(tensor));
  }
  return tensors;
}

std::vector<uint8_t> serialize_safetensors(const std::map<std::string, at::Tensor>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  const Layout layout = make_layout(tensors, metadata);
  std::vector<uint8_t> out(8 + layout.header.size() + layout.data_size);
  put_u64_le(out.data(), layout.header.size());
  std::memcpy(out.data() + 8, layout.header.data(), layout.header.size());
  size_t offset = 8 + layout.header.size();
  for (const auto& [name, tensor] : layout.ordered) {
    const at::Tensor bytes = cpu_contiguous(tensor);
    const size_t nbytes = bytes.nbytes();
    if (nbytes > 0) std::memcpy(out.data() + offset, bytes.data_ptr(), nbytes);
    offset += nbytes;
  }
  return out;
}

void save_safetensors(const std::map<std::string, at::Tensor>& tensors, const std::string& path,
                      const std::map<std::string, std::string>& metadata) {
  const Layout layout = make_layout(tensors, metadata);
  detail::AtomicFile file(path, "save_safetensors");
  uint8_t length[8];
  put_u64_le(length, layout.header.size());
  file.write(length, sizeof(length));
  file.write(layout.header.data(), layout.header.size());
  for (const auto& [name, tensor] : layout.ordered) {
    const at::Tensor bytes = cpu_contiguous(tensor);
    file.write(bytes.data_ptr(), bytes.nbytes());
  }
  file.commit();
}

}  // namespace accelerate
