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
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace c10d {
class Reducer;
}

namespace accelerate::compat {

/// Which c10d backend to create.
enum class Backend { GLOO, NCCL };

/// Where the Gloo backend's devices bind (see network.h for how State chooses): one device per
/// interface when `interfaces` is not empty, else one bound to `address`, else one on
/// loopback (127.0.0.1: processes of one machine, e.g. tests and benchmarks).
struct GlooEndpoint {
  std::vector<std::string> interfaces;
  std::string address;
};

/// Creates the process group of `size` processes over `store`, with `timeout` for every
/// collective. NCCL is only available where LibTorch was built with it (USE_C10D_NCCL).
c10::intrusive_ptr<c10d::ProcessGroup> make_process_group(
    const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
    std::chrono::milliseconds timeout, Backend backend, const GlooEndpoint& gloo = {});

/// Builds c10d's DDP engine over `params` with the given buckets (reversed, as PyTorch's DDP
/// passes them). The Reducer's constructor differs between LibTorch versions.
std::unique_ptr<c10d::Reducer> make_reducer(
    std::vector<at::Tensor> params, std::vector<std::vector<size_t>> buckets,
    std::vector<size_t> bucket_limits, const c10::intrusive_ptr<c10d::ProcessGroup>& group,
    int64_t bucket_bytes, bool find_unused_parameters, bool gradient_as_bucket_view,
    std::unordered_map<size_t, std::string> names, int64_t first_bucket_bytes);

/// True when this LibTorch has CUDA and a device is visible.
bool cuda_available();

/// True when this LibTorch was built with the NCCL process group (USE_C10D_NCCL).
bool nccl_built();

/// Makes `index` the current CUDA device (no-op without CUDA).
void set_cuda_device(int index);

/// The state of every CUDA device's default generator (empty without CUDA).
std::vector<at::Tensor> cuda_rng_states();

/// Returns the CUDA caching allocator's unused blocks to the driver (no-op without CUDA).
void empty_cuda_cache();

/// Restores states from cuda_rng_states(), device by device (no-op without CUDA).
void set_cuda_rng_states(const std::vector<at::Tensor>& states);

/// Autocast state of `device_type` (kCPU or kCUDA): enabled flag and target dtype. The
/// functions were renamed in LibTorch 2.4 (one per device type before, generic after).
bool autocast_enabled(c10::DeviceType device_type);
void set_autocast_enabled(c10::DeviceType device_type, bool enabled);
at::ScalarType autocast_dtype(c10::DeviceType device_type);
void set_autocast_dtype(c10::DeviceType device_type, at::ScalarType dtype);
/// True when this LibTorch can autocast to `dtype` on `device_type`.
bool autocast_supports(c10::DeviceType device_type, at::ScalarType dtype);

}  // namespace accelerate::compat

namespace accelerate::compat {

/// One event of LibTorch's profiler, in the units and types of every version (1.13 reports
/// microseconds, 2.x nanoseconds).
struct ProfiledEvent {
  std::string name;
  uint64_t start_ns = 0;
  uint64_t duration_ns = 0;
  uint64_t thread = 0;
  bool on_device = false;  // a CUDA kernel or copy rather than a CPU operator
  int device_index = -1;
  int64_t correlation = 0;
  std::vector<std::vector<int64_t>> shapes;  // with record_shapes
};

/// Starts LibTorch's (Kineto) profiler on this thread and the threads that inherit its state
/// (autograd's, at::launch's): CPU operators, and CUDA activity when `cuda`.
void enable_profiler(bool record_shapes, bool profile_memory, bool with_flops, bool cuda);

/// Stops it. When `trace_path` is not empty and this LibTorch has Kineto, Kineto writes its
/// Chrome trace there (`saved` true); otherwise nothing is written (`saved` false, e.g.
/// Debian's 1.13, built without Kineto). The events come back only when a trace was asked for
/// and not saved: they are what the caller then writes the trace from.
std::vector<ProfiledEvent> disable_profiler(const std::string& trace_path, bool* saved);

/// True while a profiler started by enable_profiler (or by anyone) is on in this thread.
bool profiler_enabled();

}  // namespace accelerate::compat
