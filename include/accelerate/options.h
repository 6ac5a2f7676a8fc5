// accelerate/options.h: the one way an options struct is written (as LibTorch's `TORCH_ARG`).
//
// Every options struct of the library (`AcceleratorOptions`, `DataLoaderOptions`, ...) is a
// value built with chained setters and read with getters of the same name. One line declares
// an option: `ACCELERATE_ARG(T, name)` makes a setter `name(value)` that returns the struct
// itself, a getter `name()` and the private member `name_`, whose default follows the macro.
// A `std::optional<V>` option (unset until given) is set with a V. Setters that do more than
// assign (parse a string, check a value, add to a list) are written by hand in the same shape.
// The Accelerator and the objects it makes keep their options as given: what changes while
// they run (an iteration count, a loaded scale factor) is their own state, not the options'.
//
// Example:
//   struct ClipOptions {
//     /// Largest gradient norm (default 1).
//     ACCELERATE_ARG(double, max_norm) = 1.0;
//     /// Norm type; unset: 2.
//     ACCELERATE_ARG(std::optional<double>, norm_type);
//   };
//   auto options = ClipOptions().max_norm(0.5).norm_type(1.0);
//   double m = options.max_norm();  // 0.5
#pragma once

#include <optional>
#include <utility>

namespace accelerate {
namespace detail {

// What the setter of an option of type T takes: T itself, or V for std::optional<V>.
template <typename T>
struct ArgValue {
  using type = T;
};
template <typename T>
struct ArgValue<std::optional<T>> {
  using type = T;
};

}  // namespace detail
}  // namespace accelerate

/// Declares the option `name` of type `T` (no comma: alias such a type) in an options struct:
/// a setter `name(value)` (a V for `T = std::optional<V>`) returning the struct, a getter
/// `name()` returning `const T&`, and the private member `name_`; a default may follow
/// (`ACCELERATE_ARG(int, num_steps) = 1;`). It leaves the struct's access at `private:`.
#define ACCELERATE_ARG(T, name)                                                        \
 public:                                                                               \
  auto name(typename ::accelerate::detail::ArgValue<T>::type value)->decltype(*this) { \
    this->name##_ = std::move(value);                                                  \
    return *this;                                                                      \
  }                                                                                    \
  const T& name() const noexcept { return this->name##_; }                             \
                                                                                       \
 private:                                                                              \
  T name##_
