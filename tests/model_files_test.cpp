// Tests of the model files of accelerate/model_files.h (src/model_files.cpp): save_model's
// safetensors and .bin files, shards and their index, tied weights, strict loading, and model
// files exchanged with Python (tests/python/interop.py, run with ACCELERATE_TEST_PYTHON).
#include <accelerate/errors.h>
#include <accelerate/model_files.h>
#include <accelerate/safetensors.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>

#include "temp_dir.h"
#include "tensor_files.h"

namespace fs = std::filesystem;
namespace acc = accelerate;

namespace {

using acc::testing::read_file;
using acc::testing::run_python;

using ModelFilesTest = acc::testing::TempDirTest;
using PythonInteropTest = acc::testing::TempDirTest;

struct Block : torch::nn::Module {
  Block() {
    fc = register_module("fc", torch::nn::Linear(4, 4));
    norm = register_module("norm", torch::nn::BatchNorm1d(4));
  }
  torch::Tensor forward(torch::Tensor x) { return norm->forward(fc->forward(x)); }
  torch::nn::Linear fc{nullptr};
  torch::nn::BatchNorm1d norm{nullptr};
};

struct Net : torch::nn::Module {
  Net() {
    features = register_module(
        "features",
        torch::nn::Sequential(torch::nn::Linear(3, 4), torch::nn::ReLU(),
                              torch::nn::Linear(torch::nn::LinearOptions(4, 4).bias(false))));
    block = register_module("block", std::make_shared<Block>());
    head = register_module("head", torch::nn::Linear(4, 2));
    scale = register_buffer("scale", torch::full({2}, 1.5));
  }
  torch::Tensor forward(torch::Tensor x) {
    return head->forward(block->forward(features->forward(x))) * scale;
  }
  torch::nn::Sequential features{nullptr};
  std::shared_ptr<Block> block;
  torch::nn::Linear head{nullptr};
  torch::Tensor scale;
};

// A Net with non-default, seed-dependent weights and statistics.
std::shared_ptr<Net> make_net(uint64_t seed) {
  torch::manual_seed(seed);
  auto net = std::make_shared<Net>();
  net->train();
  {
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) net->forward(torch::randn({8, 3}));
  }
  net->eval();
  return net;
}

const std::vector<std::string> kNetKeys = {"scale",
                                           "features.0.weight",
                                           "features.0.bias",
                                           "features.2.weight",
                                           "block.fc.weight",
                                           "block.fc.bias",
                                           "block.norm.weight",
                                           "block.norm.bias",
                                           "block.norm.running_mean",
                                           "block.norm.running_var",
                                           "block.norm.num_batches_tracked",
                                           "head.weight",
                                           "head.bias"};

std::vector<std::string> keys_of(const acc::StateDict& state_dict) {
  std::vector<std::string> keys;
  for (const auto& entry : state_dict) keys.push_back(entry.first);
  return keys;
}

TEST(ConvertFileSizeToInt, ParsesAccelerateSizes) {
  EXPECT_EQ(acc::convert_file_size_to_int("10GB"), 10000000000LL);
  EXPECT_EQ(acc::convert_file_size_to_int("500MB"), 500000000LL);
  EXPECT_EQ(acc::convert_file_size_to_int("100KB"), 100000LL);
  EXPECT_EQ(acc::convert_file_size_to_int("1GiB"), 1LL << 30);
  EXPECT_EQ(acc::convert_file_size_to_int("3MiB"), 3LL << 20);
  EXPECT_EQ(acc::convert_file_size_to_int("2KiB"), 2048);
  EXPECT_EQ(acc::convert_file_size_to_int("42"), 42);
  EXPECT_EQ(acc::convert_file_size_to_int("1.5GB"), 1500000000LL);
  EXPECT_EQ(acc::convert_file_size_to_int("5gb"), 625000000LL);  // bits, as Accelerate
  EXPECT_EQ(acc::convert_file_size_to_int(" 5 mib "), 5LL << 20);
  for (const char* bad : {"ten", "", "GB", "-5GB", "10TB", "1e400GB", "nanGB", "5 G B", "0x10KB",
                          "99999999999999999999"}) {
    try {
      acc::convert_file_size_to_int(bad);
      ADD_FAILURE() << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos);
    }
  }
  const auto defaults = acc::SaveModelOptions();
  EXPECT_EQ(defaults.max_shard_size(), 10000000000LL);
  EXPECT_TRUE(defaults.safe_serialization());
  const auto options = acc::SaveModelOptions().max_shard_size("1GiB").safe_serialization(false);
  EXPECT_EQ(options.max_shard_size(), 1LL << 30);
  EXPECT_FALSE(options.safe_serialization());
  EXPECT_EQ(acc::SaveModelOptions().max_shard_size(1000).max_shard_size(), 1000);
  EXPECT_THROW(acc::SaveModelOptions().max_shard_size(-1), std::invalid_argument);
  EXPECT_THROW(acc::SaveModelOptions().max_shard_size("ten"), std::invalid_argument);
}

TEST_F(ModelFilesTest, StateDictKeysAreThoseOfPython) {
  auto net = make_net(1);
  const auto state_dict = acc::model_state_dict(*net);
  EXPECT_EQ(keys_of(state_dict), kNetKeys);
  EXPECT_EQ(state_dict[1].second.data_ptr(),
            net->features[0]->as<torch::nn::Linear>()->weight.data_ptr());
  EXPECT_FALSE(state_dict[1].second.requires_grad());
}

TEST_F(ModelFilesTest, ShardedSafetensorsRoundTripReproducesOutputs) {
  auto net = make_net(1);
  // 8 + 48 + 16 + 64 + 64 + 16 + 4 x 16 + 8 + 32 + 8 = 328 bytes; 100-byte shards.
  acc::save_model_files(*net, dir_.string(), acc::SaveModelOptions().max_shard_size("100"));
  const auto index = nlohmann::json::parse(read_file(dir_ / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), 328);
  std::set<std::string> files;
  std::vector<std::string> mapped;
  for (const auto& item : index["weight_map"].items()) {
    mapped.push_back(item.key());
    files.insert(item.value().get<std::string>());
  }
  std::vector<std::string> sorted_keys = kNetKeys;
  std::sort(sorted_keys.begin(), sorted_keys.end());
  EXPECT_EQ(mapped, sorted_keys);
  // Greedy in state-dict order: [scale features.0.weight features.0.bias] [features.2.weight]
  // [block.fc.weight block.fc.bias block.norm.weight] [the rest: 96 bytes].
  std::vector<std::string> expected_files;
  for (int i = 1; i <= static_cast<int>(files.size()); ++i) {
    char name[64];
    std::snprintf(name, sizeof(name), "model-%05d-of-%05zu.safetensors", i, files.size());
    expected_files.push_back(name);
    acc::SafetensorsFile shard(path(name));
    EXPECT_EQ(shard.metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
    int64_t shard_bytes = 0;
    for (const auto& key : shard.keys()) {
      EXPECT_EQ(index["weight_map"][key], name) << key;
      shard_bytes += static_cast<int64_t>(shard.info(key).end - shard.info(key).begin);
    }
    EXPECT_LE(shard_bytes, 100) << name;
  }
  EXPECT_EQ(std::vector<std::string>(files.begin(), files.end()), expected_files);
  EXPECT_EQ(files.size(), 4u);
  EXPECT_EQ(index["weight_map"]["features.2.weight"], "model-00002-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["block.norm.weight"], "model-00003-of-00004.safetensors");
  EXPECT_EQ(index["weight_map"]["head.bias"], "model-00004-of-00004.safetensors");
  EXPECT_EQ(index.dump(2) + "\n", read_file(dir_ / "model.safetensors.index.json"));

  const torch::Tensor x = torch::randn({6, 3});
  const torch::Tensor want = net->forward(x);
  for (const std::string& source : {dir_.string(), path("model.safetensors.index.json")}) {
    auto copy = make_net(2);
    ASSERT_FALSE(torch::equal(copy->forward(x), want));
    acc::load_checkpoint_in_model(*copy, source);
    EXPECT_TRUE(torch::equal(copy->forward(x), want)) << source;
    EXPECT_EQ(copy->block->norm->num_batches_tracked.item<int64_t>(), 3);
  }
  const auto all = acc::load_state_dict_files(dir_.string());
  EXPECT_EQ(all.size(), kNetKeys.size());
}

TEST_F(ModelFilesTest, ShardPackingFollowsHuggingfaceHub) {
  auto sizes_to_files = [&](const std::vector<int64_t>& sizes, int64_t limit) {
    acc::StateDict state_dict;
    for (size_t i = 0; i < sizes.size(); ++i) {
      state_dict.emplace_back("t" + std::to_string(i), at::zeros({sizes[i]}, at::kByte));
    }
    const std::string out =
        path("pack" + std::to_string(limit) + "_" + std::to_string(sizes.size()));
    acc::save_state_dict_files(state_dict, out, acc::SaveModelOptions().max_shard_size(limit));
    std::vector<int> shard_of;
    const auto index =
        nlohmann::json::parse(read_file(fs::path(out) / "model.safetensors.index.json"));
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string file = index["weight_map"]["t" + std::to_string(i)];
      shard_of.push_back(std::stoi(file.substr(6, 5)));
    }
    EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(),
              std::accumulate(sizes.begin(), sizes.end(), int64_t{0}));
    return shard_of;
  };
  // The docstring's example: [6, 6, 2, 6, 2, 2] under 10 -> [6], [6+2], [6+2+2].
  EXPECT_EQ(sizes_to_files({6, 6, 2, 6, 2, 2}, 10), (std::vector<int>{1, 2, 2, 3, 3, 3}));
  // A tensor over the limit gets its own shard, placed before the one being filled.
  EXPECT_EQ(sizes_to_files({2, 12, 3, 9}, 10), (std::vector<int>{2, 1, 2, 3}));
}

TEST_F(ModelFilesTest, TiedWeightsAreSavedOnce) {
  struct Tied : torch::nn::Module {
    Tied() {
      embed = register_module("embed", torch::nn::Embedding(10, 4));
      head_weight = register_parameter("head_weight", embed->weight);       // tied
      first_row = register_buffer("first_row", embed->weight.detach()[0]);  // another view
    }
    torch::nn::Embedding embed{nullptr};
    torch::Tensor head_weight, first_row;
  };
  torch::manual_seed(3);
  auto tied = std::make_shared<Tied>();
  EXPECT_EQ(keys_of(acc::model_state_dict(*tied)),
            (std::vector<std::string>{"head_weight", "first_row", "embed.weight"}));
  acc::save_model_files(*tied, dir_.string());
  acc::SafetensorsFile file(path("model.safetensors"));
  EXPECT_EQ(file.keys(), (std::vector<std::string>{"first_row", "head_weight"}));  // first name

  torch::manual_seed(4);
  auto copy = std::make_shared<Tied>();
  acc::load_checkpoint_in_model(*copy, dir_.string());
  EXPECT_TRUE(torch::equal(copy->embed->weight, tied->embed->weight));
  EXPECT_EQ(copy->embed->weight.data_ptr(), copy->head_weight.data_ptr());

  // .bin keeps every name, sharing one storage, as torch.save does.
  acc::save_model_files(*tied, dir_.string(), acc::SaveModelOptions().safe_serialization(false));
  EXPECT_FALSE(fs::exists(path("model.safetensors")));
  const auto bin = acc::load_pytorch_bin(path("pytorch_model.bin"));
  EXPECT_EQ(keys_of(bin), (std::vector<std::string>{"head_weight", "first_row", "embed.weight"}));
  EXPECT_TRUE(bin[0].second.is_alias_of(bin[2].second));
  EXPECT_TRUE(bin[1].second.is_alias_of(bin[2].second));
  EXPECT_TRUE(torch::equal(bin[1].second, tied->embed->weight[0]));
}

TEST_F(ModelFilesTest, LaterSavesRemoveStaleFiles) {
  auto net = make_net(1);
  std::ofstream(path("notes.txt")) << "keep";
  std::ofstream(path("model-extra.safetensors")) << "keep";
  acc::save_model_files(*net, dir_.string(), acc::SaveModelOptions().max_shard_size(100));
  EXPECT_TRUE(fs::exists(path("model-00004-of-00004.safetensors")));
  acc::save_model_files(*net, dir_.string(), acc::SaveModelOptions().max_shard_size(200));
  EXPECT_FALSE(fs::exists(path("model-00004-of-00004.safetensors")));
  EXPECT_TRUE(fs::exists(path("model-00002-of-00002.safetensors")));
  acc::save_model_files(*net, dir_.string(),
                        acc::SaveModelOptions().max_shard_size(100).safe_serialization(false));
  acc::save_model_files(*net, dir_.string());
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir_)) names.insert(entry.path().filename());
  EXPECT_EQ(names,
            (std::set<std::string>{"model.safetensors", "notes.txt", "model-extra.safetensors"}));
  auto copy = make_net(2);
  acc::load_checkpoint_in_model(*copy, dir_.string());
  const auto x = torch::randn({2, 3});
  EXPECT_TRUE(torch::equal(copy->forward(x), net->forward(x)));
}

TEST_F(ModelFilesTest, PytorchBinRoundTrip) {
  auto net = make_net(1);
  const auto x = torch::randn({4, 3});
  for (int64_t limit : {int64_t{100}, int64_t{1} << 30}) {
    acc::save_model_files(*net, dir_.string(),
                          acc::SaveModelOptions().max_shard_size(limit).safe_serialization(false));
    EXPECT_EQ(fs::exists(path("pytorch_model.bin.index.json")), limit == 100);
    EXPECT_EQ(fs::exists(path("pytorch_model.bin")), limit != 100);
    auto copy = make_net(2);
    acc::load_checkpoint_in_model(*copy, dir_.string());
    EXPECT_TRUE(torch::equal(copy->forward(x), net->forward(x))) << limit;
  }
}

TEST_F(ModelFilesTest, LoadErrorsNameTheKeyAndTheFile) {
  auto net = make_net(1);
  acc::save_model_files(*net, dir_.string());
  const std::string file = path("model.safetensors");
  auto expect_error = [&](const std::map<std::string, at::Tensor>& tensors,
                          const std::vector<std::string>& parts) {
    acc::save_safetensors(tensors, path("edited.safetensors"));
    auto copy = make_net(2);
    const auto before = acc::model_state_dict(*copy);
    std::vector<at::Tensor> snapshot;
    for (const auto& entry : before) snapshot.push_back(entry.second.clone());
    try {
      acc::load_checkpoint_in_model(*copy, path("edited.safetensors"));
      ADD_FAILURE() << parts[0];
    } catch (const acc::FileError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("accelerate: load_checkpoint_in_model: ", 0), 0u)
          << e.what();
      for (const auto& part : parts) {
        EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
      }
    }
    for (size_t i = 0; i < before.size(); ++i) {  // nothing copied
      EXPECT_TRUE(at::equal(before[i].second, snapshot[i])) << before[i].first;
    }
  };
  auto tensors = acc::load_safetensors(file, /*clone=*/true);
  auto missing = tensors;
  missing.erase("head.bias");
  expect_error(missing, {"missing keys 'head.bias'", path("edited.safetensors")});
  auto unexpected = tensors;
  unexpected["head.extra"] = at::ones({1});
  expect_error(unexpected,
               {"unexpected keys 'head.extra' (in " + path("edited.safetensors") + ")"});
  auto wrong_shape = tensors;
  wrong_shape["head.weight"] = at::ones({4, 2});
  expect_error(wrong_shape, {"'head.weight' has shape [4, 2] in " + path("edited.safetensors") +
                             " but the model's 'head.weight' is [2, 4]"});
  // dtypes are converted, as PyTorch's load_state_dict does.
  auto as_double = tensors;
  for (auto& [name, tensor] : as_double) tensor = tensor.to(at::kDouble);
  acc::save_safetensors(as_double, path("double.safetensors"));
  auto copy = make_net(2);
  acc::load_checkpoint_in_model(*copy, path("double.safetensors"));
  EXPECT_TRUE(torch::equal(copy->head->weight, net->head->weight));
  EXPECT_EQ(copy->head->weight.scalar_type(), at::kFloat);

  try {
    acc::load_checkpoint_in_model(*copy, path("nothing-here"));
    ADD_FAILURE();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path("nothing-here")), std::string::npos);
  }
  fs::create_directories(path("empty"));
  EXPECT_THROW(acc::load_checkpoint_in_model(*copy, path("empty")), std::runtime_error);
}

// ---------------------------------------------------------------------------------------------
// Files exchanged with Python.

TEST_F(PythonInteropTest, PythonReadsCppShardedCheckpoint) {
  REQUIRE_PYTHON();
  auto net = make_net(1);
  acc::save_model_files(*net, path("sharded"), acc::SaveModelOptions().max_shard_size(150));
  const auto state_dict = acc::model_state_dict(*net);
  acc::save_safetensors(std::map<std::string, at::Tensor>(state_dict.begin(), state_dict.end()),
                        path("expected.safetensors"));
  auto result = run_python({"check-index", path("sharded"), path("expected.safetensors")});
  EXPECT_EQ(result.code(), 0) << result.out;
  acc::save_model_files(*net, path("single"));
  result = run_python({"check-index", path("single"), path("expected.safetensors")});
  EXPECT_EQ(result.code(), 0) << result.out;
}

TEST_F(PythonInteropTest, PythonTorchLoadReadsCppBin) {
  REQUIRE_PYTHON();
  auto net = make_net(1);
  const auto state_dict = acc::model_state_dict(*net);
  acc::save_safetensors(std::map<std::string, at::Tensor>(state_dict.begin(), state_dict.end()),
                        path("expected.safetensors"));
  for (int64_t limit : {int64_t{150}, int64_t{1} << 30}) {
    const std::string out = path("bin" + std::to_string(limit));
    acc::save_model_files(*net, out,
                          acc::SaveModelOptions().max_shard_size(limit).safe_serialization(false));
    const auto result = run_python({"check-bin", out, path("expected.safetensors")});
    EXPECT_EQ(result.code(), 0) << result.out;
  }
}

TEST_F(PythonInteropTest, CppReadsPythonFiles) {
  REQUIRE_PYTHON();
  const auto result = run_python({"write", dir_.string()});
  ASSERT_EQ(result.code(), 0) << result.out;

  auto make_model = [] {
    return torch::nn::Sequential(torch::nn::Linear(4, 8), torch::nn::ReLU(),
                                 torch::nn::BatchNorm1d(8), torch::nn::Linear(8, 3));
  };
  const auto io = acc::load_safetensors(path("py_io.safetensors"));
  const auto reference = acc::load_safetensors(path("py_model.safetensors"));
  for (const std::string& source :
       {path("py_model.bin"), path("py_model.safetensors"), path("py_sharded")}) {
    auto model = make_model();
    acc::load_checkpoint_in_model(*model, source);
    model->eval();
    for (const auto& [name, tensor] : acc::model_state_dict(*model)) {
      EXPECT_TRUE(at::equal(tensor, reference.at(name))) << source << " " << name;
    }
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::allclose(model->forward(io.at("x")), io.at("y"), 1e-6, 1e-6)) << source;
  }
  const auto ordered = acc::load_pytorch_bin(path("py_model.bin"));  // an OrderedDict
  EXPECT_EQ(keys_of(ordered), keys_of(acc::model_state_dict(*make_model())));
}

}  // namespace
