#!/usr/bin/env bash
# GPU acceptance check for one real GPU node, in a few minutes:
#   1. `power-daemon doctor` (a missing item other than RAPL fails the check; skipped, with a
#      note, where this power-daemon has no such command)
#   2. a power daemon (NVML backend) and a collector (SQLite in $GPU_CHECK_DIR)
#   3. ResNet50 on synthetic ImageNet-sized images at the study's LBS 256, on 1 GPU and then on
#      all GPUs, $GPU_CHECK_EPOCHS x $GPU_CHECK_STEPS steps each, evaluation off
#   4. checks, per run: readings carry energy and instant power throughout; per rank and epoch
#      the steps' energies add up to the epoch's; no process holds a CUDA context on more than
#      one GPU (NVML's process list, sampled through the runs); prints peak GPU memory per
#      process and throughput.
# Exit 0 when every check passed, 1 when one failed, 2 when it cannot run (e.g. no GPU).
# Knobs: GPU_CHECK_DIR (default gpu-check), GPU_CHECK_LBS (256), GPU_CHECK_STEPS (100),
#        GPU_CHECK_EPOCHS (2), GPU_CHECK_TRAIN_ARGS (extra `trainer train` flags, e.g. --amp).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${PARAWATT_BIN:-.venv/bin}
DIR=${GPU_CHECK_DIR:-gpu-check}
LBS=${GPU_CHECK_LBS:-256}
STEPS=${GPU_CHECK_STEPS:-100}
EPOCHS=${GPU_CHECK_EPOCHS:-2}
EXTRA=${GPU_CHECK_TRAIN_ARGS:-}

die() { echo "gpu_check: $*" >&2; exit 2; }

# -- preflight: a GPU, a driver, and torch that sees it ------------------------------------------
command -v nvidia-smi >/dev/null 2>&1 || die "no NVIDIA driver here (nvidia-smi not found); run this on a GPU node"
GPUS=$(nvidia-smi --query-gpu=uuid --format=csv,noheader 2>/dev/null | grep -c '^GPU-' || true)
[ "$GPUS" -ge 1 ] || die "nvidia-smi lists no GPU; run this on a GPU node"
[ -x "$BIN/python" ] || die "no $BIN/python: run scripts/setup.sh first (or set PARAWATT_BIN)"
"$BIN/python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "torch in $BIN does not see a GPU (a CPU-only torch build?)"
echo "gpu_check: $GPUS GPU(s): $(nvidia-smi --query-gpu=name --format=csv,noheader | sort | uniq -c | xargs)"

mkdir -p "$DIR"
DB="sqlite:///$DIR/gpu_check.db"
rm -f "$DIR/daemon.port" "$DIR/metrics.port" "$DIR/gpu_check.db" "$DIR"/contexts-*.jsonl
failed=0
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
check() {  # check NAME COMMAND...: run one check, remember a failure, go on
  echo "-- $1"; shift
  "$@" || { rc=$?; [ $rc -eq 2 ] && echo "   (could not run)"; failed=1; }
}
wait_file() {  # wait_file PATH PID NAME LOG
  for _ in $(seq 1 600); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 failed to start; its log:" >&2; cat "$4" >&2; exit 2; }
    sleep 0.1
  done
  die "$3 did not start within 60 s"
}

# -- 1. doctor --------------------------------------------------------------------------------------
doctor() {  # the node's sensors; RAPL (CPU/DRAM) missing is reported but fails nothing here
  "$BIN/power-daemon" doctor --backend nvml --format json >"$DIR/doctor.json" || true
  "$BIN/python" - "$DIR/doctor.json" <<'EOF'
import json, sys
try:
    checks = json.load(open(sys.argv[1]))["checks"]
except (OSError, ValueError, KeyError):
    sys.exit("power-daemon doctor gave no report")
for c in checks:
    fix = f" (fix: {c['fix']})" if c["fix"] and c["verdict"] != "ok" else ""
    print(f"   {c['verdict']:9s} {c['item']}: {c['detail']}{fix}")
sys.exit(1 if any(c["verdict"] == "missing" and c["item"] != "rapl" for c in checks) else 0)
EOF
}
if "$BIN/power-daemon" doctor --help >/dev/null 2>&1; then
  check "power-daemon doctor" doctor
else
  echo "-- power-daemon doctor: skipped (this power-daemon has no 'doctor' command)"
fi

# -- 2. daemon and collector ------------------------------------------------------------------------
"$BIN/power-daemon" serve --backend nvml --listen 127.0.0.1:0 --port-file "$DIR/daemon.port" \
  >"$DIR/daemon.log" 2>&1 &
pids+=($!)
wait_file "$DIR/daemon.port" "${pids[-1]}" power-daemon "$DIR/daemon.log"
DAEMON="127.0.0.1:$(cat "$DIR/daemon.port")"
head -n 1 "$DIR/daemon.log"
"$BIN/collector" serve --daemon "$DAEMON" --db "$DB" --metrics-listen 127.0.0.1:0 \
  --metrics-port-file "$DIR/metrics.port" >"$DIR/collector.log" 2>&1 &
pids+=($!)
wait_file "$DIR/metrics.port" "${pids[-1]}" collector "$DIR/collector.log"

# -- 3. and 4. the runs and their checks -------------------------------------------------------------
run_and_check() {  # run_and_check NPROC
  local n=$1 run="gpu-check-${1}gpu-$(date +%s)" summary="$DIR/summary-${1}gpu.json"
  local contexts="$DIR/contexts-${1}gpu.jsonl"
  echo; echo "== ResNet50, LBS $LBS on $n GPU(s), $EPOCHS x $STEPS steps, run $run"
  "$BIN/python" -m trainer.acceptance watch --out "$contexts" &
  local watcher=$!
  # shellcheck disable=SC2086  # GPU_CHECK_TRAIN_ARGS is a list of flags
  if ! "$BIN/python" -m torch.distributed.run --standalone --nproc-per-node "$n" -m trainer train \
      --quiet --model resnet50 --data synthetic --image-size 224 --num-classes 1000 \
      --local-batch-size "$LBS" --epochs "$EPOCHS" --steps-per-epoch "$STEPS" --eval-batches 0 \
      --synthetic-size $((LBS * n * STEPS + LBS * n)) --daemon "$DAEMON" --run-id "$run" \
      --tag gpu_check=1 --output "$summary" $EXTRA; then
    echo "FAIL: the $n-GPU training run failed"; failed=1
  fi
  kill -TERM "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true
  [ -s "$summary" ] && "$BIN/python" - "$summary" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"   throughput {s['samples_per_s']:.1f} samples/s ({s['samples_per_s'] / s['world_size']:.1f}"
      f" per GPU), step time p50 {s['step_time_s']['p50'] * 1e3:.1f} ms, status {s['status']},"
      f" precision {s['recipe'].get('precision')}, tf32 {s['recipe'].get('tf32')}")
EOF
  check "readings ($n GPU)" "$BIN/python" -m trainer.acceptance readings --daemon "$DAEMON" --run-id "$run"
  check "step vs epoch energy ($n GPU)" "$BIN/python" -m trainer.acceptance energy --db "$DB" \
    --run-id "$run" --ranks "$n"
  check "CUDA contexts and GPU memory ($n GPU)" "$BIN/python" -m trainer.acceptance contexts "$contexts"
}
run_and_check 1
[ "$GPUS" -gt 1 ] && run_and_check "$GPUS"

echo
if [ "$failed" -ne 0 ]; then echo "gpu_check: FAILED (logs and database in $DIR/)"; exit 1; fi
echo "gpu_check: all checks passed (logs and database in $DIR/)"
