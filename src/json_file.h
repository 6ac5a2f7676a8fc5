// Internal: the library's JSON files (checkpoint folders, model index files), written through
// files.h and read with errors that name the file and the key.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <type_traits>

#include "accelerate/errors.h"
#include "files.h"

namespace accelerate::detail {

/// `value` as indented JSON into `path` (a SyncedFile: inside a folder moved into place later).
inline void write_json(const std::string& path, const nlohmann::json& value) {
  write_file_synced(path, value.dump(2) + "\n", "save_state");
}

/// The JSON document in `path`; FileError "accelerate: <api>: ..." naming the file
/// when it cannot be read or parsed.
inline nlohmann::json read_json(const std::string& path, const std::string& api = "load_state") {
  const std::string text = read_file(path, api);
  try {
    return nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    throw FileError("accelerate: " + api + ": " + path + " is not valid JSON: " + e.what());
  }
}

/// `key` of the object `j` read from `file` as a T; FileError naming the file, the
/// key and what it holds when it is missing or of another type.
template <typename T>
T field(const nlohmann::json& j, const std::string& key, const std::string& file) {
  const char* expected = std::is_integral_v<T> ? "an integer" : "a value of the expected type";
  auto it = j.is_object() ? j.find(key) : j.end();
  if (it == j.end())
    throw FileError("accelerate: load_state: " + file + ": key \"" + key + "\" is missing");
  auto wrong = [&] {
    return FileError("accelerate: load_state: " + file + ": key \"" + key + "\" must be " +
                     expected + ", got " + it->dump());
  };
  if constexpr (std::is_integral_v<T>)
    if (!it->is_number_integer()) throw wrong();
  try {
    return it->get<T>();
  } catch (const nlohmann::json::exception&) {
    throw wrong();
  }
}

/// The JSON document of `path` as a T (a map of numbers, ...); errors name the file.
template <typename T>
T read_json_as(const std::string& path) {
  const nlohmann::json j = read_json(path);
  try {
    return j.get<T>();
  } catch (const nlohmann::json::exception& e) {
    throw FileError("accelerate: load_state: " + path + ": unexpected content " + j.dump() + " (" +
                    e.what() + ")");
  }
}

/// The JSON object of `path` whose values are all integers (a scheduler's or a data loader's
/// state); errors name the file and the key.
inline std::map<std::string, int64_t> read_integers(const std::string& path) {
  const nlohmann::json j = read_json(path);
  if (!j.is_object())
    throw FileError("accelerate: load_state: " + path + ": expected an object, got " + j.dump());
  std::map<std::string, int64_t> out;
  for (const auto& item : j.items()) out[item.key()] = field<int64_t>(j, item.key(), path);
  return out;
}

}  // namespace accelerate::detail
