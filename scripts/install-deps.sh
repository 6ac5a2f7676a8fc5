#!/usr/bin/env bash
# Installs the Debian 12 packages accelerate-cpp needs, skipping those already installed.
# Run as root. Each package and what it is for is listed in the README.
# With --torch2 it also puts PyTorch 2.13 (the PyPI wheel, whose torch/share/cmake/Torch is an
# upstream LibTorch 2.x) into the virtual environment $ACCELERATE_VENV (default ./.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
packages=(
  g++ cmake ninja-build pkg-config   # the toolchain
  libtorch-dev libgloo-dev           # LibTorch 1.13 with c10d (Gloo, TCPStore, DDP reducer)
  libopenblas0-openmp                # fast float32 BLAS for LibTorch (see bench/RESULTS.md)
  nlohmann-json3-dev                 # JSON: object collectives, checkpoint metadata
  libxxhash-dev                      # XXH3: the checksums of checkpoint files (header only)
  libcli11-dev                       # the accelerate-cpp command line
  libspdlog-dev libfmt-dev           # get_logger: process-aware logging
  libyaml-cpp-dev                    # hparams.yml of the TensorBoard tracker; accelerate-cpp config
  python3-crc32c                     # tests: an independent CRC-32C to check TensorBoard files
  python3-yaml                       # tests: Python reads the YAML that accelerate-cpp config writes
  doxygen                            # the API reference (target docs; the api_reference test)
  libgtest-dev libgmock-dev          # tests
  zlib1g-dev                         # reading the gzipped Fashion-MNIST files
  dataset-fashion-mnist              # the main example's data set
  python3-torch                      # interoperability tests against Python's PyTorch
  procps                             # pgrep, used by the process tests
  iproute2                           # ip: network namespaces for the tests of jobs over two machines
  clang libclang-rt-14-dev           # libFuzzer targets run as tests
  ccache                             # compiler cache for rebuilds (scripts/build.sh)
  clang-format                       # tests: formatting leaves the public headers as they are
  python3-venv python3-pip           # the virtual environment of the LibTorch 2.x build
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# LibTorch calls the generic libblas.so.3, which is the slow reference BLAS unless another one
# is selected: use OpenBLAS's OpenMP build (16-32x the reference sgemm here, bench/RESULTS.md).
openblas=/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3
if [ -e "$openblas" ] &&
   [ "$(readlink -f /etc/alternatives/libblas.so.3-x86_64-linux-gnu)" != "$(readlink -f "$openblas")" ]; then
  update-alternatives --set libblas.so.3-x86_64-linux-gnu "$openblas"
fi

# LibTorch 2.x: the PyPI wheel of PyTorch, in a virtual environment of Debian's Python 3.11.
if [[ " $* " == *" --torch2 "* ]]; then
  venv=${ACCELERATE_VENV:-.venv}
  # numpy: the interoperability tests turn tensors into bytes through it.
  if ! "$venv/bin/python" -c "import numpy, torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    echo "installing torch==2.13.0 and numpy into $venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q torch==2.13.0 numpy
  fi
  # tests: the peer of the ports of Accelerate's test scripts and of the data loader's
  # reference values (tests/python/accelerate_reference.py, data_loader_reference.py).
  if ! "$venv/bin/python" -c "import accelerate, sys; sys.exit(accelerate.__version__ != '1.15.0')" 2>/dev/null; then
    "$venv/bin/python" -m pip install -q accelerate==1.15.0
  fi
fi
