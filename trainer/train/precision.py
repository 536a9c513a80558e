"""Numeric precision policy: what autocast runs in, TF32, cuDNN autotuning, memory format.

The study's reference set-ups train with TF32 (Ampere and newer) and often AMP; plain fp32 is
several times slower and costlier, so the policy is a choice made on purpose and recorded in
RunConfig.recipe (precision, tf32, float32_matmul_precision, cudnn_benchmark, channels_last,
activation_checkpointing), never a silent default.

`--amp` picks bf16 only where the GPU computes it natively (Ampere and newer):
`torch.cuda.is_bf16_supported()` also says yes where bf16 is merely emulated (V100), which is
slower than fp32 there. Elsewhere on CUDA it is fp16 with a GradScaler; on the CPU bf16.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.config import TrainConfig


@dataclass(frozen=True)
class Precision:
    name: str  # fp32 | bf16 | fp16: what the forward pass runs in under autocast
    amp_dtype: torch.dtype | None  # None: no autocast
    grad_scaler: bool  # fp16 needs loss scaling


def amp_policy(amp: bool, device_type: str, bf16_native: bool) -> Precision:
    if not amp:
        return Precision("fp32", None, False)
    if device_type == "cuda" and not bf16_native:
        return Precision("fp16", torch.float16, True)
    return Precision("bf16", torch.bfloat16, False)


def bf16_native(device: torch.device) -> bool:
    if device.type != "cuda":
        return True  # CPU autocast runs bf16
    return torch.cuda.is_bf16_supported(including_emulation=False)


def apply_backend_flags(config: TrainConfig, device: torch.device) -> dict[str, str]:
    """Set TF32 and cuDNN autotuning for this process (CUDA only; the CPU keeps full fp32) and
    return the recipe entries that record the whole policy."""
    cuda = device.type == "cuda"
    tf32 = cuda and config.tf32
    if cuda:
        torch.set_float32_matmul_precision("high" if tf32 else "highest")
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = config.cudnn_benchmark
    policy = amp_policy(config.amp, device.type, bf16_native(device))
    return {
        "precision": policy.name,
        "grad_scaler": _on(policy.grad_scaler),
        "tf32": _on(tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": _on(cuda and config.cudnn_benchmark),
        "channels_last": _on(config.channels_last),
        "activation_checkpointing": _on(config.activation_checkpointing),
    }


def _on(flag: bool) -> str:
    return "on" if flag else "off"
