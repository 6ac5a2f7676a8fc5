#include "accelerate/utils.h"

#include <torch/cuda.h>
#include <torch/utils.h>

namespace accelerate {

void set_seed(uint64_t seed) {
  torch::manual_seed(seed);  // also seeds every CUDA device where CUDA is available
  if (torch::cuda::is_available()) torch::cuda::manual_seed_all(seed);
}

}  // namespace accelerate
