"""Checks of the GPU acceptance run (scripts/gpu_check.sh) on a real node: pure checks on plain
data, and a small CLI that feeds them from the daemon, the collector's database and NVML.

    python -m trainer.acceptance readings --daemon HOST:PORT --run-id ID
        every GPU a run trained on: readings through the run carry energy and instant power
    python -m trainer.acceptance energy --db URL --run-id ID --ranks N
        per rank and epoch, the steps' energies add up to the epoch's
    python -m trainer.acceptance watch --out FILE     (until SIGTERM; NVML's process list)
    python -m trainer.acceptance contexts FILE
        no process holds a CUDA context on more than one GPU (the marker thread's context on
        GPU 0 was such a case); prints each process's peak GPU memory

Exit codes: 0 passed, 1 a check failed, 2 the check could not run (no data, unreachable).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import click

from parawatt_proto.cli_args import FiniteFloat

MIN_FRACTION = 0.98  # readings that must carry energy and instant power
STEP_SHARE = (0.85, 1.02)  # sum of step energies / epoch energy (eval off: only small gaps)


@dataclass
class Coverage:
    readings: int = 0
    energy: int = 0
    instant: int = 0

    def fraction(self, what: str) -> float:
        return getattr(self, what) / self.readings if self.readings else 0.0


def reading_coverage(
    readings: Iterable[tuple[str, int, bool, bool]], start_ns: int, end_ns: int
) -> dict[str, Coverage]:
    """(device, time_ns, has energy, has instant power) -> per device counts in [start, end]."""
    out: dict[str, Coverage] = defaultdict(Coverage)
    for device, t, energy, instant in readings:
        if start_ns <= t <= end_ns:
            c = out[device]
            c.readings, c.energy, c.instant = c.readings + 1, c.energy + energy, c.instant + instant
    return dict(out)


def step_shares(rows: Iterable[tuple[str, int, int, float | None]]) -> dict[tuple, float]:
    """(kind, rank, epoch, energy_j) of GPU intervals -> (rank, epoch): sum of steps / epoch."""
    steps: dict[tuple, float] = defaultdict(float)
    epochs: dict[tuple, float] = {}
    for kind, rank, epoch, energy in rows:
        if kind == "step":
            steps[(rank, epoch)] += energy or 0.0
        elif kind == "epoch" and energy:
            epochs[(rank, epoch)] = energy
    return {key: steps[key] / e for key, e in sorted(epochs.items())}


def multi_gpu_processes(samples: Iterable[tuple[int, str]]) -> dict[int, set[str]]:
    """(pid, gpu uuid) pairs seen in NVML's process lists -> pids on more than one GPU."""
    gpus: dict[int, set[str]] = defaultdict(set)
    for pid, uuid in samples:
        gpus[pid].add(uuid)
    return {pid: g for pid, g in gpus.items() if len(g) > 1}


@click.group()
def main() -> None:
    """Checks of a GPU acceptance run (see scripts/gpu_check.sh)."""


@main.command()
@click.option("--daemon", "address", required=True, help="HOST:PORT of the node's daemon")
@click.option("--run-id", required=True)
@click.option("--min-fraction", type=click.FloatRange(0, 1), default=MIN_FRACTION)
def readings(address: str, run_id: str, min_fraction: float) -> None:
    """Readings of the run's GPUs, from its first RUN_START to its last RUN_END."""
    import grpc

    from parawatt_proto import convert
    from parawatt_proto import parawatt_pb2 as pb
    from parawatt_proto import parawatt_pb2_grpc as pb_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PowerDaemonStub(channel)
            info = stub.GetInfo(pb.GetInfoRequest(), timeout=10)
            request = pb.SubscribeRequest(from_seq=0, no_follow=True, max_batch=5000)
            batches = list(stub.Subscribe(request, timeout=120))
    except grpc.RpcError as e:
        _fail(2, f"cannot read the daemon at {address}: {e.code().name}")
    devices = convert.node_rec(info).devices
    uuids = {d.index: d.uuid for d in devices}
    no_instant = {d.uuid: d.power_avg_window_s for d in devices if not d.has_instant_power}
    markers = [convert.marker_rec(m) for b in batches for m in b.markers if m.run_id == run_id]
    starts = [m.time_ns for m in markers if m.kind == "run_start"]
    ends = [m.time_ns for m in markers if m.kind == "run_end"]
    if not starts or not ends:
        _fail(2, f"run {run_id}: no RUN_START/RUN_END in the daemon's buffer")
    used = {m.device_uuid for m in markers}
    rows = (
        (r.device_uuid, r.time_ns, r.energy_j is not None,
         r.power_w is not None and not r.power_from_avg)
        for b in batches for r in convert.readings(b, uuids) if r.device_uuid in used
    )  # fmt: skip
    coverage = reading_coverage(rows, min(starts), max(ends))
    bad = []
    for uuid in sorted(used):
        c = coverage.get(uuid, Coverage())
        e, i = c.fraction("energy"), c.fraction("instant")
        click.echo(f"  {uuid}: {c.readings} readings, energy {e:.1%}, instant power {i:.1%}")
        if uuid in no_instant:
            click.echo(f"    this driver offers no instant power (field 186): power is the "
                       f"average over {no_instant[uuid] or '?'} s")  # fmt: skip
        if min(e, i) < min_fraction:
            bad.append(uuid)
    if bad:
        _fail(1, f"readings lack energy or instant power (< {min_fraction:.0%}) on {bad}")
    click.echo("ok: readings carry energy and instant power throughout")


@main.command()
@click.option("--db", required=True, help="the collector's database URL")
@click.option("--run-id", required=True)
@click.option("--ranks", type=click.IntRange(min=1), required=True)
@click.option(
    "--wait-s", type=FiniteFloat(min=0), default=120.0, help="for the collector to write the run"
)
def energy(db: str, run_id: str, ranks: int, wait_s: float) -> None:
    """Per rank and epoch: the steps' GPU energies add up to the epoch's."""
    from sqlalchemy import create_engine, text

    query = text(
        "SELECT i.kind, i.rank, i.epoch, i.energy_j FROM interval i "
        "JOIN device d ON d.id = i.device_id WHERE i.run_id = :run AND d.kind = 'gpu'"
    )
    engine = create_engine(db)
    deadline = time.monotonic() + wait_s
    while True:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(query, {"run": run_id})]
        if sum(r[0] == "run" for r in rows) >= ranks or time.monotonic() > deadline:
            break
        time.sleep(2)
    engine.dispose()
    if sum(r[0] == "run" for r in rows) < ranks:
        _fail(2, f"run {run_id}: the collector wrote no run interval for every rank in {wait_s} s")
    shares = step_shares(rows)
    lo, hi = STEP_SHARE
    for (rank, epoch), share in shares.items():
        click.echo(f"  rank {rank} epoch {epoch}: steps hold {share:.1%} of the epoch's energy")
    bad = [k for k, s in shares.items() if not lo <= s <= hi]
    if not shares or bad:
        _fail(1, f"step energies do not add up to the epoch ({lo:.0%}..{hi:.0%}): {bad}")
    click.echo("ok: step energies add up to their epochs")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--interval-s", type=FiniteFloat(min=0.01), default=1.0)
def watch(out: Path, interval_s: float) -> None:
    """Append NVML's compute process list (pid, GPU, memory) to OUT until SIGTERM."""
    import pynvml

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    pynvml.nvmlInit()
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [pynvml.nvmlDeviceGetUUID(h) for h in handles]
        with out.open("a") as f:
            while not stop.is_set():
                for uuid, h in zip(uuids, handles, strict=True):
                    for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h):
                        row = {"pid": p.pid, "gpu": uuid, "mem": p.usedGpuMemory or 0}
                        f.write(json.dumps(row) + "\n")
                f.flush()
                stop.wait(interval_s)
    finally:
        pynvml.nvmlShutdown()


@main.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def contexts(path: Path) -> None:
    """No process on more than one GPU; peak memory per process and GPU."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        _fail(2, f"{path}: NVML listed no compute process during the runs")
    peak: dict[tuple[int, str], int] = defaultdict(int)
    for r in rows:
        peak[(r["pid"], r["gpu"])] = max(peak[(r["pid"], r["gpu"])], r["mem"])
    for (pid, gpu), mem in sorted(peak.items()):
        click.echo(f"  pid {pid} on {gpu}: peak {mem / 2**30:.2f} GiB")
    extra = multi_gpu_processes((r["pid"], r["gpu"]) for r in rows)
    if extra:
        _fail(1, "processes with CUDA contexts on several GPUs: "
                 + "; ".join(f"pid {p}: {sorted(g)}" for p, g in extra.items()))  # fmt: skip
    click.echo("ok: every process holds a CUDA context on one GPU only")


def _fail(code: int, message: str):
    click.echo(f"FAIL: {message}" if code == 1 else f"cannot check: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
