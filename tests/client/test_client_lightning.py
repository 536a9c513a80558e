"""PyTorch Lightning 2.x with ParawattCallback on the CPU: run = fit, epochs = training epochs,
steps = optimizer steps (gradient accumulation counted right), in one process and 2-process DDP;
results show every step of every rank with energy."""

from __future__ import annotations

import re

import pytest

pytest.importorskip("pytorch_lightning")

import parawatt  # noqa: E402
from parawatt_proto import parawatt_pb2 as pb  # noqa: E402
from tests.client import lightning_script  # noqa: E402
from tests.client.conftest import assert_every_step_has_energy  # noqa: E402
from tests.support.markers import read_markers  # noqa: E402
from tests.support.torchrun import run_torchrun  # noqa: E402


def test_fit_with_accumulation_every_optimizer_step_has_energy(stack):
    # 5 batches an epoch, accumulating 2: optimizer steps after batches 2, 4 and the last one
    callback = lightning_script.main(["--daemon", stack.address, "--accumulate", "2"])
    run = callback.run
    assert run.summary["status"] == "completed" and run.steps == 6
    res = parawatt.results(run.id, db=stack.db, wait_s=60)
    assert_every_step_has_energy(res, ranks=1, steps=6)
    assert [e.epoch for e in res.epochs] == [0, 1] and all(e.steps == 3 for e in res.epochs)
    # a step spans its accumulated batches (each sleeps 0.05 s): 2, 2, then the last one
    spans = [s.duration_s for s in res.steps]
    assert all(spans[k] >= 0.1 for k in (0, 1, 3, 4)) and all(spans[k] >= 0.05 for k in (2, 5))
    assert "train_loss" in res.epochs[0].metrics
    markers = read_markers(stack.address, run.id)
    config = markers[0].config
    assert config.accumulation_steps == 2 and config.model == "Tiny" and config.epochs == 2
    assert config.recipe["framework"] == "pytorch_lightning" and config.parameter_count == 5
    assert all("loss" in m.metrics for m in markers if m.kind == pb.STEP_END)


def test_an_exception_in_fit_ends_the_run_failed(sim_daemon):
    with pytest.raises(RuntimeError, match="boom"):
        lightning_script.main(["--daemon", sim_daemon.address, "--fail-at-batch", "3"])
    (end,) = [m for m in read_markers(sim_daemon.address) if m.kind == pb.RUN_END]
    assert end.status == pb.RUN_STATUS_FAILED and end.metrics["steps"] == 3


@pytest.mark.slow
def test_ddp_two_processes_every_step_of_every_rank_has_energy(stack):
    proc = run_torchrun(["tests.client.lightning_script", "--daemon", stack.address,
                         "--devices", "2", "--accumulate", "2"], nproc=2)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_id = re.search(r"RUN_ID (\S+)", proc.stdout).group(1)
    assert re.search(r"STEPS (\d+)", proc.stdout).group(1) == "6"
    res = parawatt.results(run_id, db=stack.db, wait_s=60)
    assert_every_step_has_energy(res, ranks=2, steps=6)
    starts = [m for m in read_markers(stack.address, run_id) if m.kind == pb.RUN_START]
    assert sorted(m.rank for m in starts) == [0, 1]
    assert all(m.config.world_size == 2 and m.config.backend == "gloo" for m in starts)
