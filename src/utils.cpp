#include "accelerate/utils.h"

#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <new>
#include <string>

#include "compat.h"

namespace accelerate {

void set_seed(uint64_t seed) {
  torch::manual_seed(seed);  // also seeds every CUDA device where CUDA is available
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

void clear_device_cache() { compat::empty_cuda_cache(); }

bool should_reduce_batch_size(const std::exception& error) {
  if (dynamic_cast<const std::bad_alloc*>(&error)) return true;
  if (dynamic_cast<const c10::OutOfMemoryError*>(&error)) return true;
  const std::string what = error.what();
  for (const char* marker : {"CUDA out of memory", "DefaultCPUAllocator: can't allocate memory",
                             "CUDNN_STATUS_NOT_SUPPORTED"})
    if (what.find(marker) != std::string::npos) return true;
  return false;
}

}  // namespace accelerate
