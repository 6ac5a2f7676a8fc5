// Test helpers: run N ranks as threads of this process, each with its own Accelerator and
// ProcessGroupGloo, meeting through one in-memory c10d::HashStore (no TCP port to find, so
// tests running at the same time cannot collide; the environment is passed explicitly, so no
// process-global state is shared). The first exception of any rank is rethrown.
//
// Example:
//   accelerate::testing::run_ranks(2, [](accelerate::Accelerator& a) {
//     EXPECT_EQ(a.reduce(at::ones({1}), "sum").item<double>(), 2.0);
//   });
#pragma once

#include <accelerate/accelerate.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <chrono>
#include <exception>
#include <string>
#include <thread>
#include <vector>

namespace accelerate::testing {

/// The torchrun environment of rank `rank` of `n` on one machine (no MASTER_ADDR/PORT: the
/// ranks meet through a store, see rank_options).
inline Environment rank_environment(int rank, int n) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(n)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"LOCAL_WORLD_SIZE", std::to_string(n)},
          {"OMP_NUM_THREADS", "1"}};
}

/// A fresh in-memory store for the ranks of one job.
inline c10::intrusive_ptr<c10d::Store> make_store() {
  return c10::make_intrusive<c10d::HashStore>();
}

/// `options` for rank `rank` of `n` meeting through `store`: on the CPU, with that rank's
/// environment, and a 60 s timeout unless `options` has one.
inline AcceleratorOptions rank_options(int rank, int n,
                                       const c10::intrusive_ptr<c10d::Store>& store,
                                       AcceleratorOptions options = AcceleratorOptions()) {
  options.cpu(true).environment(rank_environment(rank, n)).store(store);
  if (!options.timeout()) options.timeout(std::chrono::seconds(60));
  return options;
}

/// Runs fn(rank) on n threads; rethrows the first exception.
template <typename F>
void spawn_threads(int n, F fn) {
  std::vector<std::exception_ptr> errors(n);
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[r] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

/// Runs fn(accelerator) on n ranks as threads, each with its own Accelerator made from
/// rank_options(rank, n, store, options) over one fresh store.
template <typename F>
void run_ranks(int n, F fn, AcceleratorOptions options = AcceleratorOptions()) {
  const auto store = make_store();
  spawn_threads(n, [&](int rank) {
    Accelerator accelerator(rank_options(rank, n, store, options));
    fn(accelerator);
  });
}

}  // namespace accelerate::testing
