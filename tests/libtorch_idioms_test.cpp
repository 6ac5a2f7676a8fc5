// LibTorch's own idioms through the Accelerator, as PyTorch's C++ examples (cpp/mnist,
// cpp/dcgan) write them: TORCH_MODULE holders prepared and trained as holders, torch::data
// data sets with `.map(Normalize).map(Stack)` (batch-level get_batch) through acc::DataLoader
// and prepare, and the prepared optimizer next to code written for torch::optim::Optimizer&.
// Ranks run as threads (test_util.h).
#include <accelerate/accelerate.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

#include "test_util.h"

namespace acc = accelerate;
using acc::testing::run_ranks;

namespace {

// ---- data: an MNIST-like set of 1×8×8 images, the same samples in every form ----

// Deterministic pixels in [0, 1) and labels 0..9 (no random generator: ranks are threads).
at::Tensor pixels(int64_t n) {
  return (torch::arange(n * 64, torch::kFloat).reshape({n, 1, 8, 8}) * 0.731).sin().abs();
}
at::Tensor labels(int64_t n) { return (torch::arange(n, torch::kLong) * 7) % 10; }

// torch::data's map-style data set, as torch::data::datasets::MNIST: get(i) and size().
struct Pixels : torch::data::datasets::Dataset<Pixels> {
  explicit Pixels(int64_t n) : images(pixels(n)), targets(labels(n)) {}
  torch::data::Example<> get(size_t i) override {
    return {images[static_cast<int64_t>(i)], targets[static_cast<int64_t>(i)]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(images.size(0)); }
  at::Tensor images, targets;
};

// The same samples normalised in get(): the per-sample equivalent of Pixels.map(Normalize).
struct NormalizedPixels : torch::data::datasets::Dataset<NormalizedPixels> {
  explicit NormalizedPixels(int64_t n) : source(n) {}
  torch::data::Example<> get(size_t i) override {
    auto example = source.get(i);
    return {normalize(example.data), example.target};
  }
  c10::optional<size_t> size() const override { return source.size(); }
  Pixels source;
  torch::data::transforms::Normalize<> normalize{0.1307, 0.3081};
};

// What pytorch/examples' cpp/mnist writes.
auto mnist_like(int64_t n) {
  return Pixels(n)
      .map(torch::data::transforms::Normalize<>(0.1307, 0.3081))
      .map(torch::data::transforms::Stack<>());
}
using StackedSet = decltype(mnist_like(1));
using ListSet = decltype(Pixels(1).map(torch::data::transforms::Normalize<>(0.1307, 0.3081)));

static_assert(acc::DataLoader<StackedSet>::kWholeBatches);
static_assert(!acc::DataLoader<StackedSet>::kIterable);
static_assert(std::is_same_v<acc::DataLoader<StackedSet>::BatchType, torch::data::Example<>>);
static_assert(!acc::DataLoader<ListSet>::kWholeBatches);
static_assert(std::is_same_v<acc::DataLoader<ListSet>::BatchType, torch::data::Example<>>);

using Batches = std::vector<torch::data::Example<>>;

template <typename Loader>
Batches read(Loader& loader, int64_t limit = -1) {
  Batches out;
  for (auto& batch : loader) {
    out.push_back({batch.data.clone(), batch.target.clone()});
    if (static_cast<int64_t>(out.size()) == limit) break;  // batches_yielded() == limit
  }
  return out;
}

void expect_same(const Batches& got, const Batches& expected, const std::string& what) {
  ASSERT_EQ(got.size(), expected.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(torch::equal(got[i].data, expected[i].data)) << what << ", batch " << i;
    EXPECT_TRUE(torch::equal(got[i].target, expected[i].target)) << what << ", batch " << i;
  }
}

}  // namespace

TEST(TorchDataSets, MapAndStackLoadTheSameBatchesAsPerSampleGet) {
  // Not prepared: one process, shuffled, two epochs, with and without worker threads.
  for (int workers : {0, 2}) {
    auto options =
        acc::DataLoaderOptions().batch_size(8).shuffle(true).seed(5).num_workers(workers);
    acc::DataLoader<StackedSet> stacked(mnist_like(50), options);
    acc::DataLoader<ListSet> listed(
        Pixels(50).map(torch::data::transforms::Normalize<>(0.1307, 0.3081)), options);
    acc::DataLoader<NormalizedPixels> reference(NormalizedPixels(50), options);
    EXPECT_EQ(stacked.size(), 7);
    for (int epoch = 0; epoch < 2; ++epoch) {
      const Batches expected = read(reference);
      ASSERT_EQ(expected.size(), 7u);
      EXPECT_EQ(expected[0].data.sizes(), (std::vector<int64_t>{8, 1, 8, 8}));
      EXPECT_EQ(expected[6].target.sizes(), (std::vector<int64_t>{2}));  // 50 = 6 × 8 + 2
      expect_same(read(stacked), expected, "Stack, epoch " + std::to_string(epoch));
      expect_same(read(listed), expected, "Normalize only, epoch " + std::to_string(epoch));
    }
  }
}

TEST(TorchDataSets, PreparedShardsShufflesAndResumesAsPerSampleGet) {
  for (bool dispatch : {false, true})
    run_ranks(
        2,
        [&](acc::Accelerator& a) {
          auto options = acc::DataLoaderOptions().batch_size(8).shuffle(true);
          auto ds = mnist_like(50);  // 50 samples, 2 × 8 per step: the last step wraps around
          auto dl = a.prepare(acc::DataLoader<decltype(ds)>(ds, options));
          static_assert(std::is_same_v<decltype(dl), std::shared_ptr<acc::DataLoader<StackedSet>>>);
          auto reference =
              a.prepare(acc::DataLoader<NormalizedPixels>(NormalizedPixels(50), options));
          EXPECT_EQ(dl->dispatches(), dispatch);
          EXPECT_EQ(dl->size(), 4);  // even_batches: ceil(50 / 16)
          for (int epoch = 0; epoch < 2; ++epoch) {
            const Batches expected = read(*reference);
            ASSERT_EQ(expected.size(), 4u);
            const std::string what = "rank " + std::to_string(a.process_index()) + ", epoch " +
                                     std::to_string(epoch) + (dispatch ? ", dispatched" : "");
            expect_same(read(*dl), expected, what);
            // Each rank has its own samples: the ranks' first batches differ.
            const at::Tensor firsts = a.gather(expected[0].target.unsqueeze(0));
            EXPECT_FALSE(torch::equal(firsts[0], firsts[1])) << what;
          }
          // The position a checkpoint saves: a fresh prepared loader resumes after batch 2 of
          // epoch 2 and gives the reference's remaining batches.
          const Batches expected = read(*reference);
          read(*dl, 2);
          auto resumed = a.prepare(acc::DataLoader<decltype(ds)>(ds, options));
          resumed->load_state_dict(dl->state_dict());
          EXPECT_EQ(resumed->position().epoch, 2);
          EXPECT_EQ(resumed->position().batches, 2);
          expect_same(read(*resumed), Batches(expected.begin() + 2, expected.end()),
                      "resumed, rank " + std::to_string(a.process_index()));
        },
        acc::AcceleratorOptions().dispatch_batches(dispatch));
}

namespace {
// A batch data set written directly (torch::data::datasets::BatchDataset, no get(i)).
struct Failing : torch::data::datasets::BatchDataset<Failing, torch::data::Example<>> {
  torch::data::Example<> get_batch(c10::ArrayRef<size_t> indices) override {
    if (indices.size() < 4) throw std::runtime_error("short batch");
    return {torch::zeros({static_cast<int64_t>(indices.size()), 2}),
            torch::zeros({static_cast<int64_t>(indices.size())})};
  }
  c10::optional<size_t> size() const override { return 10; }
};
}  // namespace

TEST(TorchDataSets, GetBatchErrorsNameTheCallAndTheSamples) {
  acc::DataLoader<Failing> loader(Failing(), acc::DataLoaderOptions().batch_size(4));
  auto it = loader.begin();
  EXPECT_EQ(it->data.sizes(), (std::vector<int64_t>{4, 2}));
  ++it;
  try {
    ++it;  // samples 8, 9
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("dataset.get_batch([8, 9]) failed"), std::string::npos)
        << e.what();
  }
}

namespace {

// ---- models: a TORCH_MODULE CNN with BatchNorm ----

struct CnnImpl : torch::nn::Module {
  CnnImpl()
      : conv(register_module("conv",
                             torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3).bias(false)))),
        bn(register_module("bn", torch::nn::BatchNorm2d(4))),
        fc(register_module("fc", torch::nn::Linear(36, 10))) {
    // Deterministic weights (the ranks are threads sharing one default generator).
    torch::NoGradGuard no_grad;
    int i = 0;
    for (auto& p : parameters()) {
      p.copy_(
          (torch::arange(p.numel(), torch::kFloat) * 0.37 + i++).sin().mul(0.3).reshape(p.sizes()));
    }
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = torch::max_pool2d(torch::relu(bn(conv(x))), 2);
    return fc(h.flatten(1));
  }
  torch::nn::Conv2d conv;
  torch::nn::BatchNorm2d bn;
  torch::nn::Linear fc;
};
TORCH_MODULE(Cnn);

struct Trained {
  std::vector<at::Tensor> state;  // parameters and buffers of rank 0, after training
  std::vector<bool> synced;       // per micro-step: sync_gradients()
  std::vector<bool> grads_agree;  // per micro-step: the ranks' gradients are equal
};

// One epoch of the mnist example's loop, with accumulate(model) over 2 micro-steps.
template <typename Model, typename Optimizer, typename Loader>
void train_epoch(acc::Accelerator& a, Model& model, Optimizer& optimizer, Loader& loader,
                 Trained& out) {
  model->train();
  for (auto& batch : *loader) {
    auto sync = a.accumulate(model);
    auto loss = torch::nll_loss(torch::log_softmax(model->forward(batch.data), 1), batch.target);
    a.backward(loss);
    const at::Tensor grads = a.gather(model->conv->weight.grad().reshape({1, -1}));
    out.synced.push_back(a.sync_gradients());
    out.grads_agree.push_back(torch::equal(grads[0], grads[grads.size(0) - 1]));
    optimizer->step();
    optimizer->zero_grad();
  }
}

template <typename Module>
std::vector<at::Tensor> state_of(const Module& module) {
  std::vector<at::Tensor> state;
  for (const auto& p : module.parameters()) state.push_back(p.detach().clone());
  for (const auto& b : module.buffers()) state.push_back(b.clone());
  return state;
}

// Trains the CNN on `ranks` ranks, made and prepared as a holder or as a std::shared_ptr.
Trained train(int ranks, bool holder) {
  Trained result;
  std::mutex mutex;
  run_ranks(
      ranks,
      [&](acc::Accelerator& a) {
        Trained mine;
        auto ds = mnist_like(64);
        acc::DataLoader<decltype(ds)> loader(ds, acc::DataLoaderOptions().batch_size(8));
        if (holder) {
          Cnn net;
          auto optimizer = std::make_shared<torch::optim::SGD>(
              net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
          auto [model, opt, dl] = a.prepare(net, optimizer, loader);
          static_assert(std::is_same_v<decltype(model), Cnn>);
          EXPECT_EQ(model.ptr(), net.ptr());  // the same module, as a holder
          EXPECT_EQ(a.unwrap_model(model).ptr(), net.ptr());
          EXPECT_EQ(a.prepare_model(model).ptr(), net.ptr());  // prepared again: unchanged
          train_epoch(a, model, opt, dl, mine);
          EXPECT_EQ(a.get_state_dict(model).size(), a.get_state_dict(net.ptr()).size());
          mine.state = state_of(*model);
        } else {
          auto net = std::make_shared<CnnImpl>();
          auto optimizer = std::make_shared<torch::optim::SGD>(
              net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
          auto [model, opt, dl] = a.prepare(net, optimizer, loader);
          static_assert(std::is_same_v<decltype(model), std::shared_ptr<CnnImpl>>);
          train_epoch(a, model, opt, dl, mine);
          mine.state = state_of(*model);
        }
        if (a.is_main_process()) {
          std::lock_guard<std::mutex> lock(mutex);
          result = std::move(mine);
        }
      },
      // Default DDP options: BatchNorm's running statistics are copied from process 0 too.
      acc::AcceleratorOptions().gradient_accumulation_steps(2));
  return result;
}

}  // namespace

TEST(TorchModuleHolders, TrainLikeSharedPointersOnOneAndTwoRanks) {
  const auto initial = state_of(*Cnn());
  for (int ranks : {1, 2}) {
    const Trained as_holder = train(ranks, true);
    const Trained as_pointer = train(ranks, false);
    const size_t steps = ranks == 1 ? 8 : 4;  // 64 samples, batches of 8
    ASSERT_EQ(as_holder.synced.size(), steps);
    ASSERT_EQ(as_holder.state.size(), as_pointer.state.size());
    ASSERT_EQ(as_holder.state.size(), initial.size());
    for (size_t i = 0; i < as_holder.state.size(); ++i) {
      EXPECT_TRUE(torch::equal(as_holder.state[i], as_pointer.state[i]))
          << ranks << " ranks, tensor " << i;
      if (initial[i].is_floating_point())  // trained (BatchNorm's counter is an integer)
        EXPECT_FALSE(torch::allclose(as_holder.state[i], initial[i])) << "tensor " << i;
    }
    for (size_t s = 0; s < steps; ++s) {
      EXPECT_EQ(as_holder.synced[s], s % 2 == 1) << "step " << s;
      EXPECT_EQ(as_pointer.synced[s], s % 2 == 1) << "step " << s;
      if (ranks == 2) {
        // accumulate(holder) keeps gradients local between synchronising steps.
        EXPECT_EQ(as_holder.grads_agree[s], as_holder.synced[s]) << "holder, step " << s;
        EXPECT_EQ(as_pointer.grads_agree[s], as_pointer.synced[s]) << "pointer, step " << s;
      }
    }
  }
}

TEST(TorchModuleHolders, EveryModelFunctionTakesEveryHandle) {
  run_ranks(2, [](acc::Accelerator& a) {
    torch::nn::Linear linear(3, 2);  // LibTorch's own holders too
    Cnn net;
    auto prepared = a.prepare_model(linear);
    static_assert(std::is_same_v<decltype(prepared), torch::nn::Linear>);
    Cnn cnn = a.prepare(net);
    std::shared_ptr<torch::nn::Module> base = cnn.ptr();
    // no_sync with each handle: the gradients stay local (they differ between the ranks).
    const auto x = torch::full({1, 3}, 1.0 + a.process_index());
    auto local = [&](auto&& handle) {
      {
        auto guard = a.no_sync(handle);
        a.backward(linear(x).sum());
      }
      const at::Tensor g = a.gather(linear->weight.grad().reshape({1, -1}));
      linear->zero_grad();
      return !torch::equal(g[0], g[1]);
    };
    EXPECT_TRUE(local(linear));
    EXPECT_TRUE(local(linear.ptr()));
    EXPECT_TRUE(local(std::shared_ptr<torch::nn::Module>(linear.ptr())));
    EXPECT_TRUE(local(*linear));
    {
      a.backward(linear(x).sum());  // outside no_sync: averaged
      const at::Tensor g = a.gather(linear->weight.grad().reshape({1, -1}));
      EXPECT_TRUE(torch::equal(g[0], g[1]));
      linear->zero_grad();
    }
    EXPECT_EQ(a.get_state_dict(cnn).size(), a.get_state_dict(base).size());
    EXPECT_EQ(a.get_state_dict(*cnn).size(), 8u);  // conv 1, bn 5 (with its counter), fc 2
    { auto join = a.join_uneven_inputs({cnn}); }
    { auto join = a.join_uneven_inputs({base}, true); }
    EXPECT_THROW(a.prepare_model(Cnn(nullptr)), acc::InvalidArgument);
    a.free_memory(cnn, prepared);
    EXPECT_TRUE(cnn.is_empty());
    EXPECT_TRUE(prepared.is_empty());
    EXPECT_FALSE(net.is_empty());  // the caller's other handles keep the module
  });
}

namespace {
// Code written for LibTorch's optimizers (as pytorch/examples' train()).
void libtorch_step(torch::optim::Optimizer& optimizer) {
  optimizer.step();
  optimizer.zero_grad();
}
// The same, for the prepared optimizer.
void accelerated_step(acc::AcceleratedOptimizer& optimizer) {
  optimizer.step();
  optimizer.zero_grad();
}
}  // namespace

TEST(PreparedOptimizer, NextToCodeForTorchOptimizers) {
  static_assert(!std::is_base_of_v<torch::optim::Optimizer, acc::AcceleratedOptimizer>);
  run_ranks(
      1,
      [](acc::Accelerator& a) {
        torch::nn::Linear linear(2, 1);
        auto sgd = std::make_shared<torch::optim::SGD>(linear->parameters(),
                                                       torch::optim::SGDOptions(0.5));
        auto [model, opt] = a.prepare(linear, sgd);
        const auto x = torch::ones({1, 2});
        const at::Tensor before = model->weight.detach().clone();
        {
          auto sync = a.accumulate(model);  // micro-step 1 of 2: no step
          ASSERT_FALSE(a.sync_gradients());
          a.backward(model(x).sum());
          accelerated_step(*opt);
          EXPECT_TRUE(torch::equal(model->weight, before));
          EXPECT_TRUE(model->weight.grad().defined());  // kept for the next micro-step
          libtorch_step(*opt->optimizer());             // the wrapped optimizer steps on every call
          EXPECT_FALSE(torch::equal(model->weight, before));
        }
        const at::Tensor after_raw = model->weight.detach().clone();
        {
          auto sync = a.accumulate(model);  // micro-step 2: steps
          ASSERT_TRUE(a.sync_gradients());
          a.backward(model(x).sum());
          accelerated_step(*opt);
          EXPECT_FALSE(torch::equal(model->weight, after_raw));
          EXPECT_FALSE(model->weight.grad().defined());
        }
      },
      acc::AcceleratorOptions().gradient_accumulation_steps(2));
}
