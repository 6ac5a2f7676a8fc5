// bench_gloo_latency: the latency distribution of one Gloo all-reduce of the MLP's gradients
// (82,177 float32 = 328 KB) in a loop, with `--compute-us N` of tensor work (or of sleep with
// --sleep) before each, as in a training step; --poll waits by polling isCompleted() with
// yield instead of Work::wait(). Run with 2 processes:
//
//   accelerate-cpp launch --num_processes 2 bench_gloo_latency [--compute-us 1000] [--reps 300]
//
// Each rank prints `RESULT {json}` with the median, 10th and 90th percentile in microseconds.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  const int64_t compute_us = args.num("compute-us", 0);
  const int reps = static_cast<int>(args.num("reps", 300));
  const bool sleep = args.flag("sleep"), poll = args.flag("poll");
  accelerate::Accelerator accelerator;
  auto* pg = accelerator.state().process_group();
  at::Tensor buffer = torch::ones({82177});
  at::Tensor x = torch::randn({64, 256}), w = torch::randn({256, 256}) * 0.05;
  std::vector<double> us;
  for (int i = 0; i < reps + 20; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto elapsed_us = [&] {
      return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
          .count();
    };
    if (sleep)
      std::this_thread::sleep_for(std::chrono::microseconds(compute_us));
    else
      while (elapsed_us() < static_cast<double>(compute_us)) x = torch::tanh(x.mm(w));
    bench::Timer timer;
    std::vector<at::Tensor> tensors{buffer};
    auto work = pg->allreduce(tensors);
    if (poll)
      while (!work->isCompleted()) std::this_thread::yield();
    work->wait();
    if (i >= 20) us.push_back(timer.seconds() * 1e6);
  }
  std::sort(us.begin(), us.end());
  std::printf(
      "RESULT {\"bench\": \"gloo_latency\", \"rank\": %d, \"compute_us\": %lld, \"sleep\": %s, "
      "\"poll\": %s, \"median_us\": %.0f, \"p10_us\": %.0f, \"p90_us\": %.0f}\n",
      accelerator.process_index(), static_cast<long long>(compute_us), sleep ? "true" : "false",
      poll ? "true" : "false", us[us.size() / 2], us[us.size() / 10], us[us.size() * 9 / 10]);
  return 0;
}
