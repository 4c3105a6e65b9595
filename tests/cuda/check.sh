#!/usr/bin/env bash
# Type-checks the `cuda` build (`cargo check --features cuda`) on a machine without a system CUDA
# toolkit or GPU: NVIDIA's nvcc, headers and libraries come from their PyPI wheels (a package
# registry, so this works offline from the rest of the internet). Compiles candle's CUDA kernels
# to PTX with that nvcc; nothing is run on a GPU. Takes several minutes on 2 cores (the kernels),
# so it is not part of `make test`. Usage: bash tests/cuda/check.sh   (from the repository root)
set -euo pipefail
VENV=${CUDA_VENV:-$HOME/.cache/protoclr-cuda-venv}
if [ ! -x "$VENV/bin/nvcc-ok" ]; then
  python3 -m venv "$VENV"
  # nvcc (13.x wheels ship the compiler driver; 12.x ones only ptxas), the CUDA runtime headers,
  # CCCL (<nv/target>), and the libraries cudarc links against.
  "$VENV/bin/pip" install -q nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-cccl nvidia-cublas \
    nvidia-curand nvidia-cuda-nvrtc
  touch "$VENV/bin/nvcc-ok" && chmod +x "$VENV/bin/nvcc-ok"
fi
N=$(echo "$VENV"/lib/python3*/site-packages/nvidia/cu13)
[ -x "$N/bin/nvcc" ] || { echo "no nvcc under $N" >&2; exit 1; }
export PATH="$N/bin:$PATH" CUDA_PATH="$N" CUDA_ROOT="$N"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
# cudarc 0.19 knows CUDA up to 13.4; the wheel may be newer. Its API is a superset.
export CUDARC_CUDA_VERSION=${CUDARC_CUDA_VERSION:-13040}
export LIBRARY_PATH="$N/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
# A separate target dir: the feature changes candle-core, and the CPU build stays warm.
export CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-$HOME/.cache/protoclr-cuda-target}
nvcc --version | tail -2
cargo check -p protoclr --features cuda --all-targets
echo "cuda check: cargo check --features cuda passed"
