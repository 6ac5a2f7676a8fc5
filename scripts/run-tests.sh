#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh -DACCELERATE_BUILD_TESTS=ON -DACCELERATE_BUILD_EXAMPLES=ON
cd build && ctest --output-on-failure -j 2 --timeout 900
