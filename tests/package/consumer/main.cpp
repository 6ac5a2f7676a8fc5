// A program outside the tree, built against the installed package. It also includes fmt the
// way a program beside LibTorch 2.x would (LibTorch's own include folder carries one): the
// installed headers must not pull in another fmt, spdlog, nlohmann-json or yaml-cpp.
#include <accelerate/accelerate.h>
#include <torch/torch.h>

#if __has_include(<fmt/format.h>)
#define FMT_HEADER_ONLY
#include <fmt/format.h>
#define CONSUMER_FMT 1
#endif

int main() {
  accelerate::Accelerator accelerator(accelerate::AcceleratorOptions().cpu(true));
  auto total = accelerator.reduce(torch::ones({2}), "sum");
#ifdef CONSUMER_FMT
  const std::string processes = fmt::format("{}", accelerator.num_processes());
#else
  const std::string processes = std::to_string(accelerator.num_processes());
#endif
  accelerate::get_logger("consumer")
      .info("{} processes, total {:.1f}", processes, total.sum().item<float>());
  accelerator.print("consumer ok", processes, total.sum().item<float>());
  return total.sum().item<float>() == 2.0f * accelerator.num_processes() ? 0 : 1;
}
