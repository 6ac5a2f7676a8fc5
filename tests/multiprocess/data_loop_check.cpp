// The data-loader checks of Accelerate's test_distributed_data_loop.py, with real processes
// (run by multiprocess_test.cpp with 2 and 3 processes): even_batches on and off, every sample
// seen once through gather_for_metrics (in order, shuffled, with a batch sampler, from an
// iterable data set dispatched and sharded), and resuming a pass from its saved position.
// Exits 1 naming the first failed check.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <algorithm>
#include <iostream>
#include <numeric>
#include <string>
#include <vector>
#include "../index_datasets.h"

namespace acc = accelerate;

namespace {

using accelerate::testing::Indexed;
using accelerate::testing::Stream;

constexpr int64_t kElements = 22, kBatch = 4;

// BatchSampler(RandomSampler(dataset), batch_size=4, drop_last=False), seeded by the epoch.
struct RandomBatches : acc::BatchSampler {
  std::vector<std::vector<int64_t>> batches(int64_t epoch) override {
    auto order = acc::shuffled_indices(kElements, 99 + epoch);
    std::vector<std::vector<int64_t>> out;
    for (size_t i = 0; i < order.size(); i += kBatch)
      out.emplace_back(order.begin() + i, order.begin() + std::min(order.size(), i + kBatch));
    return out;
  }
  std::optional<int64_t> batch_size() const override { return kBatch; }
};

void check(bool ok, const acc::Accelerator& a, const std::string& what) {
  if (ok) return;
  std::cerr << "data_loop_check: rank " << a.process_index() << ": " << what << std::endl;
  std::exit(1);
}

template <typename Loader>
std::vector<int64_t> gathered(acc::Accelerator& a, Loader& dl) {
  std::vector<int64_t> all;
  for (auto& batch : *dl) {
    at::Tensor t = a.gather_for_metrics(batch.target).contiguous();
    all.insert(all.end(), t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
  }
  return all;
}

std::vector<int64_t> batch_sizes(acc::Accelerator& a, int64_t size, int64_t batch) {
  auto dl = a.prepare(
      acc::DataLoader<Indexed>(Indexed(size), acc::DataLoaderOptions().batch_size(batch)));
  std::vector<int64_t> sizes;
  for (auto& b : *dl) sizes.push_back(b.target.size(0));
  return sizes;
}

}  // namespace

int main() {
  std::vector<int64_t> all(kElements);
  std::iota(all.begin(), all.end(), 0);
  {
    acc::Accelerator a;
    const int n = a.num_processes(), r = a.process_index();
    // test_default_ensures_even_batch_sizes: everyone gets the same batches.
    check(batch_sizes(a, 3, 1) == std::vector<int64_t>((3 + n - 1) / n, 1), a, "even batches 3/1");
    auto s = batch_sizes(a, 7, 2);
    check(s == std::vector<int64_t>((7 + 2 * n - 1) / (2 * n), 2), a, "even batches 7/2");

    // test_data_loader: every sample once, in order, shuffled, with a batch sampler.
    auto in_order = a.prepare(
        acc::DataLoader<Indexed>(Indexed(kElements), acc::DataLoaderOptions().batch_size(kBatch)));
    check(gathered(a, in_order) == all, a, "in order");
    auto shuffled = a.prepare(acc::DataLoader<Indexed>(
        Indexed(kElements), acc::DataLoaderOptions().batch_size(kBatch).shuffle(true)));
    auto v = gathered(a, shuffled);
    std::sort(v.begin(), v.end());
    check(v == all, a, "shuffled");
    auto sampled = a.prepare(acc::DataLoader<Indexed>(
        Indexed(kElements),
        acc::DataLoaderOptions().batch_sampler(std::make_shared<RandomBatches>())));
    v = gathered(a, sampled);
    std::sort(v.begin(), v.end());
    check(v == all, a, "batch sampler");
    // Iterable data sets: dispatched (the default).
    auto stream = a.prepare(
        acc::DataLoader<Stream>(Stream(kElements), acc::DataLoaderOptions().batch_size(kBatch)));
    check(stream->dispatches(), a, "iterable dispatched by default");
    check(gathered(a, stream) == all, a, "iterable dispatched");

    // _test_stateful_dataloader_resume: the batches after a saved position come back.
    for (int iterable = 0; iterable < 2; ++iterable) {
      std::vector<at::Tensor> after, resumed;
      std::map<std::string, int64_t> saved;
      auto run = [&](auto& dl) {
        int step = 0;
        for (auto& b : *dl) {
          if (step == 2) saved = dl->state_dict();
          if (step > 2) after.push_back(a.gather(b.target));
          ++step;
        }
        dl->load_state_dict(saved);
        for (auto& b : *dl) resumed.push_back(a.gather(b.target));
      };
      if (iterable) {
        auto dl = a.prepare(
            acc::DataLoader<Stream>(Stream(32 * n), acc::DataLoaderOptions().batch_size(4)));
        run(dl);
      } else {
        auto dl = a.prepare(acc::DataLoader<Indexed>(
            Indexed(32 * n), acc::DataLoaderOptions().batch_size(4).shuffle(true)));
        run(dl);
      }
      bool same = after.size() == resumed.size() && !after.empty();
      for (size_t i = 0; same && i < after.size(); ++i) same = after[i].equal(resumed[i]);
      check(same, a, iterable ? "resume iterable" : "resume map-style");
    }
    (void)r;
  }
  {
    // test_can_disable_even_batches, and an iterable data set sharded instead of dispatched.
    acc::Accelerator a(acc::AcceleratorOptions().even_batches(false).dispatch_batches(false));
    const int n = a.num_processes(), r = a.process_index();
    check(batch_sizes(a, 3, 1).size() == static_cast<size_t>(3 / n + (r < 3 % n ? 1 : 0)), a,
          "uneven 3/1");
    auto stream = a.prepare(
        acc::DataLoader<Stream>(Stream(kElements), acc::DataLoaderOptions().batch_size(kBatch)));
    check(!stream->dispatches(), a, "iterable sharded");
    check(gathered(a, stream) == all, a, "iterable sharded");
    a.print("data_loop_check: ok");
  }
  return 0;
}
