#!/usr/bin/env bash
# Installs pyeagle into the current Python environment, with a llama.cpp build that is fast and
# safe on this CPU (see scripts/cmake_args.sh: no ggml AMX path, AVX-512 repack kernels kept).
#
#   bash scripts/setup.sh          the library, chat and bench
#   bash scripts/setup.sh dev      + what the tests need
#
# GPU builds: set CMAKE_ARGS yourself, e.g. CMAKE_ARGS="-DGGML_CUDA=on" bash scripts/setup.sh
# (add --no-cache-dir via PIP_NO_CACHE_DIR=1 if a CPU wheel of llama-cpp-python is cached:
# pip's wheel cache does not key on CMAKE_ARGS).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}

CMAKE_ARGS=$(bash scripts/cmake_args.sh)
export CMAKE_ARGS
echo "pyeagle setup: CMAKE_ARGS=\"$CMAKE_ARGS\""

# llama-cpp-python first (4-5 minutes the first time, then from pip's wheel cache), so that
# pyeagle builds against exactly the llama.cpp it runs with.
"$PY" -m pip install --quiet "llama-cpp-python==0.3.36" "scikit-build-core>=0.10" "pybind11>=2.13"
if [[ ",$extras," == *",dev,"* || ",$extras," == *",train,"* ]]; then
  # The CPU wheel of torch that this machine carries (keeps pip from pulling a CUDA build);
  # optional: tests that need torch skip without it.
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install --quiet "torch==2.13.0" \
    || echo "pyeagle setup: torch not installed (tests that need it will skip)"
fi
"$PY" -m pip install --quiet --no-build-isolation ".${extras:+[$extras]}"
echo "pyeagle setup: done"
