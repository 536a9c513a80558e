"""The software and hardware record a run-start marker carries (device, versions, host)."""

from __future__ import annotations

import hashlib
import platform
from pathlib import Path

import torch
from torch import nn

from trainer.distributed import DistContext, hostname


def device_record(ctx: DistContext) -> dict[str, str]:
    """Device name and UUID (NVML's "GPU-..." form on CUDA; empty on the CPU, so the daemon fills
    in its GPU number `local_rank`), CUDA and driver versions."""
    if ctx.device.type != "cuda":
        return {
            "device_name": cpu_device_name(),
            "device_uuid": "",
            "cuda_version": "",
            "driver_version": "",
        }
    index = ctx.device.index or 0
    props = torch.cuda.get_device_properties(index)
    uuid = str(getattr(props, "uuid", "") or "")
    if uuid and not uuid.startswith(("GPU-", "MIG-")):
        uuid = f"GPU-{uuid}"
    return {
        "device_name": props.name,
        "device_uuid": uuid,
        "cuda_version": torch.version.cuda or "",
        "driver_version": _driver_version(),
    }


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


def _driver_version() -> str:
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


def software_record() -> dict[str, str]:
    return {"torch_version": torch.__version__, "hostname": hostname()}


def param_fingerprint(model: nn.Module) -> tuple[float, str]:
    """(sum of all parameters, SHA-256 of their bytes): equal across ranks iff DDP kept them in
    lockstep bit for bit."""
    digest = hashlib.sha256()
    total = 0.0
    for param in model.parameters():
        data = param.detach().cpu().contiguous()
        total += float(data.double().sum())
        digest.update(data.numpy().tobytes())
    return total, digest.hexdigest()
