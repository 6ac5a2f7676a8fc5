// The environment variables `accelerate-cpp launch` sets for every rank: fake_rank prints them
// (--print-env) and launcher_test removes them from what the ranks inherit, so that what a
// test sees came from the launcher. The names come from the library's list (src/launch_env.h);
// the tests that check their values spell them out again, so that a renamed variable fails.
#pragma once

#include "launch_env.h"

namespace accelerate::testing {

inline constexpr const auto& kLauncherVariables = launch_env::kLaunchedVariables;

}  // namespace accelerate::testing
