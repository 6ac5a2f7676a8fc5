// Internal: PyTorch's fp16/bf16 compression hook (`_compress_hook` in
// ddp_comm_hooks/default_hooks.py), the one implementation both engines run.
//
// A bucket is cast to the compressed dtype, divided by the world size there (first, so that the
// sum cannot overflow), all-reduced, and the result cast back into the bucket.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <memory>
#include <optional>

#include "accelerate/ddp.h"

namespace c10d {
class CommHookInterface;
class ProcessGroup;
class Work;
}  // namespace c10d

namespace accelerate::detail {

/// The dtype `hook` compresses into; unset for CommHook::NO.
std::optional<at::ScalarType> compress_dtype(CommHook hook);

/// "CommHook::FP16", for messages.
const char* hook_name(CommHook hook);

/// The first half of the hook: `bucket` compressed, and its all-reduce started.
struct CompressedAllreduce {
  at::Tensor wire;  ///< what is all-reduced: the compressed, divided copy of the bucket
  c10::intrusive_ptr<c10d::Work> work;
};
CompressedAllreduce start_compressed_allreduce(c10d::ProcessGroup& group, const at::Tensor& bucket,
                                               at::ScalarType dtype);

/// The second half, once the all-reduce is done: the reduced values cast back into `bucket`.
void decompress_into(const at::Tensor& bucket, const at::Tensor& wire);

/// The hook as c10d's Reducer takes it (register_comm_hook).
std::unique_ptr<c10d::CommHookInterface> make_compress_hook(
    c10::intrusive_ptr<c10d::ProcessGroup> group, at::ScalarType dtype);

}  // namespace accelerate::detail
