// A program for `accelerate-cpp launch` (multiprocess_test.cpp, RngAndProfile): checks
// across real processes what threads cannot, since they share one default CPU generator:
//   --rng            set_seed(seed, device_specific), synchronize_rng_states(state) and
//                    AcceleratorOptions::rng_types({"cpu"})
//   --profile DIR    accelerator.profile(DIR/trace.json) around a DDP training step; each
//                    process parses its own trace and looks for the step's events
// Exits 0 when every check passed, 1 naming the first that failed.
#include <accelerate/accelerate.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>

namespace acc = accelerate;

namespace {

void check(bool ok, const std::string& what) {
  if (!ok) throw std::runtime_error("check failed: " + what);
}

// Rows of `gathered` (one per process) all equal.
bool all_equal(const at::Tensor& gathered) {
  for (int64_t r = 1; r < gathered.size(0); ++r)
    if (!gathered[r].equal(gathered[0])) return false;
  return true;
}

bool all_different(const at::Tensor& gathered) {
  for (int64_t r = 1; r < gathered.size(0); ++r)
    if (gathered[r].equal(gathered[0])) return false;
  return true;
}

int check_rng() {
  acc::Accelerator a(
      acc::AcceleratorOptions().rng_types({"cpu"}).timeout(std::chrono::seconds(60)));
  const int rank = a.process_index();

  // set_seed(seed, device_specific): process k seeds with seed + k, from the launcher's RANK.
  acc::set_seed(1234, /*device_specific=*/true);
  const at::Tensor specific = torch::rand({1, 4});
  check(all_different(a.gather(specific)), "set_seed(1234, true): each process draws its own");
  torch::manual_seed(1234 + rank);
  check(torch::rand({1, 4}).equal(specific), "set_seed(1234, true) seeds with 1234 + rank");
  acc::set_seed(1234);
  check(all_equal(a.gather(torch::rand({1, 4}))), "set_seed(1234): every process draws the same");

  // The free function: different states become process 0's.
  torch::manual_seed(100 + rank);
  check(all_different(a.gather(torch::rand({1, 4}))), "seeded differently, the draws differ");
  const at::Tensor state0 = at::detail::getDefaultCPUGenerator().get_state();
  acc::synchronize_rng_states(a.state());
  const at::Tensor draw = torch::rand({1, 4});
  check(all_equal(a.gather(draw)), "after synchronize_rng_states the draws are equal");
  if (rank == 0) {
    at::Generator replay = at::detail::createCPUGenerator();
    replay.set_state(state0);
    check(at::rand({1, 4}, replay).equal(draw), "process 0 kept its own state");
  }

  // A bad type: a clear error on every process, and the processes stay in step.
  try {
    acc::synchronize_rng_states(a.state(), {"cpu", "mps"});
    check(false, "an unknown rng type throws");
  } catch (const acc::InvalidArgument& e) {
    check(std::string(e.what()).find("\"mps\"") != std::string::npos, "the error names \"mps\"");
  }

  // rng_types({"cpu"}): a prepared loader synchronises at the start of every pass.
  auto data = acc::TensorDataset(torch::arange(12, torch::kFloat).unsqueeze(1),
                                 torch::arange(12, torch::kLong));
  auto loader = a.prepare_data_loader(
      acc::DataLoader<acc::TensorDataset>(data, acc::DataLoaderOptions().batch_size(2)));
  // Without rng_types, nothing is synchronised (the control).
  acc::Accelerator plain(acc::AcceleratorOptions().timeout(std::chrono::seconds(60)));
  auto plain_loader = plain.prepare_data_loader(
      acc::DataLoader<acc::TensorDataset>(data, acc::DataLoaderOptions().batch_size(2)));
  for (int epoch = 0; epoch < 2; ++epoch) {
    torch::manual_seed(7 * rank + epoch);
    bool first = true;
    for (auto& batch : *loader) {
      (void)batch;
      if (!first) continue;
      first = false;
      check(all_equal(a.gather(torch::rand({1, 3}))),
            "rng_types cpu: draws in the pass are equal (epoch " + std::to_string(epoch) + ")");
    }
    torch::manual_seed(7 * rank + epoch);
    first = true;
    for (auto& batch : *plain_loader) {
      (void)batch;
      if (!first) continue;
      first = false;
      check(all_different(plain.gather(torch::rand({1, 3}))),
            "without rng_types the draws stay different");
    }
  }
  a.print("rng checks passed on", a.num_processes(), "processes");
  return 0;
}

struct Net : torch::nn::Module {
  Net() { fc = register_module("fc", torch::nn::Linear(8, 4)); }
  at::Tensor forward(const at::Tensor& x) { return fc(x); }
  torch::nn::Linear fc{nullptr};
};

int check_profile(const std::string& dir) {
  acc::Accelerator a(acc::AcceleratorOptions().timeout(std::chrono::seconds(60)));
  torch::manual_seed(0);
  auto model = a.prepare_model(std::make_shared<Net>());
  auto optimizer = a.prepare_optimizer(
      std::make_shared<torch::optim::SGD>(model->parameters(), torch::optim::SGDOptions(0.1)));
  const std::string path = a.profile_path(dir + "/trace.json");
  {
    auto profile = a.profile(dir + "/trace.json");
    check(profile.path() == path, "the guard writes profile_path()");
    auto x = torch::randn({4, 8});
    auto loss = model->forward(x).pow(2).mean();
    a.backward(loss);
    optimizer->step();
    optimizer->zero_grad();
  }
  std::ifstream in(path);
  check(static_cast<bool>(in), "the trace " + path + " exists");
  const nlohmann::json trace = nlohmann::json::parse(in);
  check(trace.contains("traceEvents") && trace["traceEvents"].is_array(), "traceEvents");
  bool forward = false, backward = false, allreduce = false, step = false;
  for (const auto& event : trace["traceEvents"]) {
    if (!event.contains("name") || !event["name"].is_string()) continue;
    const std::string name = event["name"];
    forward = forward || name == "aten::linear" || name == "aten::addmm";
    backward = backward || name.find("AddmmBackward") != std::string::npos;
    allreduce = allreduce || name.find("all_reduce") != std::string::npos ||
                name.find("allreduce") != std::string::npos;
    step = step || name.find("Optimizer.step") != std::string::npos;
  }
  check(forward, "the forward pass (aten::linear / aten::addmm) is in " + path);
  check(backward, "the backward pass (AddmmBackward) is in " + path);
  check(allreduce, "the gradient all-reduce is in " + path);
  check(step, "the optimizer step is in " + path);
  std::cout << "profile checks passed on rank " << a.process_index() << ": " << path << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "--rng") return check_rng();
    if (mode == "--profile" && argc > 2) return check_profile(argv[2]);
    std::cerr << "usage: rng_profile_check --rng | --profile DIR\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "rng_profile_check: " << e.what() << std::endl;
    return 1;
  }
}
