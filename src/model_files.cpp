// Model files as Accelerate's save_model writes them and load_checkpoint_in_model reads them:
// safetensors or torch.save files, sharded as huggingface_hub shards them, with their index,
// and strict loading into a module (model_files.h).
#include "accelerate/model_files.h"
#include "accelerate/errors.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <caffe2/serialize/inline_container.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <unordered_map>

#include "accelerate/safetensors.h"

#include "files.h"
#include "helpers.h"
#include "json_file.h"

namespace fs = std::filesystem;

namespace accelerate {
namespace {

using detail::ends_with;
using detail::shape_string;
using detail::storage_id;
using detail::trim;

constexpr const char* kSafeWeights = "model.safetensors";
constexpr const char* kSafeIndex = "model.safetensors.index.json";
constexpr const char* kBinWeights = "pytorch_model.bin";
constexpr const char* kBinIndex = "pytorch_model.bin.index.json";

// Two tensors with the same key are the same view of the same memory (tied weights).
using ViewKey = std::tuple<const void*, int64_t, std::vector<int64_t>, std::vector<int64_t>, int>;
ViewKey view_key(const at::Tensor& t) {
  return {storage_id(t), t.storage_offset(), t.sizes().vec(), t.strides().vec(),
          static_cast<int>(t.scalar_type())};
}

int64_t tensor_nbytes(const at::Tensor& t) {
  return t.numel() * static_cast<int64_t>(t.element_size());
}
// ---------------------------------------------------------------------------------------------
// Sharding, as huggingface_hub's split_state_dict_into_shards_factory.

struct Split {
  std::vector<std::vector<size_t>> shards;  // indices into the state dict
  int64_t total_size = 0;
};

Split split_into_shards(const StateDict& state_dict, int64_t max_shard_size) {
  Split split;
  std::vector<size_t> current;
  int64_t current_size = 0;
  std::map<const void*, size_t> group_of_storage;
  std::vector<std::vector<size_t>> groups;  // tensors sharing a storage, first one first
  for (size_t i = 0; i < state_dict.size(); ++i) {
    const at::Tensor& t = state_dict[i].second;
    auto [it, inserted] = group_of_storage.emplace(storage_id(t), groups.size());
    if (!inserted) {
      groups[it->second].push_back(i);
      continue;
    }
    groups.push_back({i});
    const int64_t size = tensor_nbytes(t);
    if (size > max_shard_size) {
      split.total_size += size;
      split.shards.push_back({i});
      continue;
    }
    if (current_size + size > max_shard_size) {
      split.shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
    split.total_size += size;
  }
  if (!current.empty()) split.shards.push_back(std::move(current));
  for (const auto& group : groups) {
    if (group.size() < 2) continue;
    for (auto& shard : split.shards) {
      if (std::find(shard.begin(), shard.end(), group[0]) != shard.end()) {
        shard.insert(shard.end(), group.begin() + 1, group.end());
        break;
      }
    }
  }
  if (split.shards.empty()) split.shards.emplace_back();  // an empty model: one empty file
  return split;
}

std::string shard_name(const std::string& stem, const std::string& extension, size_t index,
                       size_t count) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "-%05zu-of-%05zu", index + 1, count);
  return stem + buffer + extension;
}

// Removes the checkpoint files of `dir` that the save that just wrote `written` did not.
void remove_stale_files(const fs::path& dir, const std::set<std::string>& written) {
  static const std::regex kShard(
      R"((model-\d{5}-of-\d{5}\.safetensors|pytorch_model-\d{5}-of-\d{5}\.bin))");
  static const std::set<std::string> kSingle = {kSafeWeights, kSafeIndex, kBinWeights, kBinIndex};
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const std::string name = entry.path().filename().string();
    if (written.count(name)) continue;
    if (kSingle.count(name) || std::regex_match(name, kShard)) fs::remove(entry.path(), ec);
  }
}

// ---------------------------------------------------------------------------------------------
// Reading checkpoints.

struct Loaded {
  std::string file;
  at::Tensor tensor;
};

bool is_zip(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "PK\x03\x04", 4) == 0;
}

void load_file_into(const std::string& file, std::map<std::string, Loaded>& out) {
  auto add = [&](const std::string& key, at::Tensor tensor) {
    auto [it, inserted] = out.emplace(key, Loaded{file, std::move(tensor)});
    if (!inserted) {
      throw FileError("accelerate: load_checkpoint_in_model: tensor '" + key + "' is in both " +
                      it->second.file + " and " + file);
    }
  };
  if (!ends_with(file, ".safetensors") && is_zip(file)) {
    for (auto& [key, tensor] : load_pytorch_bin(file)) add(key, tensor);
    return;
  }
  SafetensorsFile st(file);
  for (const auto& [key, info] : st.header().tensors) add(key, st.get(key));
}

std::map<std::string, Loaded> load_index(const fs::path& index_path) {
  const std::string index = index_path.string();
  nlohmann::json json = detail::read_json(index, "load_checkpoint_in_model");
  if (!json.is_object() || !json.contains("weight_map") || !json["weight_map"].is_object()) {
    throw FileError("accelerate: load_checkpoint_in_model: index " + index +
                    " has no \"weight_map\" object");
  }
  std::vector<std::string> files;
  for (const auto& item : json["weight_map"].items()) {
    if (!item.value().is_string()) {
      throw FileError("accelerate: load_checkpoint_in_model: index " + index + " maps '" +
                      item.key() + "' to a non-string");
    }
    const std::string file = item.value().get<std::string>();
    const fs::path rel(file);
    if (file.empty() || rel.is_absolute() ||
        std::any_of(rel.begin(), rel.end(), [](const fs::path& p) { return p == ".."; })) {
      throw FileError("accelerate: load_checkpoint_in_model: index " + index + " names file '" +
                      file + "' outside its folder");
    }
    if (std::find(files.begin(), files.end(), file) == files.end()) files.push_back(file);
  }
  std::map<std::string, Loaded> out;
  for (const auto& file : files) load_file_into((index_path.parent_path() / file).string(), out);
  for (const auto& item : json["weight_map"].items()) {
    const std::string file = (index_path.parent_path() / item.value().get<std::string>()).string();
    auto it = out.find(item.key());
    if (it == out.end() || it->second.file != file) {
      throw FileError("accelerate: load_checkpoint_in_model: index " + index + " maps '" +
                      item.key() + "' to " + file + ", which does not hold it");
    }
  }
  return out;
}

std::map<std::string, Loaded> load_entries(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    const fs::path dir(path);
    if (fs::exists(dir / kSafeWeights)) return load_entries((dir / kSafeWeights).string());
    if (fs::exists(dir / kSafeIndex)) return load_index(dir / kSafeIndex);
    if (fs::exists(dir / kBinWeights)) return load_entries((dir / kBinWeights).string());
    if (fs::exists(dir / kBinIndex)) return load_index(dir / kBinIndex);
    throw FileError("accelerate: load_checkpoint_in_model: folder " + path + " holds none of " +
                    kSafeWeights + ", " + kSafeIndex + ", " + kBinWeights + ", " + kBinIndex);
  }
  if (!fs::exists(path, ec))
    throw FileError("accelerate: load_checkpoint_in_model: " + path + " does not exist");
  if (ends_with(path, ".index.json")) return load_index(fs::path(path));
  std::map<std::string, Loaded> out;
  load_file_into(path, out);
  return out;
}

void collect_state_dict(const torch::nn::Module& module, const std::string& prefix,
                        StateDict& out) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    if (p.value().defined()) out.emplace_back(prefix + p.key(), p.value().detach());
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    if (b.value().defined()) out.emplace_back(prefix + b.key(), b.value().detach());
  }
  for (const auto& child : module.named_children()) {
    collect_state_dict(*child.value(), prefix + child.key() + ".", out);
  }
}

}  // namespace

int64_t convert_file_size_to_int(const std::string& size) {
  auto bad = [&]() {
    return InvalidArgument("accelerate: max_shard_size: '" + size +
                           "' is not a valid size; use bytes (\"42\") or a number with a "
                           "unit (\"5GB\", \"500MB\", \"100KB\", \"1GiB\")");
  };
  const std::string s = trim(size);
  if (s.empty()) throw bad();
  if (std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    try {
      return std::stoll(s);
    } catch (const std::out_of_range&) {
      throw bad();
    }
  }
  std::string upper = s;
  std::transform(upper.begin(), upper.end(), upper.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  struct Unit {
    const char* suffix;
    double multiplier;
    bool decimal;
  };
  static const Unit kUnits[] = {{"GIB", 1073741824.0, false},
                                {"MIB", 1048576.0, false},
                                {"KIB", 1024.0, false},
                                {"GB", 1e9, true},
                                {"MB", 1e6, true},
                                {"KB", 1e3, true}};
  for (const auto& unit : kUnits) {
    if (!ends_with(upper, unit.suffix)) continue;
    const std::string number = trim(s.substr(0, s.size() - std::strlen(unit.suffix)));
    if (number.empty() || number.find_first_not_of("0123456789.eE+-") != std::string::npos) {
      throw bad();
    }
    char* end = nullptr;
    const double value = std::strtod(number.c_str(), &end);
    if (end != number.c_str() + number.size() || !std::isfinite(value) || value < 0) throw bad();
    const double bytes = value * unit.multiplier;
    if (bytes >= 9.2e18) throw bad();
    auto result = static_cast<int64_t>(bytes);
    if (unit.decimal && s.back() == 'b') result /= 8;  // "Gb": gigabits, as Accelerate
    return result;
  }
  throw bad();
}

SaveModelOptions& SaveModelOptions::max_shard_size(int64_t bytes) {
  if (bytes < 0) {
    throw InvalidArgument("accelerate: max_shard_size: " + std::to_string(bytes) +
                          " bytes is negative");
  }
  max_shard_size_ = bytes;
  return *this;
}

StateDict model_state_dict(const torch::nn::Module& module) {
  StateDict out;
  collect_state_dict(module, "", out);
  return out;
}
void save_state_dict_files(const StateDict& state_dict, const std::string& dir,
                           const SaveModelOptions& options) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw FileError("accelerate: save_model: " + dir + " is a file, not a folder");
  }
  fs::create_directories(dir, ec);
  if (ec) throw FileError("accelerate: save_model: cannot create " + dir + ": " + ec.message());

  std::set<std::string> names;
  for (const auto& entry : state_dict) {
    if (!names.insert(entry.first).second) {
      throw InvalidArgument("accelerate: save_model: duplicate name '" + entry.first + "'");
    }
  }
  StateDict to_save;
  if (options.safe_serialization()) {
    // Tied weights once, under their first name (Accelerate removes the later names).
    std::set<ViewKey> seen;
    for (const auto& entry : state_dict) {
      if (seen.insert(view_key(entry.second)).second) to_save.push_back(entry);
    }
  } else {
    to_save = state_dict;
  }
  const Split split = split_into_shards(to_save, options.max_shard_size());
  const bool safe = options.safe_serialization();
  const std::string stem = safe ? "model" : "pytorch_model";
  const std::string extension = safe ? ".safetensors" : ".bin";
  const size_t count = split.shards.size();

  std::set<std::string> written;
  nlohmann::json weight_map = nlohmann::json::object();
  for (size_t s = 0; s < count; ++s) {
    const std::string file = count == 1 ? stem + extension : shard_name(stem, extension, s, count);
    const std::string file_path = (fs::path(dir) / file).string();
    StateDict shard;
    for (size_t index : split.shards[s]) {
      shard.push_back(to_save[index]);
      weight_map[to_save[index].first] = file;
    }
    if (safe) {
      std::map<std::string, at::Tensor> tensors(shard.begin(), shard.end());
      save_safetensors(tensors, file_path);
    } else {
      save_pytorch_bin(shard, file_path);
    }
    written.insert(file);
  }
  if (count > 1) {
    nlohmann::json index = {{"metadata", {{"total_size", split.total_size}}},
                            {"weight_map", weight_map}};
    const std::string index_name = safe ? kSafeIndex : kBinIndex;
    detail::write_file_atomically((fs::path(dir) / index_name).string(),
                                  index.dump(2, ' ', true) + "\n", "save_model");
    written.insert(index_name);
  }
  remove_stale_files(dir, written);
}

void save_model_files(const torch::nn::Module& model, const std::string& dir,
                      const SaveModelOptions& options) {
  save_state_dict_files(model_state_dict(model), dir, options);
}

std::map<std::string, at::Tensor> load_state_dict_files(const std::string& path) {
  std::map<std::string, at::Tensor> out;
  for (auto& [key, loaded] : load_entries(path)) out.emplace(key, std::move(loaded.tensor));
  return out;
}

void load_checkpoint_in_model(torch::nn::Module& model, const std::string& path) {
  const std::map<std::string, Loaded> checkpoint = load_entries(path);
  const StateDict targets = model_state_dict(model);

  // Tied tensors: any name of the group satisfies all of them.
  std::map<ViewKey, std::string> source_of_view;
  std::set<std::string> model_keys;
  for (const auto& [name, tensor] : targets) {
    model_keys.insert(name);
    if (checkpoint.count(name)) source_of_view.emplace(view_key(tensor), name);
  }
  std::vector<std::string> missing, unexpected, mismatched;
  std::vector<std::pair<at::Tensor, const Loaded*>> copies;
  for (const auto& [name, tensor] : targets) {
    auto it = checkpoint.find(name);
    if (it == checkpoint.end()) {
      auto alias = source_of_view.find(view_key(tensor));
      if (alias == source_of_view.end()) {
        missing.push_back("'" + name + "'");
        continue;
      }
      it = checkpoint.find(alias->second);
    }
    const at::Tensor& source = it->second.tensor;
    if (source.sizes() != tensor.sizes()) {
      mismatched.push_back("'" + it->first + "' has shape " + shape_string(source.sizes()) +
                           " in " + it->second.file + " but the model's '" + name + "' is " +
                           shape_string(tensor.sizes()));
      continue;
    }
    copies.emplace_back(tensor, &it->second);
  }
  for (const auto& [name, loaded] : checkpoint) {
    if (!model_keys.count(name)) unexpected.push_back("'" + name + "' (in " + loaded.file + ")");
  }
  if (!missing.empty() || !unexpected.empty() || !mismatched.empty()) {
    auto join = [](const std::vector<std::string>& items) {
      std::string s;
      for (size_t i = 0; i < items.size(); ++i) s += (i ? ", " : "") + items[i];
      return s;
    };
    std::string message =
        "accelerate: load_checkpoint_in_model: " + path + " does not match the model:";
    if (!missing.empty()) message += " missing keys " + join(missing) + ";";
    if (!unexpected.empty()) message += " unexpected keys " + join(unexpected) + ";";
    if (!mismatched.empty()) message += " shape mismatch: " + join(mismatched) + ";";
    message.pop_back();
    throw FileError(message);
  }
  c10::NoGradGuard no_grad;
  for (auto& [target, loaded] : copies) target.copy_(loaded->tensor);
}

}  // namespace accelerate
