#include "ddp/bucket_layout.h"

#include <ATen/ATen.h>
#include <c10/util/strides.h>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include <algorithm>
#include <tuple>

namespace accelerate::detail {

BucketLayout initial_bucket_layout(const std::vector<at::Tensor>& params, BucketSizes sizes) {
  BucketLayout layout;
  std::tie(layout.buckets, layout.limits) = c10d::compute_bucket_assignment_by_size(
      params, {sizes.first, sizes.rest}, std::vector<bool>(params.size(), false));
  std::reverse(layout.buckets.begin(), layout.buckets.end());
  std::reverse(layout.limits.begin(), layout.limits.end());
  return layout;
}

BucketLayout bucket_layout_in_order(const std::vector<at::Tensor>& params,
                                    const std::vector<int64_t>& order, BucketSizes sizes) {
  std::vector<at::Tensor> in_order;
  in_order.reserve(order.size());
  for (int64_t i : order) in_order.push_back(params[static_cast<size_t>(i)]);
  BucketLayout layout;
  std::tie(layout.buckets, layout.limits) = c10d::compute_bucket_assignment_by_size(
      in_order, {sizes.first, sizes.rest}, std::vector<bool>(params.size(), false), order);
  return layout;
}

// Shares the bucket's storage without being an autograd view of it, so that an optimizer's
// zero_grad may detach_() it (LibTorch 1.13's Optimizer::zero_grad does, which fails on the
// Reducer's views); laid out as c10d's Reducer lays out its bucket views.
at::Tensor bucket_view(const at::Tensor& flat, const at::Tensor& param, int64_t offset) {
  at::Tensor view = at::empty({0}, flat.options());
  if (param.is_non_overlapping_and_dense())
    view.set_(flat.storage(), flat.storage_offset() + offset, param.sizes(), param.strides());
  else
    view.set_(flat.storage(), flat.storage_offset() + offset, param.sizes(),
              c10::contiguous_strides(param.sizes()));
  return view;
}

}  // namespace accelerate::detail
