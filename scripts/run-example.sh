#!/usr/bin/env bash
# The README's example command: installs what is missing, builds, and runs the main example
# (Fashion-MNIST, a small CNN) on 2 processes through the launcher. Extra args go to the example.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DACCELERATE_BUILD_TESTS=OFF -DACCELERATE_BUILD_BENCH=OFF
./build/tools/accelerate-cpp/accelerate-cpp launch --num_processes 2 ./build/examples/fashion_mnist "$@"
