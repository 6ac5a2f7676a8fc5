#include "warnings.h"

#include <atomic>
#include <iostream>
#include <mutex>
#include <set>

namespace accelerate::detail {
namespace {

std::atomic<int> largest_job{1};
// The rank of the last State made in this process, for threads that made none (a program's
// worker thread); ranks run as threads in tests and embedding programs have their own.
std::atomic<int> process_rank{0};
thread_local int thread_rank = -1;

}  // namespace

void note_job(int processes, int rank) {
  thread_rank = rank;
  process_rank = rank;
  int seen = largest_job.load();
  while (processes > seen && !largest_job.compare_exchange_weak(seen, processes)) {
  }
}

int job_processes() { return largest_job.load(); }

void warn_once(const std::string& key, const std::string& message) {
  if ((thread_rank >= 0 ? thread_rank : process_rank.load()) != 0) return;
  static std::mutex mutex;
  static std::set<std::string> warned;
  std::lock_guard<std::mutex> lock(mutex);
  if (!warned.insert(key).second) return;
  std::cerr << "accelerate: warning: " << message << std::endl;
}

}  // namespace accelerate::detail
