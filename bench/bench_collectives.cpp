// bench_collectives: what the cross-process argument check costs per collective.
//
//   build/tools/accelerate-cpp/accelerate-cpp launch --num_processes 2 \
//       --num_cpu_threads_per_process 1 build/bench/bench_collectives \
//       [--calls 1000 --rounds 5 --sizes 1,16,200,4096]
//
// For each size N (float32 elements), each round times, in alternation, `calls` of each of:
//   raw allreduce   process_group()->allreduce of N floats (no check)
//   reduce          accelerator.reduce of the same tensor (checked)
//   raw allgather   process_group()->allgather of N floats (no check)
//   gather          accelerator.gather of the same tensor (checked)
// and, once per round, accelerator.wait_for_everyone() (the signature exchange alone).
// Prints the median microseconds per call and checked / raw. Up to 848 bytes of data travel
// inside the signature exchange (one collective); larger tensors need a second collective.
#include <accelerate/accelerate.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <cstdio>
#include <sstream>
#include <vector>

#include "common.h"

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  const int calls = static_cast<int>(args.num("calls", 1000));
  const int rounds = static_cast<int>(args.num("rounds", 5));
  std::vector<int64_t> sizes;
  {
    std::stringstream list(args.str("sizes", "1,16,200,4096"));
    for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoll(item));
  }
  accelerate::Accelerator accelerator(accelerate::AcceleratorOptions().cpu(true));
  if (accelerator.num_processes() < 2) {
    std::fprintf(stderr, "bench_collectives: run with 2 processes under accelerate-cpp launch\n");
    return 2;
  }
  auto* pg = accelerator.state().process_group();
  const int world = accelerator.num_processes();
  auto time_us = [&](auto&& fn) {
    accelerator.wait_for_everyone();
    bench::Timer timer;
    for (int i = 0; i < calls; ++i) fn();
    return timer.seconds() * 1e6 / calls;
  };
  std::vector<double> barrier;
  std::vector<std::vector<double>> raw_reduce(sizes.size()), reduce(sizes.size()),
      raw_gather(sizes.size()), gather(sizes.size());
  for (int r = 0; r <= rounds; ++r) {  // round 0 warms up
    for (size_t s = 0; s < sizes.size(); ++s) {
      const at::Tensor t = torch::ones({sizes[s]});
      const double a = time_us([&] {
        std::vector<at::Tensor> v{t.clone()};
        pg->allreduce(v)->wait();
      });
      const double b = time_us([&] { accelerator.reduce(t); });
      const double c = time_us([&] {
        std::vector<at::Tensor> in{t};
        std::vector<std::vector<at::Tensor>> out(1);
        for (int k = 0; k < world; ++k) out[0].push_back(torch::empty_like(t));
        pg->allgather(out, in)->wait();
        at::cat(out[0]);
      });
      const double d = time_us([&] { accelerator.gather(t); });
      if (r == 0) continue;
      raw_reduce[s].push_back(a);
      reduce[s].push_back(b);
      raw_gather[s].push_back(c);
      gather[s].push_back(d);
    }
    const double e = time_us([&] { accelerator.wait_for_everyone(); });
    if (r > 0) barrier.push_back(e);
  }
  if (!accelerator.is_main_process()) return 0;
  std::printf("calls %d x %d rounds, %d processes, median us per call\n", calls, rounds, world);
  std::printf("%8s %10s %10s %7s %10s %10s %7s\n", "floats", "allreduce", "reduce", "ratio",
              "allgather", "gather", "ratio");
  for (size_t s = 0; s < sizes.size(); ++s) {
    const double a = bench::median(raw_reduce[s]), b = bench::median(reduce[s]),
                 c = bench::median(raw_gather[s]), d = bench::median(gather[s]);
    std::printf("%8ld %10.1f %10.1f %6.2fx %10.1f %10.1f %6.2fx\n", static_cast<long>(sizes[s]), a,
                b, b / a, c, d, d / c);
  }
  std::printf("signature exchange alone (wait_for_everyone): %.1f us\n", bench::median(barrier));
  return 0;
}
