"""Hugging Face `Trainer` with ParawattCallback on the CPU (a tiny model defined here): run =
train(), epochs, steps = optimizer steps (global_step, accumulation counted); results show every
step with energy."""

from __future__ import annotations

import time

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
pytest.importorskip("accelerate")  # the Trainer needs it on PyTorch (the transformers extra has it)

import parawatt  # noqa: E402
from parawatt.integrations.transformers import ParawattCallback  # noqa: E402
from parawatt_proto import parawatt_pb2 as pb  # noqa: E402
from tests.client.conftest import assert_every_step_has_energy  # noqa: E402
from tests.support.markers import read_markers  # noqa: E402


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def forward(self, x, labels=None):
        time.sleep(0.05)  # every micro-batch takes a while, so every step has measurable energy
        out = self.net(x)
        return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 20

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(4, generator=g), "labels": torch.randn(1, generator=g)}


def test_trainer_every_optimizer_step_has_energy(stack, tmp_path):
    callback = ParawattCallback(daemon=stack.address, tags={"exp": "hf"})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4,
        gradient_accumulation_steps=2, num_train_epochs=2, logging_steps=1, save_strategy="no",
        report_to=[], use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=Data(),
                                   callbacks=[callback])  # fmt: skip
    trainer.train()
    # 20 samples / 4 = 5 micro-batches an epoch, accumulating 2: 3 optimizer steps an epoch
    assert trainer.state.global_step == 6
    run = callback.run
    assert run.summary["status"] == "completed" and run.steps == 6
    res = parawatt.results(run.id, db=stack.db, wait_s=60)
    assert_every_step_has_energy(res, ranks=1, steps=6)
    assert [e.epoch for e in res.epochs] == [0, 1] and all(e.steps == 3 for e in res.epochs)
    config = read_markers(stack.address, run.id)[0].config
    assert (config.accumulation_steps, config.local_batch_size, config.global_batch_size) == (
        2,
        4,
        8,
    )
    assert config.model == "Tiny" and config.recipe["framework"] == "transformers"
    assert config.tags["exp"] == "hf"
    ends = [m for m in read_markers(stack.address, run.id) if m.kind == pb.EPOCH_END]
    assert all("loss" in m.metrics for m in ends)
