// accelerate/object_bytes.h: objects to bytes and back, for gather_object, broadcast_object
// and the state of objects registered for checkpointing.
//
// Built in: bool, integers, floating-point numbers, enums, std::string, std::vector,
// std::map, std::unordered_map, std::pair, std::tuple, std::optional and nested combinations.
// For a type of your own, specialise `accelerate::ObjectCodec`:
//
// Example:
//   struct Point { double x, y; };
//   template <> struct accelerate::ObjectCodec<Point> {
//     static void write(accelerate::ObjectWriter& w, const Point& p) {
//       w.write(p.x);
//       w.write(p.y);
//     }
//     static Point read(accelerate::ObjectReader& r) {
//       return {r.read<double>(), r.read<double>()};
//     }
//   };
//   auto points = accelerator.gather_object(std::vector<Point>{{1, 2}});
//
// The bytes are little-endian on every machine this library supports (x86-64, AArch64);
// a reader that runs out of bytes, or finds bytes left over, throws std::runtime_error.
#pragma once

#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace accelerate {

class ObjectWriter;
class ObjectReader;

/// How a `T` is written and read; specialise it for your own types (see the file comment).
/// The primary template handles arithmetic types and enums.
template <typename T, typename Enable = void>
struct ObjectCodec {
  static_assert(std::is_arithmetic_v<T> || std::is_enum_v<T>,
                "accelerate: no ObjectCodec for this type: specialise accelerate::ObjectCodec<T>");
  /// Appends `value`.
  static void write(ObjectWriter& writer, const T& value);
  /// Reads the next value.
  static T read(ObjectReader& reader);
};

/// Appends values to a byte string.
class ObjectWriter {
 public:
  /// Appends `value` through ObjectCodec<T>.
  template <typename T>
  void write(const T& value) {
    ObjectCodec<T>::write(*this, value);
  }
  /// Appends `size` raw bytes.
  void write_raw(const void* data, size_t size) {
    bytes_.append(static_cast<const char*>(data), size);
  }
  /// What was written so far.
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
};

/// Reads values back from a byte string written by ObjectWriter.
class ObjectReader {
 public:
  /// Reads from `bytes`; `what` names the source in errors ("gather_object", a file).
  ObjectReader(const std::string& bytes, std::string what)
      : bytes_(bytes), what_(std::move(what)) {}
  /// Reads the next `T` through ObjectCodec<T>.
  template <typename T>
  T read() {
    return ObjectCodec<T>::read(*this);
  }
  /// Reads `size` raw bytes; throws std::runtime_error if fewer are left.
  void read_raw(void* data, size_t size) {
    if (size > bytes_.size() - pos_)
      throw std::runtime_error("accelerate: " + what_ + ": the object bytes end after " +
                               std::to_string(bytes_.size()) + " bytes, " + std::to_string(size) +
                               " more were expected (wrong type?)");
    std::memcpy(data, bytes_.data() + pos_, size);
    pos_ += size;
  }
  /// Reads a length and checks that at least that many bytes could follow.
  uint64_t read_size() {
    const auto n = read<uint64_t>();
    if (n > bytes_.size() - pos_)
      throw std::runtime_error("accelerate: " + what_ + ": a length of " + std::to_string(n) +
                               " exceeds the " + std::to_string(bytes_.size() - pos_) +
                               " bytes left (wrong type?)");
    return n;
  }
  /// Throws std::runtime_error unless every byte was read.
  void expect_end() const {
    if (pos_ != bytes_.size())
      throw std::runtime_error("accelerate: " + what_ + ": " +
                               std::to_string(bytes_.size() - pos_) +
                               " bytes are left after the object (wrong type?)");
  }

 private:
  const std::string& bytes_;
  std::string what_;
  size_t pos_ = 0;
};

template <typename T, typename Enable>
void ObjectCodec<T, Enable>::write(ObjectWriter& writer, const T& value) {
  writer.write_raw(&value, sizeof(T));
}
template <typename T, typename Enable>
T ObjectCodec<T, Enable>::read(ObjectReader& reader) {
  T value;
  reader.read_raw(&value, sizeof(T));
  return value;
}

/// std::string: its length, then its bytes.
template <>
struct ObjectCodec<std::string> {
  /// Appends the value.
  static void write(ObjectWriter& w, const std::string& s) {
    w.write(static_cast<uint64_t>(s.size()));
    w.write_raw(s.data(), s.size());
  }
  /// Reads the value back.
  static std::string read(ObjectReader& r) {
    std::string s(r.read_size(), '\0');
    r.read_raw(s.data(), s.size());
    return s;
  }
};

namespace detail {
/// Writes a container's length and elements; reads them back with `insert`.
template <typename C>
struct RangeCodec {
  /// Appends the value.
  static void write(ObjectWriter& w, const C& items) {
    w.write(static_cast<uint64_t>(items.size()));
    for (const auto& item : items) w.write(item);
  }
  template <typename Insert>
  static C read(ObjectReader& r, Insert insert) {
    C items;
    for (uint64_t n = r.read_size(); n > 0; --n) insert(items, r);
    return items;
  }
};
}  // namespace detail

/// std::vector: its length, then its elements.
template <typename T, typename A>
struct ObjectCodec<std::vector<T, A>> {
  /// Appends the value.
  static void write(ObjectWriter& w, const std::vector<T, A>& v) {
    detail::RangeCodec<std::vector<T, A>>::write(w, v);
  }
  /// Reads the value back.
  static std::vector<T, A> read(ObjectReader& r) {
    return detail::RangeCodec<std::vector<T, A>>::read(
        r, [](std::vector<T, A>& v, ObjectReader& in) { v.push_back(in.read<T>()); });
  }
};

/// std::map: its length, then key, value pairs.
template <typename K, typename V, typename C, typename A>
struct ObjectCodec<std::map<K, V, C, A>> {
  /// The map type.
  using M = std::map<K, V, C, A>;
  /// Appends the value.
  static void write(ObjectWriter& w, const M& m) { detail::RangeCodec<M>::write(w, m); }
  /// Reads the value back.
  static M read(ObjectReader& r) {
    return detail::RangeCodec<M>::read(
        r, [](M& m, ObjectReader& in) { m.insert(in.read<std::pair<K, V>>()); });
  }
};

/// std::unordered_map: its length, then key, value pairs.
template <typename K, typename V, typename H, typename E, typename A>
struct ObjectCodec<std::unordered_map<K, V, H, E, A>> {
  /// The map type.
  using M = std::unordered_map<K, V, H, E, A>;
  /// Appends the value.
  static void write(ObjectWriter& w, const M& m) { detail::RangeCodec<M>::write(w, m); }
  /// Reads the value back.
  static M read(ObjectReader& r) {
    return detail::RangeCodec<M>::read(
        r, [](M& m, ObjectReader& in) { m.insert(in.read<std::pair<K, V>>()); });
  }
};

/// std::pair: first, then second.
template <typename A, typename B>
struct ObjectCodec<std::pair<A, B>> {
  /// Appends the value.
  static void write(ObjectWriter& w, const std::pair<A, B>& p) {
    w.write(p.first);
    w.write(p.second);
  }
  /// Reads the value back.
  static std::pair<A, B> read(ObjectReader& r) {
    auto first = r.read<std::remove_const_t<A>>();
    auto second = r.read<B>();
    return {std::move(first), std::move(second)};
  }
};

/// std::tuple: its elements in order.
template <typename... Ts>
struct ObjectCodec<std::tuple<Ts...>> {
  /// Appends the value.
  static void write(ObjectWriter& w, const std::tuple<Ts...>& t) {
    std::apply([&](const auto&... item) { (w.write(item), ...); }, t);
  }
  /// Reads the value back.
  static std::tuple<Ts...> read(ObjectReader& r) { return std::tuple<Ts...>{r.read<Ts>()...}; }
};

/// std::optional: a flag, then the value if there is one.
template <typename T>
struct ObjectCodec<std::optional<T>> {
  /// Appends the value.
  static void write(ObjectWriter& w, const std::optional<T>& o) {
    w.write(o.has_value());
    if (o) w.write(*o);
  }
  /// Reads the value back.
  static std::optional<T> read(ObjectReader& r) {
    if (!r.read<bool>()) return std::nullopt;
    return r.read<T>();
  }
};

/// `object` as bytes.
template <typename T>
std::string to_object_bytes(const T& object) {
  ObjectWriter writer;
  writer.write(object);
  return std::move(writer.bytes());
}

/// The `T` that to_object_bytes wrote into `bytes`; `what` names the source in errors.
template <typename T>
T from_object_bytes(const std::string& bytes, const std::string& what) {
  ObjectReader reader(bytes, what);
  T value = reader.read<T>();
  reader.expect_end();
  return value;
}

}  // namespace accelerate
