// Tests of torch.save's .bin format as accelerate/model_files.h writes and reads it
// (save_pytorch_bin / load_pytorch_bin, src/torch_pickle.cpp): every dtype, views sharing a
// storage, refusals, and files torch.load reads (tests/python/interop.py, run with
// ACCELERATE_TEST_PYTHON).
#include <accelerate/model_files.h>
#include <accelerate/safetensors.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "temp_dir.h"
#include "tensor_files.h"

namespace acc = accelerate;

namespace {

using namespace acc::testing;

using TorchPickleTest = TempDirTest;
using PythonInteropTest = TempDirTest;

// Every dtype, views of one storage, 0-d and zero-size tensors.
TEST_F(TorchPickleTest, RoundTripOfEveryDtypeAndView) {
  acc::StateDict tensors;
  for (const auto& [name, tensor] : all_dtype_tensors()) tensors.emplace_back(name, tensor);
  const auto base = formula(at::kFloat, {4, 5});
  tensors.emplace_back("base", base);
  tensors.emplace_back("view", base.slice(1, 1, 4));
  acc::save_pytorch_bin(tensors, path("all.bin"));
  const auto loaded = acc::load_pytorch_bin(path("all.bin"));
  ASSERT_EQ(loaded.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(loaded[i].first, tensors[i].first);
    EXPECT_EQ(loaded[i].second.scalar_type(), tensors[i].second.scalar_type());
    EXPECT_TRUE(at::equal(loaded[i].second, tensors[i].second)) << tensors[i].first;
  }
  EXPECT_TRUE(loaded[loaded.size() - 1].second.is_alias_of(loaded[loaded.size() - 2].second));
  EXPECT_THROW(acc::save_pytorch_bin({{"a", base}, {"a", base}}, path("dup.bin")),
               std::invalid_argument);
  EXPECT_THROW(acc::save_pytorch_bin({{"c", at::ones({1}, at::kComplexFloat)}}, path("c.bin")),
               std::invalid_argument);
  write_file(path("junk.bin"), {'P', 'K', 3, 4, 0, 0});
  EXPECT_THROW(acc::load_pytorch_bin(path("junk.bin")), std::runtime_error);
}

// Every dtype, and a view sharing its base's storage.
TEST_F(PythonInteropTest, PythonTorchLoadReadsCppBinOfEveryDtype) {
  REQUIRE_PYTHON();
  acc::StateDict tensors;
  std::map<std::string, at::Tensor> expected;
  for (const auto& [name, tensor] : all_dtype_tensors()) {
    tensors.emplace_back(name, tensor);
    expected[name] = tensor;
  }
  const auto base = formula(at::kFloat, {4, 5});
  tensors.emplace_back("base", base);
  tensors.emplace_back("view", base.slice(1, 1, 4));
  expected["base"] = base;
  expected["view"] = base.slice(1, 1, 4);
  acc::save_pytorch_bin(tensors, path("all.bin"));
  acc::save_safetensors(expected, path("all.safetensors"));
  const auto result = run_python(
      {"check-bin", path("all.bin"), path("all.safetensors"), "--shared", "base", "view"});
  EXPECT_EQ(result.code(), 0) << result.out;
}

}  // namespace
