// accelerate/checkpoint_hooks.h: hooks that save_state and load_state call before they write or
// load (Accelerate's `register_save_state_pre_hook` / `register_load_state_pre_hook`), and the
// handle that takes a hook out again.
//
// Example:
//   acc::Accelerator accelerator;
//   acc::HookHandle handle = accelerator.register_load_state_pre_hook(
//       [](std::vector<std::shared_ptr<torch::nn::Module>>& models, const std::string& dir) {
//         std::cout << "loading " << models.size() << " models from " << dir << "\n";
//       });
//   handle.remove();
#pragma once

#include <torch/nn/module.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "accelerate/model_files.h"

namespace accelerate {

class Accelerator;

/// What `register_save_state_pre_hook` / `register_load_state_pre_hook` return (PyTorch's
/// `RemovableHandle`): remove() takes the hook out; the hook stays while the handle is
/// dropped without it. Removing twice, or after the Accelerator is gone, does nothing.
class HookHandle {
 public:
  /// An empty handle: remove() does nothing.
  HookHandle() = default;
  /// Takes the hook out of its Accelerator.
  void remove() {
    if (remove_) std::exchange(remove_, nullptr)();
  }

 private:
  friend class Accelerator;
  explicit HookHandle(std::function<void()> remove) : remove_(std::move(remove)) {}
  std::function<void()> remove_;
};

/// A save_state pre-hook: given the prepared models (in the order they were prepared), the
/// state dicts about to be written for them (same order; the hook may change, add or drop
/// entries, not add or drop dicts) and the checkpoint folder.
using SaveStatePreHook =
    std::function<void(const std::vector<std::shared_ptr<torch::nn::Module>>& models,
                       std::vector<StateDict>& weights, const std::string& output_dir)>;
/// A load_state pre-hook: given the prepared models (in the order they were prepared) and the
/// checkpoint folder; setting an entry to nullptr tells load_state not to load that model
/// (the hook loaded it itself).
using LoadStatePreHook = std::function<void(std::vector<std::shared_ptr<torch::nn::Module>>& models,
                                            const std::string& input_dir)>;

}  // namespace accelerate
