// Process control and collectives across processes:
//   accelerate-cpp launch --num_processes 2 build/examples/collectives
#include <accelerate/accelerate.h>

#include <ATen/ATen.h>
#include <sstream>

namespace acc = accelerate;

int main() {
  acc::Accelerator accelerator;
  const int rank = accelerator.process_index(), n = accelerator.num_processes();
  accelerator.print("running on", n, "process(es),",
                    acc::to_string(accelerator.distributed_type()));

  // Each process scores its own share of the work...
  std::vector<int> work(10);
  for (int i = 0; i < 10; ++i) work[i] = i;
  auto mine = accelerator.split_between_processes(work);
  double score = 0;
  for (int w : mine) score += w * w;
  // ...and the results come together on every process.
  auto scores = accelerator.gather(at::full({1}, score, at::kDouble));
  auto total = accelerator.reduce(at::full({1}, score, at::kDouble), "sum");
  auto names = accelerator.gather_object("rank-" + std::to_string(rank));
  std::ostringstream per_process;
  for (int64_t i = 0; i < scores.size(0); ++i)
    per_process << (i ? ", " : "") << scores[i].item<double>();
  accelerator.print("per-process scores:", per_process.str(), "| total:", total.item<double>());
  accelerator.print("workers:", names.size());

  accelerator.on_main_process([] { std::cout << "written once per job\n"; })();
  {
    auto first = accelerator.main_process_first();  // e.g. download or preprocess data
  }
  accelerator.wait_for_everyone();
  return total.item<double>() == 285.0 ? 0 : 1;
}
