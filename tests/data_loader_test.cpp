// Tests of accelerate/data_loader.h: Accelerate's batch sharding (the expected lists of
// accelerate's tests/test_data_loader.py), shuffling equal to Python's, the loader's passes,
// workers, position and gradient-state signals, and the Fashion-MNIST example data set.
#include <ATen/CPUGeneratorImpl.h>
#include <accelerate/data_loader.h>
#include <gtest/gtest.h>
#include <torch/data/datasets/base.h>
#include <torch/data/datasets/mnist.h>
#include <torch/data/datasets/tensor.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "../examples/fashion_mnist/fashion_mnist.h"
#include "subprocess.h"
#include "temp_dir.h"

namespace acc = accelerate;

namespace {

using Batches = std::vector<std::vector<int64_t>>;

std::vector<int64_t> range(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), int64_t{0});
  return v;
}

// Both processes' batches of range(n), as Accelerate's check_batch_sampler_shards.
std::vector<Batches> shards(int64_t n, int64_t batch_size, bool drop_last, bool split = false,
                            bool even = true) {
  std::vector<Batches> out;
  for (int p = 0; p < 2; ++p) {
    auto batching = acc::DataLoaderOptions().batch_size(batch_size).drop_last(drop_last);
    auto sharding =
        acc::ShardingOptions().num_processes(2).process_index(p).split_batches(split).even_batches(
            even);
    out.push_back(acc::shard_batches(range(n), batching, sharding));
    EXPECT_EQ(acc::shard_num_batches(n, batching, sharding),
              static_cast<int64_t>(out.back().size()))
        << "n=" << n << " batch_size=" << batch_size << " process " << p;
  }
  return out;
}

// A data set whose example i is data = [float(i)], target = i; counts get() calls and
// throws at `fail_at`.
struct Indexed : torch::data::datasets::Dataset<Indexed> {
  explicit Indexed(int64_t size, int64_t fail = -1) : n(size), fail_at(fail) {}
  torch::data::Example<> get(size_t index) override {
    calls->fetch_add(1);
    if (static_cast<int64_t>(index) == fail_at) throw std::runtime_error("disk on fire");
    return {torch::full({1}, static_cast<float>(index)),
            torch::tensor(static_cast<int64_t>(index))};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(n); }
  int64_t n;
  int64_t fail_at;
  std::shared_ptr<std::atomic<int64_t>> calls = std::make_shared<std::atomic<int64_t>>(0);
};

std::vector<int64_t> indices(const torch::data::Example<>& batch) {
  at::Tensor t = batch.target.contiguous();
  EXPECT_TRUE(batch.data.select(1, 0).to(at::kLong).equal(t));
  return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
}

template <typename Loader>
Batches pass(Loader& loader) {
  Batches out;
  for (auto& batch : loader) out.push_back(indices(batch));
  return out;
}

acc::ShardingOptions sharding(int num_processes, int process_index) {
  return acc::ShardingOptions().num_processes(num_processes).process_index(process_index);
}

std::vector<int64_t> flatten(const Batches& batches) {
  std::vector<int64_t> out;
  for (const auto& b : batches) out.insert(out.end(), b.begin(), b.end());
  return out;
}

bool have_fashion_mnist() {
  return std::ifstream(std::string(fashion_mnist::kDefaultFolder) + "/t10k-labels-idx1-ubyte.gz")
      .good();
}

}  // namespace

// ---- Batch sharding: accelerate's test_batch_sampler_shards_* -----------------------------

TEST(ShardBatches, NoSplitEvenBatches) {
  Batches p0 = {{0, 1, 2}, {6, 7, 8}, {12, 13, 14}, {18, 19, 20}};
  EXPECT_EQ(shards(24, 3, false),
            (std::vector<Batches>{p0, {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21, 22, 23}}}));
  EXPECT_EQ(shards(24, 3, true), shards(24, 3, false));
  EXPECT_EQ(shards(21, 3, false),
            (std::vector<Batches>{p0, {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {0, 1, 2}}}));
  EXPECT_EQ(shards(22, 3, false),
            (std::vector<Batches>{p0, {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21, 0, 1}}}));
  EXPECT_EQ(shards(20, 3, false),
            (std::vector<Batches>{{{0, 1, 2}, {6, 7, 8}, {12, 13, 14}, {18, 19, 0}},
                                  {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {1, 2, 3}}}));
}

TEST(ShardBatches, NoSplitDropLast) {
  std::vector<Batches> expected = {{{0, 1, 2}, {6, 7, 8}, {12, 13, 14}},
                                   {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}}};
  EXPECT_EQ(shards(21, 3, true), expected);
  EXPECT_EQ(shards(22, 3, true), expected);
  EXPECT_EQ(shards(20, 3, true), expected);
  EXPECT_EQ(shards(20, 3, true, false, false), expected);
}

TEST(ShardBatches, TinyDataSet) {
  EXPECT_EQ(shards(2, 3, false), (std::vector<Batches>{{{0, 1, 0}}, {{1, 0, 1}}}));
  EXPECT_EQ(shards(2, 3, true), (std::vector<Batches>{{}, {}}));
  EXPECT_EQ(shards(2, 4, false, true), (std::vector<Batches>{{{0, 1}}, {{0, 1}}}));
  EXPECT_EQ(shards(2, 4, true, true), (std::vector<Batches>{{}, {}}));
  EXPECT_EQ(shards(2, 3, false, false, false), (std::vector<Batches>{{{0, 1}}, {}}));
  EXPECT_EQ(shards(2, 4, false, true, false), (std::vector<Batches>{{{0, 1}}, {}}));
  EXPECT_EQ(shards(0, 3, false), (std::vector<Batches>{{}, {}}));
}

TEST(ShardBatches, SplitBatches) {
  Batches p0 = {{0, 1}, {4, 5}, {8, 9}, {12, 13}, {16, 17}, {20, 21}};
  Batches p1 = {{2, 3}, {6, 7}, {10, 11}, {14, 15}, {18, 19}, {22, 23}};
  EXPECT_EQ(shards(24, 4, false, true), (std::vector<Batches>{p0, p1}));
  EXPECT_EQ(shards(24, 4, true, true), (std::vector<Batches>{p0, p1}));
  EXPECT_EQ(shards(22, 4, false, true),
            (std::vector<Batches>{p0, {{2, 3}, {6, 7}, {10, 11}, {14, 15}, {18, 19}, {0, 1}}}));
  EXPECT_EQ(shards(21, 4, false, true),
            (std::vector<Batches>{{{0, 1}, {4, 5}, {8, 9}, {12, 13}, {16, 17}, {20, 0}},
                                  {{2, 3}, {6, 7}, {10, 11}, {14, 15}, {18, 19}, {1, 2}}}));
  std::vector<Batches> dropped = {{{0, 1}, {4, 5}, {8, 9}, {12, 13}, {16, 17}},
                                  {{2, 3}, {6, 7}, {10, 11}, {14, 15}, {18, 19}}};
  EXPECT_EQ(shards(22, 4, true, true), dropped);
  EXPECT_EQ(shards(21, 4, true, true), dropped);
}

TEST(ShardBatches, NoSplitUnevenBatches) {
  Batches p0 = {{0, 1, 2}, {6, 7, 8}, {12, 13, 14}, {18, 19, 20}};
  Batches p1 = {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}};
  EXPECT_EQ(shards(24, 3, false, false, false),
            (std::vector<Batches>{p0, {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21, 22, 23}}}));
  auto uneven21 = shards(21, 3, false, false, false);
  EXPECT_EQ(uneven21, (std::vector<Batches>{p0, p1}));
  EXPECT_EQ(uneven21[0].size(), 4u);
  EXPECT_EQ(uneven21[1].size(), 3u);
  EXPECT_EQ(shards(22, 3, false, false, false),
            (std::vector<Batches>{p0, {{3, 4, 5}, {9, 10, 11}, {15, 16, 17}, {21}}}));
  EXPECT_EQ(shards(20, 3, false, false, false),
            (std::vector<Batches>{{{0, 1, 2}, {6, 7, 8}, {12, 13, 14}, {18, 19}}, p1}));
}

TEST(ShardBatches, SplitUnevenBatches) {
  Batches p1 = {{2, 3}, {6, 7}, {10, 11}, {14, 15}, {18, 19}};
  EXPECT_EQ(shards(22, 4, false, true, false),
            (std::vector<Batches>{{{0, 1}, {4, 5}, {8, 9}, {12, 13}, {16, 17}, {20, 21}}, p1}));
  EXPECT_EQ(shards(21, 4, false, true, false),
            (std::vector<Batches>{{{0, 1}, {4, 5}, {8, 9}, {12, 13}, {16, 17}, {20}}, p1}));
}

TEST(ShardBatches, OneProcessIsPlainBatches) {
  auto options = acc::DataLoaderOptions().batch_size(4);
  const acc::ShardingOptions one;
  EXPECT_EQ(acc::shard_batches(range(10), options, one),
            (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));
  EXPECT_EQ(acc::shard_batches(range(10), options.drop_last(true), one),
            (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(acc::shard_batches({9, 3, 5}, acc::DataLoaderOptions().batch_size(2), one),
            (Batches{{9, 3}, {5}}));
}

TEST(ShardBatches, FollowsTheGivenOrder) {
  std::vector<int64_t> order = {5, 3, 1, 4, 2, 0};
  auto p1 = acc::shard_batches(order, acc::DataLoaderOptions().batch_size(2), sharding(2, 1));
  EXPECT_EQ(p1, (Batches{{1, 4}, {5, 3}}));  // [0] padded from the start of the order
}

TEST(ShardBatches, InvalidArguments) {
  try {
    acc::shard_batches(range(10), acc::DataLoaderOptions().batch_size(3),
                       sharding(2, 0).split_batches(true));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("(3)"), std::string::npos) << what;
    EXPECT_NE(what.find("(2)"), std::string::npos) << what;
  }
  EXPECT_THROW(
      acc::shard_batches(range(10), acc::DataLoaderOptions().batch_size(0), acc::ShardingOptions()),
      std::invalid_argument);
  EXPECT_THROW(acc::shard_batches(range(10), acc::DataLoaderOptions(), sharding(2, 2)),
               std::invalid_argument);
}

// Counts agree with the lists, processes partition (or, padded, cover) the samples, and
// even_batches gives every process the same count, over many shapes and 1..4 processes.
TEST(ShardBatches, InvariantsOverManyShapes) {
  for (int64_t n = 0; n <= 30; ++n)
    for (int64_t b = 1; b <= 6; ++b)
      for (int N = 1; N <= 4; ++N)
        for (int flags = 0; flags < 8; ++flags) {
          bool drop_last = flags & 1, split = flags & 2, even = flags & 4;
          if (split && b % N != 0) continue;
          std::vector<int64_t> all, counts;
          for (int p = 0; p < N; ++p) {
            auto batching = acc::DataLoaderOptions().batch_size(b).drop_last(drop_last);
            auto s = sharding(N, p).split_batches(split).even_batches(even);
            auto batches = acc::shard_batches(range(n), batching, s);
            ASSERT_EQ(acc::shard_num_batches(n, batching, s), static_cast<int64_t>(batches.size()));
            counts.push_back(static_cast<int64_t>(batches.size()));
            for (auto& batch : batches) {
              int64_t expected_size = (split && N > 1) ? b / N : b;
              if (drop_last || (even && N > 1)) {
                ASSERT_EQ(static_cast<int64_t>(batch.size()), expected_size);
              } else {
                ASSERT_LE(static_cast<int64_t>(batch.size()), expected_size);
              }
              all.insert(all.end(), batch.begin(), batch.end());
            }
          }
          std::set<int64_t> distinct(all.begin(), all.end());
          if (!drop_last) {
            EXPECT_EQ(static_cast<int64_t>(distinct.size()), n);
          }
          if (!drop_last && (!even || N == 1)) {
            EXPECT_EQ(static_cast<int64_t>(all.size()), n);
          }
          for (auto c : counts) {
            if (even || drop_last) {
              EXPECT_EQ(c, counts[0]);
            } else {
              EXPECT_TRUE(c == counts[0] || c == counts[0] - 1);
            }
          }
        }
}

// ---- Shuffling ------------------------------------------------------------------------

// Python: torch.randperm(10, generator=torch.Generator().manual_seed(42)).tolist()
// (Debian's python3-torch 1.13.1, the same ATen as libtorch-dev).
TEST(Shuffle, RandpermMatchesPython) {
  auto generator = at::make_generator<at::CPUGeneratorImpl>(42);
  at::Tensor perm = at::randperm(10, generator, at::kLong);
  std::vector<int64_t> got(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + 10);
  std::vector<int64_t> python = {2, 6, 1, 8, 4, 5, 0, 9, 3, 7};
  EXPECT_EQ(got, python);
  EXPECT_EQ(acc::shuffled_indices(10, 42), python);
  EXPECT_EQ(acc::shuffled_indices(10, 43), (std::vector<int64_t>{8, 4, 9, 0, 5, 1, 6, 7, 2, 3}));
  auto long_perm = acc::shuffled_indices(100, 7);
  EXPECT_EQ(std::vector<int64_t>(long_perm.begin(), long_perm.begin() + 10),
            (std::vector<int64_t>{15, 59, 71, 57, 2, 27, 87, 54, 36, 96}));
}

// ---- The loader, one process ----------------------------------------------------------

TEST(DataLoader, BatchesInOrderWithShapes) {
  acc::DataLoader<Indexed> loader(Indexed(10), acc::DataLoaderOptions().batch_size(4));
  EXPECT_EQ(loader.size(), 3);
  EXPECT_EQ(loader.dataset_size(), 10);
  EXPECT_EQ(loader.total_batch_size(), 4);
  std::vector<int64_t> sizes;
  for (auto& batch : loader) {
    EXPECT_EQ(batch.data.dim(), 2);
    EXPECT_EQ(batch.data.size(1), 1);
    EXPECT_EQ(batch.target.dim(), 1);
    EXPECT_EQ(batch.data.scalar_type(), at::kFloat);
    sizes.push_back(batch.data.size(0));
  }
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 2}));
  EXPECT_EQ(pass(loader), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9}}));

  acc::DataLoader<Indexed> dropped(Indexed(10),
                                   acc::DataLoaderOptions().batch_size(4).drop_last(true));
  EXPECT_EQ(dropped.size(), 2);
  EXPECT_EQ(pass(dropped), (Batches{{0, 1, 2, 3}, {4, 5, 6, 7}}));
}

TEST(DataLoader, SharedDataSetAndCheapCopies) {
  auto data = std::make_shared<Indexed>(6);
  acc::DataLoader<Indexed> loader(data, acc::DataLoaderOptions().batch_size(3));
  acc::DataLoader<Indexed> copy = loader;
  EXPECT_EQ(copy.dataset().get(), data.get());
  EXPECT_EQ(pass(copy), (Batches{{0, 1, 2}, {3, 4, 5}}));
  EXPECT_EQ(copy.epoch(), 1);
  EXPECT_EQ(loader.epoch(), 0);  // each copy has its own position
  acc::DataLoader deduced(data, acc::DataLoaderOptions().batch_size(6));  // CTAD
  static_assert(std::is_same_v<decltype(deduced), acc::DataLoader<Indexed>>);
  EXPECT_EQ(pass(deduced), (Batches{{0, 1, 2, 3, 4, 5}}));
}

TEST(DataLoader, ShuffleIsSeedPlusEpoch) {
  acc::DataLoader<Indexed> loader(Indexed(23),
                                  acc::DataLoaderOptions().batch_size(5).shuffle(true).seed(42));
  auto epoch0 = flatten(pass(loader));
  EXPECT_EQ(epoch0, acc::shuffled_indices(23, 42));
  EXPECT_EQ(loader.epoch(), 1);
  auto epoch1 = flatten(pass(loader));
  EXPECT_EQ(epoch1, acc::shuffled_indices(23, 43));
  EXPECT_NE(epoch0, epoch1);
  loader.set_epoch(0);
  EXPECT_EQ(flatten(pass(loader)), epoch0);
  loader.set_epoch(10);
  EXPECT_EQ(flatten(pass(loader)), acc::shuffled_indices(23, 52));
}

TEST(DataLoader, UnsetSeedUsesDefaultGeneratorSeed) {
  const uint64_t seed = at::detail::getDefaultCPUGenerator().current_seed();
  acc::DataLoader<Indexed> loader(Indexed(9), acc::DataLoaderOptions().batch_size(9).shuffle(true));
  EXPECT_EQ(flatten(pass(loader)), acc::shuffled_indices(9, seed));
  EXPECT_EQ(flatten(pass(loader)), acc::shuffled_indices(9, seed + 1));
}

TEST(DataLoader, EpochAdvancesOnlyAfterCompletePass) {
  acc::DataLoader<Indexed> loader(Indexed(8), acc::DataLoaderOptions().batch_size(2));
  for (auto& batch : loader) {
    (void)batch;
    break;
  }
  EXPECT_EQ(loader.epoch(), 0);
  EXPECT_EQ(loader.batches_yielded(), 1);
  pass(loader);
  EXPECT_EQ(loader.epoch(), 1);
  EXPECT_EQ(loader.batches_yielded(), 0);
}

TEST(DataLoader, TensorAndNoTargetExamples) {
  struct Plain : torch::data::datasets::Dataset<Plain, at::Tensor> {
    at::Tensor get(size_t i) override { return torch::full({2}, static_cast<float>(i)); }
    c10::optional<size_t> size() const override { return 5; }
  };
  acc::DataLoader<Plain> plain(Plain(), acc::DataLoaderOptions().batch_size(2));
  std::vector<std::vector<int64_t>> shapes;
  for (auto& batch : plain) shapes.push_back(batch.sizes().vec());
  EXPECT_EQ(shapes, (std::vector<std::vector<int64_t>>{{2, 2}, {2, 2}, {1, 2}}));

  using Unlabelled = torch::data::Example<at::Tensor, torch::data::example::NoTarget>;
  struct NoTarget : torch::data::datasets::Dataset<NoTarget, Unlabelled> {
    Unlabelled get(size_t i) override {
      return Unlabelled(torch::full({3}, static_cast<float>(i)));
    }
    c10::optional<size_t> size() const override { return 4; }
  };
  acc::DataLoader<NoTarget> unlabelled(NoTarget(), acc::DataLoaderOptions().batch_size(4));
  int count = 0;
  for (auto& batch : unlabelled) {
    EXPECT_EQ(batch.data.sizes().vec(), (std::vector<int64_t>{4, 3}));
    EXPECT_EQ(batch.data[3][0].item<float>(), 3.0f);
    ++count;
  }
  EXPECT_EQ(count, 1);
}

// A user type with its own collation, and a data set whose size() is a plain size_t.
struct Pair {
  int64_t a;
  int64_t b;
};
struct PairBatch {
  std::vector<int64_t> sums;
};
template <>
struct accelerate::Collate<Pair> {
  static PairBatch collate(std::vector<Pair> pairs) {
    PairBatch batch;
    for (auto& p : pairs) batch.sums.push_back(p.a + p.b);
    return batch;
  }
};

TEST(DataLoader, CustomCollateAndSizeT) {
  struct Pairs {
    Pair get(size_t i) { return {static_cast<int64_t>(i), 10}; }
    size_t size() const { return 5; }
  };
  acc::DataLoader<Pairs> loader(Pairs(), acc::DataLoaderOptions().batch_size(2).num_workers(2));
  std::vector<std::vector<int64_t>> got;
  for (auto& batch : loader) got.push_back(batch.sums);
  EXPECT_EQ(got, (std::vector<std::vector<int64_t>>{{10, 11}, {12, 13}, {14}}));
  auto shard = loader.shard(sharding(2, 1));  // no to_device: batches stay as collated
  got.clear();
  for (auto& batch : *shard) got.push_back(batch.sums);
  EXPECT_EQ(got, (std::vector<std::vector<int64_t>>{{12, 13}, {11, 12}}));  // [2,3], [1,2]
}

TEST(DataLoader, WorkersKeepTheOrder) {
  for (bool shuffle : {false, true}) {
    auto options = acc::DataLoaderOptions().batch_size(3).shuffle(shuffle).seed(5);
    acc::DataLoader<Indexed> serial(Indexed(50), options);
    auto expected = pass(serial);
    for (int workers : {1, 2, 3, 8}) {
      acc::DataLoader<Indexed> threaded(Indexed(50),
                                        acc::DataLoaderOptions(options).num_workers(workers));
      EXPECT_EQ(pass(threaded), expected) << workers << " workers";
      auto shard = threaded.shard(sharding(2, 1));
      auto serial_shard = serial.shard(sharding(2, 1));
      serial_shard->set_epoch(shard->epoch());
      EXPECT_EQ(pass(*shard), pass(*serial_shard)) << workers << " workers, sharded";
    }
  }
}

TEST(DataLoader, GetErrorNamesTheIndex) {
  for (int workers : {0, 2}) {
    acc::DataLoader<Indexed> loader(Indexed(20, 13),
                                    acc::DataLoaderOptions().batch_size(4).num_workers(workers));
    int seen = 0;
    try {
      for (auto& batch : loader) {
        (void)batch;
        ++seen;
      }
      FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find("dataset.get(13)"), std::string::npos) << what;
      try {
        std::rethrow_if_nested(e);
        FAIL() << "expected the original error nested";
      } catch (const std::runtime_error& inner) {
        EXPECT_STREQ(inner.what(), "disk on fire");
      }
    }
    EXPECT_EQ(seen, 3) << workers << " workers";
    EXPECT_EQ(loader.epoch(), 0);
    // The bad batch skipped, the rest loads.
    EXPECT_EQ(pass(*loader.skip_first_batches(4)), (Batches{{16, 17, 18, 19}}));
  }
}

// A data set that makes whole batches (get_items, PyTorch's __getitems__); get() is never
// meant to be called.
struct Batched : torch::data::datasets::Dataset<Batched> {
  explicit Batched(int64_t size, int64_t fail = -1) : n(size), fail_at(fail) {}
  torch::data::Example<> get(size_t) override {
    throw std::logic_error("get() called although get_items() exists");
  }
  torch::data::Example<> get_items(const std::vector<int64_t>& idx) {
    calls->fetch_add(1);
    if (std::find(idx.begin(), idx.end(), fail_at) != idx.end())
      throw std::runtime_error("bad batch");
    auto t = torch::tensor(idx);
    return {t.to(at::kFloat).unsqueeze(1), t};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(n); }
  int64_t n;
  int64_t fail_at;
  std::shared_ptr<std::atomic<int64_t>> calls = std::make_shared<std::atomic<int64_t>>(0);
};

TEST(DataLoader, GetItemsMakesWholeBatchesLikePerSampleLoading) {
  for (int workers : {0, 2}) {
    const auto options =
        acc::DataLoaderOptions().batch_size(4).shuffle(true).seed(9).num_workers(workers);
    acc::DataLoader<Indexed> per_sample(Indexed(22), options);
    Batched data(22);
    acc::DataLoader<Batched> batched(data, options);
    for (int epoch = 0; epoch < 2; ++epoch) {
      // Identical batches (same shuffle, same shapes and dtypes), one get_items per batch.
      const int64_t before = data.calls->load();
      Batches a = pass(per_sample), b = pass(batched);
      EXPECT_EQ(a, b) << "epoch " << epoch << ", " << workers << " workers";
      EXPECT_EQ(data.calls->load() - before, 6);  // ceil(22 / 4)
    }
    // Sharded over 2 processes, as prepare does.
    auto process1 = acc::ShardingOptions().num_processes(2).process_index(1);
    EXPECT_EQ(pass(*per_sample.shard(process1)), pass(*batched.shard(process1)));
  }
}

TEST(DataLoader, GetItemsErrorNamesTheIndices) {
  acc::DataLoader<Batched> loader(Batched(12, 6), acc::DataLoaderOptions().batch_size(4));
  try {
    for (auto& batch : loader) (void)batch;
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset.get_items([4, 5, 6, 7])"), std::string::npos)
        << e.what();
    try {
      std::rethrow_if_nested(e);
      FAIL() << "expected the original error nested";
    } catch (const std::runtime_error& inner) {
      EXPECT_STREQ(inner.what(), "bad batch");
    }
  }
}

// ---- TensorDataset ------------------------------------------------------------------

namespace {

// True when `a` and `b` have the same dtype, shape and bytes (NaNs and -0.0 included).
bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const at::Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

bool same_bits(const torch::data::Example<>& a, const torch::data::Example<>& b) {
  return same_bits(a.data, b.data) && same_bits(a.target, b.target);
}

// The per-sample equivalent of a TensorDataset: get() only, collated by the loader.
struct PerSample : torch::data::datasets::Dataset<PerSample> {
  PerSample(at::Tensor x_, at::Tensor y_) : x(std::move(x_)), y(std::move(y_)) {}
  torch::data::Example<> get(size_t i) override {
    return {x[static_cast<int64_t>(i)], y[static_cast<int64_t>(i)]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }
  at::Tensor x, y;
};

// 22 samples: data [22, 2, 3] float with a NaN and a -0.0, target [22] long.
std::pair<at::Tensor, at::Tensor> tensor_data() {
  at::Tensor x = torch::randn({22, 2, 3}, torch::TensorOptions().dtype(at::kFloat));
  x[5][1][2] = std::numeric_limits<float>::quiet_NaN();
  x[7][0][0] = -0.0f;
  return {x, torch::arange(22, at::kLong) * 10};
}

}  // namespace

TEST(TensorDataset, GetAndGetItemsAreCollatedGets) {
  auto [x, y] = tensor_data();
  acc::TensorDataset data(x, y);
  EXPECT_EQ(data.size().value(), 22u);
  EXPECT_TRUE(data.data().is_same(x));  // shared, not copied
  EXPECT_TRUE(data.target().is_same(y));
  auto e = data.get(7);
  EXPECT_TRUE(same_bits(e.data, x[7]));
  EXPECT_TRUE(same_bits(e.target, y[7]));
  const std::vector<int64_t> idx = {21, 5, 0, 7, 5};
  std::vector<torch::data::Example<>> examples;
  for (auto i : idx) examples.push_back(data.get(static_cast<size_t>(i)));
  auto collated = acc::Collate<torch::data::Example<>>::collate(examples);
  auto batch = data.get_items(idx);
  EXPECT_EQ(batch.data.sizes().vec(), (std::vector<int64_t>{5, 2, 3}));
  EXPECT_EQ(batch.target.sizes().vec(), (std::vector<int64_t>{5}));
  EXPECT_TRUE(same_bits(batch, collated));
  // One-dimensional and non-contiguous tensors, other dtypes.
  at::Tensor t = torch::arange(24, at::kDouble).reshape({4, 6}).t();  // [6, 4], strided
  at::Tensor flags = torch::tensor({true, false, true, true, false, false});
  acc::TensorDataset strided(t, flags);
  std::vector<torch::data::Example<>> parts = {strided.get(4), strided.get(1)};
  EXPECT_TRUE(
      same_bits(strided.get_items({4, 1}), acc::Collate<torch::data::Example<>>::collate(parts)));
}

TEST(TensorDataset, LoaderBatchesEqualPerSampleOnesBitForBit) {
  auto [x, y] = tensor_data();
  for (bool shuffle : {false, true})
    for (int workers : {0, 2}) {
      const auto options =
          acc::DataLoaderOptions().batch_size(4).shuffle(shuffle).seed(9).num_workers(workers);
      acc::DataLoader<acc::TensorDataset> fast(acc::TensorDataset(x, y), options);
      acc::DataLoader<PerSample> slow(PerSample(x, y), options);
      auto compare = [&](acc::DataLoader<acc::TensorDataset>& a, acc::DataLoader<PerSample>& b,
                         const std::string& what) {
        for (int epoch = 0; epoch < 2; ++epoch) {
          std::vector<torch::data::Example<>> got, expected;
          for (auto& batch : a) got.push_back(batch);
          for (auto& batch : b) expected.push_back(batch);
          ASSERT_EQ(got.size(), expected.size()) << what;
          ASSERT_FALSE(got.empty()) << what;
          for (size_t i = 0; i < got.size(); ++i)
            EXPECT_TRUE(same_bits(got[i], expected[i]))
                << what << ", epoch " << epoch << ", batch " << i << ", shuffle " << shuffle << ", "
                << workers << " workers";
        }
      };
      compare(fast, slow, "unprepared");
      // The last batch is partial: 22 = 5 * 4 + 2.
      std::vector<int64_t> sizes;
      acc::DataLoader<acc::TensorDataset> copy = fast;  // its own epoch: fast's stays slow's
      for (auto& batch : copy) sizes.push_back(batch.data.size(0));
      EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 4, 4, 4, 2}));
      // Prepared, as prepare does it (shared seed, CPU device): one process, then both
      // processes of two, with even batches (padded), uneven ones (the last partial) and
      // split batches.
      std::vector<std::pair<std::string, acc::ShardingOptions>> cases = {
          {"1 process", sharding(1, 0).seed(1234)}};
      for (int p = 0; p < 2; ++p) {
        const std::string process = "process " + std::to_string(p) + " of 2";
        cases.push_back({process, sharding(2, p).seed(1234)});
        cases.push_back({process + ", uneven", sharding(2, p).seed(1234).even_batches(false)});
        cases.push_back({process + ", split", sharding(2, p).seed(1234).split_batches(true)});
      }
      for (auto& [name, s] : cases) {
        auto a = fast.shard(s);
        auto b = slow.shard(s);
        compare(*a, *b, name);
      }
      std::vector<int64_t> uneven;
      auto p1 = fast.shard(sharding(2, 1).even_batches(false));
      for (auto& batch : *p1) uneven.push_back(batch.data.size(0));
      EXPECT_EQ(uneven, (std::vector<int64_t>{4, 4, 2}));
    }
}

// One tensor: LibTorch's own TensorDataset (Example<Tensor, NoTarget>), as the header says.
TEST(TensorDataset, OneTensorThroughLibTorchsTensorDataset) {
  at::Tensor x = torch::arange(10, at::kFloat).reshape({5, 2});
  acc::DataLoader<torch::data::datasets::TensorDataset> loader(
      torch::data::datasets::TensorDataset(x), acc::DataLoaderOptions().batch_size(2));
  std::vector<at::Tensor> batches;
  for (auto& batch : loader) batches.push_back(batch.data);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_TRUE(same_bits(at::cat(batches), x));
}

TEST(TensorDataset, InvalidTensorsNameTheShapes) {
  auto expect_error = [](const at::Tensor& x, const at::Tensor& y,
                         const std::vector<std::string>& words) {
    try {
      acc::TensorDataset data(x, y);
      ADD_FAILURE() << "expected accelerate::InvalidArgument";
    } catch (const acc::InvalidArgument& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.rfind("accelerate: TensorDataset: ", 0), 0u) << what;
      for (const auto& w : words) EXPECT_NE(what.find(w), std::string::npos) << what;
    }
  };
  expect_error(torch::zeros({10, 3}), torch::zeros({9}), {"[10, ...]", "[10, 3]", "got [9]"});
  expect_error(torch::zeros({2, 5}), torch::zeros({5, 2}), {"[2, ...]", "[2, 5]", "got [5, 2]"});
  expect_error(at::Tensor(), torch::zeros({3}), {"data", "undefined"});
  expect_error(torch::zeros({3}), at::Tensor(), {"target", "undefined"});
  expect_error(torch::tensor(1.0), torch::zeros({1}), {"data", "at least 1 dimension"});
  expect_error(torch::zeros({1}), torch::tensor(1), {"target", "at least 1 dimension"});

  acc::TensorDataset data(torch::zeros({4, 2}), torch::zeros({4}));
  EXPECT_THROW(data.get(4), acc::InvalidArgument);
  try {
    data.get_items({0, 4});
    ADD_FAILURE() << "expected accelerate::InvalidArgument";
  } catch (const acc::InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("index 4 is not in [0, 4)"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(data.get_items({-1}), acc::InvalidArgument);
}

// ---- Device prefetch ------------------------------------------------------------------

// A prepared loader whose device is not the CPU loads the next batch before handing the
// current one over (Accelerate's DataLoaderShard). The meta device stands in for a GPU
// here: tensors moved there keep their shapes and lose their values.
TEST(ShardedLoader, DevicePrefetchLoadsOneBatchAheadOffTheCpuOnly) {
  for (int workers : {0, 2}) {
    for (bool on_cpu : {true, false}) {
      Indexed data(18);
      acc::DataLoader<Indexed> loader(data,
                                      acc::DataLoaderOptions().batch_size(4).num_workers(workers));
      auto state = std::make_shared<acc::GradientState>();
      auto context = std::make_shared<acc::DataContext>(state);
      auto s = sharding(1, 0).device(on_cpu ? c10::Device(c10::kCPU) : c10::Device(c10::kMeta));
      auto shard = loader.shard(s, context);
      std::vector<int64_t> sizes;
      int64_t i = 0;
      for (auto it = shard->begin(); it != shard->end(); ++it, ++i) {
        if (workers == 0) {
          // Batches 0..i loaded, and batch i + 1 too off the CPU (none after the last).
          const int64_t loaded = std::min<int64_t>(18, 4 * (i + (on_cpu ? 1 : 2)));
          EXPECT_EQ(data.calls->load(), loaded) << "batch " << i << ", cpu " << on_cpu;
        }
        EXPECT_EQ(it->data.device().type(), on_cpu ? c10::kCPU : c10::kMeta);
        EXPECT_EQ(it->target.device().type(), on_cpu ? c10::kCPU : c10::kMeta);
        EXPECT_EQ(state->end_of_dataloader(), i == 4) << "batch " << i;
        EXPECT_EQ(shard->batches_yielded(), i + 1);
        sizes.push_back(it->data.size(0));
      }
      EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4, 4, 4, 2}));
      EXPECT_EQ(data.calls->load(), 18);
      EXPECT_FALSE(state->in_dataloader());
      EXPECT_EQ(shard->epoch(), 1);
      // An abandoned pass drops the batch loaded ahead and ends as before.
      for (auto& batch : *shard) {
        (void)batch;
        break;
      }
      EXPECT_FALSE(state->in_dataloader());
      EXPECT_EQ(shard->epoch(), 1);
      EXPECT_EQ(shard->batches_yielded(), 1);
    }
  }
}

TEST(ShardedLoader, DevicePrefetchErrorSurfacesWhenTheLoopReachesIt) {
  for (int workers : {0, 2}) {
    acc::DataLoader<Indexed> loader(Indexed(20, 13),
                                    acc::DataLoaderOptions().batch_size(4).num_workers(workers));
    auto state = std::make_shared<acc::GradientState>();
    auto context = std::make_shared<acc::DataContext>(state);
    auto shard = loader.shard(sharding(1, 0).device(c10::kMeta), context);
    int seen = 0;
    try {
      for (auto& batch : *shard) {
        (void)batch;
        ++seen;
        EXPECT_TRUE(state->in_dataloader());
      }
      FAIL() << "expected an error";
    } catch (const std::runtime_error& e) {
      std::string what = e.what();
      EXPECT_EQ(what, acc::detail::get_failed_message(13));
      try {
        std::rethrow_if_nested(e);
        FAIL() << "expected the original error nested";
      } catch (const std::runtime_error& inner) {
        EXPECT_STREQ(inner.what(), "disk on fire");
      }
    }
    EXPECT_EQ(seen, 3) << workers << " workers";  // batch 3 ([12, 16)) fails
    EXPECT_FALSE(state->in_dataloader());
    EXPECT_EQ(shard->epoch(), 0);
    EXPECT_EQ(shard->batches_yielded(), 3);
    // The bad batch skipped, the rest loads.
    int rest = 0;
    auto skipped = shard->skip_first_batches(4);
    for (auto& batch : *skipped) {
      EXPECT_EQ(batch.data.sizes().vec(), (std::vector<int64_t>{4, 1}));
      ++rest;
    }
    EXPECT_EQ(rest, 1);
  }
  // A get_items error the same way.
  acc::DataLoader<Batched> batched(Batched(12, 6), acc::DataLoaderOptions().batch_size(4));
  auto shard = batched.shard(sharding(1, 0).device(c10::kMeta));
  int seen = 0;
  try {
    for (auto& batch : *shard) {
      (void)batch;
      ++seen;
    }
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("dataset.get_items([4, 5, 6, 7])"), std::string::npos)
        << e.what();
  }
  EXPECT_EQ(seen, 1);
}

TEST(DataLoader, EarlyBreakWithWorkersDoesNotHang) {
  Indexed data(2000);
  auto calls = data.calls;
  acc::DataLoader<Indexed> loader(data, acc::DataLoaderOptions().batch_size(2).num_workers(3));
  for (int round = 0; round < 20; ++round) {
    int seen = 0;
    for (auto& batch : loader) {
      (void)batch;
      if (++seen == 2) break;
    }
    EXPECT_EQ(seen, 2);
  }
  // Bounded prefetch: an abandoned pass loaded only a few batches ahead.
  EXPECT_LT(calls->load(), 20 * 2 * (2 + 2 * 3 + 3));
  // A loader destroyed while an iterator is alive stops its workers first.
  auto owned =
      std::make_shared<acc::DataLoader<Indexed>>(data, acc::DataLoaderOptions().num_workers(2));
  auto it = owned->begin();
  EXPECT_EQ(indices(*it), std::vector<int64_t>{0});
  owned.reset();
  EXPECT_TRUE(it == acc::DataLoader<Indexed>::iterator());
  // Starting a new pass stops the previous one.
  auto first = loader.begin();
  auto second = loader.begin();
  EXPECT_TRUE(first == loader.end());
  EXPECT_FALSE(second == loader.end());
}

TEST(DataLoader, PinMemoryIsHarmlessWithoutCuda) {
  acc::DataLoader<Indexed> loader(Indexed(6),
                                  acc::DataLoaderOptions().batch_size(3).pin_memory(true));
  EXPECT_EQ(pass(loader), (Batches{{0, 1, 2}, {3, 4, 5}}));
}

TEST(DataLoader, InvalidOptions) {
  EXPECT_THROW(acc::DataLoader<Indexed>(Indexed(4), acc::DataLoaderOptions().batch_size(0)),
               std::invalid_argument);
  EXPECT_THROW(acc::DataLoader<Indexed>(Indexed(4), acc::DataLoaderOptions().num_workers(-1)),
               std::invalid_argument);
  EXPECT_THROW(acc::DataLoader<Indexed>(std::shared_ptr<Indexed>()), std::invalid_argument);
  acc::DataLoader<Indexed> loader(Indexed(4), acc::DataLoaderOptions().batch_size(3));
  EXPECT_THROW(loader.shard(sharding(2, 2)), std::invalid_argument);
  auto split = sharding(2, 0);
  split.split_batches(true);
  try {
    loader.shard(split);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    std::string what = e.what();
    EXPECT_NE(what.find("3"), std::string::npos) << what;
    EXPECT_NE(what.find("2"), std::string::npos) << what;
  }
  EXPECT_THROW(loader.skip_first_batches(-1), std::invalid_argument);
}

// ---- Prepared (sharded) loaders ---------------------------------------------------------

TEST(ShardedLoader, TwoProcessesCoverTheDataSet) {
  acc::DataLoader<Indexed> loader(Indexed(82), acc::DataLoaderOptions().batch_size(16));
  std::set<int64_t> seen;
  for (int p = 0; p < 2; ++p) {
    auto shard = loader.shard(sharding(2, p));
    EXPECT_EQ(shard->size(), 3);
    EXPECT_EQ(shard->total_batch_size(), 32);
    EXPECT_EQ(shard->dataset_size(), 82);
    int count = 0;
    for (auto& batch : *shard) {
      EXPECT_EQ(batch.data.sizes().vec(), (std::vector<int64_t>{16, 1}));
      EXPECT_EQ(batch.target.sizes().vec(), (std::vector<int64_t>{16}));
      for (auto i : indices(batch)) seen.insert(i);
      ++count;
    }
    EXPECT_EQ(count, 3);
  }
  EXPECT_EQ(seen.size(), 82u);
  EXPECT_EQ(loader.shard(sharding(1, 0))->size(), 6);  // one process: plain batches
  auto split = sharding(2, 1);
  split.split_batches(true);
  auto split_shard = loader.shard(split);
  EXPECT_EQ(split_shard->total_batch_size(), 16);
  EXPECT_EQ(split_shard->size(), 6);
  EXPECT_EQ(pass(*split_shard).front(), (std::vector<int64_t>{8, 9, 10, 11, 12, 13, 14, 15}));
}

TEST(ShardedLoader, ShufflingSharedAcrossProcessesAndEpochs) {
  acc::DataLoader<Indexed> loader(Indexed(40),
                                  acc::DataLoaderOptions().batch_size(4).shuffle(true));
  std::vector<std::shared_ptr<acc::DataLoader<Indexed>>> processes;
  for (int p = 0; p < 2; ++p) {
    auto s = sharding(2, p);
    s.seed(1234);  // what prepare broadcasts
    processes.push_back(loader.shard(s));
  }
  std::vector<int64_t> previous;
  for (int epoch = 0; epoch < 3; ++epoch) {
    auto b0 = pass(*processes[0]), b1 = pass(*processes[1]);
    std::vector<int64_t> global;
    for (size_t i = 0; i < b0.size(); ++i) {
      global.insert(global.end(), b0[i].begin(), b0[i].end());
      global.insert(global.end(), b1[i].begin(), b1[i].end());
    }
    // Both processes cut the same permutation: together they rebuild it.
    EXPECT_EQ(global, acc::shuffled_indices(40, 1234 + epoch)) << "epoch " << epoch;
    EXPECT_NE(global, previous);
    previous = global;
  }
  // An explicit DataLoaderOptions seed wins over the shared one.
  acc::DataLoader<Indexed> seeded(Indexed(40),
                                  acc::DataLoaderOptions().batch_size(40).shuffle(true).seed(9));
  auto s = sharding(1, 0);
  s.seed(1234);
  EXPECT_EQ(flatten(pass(*seeded.shard(s))), acc::shuffled_indices(40, 9));
}

TEST(ShardedLoader, GradientStateSeesTheEnd) {
  for (int workers : {0, 2}) {
    acc::DataLoader<Indexed> loader(Indexed(82),
                                    acc::DataLoaderOptions().batch_size(16).num_workers(workers));
    auto state = std::make_shared<acc::GradientState>();
    auto context = std::make_shared<acc::DataContext>(state);
    auto shard = loader.shard(sharding(2, 0), context);
    EXPECT_FALSE(state->in_dataloader());
    EXPECT_EQ(state->active_dataloader(), nullptr);
    for (int epoch = 0; epoch < 2; ++epoch) {
      int64_t i = 0;
      for (auto& batch : *shard) {
        (void)batch;
        EXPECT_TRUE(state->in_dataloader());
        EXPECT_EQ(state->active_dataloader(), shard.get());
        EXPECT_EQ(state->end_of_dataloader(), i == shard->size() - 1) << "batch " << i;
        EXPECT_EQ(state->remainder(), 18);  // 82 % (16 * 2)
        ++i;
      }
      EXPECT_EQ(i, 3);
      EXPECT_FALSE(state->in_dataloader());
      EXPECT_EQ(state->active_dataloader(), nullptr);
      EXPECT_FALSE(state->end_of_dataloader());
    }
    // An abandoned pass is removed too.
    for (auto& batch : *shard) {
      (void)batch;
      break;
    }
    EXPECT_FALSE(state->in_dataloader());
    // drop_last: remainder unknown.
    acc::DataLoader<Indexed> dropping(Indexed(82),
                                      acc::DataLoaderOptions().batch_size(16).drop_last(true));
    auto dropped = dropping.shard(sharding(2, 0), context);
    for (auto& batch : *dropped) {
      (void)batch;
      EXPECT_EQ(state->remainder(), -1);
    }
  }
}

TEST(ShardedLoader, BatchesOnTheDevice) {
  acc::DataLoader<Indexed> loader(Indexed(8), acc::DataLoaderOptions().batch_size(2));
  auto s = sharding(2, 1);
  s.device(c10::Device(c10::kCPU));
  auto shard = loader.shard(s);  // kept: `*loader.shard(s)` in a range-for would dangle
  for (auto& batch : *shard) {
    EXPECT_EQ(batch.data.device(), c10::Device(c10::kCPU));
    EXPECT_EQ(batch.target.device(), c10::Device(c10::kCPU));
  }
}

TEST(ShardedLoader, SkipFirstBatchesLoadsNothingSkipped) {
  Indexed data(40);
  acc::DataLoader<Indexed> loader(data,
                                  acc::DataLoaderOptions().batch_size(4).shuffle(true).seed(3));
  auto shard = loader.shard(sharding(2, 0));
  auto whole = pass(*shard);
  ASSERT_EQ(whole.size(), 5u);
  shard->set_epoch(0);
  auto skipped = acc::skip_first_batches(shard, 2);
  EXPECT_EQ(skipped->size(), 3);
  const int64_t before = data.calls->load();
  auto rest = pass(*skipped);
  EXPECT_EQ(rest, Batches(whole.begin() + 2, whole.end()));
  EXPECT_EQ(data.calls->load() - before, 3 * 4);  // only the yielded batches were loaded
  // Every pass skips, with the epoch's own order.
  auto next = pass(*skipped);
  shard->set_epoch(1);
  auto whole1 = pass(*shard);
  EXPECT_EQ(next, Batches(whole1.begin() + 2, whole1.end()));
  EXPECT_EQ(pass(*loader.skip_first_batches(100)), Batches{});
}

TEST(ShardedLoader, ResumeFromPosition) {
  Indexed data(60);
  auto options = acc::DataLoaderOptions().batch_size(4).shuffle(true).seed(11).num_workers(2);
  acc::DataLoader<Indexed> loader(data, options);
  auto shard = loader.shard(sharding(2, 1));
  pass(*shard);  // epoch 0
  Batches first_three;
  for (auto& batch : *shard) {
    first_three.push_back(indices(batch));
    if (first_three.size() == 3) break;
  }
  auto saved = shard->position();
  EXPECT_EQ(saved.epoch, 1);
  EXPECT_EQ(saved.batches, 3);

  // A fresh process restores the position: the rest of epoch 1, then whole epochs.
  acc::DataLoader<Indexed> fresh_loader(data, options);
  auto restored = fresh_loader.shard(sharding(2, 1));
  restored->resume_from(saved);
  EXPECT_EQ(restored->position().batches, 3);
  restored->set_epoch(1);  // a training loop's set_epoch(epoch) keeps the resume
  const int64_t before = data.calls->load();
  auto rest = pass(*restored);
  EXPECT_EQ(data.calls->load() - before, static_cast<int64_t>(rest.size()) * 4);
  EXPECT_EQ(restored->epoch(), 2);

  auto reference = loader.shard(sharding(2, 1));
  reference->set_epoch(1);
  auto whole1 = pass(*reference);
  ASSERT_EQ(whole1.size(), 8u);
  EXPECT_EQ(Batches(whole1.begin(), whole1.begin() + 3), first_three);
  EXPECT_EQ(rest, Batches(whole1.begin() + 3, whole1.end()));
  EXPECT_EQ(pass(*restored), pass(*reference));  // epoch 2, whole on both

  // Position mid-pass counts the skipped batches.
  restored->resume_from({5, 2});
  int64_t yielded = 0;
  for (auto& batch : *restored) {
    (void)batch;
    yielded = restored->batches_yielded();
    break;
  }
  EXPECT_EQ(yielded, 3);
  EXPECT_EQ(restored->position().epoch, 5);
}

// The example at the top of data_loader.h.
struct Squares : torch::data::datasets::Dataset<Squares> {
  torch::data::Example<> get(size_t i) override {
    auto x = torch::full({1}, double(i));
    return {x, x * x};
  }
  c10::optional<size_t> size() const override { return 100; }
};

TEST(DataLoader, HeaderExample) {
  accelerate::DataLoader<Squares> loader(
      Squares(),
      accelerate::DataLoaderOptions().batch_size(16).shuffle(true).seed(42).num_workers(2));
  int64_t seen = 0;
  for (auto& batch : loader) {
    EXPECT_TRUE(batch.target.equal(batch.data * batch.data));
    seen += batch.data.size(0);
  }
  EXPECT_EQ(seen, 100);
  auto sharding = accelerate::ShardingOptions().num_processes(2).process_index(1);
  auto shard = loader.shard(sharding);
  EXPECT_EQ(shard->size(), 4);
  // What a checkpoint sees, through the type-erased base.
  acc::DataLoaderBase& base = *shard;
  EXPECT_EQ(base.position().epoch, 1);
  base.resume_from({4, 1});
  EXPECT_EQ(shard->size() - 1, static_cast<int64_t>(std::distance(shard->begin(), shard->end())));
}

// ---- LibTorch's own data sets ---------------------------------------------------------

TEST(DataLoader, LibTorchMnist) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const acc::testing::TempDir folder;  // LibTorch's reader wants the files uncompressed
  for (std::string name : {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}) {
    const auto gunzip = acc::testing::run_command(acc::testing::Command(
        {"gzip", "-dc", std::string(fashion_mnist::kDefaultFolder) + "/" + name + ".gz"}));
    ASSERT_EQ(gunzip.code(), 0) << gunzip.err;
    std::ofstream(folder.path(name), std::ios::binary) << gunzip.out;
  }
  using torch::data::datasets::MNIST;
  acc::DataLoader<MNIST> loader(MNIST(folder.str(), MNIST::Mode::kTest),
                                acc::DataLoaderOptions().batch_size(1000).num_workers(2));
  EXPECT_EQ(loader.size(), 10);
  fashion_mnist::FashionMnist ours(fashion_mnist::Split::kTest);
  int64_t offset = 0;
  auto shard = loader.shard(sharding(2, 0));
  for (auto& batch : *shard) {
    EXPECT_EQ(batch.data.sizes().vec(), (std::vector<int64_t>{1000, 1, 28, 28}));
    if (offset == 0) {
      auto mine = ours.get(3);
      EXPECT_TRUE(at::allclose(batch.data[3], mine.data * ours.kStd + ours.kMean, 1e-5, 1e-5));
      EXPECT_EQ(batch.target[3].item<int64_t>(), mine.target.item<int64_t>());
    }
    offset += 2000;
  }
  EXPECT_EQ(offset, 10000);
}

// ---- The Fashion-MNIST example data set ---------------------------------------------------

TEST(FashionMnist, SizesAndExamples) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  fashion_mnist::FashionMnist test(fashion_mnist::Split::kTest);
  EXPECT_EQ(test.size().value(), 10000u);
  auto example = test.get(0);
  EXPECT_EQ(example.data.sizes().vec(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(example.data.scalar_type(), at::kFloat);
  EXPECT_EQ(example.target.dim(), 0);
  EXPECT_EQ(example.target.scalar_type(), at::kLong);
  EXPECT_EQ(test.targets().min().item<int64_t>(), 0);
  EXPECT_EQ(test.targets().max().item<int64_t>(), 9);
  EXPECT_EQ(at::bincount(test.targets()).eq(1000).all().item<bool>(), true);  // balanced
  EXPECT_NEAR(example.data.min().item<float>(), (0.0 - 0.2860) / 0.3530, 1e-5);
  EXPECT_NEAR(test.images().to(at::kFloat).div(255).mean().item<double>(), 0.2860, 0.005);
  EXPECT_THROW(test.get(10000), std::out_of_range);

  fashion_mnist::FashionMnist train;
  EXPECT_EQ(train.size().value(), 60000u);
  EXPECT_EQ(train.split(), fashion_mnist::Split::kTrain);
  EXPECT_EQ(train.targets().min().item<int64_t>(), 0);
  EXPECT_EQ(train.targets().max().item<int64_t>(), 9);
  at::Tensor pixels = train.images().to(at::kFloat).div_(255);
  EXPECT_NEAR(pixels.mean().item<double>(), 0.2860, 0.0005);
  EXPECT_NEAR(pixels.std().item<double>(), 0.3530, 0.0005);
}

TEST(FashionMnist, BadFilesNameTheFile) {
  const acc::testing::TempDir temp;
  const std::string folder = temp.str();
  auto expect_error = [&](const std::string& file, const std::string& words) {
    try {
      fashion_mnist::FashionMnist data(folder, fashion_mnist::Split::kTest);
      ADD_FAILURE() << "expected an error about " << file;
    } catch (const std::runtime_error& e) {
      std::string what = e.what();
      EXPECT_NE(what.find(folder + "/" + file), std::string::npos) << what;
      EXPECT_NE(what.find(words), std::string::npos) << what;
    }
  };
  auto write = [&](const std::string& file, const std::vector<uint8_t>& bytes) {
    std::ofstream out(folder + "/" + file, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()),
              static_cast<std::streamsize>(bytes.size()));
  };
  auto idx = [](uint32_t magic, std::vector<uint32_t> dims, size_t payload) {
    std::vector<uint8_t> bytes;
    dims.insert(dims.begin(), magic);
    for (uint32_t w : dims)
      for (int shift : {24, 16, 8, 0}) bytes.push_back(static_cast<uint8_t>(w >> shift));
    bytes.resize(bytes.size() + payload, 1);
    return bytes;
  };
  expect_error("t10k-images-idx3-ubyte.gz", "missing");
  // zlib reads uncompressed files too, so plain IDX bytes under the .gz name do.
  write("t10k-images-idx3-ubyte.gz", idx(2049, {2, 28, 28}, 2 * 784));
  write("t10k-labels-idx1-ubyte.gz", idx(2049, {2}, 2));
  expect_error("t10k-images-idx3-ubyte.gz", "bad magic");
  write("t10k-images-idx3-ubyte.gz", idx(2051, {2, 28, 28}, 2 * 784 - 5));
  expect_error("t10k-images-idx3-ubyte.gz", "truncated");
  write("t10k-images-idx3-ubyte.gz", idx(2051, {2, 28, 28}, 2 * 784));
  write("t10k-labels-idx1-ubyte.gz", {0, 0, 8});
  expect_error("t10k-labels-idx1-ubyte.gz", "truncated");
  write("t10k-labels-idx1-ubyte.gz", idx(2049, {3}, 3));
  expect_error("t10k-labels-idx1-ubyte.gz", "labels");
  write("t10k-labels-idx1-ubyte.gz", idx(2049, {2}, 2));
  fashion_mnist::FashionMnist ok(folder, fashion_mnist::Split::kTest);
  EXPECT_EQ(ok.size().value(), 2u);
  EXPECT_EQ(ok.get(1).target.item<int64_t>(), 1);
  // A real gzip stream cut short.
  if (have_fashion_mnist()) {
    std::ifstream in(std::string(fashion_mnist::kDefaultFolder) + "/t10k-images-idx3-ubyte.gz",
                     std::ios::binary);
    std::vector<uint8_t> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    gz.resize(gz.size() / 2);
    write("t10k-images-idx3-ubyte.gz", gz);
    expect_error("t10k-images-idx3-ubyte.gz", "truncated");
  }
}

// DataContext::begin_pass: called once at the start of each pass of a sharded loader, before
// any sample of the pass is loaded (what AcceleratorOptions::rng_types hangs on).
struct PassCounting : acc::DataContext {
  std::function<void()> on_begin;
  void begin_pass(const std::optional<at::Generator>&) override { on_begin(); }
};

TEST(ShardedLoader, BeginPassRunsOnceBeforeEachPass) {
  Indexed data(10);
  auto calls = data.calls;
  acc::DataLoader<Indexed> loader(data, acc::DataLoaderOptions().batch_size(2));
  std::vector<int64_t> loaded_at_begin;
  auto context = std::make_shared<PassCounting>();
  context->on_begin = [&] { loaded_at_begin.push_back(calls->load()); };
  auto shard = loader.shard(sharding(2, 0), context);
  for (int epoch = 0; epoch < 3; ++epoch) {
    int64_t batches = 0;
    for (auto& batch : *shard) {
      (void)batch;
      ++batches;
      EXPECT_EQ(static_cast<int64_t>(loaded_at_begin.size()), epoch + 1);
    }
    EXPECT_EQ(batches, 3);
  }
  ASSERT_EQ(loaded_at_begin.size(), 3u);
  for (size_t pass = 0; pass < 3; ++pass)
    EXPECT_EQ(loaded_at_begin[pass], static_cast<int64_t>(pass) * 6) << pass;  // 3 batches of 2
}
