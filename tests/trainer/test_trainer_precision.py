"""Precision policy (AMP dtype, TF32, cuDNN autotuning, memory format) recorded in the run's
RunConfig, and FourCastNet's activation checkpointing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from click.testing import CliRunner

from tests.trainer.trainer_args import AFNO, RESNET, load_summary, short
from trainer.cli import main
from trainer.config import AfnoShape
from trainer.models.afno import AFNONet
from trainer.train.precision import amp_policy


@pytest.mark.parametrize(
    ("amp", "device", "native", "expected"),
    [
        (False, "cuda", True, ("fp32", None, False)),
        (True, "cuda", True, ("bf16", torch.bfloat16, False)),  # A100, H100
        (True, "cuda", False, ("fp16", torch.float16, True)),  # V100: bf16 only emulated
        (True, "cpu", True, ("bf16", torch.bfloat16, False)),
    ],
)
def test_amp_picks_bf16_only_where_it_is_native(amp, device, native, expected):
    assert dataclasses.astuple(amp_policy(amp, device, native)) == expected


def _train(tmp_path, *args: str) -> dict:
    out = tmp_path / "summary.json"
    result = CliRunner().invoke(
        main, ["train", "--quiet", "--daemon", "none", *args, *short(1, 2), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    return load_summary(out)["recipe"]


def test_the_precision_policy_is_recorded_in_the_run_config(tmp_path):
    recipe = _train(tmp_path, *RESNET, "--channels-last", "--amp")
    assert recipe["precision"] == "bf16" and recipe["grad_scaler"] == "off"
    assert recipe["channels_last"] == "on" and recipe["activation_checkpointing"] == "off"
    # On the CPU there is no TF32 and no cuDNN: recorded as off, whatever the flags say.
    assert recipe["tf32"] == "off" and recipe["cudnn_benchmark"] == "off"
    assert recipe["float32_matmul_precision"] == "highest"
    assert recipe["workers"] == "0"


def test_activation_checkpointing_is_recorded(tmp_path):
    recipe = _train(tmp_path, *AFNO, "--activation-checkpointing")
    assert recipe["activation_checkpointing"] == "on" and recipe["precision"] == "fp32"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*RESNET, "--activation-checkpointing"], "--activation-checkpointing is for"),
        ([*AFNO, "--channels-last"], "--channels-last is for --model resnet50"),
        (["--stop-check-every", "0"], "--stop-check-every"),
    ],
)
def test_misplaced_precision_flags_are_one_clear_error(args, message):
    result = CliRunner().invoke(main, ["train", "--quiet", "--daemon", "none", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_activation_checkpointing_gives_the_same_gradients():
    shape = AfnoShape(img_height=16, img_width=32, in_channels=3, out_channels=3, patch_size=4,
                      embed_dim=32, depth=3, num_blocks=4)  # fmt: skip
    torch.manual_seed(0)
    plain = AFNONet(shape).train()
    ckpt = AFNONet(shape, checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x, y = torch.randn(2, 3, 16, 32), torch.randn(2, 3, 16, 32)
    grads = []
    for model in (plain, ckpt):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[1].values())


def test_checkpointing_keeps_fewer_activations():
    shape = AfnoShape(img_height=32, img_width=64, in_channels=3, out_channels=3, patch_size=4,
                      embed_dim=32, depth=4, num_blocks=4)  # fmt: skip
    saved = {}
    for on in (False, True):
        model, total = AFNONet(shape, checkpointing=on).train(), []

        def pack(t, total=total):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(torch.randn(1, 3, 32, 64)).sum()
        saved[on] = sum(total)
    assert saved[True] < saved[False] / 3
