"""Runs a sweep's points locally, one torchrun per (point, repeat), through an injected launcher.

Order: repeat 0 of every point, then repeat 1 of every point, ... so that slow drift (a warming
room, a neighbour's job) spreads over all points instead of biasing one point's repeats.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from trainer.sweep.cooldown import CooldownResult, Thermometer, wait_for_cooldown
from trainer.sweep.grid import Point, SweepError, SweepGrid
from trainer.sweep.state import RunRecord, SweepState
from trainer.ui import plural, run_result_line

# Tag keys every sweep run carries (RunConfig.tags); the collector's report groups by them.
# TAG_MODE only where the grid sets a --mode (absent: pretrain).
TAG_SWEEP, TAG_POINT, TAG_REPEAT, TAG_SERIES, TAG_SCALING, TAG_MODE = (
    "sweep",
    "point",
    "repeat",
    "series",
    "scaling",
    "mode",
)


@dataclass(frozen=True)
class LaunchSpec:
    point: Point
    repeat: int
    attempt: int
    run_id: str
    argv: tuple[str, ...]
    log_path: Path
    output_path: Path


Launcher = Callable[[LaunchSpec], int]  # returns the exit status


@dataclass(frozen=True)
class Task:
    point: Point
    repeat: int
    status: str  # todo | retry | done


@dataclass(frozen=True)
class CooldownSettings:
    delta_c: float
    max_wait_s: float
    poll_s: float = 2.0
    idle_c: float | None = None  # None: the temperatures read when the sweep starts


@dataclass(frozen=True)
class SweepOutcome:
    completed: int
    failed: int
    skipped: int


def flag_args(flags: Iterable[tuple[str, object]]) -> list[str]:
    """[("image_size", 32), ("amp", True), ("quiet", False)] -> ["--image-size", "32", "--amp"]."""
    args: list[str] = []
    for key, value in flags:
        opt = "--" + key.replace("_", "-")
        if value is True:
            args.append(opt)
        elif value is False:  # an off switch is the default: leave the flag out
            continue
        elif isinstance(value, list):
            for item in value:
                args += [opt, str(item)]
        else:
            args += [opt, str(value)]
    return args


def train_args(
    grid: SweepGrid,
    point: Point,
    *,
    repeat: int | str,
    run_id: str,
    daemon: str | None,
    output: str | None = None,
) -> list[str]:
    """`trainer train ...` arguments for one run (repeat/run_id may be shell variables)."""
    args = ["train", "--model", grid.model, *flag_args(grid.train), *flag_args(point.train)]
    args += ["--global-batch-size", str(point.global_batch_size)]
    args += ["--local-batch-size", str(point.local_batch_size)]
    if point.data_fraction is not None:
        args += ["--data-fraction", f"{point.data_fraction:.6g}"]
    args += ["--run-id", run_id, "--daemon", daemon or "none"]
    if output:
        args += ["--output", output]
    tags = {
        TAG_SWEEP: grid.name,
        TAG_POINT: point.point_id,
        TAG_REPEAT: str(repeat),
        TAG_SERIES: ",".join(point.series),
        TAG_SCALING: ",".join(point.scaling),
    }
    mode = dict(point.train).get("mode") or dict(grid.train).get("mode")
    if mode:  # the report keeps pre-training and fine-tuning apart
        tags[TAG_MODE] = str(mode)
    for key, value in tags.items():
        args += ["--tag", f"{key}={value}"]
    return args


def new_run_id(grid: SweepGrid, point: Point, repeat: int) -> str:
    # Unique even when a sweep is re-run from scratch into the same database.
    return f"{grid.name}.{point.point_id}.r{repeat}.{uuid.uuid4().hex[:8]}"


def subprocess_launcher(spec: LaunchSpec) -> int:
    """Runs the command with its output in the log file; Ctrl-C stops the whole process group."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(spec.log_path, "ab") as log:
        proc = subprocess.Popen(
            spec.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _delta(before: dict[str, float], after: dict[str, float]) -> float | None:
    """Energy the node's GPUs used between two counter reads (None if unknown)."""
    common = set(before) & set(after)
    return sum(after[u] - before[u] for u in common) if common else None


class SweepRunner:
    def __init__(
        self,
        grid: SweepGrid,
        state: SweepState,
        out_dir: Path,
        launcher: Launcher,
        *,
        daemon: str | None = None,
        python: str = sys.executable,
        thermometer: Thermometer | None = None,
        cooldown: CooldownSettings | None = None,
        echo: Callable[[str], None] = print,
        wait: Callable[..., CooldownResult] = wait_for_cooldown,
        clock_ns: Callable[[], int] = time.time_ns,
    ):
        if cooldown is not None and thermometer is None:
            raise SweepError("--cooldown needs a power daemon to read GPU temperatures from")
        self.grid, self.state, self.out_dir = grid, state, Path(out_dir)
        self._launch, self._daemon, self._python = launcher, daemon, python
        self._thermo, self._cooldown, self._echo = thermometer, cooldown, echo
        self._wait, self._clock_ns = wait, clock_ns
        self._idle_c: dict[str, float] = {}
        self._thermo_warned = False

    def tasks(self) -> list[Task]:
        out = []
        for repeat in range(self.grid.repeats):
            for point in self.grid.points:
                rec = self.state.get(point.point_id, repeat)
                status = "todo" if rec is None else "done" if rec.status == "completed" else "retry"
                out.append(Task(point, repeat, status))
        return out

    def argv(self, point: Point, repeat: int, run_id: str, output: Path) -> list[str]:
        rdzv = ["--standalone", "--nproc-per-node", str(point.gpus)]
        train = train_args(
            self.grid, point, repeat=repeat, run_id=run_id, daemon=self._daemon, output=str(output)
        )
        return [self._python, "-m", "torch.distributed.run", *rdzv, "-m", "trainer", *train]

    def run(self) -> SweepOutcome:
        tasks = self.tasks()
        todo = [t for t in tasks if t.status != "done"]
        skipped = len(tasks) - len(todo)
        if skipped:
            self._echo(f"skipping {skipped} completed run(s); {len(todo)} to go")
        if self._cooldown is not None:
            self._idle_c = self._idle_baseline()
        completed = failed = 0
        for i, task in enumerate(todo):
            waited_s = self._cool_down() if i > 0 and self._cooldown is not None else None
            ok = self._run_one(task, i + 1, len(todo), waited_s)
            completed += ok
            failed += not ok
        return SweepOutcome(completed, failed, skipped)

    def _run_one(self, task: Task, number: int, total: int, waited_s: float | None) -> bool:
        point, repeat = task.point, task.repeat
        prev = self.state.get(point.point_id, repeat)
        attempt = (prev.attempts if prev else 0) + 1
        run_id = new_run_id(self.grid, point, repeat)
        base = self.out_dir / self.grid.name
        stem = f"{point.point_id}.r{repeat}"
        output = base / "runs" / f"{stem}.json"
        argv = tuple(self.argv(point, repeat, run_id, output))
        log = base / "logs" / f"{stem}.a{attempt}.log"
        spec = LaunchSpec(point, repeat, attempt, run_id, argv, log, output)
        log.parent.mkdir(parents=True, exist_ok=True)
        output.parent.mkdir(parents=True, exist_ok=True)  # the trainer checks --output's folder
        record = RunRecord(
            point.point_id,
            repeat,
            "running",
            attempts=attempt,
            run_id=run_id,
            started_ns=self._clock_ns(),
            log=str(spec.log_path),
            start_temperature_c=self._temperatures(),
            cooldown_waited_s=waited_s,
        )
        self.state.put(record)
        self._echo(
            f"[{number}/{total}] {point.point_id} repeat {repeat} ({plural(point.gpus, 'proc')}, "
            f"GBS {point.global_batch_size}, LBS {point.local_batch_size}) run {run_id}"
        )
        energy_before = self._gpu_energy()
        try:
            code = self._launch(spec)
        except BaseException:
            self.state.update(record, status="interrupted", ended_ns=self._clock_ns())
            raise
        status = "completed" if code == 0 else "failed"
        self.state.update(record, status=status, returncode=code, ended_ns=self._clock_ns())
        if code != 0:
            self._echo(f"  failed with exit status {code}; log: {spec.log_path}")
        else:
            self._echo(
                run_result_line(_read_json(output), _delta(energy_before, self._gpu_energy()))
            )
        return code == 0

    def _gpu_energy(self) -> dict[str, float]:
        """The node's GPU energy counters, for the one-line result (nothing without a daemon)."""
        read = getattr(self._thermo, "gpu_energy_j", None)
        if read is None:
            return {}
        try:
            return read()
        except SweepError:
            return {}

    def _temperatures(self) -> dict[str, float]:
        if self._thermo is None:
            return {}
        try:
            return self._thermo.gpu_temperatures()
        except SweepError as exc:  # a start temperature is nice to have, not worth a failed run
            if not self._thermo_warned:  # once: the daemon may simply not be running
                self._thermo_warned = True
                self._echo(f"warning: {exc}; the runs go on, unmeasured unless it comes up")
            return {}

    def _idle_baseline(self) -> dict[str, float]:
        temps = self._thermo.gpu_temperatures()  # type: ignore[union-attr]
        cd = self._cooldown
        if cd is not None and cd.idle_c is not None:
            return {u: cd.idle_c for u in temps}
        self._echo(
            "idle temperatures (sweep start): "
            + (", ".join(f"{u} {t:.1f} C" for u, t in sorted(temps.items())) or "none reported")
        )
        return temps

    def _cool_down(self) -> float:
        cd = self._cooldown
        assert cd is not None and self._thermo is not None
        result = self._wait(
            self._thermo.gpu_temperatures,
            self._idle_c,
            delta_c=cd.delta_c,
            max_wait_s=cd.max_wait_s,
            poll_s=cd.poll_s,
        )
        self._echo("  " + result.describe())
        return result.waited_s
