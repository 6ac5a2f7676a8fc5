#include "ddp/compress_hook.h"

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include <utility>
#include <vector>

namespace accelerate::detail {
namespace {

class CompressHook : public c10d::CommHookInterface {
 public:
  CompressHook(c10::intrusive_ptr<c10d::ProcessGroup> group, at::ScalarType dtype)
      : group_(std::move(group)), dtype_(dtype) {}

  c10::intrusive_ptr<c10::ivalue::Future> runHook(c10d::GradBucket& bucket) override {
    auto reduced =
        start_compressed_allreduce(*group_, bucket.getBufferRef(), dtype_).work->getFuture();
    at::Tensor buffer = bucket.getBufferRef();
    return reduced->then(
        [buffer](c10::ivalue::Future& done) {
          decompress_into(buffer, done.value().toTensorVector().at(0));
          return c10::IValue(buffer);
        },
        reduced->elementType());
  }

  // What runHook's future holds: the bucket. (Not CppCommHookInterface: its parseHookResult
  // is not exported by every LibTorch.)
  at::Tensor parseHookResult(const c10::IValue& result) override {
    return result.isTensor() ? result.toTensor() : result.toTensorVector().at(0);
  }

 private:
  c10::intrusive_ptr<c10d::ProcessGroup> group_;
  at::ScalarType dtype_;
};

}  // namespace

std::optional<at::ScalarType> compress_dtype(CommHook hook) {
  switch (hook) {
    case CommHook::FP16:
      return at::kHalf;
    case CommHook::BF16:
      return at::kBFloat16;
    case CommHook::NO:
      break;
  }
  return std::nullopt;
}

const char* hook_name(CommHook hook) {
  return hook == CommHook::FP16   ? "CommHook::FP16"
         : hook == CommHook::BF16 ? "CommHook::BF16"
                                  : "CommHook::NO";
}

CompressedAllreduce start_compressed_allreduce(c10d::ProcessGroup& group, const at::Tensor& bucket,
                                               at::ScalarType dtype) {
  CompressedAllreduce out;
  out.wire = bucket.to(dtype).div_(group.getSize());
  std::vector<at::Tensor> tensors{out.wire};
  out.work = group.allreduce(tensors);
  return out;
}

void decompress_into(const at::Tensor& bucket, const at::Tensor& wire) {
  at::NoGradGuard no_grad;
  bucket.copy_(wire);
}

std::unique_ptr<c10d::CommHookInterface> make_compress_hook(
    c10::intrusive_ptr<c10d::ProcessGroup> group, at::ScalarType dtype) {
  return std::make_unique<CompressHook>(std::move(group), dtype);
}

}  // namespace accelerate::detail
