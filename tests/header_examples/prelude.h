// prelude.h - the free names the headers' examples use, declared once for the test that compiles
// them (extract_examples.py puts each example in a function after this file). Declarations
// only: the examples are compiled, never run, so nothing here is defined.
#pragma once

#include <accelerate/accelerate.h>
#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/HashStore.hpp>

#include <cstdint>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace acc = accelerate;

/// The examples' model: a module of one linear layer (`model` is a std::shared_ptr<Net>).
struct Net : torch::nn::Module {
  Net() : fc(register_module("fc", torch::nn::Linear(4, 1))) {}
  torch::Tensor forward(torch::Tensor x) { return fc->forward(x); }
  torch::nn::Linear fc;
};

/// The examples' map-style data set.
struct MyDataset : torch::data::datasets::Dataset<MyDataset> {
  torch::data::Example<> get(size_t index) override;
  c10::optional<size_t> size() const override;
};

/// The names examples use without declaring them (`using namespace` in every example's body).
namespace accelerate_examples {

extern acc::Accelerator& accelerator;
extern acc::State& state;
extern std::shared_ptr<Net> model;
extern std::shared_ptr<Net> net;
extern std::shared_ptr<torch::optim::Optimizer> optimizer;
extern std::vector<torch::Tensor> params;
extern std::shared_ptr<acc::DataLoader<acc::TensorDataset>> loader;
extern std::shared_ptr<acc::DataLoader<acc::TensorDataset>> dl;
extern std::shared_ptr<acc::DataLoader<acc::TensorDataset>> eval_loader;
extern std::shared_ptr<acc::DataLoader<acc::TensorDataset>> prepared_loader;
extern std::shared_ptr<torch::optim::LRScheduler> scheduler;
extern torch::Tensor x, y, w, b, loss;
extern int epoch, rank, n, step;
extern std::vector<uint8_t> bytes;

/// What a training run returns in the examples of find_executable_batch_size.
double run_training(int64_t batch_size);
/// A report only the main process writes.
void write_report();
/// The loss of a batch's output against its target.
torch::Tensor loss_fn(const torch::Tensor& output, const torch::Tensor& target);
/// One training step on a batch.
void train_step(const torch::Tensor& batch);

}  // namespace accelerate_examples
