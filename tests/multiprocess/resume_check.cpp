// Exact resume and crash-safe saving, with real processes (multiprocess_test.cpp runs it).
//
//   resume_check full OUT          train 3 epochs, write the final state to OUT
//   resume_check part DIR          train into epoch 1 (batch 6), save_state(DIR) and stop
//   resume_check resume DIR OUT    new process: load_state(DIR), finish, write to OUT
//                                  (a load_state error: "resume_check: rank R: <error>", exit 3)
//   resume_check save-loop DIR     save_state(DIR) over and over with a large model (killed)
//   resume_check verify DIR        load_state(DIR) and check it is one complete save
//
// OUT holds, in hexadecimal floating point: every parameter, every optimizer state tensor,
// the learning rate, and the next draws of the CPU generator, so bit-identical means equal
// files.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#include <cstdio>

#include <fstream>
#include <iostream>
#include "torch_version.h"

namespace acc = accelerate;

namespace {

struct Data : torch::data::datasets::Dataset<Data> {
  Data() {
    auto a = torch::arange(200, torch::kFloat);
    x = torch::stack({torch::sin(a), torch::cos(a), torch::sin(3 * a), torch::cos(5 * a)}, 1);
    y = (x.select(1, 0) * 0.7 - x.select(1, 2) * 0.2).unsqueeze(1);
  }
  torch::data::Example<> get(size_t i) override { return {x[i], y[i]}; }
  c10::optional<size_t> size() const override { return 200; }
  at::Tensor x, y;
};

struct Net : torch::nn::Module {
  Net() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 32));
    drop = register_module("drop", torch::nn::Dropout(0.2));  // draws from the CPU generator
    fc2 = register_module("fc2", torch::nn::Linear(32, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return fc2(drop(torch::relu(fc1(x)))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::nn::Dropout drop{nullptr};
};

// A registered object: counts the steps it saw.
struct Counter {
  int64_t seen = 0;
  std::map<std::string, int64_t> state_dict() const { return {{"seen", seen}}; }
  void load_state_dict(const std::map<std::string, int64_t>& s) { seen = s.at("seen"); }
};

void write_hex(std::ostream& out, const at::Tensor& t) {
  auto flat = t.detach().to(torch::kDouble).flatten().contiguous();
  char buffer[64];
  for (int64_t i = 0; i < flat.numel(); ++i) {
    std::snprintf(buffer, sizeof buffer, "%a\n", flat.data_ptr<double>()[i]);
    out << buffer;
  }
}

int train(const std::string& mode, const std::string& dir, const std::string& out_path) {
  acc::Accelerator accelerator(acc::AcceleratorOptions().gradient_accumulation_steps(2));
  acc::set_seed(5);
  auto model = std::make_shared<Net>();
  auto optimizer =
      std::make_shared<torch::optim::Adam>(model->parameters(), torch::optim::AdamOptions(1e-2));
  acc::DataLoader<Data> loader(Data(), acc::DataLoaderOptions().batch_size(8).shuffle(true));
  auto scheduler = acc::get_linear_schedule_with_warmup(optimizer, 3, 40);
  auto [m, opt, dl, sched] = accelerator.prepare(model, optimizer, loader, scheduler);
  auto counter = std::make_shared<Counter>();
  accelerator.register_for_checkpointing(counter);

  if (mode == "resume") {
    try {
      accelerator.load_state(dir);
    } catch (const std::exception& e) {
      // Printed before the Accelerator's shutdown, which waits for every rank: each rank's
      // line is out before any rank exits (and the launcher stops the others).
      std::cerr << "resume_check: rank " << accelerator.process_index() << ": " << e.what()
                << std::endl;
      return 3;
    }
  }
  for (int64_t epoch = dl->epoch(); epoch < 3; ++epoch) {
    m->train();
    for (auto& batch : *dl) {
      auto guard = accelerator.accumulate(m);
      accelerator.backward(torch::mse_loss(m->forward(batch.data), batch.target));
      opt->step();
      sched->step();
      opt->zero_grad();
      ++counter->seen;
      // Save after a real optimizer step (accumulated, un-stepped gradients are not part of
      // a checkpoint, in Accelerate either).
      if (mode == "part" && epoch == 1 && dl->batches_yielded() >= 5 &&
          accelerator.sync_gradients()) {
        accelerator.save_state(dir);
        return 0;
      }
    }
  }
  if (accelerator.is_main_process()) {
    std::ofstream out(out_path);
    for (const auto& p : m->parameters()) write_hex(out, p);
    for (const auto& group : opt->param_groups())
      for (const auto& p : group.params()) {
        auto it = opt->optimizer()->state().find(
            acc::testing::optimizer_state_key(*opt->optimizer(), p.unsafeGetTensorImpl()));
        if (it == opt->optimizer()->state().end()) continue;
        auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
        out << "step " << s.step() << "\n";
        write_hex(out, s.exp_avg());
        write_hex(out, s.exp_avg_sq());
      }
    out << "lr " << sched->get_last_lr()[0] << " seen " << counter->seen << " step "
        << accelerator.step() << "\n";
    write_hex(out, torch::rand({4}));
  }
  return 0;
}

// A model large enough that a save takes a while; every weight equals the save's number.
struct Big : torch::nn::Module {
  Big() { w = register_parameter("w", torch::zeros({16, 1024, 1024})); }
  at::Tensor w;
};

struct Number {
  int64_t value = 0;
  int64_t state_dict() const { return value; }
  void load_state_dict(int64_t v) { value = v; }
};

int save_loop_or_verify(const std::string& mode, const std::string& dir) {
  acc::Accelerator accelerator;
  auto model = accelerator.prepare_model(std::make_shared<Big>());
  auto number = std::make_shared<Number>();
  accelerator.register_for_checkpointing(number);
  if (mode == "verify") {
    accelerator.load_state(dir);
    const double lo = model->w.min().item<double>(), hi = model->w.max().item<double>();
    if (lo != hi || lo != static_cast<double>(number->value)) {
      std::cerr << "verify: torn checkpoint: weights in [" << lo << ", " << hi << "], saved number "
                << number->value << "\n";
      return 1;
    }
    std::cout << "verify: complete checkpoint " << number->value << std::endl;
    return 0;
  }
  for (int64_t k = 1;; ++k) {
    {
      torch::NoGradGuard no_grad;
      model->w.fill_(static_cast<double>(k));
    }
    number->value = k;
    accelerator.save_state(dir);
    std::cout << "saved " << k << std::endl;
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "full" && argc == 3) return train(mode, "", argv[2]);
    if (mode == "part" && argc == 3) return train(mode, argv[2], "");
    if (mode == "resume" && argc == 4) return train(mode, argv[2], argv[3]);
    if ((mode == "save-loop" || mode == "verify") && argc == 3)
      return save_loop_or_verify(mode, argv[2]);
  } catch (const std::exception& e) {
    std::cerr << "resume_check: " << e.what() << "\n";
    return 1;
  }
  std::cerr
      << "usage: resume_check full OUT | part DIR | resume DIR OUT | save-loop DIR | verify DIR\n";
  return 2;
}
