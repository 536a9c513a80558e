"""One set of input limits for the whole product (DESIGN.md, "Trust and security").

The daemon refuses markers beyond them (parawatt_proto.validate), the trainer and the client
library check their flags and arguments against them, and the collector's SQL columns are sized
from them (collector/store/models.py; tests/security/test_security_limits.py checks they agree). A
value that fits here always fits the database, so a bad row can only come from a bug, and even
then it is isolated (collector/store/writer.py).

Strings: bounded length, and no control characters (C0, DEL, C1), line or paragraph separators,
zero-width or bidi-override characters: none of them belongs in an id, and each can forge or
hide text in a log line or a terminal.
"""

from __future__ import annotations

import hashlib
import re

# -- strings (characters) -------------------------------------------------------------------
RUN_ID_MAX = 128  # run.run_id, marker.run_id, interval.run_id
HOSTNAME_MAX = 255  # node.hostname, run_rank.hostname, marker.hostname (DNS name limit)
DEVICE_UUID_MAX = 255  # device.uuid, marker.device_uuid, run_rank.device_uuid
DEVICE_NAME_MAX = 255  # device.name, run.device_name
MODEL_MAX = 64  # run.model
DATASET_MAX = 255  # run.dataset
VERSION_MAX = 64  # torch / CUDA / driver versions and the torch.distributed backend name
BOOT_ID_MAX = 64  # boot.boot_id, stream_gap.previous_boot: a daemon's boot id
SENSOR_METHOD_MAX = 255  # device.sensor_method
METRIC_NAME_MAX = 128  # keys of Marker.metrics
MAP_KEY_MAX = 64  # keys of RunConfig.tags and RunConfig.recipe
MAP_VALUE_MAX = 256  # values of RunConfig.tags and RunConfig.recipe

# -- counts -----------------------------------------------------------------------------------
METRICS_PER_MARKER = 64
MAP_ENTRIES_MAX = 64  # entries in RunConfig.tags, and in RunConfig.recipe
MARKERS_PER_BATCH = 10_000
MARKER_BYTES_MAX = 64 * 1024  # one serialized marker, config record included

# -- numbers (inclusive upper bounds; every one of them is >= 0) ------------------------------
WORLD_SIZE_MAX = 131_072  # ranks of one run (rank < world size)
LOCAL_WORLD_SIZE_MAX = 1024  # ranks on one node (local_rank < this)
EPOCH_MAX = 1_000_000
STEP_MAX = 10**12  # optimizer steps of one run
BATCH_SIZE_MAX = 1 << 24  # global and local batch size (samples)
ACCUMULATION_STEPS_MAX = 1 << 16
COUNT_MAX = 1 << 62  # parameter_count, dataset_size, steps_per_epoch
DEFAULT_MAX_CLOCK_SKEW_S = 86_400.0  # a marker's time_ns may be this far from the daemon's clock

# -- run ownership -----------------------------------------------------------------------------
RUN_TOKEN_MIN_BYTES = 16  # a shorter secret could be guessed; the trainer makes 32
RUN_TOKEN_MAX_BYTES = 64
RUN_TOKEN_SHA256_BYTES = 32

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def text_problem(value: str, max_chars: int, *, required: bool = False) -> str | None:
    """Why `value` is not an acceptable string (None when it is): too long, empty when
    required, or holding a control / invisible character."""
    if required and not value:
        return "is empty"
    if len(value) > max_chars:
        return f"is longer than {max_chars} characters ({len(value)})"
    if (bad := _FORBIDDEN.search(value)) is not None:
        return f"holds the control character {bad.group()!r} at position {bad.start()}"
    return None


def run_id_problem(run_id: str) -> str | None:
    """For `--run-id` and the client library: None when run_id is acceptable."""
    return text_problem(run_id, RUN_ID_MAX, required=True)


def map_problem(entries: dict[str, str], what: str) -> str | None:
    """A tags or recipe map: bounded count, bounded and clean keys and values."""
    if len(entries) > MAP_ENTRIES_MAX:
        return f"{what}: {len(entries)} entries (at most {MAP_ENTRIES_MAX})"
    for key, value in entries.items():
        if reason := text_problem(key, MAP_KEY_MAX, required=True):
            return f"{what} key {key[:40]!r} {reason}"
        if reason := text_problem(value, MAP_VALUE_MAX):
            return f"{what} {key!r} value {reason}"
    return None


def tag_problem(key: str, value: str) -> str | None:
    """One KEY=VALUE tag (the trainer's `--tag`): None when acceptable."""
    return map_problem({key: value}, "tag")


def clean_text(value: str, max_chars: int) -> str:
    """A string from a daemon that is only shown (a driver version, a device name): forbidden
    characters replaced by "?" and cut to max_chars, so that it is stored and printed whole."""
    return _FORBIDDEN.sub("?", value[:max_chars])


def clean_key(value: str, max_chars: int) -> str:
    """A string from a daemon that names something (a hostname, a device uuid): kept as it is
    when acceptable; else its cleaned start and a digest of the whole, so that two different
    values stay two (and each maps to one name every time)."""
    if text_problem(value, max_chars) is None:
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return clean_text(value, max_chars - 17) + "~" + digest
