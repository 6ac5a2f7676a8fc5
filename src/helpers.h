// Internal: small helpers that several files share (one home each).
#pragma once

#include <ATen/Tensor.h>

#include <string>

#include "accelerate/errors.h"

namespace accelerate::detail {

/// `threads`, checked to be a number of threads for `api`'s num_cpu_threads_per_process.
inline int checked_thread_count(const std::string& api, int threads) {
  if (threads < 1)
    throw InvalidArgument("accelerate: " + api + "::num_cpu_threads_per_process: " +
                          std::to_string(threads) + " is not a number of threads (>= 1)");
  return threads;
}

/// "[2, 3]".
inline std::string shape_string(at::IntArrayRef shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// `s` without leading and trailing white space.
inline std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t\n\r\f\v");
  if (first == std::string::npos) return "";
  const auto last = s.find_last_not_of(" \t\n\r\f\v");
  return s.substr(first, last - first + 1);
}

/// Whether `s` ends with `suffix`.
inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// The identity of a tensor's storage; tensors with the same one share memory.
inline const void* storage_id(const at::Tensor& t) { return t.storage().unsafeGetStorageImpl(); }

}  // namespace accelerate::detail
