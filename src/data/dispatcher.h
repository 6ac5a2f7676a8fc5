// Accelerate's DataLoaderDispatcher for a prepared loader's passes (src/data/dispatcher.cpp).
#pragma once

#include <memory>

#include "accelerate/data/context.h"
#include "accelerate/data/detail/pass.h"
#include "accelerate/data/sharding.h"

namespace accelerate::detail {

/// This process's batches of a dispatched pass: process 0 reads the global batches from
/// `base` (null on the other processes), every process receives them through `context`'s
/// collectives and keeps its rows.
std::unique_ptr<BatchSource> make_dispatcher(std::unique_ptr<BatchSource> base, BatchMaker maker,
                                             const ShardingOptions& sharding,
                                             std::weak_ptr<DataContext> context, bool drop_last);

}  // namespace accelerate::detail
