#!/usr/bin/env bash
# Builds what the benchmarks need and runs them; prints one table (see bench/README.md).
#
#   bash bench/run.sh                      # everything (about 12 minutes on 2 cores)
#   bash bench/run.sh overhead python      # a subset: overhead python startup ckpt allreduce blas
#   bash bench/run.sh --quick              # smaller jobs, to try it out
#   bash bench/run.sh --reps 7 startup     # more repetitions
#
# Environment: BENCH_BUILD_DIR (default: build/ when it was configured with
# ACCELERATE_BUILD_BENCH=ON, else bench/build/, configured here), BENCH_MAX_LOAD (0.7),
# BENCH_MAX_BUSY (0.3 cores), BENCH_ALT_BLAS (openblas-openmp),
# BENCH_WAIT (seconds to wait for a quiet machine, 300), BENCH_TMP (bench/out).
set -euo pipefail
cd "$(dirname "$0")/.."

build="${BENCH_BUILD_DIR:-}"
if [[ -z "$build" ]]; then
  if grep -qs '^ACCELERATE_BUILD_BENCH:BOOL=ON' build/CMakeCache.txt; then build=build; else build=bench/build; fi
fi
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DACCELERATE_BUILD_TESTS=OFF -DACCELERATE_BUILD_EXAMPLES=OFF -DACCELERATE_BUILD_BENCH=ON >/dev/null
fi
ninja -C "$build" -j"${BENCH_JOBS:-2}" bench_all accelerate-cpp >&2

BENCH_COMMAND="bash bench/run.sh $*" exec /usr/bin/python3 bench/driver.py --build "$build" "$@"
