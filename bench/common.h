// bench/common.h: small helpers shared by the benchmark programs (not part of the library).
//
// - Args: `--name value` / `--flag` parsing without dependencies.
// - realtime(): CLOCK_REALTIME in seconds, comparable across processes (start-up stamps).
// - Timer: steady_clock seconds.
// - Synthetic: the MLP job's data set (8,192 samples of 64 features, one target), identical
//   in every program and in bench/python/mlp.py (generated from a fixed formula, no RNG
//   shared between C++ and Python is needed: only its size and shape matter for speed).
//   Per sample (`get` and a stack); bench_mlp's `accel-batched` mode loads the same tensors
//   through the library's `accelerate::TensorDataset` (one index_select per batch).
// - Mlp: 64-256-256-1 with ReLU.
// - env_int / env_str: the torchrun variables for the hand-written c10d loops.
#pragma once

#include <algorithm>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bench {

/// Seconds since the epoch (CLOCK_REALTIME), for stamps compared across processes.
inline double realtime() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Monotonic seconds since construction.
struct Timer {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  void reset() { start = std::chrono::steady_clock::now(); }
};

/// `--key value` and `--flag` arguments.
class Args {
 public:
  Args(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) != 0) throw std::invalid_argument("unexpected argument " + a);
      a = a.substr(2);
      if (i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0)
        values_[a] = argv[++i];
      else
        values_[a] = "1";
    }
  }
  std::string str(const std::string& key, const std::string& fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : it->second;
  }
  long num(const std::string& key, long fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : std::stol(it->second);
  }
  double real(const std::string& key, double fallback) const {
    auto it = values_.find(key);
    return it == values_.end() ? fallback : std::stod(it->second);
  }
  bool flag(const std::string& key) const { return values_.count(key) > 0; }

 private:
  std::map<std::string, std::string> values_;
};

/// The MLP job's data: x [n, 64] in [-1, 1], y [n, 1] = a smooth function of x.
inline std::pair<at::Tensor, at::Tensor> synthetic_data(int64_t n, int64_t features = 64) {
  auto i = torch::arange(n * features, torch::kFloat32).reshape({n, features});
  auto x = torch::sin(i * 0.7311f + 0.1f);
  auto w = torch::cos(torch::arange(features, torch::kFloat32) * 1.3f).unsqueeze(1);
  auto y = torch::tanh(x.matmul(w) * 0.25f) + 0.1f * torch::sin(i.narrow(1, 0, 1) * 0.37f);
  return {x.contiguous(), y.contiguous()};
}

/// Map-style data set over two tensors (the user's data set in every variant).
struct Synthetic : torch::data::datasets::Dataset<Synthetic> {
  Synthetic(at::Tensor x_, at::Tensor y_) : x(std::move(x_)), y(std::move(y_)) {}
  torch::data::Example<> get(size_t i) override {
    const auto k = static_cast<int64_t>(i);
    return {x[k], y[k]};
  }
  c10::optional<size_t> size() const override { return static_cast<size_t>(x.size(0)); }
  at::Tensor x, y;
};

/// 64-256-256-1 with ReLU.
struct Mlp : torch::nn::Module {
  explicit Mlp(int64_t in = 64, int64_t hidden = 256) {
    fc1 = register_module("fc1", torch::nn::Linear(in, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, hidden));
    fc3 = register_module("fc3", torch::nn::Linear(hidden, 1));
  }
  at::Tensor forward(const at::Tensor& x) { return fc3(torch::relu(fc2(torch::relu(fc1(x))))); }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

inline int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : fallback;
}
inline std::string env_str(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : fallback;
}

/// Path of the first mapped file whose name contains `needle` (e.g. which libblas is loaded).
inline std::string mapped_library(const std::string& needle) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    std::string path = line.substr(slash);
    auto base = path.substr(path.rfind('/') + 1);
    if (base.find(needle) != std::string::npos) return path;
  }
  return "";
}

/// Prints `STAMP <name> <realtime>` (parsed by bench/driver.py).
inline void stamp(const char* name) {
  std::printf("STAMP %s %.6f\n", name, realtime());
  std::fflush(stdout);
}

/// Median of `v` (the mean of the two middle values for an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace bench
