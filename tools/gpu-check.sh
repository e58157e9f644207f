#!/usr/bin/env bash
# The GPU check of issue #11, prepared where there is no GPU and run on a lent GPU machine that
# has no network and about 15 minutes of device time, machine start and transfers included.
# Nothing is compiled there: the binaries are built here and carried over.
#
#   tools/gpu-check.sh bundle   here: build `cace` and the parity / device tests with
#                               `cuda,wgpu`, pack them, the libraries they load and the golden
#                               vectors into .gpu-bundle/ (ignored by git), print the sizes
#   tools/gpu-check.sh stage    there, when the bundle travels in two calls: unpack what came
#   tools/gpu-check.sh run      there: parity tests on cuda and wgpu, device tests on cuda (bf16
#                               among them), `cace bench --device cuda --json` in f32 and in
#                               bf16, a 200-epoch training on a
#                               full-size (4,143-video) synthetic set (time-capped), one summary
#
# A device call carries at most 64 MiB (checkout included). When .gpu-bundle/ fits, one call:
#   run(carry=[".gpu-bundle"], command="tools/gpu-check.sh run", timeout_s=600)
# otherwise two calls, the second right after the first (a machine stays warm for 30 s):
#   run(carry=[".gpu-bundle/golden"], command="tools/gpu-check.sh stage", timeout_s=120)
#   run(carry=[".gpu-bundle/bin"], command="tools/gpu-check.sh run", timeout_s=600)
# `bundle` prints which. The summary is printed last and also written to $OUT/gpu-check.json.
#
# Settings (environment), with defaults:
#   GPU_CHECK_DEVICE=cuda          main device (parity, device tests, bench, training)
#   GPU_CHECK_SECOND_DEVICE=wgpu   also runs the parity tests ("" to skip)
#   GPU_CHECK_VIDEOS=4143          synthetic set size;  GPU_CHECK_EPOCHS=200
#   GPU_CHECK_BUDGET_S=540         wall-clock budget of `run`; training gets what is left
#   GPU_CHECK_BENCH_REPS=10        GPU_CHECK_BUNDLE=.gpu-bundle
# Dry run of the logic on a CPU machine, after `bundle` or with GPU_CHECK_BIN = a folder holding
# `cace`, `parity` and `device` from any build (and CACE_GOLDEN_DIR=../shared/golden):
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SECOND_DEVICE= GPU_CHECK_VIDEOS=40 GPU_CHECK_EPOCHS=2 \
#     tools/gpu-check.sh run
set -euo pipefail
cd "$(dirname "$0")/.."

B=${GPU_CHECK_BUNDLE:-.gpu-bundle}
FEATURES=cuda,wgpu
LIMIT_BYTES=$((64 << 20))

log() { printf '[gpu-check %s] %s\n' "$(date +%T)" "$*" >&2; }

# ------------------------------------------------------------------------------- bundle (here)
# Binaries with static LLVM are ~140 MB each stripped; one tar through xz with a dictionary
# larger than a binary stores what they share once (three binaries: ~42 MB instead of ~90).
XZ_BIG=(xz -T1 --lzma2=preset=9,dict=512MiB)

bundle() {
  local target=${CARGO_TARGET_DIR:-target-cuda}
  export CARGO_TARGET_DIR=$target
  tools/setup-cuda.sh
  log "building cace and the tests with --features $FEATURES in $target"
  cargo build --release --no-default-features --features "$FEATURES"
  local json stage
  json=$(cargo test --release --no-default-features --features "$FEATURES" \
    --test parity --test device --no-run --message-format=json)
  stage=$(mktemp -d)
  mkdir -p "$stage/lib/vulkan" "$stage/cuda/nvvm/libdevice"
  cp "$target/release/cace" "$stage/cace"
  for t in parity device; do
    local exe
    exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
name = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable"):
        print(m["executable"])' "$t")
    [ -n "$exe" ] || { echo "error: no test executable for $t" >&2; exit 1; }
    cp "$exe" "$stage/$t"
  done
  strip --strip-all "$stage/cace" "$stage/parity" "$stage/device"

  # Shared libraries the binary needs beyond glibc / libstdc++ (HDF5 and what it pulls in),
  # and the Vulkan loader, which the GPU machine may lack (used only then).
  ldd "$stage/cace" | awk '$3 ~ /^\// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|libgcc_s.so*|libstdc++.so*|ld-linux*) ;;
      *) cp -L "$lib" "$stage/lib/" ;;
    esac
  done
  cp -L /usr/lib/x86_64-linux-gnu/libvulkan.so.1 "$stage/lib/vulkan/"

  # libdevice (CUDA's math library as LLVM bitcode), from PyPI's nvidia-cuda-nvcc-cu12, in case
  # the machine has no CUDA toolkit.
  local wheels
  wheels=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 \
    --python-version 3.12 -d "$wheels" 'nvidia-cuda-nvcc-cu12==12.8.93'
  python3 - "$wheels"/*.whl "$stage/cuda/nvvm/libdevice/libdevice.10.bc" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("nvvm/libdevice/libdevice.10.bc"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
  rm -rf "$wheels"
  git rev-parse HEAD > "$stage/COMMIT"

  rm -rf "$B" && mkdir -p "$B/bin" "$B/golden"
  log "compressing the binaries (a few minutes)"
  tar cf - -C "$stage" . | "${XZ_BIG[@]}" > "$B/bin/bins.tar.xz"
  rm -rf "$stage"
  local golden=${CACE_GOLDEN_DIR:-../shared/golden}
  tar cf - -C "$golden" cace_golden.safetensors cace_init.pth.tar grad_norm_keys.json \
    | "${XZ_BIG[@]}" > "$B/golden/golden.tar.xz"

  local tree bin gold
  tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
  bin=$(du -sb "$B/bin" | cut -f1)
  gold=$(du -sb "$B/golden" | cut -f1)
  log "checkout $(mib "$tree"), $B/bin $(mib "$bin"), $B/golden $(mib "$gold") (limit per call: 64 MiB)"
  if ((tree + bin + gold <= LIMIT_BYTES)); then
    echo 'one call:  run(carry=[".gpu-bundle"], command="tools/gpu-check.sh run", timeout_s=600)'
  elif ((tree + bin <= LIMIT_BYTES && tree + gold <= LIMIT_BYTES)); then
    echo 'two calls, the second at once after the first:'
    echo '  run(carry=[".gpu-bundle/golden"], command="tools/gpu-check.sh stage", timeout_s=120)'
    echo '  run(carry=[".gpu-bundle/bin"], command="tools/gpu-check.sh run", timeout_s=600)'
  else
    echo "error: a part of the bundle does not fit in one call" >&2
    exit 1
  fi
}

mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }

untar_xz() { # FILE.tar.xz DIR
  mkdir -p "$2"
  if command -v xz >/dev/null; then xz -dc "$1" | tar xf - -C "$2"; else
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1], "r:xz").extractall(sys.argv[2])' "$1" "$2"
  fi
}

# -------------------------------------------------------------------------- stage / run (there)
stage() {
  local g=$B/golden
  [ -e "$g/golden.tar.xz" ] || { log "no $g/golden.tar.xz here"; return 1; }
  [ -s "$g/cace_init.pth.tar" ] || untar_xz "$g/golden.tar.xz" "$g"
  log "golden vectors ready in $g: $(ls "$g" | tr '\n' ' ')"
}

START=$(date +%s)
elapsed() { echo $(($(date +%s) - START)); }
BUDGET=${GPU_CHECK_BUDGET_S:-540}
# At most N seconds, and no more than the budget leaves (keeping 20 s for the summary).
cap() {
  local left=$((BUDGET - $(elapsed) - 20))
  if ((left < 10)); then left=10; fi
  if (($1 < left)); then echo "$1"; else echo "$left"; fi
}

declare -A RESULT SECONDS_USED
step() { # NAME TIMEOUT_S COMMAND... : runs, records ok / FAILED (rc) and the time
  local name=$1 limit=$2 t0 rc=0
  shift 2
  t0=$(date +%s)
  log "$name (at most ${limit} s): $*"
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  SECONDS_USED[$name]=$(($(date +%s) - t0))
  case $rc in
    0) RESULT[$name]=ok ;;
    124 | 137) RESULT[$name]="TIMED OUT after ${limit} s" ;;
    *) RESULT[$name]="FAILED (exit $rc)" ;;
  esac
  log "$name: ${RESULT[$name]} in ${SECONDS_USED[$name]} s"
}

run_checks() {
  local dev=${GPU_CHECK_DEVICE:-cuda} dev2=${GPU_CHECK_SECOND_DEVICE-wgpu}
  local videos=${GPU_CHECK_VIDEOS:-4143} epochs=${GPU_CHECK_EPOCHS:-200}
  local reps=${GPU_CHECK_BENCH_REPS:-10}
  local work=${GPU_CHECK_WORK:-/tmp/cace-gpu-check}
  local out=${OUT:-$work/out}
  rm -rf "$work" && mkdir -p "$work/bin" "$out"

  # Binaries: from the bundle, or a local build folder (GPU_CHECK_BIN, for a dry run).
  local bin=$work/bin
  if [ -n "${GPU_CHECK_BIN:-}" ]; then
    bin=$GPU_CHECK_BIN
  else
    [ -e "$B/bin/bins.tar.xz" ] || { echo "error: no $B/bin/bins.tar.xz: run 'tools/gpu-check.sh bundle' and carry $B/bin" >&2; exit 1; }
    untar_xz "$B/bin/bins.tar.xz" "$bin"
    export LD_LIBRARY_PATH=$bin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
  if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1 ' && [ -d "$bin/lib/vulkan" ]; then
    export LD_LIBRARY_PATH=$bin/lib/vulkan${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
  # The NVIDIA Vulkan driver in containers (device README): point the loader at it if needed.
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  if [ -z "${VK_DRIVER_FILES:-}" ] && [ -e "$icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES=$icd
  fi
  # libdevice for CUDA kernels' math: the machine's toolkit, else the bundled copy.
  if [ -z "${CUDA_PATH:-}" ]; then
    for c in /usr/local/cuda /usr/local/cuda-* "$bin/cuda"; do
      if [ -e "$c/nvvm/libdevice/libdevice.10.bc" ]; then export CUDA_PATH=$c; break; fi
    done
  fi
  log "device $dev (second: ${dev2:-none}); CUDA_PATH=${CUDA_PATH:-unset}; VK_DRIVER_FILES=${VK_DRIVER_FILES:-unset}; bundle commit $(cat "$bin/COMMIT" 2>/dev/null || echo -)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true

  local golden=${CACE_GOLDEN_DIR:-$B/golden}
  if [ -z "${CACE_GOLDEN_DIR:-}" ] && [ -d "$golden" ] && [ ! -s "$golden/cace_init.pth.tar" ]; then
    stage || true
  fi
  golden=$(cd "$golden" 2>/dev/null && pwd || echo "$golden")
  export CACE_GOLDEN_DIR=$golden CACE_BIN=$bin/cace
  local have_golden=yes
  [ -s "$golden/cace_init.pth.tar" ] && [ -s "$golden/cace_golden.safetensors" ] || have_golden=no

  for d in $dev $dev2; do
    if [ "$have_golden" = yes ] && [ -x "$bin/parity" ]; then
      step "parity on $d" "$(cap 150)" env CACE_TEST_DEVICE="$d" "$bin/parity"
    else
      RESULT["parity on $d"]="NOT RUN (no golden vectors or parity binary)"
    fi
  done
  if [ -x "$bin/device" ]; then
    step "device tests on $dev" "$(cap 150)" env CACE_TEST_DEVICE="$dev" "$bin/device"
  fi
  step "bench on $dev" "$(cap 120)" sh -c "'$bin/cace' bench --device '$dev' --json --reps $reps > '$out/bench.json'"
  step "bench on $dev, bf16" "$(cap 60)" sh -c "'$bin/cace' bench --device '$dev' --precision bf16 --json --reps $reps > '$out/bench-bf16.json'"
  step "synthetic set ($videos videos)" "$(cap 150)" "$bin/cace" synth --out "$work/synth" --videos "$videos" --f32
  step "train $epochs epochs on $dev" "$(cap 100000)" "$bin/cace" train --data "$work/synth" --out "$work/run" \
    --epochs "$epochs" --device "$dev"

  python3 - "$work/run" "$out" "$epochs" "$(elapsed)" <<'PY' || true
import json, os, sys
run, out, epochs, total = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = {"wall_s": total}
for key, name in (("bench", "bench.json"), ("bench_bf16", "bench-bf16.json")):
    try:
        s[key] = json.load(open(os.path.join(out, name)))
    except Exception as e:
        s[key] = f"none ({e})"
try:
    m = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if l.strip()]
except Exception:
    m = []
if m:
    secs = [x["seconds"] for x in m]
    later = secs[1:] or secs
    s["training"] = {
        "epochs_done": len(m), "epochs_asked": epochs,
        "first_epoch_s": round(secs[0], 2), "epoch_s_median_after_first": round(sorted(later)[len(later) // 2], 2),
        "projected_total_s": round(secs[0] + sorted(later)[len(later) // 2] * (epochs - 1), 1),
        "last": {k: m[-1][k] for k in ("epoch", "train_loss", "train_acc", "val_acc", "test_acc")},
        "best_val_acc": max((x["val_acc"] or 0) for x in m),
    }
    rep = os.path.join(run, "report.json")
    if os.path.exists(rep):
        s["training"]["report"] = json.load(open(rep))
open(os.path.join(out, "gpu-check.json"), "w").write(json.dumps(s, indent=1))
print("GPU_CHECK_JSON " + json.dumps(s))
PY
  echo "================ gpu-check summary ================"
  for k in "${!RESULT[@]}"; do
    printf '%-34s %-30s %s\n' "$k" "${RESULT[$k]}" "${SECONDS_USED[$k]:+${SECONDS_USED[$k]} s}"
  done | sort
  echo "total $(elapsed) s; details: $out/gpu-check.json"
}

case "${1:-}" in
  bundle) bundle ;;
  stage) stage ;;
  run) run_checks ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
