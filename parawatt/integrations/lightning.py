"""PyTorch Lightning 2.x: `Trainer(callbacks=[ParawattCallback()])` measures every fit.

run = one `fit` (every rank; rank 0's run id and token are broadcast over Lightning's process
group), epochs = training epochs (`current_epoch`), steps = optimizer steps: a step ends on the
batch where `trainer.global_step` advanced, so with `accumulate_grad_batches=N` a step spans N
batches (and the epoch's last, shorter accumulation counts as the step Lightning makes of it).
Step numbers are `global_step - 1`, so a fit resumed from a checkpoint continues them.
An exception in fit ends the run `failed`; Ctrl-C or Lightning's SIGTERM handling `interrupted`.
Works with `pytorch_lightning` (the `parawatt[lightning]` extra) or the unified `lightning` package.
"""

from __future__ import annotations

from collections.abc import Mapping

import parawatt
from parawatt.run import status_for

try:
    from pytorch_lightning import Callback
except ImportError:  # the unified package
    from lightning.pytorch import Callback


class ParawattCallback(Callback):
    def __init__(self, daemon=None, run_id=None, config=None, tags=None, **options):
        self._args = dict(daemon=daemon, run_id=run_id, config=config, tags=tags, **options)
        self.run: parawatt.Run | None = None
        self._global_step = 0

    def on_fit_start(self, trainer, pl_module) -> None:
        found = {
            "model": type(pl_module).__name__,
            "parameter_count": sum(p.numel() for p in pl_module.parameters()),
            "accumulation_steps": int(trainer.accumulate_grad_batches),
            "nodes": int(trainer.num_nodes),
            "precision": str(trainer.precision),
            "framework": "pytorch_lightning",
        }
        if trainer.max_epochs and trainer.max_epochs > 0:
            found["epochs"] = int(trainer.max_epochs)
        args = dict(self._args)
        config = {**found, **(args.pop("config") or {})}
        self.run = parawatt.track(config=config, device=pl_module.device, **args)
        self.run.next_step = int(trainer.global_step)
        self.run.start()
        self._global_step = int(trainer.global_step)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.begin_epoch(int(trainer.current_epoch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        run = self.run
        if run is None or trainer.global_step <= self._global_step:
            return  # accumulating: no optimizer step on this batch
        for _ in range(trainer.global_step - self._global_step - 1):
            run.step()  # several optimizer steps on one batch (manual optimization)
        self._global_step = trainer.global_step
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and getattr(loss, "ndim", 0) == 0:
            run.step(loss=loss)
        else:
            run.step()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            metrics = {k: v for k, v in trainer.callback_metrics.items()
                       if getattr(v, "ndim", 0) == 0}  # fmt: skip
            self.run.end_epoch(metrics)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self.run is not None:
            self.run.end("completed")

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.run is not None:
            self.run.end(status_for(exception))
