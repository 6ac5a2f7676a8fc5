#!/usr/bin/env bash
# Configures and builds accelerate-cpp (Release, Ninja) into $BUILD_DIR (default ./build).
# Extra args go to cmake, e.g. -DTorch_DIR=<site-packages>/torch/share/cmake/Torch to build
# against an upstream LibTorch instead of Debian's. Uses ccache when it is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-build}
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # Paths relative to the checkout, so that another clone of the project hits the same cache.
  export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
fi
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
