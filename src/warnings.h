// Internal: warnings about a training loop that runs but trains wrong (an unprepared data loader
// or model in a job of several processes, gradients cleared before a step used them). Each is
// printed once per process, and in a job of several processes on process 0 only: once per job.
#pragma once

#include <string>

namespace accelerate::detail {

/// Records that the calling thread's State joined a job of `processes` processes as `rank`
/// (State's constructor): what job_processes() and warn_once() go by.
void note_job(int processes, int rank);
/// The number of processes of the largest job a State of this process joined (1 before any).
int job_processes();
/// Prints "accelerate: warning: <message>" on stderr the first time `key` is warned about in
/// this process, unless the calling thread's State (or, from a thread that made none, the
/// process's last State) is not process 0 of its job.
void warn_once(const std::string& key, const std::string& message);

}  // namespace accelerate::detail
