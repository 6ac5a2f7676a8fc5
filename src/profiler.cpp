// Profile: LibTorch's profiler (compat::enable_profiler / disable_profiler) as a guard, and a
// Chrome trace written from its events where LibTorch cannot write Kineto's own.
#include "accelerate/profiler.h"
#include "accelerate/state.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <exception>
#include <filesystem>
#include <iostream>

#include "compat.h"
#include "errors.h"
#include "files.h"

namespace fs = std::filesystem;

namespace accelerate {

using detail::message_of;

namespace {

// Chrome's trace event format: complete ("X") events, times in microseconds; one pid per
// process (the rank, named), one tid per thread. What Kineto writes has the same shape, with
// more metadata.
std::string chrome_trace(const std::vector<compat::ProfiledEvent>& events, int rank) {
  uint64_t first = UINT64_MAX;
  for (const auto& e : events) first = std::min(first, e.start_ns);
  nlohmann::json trace_events = nlohmann::json::array();
  trace_events.push_back({{"name", "process_name"},
                          {"ph", "M"},
                          {"pid", rank},
                          {"args", {{"name", "rank " + std::to_string(rank)}}}});
  for (const auto& e : events) {
    nlohmann::json event = {{"ph", "X"},
                            {"cat", e.on_device ? "kernel" : "cpu_op"},
                            {"name", e.name},
                            {"pid", rank},
                            {"tid", e.on_device ? "stream" : std::to_string(e.thread)},
                            {"ts", static_cast<double>(e.start_ns - first) / 1000.0},
                            {"dur", static_cast<double>(e.duration_ns) / 1000.0}};
    nlohmann::json args = nlohmann::json::object();
    if (e.on_device) args["device"] = e.device_index;
    if (e.correlation) args["correlation"] = e.correlation;
    if (!e.shapes.empty()) args["Input Dims"] = e.shapes;
    if (!args.empty()) event["args"] = args;
    trace_events.push_back(std::move(event));
  }
  nlohmann::json trace = {{"traceEvents", trace_events},
                          {"displayTimeUnit", "ms"},
                          {"distributedInfo", {{"rank", rank}}}};
  return trace.dump();
}

thread_local bool running_here = false;

}  // namespace

Profile::Profile(const State& state, std::string path, const ProfileOptions& options)
    : state_(state), path_(std::move(path)) {
  if (path_.empty()) throw InvalidArgument("accelerate: profile: the trace file name is empty");
  bool cuda = state.device().is_cuda();
  if (!options.activities().empty()) {
    cuda = false;
    for (const std::string& activity : options.activities()) {
      if (activity == "cuda") {
        if (!state.device().is_cuda())
          throw InvalidArgument(
              "accelerate: profile: activity \"cuda\" needs a CUDA device, but this process "
              "runs on " +
              state.device().str());
        cuda = true;
      } else if (activity != "cpu") {
        throw InvalidArgument("accelerate: profile: unknown activity \"" + activity +
                              "\"; use \"cpu\" and/or \"cuda\"");
      }
    }
  }
  if (running_here || compat::profiler_enabled())
    throw InvalidArgument(
        "accelerate: profile: a profile is already running on this thread; end it first");
  compat::enable_profiler(options.record_shapes(), options.profile_memory(), options.with_flops(),
                          cuda);
  running_ = running_here = true;
}

void Profile::stop() {
  if (!running_) return;
  running_ = running_here = false;
  std::string failure;
  try {
    const fs::path file(path_);
    if (file.has_parent_path()) fs::create_directories(file.parent_path());
    bool saved = false;
    const auto events = compat::disable_profiler(path_, &saved);
    if (!saved)
      detail::write_file_atomically(path_, chrome_trace(events, state_.process_index()), "profile");
  } catch (const std::exception& e) {
    failure = message_of(e);
  }
  state_.wait_for_everyone();  // every process's file exists once any process goes on
  if (!failure.empty())
    throw FileError("accelerate: profile: writing the trace " + path_ + " failed: " + failure);
}

Profile::~Profile() {
  if (!running_) return;
  try {
    if (std::uncaught_exceptions() > 0) {
      // Unwinding: stop the profiler, but meet nobody (the others may not come).
      running_ = running_here = false;
      bool saved = false;
      compat::disable_profiler("", &saved);
      return;
    }
    stop();
  } catch (const std::exception& e) {
    std::cerr << "accelerate: profile: " << state_.describe() << ": " << message_of(e) << std::endl;
  }
}

}  // namespace accelerate
