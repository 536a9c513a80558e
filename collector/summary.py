"""Plain records the collector's queries produce and its CLI tables and study report consume.

Kept free of ORM and proto types so the analysis can be tested on synthetic records with known
answers (house style: pure core).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RunSummary:
    """One training run as the scaling study sees it (all ranks, all nodes together)."""

    run_id: str
    model: str
    dataset: str
    hardware: str  # name of rank 0's measured device (device table), else the RunConfig's
    status: str  # completed | failed | interrupted | running
    world_size: int  # GPUs (= ranks)
    nodes: int
    global_batch_size: int
    local_batch_size: int
    accumulation_steps: int
    epochs: int  # epochs completed
    steps: int  # optimizer steps (gradient updates) completed
    samples: int  # training samples processed (steps x GBS)
    start_ns: int
    end_ns: int | None
    duration_s: float  # time the run's sessions ran (a resumed run excludes the time between)
    gpu_hours: float  # duration_s x world_size / 3600
    energy_j: float | None  # node energy as the study counts it: GPUs + CPU packages + DRAM
    gpu_energy_j: float | None
    cpu_energy_j: float | None  # RAPL package + DRAM; None where not measured
    # GPU energy above each device's idle power; may be slightly negative (within the
    # uncertainty) for a run that kept its GPUs idle: it is never clamped, which would bias sums.
    active_energy_j: float | None
    energy_uncertainty_j: float = 0.0  # linear sum of per-device bounds (errors are correlated)
    final_metrics: dict[str, float] = field(default_factory=dict)  # top1_error, rmse, acc, loss..
    tags: dict[str, str] = field(default_factory=dict)  # sweep, point, repeat, scaling..
    # Union of every interval's flags: gap, counter_reset, disagree, incomplete, no_counter, late,
    # resumed, restarted, clock_step, mig_shared (energy of a whole GPU whose MIG slices other
    # ranks may share); plus partial while the run is open.
    flags: frozenset[str] = frozenset()
    start_temperature_c: dict[str, float] = field(default_factory=dict)  # device uuid -> degC


@dataclass(frozen=True)
class EpochSummary:
    run_id: str
    epoch: int
    start_ns: int
    end_ns: int
    duration_s: float
    steps: int
    energy_j: float | None  # summed over ranks (devices)
    active_energy_j: float | None
    avg_power_w: float | None  # energy / duration, summed over devices
    metrics: dict[str, float] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()
