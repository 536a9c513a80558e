"""Trainer marker-client benchmark (prints figures; not a test).

    .venv/bin/python bench/bench_trainer.py [--calls 200000] [--repeats 11] [--steps 200] [--model resnet50]

1. `MarkerClient.mark()` cost per call, with its sender thread live against a real
   `power-daemon serve` subprocess: p50/p99 of blocks of 100 calls (per call), and of single
   calls with the timer's own overhead subtracted. Target: p50 < 2 us.
2. Step-time ratio markers on / off for the same tiny training (FourCastNet AFNO 16x32, embed 32,
   depth 2, GBS 4, one process on the CPU; `--model resnet50` for 32x32 ResNet50 steps): runs are
   interleaved on, off, off, on... so drift and noise hit both alike; each run contributes its
   median step time. Target: ratio <= 1.01. Also printed: the sender thread's CPU per marker
   and the overhead it predicts, a figure that noise on a shared machine cannot blur.
3. The same comparison inside one session: marking switched on/off every 4 steps with the client
   and its sender alive throughout (the finest interleaving; both halves share every moment).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import parawatt  # noqa: E402
from parawatt.client import STEP_END, MarkerClient  # noqa: E402
from trainer.config import AfnoShape, TrainConfig  # noqa: E402
from trainer.train.run import train  # noqa: E402


def start_daemon(workdir: Path) -> tuple[subprocess.Popen, str]:
    port_file = workdir / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
         "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("power daemon did not start")
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text().strip()}"


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def bench_mark(address: str, calls: int) -> None:
    client = MarkerClient(address, run_id="bench-mark", rank=0, local_rank=0)
    mark, clock = client.mark, time.perf_counter_ns
    metrics = {"loss": 1.0, "lr": 0.1, "samples": 256}
    for i in range(2000):  # warm-up
        mark(STEP_END, 0, i, metrics)
    blocks = []
    for b in range(calls // 100):
        t0 = clock()
        for i in range(100):
            mark(STEP_END, 0, i, metrics)
        blocks.append((clock() - t0) / 100)
        if b % 50 == 0:
            time.sleep(0.001)  # let the sender drain, as the gaps between steps do
    empty = []
    for _ in range(20000):
        t0 = clock()
        empty.append(clock() - t0)
    overhead = statistics.median(empty)
    single = []
    for i in range(min(calls, 100000)):
        t0 = clock()
        mark(STEP_END, 0, i, metrics)
        single.append(clock() - t0 - overhead)
        if i % 5000 == 0:
            time.sleep(0.001)
    stats = client.close(timeout_s=10)
    print("1. mark() per call (sender live, real daemon)")
    print(f"   blocks of 100: p50 {statistics.median(blocks) / 1000:.3f} us, "
          f"p99 {pct(blocks, 99) / 1000:.3f} us  ({len(blocks)} blocks)")  # fmt: skip
    print(
        f"   single calls (timer overhead {overhead:.0f} ns subtracted): "
        f"p50 {statistics.median(single) / 1000:.3f} us, p99 {pct(single, 99) / 1000:.3f} us"
    )
    print(
        f"   delivered {stats.sent} of {stats.enqueued} markers, dropped {stats.dropped} "
        "(bursts far beyond the queue: the overflow path at work)"
    )


def bench_sender_cpu(address: str, markers: int = 20000) -> float:
    """CPU the background sender spends per marker (what it can take from training)."""
    client = MarkerClient(address, run_id="bench-cpu", rank=0, local_rank=0)
    metrics = {"loss": 1.0, "lr": 0.1, "samples": 256}
    time.sleep(0.2)
    cpu0 = time.process_time()
    for i in range(markers):
        client.mark(STEP_END, 0, i, metrics)
        if i % 1000 == 999:
            time.sleep(0.01)  # stay below the queue bound
    while client.stats().sent < markers:
        time.sleep(0.01)
    per_marker = (time.process_time() - cpu0) / markers
    client.close()
    print(f"   sender thread CPU: {per_marker * 1e6:.1f} us per marker delivered "
          f"(batches of up to 1000, gRPC to the daemon)")  # fmt: skip
    return per_marker


def tiny_config(model: str, steps: int, daemon: str | None) -> TrainConfig:
    common = dict(epochs=1, steps_per_epoch=steps, workers=0, eval_batches=0, progress=False,
                  daemon=daemon, synthetic_size=max(4096, 4 * steps))  # fmt: skip
    if model == "resnet50":
        return TrainConfig(model="resnet50", image_size=32, num_classes=10, global_batch_size=4,
                           **common)  # fmt: skip
    shape = AfnoShape(img_height=16, img_width=32, in_channels=3, out_channels=3, patch_size=4,
                      embed_dim=32, depth=2, num_blocks=4)  # fmt: skip
    return TrainConfig(model="fourcastnet", afno=shape, global_batch_size=4, **common)


def bench_ratio(address: str, model: str, repeats: int, steps: int, sender_s: float) -> None:
    per_step = {"on": [], "off": []}
    train(tiny_config(model, min(steps, 20), None))  # warm-up: imports, allocator, caches
    for r in range(repeats):
        order = ("on", "off") if r % 2 == 0 else ("off", "on")
        for mode in order:
            outcome = train(tiny_config(model, steps, address if mode == "on" else None))
            per_step[mode].append(outcome.summary["step_time_s"]["p50"])
    on, off = per_step["on"], per_step["off"]
    pairs = [a / b for a, b in zip(on, off, strict=True)]
    print(f"2. step time, markers on vs off ({model}, {steps} steps x {repeats} interleaved runs;")
    print("   per run: the median step time, so bursts of other load on the machine drop out)")
    print(f"   on : median {statistics.median(on) * 1e3:.3f} ms/step  "
          f"({', '.join(f'{v * 1e3:.2f}' for v in on)})")  # fmt: skip
    print(f"   off: median {statistics.median(off) * 1e3:.3f} ms/step  "
          f"({', '.join(f'{v * 1e3:.2f}' for v in off)})")  # fmt: skip
    print(
        f"   ratio on/off: {statistics.median(on) / statistics.median(off):.4f} (medians), "
        f"{statistics.median(pairs):.4f} (median of interleaved pairs)"
    )
    budget = 2 * sender_s / statistics.median(off)
    print(
        f"   expected from costs: 2 markers/step x sender CPU = {budget * 100:.3f} % of a step "
        "(+ 2 mark() calls, < 0.001 %)"
    )


def bench_ab(address: str, model: str, steps: int) -> None:
    """One session, one live client; marking switched on and off every few steps, so both
    halves see the same machine at the same moments."""
    from types import SimpleNamespace

    from trainer.train.distributed import init_distributed
    from trainer.train.loop import TrainLoop
    from trainer.train.session import prepare
    from trainer.ui import Progress

    block = 4
    config = tiny_config(model, 2 * steps, None)
    session = prepare(config, init_distributed(), lambda _: "bench-ab")
    live = parawatt.track(daemon=address, run_id="bench-ab").start()
    off = parawatt.track(daemon="off", run_id="bench-ab-off").start()
    stop = SimpleNamespace(requested=False)
    loop = TrainLoop(session.loop_parts(live, Progress(False, 0), stop))
    batches = session.train_loader.iterate(0)
    times = {True: [], False: []}
    for step in range(2 * steps):
        marking = (step // block) % 2 == 0
        loop.p.run = live if marking else off
        began = time.perf_counter()
        loop.train_step(batches, 0, step)
        times[marking].append(time.perf_counter() - began)
    sent = live.end()["markers_sent"]
    off.end()
    on, off = statistics.median(times[True]), statistics.median(times[False])
    print(f"3. within one run, marking switched every {block} steps ({steps} steps each way,")
    print(f"   {sent} markers delivered): on {on * 1e3:.3f} ms/step, off {off * 1e3:.3f} "
          f"ms/step, ratio {on / off:.4f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--model", choices=("fourcastnet", "resnet50"), default="fourcastnet")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # steadier on a shared machine; the same for on and off
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'yes' if torch.cuda.is_available() else 'no'}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        proc, address = start_daemon(Path(tmp))
        try:
            bench_mark(address, args.calls)
            sender_s = bench_sender_cpu(address)
            bench_ratio(address, args.model, args.repeats, args.steps, sender_s)
            bench_ab(address, args.model, 10 * args.steps)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
