// accelerate/accelerate.h: the umbrella header of accelerate-cpp.
//
// Hugging Face Accelerate's `Accelerator` for C++ and LibTorch: one training loop that runs
// unchanged on one CPU, several processes, GPUs and several machines.
//
// Example:
//   #include <accelerate/accelerate.h>
//   namespace acc = accelerate;
//   acc::Accelerator accelerator;
//   accelerator.print("hello from", accelerator.num_processes(), "processes");
#pragma once

#include "accelerate/accelerator.h"
#include "accelerate/accelerator_options.h"
#include "accelerate/checkpoint_hooks.h"
#include "accelerate/data_loader.h"
#include "accelerate/ddp.h"
#include "accelerate/errors.h"
#include "accelerate/format.h"
#include "accelerate/gradient_state.h"
#include "accelerate/logging.h"
#include "accelerate/mixed_precision.h"
#include "accelerate/model_files.h"
#include "accelerate/object_bytes.h"
#include "accelerate/ops.h"
#include "accelerate/optimizer.h"
#include "accelerate/options.h"
#include "accelerate/profiler.h"
#include "accelerate/progress.h"
#include "accelerate/safetensors.h"
#include "accelerate/scheduler.h"
#include "accelerate/state.h"
#include "accelerate/sync_guards.h"
#include "accelerate/tracking.h"
#include "accelerate/utils.h"

/// Hugging Face Accelerate's `Accelerator` and its utilities, for C++ and LibTorch.
namespace accelerate {}
