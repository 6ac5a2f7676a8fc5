// bench/c10d_util.h: a hand-written c10d set-up for the baselines, without the library's
// engines: TCPStore + a Gloo process group from the torchrun variables, and an orderly
// teardown. Shared with the library: the LibTorch-version shim (src/compat.h); the baselines'
// hand-made c10d::Reducer (PyTorch DDP's buckets, no library engine) is src/ddp/reducer_engine.h's.
#pragma once

#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <string>
#include <thread>

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

}  // namespace bench
