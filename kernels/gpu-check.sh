#!/usr/bin/env bash
# The prepared GPU check of tmca-kernels (issue 4): build here, run on a GPU machine that has a
# CUDA 13 driver and libraries but no Rust toolchain.
#
#   bash kernels/gpu-check.sh build    # here: CUDA build of examples/gpu_check.rs, stripped, to
#                                      #   target-gpu/gpu_check (gitignored; pass it as `carry`)
#   bash kernels/gpu-check.sh run      # there: nvidia-smi, correctness, timings, sanitizer;
#                                      #   writes $OUT/gpu-check.{md,log} when $OUT is set
#
# Env: GPU_CHECK_BIN (default target-gpu/gpu_check), GPU_CHECK_ARGS (extra arguments for the
# main run, e.g. "--quick"), GPU_CHECK_SANITIZE=0 (skip compute-sanitizer), CARGO_TARGET_DIR
# (build; default ~/.cache/tmca/target-cuda).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${GPU_CHECK_BIN:-$ROOT/target-gpu/gpu_check}"

die() { echo "gpu-check: $*" >&2; exit 3; }

build() {
  set -e
  # The CUDA 13.0 toolchain from PyPI wheels (nvcc, headers, link-time libcuda stub).
  . "$(bash "$ROOT/.ci/cuda-toolchain.sh" --env-file)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tmca/target-cuda}"
  # Only candle-core + tmca-kernels: no trainer, no cuDNN, no NCCL.
  (cd "$ROOT" && cargo build --release -p tmca-kernels --features cuda --example gpu_check)
  mkdir -p "$(dirname "$BIN")"
  strip -o "$BIN" "$CARGO_TARGET_DIR/release/examples/gpu_check"
  echo "gpu-check: $BIN: $(du -h "$BIN" | cut -f1) ($(stat -c %s "$BIN") bytes, stripped)"
  echo "gpu-check: NEEDED: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
}

# The directory holding the CUDA 13 runtime libraries the binary was linked against
# (libcudart/libnvrtc/libcublas/libcublasLt/libcurand .so.13/.so.10). The binary records them
# as NEEDED (cudarc's dynamic-linking and candle-kernels' -lcudart), so the loader must find
# them before main() runs; NVRTC then dlopens libnvrtc-builtins.so.13.x from the same place.
# libcuda.so.1 comes with the driver (normally /usr/lib/x86_64-linux-gnu, on the default path).
cuda_lib_dir() {
  local d
  for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
           /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/targets/x86_64-linux/lib \
           /usr/lib/x86_64-linux-gnu; do
    if [ -e "$d/libcudart.so.13" ] && [ -e "$d/libnvrtc.so.13" ]; then echo "$d"; return; fi
  done
  # Last resort: the loader cache.
  ldconfig -p 2>/dev/null | sed -n 's/.*libcudart\.so\.13 .*=> \(.*\)\/libcudart\.so\.13$/\1/p' | head -n1
}

run() {
  [ -x "$BIN" ] || die "$BIN not found: build it with \`bash kernels/gpu-check.sh build\` and pass target-gpu as carry"
  local out="${OUT:-}" log status=0 t0=$SECONDS
  log="${out:+$out/gpu-check.log}"
  log="${log:-/dev/null}"
  {
    echo "== nvidia-smi"
    nvidia-smi || echo "(nvidia-smi failed)"
    local lib
    lib="$(cuda_lib_dir)"
    if [ -n "$lib" ]; then
      export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "== CUDA libraries from $lib"
    else
      echo "== no libcudart.so.13 found under /usr/local/cuda*/ or via ldconfig"
    fi
    echo "== shared libraries of $BIN"
    ldd "$BIN" | grep -E 'cuda|nvrtc|cublas|curand|not found' || true
    if ldd "$BIN" | grep -q 'not found'; then
      echo "gpu-check: missing shared libraries (above); the binary cannot start" >&2
      exit 3
    fi
  } 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || return 3
  lib="$(cuda_lib_dir)"
  [ -n "$lib" ] && export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

  echo "== correctness + timings" | tee -a "$log"
  # shellcheck disable=SC2086
  timeout 240 "$BIN" ${GPU_CHECK_ARGS:-} ${out:+--md "$out/gpu-check.md"} 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  echo "== gpu_check exit status $status ($((SECONDS - t0)) s so far)" | tee -a "$log"

  # compute-sanitizer (memcheck: out-of-bounds and misaligned accesses; initcheck: reads of
  # uninitialised device memory) on the quick cases, fused ops only. Errors in our kernels
  # (mp_*, ptc_*, cl_*) fail the run; anything else is reported only.
  local san
  san="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n1)"
  if [ "${GPU_CHECK_SANITIZE:-1}" != 0 ] && [ -n "$san" ]; then
    local tool slog
    for tool in memcheck initcheck; do
      slog="$(mktemp)"
      echo "== compute-sanitizer --tool $tool (quick cases)" | tee -a "$log"
      timeout 90 "$san" --tool "$tool" --print-limit 20 "$BIN" --sanitize >"$slog" 2>&1
      local rc=$?
      grep -E '^========= ' "$slog" | head -n 60 | tee -a "$log"
      tail -n 3 "$slog" | tee -a "$log"
      if [ "$rc" = 124 ]; then
        echo "== $tool: timed out after 90 s (not counted)" | tee -a "$log"
      elif grep -qE '^=========.*\b(mp|ptc|cl)_[a-z_]+_f(32|64)\b' "$slog"; then
        echo "== $tool: ERRORS IN tmca kernels" | tee -a "$log"
        status=1
      elif grep -qE '^========= ERROR SUMMARY: 0 errors' "$slog"; then
        echo "== $tool: clean" | tee -a "$log"
      else
        echo "== $tool: exit $rc, see above (errors outside the tmca kernels are not counted)" | tee -a "$log"
      fi
      rm -f "$slog"
    done
  else
    echo "== compute-sanitizer skipped (${san:-not installed})" | tee -a "$log"
  fi
  echo "== done in $((SECONDS - t0)) s, status $status" | tee -a "$log"
  return "$status"
}

case "${1:-}" in
  build) build ;;
  run) run; exit $? ;;
  *) echo "usage: bash kernels/gpu-check.sh build|run" >&2; exit 2 ;;
esac
