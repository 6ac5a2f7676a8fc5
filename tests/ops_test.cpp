// Collectives with Accelerate's semantics (test_utils/scripts/test_ops.py), ranks as threads.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <fstream>
#include <future>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "temp_dir.h"
#include "test_ops_values.h"
#include "test_util.h"

namespace acc = accelerate;
using acc::testing::create_tensor;
using acc::testing::run_ranks;

namespace {

std::vector<double> values(const at::Tensor& t) {
  auto c = t.to(at::kDouble).contiguous().cpu();
  return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
}

std::vector<double> iota(int from, int to_inclusive) {
  std::vector<double> v;
  for (int i = from; i <= to_inclusive; ++i) v.push_back(i);
  return v;
}

class Collectives : public ::testing::TestWithParam<int> {};

}  // namespace

TEST_P(Collectives, Gather) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes();
    EXPECT_EQ(values(a.gather(create_tensor(a))), iota(1, n * n));
    auto scalars = a.gather(at::scalar_tensor(a.process_index(), at::kLong));
    EXPECT_EQ(scalars.sizes(), at::IntArrayRef({n}));
    EXPECT_EQ(values(scalars), iota(0, n - 1));
    // 2-d rows of different counts: rank r contributes r+1 rows of [r, r].
    auto rows = at::full({a.process_index() + 1, 2}, a.process_index(), at::kInt);
    auto all = a.gather(rows);
    EXPECT_EQ(all.size(0), n * (n + 1) / 2);
    EXPECT_EQ(all.size(1), 2);
    int64_t row = 0;
    for (int r = 0; r < n; ++r)
      for (int k = 0; k <= r; ++k, ++row) EXPECT_EQ(all[row][1].item<int>(), r);
  });
}

TEST(Gather, RefusesMismatchedShapes) {
  for (int n : {2, 3})
    run_ranks(n, [](acc::Accelerator& a) {
      auto t = at::zeros({2, a.process_index() == 1 ? 4 : 3});
      try {
        a.gather(t);
        ADD_FAILURE() << "no error";
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find("rank 1 has [2, 4]"), std::string::npos) << e.what();
      }
    });
}

TEST_P(Collectives, GatherObject) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes();
    std::vector<int> expected;
    for (int r = 0; r < n; ++r) expected.push_back(r);
    EXPECT_EQ(a.gather_object(std::vector<int>{a.process_index()}), expected);
    auto names = a.gather_object("worker-" + std::string(a.process_index() + 1, 'x'));
    ASSERT_EQ(static_cast<int>(names.size()), n);
    for (int r = 0; r < n; ++r) EXPECT_EQ(names[r], "worker-" + std::string(r + 1, 'x'));
    auto numbers = a.gather_object(0.5 * a.process_index());
    for (int r = 0; r < n; ++r) EXPECT_DOUBLE_EQ(numbers[r], 0.5 * r);
    // Vectors of strings of different lengths are concatenated in process order.
    auto words = a.gather_object(std::vector<std::string>(a.process_index() + 1, "w"));
    EXPECT_EQ(static_cast<int>(words.size()), n * (n + 1) / 2);
  });
}

TEST_P(Collectives, Broadcast) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes();
    auto t = a.broadcast(create_tensor(a));
    EXPECT_EQ(t.size(0), n);
    EXPECT_EQ(values(t), iota(1, n));
    auto last = a.broadcast(create_tensor(a), n - 1);
    EXPECT_EQ(values(last), iota(n * (n - 1) + 1, n * n));
    EXPECT_EQ(a.broadcast_object(std::string("from ") + std::to_string(a.process_index()), n - 1),
              "from " + std::to_string(n - 1));
    std::map<std::string, int> config{{"epochs", 3 + a.process_index()}};
    EXPECT_EQ(a.broadcast_object(config).at("epochs"), 3);
    EXPECT_THROW(a.broadcast(create_tensor(a), n), std::invalid_argument);
  });
}

TEST_P(Collectives, PadAcrossProcesses) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes(), r = a.process_index();
    auto padded = a.pad_across_processes(at::arange(r + 1, at::kFloat));
    EXPECT_EQ(padded.size(0), n);
    std::vector<double> expected = iota(0, r);
    expected.resize(n, 0.0);
    EXPECT_EQ(values(padded), expected);
    auto first = a.pad_across_processes(at::arange(r + 1, at::kFloat), 0, -1, /*pad_first=*/true);
    std::vector<double> expected_first(n - r - 1, -1.0);
    for (double v : iota(0, r)) expected_first.push_back(v);
    EXPECT_EQ(values(first), expected_first);
    // Along dim 1 of a 2-d tensor; a dim out of range returns the tensor as it is.
    auto wide = a.pad_across_processes(at::ones({2, r + 1}), 1, 7);
    EXPECT_EQ(wide.sizes(), at::IntArrayRef({2, n}));
    if (r + 1 < n) EXPECT_EQ(wide[1][n - 1].item<float>(), 7.0f);
    EXPECT_EQ(a.pad_across_processes(at::ones({2}), 3).sizes(), at::IntArrayRef({2}));
  });
}

TEST_P(Collectives, Reduce) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes();
    auto t = create_tensor(a);  // rank r: [1 + n r, ..., n + n r]
    const auto expected = acc::testing::expected_reductions(n);
    EXPECT_EQ(values(a.reduce(t, "sum")), expected.sum);
    EXPECT_EQ(values(a.reduce(t, "mean")), expected.mean);
    EXPECT_EQ(values(a.reduce(t, "max")), expected.max);
    EXPECT_EQ(values(a.reduce(t, acc::ReduceOp::SUM, 2.0)), [&] {
      auto s = expected.sum;
      for (auto& v : s) v *= 2;
      return s;
    }());
    EXPECT_EQ(values(t), values(create_tensor(a))) << "reduce must not modify its input";
    EXPECT_THROW(a.reduce(t, "median"), std::invalid_argument);
    EXPECT_THROW(a.reduce(at::ones({2}, at::kLong), "mean"), std::invalid_argument);
  });
}

TEST_P(Collectives, SplitBetweenProcesses) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes(), r = a.process_index();
    std::vector<int> data;
    for (int i = 0; i < 2 * n; ++i) data.push_back(i);
    const std::vector<int> mine = n == 1 ? data : std::vector<int>{2 * r, 2 * r + 1};
    EXPECT_EQ(a.split_between_processes(data), mine);
    std::vector<int> odd;
    for (int i = 0; i < 3 * n - 1; ++i) odd.push_back(i);
    auto padded = a.split_between_processes(odd, /*apply_padding=*/true);
    EXPECT_EQ(static_cast<int>(padded.size()), n == 1 ? 2 : 3);
    if (n > 1 && r == n - 1) EXPECT_EQ(padded.back(), 3 * n - 2);
    auto rows = a.split_between_processes(at::arange(3 * n - 1).reshape({3 * n - 1, 1}), true);
    EXPECT_EQ(rows.size(0), n == 1 ? 3 * n - 1 : 3);
    if (n > 1 && r == n - 1) EXPECT_EQ(rows[2][0].item<int64_t>(), 3 * n - 2);
  });
}

// Small tensors and objects travel inside the signature exchange (one collective); larger ones
// in a second collective. Both ways give the same results, including when only some processes'
// data would fit.
TEST_P(Collectives, SmallAndLargeDataGiveTheSameResults) {
  run_ranks(GetParam(), [](acc::Accelerator& a) {
    const int n = a.num_processes(), r = a.process_index();
    for (int64_t numel : {int64_t{3}, int64_t{1500}, int64_t{5000}}) {
      SCOPED_TRACE("numel " + std::to_string(numel));
      auto of = [&](int rank) { return at::arange(numel, at::kDouble) * (rank + 1) + rank; };
      at::Tensor sum = of(0).clone(), max = of(0).clone(), min = of(0).clone(),
                 product = of(0).clone();
      for (int k = 1; k < n; ++k) {
        sum += of(k);
        max = at::maximum(max, of(k));
        min = at::minimum(min, of(k));
        product *= of(k);
      }
      EXPECT_TRUE(at::equal(a.reduce(of(r), "sum"), sum));
      EXPECT_TRUE(at::allclose(a.reduce(of(r), "mean"), sum / n));
      EXPECT_TRUE(at::equal(a.reduce(of(r), "max"), max));
      EXPECT_TRUE(at::equal(a.reduce(of(r), "min"), min));
      EXPECT_TRUE(at::equal(a.reduce(of(r), "product"), product));
      EXPECT_TRUE(at::equal(a.reduce(of(r), "sum", 0.5), sum * 0.5));
      auto ints = a.reduce(of(r).to(at::kInt), "sum");
      EXPECT_EQ(ints.scalar_type(), at::kInt);
      EXPECT_TRUE(at::equal(ints, sum.to(at::kInt)));
      EXPECT_TRUE(
          at::equal(a.broadcast(of(r).reshape({numel, 1}), n - 1), of(n - 1).reshape({numel, 1})));
      auto gathered = a.gather(of(r).to(at::kFloat));
      std::vector<at::Tensor> all;
      for (int k = 0; k < n; ++k) all.push_back(of(k).to(at::kFloat));
      EXPECT_TRUE(at::equal(gathered, at::cat(all)));
      auto text = [&](int rank) { return std::string(static_cast<size_t>(numel), 'a' + rank); };
      EXPECT_EQ(a.broadcast_object(text(r), 0), text(0));
      auto texts = a.gather_object(text(r));
      ASSERT_EQ(static_cast<int>(texts.size()), n);
      for (int k = 0; k < n; ++k) EXPECT_EQ(texts[k], text(k));
    }
    // Rows of which only process 0's fit into the exchange: the data goes in a second collective.
    const int64_t rows = r == 0 ? 1 : 5000;
    auto gathered = a.gather(at::full({rows, 1}, r, at::kFloat));
    EXPECT_EQ(gathered.size(0), 1 + 5000 * (n - 1));
    EXPECT_EQ(gathered.sum().item<double>(), 5000.0 * (n - 1) * n / 2);
    auto texts = a.gather_object(std::string(r == 0 ? 1 : 20000, 'x'));
    for (int k = 0; k < n; ++k) EXPECT_EQ(texts[k].size(), k == 0 ? 1u : 20000u);
  });
}

INSTANTIATE_TEST_SUITE_P(Ranks, Collectives, ::testing::Values(1, 2, 3));

TEST(SplitBetweenProcesses, SeventeenItemsOverFourProcesses) {
  std::vector<int> items(17);
  for (int i = 0; i < 17; ++i) items[i] = i;
  std::vector<std::vector<int>> shares(4), padded(4);
  std::vector<int64_t> tensor_sizes(4);
  run_ranks(4, [&](acc::Accelerator& a) {
    shares[a.process_index()] = a.split_between_processes(items);
    padded[a.process_index()] = a.split_between_processes(items, true);
    tensor_sizes[a.process_index()] = a.split_between_processes(at::arange(17)).size(0);
  });
  EXPECT_EQ(shares[0], (std::vector<int>{0, 1, 2, 3, 4}));
  EXPECT_EQ(shares[1], (std::vector<int>{5, 6, 7, 8}));
  EXPECT_EQ(shares[2], (std::vector<int>{9, 10, 11, 12}));
  EXPECT_EQ(shares[3], (std::vector<int>{13, 14, 15, 16}));
  EXPECT_EQ(padded[3], (std::vector<int>{13, 14, 15, 16, 16}));
  EXPECT_EQ(tensor_sizes, (std::vector<int64_t>{5, 4, 4, 4}));
}

// Accelerate 1.15's rules: a process past the end gets nothing; padding repeats the input's
// last item (not the share's).
TEST(SplitBetweenProcesses, FewerItemsThanProcesses) {
  std::vector<std::vector<int>> shares(3), padded(3);
  std::vector<at::Tensor> rows(3), padded_rows(3);
  run_ranks(3, [&](acc::Accelerator& a) {
    const int r = a.process_index();
    shares[r] = a.split_between_processes(std::vector<int>{7, 8});
    padded[r] = a.split_between_processes(std::vector<int>{7, 8}, true);
    rows[r] = a.split_between_processes(at::tensor({7, 8}));
    padded_rows[r] = a.split_between_processes(at::tensor({7, 8}), true);
  });
  EXPECT_EQ(shares[0], std::vector<int>{7});
  EXPECT_EQ(shares[1], std::vector<int>{8});
  EXPECT_EQ(shares[2], std::vector<int>{});
  EXPECT_EQ(padded[2], std::vector<int>{8});
  EXPECT_EQ(rows[2].size(0), 0);
  EXPECT_TRUE(torch::equal(padded_rows[2], at::tensor({8})));
}

// A map is split value by value, as Accelerate splits a dict.
TEST(SplitBetweenProcesses, MapsAreSplitValueByValue) {
  std::vector<std::map<std::string, std::vector<int>>> lists(2);
  std::vector<std::map<std::string, at::Tensor>> tensors(2);
  run_ranks(2, [&](acc::Accelerator& a) {
    const int r = a.process_index();
    lists[r] = a.split_between_processes(
        std::map<std::string, std::vector<int>>{{"a", {1, 2, 3}}, {"b", {4, 5}}}, true);
    tensors[r] = a.split_between_processes(
        std::map<std::string, at::Tensor>{{"x", at::arange(5)}, {"y", at::arange(2)}});
  });
  EXPECT_EQ(lists[0].at("a"), (std::vector<int>{1, 2}));
  EXPECT_EQ(lists[1].at("a"), (std::vector<int>{3, 3}));
  EXPECT_EQ(lists[0].at("b"), (std::vector<int>{4}));
  EXPECT_EQ(lists[1].at("b"), (std::vector<int>{5}));
  EXPECT_TRUE(torch::equal(tensors[0].at("x"), at::arange(3)));
  EXPECT_TRUE(torch::equal(tensors[1].at("x"), at::arange(3, 5)));
  EXPECT_TRUE(torch::equal(tensors[1].at("y"), at::arange(1, 2)));
}

TEST(SplitBetweenProcesses, PaddingRepeatsTheInputsLastItem) {
  std::vector<std::vector<int>> padded(3);
  std::vector<at::Tensor> rows(3);
  run_ranks(3, [&](acc::Accelerator& a) {
    padded[a.process_index()] = a.split_between_processes(std::vector<int>{0, 1, 2, 3}, true);
    rows[a.process_index()] = a.split_between_processes(at::tensor({0, 1, 2, 3}), true);
  });
  EXPECT_EQ(padded[0], (std::vector<int>{0, 1}));
  EXPECT_EQ(padded[1], (std::vector<int>{2, 3}));  // Accelerate: [2, 3], not [2, 2]
  EXPECT_EQ(padded[2], (std::vector<int>{3, 3}));
  EXPECT_TRUE(torch::equal(rows[1], at::tensor({2, 3})));
}

// ---- mismatched collectives: the same clear error on every rank, never a wrong value ----

namespace {

// Runs `call` on 2 ranks; expects every rank to throw E whose message holds each of `parts`.
template <typename E, typename F>
void expect_error_on_every_rank(F call, const std::vector<std::string>& parts) {
  std::vector<std::string> messages(2);
  run_ranks(2, [&](acc::Accelerator& a) {
    try {
      call(a);
      messages[a.process_index()] = "no error";
    } catch (const E& e) {
      messages[a.process_index()] = e.what();
    }
    // The group is still in step afterwards: a correct collective works.
    EXPECT_EQ(a.reduce(at::ones({2}), "sum").sum().item<double>(), 4.0);
  });
  EXPECT_EQ(messages[0], messages[1]);
  EXPECT_EQ(messages[0].rfind("accelerate: ", 0), 0u) << messages[0];
  for (const auto& part : parts)
    EXPECT_NE(messages[0].find(part), std::string::npos) << messages[0] << "\nmissing: " << part;
}

}  // namespace

TEST(CollectiveChecks, ReduceDtypeMismatchIsAnErrorNotAWrongSum) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) {
        a.reduce(a.process_index() == 0 ? at::ones({3}, at::kInt) : at::ones({3}, at::kFloat));
      },
      {"reduce", "rank 0 passed [3] (Int)", "rank 1 passed [3] (Float)", "same dtype and shape"});
}

TEST(CollectiveChecks, ReduceShapeMismatchWithEqualElementCounts) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) {
        a.reduce(a.process_index() == 0 ? at::ones({2, 6}) : at::ones({3, 4}));
      },
      {"rank 0 passed [2, 6]", "rank 1 passed [3, 4]"});
}

TEST(CollectiveChecks, ReduceFloatVsDoubleDoesNotAbort) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) {
        a.reduce(at::ones({2, 3}, a.process_index() == 0 ? at::kFloat : at::kDouble));
      },
      {"(Float)", "(Double)"});
}

TEST(CollectiveChecks, DifferentReductions) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) { a.reduce(at::ones({2}), a.process_index() == 0 ? "sum" : "max"); },
      {"rank 0 passed reduction sum but rank 1 passed max"});
}

TEST(CollectiveChecks, BroadcastFromDifferentSources) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) { a.broadcast(at::ones({2}), a.process_index()); },
      {"broadcast", "source process"});
}

TEST(CollectiveChecks, DifferentCollectivesAreOutOfStep) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) {
        if (a.process_index() == 0)
          a.reduce(at::ones({2}));
        else
          a.gather(at::ones({2}));
      },
      {"collectives out of step", "rank 0 is in reduce #", "rank 1 is in gather #"});
}

TEST(CollectiveChecks, WaitForEveryoneAgainstAGather) {
  expect_error_on_every_rank<acc::InvalidArgument>(
      [](acc::Accelerator& a) {
        if (a.process_index() == 0)
          a.wait_for_everyone();
        else
          a.gather_object(std::string("x"));
      },
      {"rank 0 is in wait_for_everyone #", "rank 1 is in gather_object #"});
}

TEST(CollectiveChecks, TimeoutSaysWhereEveryRankIs) {
  std::vector<std::string> messages(2);
  std::promise<void> gave_up;
  std::future<void> rank0_gave_up = gave_up.get_future();
  run_ranks(
      2,
      [&](acc::Accelerator& a) {
        a.gather(at::ones({1}));  // both: gather #1
        if (a.process_index() == 1) {
          // Rank 1 never comes to the reduce; it waits until rank 0 gave up (the bound only
          // keeps a broken timeout from hanging the test).
          rank0_gave_up.wait_for(std::chrono::minutes(2));
          return;
        }
        try {
          a.reduce(at::ones({1}));
        } catch (const acc::DistributedError& e) {
          messages[0] = e.what();
        }
        gave_up.set_value();
      },
      // 3 s: time for rank 1's trace publisher (at most every 200 ms) on a loaded machine.
      acc::AcceleratorOptions().timeout(std::chrono::milliseconds(3000)));
  EXPECT_NE(messages[0].find("rank 0 waits in reduce #2"), std::string::npos) << messages[0];
  EXPECT_NE(messages[0].find("rank 1 last entered gather #1"), std::string::npos) << messages[0];
}

TEST(ObjectCodec, UserTypesAndWrongTypes) {
  struct Point {
    double x, y;
  };
  (void)sizeof(Point);
  // A map of vectors of pairs travels whole.
  std::map<std::string, std::vector<std::pair<int, std::string>>> m{{"a", {{1, "x"}, {2, "y"}}}};
  EXPECT_EQ(acc::from_object_bytes<decltype(m)>(acc::to_object_bytes(m), "test"), m);
  // Reading bytes as another type fails with a clear error instead of a wrong value.
  const std::string bytes = acc::to_object_bytes(std::string("hello"));
  try {
    acc::from_object_bytes<std::vector<double>>(bytes, "test");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("accelerate: test:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(acc::from_object_bytes<int64_t>(acc::to_object_bytes(int32_t{1}), "test"),
               std::runtime_error);
  EXPECT_THROW(acc::from_object_bytes<int32_t>(acc::to_object_bytes(int64_t{1}), "test"),
               std::runtime_error);
}

// With ACCELERATE_STATUS_DIR (set by the launcher), each process keeps a one-line file of the
// collective it last entered, which the launcher reads when it stops a stuck job.
TEST(CollectiveTrace, StatusFilesForTheLauncher) {
  const acc::testing::TempDir dir;
  const auto store = acc::testing::make_store();
  acc::testing::spawn_threads(2, [&](int rank) {
    auto options = acc::testing::rank_options(rank, 2, store);
    auto environment = *options.environment();
    environment.emplace("ACCELERATE_STATUS_DIR", dir.str());
    options.environment(environment);
    acc::Accelerator a(options);
    a.gather(at::ones({1}));
    a.reduce(at::ones({1}));
    // The file is written by a publishing thread, at most every publishing period: wait until
    // it shows the reduce (the bound only keeps a broken publisher from hanging the test).
    const std::string file = dir.path("rank_" + std::to_string(rank));
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(1);
    std::string name;
    int number = 0;
    while (std::chrono::steady_clock::now() < give_up) {
      std::ifstream in(file);
      name.clear();
      number = 0;
      in >> name >> number;
      if (name == "reduce" && number == 2) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(name, "reduce") << "rank " << rank;
    EXPECT_EQ(number, 2) << "rank " << rank;
  });
}
