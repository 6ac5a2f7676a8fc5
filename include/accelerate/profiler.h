// accelerate/profiler.h: `Accelerator::profile`, LibTorch's profiler as an RAII guard that
// writes a Chrome trace (chrome://tracing, Perfetto, TensorBoard's profiler) when it ends.
//
// Accelerate's `with accelerator.profile(ProfileKwargs(...)):` becomes a guard: every
// operator the process runs while it lives (forward, backward, the DDP all-reduce c10d records
// as "gloo:all_reduce" / "nccl:all_reduce", the optimizer's step) is recorded, and the trace is
// written when it goes out of scope (or at stop()). With several processes each writes its own
// file (see Accelerator::profile).
//
// Example:
//   {
//     auto p = accelerator.profile("trace.json");   // trace_<rank>.json with several processes
//     auto loss = torch::mse_loss(model->forward(x), y);
//     accelerator.backward(loss);
//     optimizer->step();
//   }                                               // written here
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "accelerate/options.h"

namespace accelerate {

class State;

/// Options of a profile (Accelerate's `ProfileKwargs`), with chained setters (see options.h).
struct ProfileOptions {
  /// Record the shapes of each operator's inputs (default false).
  ACCELERATE_ARG(bool, record_shapes) = false;
  /// Record memory allocations (default false).
  ACCELERATE_ARG(bool, profile_memory) = false;
  /// Estimate the FLOPs of matrix products and convolutions (default false).
  ACCELERATE_ARG(bool, with_flops) = false;
  /// What to record: "cpu", "cuda" (Accelerate's `activities`). Default (empty): "cpu", and
  /// "cuda" too on a CUDA device. "cuda" needs a CUDA device.
  ACCELERATE_ARG(std::vector<std::string>, activities);
};

/// The guard `Accelerator::profile` returns: the profiler runs while it lives, then the trace
/// file is written and every process waits for the others (as Accelerate). Not copyable or
/// movable. A failure when the guard ends (a file that cannot be written) cannot be thrown from
/// the destructor: it is reported on stderr; call stop() to get the exception instead. Only one
/// profile at a time per thread.
class [[nodiscard]] Profile {
 public:
  /// Starts profiling on this thread (and the threads LibTorch starts for it: autograd's).
  /// `path`: the trace file of this process. Throws InvalidArgument when a profile is already
  /// running, or for an unknown activity.
  Profile(const State& state, std::string path, const ProfileOptions& options);
  /// Ends the profile as stop() does, reporting a failure on stderr instead of throwing.
  ~Profile();
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  /// Ends the profile now: stops the profiler, writes the trace and waits for every process (a
  /// collective). Throws FileError when the file cannot be written. Later calls, and the
  /// destructor, do nothing.
  void stop();
  /// The file this process writes.
  const std::string& path() const { return path_; }

 private:
  const State& state_;
  std::string path_;
  bool running_ = false;
};

}  // namespace accelerate
