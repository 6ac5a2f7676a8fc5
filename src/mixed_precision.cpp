#include "accelerate/mixed_precision.h"
#include "accelerate/errors.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "compat.h"

namespace accelerate {

// ---- AutocastGuard ----

AutocastGuard::AutocastGuard(c10::DeviceType device_type, std::optional<at::ScalarType> dtype,
                             bool cache_enabled)
    : device_type_(device_type) {
  if (device_type != c10::DeviceType::CPU && device_type != c10::DeviceType::CUDA)
    throw InvalidArgument(std::string("accelerate: autocast: device type ") +
                          c10::DeviceTypeName(device_type) + " is not cpu or cuda");
  if (dtype && !compat::autocast_supports(device_type, *dtype))
    throw InvalidArgument(std::string("accelerate: autocast: this LibTorch cannot autocast ") +
                          "to " + c10::toString(*dtype) + " on " +
                          c10::DeviceTypeName(device_type, true) +
                          " (CPU autocast supports BFloat16 only before LibTorch 2.2)");
  previous_enabled_ = compat::autocast_enabled(device_type);
  previous_dtype_ = compat::autocast_dtype(device_type);
  previous_cache_ = at::autocast::is_autocast_cache_enabled();
  compat::set_autocast_enabled(device_type, dtype.has_value());
  if (dtype) compat::set_autocast_dtype(device_type, *dtype);
  at::autocast::set_autocast_cache_enabled(cache_enabled);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!active_) return;
  // As torch.autocast.__exit__: the cast cache is dropped when the outermost region ends.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast_enabled(device_type_, previous_enabled_);
  compat::set_autocast_dtype(device_type_, previous_dtype_);
  at::autocast::set_autocast_cache_enabled(previous_cache_);
}

// ---- GradScaler ----

GradScaler::GradScaler(const GradScalerOptions& options)
    : options_(options),
      growth_factor_(options.growth_factor()),
      backoff_factor_(options.backoff_factor()),
      growth_interval_(options.growth_interval()) {
  if (!(options.init_scale() > 0))
    throw InvalidArgument("accelerate: GradScaler: init_scale " +
                          std::to_string(options.init_scale()) + " is not positive");
  if (!(options.growth_factor() > 1))
    throw InvalidArgument("accelerate: GradScaler: growth_factor " +
                          std::to_string(options.growth_factor()) + " is not > 1");
  if (!(options.backoff_factor() > 0 && options.backoff_factor() < 1))
    throw InvalidArgument("accelerate: GradScaler: backoff_factor " +
                          std::to_string(options.backoff_factor()) + " is not in (0, 1)");
  if (options.growth_interval() <= 0)
    throw InvalidArgument("accelerate: GradScaler: growth_interval " +
                          std::to_string(options.growth_interval()) + " is not positive");
}

void GradScaler::lazy_init(const c10::Device& device) {
  if (scale_.defined()) return;
  scale_ = at::full({1}, loaded_scale_.value_or(options_.init_scale()),
                    at::TensorOptions().dtype(at::kFloat).device(device));
  growth_tracker_ =
      at::full({1}, loaded_tracker_, at::TensorOptions().dtype(at::kInt).device(device));
}

at::Tensor GradScaler::scale(const at::Tensor& outputs) {
  if (!options_.enabled()) return outputs;
  lazy_init(outputs.device());
  return outputs * scale_.to(outputs.device(), /*non_blocking=*/true);
}

void GradScaler::unscale_(torch::optim::Optimizer& optimizer) {
  if (!options_.enabled()) return;
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.stage == Stage::UNSCALED)
    throw std::logic_error(
        "accelerate: GradScaler: unscale_() was already called on this optimizer since the "
        "last update()");
  if (state.stage == Stage::STEPPED)
    throw std::logic_error("accelerate: GradScaler: unscale_() is being called after step()");
  if (!scale_.defined())
    throw std::logic_error(
        "accelerate: GradScaler: unscale_() before any scale(): nothing was scaled");

  // As PyTorch: the reciprocal in double, then float32.
  const at::Tensor inv_scale = scale_.to(at::kDouble).reciprocal().to(at::kFloat);
  std::vector<at::Tensor> grads;
  for (auto& group : optimizer.param_groups())
    for (auto& param : group.params()) {
      const at::Tensor& grad = param.grad();
      if (!grad.defined()) continue;
      if (grad.scalar_type() == at::kHalf)
        throw InvalidArgument(
            "accelerate: GradScaler: attempting to unscale float16 gradients: keep the "
            "parameters in float32 and let autocast compute in float16");
      grads.push_back(grad);
    }
  at::Tensor found_inf = at::zeros({1}, scale_.options());
  if (scale_.is_cuda()) {
    // The fused kernel (one launch per list, no host sync), per device and dtype.
    std::map<std::pair<int, at::ScalarType>, std::vector<at::Tensor>> groups;
    for (const auto& g : grads) groups[{g.device().index(), g.scalar_type()}].push_back(g);
    for (auto& [key, list] : groups) {
      const c10::Device device = list.front().device();
      at::Tensor local_inf = at::zeros({1}, scale_.options().device(device));
      at::_amp_foreach_non_finite_check_and_unscale_(list, local_inf, inv_scale.to(device));
      found_inf.add_(local_inf.to(found_inf.device()));
    }
  } else {
    // The same with plain operators: a gradient counts when any element is inf or NaN.
    for (auto& g : grads) {
      found_inf.add_(at::logical_not(at::isfinite(g)).any().to(at::kFloat));
      g.mul_(inv_scale.to(g.device()));
    }
  }
  state.found_inf = found_inf.clamp_max(1);
  state.stage = Stage::UNSCALED;
}

bool GradScaler::step(torch::optim::Optimizer& optimizer,
                      const torch::optim::Optimizer::LossClosure& closure) {
  if (!options_.enabled()) {
    optimizer.step(closure);
    return true;
  }
  if (closure)
    throw InvalidArgument(
        "accelerate: GradScaler: an optimizer closure is not supported with fp16 loss scaling");
  PerOptimizer& state = per_optimizer_[&optimizer];
  if (state.stage == Stage::STEPPED)
    throw std::logic_error(
        "accelerate: GradScaler: step() was already called on this optimizer since the last "
        "update()");
  if (state.stage == Stage::READY) unscale_(optimizer);  // std::map: `state` stays valid
  const bool finite = state.found_inf.item<float>() == 0.0f;
  if (finite) optimizer.step();
  state.stage = Stage::STEPPED;
  return finite;
}

void GradScaler::update(std::optional<double> new_scale) {
  if (!options_.enabled()) return;
  if (!scale_.defined()) return;  // nothing was scaled yet
  if (new_scale) {
    if (!(*new_scale > 0))
      throw InvalidArgument("accelerate: GradScaler: update(new_scale " +
                            std::to_string(*new_scale) + ") is not positive");
    scale_.fill_(*new_scale);
  } else {
    at::Tensor found = at::zeros({1}, scale_.options());
    bool any = false;
    for (auto& [opt, state] : per_optimizer_)
      if (state.found_inf.defined()) {
        found.add_(state.found_inf.to(found.device()));
        any = true;
      }
    if (!any)
      throw std::logic_error(
          "accelerate: GradScaler: update() without unscale_() or step() on any optimizer "
          "since the last update()");
    if (scale_.is_cuda()) {
      at::_amp_update_scale_(scale_, growth_tracker_, found, growth_factor_, backoff_factor_,
                             growth_interval_);
    } else if (found.item<float>() > 0) {
      scale_.mul_(backoff_factor_);
      growth_tracker_.zero_();
    } else {
      growth_tracker_.add_(1);
      if (growth_tracker_.item<int>() == growth_interval_) {
        scale_.mul_(growth_factor_);
        growth_tracker_.zero_();
      }
    }
  }
  per_optimizer_.clear();
}

double GradScaler::get_scale() const {
  if (!options_.enabled()) return 1.0;
  if (!scale_.defined()) return loaded_scale_.value_or(options_.init_scale());
  return scale_.item<double>();
}

int64_t GradScaler::growth_tracker() const {
  if (!growth_tracker_.defined()) return loaded_tracker_;
  return growth_tracker_.item<int64_t>();
}

std::map<std::string, double> GradScaler::state_dict() const {
  if (!options_.enabled()) return {};
  return {{"scale", get_scale()},
          {"growth_factor", growth_factor_},
          {"backoff_factor", backoff_factor_},
          {"growth_interval", static_cast<double>(growth_interval_)},
          {"_growth_tracker", static_cast<double>(growth_tracker())}};
}

void GradScaler::load_state_dict(const std::map<std::string, double>& state) {
  if (!options_.enabled()) return;
  if (state.empty())
    throw InvalidArgument(
        "accelerate: GradScaler: load_state_dict: the state is empty (was it saved by a "
        "disabled scaler?)");
  auto number = [&](const char* key) {
    auto it = state.find(key);
    if (it == state.end())
      throw InvalidArgument(std::string("accelerate: GradScaler: load_state_dict: key '") + key +
                            "' is missing");
    return it->second;
  };
  const double scale = number("scale");
  growth_factor_ = number("growth_factor");
  backoff_factor_ = number("backoff_factor");
  growth_interval_ = static_cast<int64_t>(number("growth_interval"));
  const auto tracker = static_cast<int64_t>(number("_growth_tracker"));
  if (scale_.defined()) {
    scale_.fill_(scale);
    growth_tracker_.fill_(tracker);
  } else {
    loaded_scale_ = scale;
    loaded_tracker_ = tracker;
  }
}

}  // namespace accelerate
