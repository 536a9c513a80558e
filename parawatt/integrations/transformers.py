"""Hugging Face `Trainer`: `Trainer(..., callbacks=[ParawattCallback()])` measures `train()`.

run = one `train()` (every process; rank 0's run id and token are broadcast when
torch.distributed is up), epochs = training epochs, steps = optimizer steps (`state.global_step`,
which already counts `gradient_accumulation_steps` micro-batches as one step). The Trainer has
no exception hook: a run that `train()` leaves by an exception is ended at interpreter exit
(`interrupted` after Ctrl-C, else `failed`), or call `callback.end(status)` yourself.
"""

from __future__ import annotations

from transformers import TrainerCallback

import parawatt


class ParawattCallback(TrainerCallback):
    def __init__(self, daemon=None, run_id=None, config=None, tags=None, **options):
        self._args = dict(daemon=daemon, run_id=run_id, config=config, tags=tags, **options)
        self.run: parawatt.Run | None = None
        self._global_step = 0
        self._epoch = 0

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        world = max(1, int(getattr(args, "world_size", 1) or 1))
        accumulation = int(args.gradient_accumulation_steps)
        found = {
            "local_batch_size": int(args.per_device_train_batch_size),
            "accumulation_steps": accumulation,
            "global_batch_size": int(args.per_device_train_batch_size) * accumulation * world,
            "seed": int(args.seed),
            "amp": bool(args.fp16 or args.bf16),
            "framework": "transformers",
        }
        if model is not None:
            found["model"] = type(model).__name__
            found["parameter_count"] = sum(p.numel() for p in model.parameters())
        if args.num_train_epochs and float(args.num_train_epochs).is_integer():
            found["epochs"] = int(args.num_train_epochs)
        call = dict(self._args)
        config = {**found, **(call.pop("config") or {})}
        device = getattr(model, "device", None) if model is not None else None
        self.run = parawatt.track(config=config, device=device, **call)
        self.run.next_step = int(state.global_step)
        self.run.start()
        self._global_step = int(state.global_step)
        self._epoch = int(state.epoch or 0)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.begin_epoch(self._epoch)

    def on_step_end(self, args, state, control, **kwargs):
        run = self.run
        if run is None:
            return
        for _ in range(state.global_step - self._global_step):
            run.step()
        self._global_step = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.run is not None and self.run._epoch is not None and logs:
            numbers = {k: v for k, v in logs.items() if isinstance(v, int | float)}
            self.run._epoch.metrics.update(numbers)  # sent with EPOCH_END

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.run is not None:
            self.run.end_epoch()
            self._epoch += 1

    def on_train_end(self, args, state, control, **kwargs):
        self.end("completed")

    def end(self, status: str = "completed") -> dict:
        return self.run.end(status) if self.run is not None else {}
