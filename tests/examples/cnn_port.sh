#!/usr/bin/env bash
# The CNN port (examples/cnn): the ported program differs from the plain LibTorch one by fewer
# than 20 added and 20 removed lines of code (comments aside), the plain one runs, and the port
# runs on 2 processes, printing its accuracy once and saving the model once.
# Usage: cnn_port.sh SOURCE_DIR LAUNCHER CNN_PLAIN CNN WORK_DIR
set -euo pipefail
src=$1 launcher=$2 plain=$3 port=$4 work=$5
rm -rf "$work" && mkdir -p "$work" && cd "$work"

code() { grep -v '^ *//' "$1"; }
added=$(diff <(code "$src/plain.cpp") <(code "$src/main.cpp") | grep -c '^>' || true)
removed=$(diff <(code "$src/plain.cpp") <(code "$src/main.cpp") | grep -c '^<' || true)
echo "port: +$added -$removed lines"
if [ "$added" -ge 20 ] || [ "$removed" -ge 20 ]; then
  echo "FAIL: the port changes $added/$removed lines, the goal is under 20"; exit 1
fi

OMP_NUM_THREADS=1 "$plain" 1 20 | tee plain.log
grep -q "epoch 1: test accuracy" plain.log || { echo "FAIL: the plain program printed no accuracy"; exit 1; }

"$launcher" launch --num_processes 2 --num_cpu_threads_per_process 1 "$port" 1 20 | tee port.log
[ "$(grep -c "epoch 1: test accuracy" port.log)" = 1 ] || { echo "FAIL: accuracy not printed once"; exit 1; }
accuracy=$(sed -n 's/.*epoch 1: test accuracy \([0-9.]*\).*/\1/p' port.log)
python3 -c "import sys; sys.exit(0 if float('$accuracy') > 0.3 else 1)" ||
  { echo "FAIL: accuracy $accuracy after 20 steps on 2 processes (chance is 0.1)"; exit 1; }
[ -s cnn_model/model.safetensors ] || { echo "FAIL: cnn_model/model.safetensors not saved"; exit 1; }
echo "cnn example: port of $added/$removed lines trains on 2 processes (accuracy $accuracy)"
