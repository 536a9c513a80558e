"""What `trainer train` prints: the run id first, evaluation progress, a summary that agrees with
what the daemon (and so `collector show`) holds, one clear line when energy is not recorded; the
evaluation cap of a smoke test; the sweep's one-line result per run."""

from __future__ import annotations

from click.testing import CliRunner

from parawatt_proto import parawatt_pb2 as pb
from tests.support.markers import read_markers
from tests.support.torchrun import free_port
from tests.trainer.trainer_args import load_summary
from trainer.cli import main
from trainer.ui import Progress, no_energy_line, plural, run_result_line, summary_table

# Like tests/trainer/trainer_args.AFNO, without --eval-batches (the cap is under test here).
TINY = [
    "--model", "fourcastnet", "--img-height", "16", "--img-width", "32", "--in-channels", "3",
    "--out-channels", "3", "--patch-size", "4", "--embed-dim", "32", "--depth", "1",
    "--num-blocks", "4", "--synthetic-size", "512", "--workers", "0", "--epochs", "1",
    "--global-batch-size", "4", "--local-batch-size", "4",
]  # fmt: skip


def _train(*args: str):
    result = CliRunner().invoke(main, ["train", *TINY, *args])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_no_daemon_run_prints_run_id_eval_progress_and_ends_with_one_energy_line(tmp_path):
    out = tmp_path / "s.json"
    lines = _train(
        "--steps-per-epoch", "2", "--run-id", "ui-1", "--output", str(out), "--daemon", "none"
    )  # fmt: skip
    assert lines[0] == "run ui-1: fourcastnet, 1 rank, no power daemon: energy is not recorded"
    # --steps-per-epoch caps the evaluation too (the synthetic validation set has 5 batches)
    assert "epoch 1 evaluating 2 batches per rank" in lines
    text = "\n".join(lines)
    assert "1 rank on 1 node, GBS 4" in text and "1 ranks" not in text
    assert "(512 training samples)" in text  # the dataset size says what it counts
    assert "8 this session, 8 in the run (steps x GBS" in text
    assert "none sent (no power daemon)" in text
    assert lines[-1] == no_energy_line()
    assert load_summary(out)["samples"] == 8


def test_unreachable_daemon_ends_with_the_same_clear_line():
    port = free_port()
    lines = _train("--steps-per-epoch", "1", "--daemon", f"127.0.0.1:{port}")
    assert lines[-1] == no_energy_line(f"127.0.0.1:{port}")
    assert "did not answer" in lines[-1]


def test_eval_batches_overrides_the_smoke_test_cap():
    lines = _train("--steps-per-epoch", "2", "--eval-batches", "3", "--quiet", "--daemon", "none")
    assert lines == []  # --quiet: nothing at all
    lines = _train("--steps-per-epoch", "2", "--eval-batches", "3", "--daemon", "none")
    assert "epoch 1 evaluating 3 batches per rank" in lines
    lines = _train("--steps-per-epoch", "2", "--eval-batches", "100", "--daemon", "none")
    assert "epoch 1 evaluating 5 batches per rank" in lines  # 512 / 25 = 20 samples, LBS 4


def test_summary_markers_agree_with_what_the_daemon_holds(sim_daemon, tmp_path):
    out = tmp_path / "s.json"
    lines = _train(
        "--steps-per-epoch", "2", "--daemon", sim_daemon.address, "--run-id", "ui-2",
        "--output", str(out),
    )  # fmt: skip
    assert lines[0] == f"run ui-2: fourcastnet, 1 rank, markers to {sim_daemon.address}"
    summary = load_summary(out)
    held = read_markers(sim_daemon.address, "ui-2")
    end = next(m for m in held if m.kind == pb.RUN_END)
    # RUN_END's markers_sent (what `collector show` lists) = the summary's count = what arrived
    assert end.metrics["markers_sent"] == summary["markers"]["sent"] == len(held)
    assert end.metrics["samples"] == summary["samples"] == 8  # overlays the epochs' own counts
    assert f"{len(held)} sent, 0 dropped, to {sim_daemon.address}" in "\n".join(lines)
    assert no_energy_line() not in lines


def test_finetuning_runs_carry_a_mode_tag_for_the_report(sim_daemon):
    _train(
        "--steps-per-epoch", "1", "--mode", "finetune", "--daemon", sim_daemon.address,
        "--run-id", "ft-1", "--quiet",
    )  # fmt: skip
    start = next(m for m in read_markers(sim_daemon.address, "ft-1") if m.kind == pb.RUN_START)
    assert start.config.tags["mode"] == "finetune"


def test_plural_and_multi_rank_marker_line():
    assert (plural(1, "rank"), plural(2, "rank"), plural(0, "node")) == (
        "1 rank",
        "2 ranks",
        "0 nodes",
    )
    s = {
        "run_id": "r", "status": "completed", "model": "resnet50", "dataset": "imagenet",
        "dataset_size": 1281167, "world_size": 2, "nodes": 1, "global_batch_size": 16,
        "local_batch_size": 8, "accumulation_steps": 1, "steps": 3, "start_epoch": 0,
        "epochs": 1, "steps_per_epoch": 3, "final_step": 2, "duration_s": 1.0,
        "setup_duration_s": 0.5, "train_duration_s": 0.5, "samples_per_s": 96.0, "metrics": {},
        "markers": {"sent": 20, "dropped": 0, "daemon": "127.0.0.1:1",
                    "per_rank": [{"rank": 0, "sent": 10}, {"rank": 1, "sent": 10}]},
    }  # fmt: skip
    text = summary_table(s)
    assert "(1,281,167 training samples)" in text and "2 ranks on 1 node" in text
    assert "20 sent by 2 ranks (10 by rank 0 = markers_sent in `collector show`)" in text


def test_evaluation_progress_lines_when_not_a_terminal(capsys):
    progress = Progress(True, total_steps=4, line_every_s=0.0)
    progress.eval_start(0, 3)
    for _ in range(3):
        progress.eval_step()
    progress.eval_end()
    progress.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "epoch 1 evaluating 3 batches per rank",
        "evaluating batch 1/3",
        "evaluating batch 2/3",
        "evaluating batch 3/3",
    ]


def test_sweep_run_result_line():
    result = {"status": "completed", "duration_s": 12.34, "metrics": {"eval_top1": 0.76,
              "eval_top5": 0.93, "train_loss": 1.0}}  # fmt: skip
    assert run_result_line(result, 45_600.0) == (
        "  completed in 12.3 s, node GPU energy 45.6 kJ, eval_top1 0.76, eval_top5 0.93"
    )
    assert run_result_line({}, None) == "  completed, no evaluation"


class CountingThermometer:
    """A node whose two GPUs use 1.5 kJ between any two reads (the Thermometer Protocol)."""

    def __init__(self):
        self.reads = 0

    def gpu_temperatures(self):
        return {"gpu-a": 40.0, "gpu-b": 41.0}

    def gpu_energy_j(self):
        self.reads += 1
        return {"gpu-a": 1000.0 * self.reads, "gpu-b": 500.0 * self.reads}


def test_sweep_prints_one_result_line_per_finished_run(tmp_path):
    import json
    import tomllib

    from trainer.sweep.grid import parse_grid
    from trainer.sweep.runner import SweepRunner
    from trainer.sweep.state import SweepState

    grid = parse_grid(
        tomllib.loads(
            '[sweep]\nname = "t"\nmodel = "resnet50"\nrepeats = 1\n[train]\ndata = "synthetic"\n'
            '[[series]]\nname = "s"\ngpus = [1]\ngbs = 4\n'
        )
    )

    def launcher(spec):  # what `trainer train --output` leaves behind
        summary = {"status": "completed", "duration_s": 3.25, "metrics": {"eval_top1": 0.5}}
        spec.output_path.write_text(json.dumps(summary))
        return 0

    lines: list[str] = []
    state = SweepState.load(tmp_path / "t" / "state.json", "t")
    runner = SweepRunner(
        grid, state, tmp_path, launcher, echo=lines.append, thermometer=CountingThermometer()
    )
    assert runner.run().completed == 1
    assert lines[-1] == "  completed in 3.2 s, node GPU energy 1.5 kJ, eval_top1 0.5"
