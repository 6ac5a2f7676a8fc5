// The context of a prepared loader, for the code that calls it while the loader runs.
#pragma once

#include <memory>

#include "accelerate/data/context.h"

namespace accelerate::detail {

/// `context` locked; InvalidArgument, saying what to do, when it is gone (Note [a loader
/// outliving its Accelerator] in src/data/loader.cpp).
std::shared_ptr<DataContext> live_context(const std::weak_ptr<DataContext>& context);

}  // namespace accelerate::detail
