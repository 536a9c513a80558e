"""Run and epoch tables for the CLI: text table, JSON or CSV from the query records (pure)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import tabulate as _tabulate

from collector.summary import EpochSummary, RunSummary

if TYPE_CHECKING:
    from collector.store.queries import JobStep, RankStep

FORMATS = ("table", "json", "csv")

# (field, header in the text table, decimals); JSON/CSV use the field names and full values.
RUN_COLUMNS = (
    ("run_id", "run", None),
    ("model", "model", None),
    ("status", "status", None),
    ("world_size", "GPUs", None),
    ("nodes", "nodes", None),
    ("global_batch_size", "GBS", None),
    ("local_batch_size", "LBS", None),
    ("epochs", "epochs", None),
    ("steps", "steps", None),
    ("duration_s", "time s", 1),
    ("gpu_hours", "GPU-h", 4),
    ("energy_j", "energy J", 1),
    ("active_energy_j", "active J", 1),
    ("j_per_sample", "J/sample", 3),
    ("flags", "flags", None),
)
EPOCH_COLUMNS = (
    ("epoch", "epoch", None),
    ("steps", "steps", None),
    ("duration_s", "time s", 2),
    ("energy_j", "energy J", 1),
    ("active_energy_j", "active J", 1),
    ("avg_power_w", "avg W", 1),
    ("metrics", "metrics", "headline"),
    ("flags", "flags", None),
)
# What the epoch table shows of an epoch's metrics (the rest: --format json or csv), so a
# FourCastNet epoch with per-channel RMSE/ACC still fits a terminal.
HEADLINE_METRICS = ("train_loss", "eval_loss", "eval_top1", "eval_top5", "eval_rmse_mean",
                    "eval_acc_mean")  # fmt: skip

# `collector steps`: long format, one row per (rank, step) or per step job-wide.
STEP_COLUMNS = (
    ("rank", "rank", None),
    ("step", "step", None),
    ("epoch", "epoch", None),
    ("duration_s", "time s", 3),
    ("energy_j", "energy J", 3),
    ("active_energy_j", "active J", 3),
    ("uncertainty_j", "± J", 3),
    ("coverage", "coverage", 2),
    ("flags", "flags", None),
)
JOB_STEP_COLUMNS = (("ranks", "ranks", None), *STEP_COLUMNS[1:])


def rank_step_row(run_id: str, s: RankStep) -> dict[str, Any]:
    return {
        "run_id": run_id, "rank": s.rank, "step": s.step, "epoch": s.epoch,
        "start_ns": s.start_ns, "end_ns": s.end_ns, "duration_s": s.duration_s,
        "energy_j": s.energy_j, "active_energy_j": s.active_energy_j,
        "uncertainty_j": s.uncertainty_j, "coverage": s.coverage, "flags": sorted(s.flags),
        "device_uuid": s.device_uuid,
    }  # fmt: skip


def job_step_row(run_id: str, s: JobStep) -> dict[str, Any]:
    return {
        "run_id": run_id, "step": s.step, "epoch": s.epoch, "ranks": s.ranks,
        "start_ns": s.start_ns, "end_ns": s.end_ns, "duration_s": s.duration_s,
        "energy_j": s.energy_j, "active_energy_j": s.active_energy_j,
        "uncertainty_j": s.uncertainty_j, "coverage": s.coverage, "flags": sorted(s.flags),
    }  # fmt: skip


def run_row(r: RunSummary) -> dict[str, Any]:
    per_sample = r.energy_j / r.samples if r.energy_j is not None and r.samples else None
    return {
        "run_id": r.run_id, "model": r.model, "dataset": r.dataset, "hardware": r.hardware,
        "status": r.status, "world_size": r.world_size, "nodes": r.nodes,
        "global_batch_size": r.global_batch_size, "local_batch_size": r.local_batch_size,
        "accumulation_steps": r.accumulation_steps, "epochs": r.epochs, "steps": r.steps,
        "samples": r.samples, "start_ns": r.start_ns, "end_ns": r.end_ns,
        "duration_s": r.duration_s, "gpu_hours": r.gpu_hours, "energy_j": r.energy_j,
        "gpu_energy_j": r.gpu_energy_j, "cpu_energy_j": r.cpu_energy_j,
        "active_energy_j": r.active_energy_j, "energy_uncertainty_j": r.energy_uncertainty_j,
        "j_per_sample": per_sample, "final_metrics": dict(r.final_metrics), "tags": dict(r.tags),
        "flags": sorted(r.flags), "start_temperature_c": dict(r.start_temperature_c),
    }  # fmt: skip


def epoch_row(e: EpochSummary) -> dict[str, Any]:
    return {
        "run_id": e.run_id, "epoch": e.epoch, "start_ns": e.start_ns, "end_ns": e.end_ns,
        "duration_s": e.duration_s, "steps": e.steps, "energy_j": e.energy_j,
        "active_energy_j": e.active_energy_j, "avg_power_w": e.avg_power_w,
        "metrics": dict(e.metrics), "flags": sorted(e.flags),
    }  # fmt: skip


def render(rows: list[dict[str, Any]], columns: Sequence[tuple], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        return _csv(rows)
    return _table(rows, columns)


def _csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return out.getvalue()


def _csv_value(v: Any) -> Any:
    if isinstance(v, dict):
        return ";".join(f"{k}={v[k]}" for k in sorted(v))
    if isinstance(v, list):
        return ";".join(map(str, v))
    return "" if v is None else v


def _cell(v: Any, decimals: int | str | None) -> str:
    if v is None:
        return "-"
    if decimals == "headline" and isinstance(v, dict):
        return _headline(v)
    if isinstance(v, float) and isinstance(decimals, int):
        return f"{v:,.{decimals}f}"
    if isinstance(v, dict):
        return " ".join(f"{k}={_short(v[k])}" for k in sorted(v))
    if isinstance(v, list):
        return ",".join(map(str, v))
    return str(v)


def _headline(metrics: dict) -> str:
    keys = [k for k in HEADLINE_METRICS if k in metrics] or sorted(metrics)[:3]
    text = " ".join(f"{k}={_short(metrics[k])}" for k in keys)
    more = len(metrics) - len(keys)
    return f"{text} (+{more} more)" if more > 0 else text


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def text_table(
    head: Sequence[str], rows: Sequence[Sequence[str]], colalign: Sequence[str] | None = None
) -> str:
    """Every terminal table of the collector (runs, show, report) has this look: tabulate's
    "simple" format, cells printed as given (no re-parsing of formatted numbers)."""
    saved, _tabulate.MIN_PADDING = _tabulate.MIN_PADDING, 0  # columns as wide as their cells
    try:
        return _tabulate.tabulate(
            rows, headers=list(head), tablefmt="simple", disable_numparse=True, colalign=colalign
        )
    finally:
        _tabulate.MIN_PADDING = saved


def _table(rows: list[dict[str, Any]], columns: Sequence[tuple]) -> str:
    header = [h for _, h, _ in columns]
    body = [[_cell(row.get(k), d) for k, _, d in columns] for row in rows]
    numeric = [all(_numeric(r[i]) for r in body) and bool(body) for i in range(len(header))]
    return text_table(header, body, ["right" if n else "left" for n in numeric])


def _numeric(text: str) -> bool:
    return text == "-" or text.replace(",", "").replace(".", "", 1).lstrip("-").isdigit()


def run_details(r: RunSummary) -> str:
    """Key: value lines for `collector show` above its epoch table."""
    row = run_row(r)
    keys = ("run_id", "model", "dataset", "hardware", "status", "world_size", "nodes",
            "global_batch_size", "local_batch_size", "accumulation_steps", "epochs", "steps",
            "samples", "duration_s", "gpu_hours", "energy_j", "gpu_energy_j", "cpu_energy_j",
            "active_energy_j", "energy_uncertainty_j", "j_per_sample", "final_metrics", "tags",
            "flags")  # fmt: skip
    return _tabulate.tabulate(
        [(k, _cell(row[k], 4)) for k in keys], tablefmt="plain", disable_numparse=True
    )
