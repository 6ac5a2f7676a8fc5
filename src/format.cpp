// accelerate::format's formatting, by fmt. Like logging.cpp, this file sees fmt but not LibTorch
// (see src/CMakeLists.txt).
#include "accelerate/format.h"
#include "accelerate/errors.h"

#include <fmt/args.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string_view>

namespace accelerate {
namespace {

bool is_digit(char c) { return std::isdigit(static_cast<unsigned char>(c)) != 0; }

// How many arguments `f` refers to: one per automatically numbered field ("{}", and "{}"
// nested in a specification such as "{:{}.{}f}"), else the highest explicit index + 1. Exact
// for the strings fmt accepts (which never use a brace as a fill character); for others it
// stops at the end of the string and only serves to word the error.
size_t referenced_arguments(std::string_view f) {
  size_t automatic = 0, manual = 0;
  size_t i = 0;
  // At an opening brace: reads the argument id (digits, or nothing) of the field.
  auto argument_id = [&] {
    ++i;
    if (i < f.size() && is_digit(f[i])) {
      size_t index = 0;
      while (i < f.size() && is_digit(f[i]))
        index = std::min<size_t>(index * 10 + (f[i++] - '0'), 1u << 20);
      manual = std::max(manual, index + 1);
    } else if (i < f.size() && (f[i] == ':' || f[i] == '}')) {
      ++automatic;
    }
  };
  while (i < f.size()) {
    if (f[i] == '{' && i + 1 < f.size() && f[i + 1] == '{') {
      i += 2;
    } else if (f[i] == '{') {
      argument_id();
      while (i < f.size() && f[i] != '}') {
        if (f[i] == '{') {
          argument_id();  // a nested width or precision
          while (i < f.size() && f[i] != '}') ++i;
        }
        ++i;
      }
      ++i;  // the closing brace
    } else {
      ++i;  // text, or the first of "}}"
      if (f[i - 1] == '}' && i < f.size() && f[i] == '}') ++i;
    }
  }
  return std::max(automatic, manual);
}

std::string arguments(size_t n) {
  return std::to_string(n) + (n == 1 ? " argument" : " arguments");
}

}  // namespace

std::string detail::vformat(const std::string& format_string, const std::vector<FormatArg>& args) {
  fmt::dynamic_format_arg_store<fmt::format_context> store;
  for (const auto& arg : args) std::visit([&](const auto& v) { store.push_back(v); }, arg);
  const size_t referenced = referenced_arguments(format_string);
  std::string text;
  try {
    text = fmt::vformat(format_string, store);
  } catch (const fmt::format_error& e) {
    if (referenced > args.size())
      throw InvalidArgument("accelerate: format: the format string \"" + format_string +
                            "\" needs " + arguments(referenced) + " but was given " +
                            std::to_string(args.size()));
    throw InvalidArgument("accelerate: format: the format string \"" + format_string +
                          "\" is malformed or does not fit its " + arguments(args.size()) + ": " +
                          e.what());
  }
  if (referenced != args.size())
    throw InvalidArgument("accelerate: format: the format string \"" + format_string + "\" uses " +
                          arguments(referenced) + " but was given " + std::to_string(args.size()));
  return text;
}

}  // namespace accelerate
