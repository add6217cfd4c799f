#!/usr/bin/env bash
# A CUDA 13.0 build toolchain for `--features cuda`, without a GPU, a driver or root.
#
#   eval "$(bash .ci/cuda-toolchain.sh)"      # install if needed, then export the build env
#   . "$(bash .ci/cuda-toolchain.sh --env-file)"   # same, via the env file it writes
#
# Everything lives outside the clone, in $TMCA_CUDA_PREFIX (default ~/.cache/tmca/cuda), and is
# reused by later runs; a second run only checks a stamp and prints the env (well under a second).
# Progress goes to stderr, the env to stdout.
#
# Why this works: NVIDIA publishes the CUDA toolkit pieces as PyPI wheels (nvcc, headers, cudart,
# nvrtc, cuBLAS, cuRAND, NCCL). Only the driver library libcuda.so is never in a wheel (it comes
# with the kernel driver), so a stub of it is built here for the linker; at run time the GPU
# machine's real driver (>= 580 for CUDA 13.0) provides libcuda.so.1.
#
# Pinned to CUDA 13.0: the target GPUs run driver 580, which supports CUDA <= 13.0 (and the PTX ISA
# 9.0 that nvcc 13.0 emits). Do not bump these past 13.0 without a newer driver there.
#
# Env knobs: TMCA_CUDA_PREFIX (install prefix), CUDA_COMPUTE_CAP (default 90 = H100/H200; it
# selects the single architecture that candle's kernels are compiled for).
set -euo pipefail

PREFIX="${TMCA_CUDA_PREFIX:-$HOME/.cache/tmca/cuda}"
CAP="${CUDA_COMPUTE_CAP:-90}"

# The wheels. nvcc needs crt (its host stubs), nvvm (cicc + libdevice) and cccl (the cuda/std
# headers that cuda_fp16.h etc. include); runtime, nvrtc, curand and cublas provide the headers
# and the shared libraries that cudarc (dynamic-linking) and candle-kernels (-lcudart) link to.
# NCCL 2.30 matches cudarc 0.19's `nccl` feature (= nccl-02030); only needed for a future
# `nccl` build, installed now so that the cache is complete.
PACKAGES=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.0.2.14
  nvidia-nccl-cu13==2.30.7
)
# Bump when the layout below changes, so cached prefixes are rebuilt.
LAYOUT=1

log() { echo "cuda-toolchain: $*" >&2; }

SITE="$PREFIX/site"          # pip --target: the wheels' files, as pip lays them out
HOME_DIR="$PREFIX/home"      # the assembled CUDA_HOME
ENV_FILE="$PREFIX/env.sh"
STAMP="layout=$LAYOUT ${PACKAGES[*]}"

mkdir -p "$PREFIX"

# 1. Install the wheels into a private prefix (never the system site-packages). --no-deps: the
#    list above is complete and pinned, nothing else may sneak in. Installed into a fresh folder
#    and swapped in, so an interrupted run never leaves a half-installed tree behind a valid stamp.
if [ "$(cat "$SITE/.tmca-stamp" 2>/dev/null || true)" != "$STAMP" ]; then
  log "installing CUDA 13.0 wheels into $SITE (about 1.4 GB, once)"
  rm -rf "$SITE.new"
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --no-deps --only-binary=:all: --target "$SITE.new" "${PACKAGES[@]}" >&2
  echo "$STAMP" > "$SITE.new/.tmca-stamp"
  rm -rf "$SITE" "$HOME_DIR"
  mv "$SITE.new" "$SITE"
fi

# The wheels put the toolkit in nvidia/cu13/{bin,include,lib,nvvm} (a CUDA-like tree, but with
# lib/ instead of lib64/ and only versioned .so names) and NCCL in nvidia/nccl/{include,lib}.
CU="$SITE/nvidia/cu13"
NCCL="$SITE/nvidia/nccl"

# 2. Assemble CUDA_HOME with the layout the build scripts expect:
#    - cudaforge (candle-kernels' build script) runs nvcc from PATH and takes its parent's parent
#      as the toolkit root (include/, lib64/);
#    - cudarc's build script adds -L $CUDA_HOME/{lib,lib64,lib64/stubs,...} and links
#      -lcuda -lnvrtc -lcurand -lcublas -lcublasLt (+ -lnccl with `nccl`); candle-kernels adds
#      -lcudart. `-lfoo` needs an unversioned libfoo.so, which the wheels do not ship.
if [ "$(cat "$HOME_DIR/.tmca-stamp" 2>/dev/null || true)" != "$STAMP" ]; then
  log "assembling CUDA_HOME in $HOME_DIR"
  rm -rf "$HOME_DIR.new"
  mkdir -p "$HOME_DIR.new/lib64/stubs" "$HOME_DIR.new/include"
  # nvcc locates cicc/libdevice/headers relative to its own directory (nvcc.profile: TOP=bin/..),
  # which resolves through the bin symlink into the wheel tree; nvvm is linked too for clarity.
  ln -s "$CU/bin" "$HOME_DIR.new/bin"
  ln -s "$CU/nvvm" "$HOME_DIR.new/nvvm"
  # include/: the toolkit headers plus nccl.h (cudarc's nccl-version-from-build-system looks
  # for $CUDA_HOME/include/nccl.h), as per-entry symlinks so the wheel trees stay untouched.
  for f in "$CU"/include/* "$NCCL"/include/*; do ln -s "$f" "$HOME_DIR.new/include/"; done
  # lib64/: every shared library under both its versioned name (SONAME, what the binary records
  # as NEEDED) and its unversioned link name.
  for f in "$CU"/lib/*.so.* "$NCCL"/lib/*.so.*; do
    base="$(basename "$f")"
    ln -s "$f" "$HOME_DIR.new/lib64/$base"
    ln -sfn "$base" "$HOME_DIR.new/lib64/${base%%.so.*}.so"
  done
  for f in "$CU"/lib/*.a; do ln -s "$f" "$HOME_DIR.new/lib64/"; done
  # The .alt nvrtc variants would otherwise claim libnvrtc.alt.so; harmless but confusing.
  rm -f "$HOME_DIR.new/lib64/libnvrtc.alt.so" "$HOME_DIR.new/lib64/libnvrtc-builtins.alt.so"
  ln -sfn libnvrtc-builtins.so.13.0 "$HOME_DIR.new/lib64/libnvrtc-builtins.so"

  # 3. The libcuda stub, in lib64/stubs (the place a real toolkit keeps its own stub), used only
  #    at link time: it defines every cu* entry point named in the 13.0 cuda.h (both the API
  #    names and the _v2/_v3... names the macros map them to, which is what bindgen, hence
  #    cudarc, binds), each returning CUDA_ERROR_STUB_LIBRARY (34) like NVIDIA's own stub. Its
  #    SONAME is libcuda.so.1, so the binary records NEEDED libcuda.so.1 and the loader picks up
  #    the driver's real library on the GPU machine. Never put stubs/ on LD_LIBRARY_PATH.
  stubs="$HOME_DIR.new/lib64/stubs"
  {
    grep -ohE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' "$CU/include/cuda.h"
    echo '#include <cuda.h>' | cc -E -P -I"$CU/include" - \
      | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\('
  } | tr -d '( \t' | sort -u | sed 's/.*/int &(void) { return 34; }/' > "$stubs/libcuda_stub.c"
  cc -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so.1" "$stubs/libcuda_stub.c"
  ln -s libcuda.so.1 "$stubs/libcuda.so"
  log "libcuda stub: $(grep -c . "$stubs/libcuda_stub.c") entry points"

  echo "$STAMP" > "$HOME_DIR.new/.tmca-stamp"
  rm -rf "$HOME_DIR"
  mv "$HOME_DIR.new" "$HOME_DIR"
fi

"$HOME_DIR/bin/nvcc" --version | grep -q 'release 13.0' || { log "nvcc is not CUDA 13.0"; exit 1; }

# 4. The build env.
#    CUDA_HOME/CUDA_PATH: cudarc's link search and header lookup (its build script reads both);
#      cudaforge's fallback for nvcc.
#    PATH: `nvcc` for cudaforge (which nvcc) and for cudarc (`nvcc --version` picks the CUDA
#      version when CUDARC_CUDA_VERSION is unset).
#    NVCC: cudaforge's first choice; pins the nvcc even if another is on PATH.
#    CUDARC_CUDA_VERSION=13000: selects cudarc's CUDA 13.0 bindings explicitly.
#    CUDA_COMPUTE_CAP: cudaforge compiles candle's kernels for this one architecture (PTX for
#      compute_$CAP, moe/mmq cubins for sm_$CAP); without it, it asks nvidia-smi and fails.
#    NVCC_APPEND_FLAGS=--compress-mode=size: nvcc appends it to every call. candle-kernels links
#      its quantized-matmul kernels as sm_$CAP cubins (~33 MB of .nv_fatbin in the binary, stored
#      uncompressed by nvcc's default); "size" compresses them ~4x (about 8 MB), which keeps a
#      stripped tmca well under the 64 MiB carry limit (65 MiB without it). The driver decompresses
#      on module load (driver 580 supports it). No effect on the PTX kernels (plain text, --ptx).
#      It is not part of cudaforge's rebuild triggers: after changing it in an existing target dir,
#      run `cargo clean -p candle-kernels` there.
#    CUDAFORGE_THREADS: how many nvcc processes cudaforge runs at once; its default is half the
#      cores, i.e. one on a 2-core CI machine, and candle-kernels' ~25 nvcc calls are the critical
#      path of a cold build (measured inside cold builds on a 2-core machine: 11m47s with 1
#      thread, 8m11s with 2; whole cold `cargo build` 17m11s -> 14m03s).
#    LIBRARY_PATH: lets the final link find -lcudart/-lcuda even where a build script does not
#      add a -L (candle-kernels adds none for cudart); stubs/ is link-time only.
cat > "$ENV_FILE" <<EOF
export CUDA_HOME="$HOME_DIR"
export CUDA_PATH="$HOME_DIR"
export NVCC="$HOME_DIR/bin/nvcc"
export PATH="$HOME_DIR/bin:\$PATH"
export CUDARC_CUDA_VERSION=13000
export CUDA_COMPUTE_CAP=$CAP
export NVCC_APPEND_FLAGS="--compress-mode=size"
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
export LIBRARY_PATH="$HOME_DIR/lib64:$HOME_DIR/lib64/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
EOF

if [ "${1:-}" = "--env-file" ]; then
  echo "$ENV_FILE"
else
  cat "$ENV_FILE"
fi
