// accelerate/handles.h: the handles `Accelerator::prepare` takes and gives back, and the one
// short error it gives for anything else.
//
// A model comes as a `std::shared_ptr` to a `torch::nn::Module` subclass or as a
// `TORCH_MODULE` holder (`torch::nn::ModuleHolder<NetImpl>`, e.g. `Net model;` after
// `TORCH_MODULE(Net)`, or LibTorch's own `torch::nn::Linear`); prepare gives back the same kind
// of handle to the same module, and accumulate, no_sync, join_uneven_inputs, unwrap_model,
// save_model, get_state_dict and free_memory take either. Optimizers and schedulers come as
// `std::shared_ptr`, data loaders as `accelerate::DataLoader` (by value or `std::shared_ptr`).
// Everything else is one static_assert saying what to write instead: a module by value, a raw
// pointer, a `std::unique_ptr`, an optimizer or scheduler by value, a `torch::data` data loader
// (`torch::data::make_data_loader`, which cannot be sharded).
//
// Everything here is in `accelerate::detail`: users meet it only through the Accelerator.
#pragma once

#include <torch/data/dataloader/base.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/optim/optimizer.h>
#include <torch/optim/schedulers/lr_scheduler.h>

#include <memory>
#include <type_traits>
#include <utility>

namespace accelerate::detail {

/// False, for any T: the condition of a static_assert that fires only when instantiated.
template <typename T>
inline constexpr bool kDependentFalse = false;

template <typename T>
struct IsSharedPtr : std::false_type {};
template <typename T>
struct IsSharedPtr<std::shared_ptr<T>> : std::true_type {
  using element = T;
};
template <typename T>
struct IsUniquePtr : std::false_type {};
template <typename T, typename D>
struct IsUniquePtr<std::unique_ptr<T, D>> : std::true_type {
  using element = T;
};

/// A TORCH_MODULE holder: `torch::nn::ModuleHolder<Impl>` or a class derived from it (`Net`).
template <typename T, typename = void>
struct IsModuleHolder : std::false_type {};
template <typename T>
struct IsModuleHolder<T, std::void_t<typename T::ContainedType>>
    : std::is_base_of<torch::nn::ModuleHolder<typename T::ContainedType>, T> {};

/// A std::shared_ptr to a torch::nn::Module subclass.
template <typename T, typename = void>
struct IsModulePtr : std::false_type {};
template <typename T>
struct IsModulePtr<T, std::enable_if_t<IsSharedPtr<T>::value>>
    : std::is_base_of<torch::nn::Module, typename IsSharedPtr<T>::element> {};

/// What prepare returns for a model: a std::shared_ptr to a module or a holder.
template <typename T>
inline constexpr bool kIsModelHandle = IsModulePtr<T>::value || IsModuleHolder<T>::value;
/// A model handle, or the module itself (by reference): enough to find its DDP engine or to
/// read its weights.
template <typename T>
inline constexpr bool kIsModelRef = kIsModelHandle<T> || std::is_base_of_v<torch::nn::Module, T>;

/// The module behind a model reference (see kIsModelRef), or nullptr for a null pointer or an
/// empty holder.
template <typename T>
const torch::nn::Module* module_address(const T& model) {
  if constexpr (IsModuleHolder<T>::value) {
    return model.is_empty() ? nullptr : model.get();
  } else if constexpr (IsModulePtr<T>::value) {
    return model.get();
  } else if constexpr (std::is_base_of_v<torch::nn::Module, T>) {
    return &model;
  } else {
    return nullptr;  // refused by the caller's static_assert
  }
}

/// The shared module behind a model handle (nullptr for a null pointer or an empty holder).
template <typename T>
std::shared_ptr<torch::nn::Module> module_ptr(const T& model) {
  if constexpr (IsModuleHolder<T>::value)
    return model.is_empty() ? nullptr : model.ptr();
  else
    return model;
}

/// A model handle of any kind, as an element of `join_uneven_inputs({model, ...})`.
struct ModelPtr {
  /// From a std::shared_ptr to a module.
  template <typename M, typename = std::enable_if_t<std::is_base_of_v<torch::nn::Module, M>>>
  ModelPtr(std::shared_ptr<M> model)  // NOLINT(google-explicit-constructor)
      : ptr(std::move(model)) {}
  /// From a TORCH_MODULE holder.
  template <typename H, typename = std::enable_if_t<IsModuleHolder<H>::value>, typename = void>
  ModelPtr(const H& holder)  // NOLINT(google-explicit-constructor)
      : ptr(module_ptr(holder)) {}
  /// The module (null for a null pointer or an empty holder).
  std::shared_ptr<torch::nn::Module> ptr;
};

/// A torch::data data loader (`torch::data::make_data_loader`'s StatelessDataLoader or
/// StatefulDataLoader).
template <typename D, typename B, typename R>
std::true_type is_torch_data_loader(const torch::data::DataLoaderBase<D, B, R>*);
std::false_type is_torch_data_loader(const void*);
template <typename T>
inline constexpr bool kIsTorchDataLoader =
    decltype(is_torch_data_loader(std::declval<std::remove_cv_t<T>*>()))::value;

/// What prepare returns in place of an object it refuses (after its one static_assert), so
/// that nothing else fails to compile.
struct NotPrepared {};

/// What a pointer-like `T` points to (std::shared_ptr, std::unique_ptr, raw pointer), else T.
template <typename T>
struct PointeeOf {
  using type = T;
};
template <typename T>
struct PointeeOf<std::shared_ptr<T>> {
  using type = T;
};
template <typename T, typename D>
struct PointeeOf<std::unique_ptr<T, D>> {
  using type = T;
};
template <typename T>
struct PointeeOf<T*> {
  using type = T;
};

/// The one error of prepare for an object of type `U` that it does not take, saying what to
/// write instead.
template <typename U>
NotPrepared refuse_prepare() {
  using P = std::remove_cv_t<typename PointeeOf<U>::type>;
  if constexpr (kIsTorchDataLoader<P>) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: a torch::data data loader (make_data_loader) cannot be "
                  "sharded: make an acc::DataLoader<decltype(dataset)>(dataset, "
                  "acc::DataLoaderOptions().batch_size(64).shuffle(true)) of the same data set "
                  "(.map(...) transforms and Stack included) and prepare that");
  } else if constexpr (std::is_pointer_v<U>) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: a raw pointer does not say who owns the object: pass a "
                  "std::shared_ptr (std::make_shared<T>(...)); a model may also be a "
                  "TORCH_MODULE holder");
  } else if constexpr (IsUniquePtr<U>::value) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: pass a std::shared_ptr, not a std::unique_ptr "
                  "(std::shared_ptr<T>(std::move(pointer)))");
  } else if constexpr (IsSharedPtr<U>::value) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: not a model, optimizer, data loader or scheduler pointer");
  } else if constexpr (std::is_base_of_v<torch::nn::Module, U>) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: pass the model as std::shared_ptr<Net> "
                  "(std::make_shared<Net>()) or as a TORCH_MODULE holder, not by value; for the "
                  "module of a holder, pass the holder itself or holder.ptr()");
  } else if constexpr (std::is_base_of_v<torch::optim::Optimizer, U>) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: pass the optimizer as a std::shared_ptr "
                  "(std::make_shared<torch::optim::AdamW>(model->parameters(), options)), "
                  "not by value");
  } else if constexpr (std::is_base_of_v<torch::optim::LRScheduler, U>) {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare: pass the scheduler as a std::shared_ptr "
                  "(std::make_shared<torch::optim::StepLR>(*optimizer, 10)), not by value");
  } else {
    static_assert(kDependentFalse<U>,
                  "accelerate: prepare takes models (std::shared_ptr or TORCH_MODULE holder), "
                  "optimizers and schedulers (std::shared_ptr) and data loaders "
                  "(acc::DataLoader<decltype(dataset)>, by value or std::shared_ptr)");
  }
  return {};
}

}  // namespace accelerate::detail
