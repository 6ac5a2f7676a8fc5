// A program run under `accelerate-cpp launch` by multiprocess_test.cpp: the collective and
// process-control checks of ops_test.cpp with real processes. Exits 1 naming the first
// mismatch; exits with --exit-code C on rank --fail-rank R after joining the job.
//
// With --stuck-rank R, rank R never comes to the second collective (it sleeps), so that the
// others time out (ACCELERATE_TIMEOUT) and say where every rank is.
//
// With --many-accelerators, the program creates Accelerators as Python programs do: a second
// while the first lives (they share the process group, as Accelerate's shared state), then new
// ones right after the previous ones are gone, each checked with a collective.
//
// With --joins N, the processes join N times, one Accelerator right after the other, each
// checked with a collective. With --print-network, each prints "GLOO <where Gloo binds>".
//
// Usage: dist_check [--order-file F] [--fail-rank R --exit-code C] [--stuck-rank R] [--quick]
//                   [--many-accelerators] [--joins N] [--print-network]
#include <accelerate/accelerate.h>

#include <ATen/ATen.h>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "test_ops_values.h"

namespace acc = accelerate;

namespace {

int failures = 0;

void check(bool ok, const acc::Accelerator& a, const std::string& what) {
  if (ok) return;
  ++failures;
  std::cerr << "dist_check: rank " << a.process_index() << ": " << what << std::endl;
}

std::vector<double> values(const at::Tensor& t) {
  auto c = t.to(at::kDouble).contiguous();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

}  // namespace

int run(int argc, char** argv);

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "dist_check: " << e.what() << std::endl;
    return 1;
  }
}

int run(int argc, char** argv) {
  std::string order_file;
  int fail_rank = -1, exit_code = 0, stuck_rank = -1;
  bool quick = false, many = false, print_network = false;
  int joins = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--order-file" && i + 1 < argc)
      order_file = argv[++i];
    else if (arg == "--fail-rank" && i + 1 < argc)
      fail_rank = std::atoi(argv[++i]);
    else if (arg == "--exit-code" && i + 1 < argc)
      exit_code = std::atoi(argv[++i]);
    else if (arg == "--stuck-rank" && i + 1 < argc)
      stuck_rank = std::atoi(argv[++i]);
    else if (arg == "--quick")
      quick = true;
    else if (arg == "--many-accelerators")
      many = true;
    else if (arg == "--joins" && i + 1 < argc)
      joins = std::atoi(argv[++i]);
    else if (arg == "--print-network")
      print_network = true;
    else {
      std::cerr << "dist_check: unknown argument " << arg << "\n";
      return 2;
    }
  }
  acc::AcceleratorOptions options;
  if (!std::getenv("ACCELERATE_TIMEOUT")) options.timeout(std::chrono::seconds(60));
  if (many || joins > 0) {
    auto sum_is_right = [](const acc::Accelerator& x, const char* what) {
      const int n = x.num_processes();
      const double sum = x.reduce(at::full({1}, x.process_index() + 1.0), "sum").item<double>();
      if (sum == n * (n + 1) / 2.0) return true;
      std::cerr << "dist_check: rank " << x.process_index() << ": " << what << ": sum " << sum
                << std::endl;
      return false;
    };
    bool ok = true;
    for (int k = 0; k < joins; ++k) {  // joins one after the other, each checked
      acc::Accelerator next(options);
      ok = sum_is_right(next, ("join " + std::to_string(k + 1)).c_str()) && ok;
    }
    if (joins > 0) return ok ? 0 : 1;
    {
      acc::Accelerator first(options);
      ok = sum_is_right(first, "first") && ok;
      acc::Accelerator second(options);  // while the first lives
      ok = sum_is_right(second, "second") && sum_is_right(first, "first again") && ok;
    }
    for (int k = 0; k < 3; ++k) {  // each right after the previous one is gone
      acc::Accelerator next(options);
      ok = sum_is_right(next, "a later one") && ok;
    }
    return ok ? 0 : 1;
  }
  acc::Accelerator a(options);
  const int n = a.num_processes(), r = a.process_index();
  if (print_network) std::cout << "GLOO " << a.state().gloo_network() << std::endl;

  if (stuck_rank >= 0) {
    a.gather(at::ones({1}));  // everybody: gather #1
    if (r == stuck_rank) {
      std::this_thread::sleep_for(std::chrono::seconds(120));
      return 0;
    }
    a.reduce(at::ones({1}));  // times out: the stuck rank never comes
    return 0;
  }

  if (r == fail_rank) {
    std::cerr << "dist_check: rank " << r << " exits with " << exit_code << " on purpose\n";
    return exit_code;
  }
  if (fail_rank >= 0) {
    // The healthy ranks block in a collective that the failed rank never joins: the launcher
    // must stop them.
    a.wait_for_everyone();
    return 0;
  }

  auto t = accelerate::testing::create_tensor(a).cpu();  // as before: on the CPU
  std::vector<double> expected;
  for (int i = 1; i <= n * n; ++i) expected.push_back(i);
  check(values(a.gather(t)) == expected, a, "gather");
  if (!quick) {
    check(values(a.reduce(t, "sum")) == accelerate::testing::expected_reductions(n).sum, a,
          "reduce sum");
    std::vector<double> first(expected.begin(), expected.begin() + n);
    check(values(a.broadcast(t.clone())) == first, a, "broadcast");
    auto padded = a.pad_across_processes(at::arange(r + 1, at::kFloat));
    check(padded.size(0) == n, a, "pad_across_processes size");
    auto objects = a.gather_object(std::vector<int>{r});
    check(static_cast<int>(objects.size()) == n && objects[n - 1] == n - 1, a, "gather_object");
    std::vector<int> items(17);
    auto share = a.split_between_processes(items);
    check(static_cast<int>(share.size()) == 17 / n + (r < 17 % n ? 1 : 0), a, "split");
    check(a.is_main_process() == (r == 0) && a.is_last_process() == (r == n - 1), a, "identity");
    // Per machine: local indices, and one local main process per machine.
    const int per_machine = a.state().num_local_processes();
    check(a.local_process_index() == r % per_machine, a, "local_process_index");
    auto local_mains = a.reduce(at::full({1}, a.is_local_main_process() ? 1.0 : 0.0), "sum");
    check(local_mains.item<double>() == n / per_machine, a, "one local main process per machine");
    if (r == n - 1) a.set_trigger();
    check(a.check_trigger(), a, "check_trigger");
    a.print("printed once by the main process");
  }
  if (!order_file.empty()) {
    auto first = a.main_process_first();
    if (a.is_main_process()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::ofstream(order_file, std::ios::app) << "rank " << r << "\n";
  }
  return failures == 0 ? 0 : 1;
}
