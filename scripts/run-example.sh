#!/usr/bin/env bash
# The README's example command: installs what is missing, builds, and runs the main example
# on 2 processes through the launcher.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DACCELERATE_BUILD_TESTS=OFF -DACCELERATE_BUILD_BENCH=OFF
./build/tools/accelerate-cpp/accelerate-cpp launch --num_processes 2 ./build/examples/collectives
