// Internal: every difference between LibTorch versions lives here and in compat.cpp.
//
// Debian's LibTorch 1.13: ProcessGroupGloo *is* a c10d::ProcessGroup.
// Upstream LibTorch 2.x: ProcessGroupGloo/NCCL are c10d::Backend objects registered in a
// c10d::ProcessGroup. Everything else in accelerate-cpp talks to c10d::ProcessGroup only.
#pragma once

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include <chrono>
#include <vector>

namespace accelerate::compat {

/// Which c10d backend to create.
enum class Backend { GLOO, NCCL };

/// Creates the process group of `size` processes over `store`, with `timeout` for every
/// collective. NCCL is only available where LibTorch was built with it (USE_C10D_NCCL).
c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
    std::chrono::milliseconds timeout, Backend backend);

/// True when this LibTorch has CUDA and a device is visible.
bool cuda_available();

/// Makes `index` the current CUDA device (no-op without CUDA).
void set_cuda_device(int index);

/// The state of every CUDA device's default generator (empty without CUDA).
std::vector<at::Tensor> cuda_rng_states();

/// Restores states from cuda_rng_states(), device by device (no-op without CUDA).
void set_cuda_rng_states(const std::vector<at::Tensor>& states);

}  // namespace accelerate::compat
