"""Synthetic RunSummary records for the scaling-study analysis and report tests."""

from __future__ import annotations

from collector.summary import RunSummary


def make_run(
    run_id: str,
    *,
    gpus: int = 1,
    lbs: int = 4,
    gbs: int | None = None,
    nodes: int = 1,
    duration_s: float = 3600.0,
    energy_kwh: float | None = 1.0,
    gpu_energy_kwh: float | None = None,
    active_kwh: float | None = None,
    samples: int = 1000,
    steps: int = 100,
    status: str = "completed",
    model: str = "resnet50",
    hardware: str = "NVIDIA H100",
    point: str | None = None,
    series: str = "s",
    scaling: str = "strong",
    repeat: int = 0,
    final: dict[str, float] | None = None,
    start_temps: dict[str, float] | None = None,
    flags: frozenset[str] = frozenset(),
) -> RunSummary:
    gbs = gbs if gbs is not None else lbs * gpus
    energy_j = None if energy_kwh is None else energy_kwh * 3.6e6
    gpu_j = energy_j if gpu_energy_kwh is None else gpu_energy_kwh * 3.6e6
    tags = {"sweep": "study", "repeat": str(repeat), "series": series, "scaling": scaling}
    if point is not None:
        tags["point"] = point
    return RunSummary(
        run_id=run_id,
        model=model,
        dataset="synthetic",
        hardware=hardware,
        status=status,
        world_size=gpus,
        nodes=nodes,
        global_batch_size=gbs,
        local_batch_size=lbs,
        accumulation_steps=gbs // (lbs * gpus),
        epochs=1,
        steps=steps,
        samples=samples,
        start_ns=0,
        end_ns=int(duration_s * 1e9),
        duration_s=duration_s,
        gpu_hours=duration_s * gpus / 3600.0,
        energy_j=energy_j,
        gpu_energy_j=gpu_j,
        cpu_energy_j=None,
        active_energy_j=None if active_kwh is None else active_kwh * 3.6e6,
        final_metrics=dict(final or {}),
        tags=tags,
        start_temperature_c=dict(start_temps or {}),
        flags=frozenset(flags),
    )
