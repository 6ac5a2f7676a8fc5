// accelerate/format.h: text from a format string and arguments, as Python's `str.format` and
// f-strings (and fmt, whose syntax this is) write it.
//
// `format` is what a port of `accelerator.print(f"epoch {epoch} loss {loss:.4f}")` needs: `{}`
// for the next argument, `{:.4f}` / `{:.3e}` / `{:5d}` / `{:>8}` / `{:08.3f}` / `{:x}` style
// specifications, `{0}` for an argument by index, `{{` and `}}` for the braces themselves. The
// arguments are captured by value here and formatted inside the library, so this header needs
// nothing beyond the standard library (a program may use whatever fmt its LibTorch bundles).
//
// Example:
//   accelerator.print(acc::format("epoch {} loss {:.4f}", epoch, loss.item<double>()));
//   // "epoch 3 loss 0.2500"
#pragma once

#include <cstdint>
#include <iomanip>
#include <ios>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

namespace accelerate {
namespace detail {

/// One argument of a format string, captured by value and formatted inside the library.
using FormatArg =
    std::variant<bool, char, int64_t, uint64_t, float, double, std::string, const void*>;

/// Captures `value`: numbers, characters, strings and pointers keep their type (so format
/// specifications such as "{:.3f}" or "{:#x}" apply; a float stays a float, so "{}" writes
/// 0.1f as "0.1"); anything else that `operator<<` can write (a tensor, a device) becomes the
/// string it writes.
template <typename T>
FormatArg format_arg(const T& value) {
  using D = std::decay_t<T>;
  if constexpr (std::is_same_v<D, bool> || std::is_same_v<D, char> || std::is_same_v<D, float> ||
                std::is_same_v<D, double>) {
    return value;
  } else if constexpr (std::is_integral_v<D> && std::is_signed_v<D>) {
    return static_cast<int64_t>(value);
  } else if constexpr (std::is_integral_v<D>) {
    return static_cast<uint64_t>(value);
  } else if constexpr (std::is_floating_point_v<D>) {
    return static_cast<double>(value);
  } else if constexpr (std::is_enum_v<D>) {
    return static_cast<int64_t>(value);
  } else if constexpr (std::is_same_v<D, const char*> || std::is_same_v<D, char*>) {
    return value ? std::string(value) : std::string("(null)");
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    return std::string(std::string_view(value));
  } else if constexpr (std::is_pointer_v<D>) {
    return static_cast<const void*>(value);
  } else {
    std::ostringstream out;
    out << value;
    return out.str();
  }
}

/// `format_string` with `args` (see accelerate::format).
std::string vformat(const std::string& format_string, const std::vector<FormatArg>& args);

}  // namespace detail

/// `format_string` with its replacement fields filled from `args`, in fmt's (and Python's
/// `str.format`) syntax: `{}` takes the next argument, `{N}` argument N; a specification after
/// a colon sets fill and alignment (`<`, `>`, `^`), sign, `#`, zero padding, width, precision and
/// type (`d`, `x`, `o`, `b`, `c`, `e`, `f`, `g`, `s`, `p`): `{:.4f}`, `{:.2e}`, `{:5d}`,
/// `{:>10}`, `{:08.3f}`. `{{` and `}}` write a brace. Numbers, characters, strings and pointers
/// are formatted by type; anything else `operator<<` can write (a tensor, a device) is
/// formatted as the string it writes.
///
/// Throws accelerate::InvalidArgument naming the format string when it is malformed (an
/// unclosed `{`, a single `}`, an unknown specification, one that does not fit its argument's
/// type such as `{:d}` for a string) or when it does not use exactly the arguments given (too
/// few, or more than it refers to).
///
/// Example:
///   acc::format("epoch {} loss {:.4f}", 3, 0.25);   // "epoch 3 loss 0.2500"
///   acc::format("[{:>5}] {{ok}} {:08.3f}", 42, -3.14159);   // "[   42] {ok} -003.142"
template <typename... Args>
std::string format(const std::string& format_string, const Args&... args) {
  return detail::vformat(format_string, {detail::format_arg(args)...});
}

namespace detail {
/// True for what `stream << x` uses to change how a stream formats rather than to write: the
/// ios_base manipulators (std::fixed, std::hex, std::boolalpha, ...), ostream manipulators
/// given as function pointers, and what std::setprecision, std::setw, std::setfill,
/// std::setbase, std::setiosflags and std::resetiosflags return.
template <typename T>
inline constexpr bool is_stream_manipulator_v =
    std::is_same_v<T, std::ios_base& (*)(std::ios_base&)> ||
    std::is_same_v<T, std::ostream& (*)(std::ostream&)> ||
    std::is_same_v<T, decltype(std::setprecision(0))> ||
    std::is_same_v<T, decltype(std::setw(0))> || std::is_same_v<T, decltype(std::setfill(' '))> ||
    std::is_same_v<T, decltype(std::setbase(10))> ||
    std::is_same_v<T, decltype(std::setiosflags(std::ios_base::fmtflags{}))> ||
    std::is_same_v<T, decltype(std::resetiosflags(std::ios_base::fmtflags{}))>;
}  // namespace detail

}  // namespace accelerate
