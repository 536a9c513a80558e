"""The device a rank trains on, and the hardware and software facts its RUN_START carries.

RunConfig fields come from three places, later ones winning: facts found here, the launcher's
place in the job (`env.place`), and the caller's `config`. A `config` key that is no RunConfig
field goes into the `recipe` map (as text), so `config={"optimizer": "adamw"}` is kept too.

The merged config is checked against the daemon's own rules (parawatt_proto.validate) when the
run is made: the daemon refuses the whole batch holding a RUN_START it does not accept, and with
it every marker queued beside it, so a config it would refuse is a ValueError here instead.
"""

from __future__ import annotations

import logging
import platform
import socket
import sys
from collections.abc import Mapping
from pathlib import Path

from parawatt_proto import limits as L
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.validate import config_problem

log = logging.getLogger("parawatt")

_FIELDS = pb.RunConfig.DESCRIPTOR.fields_by_name
_MAPS = ("recipe", "tags")
# RunConfig text that only describes the run (cut to fit, not refused; validate._CONFIG_TEXT)
_DESCRIPTIVE = (("model", L.MODEL_MAX), ("dataset", L.DATASET_MAX),
                ("device_name", L.DEVICE_NAME_MAX), ("torch_version", L.VERSION_MAX),
                ("cuda_version", L.VERSION_MAX), ("driver_version", L.VERSION_MAX))  # fmt: skip
MAX_TEXT = L.MAP_VALUE_MAX  # the daemon's longest text (each field has its own limit too)
# A RUN_START holds its config and a few ids (at most ~2 KiB); the rest of MARKER_BYTES_MAX
# is for its metrics (the marker client drops those that do not fit).
CONFIG_BYTES_MAX = L.MARKER_BYTES_MAX - 4096
_FACT_LIMITS = {"hostname": L.HOSTNAME_MAX, "device_name": L.DEVICE_NAME_MAX,
                "device_uuid": L.DEVICE_UUID_MAX, "torch_version": L.VERSION_MAX,
                "cuda_version": L.VERSION_MAX, "driver_version": L.VERSION_MAX}  # fmt: skip


def cuda_index(device) -> int | None:
    """The CUDA device index to stamp steps on, or None for the host clock.

    `device`: None (the current CUDA device, if torch is loaded and CUDA initialised), an int,
    "cpu", "cuda", "cuda:N", or a torch.device."""
    if device is None:
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
            return None
        return int(torch.cuda.current_device())
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    kind = getattr(device, "type", None)
    if kind is not None:  # a torch.device
        if kind != "cuda":
            return None
        index = device.index
        return int(index) if index is not None else cuda_index(None) or 0
    text = str(device).strip().lower()
    if text == "cpu" or text.startswith(("mps", "xla", "meta")):
        return None
    if text == "cuda":
        return cuda_index(None) or 0
    head, _, index = text.partition(":")
    if head == "cuda" and index.isdigit():
        return int(index)
    raise ValueError(
        f"device {device!r}: expected None, an index, 'cpu', 'cuda:N' or a torch.device"
    )


def cpu_device_name(cpuinfo: str | None = None) -> str:
    """ "CPU (<processor model>)", e.g. "CPU (AMD EPYC 7763 64-Core Processor)": what a CPU run
    ran on, in the place a GPU run names its GPU (the architecture where the model is unknown)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux
            cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("model name", "cpu model", "cpu") and value.strip():
            return f"CPU ({' '.join(value.split())})"
    return f"CPU ({platform.processor() or platform.machine() or 'unknown'})"


def driver_version() -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:  # no NVML on this host: the record just lacks the driver version
        return ""


def hardware(index: int | None) -> dict[str, str]:
    """Device name and UUID (NVML's "GPU-..." form; empty on the CPU, so the daemon fills in its
    GPU number local_rank), torch, CUDA and driver versions, hostname."""
    torch = sys.modules.get("torch")
    out = {"hostname": socket.gethostname(), "torch_version": ""}
    if torch is not None:
        out["torch_version"] = str(torch.__version__)
    if index is None or torch is None:
        return _clean({**out, "device_name": cpu_device_name(), "device_uuid": ""})
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    return _clean({**out, "device_name": props.name, "device_uuid": uuid,
                   "cuda_version": torch.version.cuda or "",
                   "driver_version": driver_version()})  # fmt: skip


def _clean(found: dict[str, str]) -> dict[str, str]:
    """Facts the user cannot change must not make the run's config refused: an odd driver
    string is cleaned and cut to the daemon's limit rather than failing the run."""
    return {k: L.clean_text(str(v), _FACT_LIMITS.get(k, MAX_TEXT)) for k, v in found.items()}


def framework() -> dict[str, str]:
    """Training frameworks loaded in this process, for the recipe map."""
    out = {}
    for name, key in (("pytorch_lightning", "lightning"), ("lightning", "lightning"),
                      ("transformers", "transformers"), ("accelerate", "accelerate")):  # fmt: skip
        module = sys.modules.get(name)
        if module is not None and key not in out:
            out[key] = str(getattr(module, "__version__", "?"))
    return {f"{k}_version": L.clean_text(v, MAX_TEXT) for k, v in out.items()}


def run_config(
    facts: Mapping, config: Mapping | None, tags: Mapping | None, check_limits: bool = True
) -> dict:
    """Merge into RunConfig keyword arguments the daemon accepts; raises ValueError naming a bad
    entry. What only describes the run is made to fit instead of refused, with one warning:
    descriptive text (model, dataset, ...) is cut to its limit, and free-form config entries
    (the recipe: `vars(args)` easily has more than 64) beyond the daemon's limits are cut or
    left out. Tags (which group a sweep's points), the batch sizes and counts are refused.
    check_limits=False (markers off: nothing is sent) skips the daemon's limits."""
    out: dict = {"recipe": {}, "tags": {}}
    cut: list[str] = []
    for source in (facts, config or {}):
        for key, value in source.items():
            if key in _MAPS:
                out[key].update(_text_map(key, value))
            elif key in _FIELDS:
                out[key] = _coerce(key, value)
            else:
                _recipe_entry(out["recipe"], key, value, cut)
    if not check_limits:
        out["tags"].update(tags or {})
        return out
    out["tags"].update(_text_map("tags", tags or {}))
    for name, limit in _DESCRIPTIVE:
        if isinstance(out.get(name), str) and L.text_problem(out[name], limit):
            out[name] = L.clean_text(out[name], limit)
            cut.append(f"config.{name} cut to {limit} characters")
    if cut:
        log.warning("parawatt: the run's description was made to fit the daemon's limits: %s",
                    "; ".join(cut[:5]) + (f" (and {len(cut) - 5} more)" if len(cut) > 5 else ""))  # fmt: skip
    return _accepted(out)


def _recipe_entry(recipe: dict, key, value, cut: list[str]) -> None:
    """One free-form config entry into the recipe, cut to the daemon's limits (or left out past
    its number of entries) rather than refused: it only describes the run."""
    name = L.clean_text(_as_text(key), L.MAP_KEY_MAX)
    if not name:
        cut.append(f"config key {key!r} left out (empty)")
        return
    if len(recipe) >= L.MAP_ENTRIES_MAX and name not in recipe:
        cut.append(f"config[{key!r}] left out (at most {L.MAP_ENTRIES_MAX} entries)")
        return
    text = _as_text(value)
    recipe[name] = L.clean_text(text, L.MAP_VALUE_MAX)
    if name != _as_text(key) or recipe[name] != text:
        cut.append(f"config[{key!r}] cut")


def _accepted(config: dict) -> dict:
    """`config` when the daemon takes it as a RunConfig, else ValueError naming the problem."""
    try:
        record = pb.RunConfig(**config)
    except (TypeError, ValueError) as exc:  # e.g. a whole number beyond the field's 64 bits
        raise ValueError(f"config: {exc}") from None
    if reason := config_problem(record):
        raise ValueError(f"{reason} (the daemon would refuse the run's markers)")
    if (size := record.ByteSize()) > CONFIG_BYTES_MAX:
        raise ValueError(
            f"config, tags and recipe take {size} bytes (at most {CONFIG_BYTES_MAX}): "
            "shorten or drop some entries"
        )
    return config


def _coerce(key: str, value):
    kind = _FIELDS[key].type
    if kind == _FIELDS["model"].type:  # text: its own message, not "expected a whole number"
        if key in dict(_DESCRIPTIVE):
            return _as_text(value)  # cut to fit later (run_config)
        return _text(f"config[{key!r}]", value)
    try:
        if kind == _FIELDS["amp"].type:
            return bool(value)
        number = int(value)
        if number != value and not isinstance(value, str):
            raise ValueError
        return number
    except (TypeError, ValueError):
        raise ValueError(f"config[{key!r}] = {value!r}: expected a whole number") from None


def _as_text(value) -> str:
    return (
        value
        if isinstance(value, str)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def _text(what: str, value, limit: int = MAX_TEXT) -> str:
    text = _as_text(value)
    if len(text) > limit or not text.isprintable():
        raise ValueError(f"{what}: at most {limit} printable characters")
    return text


def _text_map(what: str, value) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping of names to values")
    return {
        _text(f"{what} key {k!r}", k, L.MAP_KEY_MAX): _text(f"{what}[{k!r}]", v)
        for k, v in value.items()
    }
