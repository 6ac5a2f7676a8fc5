// accelerate/mixed_precision.h: the autocast guard and the fp16 gradient scaler.
//
// `AutocastGuard` is Python's `with torch.autocast(device_type, dtype):` as an RAII object;
// `Accelerator::autocast()` returns one set up for the accelerator's mixed-precision mode.
// LibTorch modules cannot be wrapped the way Accelerate wraps `model.forward` in Python, so
// hold the guard around the forward pass:
//
//   acc::Accelerator accelerator(acc::AcceleratorOptions().mixed_precision("bf16"));
//   ...
//   {
//     auto amp = accelerator.autocast();           // bf16 matmuls/convolutions inside
//     loss = torch::mse_loss(model->forward(x), y);
//   }
//   accelerator.backward(loss);
//
// `GradScaler` is PyTorch's `torch.cuda.amp.GradScaler` (dynamic loss scaling for fp16): the
// loss is multiplied by the scale before backward, the gradients are divided by it before the
// optimizer step, a step whose gradients hold inf/NaN is skipped and the scale halved, and the
// scale doubles after `growth_interval` clean steps. With mixed_precision("fp16") the
// Accelerator owns one and drives it from backward() and the prepared optimizers' step().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <torch/optim/optimizer.h>

#include <map>
#include <optional>

#include "accelerate/options.h"

namespace accelerate {

/// RAII: while it lives, eligible operations on `device_type` run in `dtype` (LibTorch's
/// autocast); restores the previous autocast setting on exit. With no dtype, autocast is
/// turned off inside the scope. Nests. Not copyable or movable.
class [[nodiscard]] AutocastGuard {
 public:
  /// Enters autocast on `device_type` (kCPU or kCUDA) with `dtype` (kBFloat16, kHalf), or
  /// turns it off when `dtype` is empty. Throws std::invalid_argument for another device type,
  /// or for a dtype this LibTorch cannot autocast to on that device (fp16 on the CPU with
  /// LibTorch 1.13).
  AutocastGuard(c10::DeviceType device_type, std::optional<at::ScalarType> dtype,
                bool cache_enabled = true);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;
  /// A guard that changes nothing (mixed precision "no").
  static AutocastGuard none() { return AutocastGuard(); }

 private:
  AutocastGuard() : active_(false) {}
  bool active_ = true;
  c10::DeviceType device_type_ = c10::DeviceType::CPU;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
  bool previous_cache_ = true;
};

/// Options of a `GradScaler` (PyTorch's defaults), with chained setters.
struct GradScalerOptions {
  /// The first scale (PyTorch: 2^16).
  ACCELERATE_ARG(double, init_scale) = 65536.0;
  /// Factor of the scale after growth_interval clean steps (> 1).
  ACCELERATE_ARG(double, growth_factor) = 2.0;
  /// Factor of the scale after a step with inf/NaN gradients (in (0, 1)).
  ACCELERATE_ARG(double, backoff_factor) = 0.5;
  /// Clean steps in a row before the scale grows.
  ACCELERATE_ARG(int64_t, growth_interval) = 2000;
  /// A disabled scaler leaves losses and steps untouched.
  ACCELERATE_ARG(bool, enabled) = true;
};

/// Dynamic loss scaling for fp16 training (PyTorch's GradScaler). Per step: scale(loss)
/// .backward(); optionally unscale_(optimizer) (e.g. before clipping); step(optimizer);
/// update(). The scale lives on the device of the first scaled loss.
class GradScaler {
 public:
  /// Throws std::invalid_argument for a non-positive init_scale or growth_interval, a
  /// growth_factor <= 1 or a backoff_factor outside (0, 1).
  explicit GradScaler(const GradScalerOptions& options = GradScalerOptions());

  /// `outputs` multiplied by the current scale (unchanged when disabled).
  at::Tensor scale(const at::Tensor& outputs);
  /// Divides the gradients of `optimizer`'s parameters by the scale in place and records
  /// whether any is inf or NaN. At most once per optimizer between two update() calls; throws
  /// std::logic_error otherwise, and std::invalid_argument for fp16 gradients (the parameters
  /// of an fp16-trained model must stay float32).
  void unscale_(torch::optim::Optimizer& optimizer);
  /// Unscales (if not done yet) and steps `optimizer` unless its gradients hold inf/NaN.
  /// Returns true when it stepped. A closure is not supported (std::invalid_argument).
  bool step(torch::optim::Optimizer& optimizer,
            const torch::optim::Optimizer::LossClosure& closure = nullptr);
  /// Updates the scale after the step: times backoff_factor when any unscaled gradient held
  /// inf/NaN, else times growth_factor after growth_interval clean steps in a row. With
  /// `new_scale`, sets it instead.
  void update(std::optional<double> new_scale = std::nullopt);

  /// The current scale (1.0 when disabled).
  double get_scale() const;
  /// Steps without inf/NaN since the last change of scale.
  int64_t growth_tracker() const;
  /// False for a scaler built with enabled(false).
  bool is_enabled() const { return options_.enabled(); }
  /// The options given at construction, with the factors and interval in force (after
  /// load_state_dict, the loaded ones).
  GradScalerOptions options() const {
    return GradScalerOptions(options_)
        .growth_factor(growth_factor_)
        .backoff_factor(backoff_factor_)
        .growth_interval(growth_interval_);
  }

  /// PyTorch's state_dict keys: scale, growth_factor, backoff_factor, growth_interval,
  /// _growth_tracker (empty when disabled).
  std::map<std::string, double> state_dict() const;
  /// Restores state_dict(). Throws std::invalid_argument naming a missing key.
  void load_state_dict(const std::map<std::string, double>& state);

 private:
  enum class Stage { READY, UNSCALED, STEPPED };
  struct PerOptimizer {
    Stage stage = Stage::READY;
    at::Tensor found_inf;  // float32 [1], > 0 when an unscaled gradient was not finite
  };
  void lazy_init(const c10::Device& device);

  const GradScalerOptions options_;  // as given; the factors below change with load_state_dict
  double growth_factor_;
  double backoff_factor_;
  int64_t growth_interval_;
  at::Tensor scale_;                    // float32 [1]
  at::Tensor growth_tracker_;           // int32 [1]
  std::optional<double> loaded_scale_;  // from load_state_dict, before the first scale()
  int64_t loaded_tracker_ = 0;
  std::map<const torch::optim::Optimizer*, PerOptimizer> per_optimizer_;
};

}  // namespace accelerate
