// Shared by the tests of tensor files (safetensors_test.cpp, torch_pickle_test.cpp,
// model_files_test.cpp): deterministic tensors of every dtype the files hold, whole-file reads
// and writes, and the Python side of the interoperability tests (tests/python/interop.py, run
// with ACCELERATE_TEST_PYTHON).
//
// Example:
//   acc::save_safetensors({{"w", formula(at::kFloat, {2, 3})}}, path("w.safetensors"));
//   REQUIRE_PYTHON();
//   const auto result = run_python({"check-formula", path("w.safetensors")});
//   EXPECT_EQ(result.code(), 0) << result.out;
#pragma once

#include <accelerate/safetensors.h>
#include <torch/torch.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "subprocess.h"

#ifndef ACCELERATE_TEST_PYTHON_DIR
#error "ACCELERATE_TEST_PYTHON_DIR must name tests/python"
#endif
#ifndef ACCELERATE_TEST_PYTHON
#error "ACCELERATE_TEST_PYTHON must name a Python with torch"
#endif

namespace accelerate::testing {

/// The dtypes both file formats hold.
inline const std::vector<at::ScalarType> kAllDtypes = {
    at::kBool, at::kByte, at::kChar,     at::kShort, at::kInt,
    at::kLong, at::kHalf, at::kBFloat16, at::kFloat, at::kDouble};

/// Deterministic values per dtype; tests/python/interop.py `formula` computes the same.
inline at::Tensor formula(at::ScalarType dtype, std::vector<int64_t> shape) {
  const int64_t numel =
      std::accumulate(shape.begin(), shape.end(), int64_t{1}, std::multiplies<int64_t>());
  const at::Tensor idx = at::arange(numel, at::kLong);
  at::Tensor t;
  switch (dtype) {
    case at::kBool:
      t = (idx % 3) == 0;
      break;
    case at::kByte:
      t = (idx * 7 % 256).to(at::kByte);
      break;
    case at::kChar:
      t = (idx * 7 % 200 - 100).to(at::kChar);
      break;
    case at::kShort:
      t = (idx * 331 % 60000 - 30000).to(at::kShort);
      break;
    case at::kInt:
      t = (idx * 1000003 - 1073741824).to(at::kInt);
      break;
    case at::kLong:
      t = idx * int64_t{1099511627776} + 12345 - int64_t{4611686018427387904};
      break;
    default:
      t = (idx.to(at::kDouble) * 0.37 - 5.0).to(dtype);
  }
  return t.reshape(shape);
}

/// Every dtype, and 0-d, zero-size and non-contiguous tensors.
inline std::map<std::string, at::Tensor> all_dtype_tensors() {
  std::map<std::string, at::Tensor> tensors;
  int k = 0;
  for (auto dtype : kAllDtypes) {
    const std::string name =
        "t" + std::to_string(k++) + "_" + accelerate::safetensors_dtype_name(dtype);
    tensors[name] = formula(dtype, {2, 3});
    tensors[name + "_scalar"] = formula(dtype, {});
    tensors[name + "_empty"] = formula(dtype, {0, 3});
  }
  tensors["f32_3d"] = formula(at::kFloat, {2, 3, 4});
  tensors["f32_transposed"] = formula(at::kFloat, {3, 5}).t();
  tensors["i64_sliced"] = formula(at::kLong, {4, 6}).slice(1, 1, 5, 2);
  return tensors;
}

/// The whole content of `path` (empty when it cannot be read).
inline std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// `bytes` into `path`.
inline void write_file(const std::filesystem::path& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

/// Whether ACCELERATE_TEST_PYTHON imports torch (asked once).
inline bool python_available() {
  static const bool available =
      run_command(Command({ACCELERATE_TEST_PYTHON, "-c", "import torch"})).code() == 0;
  return available;
}

/// Runs tests/python/interop.py ARGS with ACCELERATE_TEST_PYTHON; Outcome::out holds stdout
/// and stderr.
inline Outcome run_python(std::vector<std::string> args) {
  args.insert(args.begin(), {ACCELERATE_TEST_PYTHON, ACCELERATE_TEST_PYTHON_DIR "/interop.py"});
  return run_command(Command(args).merge_stderr(true));
}

}  // namespace accelerate::testing

/// Fails the test when ACCELERATE_TEST_PYTHON has no torch.
#define REQUIRE_PYTHON()                               \
  ASSERT_TRUE(accelerate::testing::python_available()) \
      << ACCELERATE_TEST_PYTHON " with torch is missing"
