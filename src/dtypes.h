// Internal: the dtypes of tensor files, one row each, with the name each format gives it: the
// safetensors name (safetensors.cpp) and torch.save's storage class (torch_pickle.cpp).
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace accelerate::detail {

// One dtype of the safetensors format. `rank` is its position in the reference's `Dtype` enum
// ("in increasing alignment order"): the writer sorts by it, descending, then by name. Dtypes
// LibTorch 1.13 cannot hold have `type` Undefined: their files parse, their tensors cannot be
// loaded. `storage` is torch.save's storage class for the dtype (nullptr where `type` is
// Undefined).
struct DtypeEntry {
  const char* name;
  at::ScalarType type;
  uint64_t size;
  int rank;
  const char* storage;
};

inline constexpr DtypeEntry kDtypes[] = {
    {"BOOL", at::kBool, 1, 0, "BoolStorage"},
    {"U8", at::kByte, 1, 4, "ByteStorage"},
    {"I8", at::kChar, 1, 5, "CharStorage"},
    {"F8_E5M2", at::ScalarType::Undefined, 1, 6, nullptr},
    {"F8_E4M3", at::ScalarType::Undefined, 1, 7, nullptr},
    {"F8_E8M0", at::ScalarType::Undefined, 1, 8, nullptr},
    {"I16", at::kShort, 2, 9, "ShortStorage"},
    {"U16", at::ScalarType::Undefined, 2, 10, nullptr},
    {"F16", at::kHalf, 2, 11, "HalfStorage"},
    {"BF16", at::kBFloat16, 2, 12, "BFloat16Storage"},
    {"I32", at::kInt, 4, 13, "IntStorage"},
    {"U32", at::ScalarType::Undefined, 4, 14, nullptr},
    {"F32", at::kFloat, 4, 15, "FloatStorage"},
    {"C64", at::ScalarType::Undefined, 8, 16, nullptr},
    {"F64", at::kDouble, 8, 17, "DoubleStorage"},
    {"I64", at::kLong, 8, 18, "LongStorage"},
    {"U64", at::ScalarType::Undefined, 8, 19, nullptr},
};

/// The entry of the safetensors dtype `name`, or nullptr.
inline const DtypeEntry* find_dtype(const std::string& name) {
  for (const auto& entry : kDtypes) {
    if (name == entry.name) return &entry;
  }
  return nullptr;
}

/// The entry of `type`, or nullptr when tensor files cannot hold it.
inline const DtypeEntry* find_dtype(at::ScalarType type) {
  for (const auto& entry : kDtypes) {
    if (entry.type == type && type != at::ScalarType::Undefined) return &entry;
  }
  return nullptr;
}

}  // namespace accelerate::detail
