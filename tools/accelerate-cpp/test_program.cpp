// accelerate-cpp-test: the program `accelerate-cpp test` launches (Accelerate's
// `accelerate test` script). Every process checks, on the real process group of the job:
//   - the process layout (indices, main/last process);
//   - collectives: gather, reduce (sum, mean), broadcast, pad_across_processes, gather_object;
//   - the data loader's sharding: every sample seen exactly once per epoch over all processes,
//     and gather_for_metrics returns exactly the data set's size;
//   - distributed data parallel: after one step of a prepared model on different data, the
//     parameters are identical on every process and equal to the single-process result;
//   - a model with buffers (Conv2d + BatchNorm2d) trains with default options: after each
//     step every process holds process 0's running statistics.
// Exit code 0 and "Test is a success!" on the main process, or 1 with what failed.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>

namespace acc = accelerate;

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error(what);
}

struct Indices : torch::data::datasets::Dataset<Indices> {
  explicit Indices(int64_t n) : n_(n) {}
  torch::data::Example<> get(size_t i) override {
    auto v = torch::full({1}, static_cast<float>(i));
    return {v, v};
  }
  torch::optional<size_t> size() const override { return static_cast<size_t>(n_); }
  int64_t n_;
};

void test_process_layout(acc::Accelerator& a) {
  check(a.process_index() >= 0 && a.process_index() < a.num_processes(), "process_index");
  check(a.is_main_process() == (a.process_index() == 0), "is_main_process");
  check(a.is_last_process() == (a.process_index() == a.num_processes() - 1), "is_last_process");
  std::ostringstream line;
  line << "process layout: ok (" << a.num_processes() << " processes, distributed type "
       << acc::to_string(a.distributed_type()) << ", device " << a.device().str() << ")";
  a.print(line.str());
}

void test_collectives(acc::Accelerator& a) {
  const int n = a.num_processes(), r = a.process_index();
  auto mine = torch::full({2}, static_cast<float>(r), a.device());
  auto all = a.gather(mine).cpu();
  check(all.size(0) == 2 * n, "gather: size");
  for (int i = 0; i < n; ++i) check(all[2 * i].item<float>() == i, "gather: values");
  check(a.reduce(torch::ones({1}, a.device()), "sum").item<float>() == n, "reduce sum");
  check(
      std::abs(a.reduce(torch::full({1}, static_cast<float>(r), a.device()), "mean").item<float>() -
               (n - 1) / 2.0f) < 1e-6,
      "reduce mean");
  auto b = a.broadcast(torch::full({1}, static_cast<float>(r + 7), a.device()), 0);
  check(b.item<float>() == 7, "broadcast");
  auto padded = a.pad_across_processes(torch::ones({r + 1}, a.device()));
  check(padded.size(0) == n, "pad_across_processes");
  auto names = a.gather_object(std::vector<int>{r});
  check(static_cast<int>(names.size()) == n, "gather_object");
  a.print("collectives: ok");
}

void test_data_loader(acc::Accelerator& a) {
  const int64_t samples = 37;  // not a multiple of the batch or the number of processes
  acc::DataLoader<Indices> loader(Indices(samples),
                                  acc::DataLoaderOptions().batch_size(4).shuffle(true).seed(5));
  auto dl = a.prepare(loader);
  std::vector<float> seen;
  for (auto& batch : *dl) {
    auto ids = a.gather_for_metrics(batch.data.flatten());
    for (int64_t i = 0; i < ids.size(0); ++i) seen.push_back(ids[i].item<float>());
  }
  check(static_cast<int64_t>(seen.size()) == samples,
        "gather_for_metrics: " + std::to_string(seen.size()) + " samples, expected " +
            std::to_string(samples));
  std::sort(seen.begin(), seen.end());
  for (int64_t i = 0; i < samples; ++i) check(seen[i] == i, "data loader: every sample once");
  a.print("data loader: ok (each of", samples, "samples seen once)");
}

void test_ddp(acc::Accelerator& a) {
  torch::manual_seed(1);
  auto model = std::make_shared<torch::nn::LinearImpl>(3, 1);
  torch::NoGradGuard no_grad;
  auto reference = std::make_shared<torch::nn::LinearImpl>(3, 1);
  reference->weight.copy_(model->weight);
  reference->bias.copy_(model->bias);
  {
    at::AutoGradMode enable(true);
    auto sgd =
        std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
    auto [m, opt] = a.prepare(model, sgd);
    const int n = a.num_processes(), r = a.process_index();
    // Global batch: rows 0..2n-1; each process takes its 2 rows.
    auto x_all = torch::arange(6 * n, torch::kFloat).reshape({2 * n, 3}) / (6.0 * n);
    auto y_all = x_all.sum(1, true);
    auto x = x_all.narrow(0, 2 * r, 2).to(a.device()), y = y_all.narrow(0, 2 * r, 2).to(a.device());
    auto loss = torch::mse_loss(m->forward(x), y);
    a.backward(loss);
    opt->step();
    // The same step on one process with the whole batch.
    auto ref_loss = torch::mse_loss(reference->forward(x_all), y_all);
    ref_loss.backward();
    torch::optim::SGD ref_sgd(reference->parameters(), torch::optim::SGDOptions(0.1));
    ref_sgd.step();
    const double diff = (m->weight.cpu() - reference->weight).abs().max().item<double>();
    check(diff < 1e-6,
          "ddp: parameters differ from the single-process step by " + std::to_string(diff));
    auto gathered = a.gather(m->weight.detach().reshape({1, 3})).cpu();
    check((gathered - gathered[0]).abs().max().item<double>() == 0,
          "ddp: parameters differ between processes");
  }
  a.print("distributed data parallel: ok");
}

void test_batch_norm(acc::Accelerator& a) {
  torch::manual_seed(2);
  auto model = std::make_shared<torch::nn::SequentialImpl>(
      torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)), torch::nn::BatchNorm2d(4),
      torch::nn::ReLU(), torch::nn::Flatten(), torch::nn::Linear(4 * 4 * 4, 2));
  auto reference = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(model->clone());
  auto sgd =
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1));
  auto [m, opt] = a.prepare(model, sgd);
  const int n = a.num_processes(), r = a.process_index();
  auto batch_of = [](int process, int step) {
    auto g = torch::arange(8 * 36, torch::kFloat).reshape({8, 1, 6, 6});
    return torch::sin(g * (0.01 * (process + 1) + 0.1 * step));
  };
  for (int step = 0; step < 2; ++step) {
    auto x = batch_of(r, step).to(a.device());
    auto loss = m->forward(x).pow(2).mean();
    a.backward(loss);
    opt->step();
    opt->zero_grad();
    if (step == 0) {
      // Process 0's statistics of its first batch, from a copy of the model before the step.
      torch::NoGradGuard no_grad;
      reference->forward(batch_of(0, 0));
      auto expected = reference->named_buffers()["1.running_mean"];
      auto mine = m->named_buffers()["1.running_mean"].cpu();
      check(expected.abs().max().item<double>() > 1e-4, "batch norm: statistics did not move");
      check((mine - expected).abs().max().item<double>() < 1e-5,
            "batch norm: running_mean is not process 0's after the step");
    }
    torch::NoGradGuard no_grad;
    auto all = a.gather(m->named_buffers()["1.running_var"].reshape({1, 4})).cpu();
    check((all - all[0]).abs().max().item<double>() == 0,
          "batch norm: running statistics differ between processes");
  }
  a.print("batch norm under data parallelism: ok (" + std::to_string(n) + " processes)");
}

}  // namespace

int main() {
  try {
    // One optimizer step per batch, whatever gradient_accumulation_steps the configuration
    // exports (ACCELERATE_GRADIENT_ACCUMULATION_STEPS): the DDP check compares one step.
    acc::Accelerator accelerator(acc::AcceleratorOptions().gradient_accumulation_steps(1));
    test_process_layout(accelerator);
    test_collectives(accelerator);
    test_data_loader(accelerator);
    test_ddp(accelerator);
    test_batch_norm(accelerator);
    accelerator.wait_for_everyone();
    accelerator.print("Test is a success! You are ready for your distributed training!");
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "accelerate-cpp-test: FAILED: " << e.what() << std::endl;
    return 1;
  }
}
