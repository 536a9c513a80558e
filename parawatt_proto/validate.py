"""Is a marker plausible? The daemon's intake rules, on the contract's own messages.

The daemon refuses a batch holding a marker for which `marker_problem` names a reason; a client
(the trainer, the parawatt library) may call it before sending, so that what it sends is never
refused. Limits come from parawatt_proto.limits, which also sizes the SQL columns.
"""

from __future__ import annotations

import math

from parawatt_proto import limits as L
from parawatt_proto import parawatt_pb2 as pb

KINDS = frozenset(pb.MarkerKind.values()) - {pb.MARKER_KIND_UNSPECIFIED}
RUN_KINDS = frozenset({pb.RUN_START, pb.RUN_END})
EPOCH_KINDS = frozenset({pb.EPOCH_START, pb.EPOCH_END})
# UNSPECIFIED is taken as "completed" (clients that predate the status field).
RUN_STATUSES = frozenset(pb.RunStatus.values())

_MARKER_TEXT = (
    ("hostname", L.HOSTNAME_MAX),
    ("device_uuid", L.DEVICE_UUID_MAX),
    ("device_slice", L.DEVICE_UUID_MAX),
)
_CONFIG_TEXT = (
    ("device_name", L.DEVICE_NAME_MAX),
    ("device_uuid", L.DEVICE_UUID_MAX),
    ("model", L.MODEL_MAX),
    ("dataset", L.DATASET_MAX),
    ("torch_version", L.VERSION_MAX),
    ("cuda_version", L.VERSION_MAX),
    ("driver_version", L.VERSION_MAX),
    ("hostname", L.HOSTNAME_MAX),
    ("backend", L.VERSION_MAX),
)
_CONFIG_NUMBERS = (
    ("world_size", L.WORLD_SIZE_MAX),
    ("nodes", L.WORLD_SIZE_MAX),
    ("local_rank", L.LOCAL_WORLD_SIZE_MAX - 1),
    ("local_world_size", L.LOCAL_WORLD_SIZE_MAX),
    ("global_batch_size", L.BATCH_SIZE_MAX),
    ("local_batch_size", L.BATCH_SIZE_MAX),
    ("accumulation_steps", L.ACCUMULATION_STEPS_MAX),
    ("parameter_count", L.COUNT_MAX),
    ("dataset_size", L.COUNT_MAX),
    ("epochs", L.EPOCH_MAX),
    ("steps_per_epoch", L.COUNT_MAX),
)


def marker_problem(
    m: pb.Marker, now_ns: int | None = None, max_skew_ns: int | None = None
) -> str | None:
    """The reason this marker is refused, or None. With now_ns, time_ns must lie within
    max_skew_ns (default: limits.DEFAULT_MAX_CLOCK_SKEW_S) of it."""
    if m.kind not in KINDS:
        return f"unknown kind {m.kind}"
    if not m.run_id:
        return "missing run_id"
    if reason := L.text_problem(m.run_id, L.RUN_ID_MAX):
        return f"run_id {reason}"
    for name in ("rank", "epoch", "step", "local_rank"):
        if getattr(m, name) < 0:
            return f"negative {name} {getattr(m, name)}"
    if reason := _numbers(m):
        return reason
    if m.time_ns <= 0:
        return f"time_ns must be > 0, got {m.time_ns}"
    for name, limit in _MARKER_TEXT:
        if reason := L.text_problem(getattr(m, name), limit):
            return f"{name} {reason}"
    if m.kind == pb.RUN_END and m.status not in RUN_STATUSES:
        return f"unknown RUN_END status {m.status}"
    if m.kind in RUN_KINDS and (m.epoch or m.step):
        return f"run markers carry epoch 0 and step 0, got epoch {m.epoch} step {m.step}"
    if m.kind in EPOCH_KINDS and m.step:
        return f"epoch markers carry step 0, got step {m.step}"
    if reason := _metrics(m):
        return reason
    if m.run_token and not L.RUN_TOKEN_MIN_BYTES <= len(m.run_token) <= L.RUN_TOKEN_MAX_BYTES:
        return (
            f"run_token of {len(m.run_token)} bytes (expected "
            f"{L.RUN_TOKEN_MIN_BYTES}..{L.RUN_TOKEN_MAX_BYTES})"
        )
    if m.HasField("config") and (reason := config_problem(m.config)):
        return reason
    if now_ns is not None:
        skew = max_skew_ns if max_skew_ns is not None else int(L.DEFAULT_MAX_CLOCK_SKEW_S * 1e9)
        if abs(m.time_ns - now_ns) > skew:
            return (
                f"time_ns {m.time_ns} is {(m.time_ns - now_ns) / 1e9:+.0f} s from the daemon's "
                f"clock (at most {skew / 1e9:.0f} s; see --max-clock-skew)"
            )
    return None


def _numbers(m: pb.Marker) -> str | None:
    for name, limit in (
        ("rank", L.WORLD_SIZE_MAX - 1),
        ("local_rank", L.LOCAL_WORLD_SIZE_MAX - 1),
        ("epoch", L.EPOCH_MAX),
        ("step", L.STEP_MAX),
    ):
        if getattr(m, name) > limit:
            return f"{name} {getattr(m, name)} is beyond {limit}"
    return None


def _metrics(m: pb.Marker) -> str | None:
    if len(m.metrics) > L.METRICS_PER_MARKER:
        return f"{len(m.metrics)} metrics (at most {L.METRICS_PER_MARKER})"
    for key, value in m.metrics.items():
        if reason := metric_problem(key, value):
            return reason
    return None


def metric_problem(name: str, value: float) -> str | None:
    """The reason one metric of a marker is refused, or None (the client drops such a metric
    alone before sending: parawatt.client)."""
    if reason := L.text_problem(name, L.METRIC_NAME_MAX, required=True):
        return f"metric name {name[:40]!r} {reason}"
    if not math.isfinite(value):
        return f"metric {name!r} is not finite ({value})"
    return None


def config_problem(c: pb.RunConfig) -> str | None:
    """The reason a RunConfig is refused, or None."""
    for name, limit in _CONFIG_NUMBERS:
        value = getattr(c, name)
        if not 0 <= value <= limit:
            return f"config.{name} {value} is outside 0..{limit}"
    for name, limit in _CONFIG_TEXT:
        if reason := L.text_problem(getattr(c, name), limit):
            return f"config.{name} {reason}"
    for what in ("recipe", "tags"):
        if reason := L.map_problem(dict(getattr(c, what)), f"config.{what}"):
            return reason
    return None
