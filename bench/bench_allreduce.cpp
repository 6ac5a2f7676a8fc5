// bench_allreduce: bandwidth of the DDP gradient synchronisation of accelerate-cpp against one
// c10d allreduce of a flat buffer of the same size, on the same process group. Run with 2
// processes under the launcher:
//
//   accelerate-cpp launch --num_processes 2 bench_allreduce [--params 4096 --size 1024 --reps 20]
//
// The model has `params` parameters of `size` float32 each (default 4096 x 4 KiB = 16 MiB), or
// the sizes of --sizes 16384,256,... (e.g. the MLP of bench_mlp).
// Each repetition measures, in a rotating order and after a barrier each:
//   sync    accelerator.backward(loss)             backward + bucketed all-reduce
//   nosync  the same under accelerator.no_sync(m)  backward alone
//   flat    pg->allreduce({flat buffer})->wait()   the collective alone
// --engine buckets (default): the library's own engine (DdpEngine::Buckets);
// --engine reducer: the library with DdpEngine::Reducer (c10d's Reducer);
// --engine c10d: a c10d::Reducer built here by hand on the same process group (the model is
//   not prepared): what the library adds on top of the Reducer.
// --copy: gradient_as_bucket_view(false) (default true).
// DDP bandwidth = bytes / (sync - nosync); flat bandwidth = bytes / flat (medians); ratio =
// flat / (sync - nosync), and ratio_vs_slowest = flat / (sync - the slower process's nosync),
// per repetition (medians).
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "c10d_util.h"
#include "common.h"
#include "ddp/reducer_engine.h"

namespace acc = accelerate;

namespace {

struct ManyParams : torch::nn::Module {
  explicit ManyParams(const std::vector<int64_t>& sizes) {
    for (size_t i = 0; i < sizes.size(); ++i)
      params_.push_back(register_parameter("p" + std::to_string(i), torch::randn({sizes[i]})));
  }
  at::Tensor forward() {
    std::vector<at::Tensor> parts;
    parts.reserve(params_.size());
    for (auto& p : params_) parts.push_back(p.sum());
    return at::stack(parts).sum();
  }
  std::vector<at::Tensor> params_;
};

}  // namespace

int main(int argc, char** argv) {
  bench::Args args(argc, argv);
  int64_t count = args.num("params", 4096);
  const int64_t size = args.num("size", 1024);
  std::vector<int64_t> sizes(static_cast<size_t>(count), size);
  if (!args.str("sizes", "").empty()) {
    sizes.clear();
    std::stringstream list(args.str("sizes", ""));
    for (std::string item; std::getline(list, item, ',');) sizes.push_back(std::stoll(item));
    count = static_cast<int64_t>(sizes.size());
  }
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  const int reps = static_cast<int>(args.num("reps", 20));
  const double bucket_mb = args.real("bucket_cap_mb", 25.0);
  const bool bucket_view = !args.flag("copy");
  const std::string engine = args.str("engine", "buckets");
  const int only = static_cast<int>(args.num("only", -1));  // profile one variant: 0, 1 or 2

  acc::Accelerator accelerator(acc::AcceleratorOptions().ddp_options(
      acc::DistributedDataParallelOptions()
          .bucket_cap_mb(bucket_mb)
          .gradient_as_bucket_view(bucket_view)
          .engine(engine == "reducer" ? acc::DdpEngine::Reducer : acc::DdpEngine::Buckets)));
  if (accelerator.num_processes() < 2) {
    std::fprintf(stderr, "bench_allreduce: run with 2 processes under accelerate-cpp launch\n");
    return 2;
  }
  torch::manual_seed(0);
  auto model = std::make_shared<ManyParams>(sizes);
  std::unique_ptr<c10d::Reducer> reducer;
  std::shared_ptr<ManyParams> prepared = model;
  if (engine != "c10d") {
    prepared = accelerator.prepare(model);  // the same pointer as `model`
  } else {
    auto params = model->parameters();
    std::unordered_map<size_t, std::string> names;
    for (size_t i = 0; i < params.size(); ++i) names.emplace(i, "p" + std::to_string(i));
    reducer = accelerate::detail::make_ddp_reducer(
        params, std::move(names),
        c10::intrusive_ptr<c10d::ProcessGroup>::reclaim_copy(accelerator.state().process_group()),
        static_cast<size_t>(bucket_mb * 1024 * 1024), /*find_unused_parameters=*/false,
        bucket_view);
  }
  auto* pg = accelerator.state().process_group();
  const double bytes = static_cast<double>(total) * 4.0;
  at::Tensor flat = torch::ones({total});

  auto barrier = [&] { accelerator.wait_for_everyone(); };
  std::vector<double> t_sync, t_nosync, t_flat;
  auto run = [&](int which, bool record) {
    prepared->zero_grad();
    at::Tensor loss;
    if (which != 2) loss = prepared->forward();
    barrier();
    bench::Timer timer;
    if (which == 0 && reducer) {
      reducer->rebuild_buckets();
      reducer->prepare_for_forward();
      reducer->prepare_for_backward({});
      loss.backward();
    } else if (which == 1 && reducer) {
      reducer->rebuild_buckets();
      loss.backward();
    } else if (which == 0) {
      accelerator.backward(loss);
    } else if (which == 1) {
      auto guard = accelerator.no_sync(prepared);
      accelerator.backward(loss);
    } else {
      std::vector<at::Tensor> v{flat};
      pg->allreduce(v)->wait();
    }
    const double s = timer.seconds();
    if (!record) return;
    (which == 0 ? t_sync : which == 1 ? t_nosync : t_flat).push_back(s);
  };
  for (int w = 0; w < 3; ++w) run(w, false);  // warm-up (buckets are rebuilt after step 1)
  for (int w = 0; w < 3; ++w) run(w, false);
  if (only >= 0) {
    for (int r = 0; r < reps; ++r) run(only, false);
    return 0;
  }
  for (int r = 0; r < reps; ++r)
    for (int k = 0; k < 3; ++k) run((r + k) % 3, true);

  // The backward alone of the slower process, repetition by repetition: a synchronised
  // backward cannot end before it, so sync - slowest is the synchronisation's own cost (the
  // flat all-reduce starts after a barrier, with no such difference in it).
  const at::Tensor all_nosync =
      accelerator.gather(torch::tensor(t_nosync, torch::kDouble).unsqueeze(0));
  const at::Tensor slowest = std::get<0>(all_nosync.max(0)).contiguous();
  std::vector<double> t_slowest(slowest.data_ptr<double>(),
                                slowest.data_ptr<double>() + slowest.numel());
  std::vector<double> ratios, skew_free;  // per repetition: flat time / sync time
  for (size_t i = 0; i < t_flat.size(); ++i) {
    ratios.push_back(t_flat[i] / std::max(1e-9, t_sync[i] - t_nosync[i]));
    skew_free.push_back(t_flat[i] / std::max(1e-9, t_sync[i] - t_slowest[i]));
  }
  const double sync = bench::median(t_sync), nosync = bench::median(t_nosync),
               flat_s = bench::median(t_flat), nosync_slowest = bench::median(t_slowest);
  if (accelerator.is_main_process()) {
    std::printf(
        "RESULT {\"bench\": \"allreduce\", \"params\": %lld, \"size\": %lld, \"bytes\": %.0f, "
        "\"engine\": \"%s\", \"gradient_as_bucket_view\": %s, "
        "\"reps\": %d, \"sync_s\": %.6f, \"nosync_s\": %.6f, \"flat_s\": %.6f, "
        "\"ddp_GBps\": %.4f, \"flat_GBps\": %.4f, \"ratio\": %.3f, "
        "\"nosync_slowest_s\": %.6f, \"ratio_vs_slowest\": %.3f}\n",
        static_cast<long long>(count), static_cast<long long>(size), bytes, engine.c_str(),
        bucket_view ? "true" : "false", reps, sync, nosync, flat_s,
        bytes / std::max(1e-9, sync - nosync) / 1e9, bytes / flat_s / 1e9, bench::median(ratios),
        nosync_slowest, bench::median(skew_free));
    std::fflush(stdout);
  }
  return 0;
}
