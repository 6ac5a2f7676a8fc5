// Internal: c10d's DDP engine (a c10d::Reducer) built the way PyTorch's DDP builds it: the one
// place that knows its gradient buckets, for DistributedDataParallel (ddp.cpp) and the
// benchmarks' hand-made baseline without the library's engine (bench/c10d_util.h).
#pragma once

#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "compat.h"

namespace accelerate::detail {

/// PyTorch's DDP broadcasts parameters and buffers in chunks of this size.
constexpr size_t kBroadcastBucketBytes = 250 * 1024 * 1024;

/// A c10d::Reducer over `params` (`names`: index -> parameter name) with PyTorch DDP's
/// buckets: the first of c10d::kDefaultFirstBucketBytes (1 MiB), the others of `bucket_bytes`.
inline std::unique_ptr<c10d::Reducer> make_ddp_reducer(
    const std::vector<at::Tensor>& params, std::unordered_map<size_t, std::string> names,
    const c10::intrusive_ptr<c10d::ProcessGroup>& group, size_t bucket_bytes,
    bool find_unused_parameters, bool gradient_as_bucket_view) {
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> limits;
  std::tie(buckets, limits) = c10d::compute_bucket_assignment_by_size(
      params, {static_cast<size_t>(c10d::kDefaultFirstBucketBytes), bucket_bytes},
      std::vector<bool>(params.size(), false));
  // As PyTorch's DDP: buckets in reverse order, since gradients become ready roughly in the
  // reverse order of the parameters.
  std::reverse(buckets.begin(), buckets.end());
  std::reverse(limits.begin(), limits.end());
  return compat::make_reducer(params, std::move(buckets), std::move(limits), group,
                              static_cast<int64_t>(bucket_bytes), find_unused_parameters,
                              gradient_as_bucket_view, std::move(names),
                              static_cast<int64_t>(c10d::kDefaultFirstBucketBytes));
}

}  // namespace accelerate::detail
