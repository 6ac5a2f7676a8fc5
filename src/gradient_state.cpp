#include "accelerate/gradient_state.h"
#include "accelerate/errors.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace accelerate {

GradientState::GradientState(GradientAccumulationPlugin plugin) : plugin_(plugin) {
  if (plugin_.num_steps() < 1)
    throw InvalidArgument("accelerate: gradient accumulation steps must be >= 1, got " +
                          std::to_string(plugin_.num_steps()));
}

void GradientState::set_num_steps(int steps) {
  if (steps < 1)
    throw InvalidArgument("accelerate: gradient accumulation steps must be >= 1, got " +
                          std::to_string(steps));
  plugin_.num_steps(steps);
}

void GradientState::loader_begin(const DataLoaderBase* loader, int64_t remainder) {
  loader_finish(loader);  // a pass restarted before it ended
  active_.push_back({loader, remainder, false});
}

void GradientState::loader_at_end(const DataLoaderBase* loader) {
  for (auto& a : active_)
    if (a.loader == loader) a.end = true;
}

void GradientState::loader_remainder(const DataLoaderBase* loader, int64_t remainder) {
  for (auto& a : active_)
    if (a.loader == loader) a.remainder = remainder;
}

void GradientState::loader_finish(const DataLoaderBase* loader) {
  active_.erase(std::remove_if(active_.begin(), active_.end(),
                               [&](const Active& a) { return a.loader == loader; }),
                active_.end());
}

}  // namespace accelerate
