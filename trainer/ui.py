"""What rank 0 shows: a progress bar on a terminal (plain lines otherwise) and a summary table."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import click

_LINE_EVERY_S = 10.0  # plain-line progress when stdout is not a terminal
_PER_CHANNEL = re.compile(r"_c\d+$")


class Progress:
    def __init__(self, enabled: bool, total_steps: int, done_steps: int = 0):
        self.enabled = enabled and total_steps > 0
        self.total, self.done = total_steps, done_steps
        self.tty = sys.stdout.isatty()
        self._bar = None
        self._last_line = time.monotonic()
        self._info = ""
        if self.enabled and self.tty:
            self._bar = click.progressbar(
                length=total_steps,
                label="training",
                show_pos=True,
                show_eta=True,
                item_show_func=lambda _: self._info,
                file=sys.stdout,
            )
            self._bar.__enter__()
            self._bar.update(done_steps)

    def step(self, epoch: int, info: Callable[[], str]) -> None:
        """One optimizer step done; `info` is only called when something is shown (it may sync)."""
        if not self.enabled:
            return
        self.done += 1
        now = time.monotonic()
        if self._bar is not None:
            if now - self._last_line >= 1.0:
                self._info, self._last_line = f"epoch {epoch} {info()}", now
            self._bar.update(1, None)
        elif now - self._last_line >= _LINE_EVERY_S:
            self._last_line = now
            click.echo(f"step {self.done}/{self.total} epoch {epoch} {info()}")

    def epoch_end(
        self, epoch: int, epochs: int, metrics: dict[str, float], duration_s: float, complete: bool
    ) -> None:
        if not self.enabled:
            return
        shown = {k: v for k, v in metrics.items() if headline_metric(k)}
        text = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        verb = "done" if complete else f"stopped after {metrics.get('steps', 0):.0f} steps"
        line = f"epoch {epoch + 1}/{epochs} {verb} in {duration_s:.1f} s: {text}"
        if self._bar is not None:
            click.echo("")
        click.echo(line)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def summary_table(summary: dict) -> str:
    # An interrupted run ends before its planned last epoch: show the epochs it did run.
    ran = summary.get("epoch_results") or []
    last_epoch = ran[-1]["epoch"] if ran else summary["epochs"] - 1
    rows = [
        ("run id", summary["run_id"]),
        ("status", summary["status"]),
        ("model / data", f"{summary['model']} on {summary['dataset']} ({summary['dataset_size']})"),
        (
            "ranks / batch",
            f"{summary['world_size']} ranks on {summary['nodes']} node(s), GBS "
            f"{summary['global_batch_size']} = LBS {summary['local_batch_size']} x "
            f"{summary['world_size']} x {summary['accumulation_steps']} accumulation",
        ),
        (
            "steps",
            f"{summary['steps']} this session (epochs {summary['start_epoch']}..{last_epoch}"
            f", {summary['steps_per_epoch']} steps each), last step {summary['final_step']}",
        ),
        (
            "time",
            f"{summary['duration_s']:.2f} s ({summary['setup_duration_s']:.2f} s set-up, "
            f"{summary['train_duration_s']:.2f} s training)",
        ),
        ("throughput", f"{summary['samples_per_s']:.2f} samples/s"),
    ]
    metrics = summary.get("metrics", {})
    for key in sorted(metrics):
        if headline_metric(key):
            rows.append((key, f"{metrics[key]:.5g}"))
    markers = summary["markers"]
    rows.append(
        ("markers", f"{markers['sent']} sent, {markers['dropped']} dropped ({markers['daemon']})")
    )
    width = max(len(k) for k, _ in rows)
    rule = "-" * (width + 3 + max(len(str(v)) for _, v in rows))
    body = "\n".join(f"{k.ljust(width)} | {v}" for k, v in rows)
    return f"{rule}\n{body}\n{rule}"


def headline_metric(key: str) -> bool:
    """Train loss and evaluation means; per-channel figures (`eval_rmse_c3`) stay in the JSON
    summary and the epoch-end markers."""
    return key == "train_loss" or (key.startswith("eval_") and not _PER_CHANNEL.search(key))
