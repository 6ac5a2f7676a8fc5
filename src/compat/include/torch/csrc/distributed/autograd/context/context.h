// Compatibility shim, used only where LibTorch does not ship this header (Debian's
// libtorch-dev 1.13). c10d/reducer.hpp includes it for two type names; the library itself has
// the real definitions, and nothing here is instantiated. Added to the include path by
// src/CMakeLists.txt only when the real header is missing.
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <memory>

namespace torch {
namespace distributed {
namespace autograd {

class DistAutogradContext {
 public:
  using GradCallback = std::function<bool(at::Tensor&)>;
};

using ContextPtr = std::shared_ptr<DistAutogradContext>;

}  // namespace autograd
}  // namespace distributed
}  // namespace torch
