"""`trainer sweep GRID_FILE`: run a scaling-study grid locally, or write SLURM scripts for it."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

from parawatt_proto.cli_args import FINITE, FiniteFloat
from trainer.sweep.cooldown import DaemonThermometer
from trainer.sweep.grid import SweepError, SweepGrid, grid_problems, load_grid
from trainer.sweep.runner import (
    CooldownSettings,
    SweepRunner,
    subprocess_launcher,
    train_args,
)
from trainer.sweep.slurm import slurm_problems, write_slurm
from trainer.sweep.state import SweepState
from trainer.ui import tabulate


def local_capacity(max_local_procs: int | None, grid: SweepGrid) -> tuple[int, str]:
    """How many processes a point may start here, and where that limit comes from."""
    import torch  # slow to import; only local runs need it

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "(GPUs: torch.cuda.device_count())"
    if max_local_procs:
        return max_local_procs, "(CPU processes: --max-local-procs)"
    if grid.max_local_procs:
        return grid.max_local_procs, "(CPU processes: the grid's max_local_procs)"
    return os.cpu_count() or 1, "(CPU processes: one per core; raise with --max-local-procs)"


def trainer_flags() -> set[str] | None:
    """Option names of `trainer train`, to catch typos in a grid before anything runs."""
    try:
        from trainer.train.command import train
    except ImportError:
        return None
    return {p.name for p in getattr(train, "params", []) if p.name}


def print_plan(runner: SweepRunner, echo=click.echo) -> None:
    grid = runner.grid
    tasks = runner.tasks()
    todo = sum(t.status != "done" for t in tasks)
    echo(
        f"sweep {grid.name}: model {grid.model}, {len(grid.points)} point(s) x {grid.repeats} "
        f"repeat(s) = {len(tasks)} run(s), {todo} to run"
    )
    rows = [
        [t.status, t.point.point_id, t.repeat, t.point.gpus, t.point.local_batch_size]
        + [t.point.global_batch_size, t.point.accumulation_steps]
        + ["all" if t.point.data_fraction is None else f"{t.point.data_fraction:.4g}"]
        + [", ".join(f"{s} ({k})" for s, k in zip(t.point.series, t.point.scaling, strict=True))]
        for t in tasks
    ]
    head = ["status", "point", "rep", "GPUs", "LBS", "GBS", "acc", "data", "series"]
    align = ["left", "left"] + ["right"] * 6 + ["left"]
    echo(tabulate(rows, headers=head, colalign=align))
    if tasks:
        first = tasks[0]
        args = runner.argv(first.point, first.repeat, "RUN_ID", Path("OUTPUT.json"))
        echo("first command: " + " ".join(args))


@click.command("sweep")
@click.argument("grid_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("sweeps"),
    show_default=True,
    help="Sweep directory root: <out>/<sweep>/{state.json,logs,runs,slurm}.",
)
@click.option(
    "--daemon",
    default="127.0.0.1:50051",
    show_default=True,
    help="This node's power daemon (HOST:PORT), or 'none'.",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; run and write nothing.")
@click.option("--slurm", is_flag=True, help="Write one sbatch script per point and submit.sh.")
@click.option(
    "--no-collector",
    is_flag=True,
    help="With --slurm: write scripts even though no collector would store the runs.",
)
@click.option(
    "--cooldown",
    "cooldown_c",
    type=FiniteFloat(min=0),
    default=None,
    metavar="DELTA_C",
    help="Between points, wait until every GPU is within DELTA_C of its idle temperature.",
)
@click.option(
    "--cooldown-max-s",
    type=FiniteFloat(min=0),
    default=600.0,
    show_default=True,
    help="Longest cool-down wait.",
)
@click.option(
    "--cooldown-poll-s",
    type=FiniteFloat(min=0, min_open=True),
    default=2.0,
    show_default=True,
    hidden=True,
)
@click.option(
    "--idle-temperature-c",
    type=FINITE,
    default=None,
    help="Idle temperature of every GPU (default: as read when the sweep starts).",
)
@click.option(
    "--max-local-procs",
    type=click.IntRange(min=1),
    default=None,
    help="Processes a point may start on a machine without GPUs.",
)
@click.option(
    "--python",
    default=sys.executable,
    show_default=False,
    help="Python that runs torchrun (default: this one).",
)
def sweep(
    grid_file: Path,
    out_dir: Path,
    daemon: str,
    dry_run: bool,
    slurm: bool,
    no_collector: bool,
    cooldown_c: float | None,
    cooldown_max_s: float,
    cooldown_poll_s: float,
    idle_temperature_c: float | None,
    max_local_procs: int | None,
    python: str,
) -> None:
    """Run the scaling-study grid GRID_FILE (TOML): every point x repeat under torchrun.

    \b
    [sweep]  name, model (resnet50|fourcastnet), repeats, scaling, max_local_procs
    [train]  `trainer train` flags shared by every run (image_size = 32, data = "...")
    [[series]]  name, scaling (strong|weak), base_fraction, train = {...}, and either
                gpus = [..] with gbs and/or lbs (a number or a list), or
                points = [[gpus, lbs], [gpus, lbs, gbs], ...]
    [slurm]  gpus_per_node, partition, account, time, setup = [..], collector_db,
             exclusive, mem, gpu_request, requeue, nccl_timeout_s, ... (README: SLURM)

    Runs are tagged sweep, point, repeat, series, scaling; <out>/<sweep>/state.json records
    them, so running the command again skips completed runs and retries the rest. Examples:
    examples/sweep_*.toml.
    """
    try:
        grid = load_grid(grid_file)
        capacity, source = (None, "") if slurm else local_capacity(max_local_procs, grid)
        problems = grid_problems(
            grid,
            local_capacity=capacity,
            capacity_source=source,
            slurm=slurm,
            trainer_flags=trainer_flags(),
        )
        if slurm:
            problems += slurm_problems(grid, no_collector)
        if problems:
            raise click.ClickException(
                f"sweep {grid.name} cannot run:\n  - " + "\n  - ".join(problems)
            )
        sweep_dir = out_dir / grid.name
        daemon_addr = None if daemon.lower() == "none" else daemon
        if slurm:
            _slurm(grid, sweep_dir, dry_run)
            return
        state = SweepState.load(sweep_dir / "state.json", grid.name)
        cooldown = None
        if cooldown_c is not None:
            cooldown = CooldownSettings(
                cooldown_c, cooldown_max_s, cooldown_poll_s, idle_temperature_c
            )
        thermo = DaemonThermometer(daemon_addr) if daemon_addr and not dry_run else None
        try:
            runner = SweepRunner(
                grid,
                state,
                out_dir,
                subprocess_launcher,
                daemon=daemon_addr,
                python=python,
                thermometer=thermo,
                cooldown=cooldown,
                echo=click.echo,
            )
            if dry_run:
                print_plan(runner)
                return
            # SIGTERM (scancel, kill) unwinds like Ctrl-C: the running torchrun's process group
            # is stopped and the run recorded as interrupted, so a re-run retries it.
            signal.signal(signal.SIGTERM, _interrupt)
            outcome = runner.run()
        finally:
            if thermo is not None:
                thermo.close()
    except SweepError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to continue the sweep", err=True)
        sys.exit(130)
    click.echo(
        f"sweep {grid.name}: {outcome.completed} completed, {outcome.failed} failed, "
        f"{outcome.skipped} skipped (done before); state: {sweep_dir / 'state.json'}"
    )
    if outcome.failed:
        click.echo("re-run the same command to retry the failed runs", err=True)
        sys.exit(1)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _slurm(grid: SweepGrid, sweep_dir: Path, dry_run: bool) -> None:
    if dry_run:
        for p in grid.points:
            click.echo(
                f"would write {sweep_dir / 'slurm' / (p.point_id + '.sbatch')}  "
                f"({p.gpus} GPUs) trainer {' '.join(train_args(grid, p, repeat='R', run_id='RUN_ID', daemon='127.0.0.1:PORT'))}"
            )
        click.echo(f"would write {sweep_dir / 'slurm' / 'submit.sh'}")
        return
    paths = write_slurm(grid, sweep_dir)
    click.echo(f"wrote {len(paths) - 1} sbatch script(s) and {paths[-1]}")
    click.echo(f"submit with: bash {paths[-1]}   (re-run it to retry failed runs)")
