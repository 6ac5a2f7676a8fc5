// The checks of Accelerate 1.15's accelerate/test_utils/scripts/test_script.py, as a program run
// under `accelerate-cpp launch` (multiprocess_test.cpp: 2 and 3 processes).
//
// Usage: accelerate_test_script REFERENCE_JSON WORK_DIR
//   REFERENCE_JSON: tests/python/accelerate_reference.json, Python Accelerate's values.
//   WORK_DIR: a folder shared by the processes (main_process_first's file).
//
// Ported: initialization (a second Accelerator while the first lives), process execution
// (main_process_first's order in a shared file; on_main_process, on_local_main_process,
// on_last_process, on_process run only where they should), split_between_processes of a list,
// of a map of lists and a tensor (Python's nested dict), of a tensor, evenly; rng_sync_check
// (synchronize_rng_states of "torch", "cuda" with a CUDA device, and a generator: states made
// different per process first, equal to process 0's after); the data loader preparation
// (sharded loaders gather back to the whole data set, with and without split_batches,
// shuffled or not) and central_dl_preparation_check (the same with dispatch_batches, where
// only process 0 must read samples); custom_sampler_check (a prepared loader keeps a custom
// BatchSampler: each process gets that sampler's batches as BatchSamplerShard shards them);
// the seedable sampler (same seed and set_epoch(0): the same items; another data seed: other
// items); the training check with use_seedable_sampler False (DataLoaderOptions::generator,
// shared by the baseline and the prepared loaders, synchronised from process 0 at every pass)
// and True (a model trained on N processes ends where the single-process baseline does,
// within Accelerate's 1e-6, without and with split_batches and under bf16 autocast; and where
// Python Accelerate ends, from the reference file, whose RegressionDataset values must also
// equal ours bit for bit); the trigger.
// Added: the loader's generator is re-synchronised at every pass (after each pass process i
// draws i + 1 numbers from it; every pass must still give each process the batches Python
// Accelerate gives, reference "generator_resync").
// Differences in the port:
// - split_batches with a batch that the processes cannot share evenly (8 over 3) must fail
//   preparing the loader, as Accelerate's prepare_data_loader raises ValueError (with and
//   without dispatch_batches); those checks then stop there.
// - custom_sampler_check: Python's CustomBatchSampler draws an unseeded np.random.permutation
//   per process and only its class is checked; here the permutation is seeded with
//   1234 + epoch (a BatchSampler must give every process the same batches) and the batches
//   each process gets are checked.
// - rng_sync_check: Python synchronises states that happen to be equal already; here each
//   process seeds its own first, so that the check fails if nothing is sent.
// Skipped: split_between_processes of a `datasets.Dataset` (no Hugging Face datasets in C++);
// check_seedable_sampler_in_batch_sampler_shard (checks a Python sampler class);
// test_reinstantiated_state (`AcceleratorState._reset_state()`: no global state here); the
// keep-fp32-wrapper check (unwrap_model(keep_fp32_wrapper): the model is never wrapped) and the
// fp16 training check (accelerate-cpp's fp16 is CUDA-only; this program runs on CPU);
// DeepSpeed / XLA / MPS / HPU special cases.
#include <accelerate/accelerate.h>

#include <ATen/ATen.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "regression.h"
#include "script_check.h"

namespace acc = accelerate;
using acc::testing::RegressionDataset;
using acc::testing::RegressionModel;
using acc::testing::values_of;

namespace {

acc::testing::ScriptCheck* check = nullptr;

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

std::vector<int64_t> longs(const at::Tensor& t) {
  auto c = t.to(at::kCPU).to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

void init_state_check(const acc::Accelerator& first) {
  acc::Accelerator second;  // a second one while the first lives
  if (second.local_process_index() == 0) std::cout << "Testing, testing. 1, 2, 3." << std::endl;
  std::cout << "Num processes: " << second.num_processes()
            << ", process index: " << second.process_index() << std::endl;
  (*check)(second.process_index() == first.process_index() &&
               second.num_processes() == first.num_processes(),
           "a second Accelerator sees another job");
  (*check)(second.gather(at::ones({1})).sum().item<double>() == second.num_processes(),
           "a collective on the second Accelerator");
}

void process_execution_check(acc::Accelerator& a, const std::string& work_dir) {
  const std::string path = work_dir + "/check_main_process_first.txt";
  {
    auto guard = a.main_process_first();
    std::ofstream out(path, std::ios::app);
    if (a.is_main_process()) {
      std::this_thread::sleep_for(
          std::chrono::milliseconds(100));  // the main process takes longest
      out << "Currently in the main process\n";
    } else {
      out << "Now on another process\n";
    }
  }
  a.wait_for_everyone();
  if (a.is_main_process()) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    const std::string text = ss.str();
    (*check)(text.rfind("Currently in the main process\n", 0) == 0,
             "main process was not first: " + text);
    size_t others = 0;
    for (size_t at = text.find("Now on another process\n"); at != std::string::npos;
         at = text.find("Now on another process\n", at + 1))
      ++others;
    (*check)(static_cast<int>(others) == a.num_processes() - 1, "main_process_first: " + text);
    std::remove(path.c_str());
  }
  a.wait_for_everyone();

  std::string printed;
  auto print_to = [&printed](const std::string& s) { printed = s; };
  a.on_main_process(
      [&] { print_to("Printing from the main process " + std::to_string(a.process_index())); })();
  (*check)(printed == (a.is_main_process() ? "Printing from the main process 0" : ""),
           "on_main_process: " + printed);
  printed.clear();
  a.on_local_main_process([&] {
    print_to("Printing from the local main process " + std::to_string(a.local_process_index()));
  })();
  (*check)(printed == (a.is_local_main_process() ? "Printing from the local main process 0" : ""),
           "on_local_main_process: " + printed);
  printed.clear();
  a.on_last_process(
      [&] { print_to("Printing from the last process " + std::to_string(a.process_index())); })();
  (*check)(printed == (a.is_last_process() ? "Printing from the last process " +
                                                 std::to_string(a.num_processes() - 1)
                                           : ""),
           "on_last_process: " + printed);
  for (int i = 0; i < a.num_processes(); ++i) {
    printed.clear();
    a.on_process(
        [&] {
          print_to("Printing from process " + std::to_string(i) + ": " +
                   std::to_string(a.process_index()));
        },
        i)();
    (*check)(printed == (a.process_index() == i ? "Printing from process " + std::to_string(i) +
                                                      ": " + std::to_string(i)
                                                : ""),
             "on_process(" + std::to_string(i) + "): " + printed);
  }
}

// True when `t` (e.g. a generator's state) is the same on every process.
bool same_on_every_process(acc::Accelerator& a, const at::Tensor& t) {
  const std::vector<int64_t> mine = longs(t);
  const std::vector<int64_t> all = a.gather_object(mine);
  if (all.size() != mine.size() * static_cast<size_t>(a.num_processes())) return false;
  for (size_t at = 0; at < all.size(); at += mine.size())
    if (!std::equal(mine.begin(), mine.end(), all.begin() + static_cast<std::ptrdiff_t>(at)))
      return false;
  return true;
}

// rng_sync_check: synchronize_rng_states makes the CPU generator's state (Python's "torch"),
// the CUDA device's (with a CUDA device) and a given generator's those of process 0. The states
// are first made different on every process, so that the check fails if nothing was sent.
void rng_sync_check(acc::Accelerator& a) {
  const bool several = a.num_processes() > 1;
  const int rank = a.process_index();
  torch::manual_seed(1000 + rank);
  at::Generator cpu = at::detail::getDefaultCPUGenerator();
  (*check)(!several || !same_on_every_process(a, cpu.get_state()),
           "rng: the CPU states were equal before synchronising");
  const at::Tensor cpu_before = cpu.get_state();
  acc::synchronize_rng_states(a.state(), {"torch"});
  (*check)(same_on_every_process(a, cpu.get_state()), "RNG states improperly synchronized on CPU.");
  (*check)(rank != 0 || at::equal(cpu.get_state(), cpu_before),
           "rng: process 0's CPU state changed");
  (*check)(same_on_every_process(a, torch::rand({4})), "rng: CPU draws differ after synchronising");
  if (a.device().is_cuda()) {
    at::Generator cuda = at::globalContext().defaultGenerator(a.device());
    cuda.set_current_seed(2000 + rank);
    acc::synchronize_rng_states(a.state(), {"cuda"});
    (*check)(same_on_every_process(a, cuda.get_state()),
             "RNG states improperly synchronized on GPU.");
  }
  at::Generator generator = at::detail::createCPUGenerator(3000 + rank);
  (*check)(!several || !same_on_every_process(a, generator.get_state()),
           "rng: the generators' states were equal before synchronising");
  acc::synchronize_rng_states(a.state(), {"generator"}, generator);
  (*check)(same_on_every_process(a, generator.get_state()),
           "RNG states improperly synchronized in generator.");
  (*check)(same_on_every_process(a, at::rand({4}, generator)),
           "rng: the generator's draws differ after synchronising");
  if (a.local_process_index() == 0) std::cout << "All rng are properly synched." << std::endl;
}

void split_between_processes_checks(acc::Accelerator& a) {
  const int n = a.num_processes();
  // A list.
  std::vector<int64_t> data = iota(2 * n);
  (*check)(a.split_between_processes(data).size() == 2, "split list: two items each");
  for (const auto& items : {iota(2 * n - 1), iota(2 * n)}) {
    const auto mine = a.split_between_processes(items, true);
    const size_t per_process = (items.size() + n - 1) / n;
    (*check)(mine.size() == per_process, "split list with padding: items per process");
    auto gathered = a.gather_object(mine);
    gathered.resize(items.size());
    (*check)(gathered == items, "split list with padding: gathered back");
  }
  // A nested dict: lists of numbers, of strings, and a tensor.
  if (n == 1 || n == 2 || n == 4) {
    const std::vector<int> av = {1, 2, 3, 4, 5, 6, 7, 8};
    const std::vector<std::string> bv = {"a", "b", "c", "d", "e", "f", "g", "h"};
    const at::Tensor cv = at::arange(1, 9);
    const auto ra = a.split_between_processes(std::map<std::string, std::vector<int>>{{"a", av}});
    const auto rb =
        a.split_between_processes(std::map<std::string, std::vector<std::string>>{{"b", bv}});
    const auto rc = a.split_between_processes(std::map<std::string, at::Tensor>{{"c", cv}});
    const size_t share = 8 / n, start = share * a.process_index();
    (*check)(ra.at("a") == std::vector<int>(av.begin() + start, av.begin() + start + share),
             "split dict: a");
    (*check)(rb.at("b") == std::vector<std::string>(bv.begin() + start, bv.begin() + start + share),
             "split dict: b");
    (*check)(at::equal(rc.at("c"), cv.slice(0, start, start + share)), "split dict: c");
  }
  a.wait_for_everyone();
  // A tensor.
  if (n > 1) {
    const at::Tensor t =
        at::tensor({0, 1, 2, 3, 4, 5, 6, 7}, at::kLong).view({2, 4}).to(a.device());
    const at::Tensor mine = a.split_between_processes(t);
    if (a.process_index() == 0)
      (*check)(at::equal(mine.cpu(), t.cpu().slice(0, 0, 1)), "split tensor: process 0");
    else if (a.process_index() == 1)
      (*check)(at::equal(mine.cpu(), t.cpu().slice(0, 1, 2)), "split tensor: process 1");
    else
      (*check)(mine.size(0) == 0, "split tensor: a process past the rows gets none");
  }
  for (int64_t rows : {2 * n, 2 * n - 1}) {
    const at::Tensor t = at::arange(rows).view({rows, 1}).to(a.device());
    const at::Tensor mine = a.split_between_processes(t, true);
    (*check)(mine.size(0) == (rows + n - 1) / n, "split tensor with padding: rows per process");
    auto gathered = a.gather_object(longs(mine));
    gathered.resize(static_cast<size_t>(rows));
    (*check)(gathered == iota(rows), "split tensor with padding: gathered back");
  }
  // Evenly: 17 items, the first 17 % n processes get one more.
  if (n == 1 || n == 2 || n == 4 || n == 8) {
    const auto mine = a.split_between_processes(iota(17));
    const size_t want = 17 / n + (a.process_index() < 17 % n ? 1 : 0);
    (*check)(mine.size() == want, "split evenly: " + std::to_string(mine.size()) + " items");
  }
  a.wait_for_everyone();
}

// A map-style data set of 0, 1, ..., n - 1 (data and target) that counts the samples this
// process reads, to tell dispatching (only process 0 reads) from sharding (every process reads).
struct CountedRange : torch::data::datasets::Dataset<CountedRange> {
  CountedRange(int64_t n, std::shared_ptr<int64_t> reads) : n_(n), reads_(std::move(reads)) {}
  torch::data::Example<> get(size_t i) override {
    ++*reads_;
    const at::Tensor x = at::scalar_tensor(static_cast<int64_t>(i), at::kLong);
    return {x, x};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(n_); }

 private:
  int64_t n_;
  std::shared_ptr<int64_t> reads_;
};

// dl_preparation_check (dispatch false) and central_dl_preparation_check (dispatch true): the
// gathered batches of every process are the data set, in order unless shuffled, without and
// with split_batches; with dispatch_batches only process 0 reads samples.
void dl_preparation_check(bool dispatch) {
  for (bool split : {false, true}) {
    acc::Accelerator a(acc::AcceleratorOptions().split_batches(split).dispatch_batches(dispatch));
    const int64_t length = 32 * a.num_processes();
    for (bool shuffle : {false, true}) {
      const std::string what = std::string(dispatch ? "central " : "") +
                               "data loader split_batches=" + (split ? "1" : "0") +
                               " shuffle=" + (shuffle ? "1" : "0");
      auto reads = std::make_shared<int64_t>(0);
      acc::DataLoader<CountedRange> loader(CountedRange(length, reads),
                                           acc::DataLoaderOptions().batch_size(8).shuffle(shuffle));
      if (split && 8 % a.num_processes() != 0) {
        check->throws<std::invalid_argument>(
            [&] {
              auto dl = a.prepare(loader);
              for (auto& batch : *dl) (void)batch;
            },
            what + ": 8 cannot be split over " + std::to_string(a.num_processes()) + " processes");
        continue;
      }
      auto dl = a.prepare(loader);
      std::vector<at::Tensor> parts;
      for (auto& batch : *dl) parts.push_back(a.gather(batch.data));
      std::vector<int64_t> result = longs(at::cat(parts));
      if (shuffle) std::sort(result.begin(), result.end());
      (*check)(result == iota(length), what + ": gathered batches are not the data set");
      // Every process reads its share (32 samples); dispatching, process 0 reads them all.
      const int64_t want = dispatch ? (a.is_main_process() ? length : 0) : 32;
      (*check)(*reads == want, what + ": this process read " + std::to_string(*reads) +
                                   " samples, not " + std::to_string(want));
    }
  }
}

// custom_sampler_check: a prepared loader keeps a custom batch sampler (Python checks its
// class): each process gets the batches of that sampler, sharded as Accelerate's
// BatchSamplerShard shards them, in two passes (the sampler's epochs 0 and 1).
struct ArraySplitBatchSampler : acc::BatchSampler {
  ArraySplitBatchSampler(int64_t length, int64_t batch) : length_(length), batch_(batch) {}
  // Test_script.py's CustomBatchSampler: np.array_split of a permutation into
  // ceil(length / batch) batches (here a permutation seeded with 1234 + epoch, since every
  // process must draw the same; Python's unseeded np.random.permutation is only type-checked).
  std::vector<std::vector<int64_t>> batches(int64_t epoch) override {
    const auto order = acc::shuffled_indices(length_, 1234 + static_cast<uint64_t>(epoch));
    const int64_t count = (length_ + batch_ - 1) / batch_;
    std::vector<std::vector<int64_t>> out;
    int64_t at = 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t size = length_ / count + (i < length_ % count ? 1 : 0);
      out.emplace_back(order.begin() + at, order.begin() + at + size);
      at += size;
    }
    return out;
  }
  std::optional<int64_t> batch_size() const override { return batch_; }

 private:
  int64_t length_, batch_;
};

void custom_sampler_check() {
  acc::Accelerator a;
  const int64_t length = 32 * a.num_processes();
  auto sampler = std::make_shared<ArraySplitBatchSampler>(length, 8);
  auto dl = a.prepare(acc::DataLoader<acc::TensorDataset>(
      acc::TensorDataset(at::arange(length) * 10, at::arange(length)),
      acc::DataLoaderOptions().batch_sampler(sampler)));
  const auto sharding =
      acc::ShardingOptions().num_processes(a.num_processes()).process_index(a.process_index());
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    const auto want = acc::shard_batch_sampler(sampler->batches(epoch), 8, false, sharding);
    std::vector<std::vector<int64_t>> got;
    std::vector<int64_t> seen;
    for (auto& batch : *dl) {
      got.push_back(longs(batch.target));
      (*check)(at::equal(batch.data, batch.target * 10), "custom sampler: data and target apart");
      for (int64_t i : got.back()) seen.push_back(i);
    }
    (*check)(got == want, "Custom sampler was changed after calling `prepare_data_loader` (epoch " +
                              std::to_string(epoch) + ")");
    auto all = a.gather_object(seen);
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    (*check)(all == iota(length), "custom sampler: the processes did not cover the data set");
  }
}

// The prepared loader's generator is process 0's at the start of every pass: after each pass
// process i draws i + 1 numbers from it, and yet every process gets the shards of one order,
// the very batches Python Accelerate gives (reference "generator_resync").
void generator_resync_check(const nlohmann::json& reference) {
  acc::Accelerator a;
  at::Generator g = at::detail::createCPUGenerator(7);
  auto dl = a.prepare(acc::DataLoader<acc::TensorDataset>(
      acc::TensorDataset(at::arange(20), at::arange(20)),
      acc::DataLoaderOptions().batch_size(3).shuffle(true).generator(g)));
  const auto& want = reference.at("generator_resync").at(std::to_string(a.num_processes()));
  for (size_t pass = 0; pass < 3; ++pass) {
    std::vector<std::vector<int64_t>> mine;
    for (auto& batch : *dl) mine.push_back(longs(batch.data));
    const auto expected = want.at(pass)
                              .at(static_cast<size_t>(a.process_index()))
                              .get<std::vector<std::vector<int64_t>>>();
    (*check)(mine == expected, "generator resync: pass " + std::to_string(pass) +
                                   " is not Python Accelerate's batches for this process");
    at::rand({a.process_index() + 1}, g);  // each process moves its generator on differently
  }
}

std::vector<double> items_of(std::shared_ptr<acc::DataLoader<RegressionDataset>>& dl) {
  std::vector<double> items;
  for (int epoch = 0; epoch < 3; ++epoch)
    for (auto& batch : *dl)
      for (double v : values_of(batch.data)) items.push_back(v);
  return items;
}

void seedable_sampler_checks() {
  acc::set_seed(42);
  acc::Accelerator a;
  auto dl = a.prepare(acc::DataLoader<RegressionDataset>(
      RegressionDataset(10, 42), acc::DataLoaderOptions().batch_size(2).shuffle(true)));
  const auto original = items_of(dl);
  acc::set_seed(42);
  dl->set_epoch(0);
  (*check)(items_of(dl) == original,
           "seedable sampler: not the same items with the same seed and epoch");

  auto with_seed = [&](uint64_t seed) {
    auto d = a.prepare(acc::DataLoader<RegressionDataset>(
        RegressionDataset(10, 42),
        acc::DataLoaderOptions().batch_size(2).shuffle(true).seed(seed)));
    return items_of(d);
  };
  const auto first = with_seed(42), second = with_seed(43);
  (*check)(first.size() == second.size() && first != second,
           "seedable sampler: the same items with another data seed");
}

struct Trained {
  double a, b;
};

// A shuffled loader: with the seedable sampler (generator unset) or, as Accelerate's
// use_seedable_sampler=False, drawing its orders from `generator`.
acc::DataLoaderOptions shuffled(int64_t batch_size, const std::optional<at::Generator>& generator) {
  auto options = acc::DataLoaderOptions().batch_size(batch_size).shuffle(true);
  if (generator) options.generator(*generator);
  return options;
}

Trained train(acc::Accelerator& accelerator, int64_t length, int64_t batch_size, bool autocast,
              std::optional<at::Generator> generator) {
  acc::set_seed(42);
  auto model = std::make_shared<RegressionModel>();
  auto optimizer =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  auto [dl, m, opt] =
      accelerator.prepare(acc::DataLoader<RegressionDataset>(RegressionDataset(length, 42),
                                                             shuffled(batch_size, generator)),
                          model, optimizer);
  if (generator) generator->set_current_seed(42);  // Python: generator.manual_seed(42) here
  for (int epoch = 0; epoch < 3; ++epoch)
    for (auto& batch : *dl) {
      m->zero_grad();
      at::Tensor output;
      if (autocast) {
        auto guard = accelerator.autocast();
        output = m->forward(batch.data);
      } else {
        output = m->forward(batch.data);
      }
      accelerator.backward(torch::mse_loss(output, batch.target));
      opt->step();
    }
  auto unwrapped = accelerator.unwrap_model(m);
  return {unwrapped->a.item<double>(), unwrapped->b.item<double>()};
}

bool close(double got, double want) { return std::abs(got - want) <= 1e-6 + 1e-6 * std::abs(want); }

// training_check(use_seedable_sampler): `seedable` true, the loaders shuffle with the seedable
// sampler; false, with one generator that the baseline and every prepared loader share,
// re-seeded with 42 before each training, and that prepared loaders synchronise from process 0
// at every pass (reference "training_generator").
void training_check(const nlohmann::json& reference, bool seedable) {
  acc::Accelerator first;
  std::optional<at::Generator> generator;
  if (!seedable) generator = at::detail::createCPUGenerator(42);
  const int n = first.num_processes();
  const int64_t batch_size = 8, length = batch_size * 4 * n;

  // The data set is Python's, bit for bit.
  RegressionDataset data(length, 42);
  const auto& ref_data = reference.at("regression_dataset").at(std::to_string(length));
  const auto xs = values_of(data.x), ys = values_of(data.y);
  (*check)(xs == ref_data.at("x").get<std::vector<double>>(),
           "RegressionDataset x differs from Python's");
  (*check)(ys == ref_data.at("y").get<std::vector<double>>(),
           "RegressionDataset y differs from Python's");

  // mock_training: one process, batches of 8 N, plain LibTorch.
  acc::set_seed(42);
  RegressionModel base;
  torch::optim::SGD sgd(base.parameters(), torch::optim::SGDOptions(0.1));
  acc::DataLoader<RegressionDataset> baseline_dl(data, shuffled(batch_size * n, generator));
  for (int epoch = 0; epoch < 3; ++epoch)
    for (auto& batch : baseline_dl) {
      base.zero_grad();
      torch::mse_loss(base.forward(batch.data), batch.target).backward();
      sgd.step();
    }
  const Trained baseline{base.a.item<double>(), base.b.item<double>()};
  (*check)(first.gather(torch::tensor({baseline.a, baseline.b}, at::kDouble).view({1, 2}))
                   .sub(torch::tensor({baseline.a, baseline.b}, at::kDouble))
                   .abs()
                   .max()
                   .item<double>() == 0,
           "the baseline differs between processes");

  const std::string key = seedable ? "training" : "training_generator";
  const auto& ref = reference.at(key).at(std::to_string(n));
  auto compare = [&](const std::string& mode, const Trained& got) {
    const std::string label = (seedable ? "" : "generator ") + mode;
    const auto want = ref.at(mode).get<std::vector<double>>();
    (*check)(close(got.a, baseline.a) && close(got.b, baseline.b),
             label + ": not the model of the single-process baseline");
    (*check)(close(got.a, want[0]) && close(got.b, want[1]),
             label + ": a = " + std::to_string(got.a) + ", b = " + std::to_string(got.b) +
                 "; Python Accelerate: " + std::to_string(want[0]) + ", " +
                 std::to_string(want[1]));
    std::ostringstream line;
    line.precision(9);
    line << label << ": a = " << got.a << ", b = " << got.b
         << (got.a == want[0] && got.b == want[1]             ? " (bit for bit as"
             : close(got.a, want[0]) && close(got.b, want[1]) ? " (within 1e-6 of"
                                                              : " (NOT within 1e-6 of")
         << " Python Accelerate)";
    first.print(line.str());
  };
  compare("baseline", baseline);
  {
    acc::Accelerator a;
    compare("no_split", train(a, length, batch_size, false, generator));
  }
  {
    acc::Accelerator a(acc::AcceleratorOptions().split_batches(true));
    compare("split", train(a, length, batch_size * n, false, generator));
  }
  {
    acc::Accelerator a(acc::AcceleratorOptions().mixed_precision("bf16"));
    compare("bf16", train(a, length, batch_size, true, generator));
  }
}

void trigger_check() {
  acc::Accelerator a;
  (*check)(!a.check_trigger(), "trigger: set at the start");
  if (a.is_main_process()) a.set_trigger();
  (*check)(a.check_trigger(), "trigger: not seen by every process");
  (*check)(!a.check_trigger(), "trigger: not reset after the check");
}

int run(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: accelerate_test_script REFERENCE_JSON WORK_DIR\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) throw std::runtime_error(std::string("cannot read ") + argv[1]);
  const nlohmann::json reference = nlohmann::json::parse(in);

  acc::Accelerator a;
  acc::testing::ScriptCheck checker("accelerate_test_script", a.process_index());
  check = &checker;
  auto say = [&](const std::string& what) { a.print("**", what, "**"); };
  say("Initialization");
  init_state_check(a);
  a.wait_for_everyone();
  say("Test process execution");
  process_execution_check(a, argv[2]);
  say("Test split between processes");
  split_between_processes_checks(a);
  say("Test random number generator synchronization");
  rng_sync_check(a);
  say("DataLoader integration test");
  dl_preparation_check(false);
  dl_preparation_check(true);  // central_dl_preparation_check
  custom_sampler_check();
  seedable_sampler_checks();
  generator_resync_check(reference);
  say("Training integration test");
  training_check(reference, false);
  training_check(reference, true);
  say("Breakpoint trigger test");
  trigger_check();
  a.wait_for_everyone();
  return checker.exit_code();
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "accelerate_test_script: " << e.what() << std::endl;
    return 1;
  }
}
