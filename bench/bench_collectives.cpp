// bench_collectives: what the cross-process argument check costs per collective.
//
//   build/tools/accelerate-cpp/accelerate-cpp launch --num_processes 2 \
//       --num_cpu_threads_per_process 1 build/bench/bench_collectives \
//       [--calls 2000 --rounds 7 --max_elements 42]
//
// Each round times, in alternation, `calls` of each of:
//   raw      process_group()->allreduce of a 1-element float tensor (no check)
//   reduce   accelerator.reduce of the same tensor (signature exchange + allreduce)
//   barrier  accelerator.wait_for_everyone() (the signature exchange alone)
//   gather21 a raw allgather of 21 int64 (the size of the signature exchange)
//   max      a raw allreduce(max) of --max_elements int64 (Gloo's cost by size)
// and prints the median microseconds per call and reduce - raw, the cost of the check.
#include <accelerate/accelerate.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdio>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  const int calls = static_cast<int>(args.num("calls", 2000));
  const int rounds = static_cast<int>(args.num("rounds", 7));
  accelerate::Accelerator accelerator(accelerate::AcceleratorOptions().cpu(true));
  if (accelerator.num_processes() < 2) {
    std::fprintf(stderr, "bench_collectives: run with 2 processes under accelerate-cpp launch\n");
    return 2;
  }
  auto* pg = accelerator.state().process_group();
  const at::Tensor one = torch::ones({1});
  std::vector<double> raw, checked, barrier, gather21, max42;
  auto time_us = [&](auto&& fn) {
    accelerator.wait_for_everyone();
    bench::Timer timer;
    for (int i = 0; i < calls; ++i) fn();
    return timer.seconds() * 1e6 / calls;
  };
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
    const double a = time_us([&] {
      std::vector<at::Tensor> v{one.clone()};
      pg->allreduce(v)->wait();
    });
    const double b = time_us([&] { accelerator.reduce(one); });
    const double c = time_us([&] { accelerator.wait_for_everyone(); });
    const at::Tensor row = torch::zeros({21}, torch::kLong);
    const double d = time_us([&] {
      std::vector<at::Tensor> in{row};
      std::vector<std::vector<at::Tensor>> out{{torch::empty_like(row), torch::empty_like(row)}};
      pg->allgather(out, in)->wait();
    });
    const at::Tensor both = torch::zeros({args.num("max_elements", 42)}, torch::kLong);
    const double e = time_us([&] {
      std::vector<at::Tensor> v{both.clone()};
      c10d::AllreduceOptions max;
      max.reduceOp = c10d::ReduceOp::MAX;
      pg->allreduce(v, max)->wait();
    });
    if (r == 0) continue;
    gather21.push_back(d);
    max42.push_back(e);
    raw.push_back(a);
    checked.push_back(b);
    barrier.push_back(c);
  }
  if (accelerator.is_main_process())
    std::printf("raw allgather of 21 int64 %.1f us, raw allreduce(max) of %ld int64 %.1f us\n",
                bench::median(gather21), args.num("max_elements", 42), bench::median(max42));
  if (accelerator.is_main_process())
    std::printf(
        "calls %d x %d rounds: raw allreduce %.1f us, checked reduce %.1f us, "
        "signature exchange alone %.1f us; the check adds %.1f us per call (%.2fx)\n",
        calls, rounds, bench::median(raw), bench::median(checked), bench::median(barrier),
        bench::median(checked) - bench::median(raw), bench::median(checked) / bench::median(raw));
  return 0;
}
