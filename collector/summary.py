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
    hardware: str  # device name of rank 0's GPU, e.g. "NVIDIA H100 80GB HBM3"
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
    duration_s: float
    gpu_hours: float  # duration_s x world_size / 3600
    energy_j: float | None  # node energy as the study counts it: GPUs + CPU packages + DRAM
    gpu_energy_j: float | None
    cpu_energy_j: float | None  # RAPL package + DRAM; None where not measured
    active_energy_j: float | None  # GPU energy above each device's idle power
    energy_uncertainty_j: float = 0.0
    final_metrics: dict[str, float] = field(default_factory=dict)  # top1_error, rmse, acc, loss..
    tags: dict[str, str] = field(default_factory=dict)  # sweep, point, repeat, scaling..
    flags: frozenset[str] = frozenset()  # union of the run's interval flags
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
