// accelerate/utils.h: small utilities of Accelerate's `accelerate.utils`.
//
// Example:
//   accelerate::set_seed(42);   // same initial weights and random draws on every run
#pragma once

#include <cstdint>

namespace accelerate {

/// Seeds every random number generator LibTorch uses in this process: the CPU generator and,
/// where CUDA is available, every CUDA device's (Accelerate's `set_seed`). Call it with the
/// same seed on every process for identical initial weights.
void set_seed(uint64_t seed);

}  // namespace accelerate
