"""Marker intake rules (pure): the fields the daemon fills in."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from parawatt_proto import limits
from parawatt_proto.records import MarkerRec

# Validation rules live in the contract package (parawatt_proto.validate), shared with clients.
MAX_MARKERS_PER_BATCH = limits.MARKERS_PER_BATCH
MAX_MARKER_BYTES = limits.MARKER_BYTES_MAX


def resolve(
    m: MarkerRec,
    hostname: str,
    gpu_uuids: Sequence[str],
    canonical: Callable[[str], str] = str,
) -> MarkerRec:
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
