#!/usr/bin/env bash
# The README's test command: installs what is missing, then builds and runs every test twice:
# against Debian's LibTorch 1.13 (./build) and against upstream LibTorch 2.13, the PyPI
# wheel's (./build-torch2). ACCELERATE_TORCH2=0 skips the second build.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
torch2=${ACCELERATE_TORCH2:-1}
if [ "$torch2" = 1 ]; then bash scripts/install-deps.sh --torch2; else bash scripts/install-deps.sh; fi

echo "== LibTorch 1.13 (Debian): build"
bash scripts/build.sh -DACCELERATE_BUILD_TESTS=ON -DACCELERATE_BUILD_EXAMPLES=ON
echo "== LibTorch 1.13 (Debian): test"
# Long fuzzing (label fuzz-long) and 200 two-machine jobs (label joins-long) are for
# `ctest -L fuzz-long` / `ctest -L joins-long`; the fuzz tests here take seconds.
(cd build && ctest --output-on-failure -j 2 --timeout 900 -LE 'fuzz-long|joins-long')
echo "== LibTorch 1.13 done after $(( $(date +%s) - start )) s"

if [ "$torch2" = 1 ]; then
  venv=$(cd "${ACCELERATE_VENV:-.venv}" && pwd)
  torch_dir=$("$venv/bin/python" -c "import os, torch; print(os.path.dirname(torch.__file__))")
  echo "== LibTorch $("$venv/bin/python" -c "import torch; print(torch.__version__)") (PyPI wheel): build"
  # The fuzzers exercise our parsers, which do not depend on the LibTorch version: they run
  # in the first build only.
  BUILD_DIR=build-torch2 bash scripts/build.sh -DACCELERATE_BUILD_TESTS=ON \
    -DACCELERATE_BUILD_EXAMPLES=ON -DACCELERATE_FUZZ=OFF \
    -DTorch_DIR="$torch_dir/share/cmake/Torch" -DACCELERATE_TEST_PYTHON="$venv/bin/python"
  echo "== LibTorch 2.13 (PyPI wheel): test"
  (cd build-torch2 && ctest --output-on-failure -j 2 --timeout 900 -LE 'fuzz-long|joins-long')
  echo "== LibTorch 2.13 done after $(( $(date +%s) - start )) s"
fi
