// bench_blas: float32 matrix-multiply speed through LibTorch (at::mm_out, which Debian's
// LibTorch hands to sgemm of whatever libblas.so.3 is loaded).
//
//   bench_blas [--sizes 256,1024 --threads 1 --seconds 0.3]
//
// Prints the libblas.so.3 actually mapped and one `RESULT {json}` per size: GFLOP/s
// (2 n^3 per product), the best of 3 timed runs of at least --seconds each.
// `bench_blas --clock` instead measures the core clock while busy (a chain of dependent
// integer adds: one per cycle), to compute the peak at the clock the cores really run at.
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"

double measured_ghz() {
  uint64_t x = 0;
  const uint64_t n = 100000000;
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    bench::Timer timer;
    for (uint64_t i = 0; i < n; ++i)
      asm volatile(
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
          "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
          : "+r"(x));
    best = std::max(best, 8.0 * static_cast<double>(n) / timer.seconds() / 1e9);
  }
  return x > 0 ? best : 0;
}

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  if (args.flag("clock")) {
    std::printf("RESULT {\"bench\": \"clock\", \"ghz\": %.3f}\n", measured_ghz());
    return 0;
  }
  const int threads = static_cast<int>(args.num("threads", 1));
  const double min_seconds = args.real("seconds", 0.3);
  at::set_num_threads(threads);
  std::vector<int64_t> sizes;
  std::stringstream ss(args.str("sizes", "256,1024"));
  for (std::string item; std::getline(ss, item, ',');) sizes.push_back(std::stoll(item));

  torch::manual_seed(0);
  for (int64_t n : sizes) {
    auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
    at::mm_out(c, a, b);  // warm-up (and lets the BLAS start its threads)
    double best = 0;
    for (int rep = 0; rep < 3; ++rep) {
      bench::Timer timer;
      int64_t iters = 0;
      do {
        at::mm_out(c, a, b);
        ++iters;
      } while (timer.seconds() < min_seconds);
      const double s = timer.seconds();
      best = std::max(best, 2.0 * n * n * n * iters / s / 1e9);
    }
    std::printf(
        "RESULT {\"bench\": \"blas\", \"n\": %lld, \"threads\": %d, \"gflops\": %.3f, "
        "\"libblas\": \"%s\"}\n",
        static_cast<long long>(n), at::get_num_threads(), best,
        bench::mapped_library("libblas").c_str());
    std::fflush(stdout);
  }
  return 0;
}
