// torch.save's file format (a zip archive holding a protocol-2 pickle and the raw storages),
// written and read byte by byte: save_pytorch_bin / load_pytorch_bin of model_files.h.
//
// Why not LibTorch's torch::pickle_save / torch::pickle_load: they speak TorchScript's subset
// of pickle. Checked on 2026-11-30 with files from Python's torch.save: LibTorch 1.13's
// torch::pickle_load refuses both a dict and an OrderedDict of tensors ("Unknown opcode for
// unpickling at 0x73: 115", SETITEM); LibTorch 2.13's reads a dict but fails on an
// OrderedDict, which is what every `module.state_dict()` is ("isGenericDict() INTERNAL ASSERT
// FAILED ... Expected GenericDict but got None": the unpickler has no collections.OrderedDict).
// A state dict written by torch::pickle_save is also not what torch.load expects of a model
// file (tensors with `_rebuild_tensor_v2` and storages under data/). The reader below knows
// only the opcodes of protocols 2-5 and the globals a state dict uses; everything else is a
// clear error (tests/fuzz/torch_pickle_fuzz.cpp fuzzes it).
#include "accelerate/errors.h"
#include "accelerate/model_files.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "accelerate/safetensors.h"

#include "dtypes.h"
#include "errors.h"
#include "files.h"
#include "helpers.h"

namespace accelerate {
namespace {

using detail::shape_string;
using detail::storage_id;

// torch.save's storage class of `type`, or nullptr when it is not written.
const char* storage_type_name(at::ScalarType type) {
  const detail::DtypeEntry* entry = detail::find_dtype(type);
  return entry ? entry->storage : nullptr;
}

// Protocol-2 pickle opcodes, the subset `torch.save` of a dict of tensors emits.
class PickleWriter {
 public:
  void op(char code) { out_.push_back(code); }
  void proto() {
    out_.push_back('\x80');
    out_.push_back('\x02');
  }
  void string(const std::string& s) {
    op('X');  // BINUNICODE
    append_le(static_cast<uint32_t>(s.size()), 4);
    out_ += s;
  }
  void global(const std::string& module, const std::string& name) {
    op('c');
    out_ += module + "\n" + name + "\n";
  }
  void integer(int64_t v) {
    if (v >= 0 && v < 256) {
      op('K');
      append_le(static_cast<uint64_t>(v), 1);
    } else if (v >= 0 && v < 65536) {
      op('M');
      append_le(static_cast<uint64_t>(v), 2);
    } else if (v >= std::numeric_limits<int32_t>::min() &&
               v <= std::numeric_limits<int32_t>::max()) {
      op('J');
      append_le(static_cast<uint32_t>(static_cast<int32_t>(v)), 4);
    } else {
      op('\x8a');  // LONG1: 8 bytes of two's complement
      out_.push_back('\x08');
      append_le(static_cast<uint64_t>(v), 8);
    }
  }
  void int_tuple(at::IntArrayRef values) {
    if (values.empty()) return op(')');
    if (values.size() > 3) op('(');
    for (int64_t v : values) integer(v);
    static const char kTuple[] = {'t', '\x85', '\x86', '\x87'};
    op(values.size() > 3 ? 't' : kTuple[values.size()]);
  }
  const std::string& bytes() const { return out_; }

 private:
  void append_le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  std::string out_;
};

// ---------------------------------------------------------------------------------------------
// torch.save's pickle format, read without running Python: a small pickle machine that knows
// the opcodes of protocols 2-5 and the globals a state dict uses.

// Values live in the reader's arena and refer to each other by pointer: pickles can build
// reference cycles (a dict holding itself through the memo), which shared ownership would leak.
struct PyValue;
using PyRef = PyValue*;

struct PyValue {
  enum class Kind {
    kNone,
    kBool,
    kInt,
    kFloat,
    kString,
    kBytes,
    kTuple,
    kList,
    kDict,
    kGlobal,
    kTensor,
    kStorage,
    kOpaque
  };
  Kind kind = Kind::kNone;
  int64_t i = 0;
  double f = 0;
  std::string s, s2;  // string/bytes; module and name of a global
  std::vector<PyRef> items;
  std::vector<std::pair<PyRef, PyRef>> dict;
  std::unordered_map<std::string, size_t> dict_index;  // string key -> position in `dict`
  at::Tensor tensor;  // a tensor; for a storage, a flat tensor over all of it
};

class PickleReader {
 public:
  PickleReader(const std::string& path, caffe2::serialize::PyTorchStreamReader& archive,
               const char* data, size_t size)
      : path_(path), archive_(archive), data_(data), size_(size) {}

  PyRef run() {
    while (true) {
      const auto code = static_cast<uint8_t>(byte());
      switch (code) {
        case 0x80:
          byte();
          break;  // PROTO
        case 0x95:
          take(8);
          break;  // FRAME
        case '}':
          push(make(PyValue::Kind::kDict));
          break;
        case ']':
          push(make(PyValue::Kind::kList));
          break;
        case ')':
          push(make(PyValue::Kind::kTuple));
          break;
        case '(':
          marks_.push_back(stack_.size());
          break;
        case 'X':
          push_string(PyValue::Kind::kString, le(4));
          break;
        case 0x8c:
          push_string(PyValue::Kind::kString, le(1));
          break;
        case 0x8d:
          push_string(PyValue::Kind::kString, le(8));
          break;
        case 'T':
          push_string(PyValue::Kind::kString, le(4));
          break;
        case 'U':
          push_string(PyValue::Kind::kString, le(1));
          break;
        case 'B':
          push_string(PyValue::Kind::kBytes, le(4));
          break;
        case 'C':
          push_string(PyValue::Kind::kBytes, le(1));
          break;
        case 0x8e:
          push_string(PyValue::Kind::kBytes, le(8));
          break;
        case 'q':
          memo_[le(1)] = top();
          break;  // BINPUT
        case 'r':
          memo_[le(4)] = top();
          break;  // LONG_BINPUT
        case 0x94:
          memo_[memo_.size()] = top();
          break;  // MEMOIZE
        case 'h':
          push(memo(le(1)));
          break;  // BINGET
        case 'j':
          push(memo(le(4)));
          break;     // LONG_BINGET
        case 'c': {  // GLOBAL
          auto g = make(PyValue::Kind::kGlobal);
          g->s = line();
          g->s2 = line();
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop(), module = pop();
          if (module->kind != PyValue::Kind::kString || name->kind != PyValue::Kind::kString) {
            fail("STACK_GLOBAL of non-strings");
          }
          auto g = make(PyValue::Kind::kGlobal);
          g->s = module->s;
          g->s2 = name->s;
          push(g);
          break;
        }
        case 'J':
          push_int(static_cast<int32_t>(static_cast<uint32_t>(le(4))));
          break;
        case 'K':
          push_int(static_cast<int64_t>(le(1)));
          break;
        case 'M':
          push_int(static_cast<int64_t>(le(2)));
          break;
        case 0x8a:
          push_long(le(1));
          break;  // LONG1
        case 0x8b:
          push_long(le(4));
          break;     // LONG4
        case 'G': {  // BINFLOAT, big-endian
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(byte());
          auto v = make(PyValue::Kind::kFloat);
          std::memcpy(&v->f, &bits, sizeof(bits));
          push(v);
          break;
        }
        case 'N':
          push(make(PyValue::Kind::kNone));
          break;
        case 0x88:
        case 0x89: {
          auto v = make(PyValue::Kind::kBool);
          v->i = code == 0x88;
          push(v);
          break;
        }
        case 't':
          push(tuple(pop_mark()));
          break;
        case 0x85:
          push(tuple(pop_n(1)));
          break;
        case 0x86:
          push(tuple(pop_n(2)));
          break;
        case 0x87:
          push(tuple(pop_n(3)));
          break;
        case 'l': {
          auto v = make(PyValue::Kind::kList);
          v->items = pop_mark();
          push(v);
          break;
        }
        case 'd': {
          auto v = make(PyValue::Kind::kDict);
          set_items(v, pop_mark());
          push(v);
          break;
        }
        case 'a': {
          auto item = pop();
          list_at_top()->items.push_back(item);
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto list = list_at_top();
          list->items.insert(list->items.end(), items.begin(), items.end());
          break;
        }
        case 's': {
          auto value = pop(), key = pop();
          set_items(dict_at_top(), {key, value});
          break;
        }
        case 'u': {
          auto items = pop_mark();
          set_items(dict_at_top(), items);
          break;
        }
        case 'R': {
          auto args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case 'b':  // BUILD: the state (an OrderedDict's `_metadata`) is not needed
          pop();
          top();
          break;
        case 0x81: {  // NEWOBJ
          pop();
          pop();
          push(make(PyValue::Kind::kOpaque));
          break;
        }
        case 'Q':
          push(persistent_load(pop()));
          break;  // BINPERSID
        case '0':
          pop();
          break;
        case '1':
          pop_mark();
          break;
        case '2':
          push(top());
          break;
        case '.': {  // STOP
          auto result = pop();
          return result;
        }
        default: {
          char hex[8];
          std::snprintf(hex, sizeof(hex), "0x%02x", code);
          fail(std::string("unsupported pickle opcode ") + hex);
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FileError("accelerate: load_pytorch_bin: " + path_ + ": " + what);
  }
  PyRef make(PyValue::Kind kind) {
    arena_.emplace_back();
    arena_.back().kind = kind;
    return &arena_.back();
  }
  char byte() {
    if (pos_ >= size_) fail("data.pkl ends early");
    return data_[pos_++];
  }
  std::string take(uint64_t n) {
    if (n > size_ - pos_) fail("data.pkl ends early");
    std::string s(data_ + pos_, n);
    pos_ += n;
    return s;
  }
  uint64_t le(int n) {
    uint64_t v = 0;
    for (int k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(byte())) << (8 * k);
    return v;
  }
  std::string line() {
    std::string s;
    for (char c = byte(); c != '\n'; c = byte()) s.push_back(c);
    return s;
  }
  void push(PyRef v) { stack_.push_back(std::move(v)); }
  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    auto v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  PyRef top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back()))
      fail("stack underflow");
    return stack_.back();
  }
  PyRef memo(uint64_t id) {
    auto it = memo_.find(id);
    if (it == memo_.end()) fail("memo " + std::to_string(id) + " read before written");
    return it->second;
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) fail("no MARK on the stack");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(std::make_move_iterator(stack_.begin() + mark),
                             std::make_move_iterator(stack_.end()));
    stack_.resize(mark);
    return items;
  }
  std::vector<PyRef> pop_n(size_t n) {
    std::vector<PyRef> items(n);
    for (size_t k = n; k > 0; --k) items[k - 1] = pop();
    return items;
  }
  PyRef tuple(std::vector<PyRef> items) {
    auto v = make(PyValue::Kind::kTuple);
    v->items = std::move(items);
    return v;
  }
  void push_string(PyValue::Kind kind, uint64_t n) {
    auto v = make(kind);
    v->s = take(n);
    push(v);
  }
  void push_int(int64_t i) {
    auto v = make(PyValue::Kind::kInt);
    v->i = i;
    push(v);
  }
  void push_long(uint64_t n) {
    if (n > 8) fail("integer wider than 64 bits");
    uint64_t bits = le(static_cast<int>(n));
    if (n > 0 && n < 8 && (bits >> (8 * n - 1)) & 1) bits |= ~uint64_t{0} << (8 * n);  // sign
    push_int(static_cast<int64_t>(bits));
  }
  PyRef list_at_top() {
    auto v = top();
    if (v->kind != PyValue::Kind::kList) fail("APPEND to a non-list");
    return v;
  }
  PyRef dict_at_top() {
    auto v = top();
    if (v->kind != PyValue::Kind::kDict) fail("SETITEM on a non-dict");
    return v;
  }
  void set_items(const PyRef& dict, const std::vector<PyRef>& items) {
    if (items.size() % 2 != 0) fail("odd number of items for a dict");
    for (size_t k = 0; k < items.size(); k += 2) {
      const PyRef& key = items[k];
      if (key->kind == PyValue::Kind::kString) {
        auto [it, inserted] = dict->dict_index.emplace(key->s, dict->dict.size());
        if (!inserted) {
          dict->dict[it->second].second = items[k + 1];
          continue;
        }
      }
      dict->dict.emplace_back(key, items[k + 1]);
    }
  }
  int64_t as_int(const PyRef& v, const char* what) {
    if (v->kind != PyValue::Kind::kInt) fail(std::string(what) + " is not an integer");
    return v->i;
  }
  std::vector<int64_t> as_ints(const PyRef& v, const char* what) {
    if (v->kind != PyValue::Kind::kTuple && v->kind != PyValue::Kind::kList) {
      fail(std::string(what) + " is not a tuple");
    }
    std::vector<int64_t> out;
    for (const auto& item : v->items) out.push_back(as_int(item, what));
    return out;
  }

  PyRef reduce(const PyRef& callable, const PyRef& args) {
    if (callable->kind != PyValue::Kind::kGlobal || args->kind != PyValue::Kind::kTuple) {
      return make(PyValue::Kind::kOpaque);
    }
    const std::string name = callable->s + "." + callable->s2;
    const auto& a = args->items;
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      if (a.size() < 4) fail(name + " with " + std::to_string(a.size()) + " arguments");
      return rebuild_tensor(a[0], as_int(a[1], "storage offset"), as_ints(a[2], "size"),
                            as_ints(a[3], "stride"));
    }
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state" ||
        name == "torch.jit._pickle.restore_type_tag") {
      if (a.empty()) fail(name + " without arguments");
      return a[0];
    }
    if (name == "collections.OrderedDict") {
      if (!a.empty()) fail("OrderedDict built from arguments");
      return make(PyValue::Kind::kDict);
    }
    return make(PyValue::Kind::kOpaque);
  }

  PyRef rebuild_tensor(const PyRef& storage, int64_t offset, const std::vector<int64_t>& sizes,
                       const std::vector<int64_t>& strides) {
    if (storage->kind != PyValue::Kind::kStorage) fail("tensor rebuilt from a non-storage");
    if (sizes.size() != strides.size()) fail("tensor sizes and strides differ in length");
    const int64_t storage_numel = storage->tensor.numel();
    if (offset < 0 || offset > storage_numel) fail("storage offset out of range");
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0) fail("negative size or stride");
      if (sizes[d] == 0) empty = true;
    }
    if (!empty) {
      for (size_t d = 0; d < sizes.size(); ++d) {
        int64_t step = 0;
        if (__builtin_mul_overflow(sizes[d] - 1, strides[d], &step) ||
            __builtin_add_overflow(last, step, &last)) {
          fail("tensor extent overflows");
        }
      }
      if (last >= storage_numel) fail("tensor reaches past the end of its storage");
    }
    auto v = make(PyValue::Kind::kTensor);
    v->tensor = at::empty({0}, storage->tensor.options())
                    .set_(storage->tensor.storage(), offset, sizes, strides);
    return v;
  }

  PyRef persistent_load(const PyRef& pid) {
    const auto& a = pid->items;
    if (pid->kind != PyValue::Kind::kTuple || a.size() < 5 ||
        a[0]->kind != PyValue::Kind::kString || a[0]->s != "storage" ||
        a[1]->kind != PyValue::Kind::kGlobal || a[2]->kind != PyValue::Kind::kString) {
      fail("unsupported persistent id (not a storage)");
    }
    static const std::map<std::string, at::ScalarType> kTypes = [] {
      // The storages of the dtypes save_pytorch_bin writes, and some only other writers use.
      std::map<std::string, at::ScalarType> types = {{"UntypedStorage", at::kByte},
                                                     {"ComplexFloatStorage", at::kComplexFloat},
                                                     {"ComplexDoubleStorage", at::kComplexDouble}};
      for (const auto& entry : detail::kDtypes) {
        if (entry.storage != nullptr) types.emplace(entry.storage, entry.type);
      }
      return types;
    }();
    auto type = kTypes.find(a[1]->s2);
    if (a[1]->s != "torch" || type == kTypes.end()) {
      fail("unsupported storage type " + a[1]->s + "." + a[1]->s2);
    }
    const std::string& key = a[2]->s;
    const int64_t numel = as_int(a[4], "storage size");
    auto cached = storages_.find(key);
    if (cached != storages_.end()) {
      if (cached->second->tensor.scalar_type() != type->second) {
        fail("storage " + key + " used with two dtypes");
      }
      return cached->second;
    }
    const std::string record = "data/" + key;
    if (key.find('/') != std::string::npos || !archive_.hasRecord(record)) {
      fail("missing record " + record);
    }
    auto [data, nbytes] = archive_.getRecord(record);
    const auto element = static_cast<int64_t>(c10::elementSize(type->second));
    if (numel < 0 || numel > static_cast<int64_t>(nbytes) / element) {
      fail("record " + record + " holds " + std::to_string(nbytes) + " bytes, fewer than " +
           std::to_string(numel) + " elements");
    }
    c10::Storage storage(c10::Storage::use_byte_size_t(), static_cast<size_t>(numel * element),
                         std::move(data),
                         /*allocator=*/nullptr, /*resizable=*/false);
    auto v = make(PyValue::Kind::kStorage);
    v->tensor =
        at::empty({0}, at::TensorOptions().dtype(type->second)).set_(storage, 0, {numel}, {1});
    storages_.emplace(key, v);
    return v;
  }

  std::string path_;
  caffe2::serialize::PyTorchStreamReader& archive_;
  const char* data_;
  size_t size_;
  size_t pos_ = 0;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
  std::map<std::string, PyRef> storages_;
  std::deque<PyValue> arena_;
};

}  // namespace

void save_pytorch_bin(const StateDict& tensors, const std::string& path) {
  struct StorageRecord {
    std::string key;
    at::Tensor bytes;  // flat CPU tensor over the whole storage
  };
  std::map<std::pair<const void*, int>, StorageRecord> storages;
  std::vector<const StorageRecord*> order;
  std::set<std::string> names;

  PickleWriter pickle;
  pickle.proto();
  pickle.op('}');  // EMPTY_DICT
  if (!tensors.empty()) pickle.op('(');
  for (const auto& [name, tensor] : tensors) {
    if (!names.insert(name).second) {
      throw InvalidArgument("accelerate: save_pytorch_bin: duplicate name '" + name + "'");
    }
    if (!tensor.defined() || tensor.layout() != at::kStrided || tensor.is_meta()) {
      throw InvalidArgument("accelerate: save_pytorch_bin: tensor '" + name +
                            "' is undefined, not dense, or on the meta device");
    }
    const char* type = storage_type_name(tensor.scalar_type());
    if (type == nullptr) {
      throw InvalidArgument("accelerate: save_pytorch_bin: tensor '" + name + "' has dtype " +
                            std::string(c10::toString(tensor.scalar_type())) +
                            ", which is not supported (BOOL, U8, I8, I16, I32, I64, F16, "
                            "BF16, F32, F64 only)");
    }
    const auto element = static_cast<int64_t>(tensor.element_size());
    const int64_t storage_numel = static_cast<int64_t>(tensor.storage().nbytes()) / element;
    auto [it, inserted] =
        storages.emplace(std::make_pair(storage_id(tensor), static_cast<int>(tensor.scalar_type())),
                         StorageRecord{});
    if (inserted) {
      it->second.key = std::to_string(storages.size() - 1);
      it->second.bytes = at::empty({0}, tensor.options())
                             .set_(tensor.storage(), 0, {storage_numel}, {1})
                             .to(at::kCPU);
      order.push_back(&it->second);
    }
    pickle.string(name);
    pickle.global("torch._utils", "_rebuild_tensor_v2");
    pickle.op('(');
    pickle.op('(');
    pickle.string("storage");
    pickle.global("torch", type);
    pickle.string(it->second.key);
    pickle.string("cpu");
    pickle.integer(storage_numel);
    pickle.op('t');
    pickle.op('Q');  // BINPERSID
    pickle.integer(tensor.storage_offset());
    pickle.int_tuple(tensor.sizes());
    pickle.int_tuple(tensor.strides());
    pickle.op('\x89');  // NEWFALSE: requires_grad
    pickle.global("collections", "OrderedDict");
    pickle.op(')');
    pickle.op('R');
    pickle.op('t');
    pickle.op('R');
  }
  if (!tensors.empty()) pickle.op('u');  // SETITEMS
  pickle.op('.');

  // LibTorch's writer calls this for every chunk, and again from its destructor: an exception
  // thrown through it would end the process, so the first failure is kept and rethrown after.
  detail::AtomicFile file(path, "save_pytorch_bin");
  std::exception_ptr failure;
  {
    caffe2::serialize::PyTorchStreamWriter writer([&](const void* data, size_t n) -> size_t {
      if (n > 0 && !failure) {
        try {
          file.write(data, n);
        } catch (...) {
          failure = std::current_exception();
        }
      }
      return n;
    });
    writer.writeRecord("data.pkl", pickle.bytes().data(), pickle.bytes().size());
    writer.writeRecord("byteorder", "little", 6);
    for (const StorageRecord* record : order) {
      writer.writeRecord("data/" + record->key, record->bytes.data_ptr(), record->bytes.nbytes());
    }
    writer.writeEndOfFile();
  }
  if (failure) std::rethrow_exception(failure);
  file.commit();
}

StateDict load_pytorch_bin(const std::string& path) {
  auto fail = [&](const std::string& what) {
    return FileError("accelerate: load_pytorch_bin: " + path + ": " + what);
  };
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw fail("cannot open");
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 4 && static_cast<uint8_t>(magic[0]) == 0x80 &&
        std::memcmp(magic, "PK\x03\x04", 4) != 0) {
      throw fail("legacy (pre-1.6, non-zip) torch.save format; re-save it with a recent PyTorch");
    }
  }
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> archive;
  at::DataPtr pickle_data;
  size_t pickle_size = 0;
  try {
    archive = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    if (archive->hasRecord("byteorder")) {
      auto [order, n] = archive->getRecord("byteorder");
      if (std::string(static_cast<const char*>(order.get()), n) != "little") {
        throw fail("big-endian data is not supported");
      }
    }
    if (!archive->hasRecord("data.pkl")) throw fail("no data.pkl record");
    std::tie(pickle_data, pickle_size) = archive->getRecord("data.pkl");
  } catch (const c10::Error& e) {
    throw fail(std::string("not a PyTorch zip archive: ") + detail::message_of(e));
  }
  PickleReader reader(path, *archive, static_cast<const char*>(pickle_data.get()), pickle_size);
  PyRef result;
  try {
    result = reader.run();
  } catch (const c10::Error& e) {
    throw fail(detail::message_of(e));
  }
  if (result->kind != PyValue::Kind::kDict) throw fail("does not hold a dict");
  StateDict out;
  for (const auto& [key, value] : result->dict) {
    if (key->kind != PyValue::Kind::kString) throw fail("has a key that is not a string");
    if (value->kind != PyValue::Kind::kTensor) throw fail("entry '" + key->s + "' is not a tensor");
    out.emplace_back(key->s, value->tensor);
  }
  return out;
}
}  // namespace accelerate
