// Internal: error text without LibTorch's backtraces.
#pragma once

#include <c10/util/Exception.h>

#include "accelerate/errors.h"

#include <exception>
#include <string>

namespace accelerate::detail {

/// The message of `e`; for a c10::Error, without its C++ backtrace.
inline std::string message_of(const std::exception& e) {
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e))
    return c10_error->what_without_backtrace();
  return e.what();
}

}  // namespace accelerate::detail
