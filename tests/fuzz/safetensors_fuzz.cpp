// libFuzzer target over the safetensors reader: any input may be refused with
// std::runtime_error / std::invalid_argument, nothing else (no crash, no other exception,
// no sanitizer report). Accepted inputs must load, re-serialize and load again unchanged.
//
// Built and run by tests/fuzz/run_fuzz.cmake (clang++ -fsanitize=fuzzer,address,undefined):
//   ./safetensors_fuzz -dict=tests/fuzz/safetensors.dict corpus/ tests/fuzz/corpus/
#include <ATen/ATen.h>
#include <accelerate/safetensors.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = accelerate::parse_safetensors_header(data, size, "fuzz-input");
    if (header.data_offset() + header.data_size != size) std::abort();
  } catch (const std::runtime_error&) {
    return 0;
  } catch (const std::invalid_argument&) {
    return 0;
  }
  std::map<std::string, at::Tensor> tensors;
  try {
    tensors = accelerate::load_safetensors_from_memory(data, size, "fuzz-input");
  } catch (const std::runtime_error&) {
    return 0;  // dtypes LibTorch cannot hold (U16, F8_*, ...)
  }
  // Bool tensors may hold bytes other than 0/1; compare raw bytes, never values.
  const auto bytes = accelerate::serialize_safetensors(tensors);
  const auto again = accelerate::load_safetensors_from_memory(bytes.data(), bytes.size(), "again");
  if (again.size() != tensors.size()) std::abort();
  for (const auto& [name, tensor] : tensors) {
    const at::Tensor& other = again.at(name);
    if (other.sizes() != tensor.sizes() || other.scalar_type() != tensor.scalar_type() ||
        (tensor.nbytes() > 0 &&
         std::memcmp(other.data_ptr(), tensor.data_ptr(), tensor.nbytes()) != 0)) {
      std::abort();
    }
  }
  return 0;
}
