#!/usr/bin/env bash
# The main job: a complete parawatt demo on this machine's defaults.
#  1. set-up (idempotent), 2. a power daemon (auto backend: NVML on a GPU node, else simulated GPUs),
#  3. a collector writing SQLite, 4. a short 2-process DDP run of each model under torchrun,
#  5. the energy tables; then everything stops cleanly and the database stays for you to explore.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
DIR=${PARAWATT_DEMO_DIR:-parawatt-demo}
NPROC=${PARAWATT_DEMO_NPROC:-2}
mkdir -p "$DIR"
DB="sqlite:///$DIR/parawatt.db"
BIN=.venv/bin
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_file() {  # wait_file PATH PID NAME
  for _ in $(seq 1 300); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 failed to start; its log:" >&2; cat "$4" >&2; exit 1; }
    sleep 0.1
  done
  echo "$3 did not start within 30 s" >&2; exit 1
}

rm -f "$DIR/daemon.port" "$DIR/metrics.port"
"$BIN/power-daemon" serve --listen 127.0.0.1:0 --backend auto --port-file "$DIR/daemon.port" \
  >"$DIR/daemon.log" 2>&1 &
pids+=($!)
wait_file "$DIR/daemon.port" "${pids[-1]}" power-daemon "$DIR/daemon.log"
DAEMON="127.0.0.1:$(cat "$DIR/daemon.port")"
grep -m1 "listening on" "$DIR/daemon.log" || head -n 3 "$DIR/daemon.log"

"$BIN/collector" serve --daemon "$DAEMON" --db "$DB" --metrics-listen 127.0.0.1:0 \
  --metrics-port-file "$DIR/metrics.port" >"$DIR/collector.log" 2>&1 &
pids+=($!)
wait_file "$DIR/metrics.port" "${pids[-1]}" collector "$DIR/collector.log"
METRICS="http://127.0.0.1:$(cat "$DIR/metrics.port")/metrics"
echo "Prometheus metrics: $METRICS"

# Active energy needs each device's idle power, which the collector learns from a minute of idle
# readings (its first idle bucket) and keeps in the database: the first demo waits for it, later
# ones find it there.
"$BIN/python" - "$METRICS" "$DAEMON" <<'PY'
import sys, time, urllib.request
import grpc
from parawatt_proto import parawatt_pb2 as pb, parawatt_pb2_grpc as pb_grpc
metrics, daemon = sys.argv[1:]
with grpc.insecure_channel(daemon) as ch:
    devices = len(pb_grpc.PowerDaemonStub(ch).GetInfo(pb.GetInfoRequest(), timeout=10).devices)
said, deadline = False, time.monotonic() + 100
while time.monotonic() < deadline:
    text = urllib.request.urlopen(metrics, timeout=5).read().decode()
    known = sum(line.startswith("parawatt_device_idle_power_watts{") for line in text.splitlines())
    if known >= devices:
        break
    if not said:
        print("waiting for the collector to learn each device's idle power (a minute, first run only)")
        said = True
    time.sleep(1)
else:
    print("idle power still unknown after 100 s: active energy will be flagged idle_unknown")
PY

train() {
  "$BIN/python" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m trainer train \
    --daemon "$DAEMON" --tag demo=1 --workers 0 "$@"
}
echo; echo "== ResNet50, synthetic images 32x32, GBS 16 = LBS 4 x $NPROC ranks x accumulation"
train --model resnet50 --data synthetic --image-size 32 --num-classes 10 --epochs 2 \
  --steps-per-epoch 5 --global-batch-size 16 --local-batch-size 4 --eval-batches 2
echo; echo "== FourCastNet (AFNO, small shape), synthetic fields"
train --model fourcastnet --data synthetic --img-height 32 --img-width 64 --in-channels 4 \
  --out-channels 4 --patch-size 4 --embed-dim 64 --depth 2 --num-blocks 4 --epochs 2 \
  --steps-per-epoch 20 --global-batch-size 8 --local-batch-size 2 --eval-batches 2

# Let the collector see the last readings after the runs ended, then stop it (it flushes).
sleep 1.5
kill -TERM "${pids[1]}"; wait "${pids[1]}" || true
echo; "$BIN/collector" runs --db "$DB"
for run in $("$BIN/collector" runs --db "$DB" --format csv | tail -n +2 | cut -d, -f1 | tail -n 2); do
  echo; "$BIN/collector" show "$run" --db "$DB"
done
echo; echo "Database: $DIR/parawatt.db  (collector runs --db $DB; collector show RUN_ID --db $DB)"
