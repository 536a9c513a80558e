"""The software and hardware record a run-start marker carries (device, versions, host)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from parawatt.facts import cpu_device_name
from parawatt.facts import driver_version as _driver_version
from trainer.train.distributed import DistContext, hostname

__all__ = ["cpu_device_name", "device_record", "param_fingerprint", "software_record"]


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
