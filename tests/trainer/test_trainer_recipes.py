"""Batch arithmetic and LR schedules of the study's recipes (pure)."""

from __future__ import annotations

import math

import pytest

from trainer.errors import ConfigError
from trainer.train.recipes import BatchPlan, lr_at, make_recipe, plan_batches, steps_per_epoch


@pytest.mark.parametrize(
    ("gbs", "lbs", "world", "expected"),
    [
        (16, 4, 2, BatchPlan(16, 4, 2)),
        (16, 8, 2, BatchPlan(16, 8, 1)),
        (None, 4, 3, BatchPlan(12, 4, 1)),  # no GBS: LBS x world, no accumulation
        (64, None, 4, BatchPlan(64, 16, 1)),  # no LBS: GBS split over the world
        (None, None, 2, BatchPlan(128, 64, 1)),  # ResNet50's default LBS
        (8192, 256, 8, BatchPlan(8192, 256, 4)),
    ],
)
def test_plan_batches(gbs, lbs, world, expected):
    assert plan_batches(gbs, lbs, world, "resnet50") == expected


def test_plan_batches_refuses_what_does_not_divide():
    with pytest.raises(ConfigError, match=r"not a multiple of --local-batch-size 4 x world size 2"):
        plan_batches(20, 4, 2, "resnet50")
    with pytest.raises(ConfigError, match="smaller than the world size"):
        plan_batches(2, None, 4, "fourcastnet")
    with pytest.raises(ConfigError, match="12 does not split evenly over world size 8"):
        plan_batches(12, None, 8, "resnet50")  # no LBS given: no flag the user did not pass
    with pytest.raises(ConfigError, match="not a multiple of --local-batch-size 32 x world size 1"):
        plan_batches(16, 32, 1, "resnet50")  # LBS above GBS


def test_steps_per_epoch_follows_drop_last_sharding_and_the_cap():
    plan = BatchPlan(16, 4, 2)
    assert steps_per_epoch(100, 2, plan, None) == 6  # 50 per rank // 8 per rank-step
    assert steps_per_epoch(100, 2, plan, 3) == 3
    with pytest.raises(ConfigError, match="fewer than one global batch of 16"):
        steps_per_epoch(15, 2, plan, None)


def test_resnet_recipe_linear_scaling_warmup_and_step_decay():
    r = make_recipe("resnet50", "pretrain", 1024, 90, 100)
    assert (r.optimizer, r.momentum, r.weight_decay) == ("sgd", 0.9, 1e-4)
    assert r.peak_lr == pytest.approx(0.4) and r.start_lr == pytest.approx(0.1)
    assert r.warmup_steps == 500
    assert lr_at(r, 0) == pytest.approx(0.1)  # Goyal et al.: warm-up from the GBS-256 LR
    assert lr_at(r, 250) == pytest.approx(0.25)
    assert lr_at(r, 500) == pytest.approx(0.4)
    assert lr_at(r, 29 * 100 + 99) == pytest.approx(0.4)
    assert lr_at(r, 30 * 100) == pytest.approx(0.04)
    assert lr_at(r, 60 * 100) == pytest.approx(0.004)
    assert lr_at(r, 80 * 100) == pytest.approx(0.0004)
    assert r.as_map()["schedule"] == "step" and r.as_map()["peak_lr"] == "0.4"


def test_resnet_small_batch_needs_no_ramp_and_short_runs_decay_at_the_same_fractions():
    r = make_recipe("resnet50", "pretrain", 128, 9, 10, warmup_epochs=0)
    assert r.peak_lr == pytest.approx(0.05) and lr_at(r, 0) == pytest.approx(0.05)
    assert [round(lr_at(r, e * 10) / r.peak_lr, 6) for e in range(9)] == [
        1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.001
    ]  # fmt: skip


def test_resnet_cosine_after_warmup_and_explicit_lr():
    r = make_recipe("resnet50", "pretrain", 256, 10, 10, lr=0.2, schedule="cosine")
    assert lr_at(r, 50) == pytest.approx(0.2)
    assert lr_at(r, 75) == pytest.approx(0.1)
    assert lr_at(r, 100) == pytest.approx(0.0, abs=1e-12)


def test_fourcastnet_adam_cosine_per_epoch():
    r = make_recipe("fourcastnet", "pretrain", 64, 4, 10)
    assert (r.optimizer, r.peak_lr, r.loss, r.warmup_steps) == ("adam", 5e-4, "relative_l2", 0)
    per_epoch = [lr_at(r, e * 10) for e in range(4)]
    expected = [5e-4 * 0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert per_epoch == pytest.approx(expected)
    assert lr_at(r, 19) == lr_at(r, 10)  # constant within an epoch, as upstream
    f = make_recipe("fourcastnet", "finetune", 64, 4, 10)
    assert (f.peak_lr, f.loss) == (1e-4, "relative_l2_two_step")


def test_resnet_has_no_finetune_mode():
    with pytest.raises(ConfigError, match="FourCastNet mode"):
        make_recipe("resnet50", "finetune", 256, 1, 1)
