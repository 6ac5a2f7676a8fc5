#!/usr/bin/env bash
# The GAN example (examples/gan) on 2 processes, as CI runs the examples: 8 steps in one go, and
# 4 steps then a restart with --resume up to 8. The resumed run continues from the checkpoint of
# step 4 and saves the same generator, byte for byte; every process ends with process 0's
# BatchNorm statistics.
# Usage: gan_resume.sh LAUNCHER GAN WORK_DIR
set -euo pipefail
launcher=$1 gan=$2 work=$3
rm -rf "$work" && mkdir -p "$work"
run() { "$launcher" launch --num_processes 2 --num_cpu_threads_per_process 1 "$gan" --batch_size 16 "$@"; }

run --max_steps 8 --checkpoint_every 4 --project "$work/straight" | tee "$work/straight.log"
run --max_steps 4 --checkpoint_every 4 --project "$work/stopped" | tee "$work/first.log"
run --max_steps 8 --checkpoint_every 4 --project "$work/stopped" --resume | tee "$work/resumed.log"

grep -q "resumed at step 4" "$work/resumed.log" || { echo "FAIL: did not resume at step 4"; exit 1; }
for log in straight resumed; do
  grep -q "done at step 8 | buffers equal on every process: yes" "$work/$log.log" ||
    { echo "FAIL: $log run did not end with equal buffers at step 8"; exit 1; }
done
cmp "$work/straight/generator/model.safetensors" "$work/stopped/generator/model.safetensors" ||
  { echo "FAIL: the resumed generator differs from the one trained in one go"; exit 1; }
echo "gan example: resumed run equals the straight run"
