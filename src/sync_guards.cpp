// NoSyncGuard, JoinGuard, and Accelerator::join_uneven_inputs, which makes the JoinGuard.
#include "accelerate/sync_guards.h"

#include <exception>
#include <string>

#include "accelerate/accelerator.h"
#include "accelerate/errors.h"
#include "errors.h"

namespace accelerate {

using detail::exit_from_destructor;

NoSyncGuard::NoSyncGuard(std::vector<DistributedDataParallel*> engines, bool disable) {
  if (!disable) return;
  for (DistributedDataParallel* e : engines) {
    if (!e) continue;
    saved_.emplace_back(e, e->require_backward_grad_sync());
    e->set_require_backward_grad_sync(false);
  }
}

NoSyncGuard::~NoSyncGuard() {
  for (auto& [engine, value] : saved_) engine->set_require_backward_grad_sync(value);
}

namespace {

// Gives each loader back the even_batches it had before join_uneven_inputs.
void restore_even_batches(
    const std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>>& loaders) {
  for (const auto& [loader, value] : loaders) loader->set_even_batches(value);
}

}  // namespace

JoinGuard Accelerator::join_uneven_inputs(
    const std::vector<std::shared_ptr<torch::nn::Module>>& models,
    std::optional<bool> even_batches) {
  if (models.empty())
    throw InvalidArgument(
        "accelerate: join_uneven_inputs: no model given (pass the prepared "
        "model: join_uneven_inputs({model}))");
  DistributedDataParallel* engine = nullptr;
  for (size_t i = 0; i < models.size(); ++i) {
    if (!models[i])
      throw InvalidArgument("accelerate: join_uneven_inputs: model " + std::to_string(i) +
                            " is a null pointer");
    DistributedDataParallel* e = engine_of(models[i].get());
    if (!e)
      throw InvalidArgument("accelerate: join_uneven_inputs: model " + std::to_string(i) +
                            " was not prepared (pass models returned by accelerator.prepare)");
    if (engine && e != engine)
      throw InvalidArgument(
          "accelerate: join_uneven_inputs: one model at a time: the steps of two "
          "synchronised models cannot be shadowed apart (got two prepared models)");
    engine = e;
  }
  // As Accelerate: with one process, nothing at all (not even the even_batches override).
  if (num_processes() == 1) return JoinGuard(nullptr, {});
  std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> restore;
  if (even_batches) {
    for (const auto& loader : loaders_) {
      restore.emplace_back(loader, loader->sharding().even_batches());
      loader->set_even_batches(*even_batches);
    }
  }
  const bool enable = !even_batches.value_or(options_.even_batches());
  if (enable) {
    try {
      engine->begin_join();
    } catch (...) {  // a refusal (DdpEngine::Reducer) leaves the loaders as they were
      restore_even_batches(restore);
      throw;
    }
  }
  return JoinGuard(enable ? engine : nullptr, std::move(restore));
}

JoinGuard::JoinGuard(DistributedDataParallel* engine,
                     std::vector<std::pair<std::shared_ptr<DataLoaderBase>, bool>> loaders)
    : engine_(engine), loaders_(std::move(loaders)), exceptions_(std::uncaught_exceptions()) {}

void JoinGuard::join() {
  if (done_) return;
  done_ = true;
  struct Restore {
    JoinGuard* self;
    ~Restore() { restore_even_batches(self->loaders_); }
  } restore{this};
  if (engine_) engine_->end_join();
}

JoinGuard::~JoinGuard() {
  if (done_) return;
  if (std::uncaught_exceptions() > exceptions_) {
    // As PyTorch's Join.__exit__: an exception leaves the scope without the collectives.
    done_ = true;
    if (engine_) engine_->abandon_join();
    restore_even_batches(loaders_);
    return;
  }
  try {
    join();
  } catch (const std::exception& e) {
    exit_from_destructor(e);
  }
}

}  // namespace accelerate
