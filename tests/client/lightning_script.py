"""A tiny PyTorch Lightning fit on the CPU with ParawattCallback (run by the client tests, in one
process or under torchrun for DDP). Prints `RUN_ID <id>` and `STEPS <global_step>` on rank 0.

    python -m tests.client.lightning_script --daemon ADDR [--devices 2] [--accumulate 2]
        [--batches 5] [--epochs 2] [--step-s 0.05] [--fail-at-batch N]
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from parawatt.integrations.lightning import ParawattCallback


class Tiny(pl.LightningModule):
    def __init__(self, step_s: float, fail_at: int):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.step_s, self.fail_at, self.batches = step_s, fail_at, 0

    def training_step(self, batch, batch_idx):
        if self.batches == self.fail_at:
            raise RuntimeError("boom")
        self.batches += 1
        time.sleep(self.step_s)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, on_step=False)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def build(args) -> tuple[pl.Trainer, Tiny, DataLoader, ParawattCallback]:
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    loader = DataLoader(data, batch_size=4)
    callback = ParawattCallback(
        daemon=args.daemon, config={"global_batch_size": 4 * args.accumulate}
    )
    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=args.epochs, limit_train_batches=args.batches,
        accumulate_grad_batches=args.accumulate, callbacks=[callback], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    return trainer, Tiny(args.step_s, args.fail_at_batch), loader, callback


def parse(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--daemon", required=True)
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--accumulate", type=int, default=1)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--step-s", type=float, default=0.05)
    ap.add_argument("--fail-at-batch", type=int, default=-1)
    return ap.parse_args(argv)


def main(argv=None) -> ParawattCallback:
    trainer, model, loader, callback = build(parse(argv))
    trainer.fit(model, loader)
    if trainer.global_rank == 0:
        print(f"RUN_ID {callback.run.id}", flush=True)
        print(f"STEPS {trainer.global_step}", flush=True)
    return callback


if __name__ == "__main__":
    main()
