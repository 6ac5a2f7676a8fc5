// Test helpers: run N ranks as threads of this process, each with its own Accelerator over a
// real TCPStore + ProcessGroupGloo on 127.0.0.1 (the environment is passed explicitly, so no
// process-global state is shared). The first exception of any rank is rethrown.
#pragma once

#include <accelerate/accelerate.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace accelerate::testing {

/// A TCP port that was free a moment ago.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    ::close(fd);
    throw std::runtime_error("free_port: bind failed");
  }
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

/// The torchrun environment of rank `rank` of `n` on one machine.
inline Environment rank_environment(int rank, int n, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(n)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"LOCAL_WORLD_SIZE", std::to_string(n)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)},
          {"OMP_NUM_THREADS", "1"}};
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

/// Runs fn(accelerator) on n ranks as threads, each with its own Accelerator.
template <typename F>
void run_ranks(int n, F fn, AcceleratorOptions options = AcceleratorOptions()) {
  const int port = free_port();
  spawn_threads(n, [&](int rank) {
    AcceleratorOptions mine = options;
    mine.cpu(true).environment(rank_environment(rank, n, port));
    if (!mine.timeout_) mine.timeout(std::chrono::seconds(60));
    Accelerator accelerator(mine);
    fn(accelerator);
  });
}

}  // namespace accelerate::testing
