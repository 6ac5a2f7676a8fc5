// accelerate/model_files.h: model weights on disk, as Accelerate's `save_model` and
// `load_checkpoint_in_model` write and read them.
//
// `save_model_files` writes a model's state dict (the keys Python's `state_dict()` would use)
// into a folder that Python's `transformers`/`accelerate` read: `model.safetensors`, or past
// `max_shard_size` the shards `model-00001-of-0000N.safetensors` plus
// `model.safetensors.index.json`; without safe serialization `pytorch_model.bin` (and its
// shards and index) that Python's `torch.load` reads, with `weights_only=True` too.
// `load_checkpoint_in_model` reads any of these (or such files written by Python) back into a
// model. `Accelerator::save_model` is built on `save_model_files`.
//
// Example:
//   namespace acc = accelerate;
//   auto net = std::make_shared<Net>();
//   acc::save_model_files(*net, "out", acc::SaveModelOptions().max_shard_size("200MB"));
//   auto copy = std::make_shared<Net>();
//   acc::load_checkpoint_in_model(*copy, "out");   // same outputs as net
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "accelerate/options.h"

namespace accelerate {

/// A state dict: named tensors in the order Python's `state_dict()` gives them.
using StateDict = std::vector<std::pair<std::string, at::Tensor>>;

/// Bytes in a size string, as Accelerate's `convert_file_size_to_int`: "10GB" is
/// 10,000,000,000 (KB, MB, GB: powers of 1000), "1GiB" is 2^30 (KiB, MiB, GiB: powers of
/// 1024), "1.5GB" is allowed, plain digits ("42") are bytes. Units are case-insensitive,
/// except that, as in Accelerate, a size ending in a lowercase "b" ("10Gb", "10gb") counts
/// bits and is divided by 8. Throws std::invalid_argument naming the string otherwise.
///
/// Example:
///   accelerate::convert_file_size_to_int("500MB");   // 500'000'000
int64_t convert_file_size_to_int(const std::string& size);

/// Options of `save_model_files` (and `Accelerator::save_model`), Accelerate's keyword
/// arguments of `save_model`, with chained setters (see options.h).
///
/// Example:
///   auto options = accelerate::SaveModelOptions().max_shard_size("1GB").safe_serialization(false);
struct SaveModelOptions {
  /// Largest shard, as a size string ("10GB", "500MB", "1GiB", "42"; see
  /// `convert_file_size_to_int`). Default "10GB". Throws std::invalid_argument for a bad string.
  SaveModelOptions& max_shard_size(const std::string& size) {
    max_shard_size_ = convert_file_size_to_int(size);
    return *this;
  }
  /// Largest shard in bytes; must not be negative (std::invalid_argument otherwise).
  SaveModelOptions& max_shard_size(int64_t bytes);
  /// The largest shard in bytes.
  int64_t max_shard_size() const noexcept { return max_shard_size_; }
  /// Whether to write safetensors (default) or PyTorch pickles (`pytorch_model.bin`).
  ACCELERATE_ARG(bool, safe_serialization) = true;

 private:
  int64_t max_shard_size_ = 10000000000;
};

/// The state dict Python's `module.state_dict()` would give: for the module, then each child
/// in registration order (recursively, names joined with "."), its parameters then its
/// buffers in registration order; undefined ones (a disabled bias) are skipped. Sequential
/// children are named "0", "1", ... so keys read "features.0.weight". Tensors alias the
/// module's (detached). Tied tensors appear under every name, as in Python.
///
/// Example:
///   for (const auto& [name, tensor] : accelerate::model_state_dict(*net)) std::cout << name;
StateDict model_state_dict(const torch::nn::Module& module);

/// Writes `state_dict` into the folder `dir` (created if needed) as Accelerate's `save_model`
/// does.
/// - Safe serialization: tensors that are the same view of the same storage (tied weights)
///   are written once, under their first name in state-dict order (Accelerate drops the
///   later names); `load_checkpoint_in_model` fills the other names from it. Tensors that
///   share a storage with different views are each written as their own copy.
/// - Sharding: greedy in state-dict order as huggingface_hub's
///   `split_torch_state_dict_into_shards` (numel x element size per tensor; a tensor larger
///   than the limit gets a shard of its own, placed before the shard being filled; tensors
///   sharing a storage go to the shard of the first and count once). With one shard the file
///   is `model.safetensors` / `pytorch_model.bin`; with N, `model-0000i-of-0000N.safetensors`
///   / `pytorch_model-0000i-of-0000N.bin` plus `model.safetensors.index.json` /
///   `pytorch_model.bin.index.json` holding `{"metadata": {"total_size": bytes},
///   "weight_map": {name: file}}` (keys sorted, indent 2, as Python's `json.dumps`).
/// - Each file is written to a temporary name and renamed; then every other checkpoint file
///   of either format in `dir` (`model*.safetensors`, `pytorch_model*.bin` shards, single
///   files, index files) is removed, so that the folder holds this checkpoint only.
/// Safetensors files carry the metadata `{"format": "pt"}`. `.bin` files are zip archives of
/// a plain dict pickled as `torch.save` does (storages shared between views stay shared).
void save_state_dict_files(const StateDict& state_dict, const std::string& dir,
                           const SaveModelOptions& options = SaveModelOptions());

/// `save_state_dict_files(model_state_dict(model), dir, options)`.
///
/// Example:
///   namespace acc = accelerate;
///   acc::save_model_files(*net, "out", acc::SaveModelOptions().max_shard_size("5GB"));
void save_model_files(const torch::nn::Module& model, const std::string& dir,
                      const SaveModelOptions& options = SaveModelOptions());

/// Reads a single checkpoint file or a checkpoint folder into a name -> tensor map (CPU).
/// A path ending in ".safetensors" or ".bin" is one file; one ending in ".index.json" is an
/// index whose shards are read; a folder is searched for, in this order,
/// `model.safetensors`, `model.safetensors.index.json`, `pytorch_model.bin`,
/// `pytorch_model.bin.index.json`. Safetensors tensors alias the mapped files. Throws
/// std::runtime_error naming the path when nothing is found, a file is malformed, an index
/// names a file that does not hold the tensor, or a tensor appears in two shards.
std::map<std::string, at::Tensor> load_state_dict_files(const std::string& path);

/// Copies the checkpoint at `path` (anything `load_state_dict_files` reads) into the
/// parameters and buffers of `model`, under NoGradGuard, as PyTorch's strict
/// `load_state_dict`: every key of `model_state_dict(model)` must be in the checkpoint (a tied
/// tensor is satisfied by any of its names) and every key of the checkpoint in the model, with
/// the same shape; `copy_` converts dtypes and devices. Everything is checked before anything
/// is copied, so on std::runtime_error (naming the key and the file) the model is unchanged.
///
/// Example:
///   accelerate::load_checkpoint_in_model(*net, "out/model.safetensors.index.json");
void load_checkpoint_in_model(torch::nn::Module& model, const std::string& path);

/// Writes `tensors` to `path` as Python's `torch.save(dict)` does (a zip archive with
/// `data.pkl` and one record per storage), readable by `torch.load(path, weights_only=True)`.
/// Tensors on other devices are saved as CPU tensors; views of one CPU storage keep sharing it.
/// Throws std::invalid_argument for a dtype outside BOOL..F64 of safetensors (as
/// `save_safetensors`) or a duplicate name, std::runtime_error when the file cannot be written.
void save_pytorch_bin(const StateDict& tensors, const std::string& path);

/// Reads a file written by `torch.save` of a dict (or OrderedDict) of tensors, or by
/// `save_pytorch_bin`, without running Python code: only the pickle opcodes and globals a
/// state dict needs are understood. Keys keep the file's order. Throws std::runtime_error
/// naming the path for anything else (including the legacy pre-1.6 non-zip format).
StateDict load_pytorch_bin(const std::string& path);

}  // namespace accelerate
