"""What rank 0 shows: the run id first, a progress bar on a terminal (plain lines otherwise) for
training and evaluation, and a summary table at the end (tabulate, like every parawatt table)."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable

import click
import tabulate as _tabulate

_PER_CHANNEL = re.compile(r"_c\d+$")


def tabulate(rows, headers=(), colalign=None, tablefmt: str = "simple") -> str:
    """The trainer's tables look like the collector's: tabulate's "simple" format, cells as
    given, columns as wide as their widest cell (tabulate pads headers by 2 by default)."""
    saved, _tabulate.MIN_PADDING = _tabulate.MIN_PADDING, 0
    try:
        return _tabulate.tabulate(
            rows, headers=headers, tablefmt=tablefmt, disable_numparse=True, colalign=colalign
        )
    finally:
        _tabulate.MIN_PADDING = saved


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def start_line(run_id: str, model: str, world_size: int, daemon: str | None) -> str:
    where = f"markers to {daemon}" if daemon else "no power daemon: energy is not recorded"
    return f"run {run_id}: {model}, {plural(world_size, 'rank')}, {where}"


def no_energy_line(daemon: str | None = None) -> str:
    """The run's last line when nothing of it reached a power daemon."""
    why = f"the power daemon at {daemon} did not answer" if daemon else "--daemon none"
    return (
        f"energy not recorded: {why}; start `power-daemon serve` and pass --daemon HOST:PORT "
        "to measure it"
    )


class Progress:
    def __init__(
        self, enabled: bool, total_steps: int, done_steps: int = 0, line_every_s: float = 10.0
    ):
        self.enabled = enabled and total_steps > 0
        self.total, self.done = total_steps, done_steps
        self.tty = sys.stdout.isatty()
        self._bar = None
        self._every_s = line_every_s  # plain-line progress when stdout is not a terminal
        self._last_line = time.monotonic()
        self._info = ""
        self._eval = None  # (bar or None, batches done, total, last line time)
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
        elif now - self._last_line >= self._every_s:
            self._last_line = now
            click.echo(f"step {self.done}/{self.total} epoch {epoch} {info()}")

    def eval_start(self, epoch: int, batches: int | None) -> None:
        """Evaluation begins: `batches` per rank (None: unknown length)."""
        if not self.enabled:
            return
        label = f"epoch {epoch + 1} evaluating"
        if self._bar is not None and batches:
            click.echo("")
            bar = click.progressbar(length=batches, label=label, show_pos=True, file=sys.stdout)
            bar.__enter__()
            self._eval = [bar, 0, batches, time.monotonic()]
        else:
            total = f"{batches} batches" if batches else "the validation set"
            click.echo(f"{label} {total} per rank")
            self._eval = [None, 0, batches, time.monotonic()]

    def eval_step(self) -> None:
        if not self.enabled or self._eval is None:
            return
        bar, done, total, last = self._eval
        self._eval[1] = done = done + 1
        now = time.monotonic()
        if bar is not None:
            bar.update(1)
        elif now - last >= self._every_s:
            self._eval[3] = now
            click.echo(f"evaluating batch {done}/{total or '?'}")

    def eval_end(self) -> None:
        if self._eval is not None and self._eval[0] is not None:
            self._eval[0].__exit__(None, None, None)
        self._eval = None

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
    world, gbs = summary["world_size"], summary["global_batch_size"]
    steps, total_steps = summary["steps"], summary["final_step"] + 1
    rows = [
        ("run id", summary["run_id"]),
        ("status", summary["status"]),
        (
            "model / data",
            f"{summary['model']} on {summary['dataset']} "
            f"({summary['dataset_size']:,} training samples)",
        ),
        (
            "ranks / batch",
            f"{plural(world, 'rank')} on {plural(summary['nodes'], 'node')}, GBS {gbs} = LBS "
            f"{summary['local_batch_size']} x {world} x {summary['accumulation_steps']} "
            "accumulation",
        ),
        (
            "steps",
            f"{steps} this session (epochs {summary['start_epoch']}..{last_epoch}"
            f", {summary['steps_per_epoch']} steps each), last step {summary['final_step']}",
        ),
        (
            "samples",
            f"{steps * gbs:,} this session, {total_steps * gbs:,} in the run (steps x GBS, "
            "as `collector show`)",
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
    rows.append(("markers", _markers(summary["markers"])))
    return tabulate(rows)


def _markers(m: dict) -> str:
    if m["daemon"] == "none":
        return "none sent (no power daemon)"
    per_rank = m.get("per_rank") or []
    ranks = f" by {plural(len(per_rank), 'rank')}" if len(per_rank) > 1 else ""
    rank0 = next((r["sent"] for r in per_rank if r["rank"] == 0), None)
    lead = f" ({rank0} by rank 0 = markers_sent in `collector show`)" if ranks and rank0 else ""
    return f"{m['sent']} sent{ranks}{lead}, {m['dropped']} dropped, to {m['daemon']}"


def run_result_line(result: dict, energy_j: float | None = None) -> str:
    """One line for a finished sweep run, from its JSON summary (and the node's GPU energy)."""
    took = result.get("duration_s")
    parts = [f"{result.get('status') or 'completed'}" + (f" in {took:.1f} s" if took else "")]
    if energy_j is not None:
        parts.append(f"node GPU energy {energy_j / 1e3:.3g} kJ")
    metrics = result.get("metrics") or {}
    shown = [f"{k} {metrics[k]:.4g}" for k in ACCURACY_SHOWN if k in metrics]
    parts.append(", ".join(shown) if shown else "no evaluation")
    return "  " + ", ".join(parts)


ACCURACY_SHOWN = ("eval_top1", "eval_top5", "eval_rmse_mean", "eval_acc_mean", "eval_loss")


def headline_metric(key: str) -> bool:
    """Train loss and evaluation means; per-channel figures (`eval_rmse_c3`) stay in the JSON
    summary and the epoch-end markers."""
    return key == "train_loss" or (key.startswith("eval_") and not _PER_CHANNEL.search(key))
