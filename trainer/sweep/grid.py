"""Sweep grid files: TOML in, validated points out (pure; no I/O beyond reading the file).

A grid names a model, the trainer flags every run shares, and series of points over GPU count,
global batch size (GBS) and local batch size (LBS), as in Huber et al. (arXiv:2508.07706).
Points that several series share (the study reused e.g. 1 GPU x LBS 256 in a constant-GBS and a
constant-LBS series) run once and carry every series they belong to in their tags.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from trainer.sweep.series import SeriesSpec, parse_series

KNOWN_MODELS = ("resnet50", "fourcastnet")
SCALINGS = ("strong", "weak")
# The runner sets these itself, per point and run; a grid may not.
RESERVED_FLAGS = frozenset(
    {"global_batch_size", "local_batch_size", "run_id", "output", "tag", "tags", "data_fraction"}
    | {"daemon"}
)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_TOP_KEYS = {"sweep", "train", "series", "slurm"}
_SWEEP_KEYS = {"name", "model", "repeats", "scaling", "max_local_procs"}


class SweepError(Exception):
    """A sweep cannot run; the message says why (shown to the user as is)."""


class GridError(SweepError):
    """The grid file is malformed or describes points that cannot run."""


GPU_REQUESTS = ("gpus-per-node", "gres")


@dataclass(frozen=True)
class SlurmOptions:
    gpus_per_node: int = 4
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    # One task per node runs torchrun and its data loaders: default cpus_per_gpu x GPUs used.
    cpus_per_task: int | None = None
    cpus_per_gpu: int = 8
    # Whole nodes (the study's choice: no neighbour's jobs on the node's CPUs, DRAM and power
    # supply, so node energy is the run's own) cost idle GPUs on points that use a fraction of a
    # node and wait longer in the queue; shared nodes start sooner but CPU/DRAM energy and
    # thermal conditions then include other jobs.
    exclusive: bool = False
    mem: str | None = None  # "--mem" value; None: "0" (all of it) with exclusive, else unset
    gpu_request: str = "gpus-per-node"  # or "gres" (--gres=gpu[:TYPE]:N) for older clusters
    gres_type: str | None = None  # e.g. "a100" -> --gres=gpu:a100:N
    requeue: bool = True  # on the time limit: checkpointed stop, then requeue and resume
    signal_s: int = 120  # how long before the time limit the job is told (USR1)
    nccl_timeout_s: int | None = None  # collective timeout (torch's default: 30 min)
    sbatch: tuple[str, ...] = ()  # extra "#SBATCH ..." options, e.g. "--constraint=h100"
    setup: tuple[str, ...] = ()  # shell lines before training: module load, venv activate
    python: str = "python"
    rdzv_port: int = 29500
    start_daemons: bool = True  # false where the cluster runs power-daemon as a service
    daemon_port: int = 50051  # 0: any free port (each node's port file says which)
    daemon_backend: str = "auto"
    daemon_metrics_port: int | None = None  # set: each job daemon serves /metrics there
    # Where runs are stored: a database URL or a path relative to the sweep directory (SQLite
    # on shared storage); a job-local collector on the job's first node writes it ...
    collector_db: str | None = None
    # ... unless a cluster collector reads the job's daemons (it watches the inventory files
    # in <sweep>/slurm/inventory/, or the daemons are a service it already reads).
    cluster_collector: bool = False
    drain_s: float = 5.0  # how long the collector may catch up after training ends


@dataclass(frozen=True)
class Point:
    point_id: str
    gpus: int
    local_batch_size: int
    global_batch_size: int
    data_fraction: float | None  # None = the full data set
    series: tuple[str, ...]
    scaling: tuple[str, ...]  # one per series
    train: tuple[tuple[str, object], ...]  # series-specific flags (on top of the grid's)

    @property
    def accumulation_steps(self) -> int:
        return self.global_batch_size // (self.local_batch_size * self.gpus)


@dataclass(frozen=True)
class SweepGrid:
    name: str
    model: str
    repeats: int
    train: tuple[tuple[str, object], ...]
    series: tuple[SeriesSpec, ...]
    points: tuple[Point, ...]
    max_local_procs: int | None = None
    slurm: SlurmOptions = field(default_factory=SlurmOptions)


def load_grid(path: str | Path) -> SweepGrid:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise GridError(f"cannot read grid file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{path}: invalid TOML: {exc}") from None
    try:
        return parse_grid(data)
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None


def parse_grid(data: Mapping[str, object]) -> SweepGrid:
    _check_keys(data, _TOP_KEYS, "the grid file")
    sweep = _table(data, "sweep", required=True)
    _check_keys(sweep, _SWEEP_KEYS, "[sweep]")
    name = _str(sweep, "name", "[sweep]")
    if not _NAME.match(name):
        raise GridError(f"[sweep] name {name!r} may use only letters, digits, '_', '.', '-'")
    model = _str(sweep, "model", "[sweep]")
    repeats = _int(sweep.get("repeats", 1), "[sweep] repeats")
    scaling = sweep.get("scaling", "strong")
    max_procs = sweep.get("max_local_procs")
    train = _train_table(_table(data, "train"), "[train]")
    raw_series = data.get("series")
    if not isinstance(raw_series, list) or not raw_series:
        raise GridError("the grid needs at least one [[series]] table")
    specs = tuple(
        spec
        for i, raw in enumerate(raw_series, 1)
        for spec in parse_series(
            raw, i, default_scaling=scaling, parse_train=_train_table, error=GridError
        )
    )
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise GridError(f"series names must be unique; repeated: {', '.join(dupes)}")
    return SweepGrid(
        name=name,
        model=model,
        repeats=repeats,
        train=train,
        series=specs,
        points=_merge_points(specs),
        max_local_procs=None if max_procs is None else _int(max_procs, "[sweep] max_local_procs"),
        slurm=_slurm(_table(data, "slurm")),
    )


def grid_problems(
    grid: SweepGrid,
    *,
    local_capacity: int | None = None,
    capacity_source: str = "",
    slurm: bool = False,
    trainer_flags: Iterable[str] | None = None,
) -> list[str]:
    """Every reason the grid cannot run, so the user fixes them all at once (empty: it can)."""
    problems: list[str] = []
    if grid.model not in KNOWN_MODELS:
        problems.append(f"unknown model {grid.model!r} (known: {', '.join(KNOWN_MODELS)})")
    if grid.repeats < 1:
        problems.append(f"repeats must be at least 1, not {grid.repeats}")
    flags = list(grid.train) + [kv for p in grid.points for kv in p.train]
    for key, _ in flags:
        if key in RESERVED_FLAGS:
            problems.append(f"flag {key!r} is set by the sweep runner; remove it from the grid")
    if trainer_flags is not None:
        known = set(trainer_flags)
        for key in sorted({k for k, _ in flags} - known - RESERVED_FLAGS):
            problems.append(f"flag {key!r} is not a `trainer train` option")
    for p in grid.points:
        problems.extend(_point_problems(p, grid, local_capacity, capacity_source, slurm))
    return problems


def _point_problems(
    p: Point, grid: SweepGrid, capacity: int | None, source: str, slurm: bool
) -> list[str]:
    where = f"point {p.point_id} (series {', '.join(p.series)})"
    out = []
    per_step = p.local_batch_size * p.gpus
    if p.global_batch_size % per_step:
        out.append(
            f"{where}: GBS {p.global_batch_size} is not divisible by "
            f"LBS {p.local_batch_size} x {p.gpus} GPUs"
        )
    if p.data_fraction is not None and not 0 < p.data_fraction <= 1:
        out.append(f"{where}: data fraction {p.data_fraction:.6g} is outside (0, 1]")
    elif not out:
        out.extend(_data_problems(p, grid, where))
    if slurm:
        per_node = grid.slurm.gpus_per_node
        if p.gpus > per_node and p.gpus % per_node:
            out.append(f"{where}: {p.gpus} GPUs do not fill whole nodes of {per_node} GPUs")
    elif capacity is not None and p.gpus > capacity:
        out.append(f"{where}: needs {p.gpus} processes but this machine allows {capacity} {source}")
    return out


def _data_problems(p: Point, grid: SweepGrid, where: str) -> list[str]:
    """A synthetic training set of a given size must hold one global batch (per the trainer's
    DistributedSampler with drop_last); other data sets are only known once a run opens them."""
    flags = dict(grid.train) | dict(p.train)
    size = flags.get("synthetic_size")
    if flags.get("data", "synthetic") != "synthetic" or not isinstance(size, int) or size < 1:
        return []
    n = size if p.data_fraction is None else max(1, math.ceil(p.data_fraction * size))
    per_gpu_step = p.local_batch_size * p.accumulation_steps
    if n // p.gpus >= per_gpu_step:
        return []
    return [
        f"{where}: its {n} training samples hold no global batch of {p.global_batch_size} "
        f"({p.gpus} GPUs x {per_gpu_step} samples each); raise synthetic_size or lower the GBS"
    ]


def _merge_points(specs: tuple[SeriesSpec, ...]) -> tuple[Point, ...]:
    merged: dict[tuple, Point] = {}
    for spec in specs:
        for gpus, lbs, gbs, fraction in spec.entries:
            key = (gpus, lbs, gbs, fraction, spec.train)
            if key in merged:
                old = merged[key]
                if spec.name not in old.series:
                    merged[key] = replace(
                        old, series=old.series + (spec.name,), scaling=old.scaling + (spec.scaling,)
                    )
                continue
            pid = f"g{gpus}-l{lbs}-b{gbs}" + ("" if fraction is None else f"-f{fraction:.6g}")
            if spec.train:
                pid = f"{spec.name}-{pid}"
            merged[key] = Point(
                pid, gpus, lbs, gbs, fraction, (spec.name,), (spec.scaling,), spec.train
            )
    return tuple(merged.values())


def _slurm(raw: Mapping[str, object]) -> SlurmOptions:
    known = set(SlurmOptions.__dataclass_fields__)
    _check_keys(raw, known, "[slurm]")
    values = dict(raw)
    for key in ("sbatch", "setup"):
        if key in values:
            items = values[key]
            if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
                raise GridError(f"[slurm] {key} must be a list of strings")
            values[key] = tuple(items)
    for key in ("gpus_per_node", "cpus_per_task", "cpus_per_gpu", "signal_s", "nccl_timeout_s"):
        if values.get(key) is not None:
            values[key] = _int(values[key], f"[slurm] {key}")
    for key in ("exclusive", "requeue", "start_daemons", "cluster_collector"):
        if key in values and not isinstance(values[key], bool):
            raise GridError(f"[slurm] {key} must be true or false, not {values[key]!r}")
    for key in ("rdzv_port", "daemon_port", "daemon_metrics_port"):
        v, low = values.get(key), 1 if key == "daemon_metrics_port" else 0
        if v is not None and (
            isinstance(v, bool) or not isinstance(v, int) or not low <= v <= 65535
        ):
            raise GridError(f"[slurm] {key} must be a port number (0-65535), not {v!r}")
    if values.get("gpu_request", GPU_REQUESTS[0]) not in GPU_REQUESTS:
        raise GridError(f"[slurm] gpu_request must be one of {', '.join(GPU_REQUESTS)}")
    for key in ("mem", "gres_type", "collector_db", "partition", "account", "time", "python"):
        if values.get(key) is not None and not isinstance(values[key], str):
            raise GridError(f'[slurm] {key} must be a string ("..."), not {values[key]!r}')
    return SlurmOptions(**values)


def _train_table(raw: Mapping[str, object], where: str) -> tuple[tuple[str, object], ...]:
    out = []
    for key, value in raw.items():
        if isinstance(value, dict):
            raise GridError(f"{where} {key}: a flag value may not be a table")
        out.append((key.replace("-", "_"), value))
    return tuple(out)


def _table(data: Mapping[str, object], key: str, required: bool = False) -> Mapping[str, object]:
    value = data.get(key)
    if value is None:
        if required:
            raise GridError(f"the grid needs a [{key}] table")
        return {}
    if not isinstance(value, dict):
        raise GridError(f"[{key}] must be a table")
    return value


def _check_keys(data: Mapping[str, object], known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise GridError(
            f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
        )


def _str(data: Mapping[str, object], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value:
        raise GridError(f'{where} needs {key} = "..."')
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GridError(f"{where} must be a positive integer, not {value!r}")
    return value
