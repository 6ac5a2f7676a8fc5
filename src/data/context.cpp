#include "accelerate/data/context.h"

#include <algorithm>
#include <utility>

#include "accelerate/errors.h"
#include "accelerate/gradient_state.h"
#include "accelerate/ops.h"
#include "accelerate/state.h"
#include "accelerate/utils.h"
#include "live_context.h"

namespace accelerate {

namespace {

const State& with_collectives(const State* state) {
  if (!state)
    throw InvalidArgument(
        "accelerate: DataLoader: dispatch_batches needs collectives: give the loader a "
        "DataContext made from a State (Accelerator::prepare gives its own)");
  return *state;
}

}  // namespace

DataContext::DataContext(std::shared_ptr<GradientState> gradient_state)
    : gradient_state_(std::move(gradient_state)) {}

DataContext::DataContext(const State& state, std::shared_ptr<GradientState> gradient_state,
                         std::vector<std::string> rng_types)
    : state_(&state), gradient_state_(std::move(gradient_state)) {
  for (auto& type : rng_types)
    if (std::find(rng_types_.begin(), rng_types_.end(), type) == rng_types_.end())
      rng_types_.push_back(std::move(type));
}

DataContext::~DataContext() = default;

at::Tensor DataContext::broadcast(at::Tensor tensor) {
  return accelerate::broadcast(with_collectives(state_), std::move(tensor), 0);
}

std::string DataContext::broadcast_bytes(const std::string& bytes) {
  return accelerate::broadcast_bytes(with_collectives(state_), bytes, 0);
}

void DataContext::begin_pass(const std::optional<at::Generator>& generator) {
  if (!state_ || state_->num_processes() == 1) return;
  // "generator" is the loader's own generator: synchronised when it has one (Accelerate drops
  // the type when the sampler has no generator).
  std::vector<std::string> types;
  for (const std::string& type : rng_types_)
    if (type != "generator" || generator) types.push_back(type);
  if (!types.empty()) synchronize_rng_states(*state_, types, generator);
}

}  // namespace accelerate

namespace accelerate::detail {

std::shared_ptr<DataContext> live_context(const std::weak_ptr<DataContext>& context) {
  auto alive = context.lock();
  if (!alive)
    throw InvalidArgument(
        "accelerate: DataLoader: this data loader was prepared by an Accelerator that no "
        "longer exists (or the DataContext given to shard() was destroyed): keep the "
        "Accelerator alive while you use the loaders it prepared, or prepare the loader again "
        "with the Accelerator you use now (accelerator.prepare(loader))");
  return alive;
}

}  // namespace accelerate::detail
