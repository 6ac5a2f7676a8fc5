// The C++ half of the parity test against PyTorch's own DDP (ddp_parity.py): the same model,
// initial weights, data order and optimizer. Rank 0 writes the final parameters, one value a
// line, to argv[1].
//
// Usage: accelerate-cpp launch --num_processes N ddp_parity OUT [per_process_batch [engine
//        [hook [join [find_unused [model [accumulation]]]]]]]
// (engine: buckets, the default, or reducer; hook: no, fp16 or bf16, DDP's communication hook;
// join: 1 to train on uneven inputs under join_uneven_inputs, rank r taking at most
// max(1, batches - 2r) of its batches each epoch; find_unused: 1 for find_unused_parameters;
// model: mlp, the default, or bn, a model with BatchNorm2d and BatchNorm1d, whose buffers rank 0
// writes after the parameters, and whose evaluation output on the first 16 samples every rank
// r writes to OUT.r; accumulation: gradient accumulation steps, default 1)
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <fstream>
#include <iomanip>

namespace acc = accelerate;

namespace {

constexpr int64_t kSamples = 96;

struct Data : torch::data::datasets::Dataset<Data> {
  Data() {
    auto a = torch::arange(kSamples, torch::kFloat);
    x = torch::stack({torch::sin(a), torch::cos(a), torch::sin(2 * a)}, 1);
    y = (0.5 * x.select(1, 0) - 0.3 * x.select(1, 1) + 0.1).unsqueeze(1);
  }
  torch::data::Example<> get(size_t i) override { return {x[i], y[i]}; }
  c10::optional<size_t> size() const override { return kSamples; }
  at::Tensor x, y;
};

// The initial weights ddp_parity.py gives the same model: parameter k is
// 0.3 sin(i + 10 k), i = 0, 1, ... over its elements.
void set_initial_weights(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  int k = 0;
  for (auto& p : module.parameters())
    p.copy_(
        (torch::sin(torch::arange(p.numel(), torch::kFloat) + 10 * k++) * 0.3).reshape(p.sizes()));
}

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(3, 16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 1));
    set_initial_weights(*this);
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(torch::tanh(fc1(x))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};

// Conv2d + BatchNorm2d, Linear + BatchNorm1d: buffers (running statistics) under DDP.
struct BnNet : torch::nn::Module {
  BnNet() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 2, 1)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(2));
    fc1 = register_module("fc1", torch::nn::Linear(6, 16));
    bn1 = register_module("bn1", torch::nn::BatchNorm1d(16));
    fc2 = register_module("fc2", torch::nn::Linear(16, 1));
    set_initial_weights(*this);
  }
  at::Tensor forward(const at::Tensor& x) {
    auto h = torch::relu(bn2(conv(x.view({-1, 1, 1, 3})))).flatten(1);
    return fc2(torch::tanh(bn1(fc1(h))));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::BatchNorm1d bn1{nullptr};
};

void write_values(std::ofstream& out, const at::Tensor& t) {
  auto flat = t.detach().flatten().to(torch::kDouble);
  for (int64_t i = 0; i < flat.numel(); ++i) out << flat[i].item<double>() << "\n";
}

template <typename Model>
int train(acc::Accelerator& accelerator, std::shared_ptr<Model> model, const char* out_path,
          int64_t batch, bool join, bool bn) {
  auto optimizer = std::make_shared<torch::optim::SGD>(
      model->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));
  acc::DataLoader<Data> loader(Data(),
                               acc::DataLoaderOptions().batch_size(batch).shuffle(true).seed(7));
  auto [m, opt, dl] = accelerator.prepare(model, optimizer, loader);
  const int rank = accelerator.process_index();
  for (int epoch = 0; epoch < 3; ++epoch) {
    dl->set_epoch(epoch);  // a pass left early (join) does not advance it
    auto run_epoch = [&] {
      const int64_t limit = join ? std::max<int64_t>(1, dl->size() - 2 * rank) : dl->size();
      int64_t done = 0;
      for (auto& b : *dl) {
        if (done++ == limit) break;
        auto sync = accelerator.accumulate(m);
        auto loss = torch::mse_loss(m->forward(b.data), b.target);
        accelerator.backward(loss);
        opt->step();
        opt->zero_grad();
      }
    };
    if (join) {
      auto guard = accelerator.join_uneven_inputs({m}, /*even_batches=*/false);
      run_epoch();
    } else {
      run_epoch();
    }
  }
  if (accelerator.is_main_process()) {
    std::ofstream out(out_path);
    out << std::setprecision(9);
    for (const auto& p : m->parameters()) write_values(out, p);
    if (bn)
      for (const auto& b : m->buffers()) write_values(out, b);
  }
  if (bn) {
    m->eval();
    torch::NoGradGuard no_grad;
    std::ofstream out(std::string(out_path) + "." + std::to_string(rank));
    out << std::setprecision(9);
    write_values(out, m->forward(Data().x.narrow(0, 0, 16)));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: ddp_parity OUT [per_process_batch]\n";
    return 2;
  }
  const int64_t batch = argc > 2 ? std::stoll(argv[2]) : 8;
  const bool reducer = argc > 3 && std::string(argv[3]) == "reducer";
  const std::string hook = argc > 4 ? argv[4] : "no";
  const bool join = argc > 5 && std::string(argv[5]) == "1";
  const bool find_unused = argc > 6 && std::string(argv[6]) == "1";
  const std::string model_name = argc > 7 ? argv[7] : "mlp";
  const int accumulation = argc > 8 ? std::stoi(argv[8]) : 1;
  acc::Accelerator accelerator(
      acc::AcceleratorOptions()
          .gradient_accumulation_steps(accumulation)
          .ddp_options(acc::DistributedDataParallelOptions()
                           .engine(reducer ? acc::DdpEngine::Reducer : acc::DdpEngine::Buckets)
                           .comm_hook(hook == "fp16"   ? acc::CommHook::FP16
                                      : hook == "bf16" ? acc::CommHook::BF16
                                                       : acc::CommHook::NO)
                           .find_unused_parameters(find_unused)));
  if (model_name == "bn")
    return train(accelerator, std::make_shared<BnNet>(), argv[1], batch, join, true);
  return train(accelerator, std::make_shared<Net>(), argv[1], batch, join, false);
}
