#!/usr/bin/env bash
# Checks the CUDA kernels (src/cuda/*.cu) without a GPU: compiles them as C++ against
# cuda_emu.h (a CPU emulation of blocks, __syncthreads and warp shuffles), runs them on inputs
# from the composed candle references and compares (f64 ≤ 1e-12, f32 ≤ 1e-5 forward, 10× that
# backward). Needs g++ with C++20. Takes a few minutes (one OS thread per CUDA thread).
# It checks the kernels' arithmetic, indexing and synchronisation; not NVRTC, the launch glue
# in src/cuda/*.rs or real-GPU behaviour.
#   bash kernels/tools/cuda_emu/run.sh [WORKDIR]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../.."
out="${1:-$(mktemp -d)}"
mkdir -p "$out"
TMCA_EMU_DIR="$out" cargo test --release -p tmca-kernels --test cuda_emu_dump -- --ignored
for m in common masked_pool similarity contrastive; do
  src="kernels/src/cuda/$m.cu"
  [ "$m" = common ] && src="kernels/src/cuda/common.cuh"
  # Dynamic shared memory comes from the emulator; the entry points need no C linkage.
  sed -e 's/extern __shared__ __align__(16) unsigned char smem_raw\[\];/unsigned char* smem_raw = g_dyn_smem.data();/' \
      -e 's/extern "C" //' "$src" > "$out/$m.inc"
done
g++ -std=c++20 -O1 -pthread -w -I "$here" -I "$out" "$here/main.cpp" -o "$out/emu"
"$out/emu" "$out"
