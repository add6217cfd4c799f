#!/usr/bin/env bash
# The prepared GPU check (issue 4, and GPU training): build here, run on a GPU machine that has
# a CUDA 13 driver and libraries but no Rust toolchain.
#
#   bash kernels/gpu-check.sh build    # here: CUDA builds of examples/gpu_check/ and of tmca
#                                      #   (no NCCL: the GPU machine may lack it), stripped, to
#                                      #   target-gpu/ (gitignored; pass it as `carry`); tmca is
#                                      #   xz-compressed so that both fit the 64 MiB carry
#   bash kernels/gpu-check.sh run      # there: nvidia-smi, kernels' correctness, timings,
#                                      #   sanitizer, then GPU training: a short run on the GPU
#                                      #   and the same checkpoint evaluated on GPU and CPU,
#                                      #   then step throughput (cpu-small and ConvNeXt-T at
#                                      #   224², TF32 on/off); writes
#                                      #   $OUT/gpu-check.{md,log} and $OUT/gpu-step.md when
#                                      #   $OUT is set
#
# Env: GPU_CHECK_BIN (default target-gpu/gpu_check), GPU_CHECK_ARGS (extra arguments for the
# main run, e.g. "--quick"), GPU_CHECK_SANITIZE=0 (skip compute-sanitizer), GPU_CHECK_TRAIN=0
# (skip the training check), GPU_CHECK_STEP=0 (skip the throughput table), GPU_CHECK_DEADLINE
# (seconds, default 520: every part is skipped or cut short so that the whole run ends by then,
# inside the device tool's 600 s per command; the order is kernels, training, throughput,
# sanitizer, most telling first), CARGO_TARGET_DIR (build; default
# ~/.cache/tmca/target-cuda-check, its own so that its features never rebuild CI's CUDA target).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${GPU_CHECK_BIN:-$ROOT/target-gpu/gpu_check}"

die() { echo "gpu-check: $*" >&2; exit 3; }

# Seconds left before GPU_CHECK_DEADLINE (counted from the start of `run`).
left() { echo $(( ${GPU_CHECK_DEADLINE:-520} - SECONDS )); }
# A timeout of at most $1 seconds that ends by the deadline; at least 1 (`timeout 0` would
# mean no limit at all), so a part past the deadline is cut at once.
budget() { local l; l=$(left); [ "$l" -gt "$1" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }

# tmca.xz decompressed to $1 (xz, else Python's lzma: the device machine may lack xz).
unpack_tmca() {
  local src
  src="$(dirname "$BIN")/tmca.xz"
  [ -f "$src" ] || { echo "no $src"; return 1; }
  if command -v xz >/dev/null; then
    xz -dc "$src" >"$1"
  else
    python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$src" "$1"
  fi && chmod +x "$1"
}

build() {
  set -e
  # The CUDA 13.0 toolchain from PyPI wheels (nvcc, headers, link-time libcuda stub).
  . "$(bash "$ROOT/.ci/cuda-toolchain.sh" --env-file)"
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tmca/target-cuda-check}"
  # One invocation, so both see the same (unified) features; no cuDNN, no NCCL.
  (cd "$ROOT" && cargo build --release --locked -p tmca-kernels -p tmca-launch \
     --features tmca-launch/cuda,tmca-kernels/cuda --example gpu_check --bin tmca)
  mkdir -p "$(dirname "$BIN")"
  strip -o "$BIN" "$CARGO_TARGET_DIR/release/examples/gpu_check"
  local tmca="$(dirname "$BIN")/tmca"
  strip -o "$tmca" "$CARGO_TARGET_DIR/release/tmca"
  xz -f -T2 -6 "$tmca"
  for f in "$BIN" "$tmca.xz"; do
    echo "gpu-check: $f: $(du -h "$f" | cut -f1) ($(stat -c %s "$f") bytes)"
  done
  # What was built: the device machine gets no .git, so the commit travels in a file.
  (cd "$ROOT" && echo "$(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!target-gpu' || echo ' (with uncommitted changes)') built $(date -u +%FT%TZ)") \
    >"$(dirname "$BIN")/BUILD_COMMIT"
  echo "gpu-check: built $(cat "$(dirname "$BIN")/BUILD_COMMIT")"
  echo "gpu-check: NEEDED: $(readelf -d "$BIN" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"
  local total
  total=$(du -cb "$BIN" "$tmca.xz" | tail -n1 | cut -f1)
  [ "$total" -lt $((64 * 1024 * 1024)) ] || die "target-gpu/ is $total bytes, over the 64 MiB carry"
}

# GPU training with the carried tmca: a short run of the cpu-small model at 64² on the GPU,
# then its last checkpoint evaluated on the GPU and on the CPU (CUDA_VISIBLE_DEVICES= makes
# run.device = auto fall back to the CPU): the two Dice tables must agree to 1e-3 (TF32 off, so
# the GPU computes in full f32 as the CPU does). The run's
# time and the tables are printed for the record.
train_check() {
  local dir tmca cfg status=0
  dir="$(mktemp -d)"
  tmca="$dir/tmca"
  unpack_tmca "$tmca" || return 1
  cfg="$dir/gpu.toml"
  "$tmca" config | sed -e "s|^dir = \"runs/quickstart\"|dir = \"$dir/run\"|" \
    -e "s|^device = \"auto\".*|device = \"cuda\"|" -e "s|^epochs = .*|epochs = 3|" \
    -e "s|^tf32 = true.*|tf32 = false|" \
    -e "s|^dir = \"runs/quickstart/data\"|dir = \"$dir/data\"|" >"$cfg"
  grep -q "device = \"cuda\"" "$cfg" && grep -q "tf32 = false" "$cfg" || { echo "config edit failed"; return 1; }
  local t0=$SECONDS
  [ "$(budget 300)" -gt 30 ] || { echo "no time left for GPU training"; return 1; }
  timeout "$(budget 300)" "$tmca" train "$cfg" || { echo "GPU training failed"; return 1; }
  echo "== GPU training: $((SECONDS - t0)) s"
  local gpu cpu
  gpu="$(timeout "$(budget 120)" "$tmca" eval "$dir/run" --checkpoint latest --split val)" || status=1
  cpu="$(CUDA_VISIBLE_DEVICES= timeout "$(budget 300)" "$tmca" eval "$dir/run" --checkpoint latest --split val)" || status=1
  printf '%s\n%s\n' "GPU: $gpu" "CPU: $cpu"
  # Compare the Dice/IoU columns row by row.
  paste <(echo "$gpu" | grep '^| synth') <(echo "$cpu" | grep '^| synth') | awk -F'\t' '
    { split($1, a, "|"); split($2, b, "|");
      for (i = 5; i <= 8; i++) { d = a[i] - b[i]; if (d < 0) d = -d; if (d > 1e-3) bad = 1 }
      n++ }
    END { if (n == 0 || bad) { print "== GPU vs CPU evaluation: MISMATCH"; exit 1 }
          print "== GPU vs CPU evaluation: " n " datasets agree to 1e-3" }' || status=1
  rm -rf "$dir"
  return "$status"
}

# Training-step and inference throughput on the GPU (`tmca bench step-probe --device cuda`,
# synthetic batches, every phase ends with a device synchronisation): the default cpu-small
# model and ConvNeXt-T (`tiny`, the paper setting) at 224², TF32 on and off, as a Markdown
# table for BENCHMARKS.md (also written to $OUT/gpu-step.md).
step_check() {
  local dir tmca status=0 spec mode tf flag json ips ms table
  dir="$(mktemp -d)"
  tmca="$dir/tmca"
  unpack_tmca "$tmca" || return 1
  table="| model | size | batch | measure | TF32 | img/s | median step (ms) |
|---|---|---|---|---|---|---|"
  # Each row is written as soon as it is measured: a run cut short keeps what it measured.
  [ -n "${OUT:-}" ] && echo "$table" >"$OUT/gpu-step.md"
  for spec in "cpu-small 224 8" "tiny 224 16"; do
    # shellcheck disable=SC2086
    set -- $spec
    for mode in train infer; do
      for tf in on off; do
        flag=""
        [ "$tf" = off ] && flag="--no-tf32"
        if [ "$(budget 90)" -lt 20 ]; then
          echo "step probe $1 $2 $mode TF32 $tf: skipped, no time left"
          status=1
          continue
        fi
        # shellcheck disable=SC2086
        json="$(cd "$dir" && timeout "$(budget 90)" "$tmca" bench step-probe --device cuda --preset "$1" \
          --size "$2" --batch "$3" --mode "$mode" --warmup 3 --steps 10 $flag 2>"$dir/err" | tail -n1)"
        ips="$(echo "$json" | sed -n 's/.*"img_per_s":\([0-9.eE+-]*\).*/\1/p')"
        if [ -z "$ips" ]; then
          echo "step probe $1 $2 $mode TF32 $tf failed: $(tail -n 3 "$dir/err")"
          status=1
          continue
        fi
        ms="$(awk -v b="$3" -v r="$ips" 'BEGIN { printf "%.1f", 1000 * b / r }')"
        local row="| $1 | ${2}² | $3 | $mode | $tf | $(printf '%.1f' "$ips") | $ms |"
        table="$table
$row"
        [ -n "${OUT:-}" ] && echo "$row" >>"$OUT/gpu-step.md"
      done
    done
  done
  echo "$table"
  rm -rf "$dir"
  return "$status"
}

# The directories holding the CUDA 13 runtime libraries the binaries were linked against
# (libcudart/libnvrtc/libcublas/libcublasLt .so.13, libcurand .so.10), each looked for on its
# own: a CUDA install, the loader cache, or NVIDIA's Python wheels (site-packages/nvidia/cu13/
# lib, the layout PyTorch's cu130 wheels bring). The binaries record them as NEEDED, so the
# loader must find them before main() runs; NVRTC then dlopens libnvrtc-builtins.so.13.x from
# beside libnvrtc. libcuda.so.1 comes with the driver (usually on the default path;
# /usr/local/nvidia/lib64 in some containers).
cuda_lib_dirs() {
  local lib d found wheels
  wheels="$(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, s, "lib") for p in nvidia.__path__ for s in ("cu13", "cuda_runtime", "cuda_nvrtc", "cublas", "curand")))' 2>/dev/null)"
  for lib in libcudart.so.13 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
    found=""
    for d in ${CUDA_HOME:+$CUDA_HOME/lib64} /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 \
             /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/targets/x86_64-linux/lib \
             /usr/lib/x86_64-linux-gnu $wheels; do
      if [ -e "$d/$lib" ]; then found="$d"; break; fi
    done
    [ -n "$found" ] || found="$(ldconfig -p 2>/dev/null | sed -n "s/.*$lib .*=> \(.*\)\/$lib\$/\1/p" | head -n1)"
    [ -n "$found" ] || found="$(find /usr/local /usr/lib /opt "$HOME" -name "$lib" 2>/dev/null | head -n1 | xargs -r dirname)"
    [ -n "$found" ] && echo "$found"
  done | awk '!seen[$0]++'
  [ -d /usr/local/nvidia/lib64 ] && echo /usr/local/nvidia/lib64
}

run() {
  [ -f "$BIN" ] || die "$BIN not found: build it with \`bash kernels/gpu-check.sh build\` and pass target-gpu as carry"
  chmod +x "$BIN" 2>/dev/null
  local out="${OUT:-}" log status=0 t0=$SECONDS
  log="${out:+$out/gpu-check.log}"
  log="${log:-/dev/null}"
  local libs
  libs="$(cuda_lib_dirs | paste -sd: -)"
  [ -n "$libs" ] && export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  {
    echo "== built: $(cat "$(dirname "$BIN")/BUILD_COMMIT" 2>/dev/null || echo 'unknown (no BUILD_COMMIT)')"
    echo "== deadline: ${GPU_CHECK_DEADLINE:-520} s"
    echo "== nvidia-smi"
    nvidia-smi || echo "(nvidia-smi failed)"
    echo "== CUDA libraries from: ${libs:-nowhere found}"
    echo "== shared libraries of $BIN"
    ldd "$BIN" | grep -E 'cuda|nvrtc|cublas|curand|not found' || true
    if ldd "$BIN" | grep -q 'not found'; then
      echo "gpu-check: missing shared libraries (above); the binary cannot start" >&2
      exit 3
    fi
  } 2>&1 | tee -a "$log"
  [ "${PIPESTATUS[0]}" = 0 ] || return 3

  echo "== correctness + timings" | tee -a "$log"
  # shellcheck disable=SC2086
  timeout "$(budget 240)" "$BIN" ${GPU_CHECK_ARGS:-} ${out:+--md "$out/gpu-check.md"} 2>&1 | tee -a "$log"
  status=${PIPESTATUS[0]}
  echo "== gpu_check exit status $status ($((SECONDS - t0)) s so far)" | tee -a "$log"

  if [ "${GPU_CHECK_TRAIN:-1}" != 0 ]; then
    echo "== training on the GPU ($(left) s left)" | tee -a "$log"
    train_check 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  fi
  if [ "${GPU_CHECK_STEP:-1}" != 0 ]; then
    echo "== training-step throughput on the GPU ($(left) s left)" | tee -a "$log"
    step_check 2>&1 | tee -a "$log"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
  fi

  # compute-sanitizer (memcheck: out-of-bounds and misaligned accesses; initcheck: reads of
  # uninitialised device memory) on the quick cases, fused ops only. Errors in our kernels
  # (mp_*, ptc_*, cl_*) fail the run; anything else is reported only. Last: it is the slowest
  # part per finding, and what the kernels' own check above does not already cover.
  local san
  san="$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n1)"
  if [ "${GPU_CHECK_SANITIZE:-1}" != 0 ] && [ -n "$san" ]; then
    local tool slog
    for tool in memcheck initcheck; do
      if [ "$(budget 90)" -lt 30 ]; then
        echo "== compute-sanitizer --tool $tool: skipped, no time left" | tee -a "$log"
        continue
      fi
      slog="$(mktemp)"
      echo "== compute-sanitizer --tool $tool (quick cases)" | tee -a "$log"
      timeout "$(budget 90)" "$san" --tool "$tool" --print-limit 20 "$BIN" --sanitize >"$slog" 2>&1
      local rc=$?
      grep -E '^========= ' "$slog" | head -n 60 | tee -a "$log"
      tail -n 3 "$slog" | tee -a "$log"
      if [ "$rc" = 124 ]; then
        echo "== $tool: timed out (not counted)" | tee -a "$log"
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
