// Test helpers for the LibTorch API differences that tests meet (the library's own are in
// src/compat.*): how a c10::Error is built, and how an optimizer's state is keyed.
#pragma once

#include <c10/util/Exception.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

namespace accelerate::testing {

/// A c10::Error with `message`, as LibTorch throws them (the two-string constructor is gone
/// in 2.x; the source-location one exists in both).
inline c10::Error c10_error(const std::string& message) {
  return c10::Error(c10::SourceLocation{"test", __FILE__, static_cast<uint32_t>(__LINE__)},
                    message);
}

/// The key of `opt`'s state for the parameter whose TensorImpl is `impl`: the pointer printed
/// as a string in LibTorch 1.13, the pointer itself in 2.x.
template <typename Optimizer = torch::optim::Optimizer>
auto optimizer_state_key(const Optimizer& opt, const void* impl) {
  using Key = typename std::decay_t<decltype(opt.state())>::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream out;
    out << impl;
    return Key(out.str());
  } else {
    return Key(const_cast<void*>(impl));
  }
}

}  // namespace accelerate::testing
