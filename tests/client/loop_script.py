"""A user's plain training loop instrumented with `parawatt.track` (run by the client tests, alone
or under torchrun). Prints `RUN_ID <id>` and `SUMMARY <json>` on rank 0 (every rank with --all).

    python -m tests.client.loop_script --daemon ADDR [--dist] [--epochs 2] [--steps 4]
        [--step-s 0.05] [--fail-at STEP] [--block-at STEP] [--ready-file PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import parawatt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--dist", action="store_true", help="init a gloo process group first")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--step-s", type=float, default=0.05)
    ap.add_argument("--fail-at", type=int, default=-1)
    ap.add_argument("--block-at", type=int, default=-1)
    ap.add_argument("--ready-file", default="")
    args = ap.parse_args()
    rank = 0
    if args.dist:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        rank = dist.get_rank()
    run = parawatt.track(daemon=args.daemon, config={"model": "tinyloop", "global_batch_size": 8},
                         tags={"exp": "client"})  # fmt: skip
    try:
        with run:
            if rank == 0:
                print(f"RUN_ID {run.id}", flush=True)
            step = 0
            for _ in range(args.epochs):
                with run.epoch() as epoch:
                    for _ in range(args.steps):
                        if step == args.fail_at:
                            raise RuntimeError("boom")
                        if step == args.block_at:
                            if args.ready_file:
                                Path(args.ready_file).write_text(run.id)
                            time.sleep(600)  # until SIGTERM / SIGINT
                        time.sleep(args.step_s)
                        run.step(loss=1.0 / (step + 1))
                        step += 1
                    epoch.metrics["train_loss"] = 0.5
    finally:
        if rank == 0:
            print(f"SUMMARY {json.dumps(run.summary)}", flush=True)
        if args.dist:
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
