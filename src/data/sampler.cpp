#include "accelerate/data/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/ops/randperm.h>

#include "accelerate/errors.h"

namespace accelerate {

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  if (n < 0) throw InvalidArgument("accelerate: shuffled_indices: negative size");
  auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::Tensor perm = at::randperm(n, generator, at::TensorOptions().dtype(at::kLong)).contiguous();
  const int64_t* data = perm.data_ptr<int64_t>();
  return std::vector<int64_t>(data, data + n);
}

}  // namespace accelerate
