// Every form the Accelerator refuses, in one translation unit that must not compile: each
// line marked `expect: <message>` is exactly one error, a static_assert whose message holds
// <message> and says what to write instead (check.cmake counts the errors and looks for each
// message; the rest of each line compiles). Not part of the build: the ctest
// compile_fail_refusals compiles it.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <memory>
#include <string>

namespace acc = accelerate;

namespace {

struct NetImpl : torch::nn::Module {
  NetImpl() : fc(register_module("fc", torch::nn::Linear(2, 1))) {}
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  torch::nn::Linear fc;
};
TORCH_MODULE(Net);

struct OtherImpl : torch::nn::Module {};

struct Pixels : torch::data::datasets::Dataset<Pixels> {
  torch::data::Example<> get(size_t) override { return {torch::zeros({2}), torch::zeros({})}; }
  c10::optional<size_t> size() const override { return 4; }
};

// Examples of a type the loader cannot collate.
struct Words : torch::data::datasets::Dataset<Words, std::string> {
  std::string get(size_t) override { return "word"; }
  c10::optional<size_t> size() const override { return 4; }
};

void train(torch::optim::Optimizer& optimizer) { optimizer.step(); }

}  // namespace

void refusals(acc::Accelerator& accelerator) {
  NetImpl module;
  auto shared = std::make_shared<NetImpl>();
  torch::optim::SGD sgd(shared->parameters(), torch::optim::SGDOptions(0.1));

  auto by_value =
      accelerator.prepare(module);  // expect: prepare: pass the model as std::shared_ptr<Net>
  auto raw =
      accelerator.prepare(shared.get());  // expect: a raw pointer does not say who owns the object
  auto unique = accelerator.prepare(
      std::make_unique<OtherImpl>());  // expect: pass a std::shared_ptr, not a std::unique_ptr
  auto [m, opt] =
      accelerator.prepare(shared, sgd);  // expect: pass the optimizer as a std::shared_ptr

  auto torch_loader = torch::data::make_data_loader(
      Pixels().map(torch::data::transforms::Stack<>()), torch::data::DataLoaderOptions(2));
  auto loader = accelerator.prepare(
      torch_loader);  // expect: a torch::data data loader (make_data_loader) cannot be sharded
  auto loader2 = accelerator.prepare(
      *torch_loader);  // expect: a torch::data data loader (make_data_loader) cannot be sharded
  auto dataset = accelerator.prepare(
      Pixels());  // expect: prepare takes models (std::shared_ptr or TORCH_MODULE holder)

  auto prepared = accelerator.prepare_optimizer(
      std::make_shared<torch::optim::SGD>(shared->parameters(), torch::optim::SGDOptions(0.1)));
  train(*prepared);  // expect: AcceleratedOptimizer is not a torch::optim::Optimizer

  auto guard =
      accelerator.accumulate(shared.get());  // expect: accumulate: pass the prepared models
  acc::DataLoader<Words> words{
      Words(), acc::DataLoaderOptions()};  // expect: no collation for this example type
  (void)by_value, (void)raw, (void)unique, (void)m, (void)opt, (void)loader, (void)loader2;
  (void)dataset;
}
