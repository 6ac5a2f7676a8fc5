// accelerate/data_loader.h: the data area in one include (what programs include).
//
// A `DataLoader<Dataset>` batches a data set and, once prepared, gives each process its share
// on its device; the pieces live under accelerate/data/, one header per concept, as LibTorch's
// torch/data:
//   data/sampler.h         Sampler, BatchSampler, shuffled_indices
//   data/loader_options.h  DataLoaderOptions
//   data/collate.h         Collate<T>: examples into a batch, a batch onto a device
//   data/sharding.h        ShardingOptions, LoaderPosition, shard_batches and friends
//   data/tensor_dataset.h  TensorDataset
//   data/loader.h          DataLoaderBase, DataLoader<Dataset>, skip_first_batches
//
// Example:
//   auto x = torch::randn({100, 4}), y = torch::randn({100, 1});
//   accelerate::DataLoader<accelerate::TensorDataset> loader(accelerate::TensorDataset(x, y),
//       accelerate::DataLoaderOptions().batch_size(16).shuffle(true).seed(0));
//   for (auto& batch : loader) {}  // batch.data: [16, 4], batch.target: [16, 1]
#pragma once

#include "accelerate/data/collate.h"
#include "accelerate/data/loader.h"
#include "accelerate/data/loader_options.h"
#include "accelerate/data/sampler.h"
#include "accelerate/data/sharding.h"
#include "accelerate/data/tensor_dataset.h"
