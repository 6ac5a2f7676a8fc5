// Tests of the data loader's custom samplers, batch samplers and generator, of iterable
// (stream) data sets sharded as Accelerate's IterableDatasetShard, and of dispatch_batches
// (Accelerate's DataLoaderDispatcher). Where the indices matter they are compared with
// tests/python/data_loader_reference.json, which Accelerate 1.15 itself produced
// (tests/python/data_loader_reference.py; the ctest data_loader_python_reference reruns it).
// Dispatching is tested here without processes: process 0 runs first and records what it
// broadcasts, the other processes replay it; tests/data_loader_accelerator_test.cpp and
// tests/multiprocess/data_loop_check.cpp run it over real collectives.
#include <accelerate/data_loader.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <vector>
#include "index_datasets.h"

namespace acc = accelerate;
using json = nlohmann::json;

namespace {

using accelerate::testing::Indexed;
using accelerate::testing::Stream;

using Batches = std::vector<std::vector<int64_t>>;

const json& reference() {
  static const json data = [] {
    std::ifstream in(ACCELERATE_DATA_LOADER_REFERENCE);
    EXPECT_TRUE(in.good()) << "cannot read " << ACCELERATE_DATA_LOADER_REFERENCE;
    return json::parse(in);
  }();
  return data;
}

std::vector<int64_t> range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

acc::ShardingOptions sharding(int n, int p) {
  return acc::ShardingOptions().num_processes(n).process_index(p);
}

std::vector<int64_t> indices(const torch::data::Example<>& batch) {
  at::Tensor t = batch.target.contiguous();
  EXPECT_TRUE(batch.data.select(1, 0).to(at::kLong).equal(t));
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

std::vector<int64_t> flatten(const Batches& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
  return out;
}

// Iterable: the samples 0..n-1 (data [float(i)], target i), in that order; records set_epoch
// and reset; throws at sample `fail_at`.
struct Counter {
  explicit Counter(int64_t size, int64_t fail = -1) : n(size), fail_at(fail) {}
  std::optional<torch::data::Example<>> next() {
    if (i == n) return std::nullopt;
    if (i == fail_at) throw std::runtime_error("stream broke");
    ++*reads;
    const int64_t v = i++;
    return torch::data::Example<>{torch::full({1}, static_cast<float>(v)), torch::tensor(v)};
  }
  void reset() {
    i = 0;
    ++*resets;
  }
  void set_epoch(int64_t e) { epochs->push_back(e); }
  int64_t n, fail_at, i = 0;
  std::shared_ptr<int64_t> reads = std::make_shared<int64_t>(0);
  std::shared_ptr<int64_t> resets = std::make_shared<int64_t>(0);
  std::shared_ptr<std::vector<int64_t>> epochs = std::make_shared<std::vector<int64_t>>();
};

template <typename Loader>
Batches pass(Loader& loader) {
  Batches out;
  for (auto& batch : loader) out.push_back(indices(batch));
  return out;
}

// What process 0 broadcast, replayed to the others in the same order.
struct Recording {
  std::vector<std::string> bytes;
  std::vector<at::Tensor> tensors;
};

// A context whose collectives record process 0's sends and replay them to the others.
class Replaying : public acc::DataContext {
 public:
  Replaying(std::shared_ptr<acc::GradientState> gs, std::shared_ptr<Recording> rec, bool sender)
      : acc::DataContext(std::move(gs)), rec_(std::move(rec)), sender_(sender) {}
  bool has_collectives() const override { return true; }
  at::Tensor broadcast(at::Tensor t) override {
    if (sender_) {
      rec_->tensors.push_back(t.clone());
      return t;
    }
    const at::Tensor& sent = rec_->tensors.at(tensors_++);
    EXPECT_EQ(t.sizes(), sent.sizes());
    EXPECT_EQ(t.scalar_type(), sent.scalar_type());
    t.copy_(sent);
    return t;
  }
  std::string broadcast_bytes(const std::string& b) override {
    if (sender_) rec_->bytes.push_back(b);
    return sender_ ? b : rec_->bytes.at(bytes_++);
  }

 private:
  std::shared_ptr<Recording> rec_;
  bool sender_;
  size_t tensors_ = 0, bytes_ = 0;
};

struct Dispatched {
  std::vector<Batches> shards;          // per process
  std::vector<std::vector<bool>> ends;  // end_of_dataloader per batch
  std::vector<int64_t> remainders;      // at the last batch
};

// Every process's batches of a dispatching loader, process 0 first.
template <typename Dataset>
Dispatched dispatch(const acc::DataLoader<Dataset>& loader, acc::ShardingOptions s) {
  Dispatched out;
  auto rec = std::make_shared<Recording>();
  for (int p = 0; p < s.num_processes(); ++p) {
    auto gs = std::make_shared<acc::GradientState>();
    auto context = std::make_shared<Replaying>(gs, rec, p == 0);
    auto mine =
        loader.shard(acc::ShardingOptions(s).process_index(p).dispatch_batches(true), context);
    EXPECT_TRUE(mine->dispatches());
    Batches batches;
    std::vector<bool> ends;
    int64_t remainder = -2;
    for (auto& batch : *mine) {
      batches.push_back(indices(batch));
      ends.push_back(gs->end_of_dataloader());
      if (gs->end_of_dataloader()) remainder = gs->remainder();
    }
    out.shards.push_back(batches);
    out.ends.push_back(ends);
    out.remainders.push_back(remainder);
  }
  return out;
}

Batches to_batches(const json& j) { return j.get<Batches>(); }

std::string describe(const json& c) {
  json copy = c;
  copy.erase("shards");
  return copy.dump();
}

// A sampler with an epoch-dependent order: the indices of `base` rotated by the epoch.
struct Rotating : acc::Sampler {
  explicit Rotating(std::vector<int64_t> b) : base(std::move(b)) {}
  std::vector<int64_t> indices(int64_t epoch) override {
    seen.push_back(epoch);
    auto v = base;
    if (!v.empty())
      std::rotate(v.begin(), v.begin() + epoch % static_cast<int64_t>(v.size()), v.end());
    return v;
  }
  std::vector<int64_t> base;
  std::vector<int64_t> seen;
};

// Fixed batches, shuffled (as lists) by the epoch.
struct Buckets : acc::BatchSampler {
  Buckets(Batches b, std::optional<int64_t> size, bool drop)
      : base(std::move(b)), bs(size), drop(drop) {}
  Batches batches(int64_t epoch) override {
    auto v = base;
    if (!v.empty())
      std::rotate(v.begin(), v.begin() + epoch % static_cast<int64_t>(v.size()), v.end());
    return v;
  }
  std::optional<int64_t> batch_size() const override { return bs; }
  bool drop_last() const override { return drop; }
  Batches base;
  std::optional<int64_t> bs;
  bool drop;
};

}  // namespace

// ---- Exact comparisons with Accelerate 1.15 -------------------------------------------------

TEST(PythonReference, FixtureIsAccelerate115) {
  EXPECT_EQ(reference().at("accelerate").get<std::string>(), "1.15.0");
  EXPECT_GT(reference().at("batch_sampler_shard").size(), 100u);
  EXPECT_GT(reference().at("iterable_dataset_shard").size(), 100u);
  EXPECT_GT(reference().at("dispatcher").size(), 100u);
}

TEST(PythonReference, BatchSamplerShard) {
  for (const auto& c : reference().at("batch_sampler_shard")) {
    const Batches batches = to_batches(c.at("batches"));
    std::optional<int64_t> bs;
    if (!c.at("batch_size").is_null()) bs = c.at("batch_size").get<int64_t>();
    const bool drop_last = c.at("drop_last").get<bool>();
    const int n = c.at("num_processes").get<int>();
    for (int p = 0; p < n; ++p) {
      auto s = sharding(n, p)
                   .split_batches(c.at("split_batches").get<bool>())
                   .even_batches(c.at("even_batches").get<bool>());
      EXPECT_EQ(acc::shard_batch_sampler(batches, bs, drop_last, s), to_batches(c.at("shards")[p]))
          << describe(c) << " process " << p;
      // Through a loader with that batch sampler.
      int64_t max_index = 0;
      for (const auto& b : batches)
        for (int64_t i : b) max_index = std::max(max_index, i);
      acc::DataLoader<Indexed> loader(Indexed(max_index + 1),
                                      acc::DataLoaderOptions().batch_sampler(
                                          std::make_shared<Buckets>(batches, bs, drop_last)));
      auto shard = loader.shard(s);
      EXPECT_EQ(shard->size(), static_cast<int64_t>(c.at("shards")[p].size())) << describe(c);
      EXPECT_EQ(pass(*shard), to_batches(c.at("shards")[p])) << describe(c) << " process " << p;
    }
  }
}

// The batch-sampler port and shard_batches agree on the plain BatchSampler's batches.
TEST(PythonReference, BatchSamplerShardEqualsShardBatchesOnPlainBatches) {
  for (int64_t n : {0, 1, 5, 7, 22, 25})
    for (int64_t bs : {1, 2, 3, 4})
      for (bool drop : {false, true})
        for (int np : {2, 3})
          for (bool split : {false, true})
            for (bool even : {false, true}) {
              if (split && bs % np) continue;
              auto batching = acc::DataLoaderOptions().batch_size(bs).drop_last(drop);
              Batches plain = acc::shard_batches(range(n), batching, acc::ShardingOptions());
              for (int p = 0; p < np; ++p) {
                auto s = sharding(np, p).split_batches(split).even_batches(even);
                EXPECT_EQ(acc::shard_batch_sampler(plain, bs, drop, s),
                          acc::shard_batches(range(n), batching, s))
                    << n << " " << bs << " " << drop << " " << np << " " << p << " " << split << " "
                    << even;
              }
            }
}

TEST(PythonReference, IterableDatasetShard) {
  for (const auto& c : reference().at("iterable_dataset_shard")) {
    const int64_t n = c.at("n").get<int64_t>();
    const int np = c.at("num_processes").get<int>();
    auto batching = acc::DataLoaderOptions()
                        .batch_size(c.at("batch_size").get<int64_t>())
                        .drop_last(c.at("drop_last").get<bool>());
    for (int p = 0; p < np; ++p) {
      auto s = sharding(np, p).split_batches(c.at("split_batches").get<bool>());
      const auto expected = c.at("shards")[p].get<std::vector<int64_t>>();
      EXPECT_EQ(acc::shard_iterable(range(n), batching, s), expected) << describe(c) << " " << p;
      // A prepared loader over a stream, not dispatching, reads the same samples.
      acc::DataLoader<Counter> loader(Counter(n), batching);
      auto shard = loader.shard(acc::ShardingOptions(s).dispatch_batches(false));
      EXPECT_FALSE(shard->dispatches());
      EXPECT_EQ(flatten(pass(*shard)), expected) << describe(c) << " " << p;
    }
  }
}

TEST(PythonReference, DataLoaderDispatcher) {
  for (const auto& c : reference().at("dispatcher")) {
    const int64_t n = c.at("n").get<int64_t>();
    const int np = c.at("num_processes").get<int>();
    auto batching = acc::DataLoaderOptions()
                        .batch_size(c.at("batch_size").get<int64_t>())
                        .drop_last(c.at("drop_last").get<bool>());
    acc::DataLoader<Counter> loader(Counter(n), batching);
    auto got = dispatch(loader, sharding(np, 0).split_batches(c.at("split_batches").get<bool>()));
    for (int p = 0; p < np; ++p) {
      EXPECT_EQ(got.shards[p], to_batches(c.at("shards")[p])) << describe(c) << " process " << p;
      ASSERT_FALSE(got.ends[p].empty()) << describe(c);
      for (size_t i = 0; i < got.ends[p].size(); ++i)
        EXPECT_EQ(got.ends[p][i], i + 1 == got.ends[p].size()) << describe(c);
      EXPECT_EQ(got.remainders[p], c.at("remainder").get<int64_t>()) << describe(c);
    }
  }
}

TEST(PythonReference, GeneratorShufflesAsPyTorchsDataLoader) {
  for (const auto& c : reference().at("generator")) {
    const int64_t n = c.at("n").get<int64_t>();
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(c.at("seed").get<uint64_t>());
    acc::DataLoader<Indexed> loader(
        Indexed(n), acc::DataLoaderOptions().batch_size(n).shuffle(true).generator(g));
    // Whole passes: each also draws the permutation PyTorch's RandomSampler draws at its end.
    for (const auto& epoch : c.at("epochs")) {
      auto batches = pass(loader);
      ASSERT_EQ(batches.size(), 1u);
      EXPECT_EQ(batches[0], epoch.get<std::vector<int64_t>>()) << "n=" << n;
    }
    // Passes left after their first batch draw nothing more.
    at::Generator h = at::make_generator<at::CPUGeneratorImpl>(c.at("seed").get<uint64_t>());
    acc::DataLoader<Indexed> partial(
        Indexed(n), acc::DataLoaderOptions().batch_size(n / 2 + 1).shuffle(true).generator(h));
    for (const auto& first : c.at("first_batches")) {
      std::vector<int64_t> got;
      for (auto& batch : partial) {
        got = indices(batch);
        break;
      }
      EXPECT_EQ(got, first.get<std::vector<int64_t>>()) << "n=" << n << " (first batch only)";
    }
  }
}

// ---- Samplers ---------------------------------------------------------------------------------

TEST(Sampler, OrderPerEpochAndSharding) {
  auto sampler = std::make_shared<Rotating>(std::vector<int64_t>{9, 3, 3, 7, 1});
  acc::DataLoader<Indexed> loader(Indexed(10),
                                  acc::DataLoaderOptions().batch_size(2).sampler(sampler));
  EXPECT_EQ(loader.size(), 3);
  EXPECT_EQ(pass(loader), (Batches{{9, 3}, {3, 7}, {1}}));
  EXPECT_EQ(pass(loader), (Batches{{3, 3}, {7, 1}, {9}}));  // epoch 1
  loader.set_epoch(4);
  EXPECT_EQ(pass(loader), (Batches{{1, 9}, {3, 3}, {7}}));
  // Prepared: the sampler's order, cut as BatchSamplerShard.
  for (int p = 0; p < 2; ++p) {
    auto gs = std::make_shared<acc::GradientState>();
    auto context = std::make_shared<acc::DataContext>(gs);
    auto shard = loader.shard(sharding(2, p), context);
    shard->set_epoch(0);
    auto order = sampler->indices(0);
    auto expected =
        acc::shard_batches(order, acc::DataLoaderOptions().batch_size(2), sharding(2, p));
    Batches got;
    for (auto& b : *shard) {
      got.push_back(indices(b));
      // 5 samples, 4 per step: the last step holds one real sample.
      if (gs->end_of_dataloader()) EXPECT_EQ(gs->remainder(), 1);
    }
    EXPECT_EQ(got, expected);
    EXPECT_EQ(shard->size(), static_cast<int64_t>(expected.size()));
  }
}

TEST(Sampler, ResumeAndSkipKeepTheEpochsOrder) {
  auto sampler = std::make_shared<Rotating>(range(12));
  acc::DataLoader<Indexed> loader(Indexed(12),
                                  acc::DataLoaderOptions().batch_size(2).sampler(sampler));
  auto shard = loader.shard(sharding(2, 1));
  shard->set_epoch(3);
  const Batches whole = pass(*shard);
  shard->resume_from({3, 2});
  Batches rest = pass(*shard);
  EXPECT_EQ(rest, Batches(whole.begin() + 2, whole.end()));
  EXPECT_EQ(shard->epoch(), 4);
  auto skipped = acc::skip_first_batches(shard, 1);
  skipped->set_epoch(3);
  EXPECT_EQ(pass(*skipped), Batches(whole.begin() + 1, whole.end()));
}

TEST(Sampler, IndexOutOfRangeIsNamed) {
  acc::DataLoader<Indexed> loader(
      Indexed(5),
      acc::DataLoaderOptions().sampler(std::make_shared<Rotating>(std::vector<int64_t>{0, 5})));
  try {
    pass(loader);
    FAIL() << "no error";
  } catch (const acc::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("sampler gave index 5, not in [0, 5)"), std::string::npos)
        << e.what();
  }
  acc::DataLoader<Indexed> batches(Indexed(5),
                                   acc::DataLoaderOptions().batch_sampler(
                                       std::make_shared<Buckets>(Batches{{0}, {-1}}, 1, false)));
  EXPECT_THROW(pass(batches), acc::InvalidArgument);
}

TEST(Sampler, MutuallyExclusiveOptionsAsPyTorch) {
  auto sampler = std::make_shared<Rotating>(range(4));
  auto bsampler = std::make_shared<Buckets>(Batches{{0, 1}}, 2, false);
  auto expect_error = [](const acc::DataLoaderOptions& o, const std::string& what) {
    try {
      acc::DataLoader<Indexed> loader(Indexed(4), o);
      FAIL() << "no error for " << what;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  const std::string bs =
      "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last";
  expect_error(acc::DataLoaderOptions().batch_sampler(bsampler).batch_size(2), bs);
  expect_error(acc::DataLoaderOptions().batch_sampler(bsampler).shuffle(true), bs);
  expect_error(acc::DataLoaderOptions().batch_sampler(bsampler).sampler(sampler), bs);
  expect_error(acc::DataLoaderOptions().batch_sampler(bsampler).drop_last(true), bs);
  expect_error(acc::DataLoaderOptions().sampler(sampler).shuffle(true),
               "sampler option is mutually exclusive with shuffle");
  at::Generator g = at::make_generator<at::CPUGeneratorImpl>(1);
  expect_error(acc::DataLoaderOptions().generator(g), "generator is used to shuffle");
  expect_error(acc::DataLoaderOptions().shuffle(true).seed(3).generator(g),
               "generator and seed are mutually exclusive");
  // split_batches needs the batch sampler's batch size, a multiple of the processes.
  acc::DataLoader<Indexed> none(
      Indexed(4), acc::DataLoaderOptions().batch_sampler(
                      std::make_shared<Buckets>(Batches{{0, 1}}, std::nullopt, false)));
  EXPECT_THROW(none.shard(sharding(2, 0).split_batches(true)), acc::InvalidArgument);
  EXPECT_NO_THROW(none.shard(sharding(2, 0)));
  acc::DataLoader<Indexed> three(Indexed(4),
                                 acc::DataLoaderOptions().batch_sampler(
                                     std::make_shared<Buckets>(Batches{{0, 1, 2}}, 3, false)));
  EXPECT_THROW(three.shard(sharding(2, 0).split_batches(true)), acc::InvalidArgument);
  EXPECT_THROW(none.total_batch_size(), acc::InvalidArgument);
}

TEST(BatchSampler, EpochsReachTheSamplerAndTheRemainderIsReal) {
  // 5 batches of sizes 3,2,4,1,3 (nominal 3): over 2 processes the last round is completed.
  Batches base{{0, 3, 5}, {1, 2}, {4, 6, 7, 8}, {9}, {10, 11, 12}};
  auto sampler = std::make_shared<Buckets>(base, std::nullopt, false);
  acc::DataLoader<Indexed> loader(Indexed(13), acc::DataLoaderOptions().batch_sampler(sampler));
  EXPECT_EQ(pass(loader), base);
  EXPECT_EQ(pass(loader), sampler->batches(1));
  std::vector<int64_t> gathered;
  for (int p = 0; p < 2; ++p) {
    auto gs = std::make_shared<acc::GradientState>();
    auto context = std::make_shared<acc::DataContext>(gs);
    auto shard = loader.shard(sharding(2, p), context);
    shard->set_epoch(0);
    Batches got;
    for (auto& b : *shard) {
      got.push_back(indices(b));
      if (gs->end_of_dataloader()) {
        // The last round: process 0's {10, 11, 12} is real, process 1's {0, 3, 5} repeats.
        EXPECT_EQ(gs->remainder(), 3);
      }
    }
    EXPECT_EQ(got, acc::shard_batch_sampler(base, std::nullopt, false, sharding(2, p)));
  }
}

// ---- Iterable data sets -------------------------------------------------------------------------

TEST(IterableDataset, PlainBatchesEpochsAndNoSize) {
  Counter counter(10);
  acc::DataLoader<Counter> loader(counter, acc::DataLoaderOptions().batch_size(4));
  EXPECT_TRUE(loader.iterable());
  EXPECT_EQ(pass(loader), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  EXPECT_EQ(pass(loader), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  EXPECT_EQ(*loader.dataset()->epochs, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(*loader.dataset()->resets, 2);
  EXPECT_EQ(loader.epoch(), 2);
  EXPECT_THROW(loader.size(), acc::InvalidArgument);
  EXPECT_THROW(loader.dataset_size(), acc::InvalidArgument);
  acc::DataLoader<Counter> dropping(Counter(10),
                                    acc::DataLoaderOptions().batch_size(4).drop_last(true));
  EXPECT_EQ(pass(dropping), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  acc::DataLoader<Counter> empty(Counter(0), acc::DataLoaderOptions().batch_size(4));
  EXPECT_TRUE(pass(empty).empty());
  EXPECT_EQ(empty.epoch(), 1);
}

TEST(IterableDataset, HeaderExampleOfTensors) {
  struct Stream {
    int64_t i = 0;
    std::optional<at::Tensor> next() {
      if (i == 10) return std::nullopt;
      return torch::full({1}, double(i++));
    }
    void reset() { i = 0; }
  };
  acc::DataLoader<Stream> stream(Stream(), acc::DataLoaderOptions().batch_size(4));
  std::vector<int64_t> sizes;
  for (auto& batch : stream) sizes.push_back(batch.size(0));
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
}

TEST(IterableDataset, ShardedGradientStateAndGatheredRemainder) {
  // 11 samples, batch 2, 3 processes: buffers of 6; the last (5 real) completed from the first.
  std::vector<std::vector<int64_t>> per_process;
  for (int p = 0; p < 3; ++p) {
    auto gs = std::make_shared<acc::GradientState>();
    acc::DataLoader<Counter> loader(Counter(11), acc::DataLoaderOptions().batch_size(2));
    auto context = std::make_shared<acc::DataContext>(gs);
    auto shard = loader.shard(sharding(3, p).dispatch_batches(false), context);
    Batches got;
    for (auto& b : *shard) {
      got.push_back(indices(b));
      EXPECT_EQ(gs->end_of_dataloader(), got.size() == 2);
      EXPECT_EQ(gs->remainder(), got.size() == 2 ? 5 : -1);
    }
    EXPECT_FALSE(gs->in_dataloader());
    per_process.push_back(flatten(got));
  }
  // What gather_for_metrics sees on the last step, cut at the remainder: the samples 6..10.
  std::vector<int64_t> last_step;
  for (auto& v : per_process) last_step.insert(last_step.end(), v.begin() + 2, v.end());
  last_step.resize(5);
  EXPECT_EQ(last_step, (std::vector<int64_t>{6, 7, 8, 9, 10}));
}

TEST(IterableDataset, SkipAndResumeReadTheSkippedBatches) {
  acc::DataLoader<Counter> loader(Counter(10), acc::DataLoaderOptions().batch_size(3));
  auto skipped = loader.skip_first_batches(2);
  EXPECT_EQ(pass(*skipped), (Batches{{6, 7, 8}, {9}}));
  EXPECT_EQ(*skipped->dataset()->reads, 10);
  auto shard = loader.shard(sharding(2, 1).dispatch_batches(false));
  const Batches whole = pass(*shard);
  shard->resume_from({0, 1});
  EXPECT_EQ(pass(*shard), Batches(whole.begin() + 1, whole.end()));
  EXPECT_EQ(shard->epoch(), 1);
  EXPECT_EQ(*shard->dataset()->epochs,
            (std::vector<int64_t>{0, 0, 0}));  // shared data set: skipped, whole, resumed
}

TEST(IterableDataset, ErrorsNameTheProblem) {
  auto expect_error = [](const acc::DataLoaderOptions& o, const std::string& what) {
    try {
      acc::DataLoader<Counter> loader(Counter(4), o);
      FAIL() << "no error for " << what;
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(acc::DataLoaderOptions().shuffle(true), "shuffle is not allowed");
  expect_error(acc::DataLoaderOptions().sampler(std::make_shared<Rotating>(range(2))),
               "sampler is not allowed");
  expect_error(acc::DataLoaderOptions().num_workers(2), "num_workers must be 0");
  // What next() throws names the stream's position, and the error of batch 2 comes when the
  // loop reaches it.
  acc::DataLoader<Counter> broken(Counter(10, 5), acc::DataLoaderOptions().batch_size(2));
  auto it = broken.begin();
  EXPECT_EQ(indices(*it), (std::vector<int64_t>{0, 1}));
  ++it;
  EXPECT_EQ(indices(*it), (std::vector<int64_t>{2, 3}));
  try {
    ++it;
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset.next() failed after 5 samples"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(broken.epoch(), 0);  // abandoned
}

// ---- Dispatching
// ---------------------------------------------------------------------------------

TEST(DispatchBatches, DefaultIsDispatchForIterableOnly) {
  auto rec = std::make_shared<Recording>();
  auto context = std::make_shared<Replaying>(nullptr, rec, true);
  acc::DataLoader<Counter> stream(Counter(4));
  acc::DataLoader<Indexed> map(Indexed(4));
  EXPECT_TRUE(stream.shard(sharding(2, 0), context)->dispatches());
  EXPECT_FALSE(map.shard(sharding(2, 0), context)->dispatches());
  EXPECT_TRUE(map.shard(sharding(2, 0).dispatch_batches(true), context)->dispatches());
  EXPECT_FALSE(stream.shard(sharding(1, 0))->dispatches());  // one process: plain batches
  // Several processes need the collectives: none, or a context without them.
  EXPECT_THROW(stream.shard(sharding(2, 0)), acc::InvalidArgument);
  EXPECT_THROW(map.shard(sharding(2, 1).dispatch_batches(true)), acc::InvalidArgument);
  auto no_collectives = std::make_shared<acc::DataContext>();
  EXPECT_THROW(stream.shard(sharding(2, 0), no_collectives), acc::InvalidArgument);
}

TEST(DispatchBatches, MapStyleEqualsTheIterableDispatch) {
  // A map-style data set read in order dispatches exactly as the same samples streamed.
  for (int np : {2, 3})
    for (bool split : {false, true})
      for (bool drop : {false, true}) {
        auto batching = acc::DataLoaderOptions().batch_size(split ? 6 : 2).drop_last(drop);
        acc::DataLoader<Indexed> map(Indexed(17), batching);
        acc::DataLoader<Counter> stream(Counter(17), batching);
        auto a = dispatch(map, sharding(np, 0).split_batches(split));
        auto b = dispatch(stream, sharding(np, 0).split_batches(split));
        EXPECT_EQ(a.shards, b.shards) << np << " " << split << " " << drop;
        EXPECT_EQ(a.remainders, b.remainders);
        acc::DataLoader<Indexed> sized(Indexed(17), batching);
        auto context = std::make_shared<Replaying>(nullptr, std::make_shared<Recording>(), true);
        auto shard =
            sized.shard(sharding(np, 0).split_batches(split).dispatch_batches(true), context);
        EXPECT_EQ(shard->size(), static_cast<int64_t>(a.shards[0].size()))
            << np << " " << split << " " << drop;
      }
}

TEST(DispatchBatches, ShuffledMapStyleUsesProcess0sOrder) {
  acc::DataLoader<Indexed> loader(Indexed(20),
                                  acc::DataLoaderOptions().batch_size(3).shuffle(true).seed(7));
  auto got = dispatch(loader, sharding(2, 0));
  std::multiset<int64_t> seen;
  for (auto& shard : got.shards)
    for (auto i : flatten(shard)) seen.insert(i);
  for (int64_t i = 0; i < 20; ++i) EXPECT_GE(seen.count(i), 1u) << i;
  // Process 0's first batch is the first 3 samples of the seeded order.
  const auto order = acc::shuffled_indices(20, 7);
  EXPECT_EQ(got.shards[0][0], std::vector<int64_t>(order.begin(), order.begin() + 3));
}
