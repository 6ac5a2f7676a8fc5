// Internal: a walk over the autograd graph behind a tensor, shared by the DDP engines' "does
// this loss reach the model" and the Accelerator's mixed-precision check.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/function.h>

#include <unordered_set>
#include <vector>

namespace accelerate::detail {

/// True when `pred(node)` holds for some node of the graph that produced `root` (each node is
/// visited once); false for a tensor without history.
template <typename Pred>
bool any_graph_node(const at::Tensor& root, Pred pred) {
  if (!root.defined() || !root.grad_fn()) return false;
  std::vector<torch::autograd::Node*> stack{root.grad_fn().get()};
  std::unordered_set<torch::autograd::Node*> seen;
  while (!stack.empty()) {
    torch::autograd::Node* node = stack.back();
    stack.pop_back();
    if (!node || !seen.insert(node).second) continue;
    if (pred(*node)) return true;
    for (const auto& edge : node->next_edges()) stack.push_back(edge.function.get());
  }
  return false;
}

}  // namespace accelerate::detail
