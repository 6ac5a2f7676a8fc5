#include "accelerate/accelerator_options.h"

#include <algorithm>
#include <sstream>
#include <string>

#include "accelerate/errors.h"
#include "accelerate/tracking.h"

#include "helpers.h"

namespace accelerate {

StateOptions AcceleratorOptions::state_options() const {
  StateOptions options;
  if (timeout_) options.timeout(*timeout_);
  if (join_timeout_) options.join_timeout(*join_timeout_);
  if (cpu_) options.cpu(*cpu_);
  if (mixed_precision_) options.mixed_precision(*mixed_precision_);
  if (environment_) options.environment(*environment_);
  if (store_) options.store(store_);
  if (backend_) options.backend(*backend_);
  if (num_cpu_threads_per_process_)
    options.num_cpu_threads_per_process(*num_cpu_threads_per_process_);
  return options;
}

AcceleratorOptions& AcceleratorOptions::num_cpu_threads_per_process(int threads) {
  num_cpu_threads_per_process_ = detail::checked_thread_count("AcceleratorOptions", threads);
  return *this;
}

AcceleratorOptions& AcceleratorOptions::log_with(const std::string& names) {
  std::stringstream in(names);
  std::string name;
  while (std::getline(in, name, ',')) {
    name.erase(0, name.find_first_not_of(" \t"));
    name.erase(name.find_last_not_of(" \t") + 1);
    if (name.empty()) continue;
    if (name == "all") {
      log_with_ = {"tensorboard", "csv"};
      continue;
    }
    check_tracker_name(name);
    if (std::find(log_with_.begin(), log_with_.end(), name) == log_with_.end())
      log_with_.push_back(name);
  }
  return *this;
}

}  // namespace accelerate
