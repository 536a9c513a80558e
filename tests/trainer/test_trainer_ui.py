"""The run summary table printed at the end of `trainer train`."""

from __future__ import annotations

from trainer.ui import summary_table


def summary(**changes) -> dict:
    base = {
        "run_id": "r1", "status": "completed", "model": "resnet50",
        "dataset": "synthetic-images", "dataset_size": 64, "world_size": 1, "nodes": 1,
        "global_batch_size": 8, "local_batch_size": 4, "accumulation_steps": 2,
        "steps": 9, "start_epoch": 0, "epochs": 3, "steps_per_epoch": 3, "final_step": 8,
        "duration_s": 3.0, "setup_duration_s": 1.0, "train_duration_s": 2.0,
        "samples_per_s": 24.0, "metrics": {"train_loss": 1.5},
        "markers": {"sent": 20, "dropped": 0, "daemon": "none"},
        "epoch_results": [{"epoch": e} for e in range(3)],
    }  # fmt: skip
    return base | changes


def test_completed_run_shows_every_epoch():
    assert "9 this session (epochs 0..2, 3 steps each), last step 8" in summary_table(summary())


def test_interrupted_run_shows_only_the_epochs_it_ran():
    text = summary_table(
        summary(
            status="interrupted", steps=4, final_step=3, epoch_results=[{"epoch": 0}, {"epoch": 1}]
        )
    )
    assert "4 this session (epochs 0..1, 3 steps each), last step 3" in text


def test_resumed_session_starts_at_its_first_epoch():
    text = summary_table(summary(start_epoch=2, steps=3, epoch_results=[{"epoch": 2}]))
    assert "(epochs 2..2," in text
