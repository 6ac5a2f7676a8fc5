// bench/c10d_util.h: a hand-written c10d set-up for the baselines, without the library's
// engines: TCPStore + a Gloo process group from the torchrun variables, and an orderly
// teardown. Only the LibTorch-version shim (src/compat.h) is shared with the library.
#pragma once

#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "compat.h"

namespace bench {

struct Group {
  int rank = 0;
  int world = 1;
  c10::intrusive_ptr<c10d::TCPStore> store;
  c10::intrusive_ptr<c10d::ProcessGroup> pg;

  /// Joins the job described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT.
  Group() {
    rank = env_int("RANK", 0);
    world = env_int("WORLD_SIZE", 1);
    if (world == 1) return;
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env_int("MASTER_PORT", 29500));
    so.isServer = rank == 0;
    so.numWorkers = static_cast<std::size_t>(world);
    so.waitWorkers = true;
    so.timeout = std::chrono::seconds(120);
    store = c10::make_intrusive<c10d::TCPStore>(env_str("MASTER_ADDR", "127.0.0.1"), so);
    pg = accelerate::compat::make_process_group(store, rank, world, std::chrono::seconds(120),
                                                accelerate::compat::Backend::GLOO);
  }
  void barrier() const {
    if (pg) pg->barrier()->wait();
  }
  /// Barrier, drop the group, then count out through the store (server last).
  ~Group() {
    if (!pg) return;
    try {
      pg->barrier()->wait();
    } catch (...) {
    }
    pg.reset();
    try {
      store->add("bench/teardown", 1);
      if (rank == 0)
        while (store->add("bench/teardown", 0) < world)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
    } catch (...) {
    }
    store.reset();
  }
};

/// A c10d::Reducer built by hand the way PyTorch's DDP builds it (first bucket 1 MB, then
/// `cap` bytes, buckets reversed): the library-free baseline.
inline std::unique_ptr<c10d::Reducer> make_reducer(const std::vector<at::Tensor>& params,
                                                   std::unordered_map<size_t, std::string> names,
                                                   const c10::intrusive_ptr<c10d::ProcessGroup>& pg,
                                                   size_t cap, bool gradient_as_bucket_view) {
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> limits;
  std::tie(buckets, limits) = c10d::compute_bucket_assignment_by_size(
      params, {static_cast<size_t>(c10d::kDefaultFirstBucketBytes), cap},
      std::vector<bool>(params.size(), false));
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(limits.begin(), limits.end());
  return accelerate::compat::make_reducer(
      params, std::move(buckets), std::move(limits), pg, static_cast<int64_t>(cap),
      /*find_unused_parameters=*/false, gradient_as_bucket_view, std::move(names),
      static_cast<int64_t>(c10d::kDefaultFirstBucketBytes));
}

}  // namespace bench
