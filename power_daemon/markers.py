"""Marker intake rules (pure): validation and the fields the daemon fills in."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from power_daemon.errors import InvalidMarker
from power_daemon.model import MarkerData, MarkerKind

MAX_MARKERS_PER_BATCH = 10_000
MAX_MARKER_BYTES = 64 * 1024  # a whole marker, config record included (checked by the adapter)
MAX_METRICS = 64
MAX_ID_CHARS = 256  # run_id, hostname, device_uuid, metric names
_KINDS = frozenset(int(k) for k in MarkerKind)


def check_marker(m: MarkerData) -> str | None:
    """The reason this marker is invalid, or None when it is fine."""
    if m.kind not in _KINDS:
        return f"unknown kind {m.kind}"
    if not m.run_id:
        return "missing run_id"
    for name in ("run_id", "hostname", "device_uuid", "device_slice"):
        if len(getattr(m, name)) > MAX_ID_CHARS:
            return f"{name} longer than {MAX_ID_CHARS} characters"
    for name in ("rank", "epoch", "step", "local_rank"):
        if getattr(m, name) < 0:
            return f"negative {name} {getattr(m, name)}"
    if m.time_ns <= 0:
        return f"time_ns must be > 0, got {m.time_ns}"
    if len(m.metrics) > MAX_METRICS:
        return f"{len(m.metrics)} metrics (at most {MAX_METRICS})"
    for key, value in m.metrics.items():
        if not key or len(key) > MAX_ID_CHARS:
            return f"metric name must have 1..{MAX_ID_CHARS} characters, got {key[:40]!r}"
        if not math.isfinite(value):
            return f"metric {key!r} is not finite ({value})"
    return None


def validate_batch(markers: Sequence[MarkerData]) -> None:
    """All or nothing: raise InvalidMarker for the first bad marker."""
    if len(markers) > MAX_MARKERS_PER_BATCH:
        raise InvalidMarker(MAX_MARKERS_PER_BATCH, f"batch of {len(markers)} markers is too large")
    for i, m in enumerate(markers):
        reason = check_marker(m)
        if reason:
            raise InvalidMarker(i, reason)


def resolve(
    m: MarkerData,
    hostname: str,
    gpu_uuids: Sequence[str],
    canonical: Callable[[str], str] = str,
) -> MarkerData:
    """Fill hostname and the device (GPU number local_rank) when the rank left them empty, and
    name a device by the UUID its readings carry (`canonical`: a MIG instance -> its GPU, the
    instance kept in device_slice so that ranks sharing one GPU can be told apart).

    A local_rank beyond the node's GPUs stays unresolved (empty): the collector then cannot
    attribute the marker to a device, which is the truth.
    """
    changes: dict[str, str] = {}
    if not m.hostname:
        changes["hostname"] = hostname
    if not m.device_uuid and m.local_rank < len(gpu_uuids):
        changes["device_uuid"] = gpu_uuids[m.local_rank]
    elif m.device_uuid and (device := canonical(m.device_uuid)) != m.device_uuid:
        changes["device_uuid"] = device
        changes["device_slice"] = m.device_slice or m.device_uuid
    return dataclasses.replace(m, **changes) if changes else m
