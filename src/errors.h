// Internal: error text without LibTorch's backtraces, and what a destructor does with an error.
#pragma once

#include <c10/util/Exception.h>

#include "accelerate/errors.h"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace accelerate::detail {

/// The message of `e`; for a c10::Error, without its C++ backtrace.
inline std::string message_of(const std::exception& e) {
  if (auto* c10_error = dynamic_cast<const c10::Error*>(&e))
    return c10_error->what_without_backtrace();
  return e.what();
}

/// What a guard's destructor does when its collective fails: destructors must not throw, and a
/// process that cannot reach its peers must not go on as if it had; the launcher (or the peers'
/// timeout) stops the others.
[[noreturn]] inline void exit_from_destructor(const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace accelerate::detail
