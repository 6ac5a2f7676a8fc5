// Internal: how parameters are laid out in flat gradient buckets, shared by the engines.
//
// A layout assigns the trained parameters to buckets (PyTorch DDP's: by size, 1 MiB for the
// first, bucket_cap_mb for the others, per dtype and device), in the order the buckets are
// reduced. The first layout follows the reverse order of the parameters (gradients become
// ready roughly from the last parameter to the first); after the first synchronising pass an
// engine rebuilds it once in the order the gradients arrived (bucket_layout_in_order). A
// bucket is one contiguous tensor; bucket_view gives a parameter its slice of it.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace accelerate::detail {

/// The byte caps of the buckets.
struct BucketSizes {
  size_t first = 1024 * 1024;      ///< the first bucket (c10d::kDefaultFirstBucketBytes)
  size_t rest = 25 * 1024 * 1024;  ///< every other bucket (bucket_cap_mb)
};

/// Parameter indices per bucket, in the order the buckets are reduced, and each bucket's cap.
struct BucketLayout {
  std::vector<std::vector<size_t>> buckets;
  std::vector<size_t> limits;
};

/// PyTorch DDP's first layout over `params`: by size in parameter order, then reversed.
BucketLayout initial_bucket_layout(const std::vector<at::Tensor>& params, BucketSizes sizes);

/// The layout of `params` taken in `order` (indices into params, each once), as c10d's Reducer
/// rebuilds its buckets in the order the gradients arrived.
BucketLayout bucket_layout_in_order(const std::vector<at::Tensor>& params,
                                    const std::vector<int64_t>& order, BucketSizes sizes);

/// `param`'s slice of `flat` from element `offset`, laid out as the parameter (the layout
/// AccumulateGrad gives gradients).
at::Tensor bucket_view(const at::Tensor& flat, const at::Tensor& param, int64_t offset);

}  // namespace accelerate::detail
