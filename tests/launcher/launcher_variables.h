// The environment variables `accelerate-cpp launch` sets for every rank: fake_rank prints them
// (--print-env) and launcher_test removes them from what the ranks inherit, so that what a
// test sees came from the launcher.
#pragma once

namespace accelerate::testing {

inline const char* const kLauncherVariables[] = {"RANK",
                                                 "WORLD_SIZE",
                                                 "LOCAL_RANK",
                                                 "LOCAL_WORLD_SIZE",
                                                 "GROUP_RANK",
                                                 "ROLE_RANK",
                                                 "ROLE_WORLD_SIZE",
                                                 "MASTER_ADDR",
                                                 "MASTER_PORT",
                                                 "OMP_NUM_THREADS",
                                                 "ACCELERATE_USE_CPU",
                                                 "ACCELERATE_MIXED_PRECISION",
                                                 "ACCELERATE_TIMEOUT",
                                                 "ACCELERATE_JOIN_TIMEOUT",
                                                 "ACCELERATE_GRADIENT_ACCUMULATION_STEPS"};

}  // namespace accelerate::testing
