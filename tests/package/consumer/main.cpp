#include <accelerate/accelerate.h>
#include <torch/torch.h>

int main() {
  accelerate::Accelerator accelerator(accelerate::AcceleratorOptions().cpu(true));
  auto total = accelerator.reduce(torch::ones({2}), "sum");
  accelerator.print("consumer ok", accelerator.num_processes(), total.sum().item<float>());
  return total.sum().item<float>() == 2.0f * accelerator.num_processes() ? 0 : 1;
}
