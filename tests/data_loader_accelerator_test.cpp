// Prepared loaders over real collectives (ranks as threads): iterable data sets dispatched
// from process 0 (Accelerate's default) or sharded, samplers and generators through
// Accelerator::prepare, and gather_for_metrics seeing every sample exactly once.
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <numeric>
#include <vector>

#include "index_datasets.h"
#include "test_util.h"

namespace acc = accelerate;

namespace {

using accelerate::testing::Indexed;
using accelerate::testing::Stream;

struct EveryOther : acc::Sampler {
  std::vector<int64_t> indices(int64_t epoch) override {
    std::vector<int64_t> v;
    for (int64_t i = epoch % 2; i < 23; i += 2) v.push_back(i);
    return v;
  }
};

std::vector<int64_t> values(const at::Tensor& t) {
  at::Tensor c = t.to(at::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// All samples of one pass as gather_for_metrics returns them, on every process.
template <typename Loader>
std::vector<int64_t> gathered(acc::Accelerator& a, Loader& loader) {
  std::vector<int64_t> all;
  for (auto& batch : *loader) {
    auto v = values(a.gather_for_metrics(batch.target));
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

}  // namespace

TEST(PreparedStreams, DispatchedByDefaultEverySampleOnce) {
  for (int n : {2, 3})
    for (bool split : {false, true})
      acc::testing::run_ranks(
          n,
          [&](acc::Accelerator& a) {
            acc::DataLoader<Stream> loader(Stream(25),
                                           acc::DataLoaderOptions().batch_size(split ? 6 : 2));
            auto dl = a.prepare(loader);
            EXPECT_TRUE(dl->dispatches());
            std::vector<int64_t> expected(25);
            std::iota(expected.begin(), expected.end(), 0);
            EXPECT_EQ(gathered(a, dl), expected);
            EXPECT_EQ(gathered(a, dl), expected);  // a second epoch
          },
          acc::AcceleratorOptions().split_batches(split));
}

TEST(PreparedStreams, ShardedWhenNotDispatching) {
  for (int n : {2, 3})
    acc::testing::run_ranks(
        n,
        [&](acc::Accelerator& a) {
          acc::DataLoader<Stream> loader(Stream(11), acc::DataLoaderOptions().batch_size(2));
          auto dl = a.prepare(loader);
          EXPECT_FALSE(dl->dispatches());
          std::vector<int64_t> expected(11);
          std::iota(expected.begin(), expected.end(), 0);
          EXPECT_EQ(gathered(a, dl), expected);
        },
        acc::AcceleratorOptions().dispatch_batches(false));
}

TEST(PreparedSamplers, SamplerAndDispatchedMapStyle) {
  for (int n : {2, 3})
    for (bool dispatch : {false, true})
      acc::testing::run_ranks(
          n,
          [&](acc::Accelerator& a) {
            acc::DataLoader<Indexed> loader(
                Indexed(23),
                acc::DataLoaderOptions().batch_size(2).sampler(std::make_shared<EveryOther>()));
            auto dl = a.prepare(loader);
            EXPECT_EQ(dl->dispatches(), dispatch);
            for (int epoch = 0; epoch < 2; ++epoch) {
              std::vector<int64_t> expected = EveryOther().indices(epoch);
              EXPECT_EQ(gathered(a, dl), expected) << "epoch " << epoch;
            }
          },
          acc::AcceleratorOptions().dispatch_batches(dispatch));
}

TEST(PreparedSamplers, GeneratorStateComesFromProcess0) {
  acc::testing::run_ranks(3, [&](acc::Accelerator& a) {
    // Every rank seeds differently; prepare gives all of them rank 0's generator.
    at::Generator g = at::make_generator<at::CPUGeneratorImpl>(100 + a.process_index());
    acc::DataLoader<Indexed> loader(
        Indexed(30), acc::DataLoaderOptions().batch_size(2).shuffle(true).generator(g));
    auto dl = a.prepare(loader);
    for (int epoch = 0; epoch < 2; ++epoch) {
      auto all = gathered(a, dl);
      std::sort(all.begin(), all.end());
      std::vector<int64_t> expected(30);
      std::iota(expected.begin(), expected.end(), 0);
      EXPECT_EQ(all, expected) << "epoch " << epoch;  // one permutation shared by all ranks
    }
  });
}

// Note [a loader outliving its Accelerator]: a prepared loader kept after its Accelerator is
// gone throws a clear error (iterating, size(), state_dict()) instead of reaching freed memory,
// whether it dispatches (collectives) or shards (gradient state, random states).
TEST(PreparedLoaders, UsedAfterTheirAcceleratorThrow) {
  auto expect_gone = [](auto&& use, const char* what) {
    try {
      use();
      ADD_FAILURE() << what << " did not throw";
    } catch (const acc::InvalidArgument& e) {
      EXPECT_NE(std::string(e.what()).find("prepared by an Accelerator that no longer exists"),
                std::string::npos)
          << what << ": " << e.what();
    }
  };
  for (bool dispatch : {false, true}) {
    const auto store = acc::testing::make_store();
    acc::testing::spawn_threads(2, [&](int rank) {
      std::shared_ptr<acc::DataLoader<Indexed>> dl, mid_pass;
      acc::DataLoader<Indexed>::iterator it;
      {
        acc::Accelerator a(acc::testing::rank_options(
            rank, 2, store, acc::AcceleratorOptions().dispatch_batches(dispatch)));
        dl = a.prepare(
            acc::DataLoader<Indexed>(Indexed(10), acc::DataLoaderOptions().batch_size(2)));
        EXPECT_EQ(dl->dispatches(), dispatch);
        int64_t batches = 0;
        for (auto& batch : *dl) batches += batch.data.size(0) > 0;
        EXPECT_EQ(batches, 3);  // 10 samples, 2 processes of batches of 2: 3 steps, padded
        mid_pass = a.prepare(
            acc::DataLoader<Indexed>(Indexed(10), acc::DataLoaderOptions().batch_size(2)));
        it = mid_pass->begin();
      }
      expect_gone([&] { dl->begin(); }, "begin");
      expect_gone([&] { dl->size(); }, "size");
      expect_gone([&] { dl->state_dict(); }, "state_dict");
      expect_gone([&] { dl->load_state_dict({{"epoch", 0}, {"batches", 0}}); }, "load_state_dict");
      expect_gone([&] { ++it; }, "advancing a pass");
    });
  }
}
