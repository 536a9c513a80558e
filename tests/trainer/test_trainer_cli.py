"""`trainer train` in one process (no torchrun): flag errors, markers to a real daemon, resume,
fine-tuning from a checkpoint, and an absent daemon."""

from __future__ import annotations

import re
import subprocess

import pytest
import torch
from click.testing import CliRunner

from parawatt_proto import parawatt_pb2 as pb
from tests.support.markers import count_by_kind, read_markers
from tests.support.torchrun import PYTHON, REPO, cpu_env, free_port, stop_tree
from tests.trainer.trainer_args import AFNO, RESNET, load_summary, short
from trainer.cli import main
from trainer.system import cpu_device_name
from trainer.train.checkpoint import FILENAME


def _train(args: list[str], env: dict | None = None):
    return CliRunner().invoke(main, ["train", "--quiet", *args], env=env)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--global-batch-size", "20", "--local-batch-size", "4"], {"WORLD_SIZE": "2"},
         "--global-batch-size 20 is not a multiple of --local-batch-size 4 x world size 2 = 8"),
        (["--global-batch-size", "2"], {"WORLD_SIZE": "4"}, "smaller than the world size"),
        (["--daemon", "localhost"], None, "expected HOST:PORT or 'none'"),
        (["--tag", "novalue"], None, "expected KEY=VALUE"),
        (["--model", "resnet50", "--mode", "finetune"], None, "two-step fine-tuning"),
        (["--data", "/no/such/dir"], None, "no such directory"),
        (["--model", "fourcastnet", "--img-height", "30"], None, "multiples of --patch-size 8"),
        (["--model", "fourcastnet", "--embed-dim", "100"], None, "multiple of --num-blocks 8"),
        (["--data-fraction", "0"], None, "--data-fraction"),
        (["--model", "vgg"], None, "'vgg' is not one of"),
        (["--output", "/no/such/dir/out.json"], None, "its directory does not exist"),
        (["--output", "/tmp"], None, "is a directory; give a file name"),
        (["--lr", "nan"], None, "'nan' is not a finite number"),
        (["--lr", "inf"], None, "'inf' is not a finite number"),
        (["--lr", "0"], None, "--lr"),
        (["--warmup-epochs", "inf"], None, "not a finite number"),
        (["--data-fraction", "nan"], None, "not a finite number"),
        (["--sparsity-threshold", "nan"], None, "not a finite number"),
        (["--hard-thresholding-fraction", "nan"], None, "not a finite number"),
    ],
)  # fmt: skip
def test_bad_flags_give_one_clear_error_and_exit_2(args, env, message):
    result = _train(args, env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, ValueError)


def test_single_process_run_marks_every_boundary(sim_daemon, tmp_path):
    out = tmp_path / "summary.json"
    args = [*AFNO, *short(), "--global-batch-size", "8", "--local-batch-size", "4",
            "--daemon", sim_daemon.address, "--run-id", "cli-1", "--tag", "sweep=s1",
            "--output", str(out)]  # fmt: skip
    result = _train(args)
    assert result.exit_code == 0, result.output
    summary = load_summary(out)
    assert (summary["status"], summary["steps"], summary["micro_batches"]) == ("completed", 6, 12)
    assert summary["markers"]["sent"] == 2 + 2 * 2 + 6 * 2 and summary["markers"]["dropped"] == 0
    markers = read_markers(sim_daemon.address, "cli-1")
    assert count_by_kind(markers) == {"RUN_START": 1, "RUN_END": 1, "EPOCH_START": 2,
                                      "EPOCH_END": 2, "STEP_START": 6, "STEP_END": 6}  # fmt: skip
    cfg = markers[0].config
    assert (cfg.global_batch_size, cfg.local_batch_size, cfg.accumulation_steps) == (8, 4, 2)
    assert (cfg.world_size, cfg.backend, cfg.model, cfg.tags["sweep"]) == (
        1,
        "none",
        "fourcastnet",
        "s1",
    )
    assert cfg.recipe["optimizer"] == "adam" and cfg.parameter_count == summary["parameter_count"]
    assert cfg.torch_version == torch.__version__ and cfg.dataset_size == 128
    assert cfg.device_name.startswith("CPU (") and cfg.device_uuid == ""
    assert 0 < markers[0].metrics["setup_s"] == pytest.approx(summary["setup_duration_s"])
    steps = [(m.epoch, m.step) for m in markers if m.kind == pb.STEP_END]
    assert steps == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    epoch_end = [m for m in markers if m.kind == pb.EPOCH_END][-1]
    assert {"train_loss", "samples_seen", "eval_rmse_mean", "eval_acc_c2"} <= set(epoch_end.metrics)
    assert epoch_end.metrics["samples_seen"] == 48
    end = markers[-1]
    assert end.status == pb.RUN_STATUS_COMPLETED and end.metrics["markers_dropped"] == 0
    assert end.metrics["param_checksum"] == pytest.approx(summary["param_checksum"])


def test_resume_continues_at_the_next_epoch_with_the_same_run_id(sim_daemon, tmp_path):
    ckpt = tmp_path / "ckpt"
    base = [*AFNO, "--steps-per-epoch", "3", "--global-batch-size", "4", "--daemon",
            sim_daemon.address, "--checkpoint-dir", str(ckpt)]  # fmt: skip
    first = _train([*base, "--epochs", "1", "--output", str(tmp_path / "a.json")])
    assert first.exit_code == 0, first.output
    assert (ckpt / FILENAME).is_file()
    second = _train([*base, "--epochs", "3", "--output", str(tmp_path / "b.json")])
    assert second.exit_code == 0, second.output
    a, b = load_summary(tmp_path / "a.json"), load_summary(tmp_path / "b.json")
    assert b["run_id"] == a["run_id"] and b["start_epoch"] == 1
    assert (b["steps"], b["final_step"]) == (6, 8)
    steps = [m.step for m in read_markers(sim_daemon.address, a["run_id"]) if m.kind == pb.STEP_END]
    assert steps == list(range(9))

    other_gbs = _train([*base, "--epochs", "3", "--global-batch-size", "8"])
    assert other_gbs.exit_code == 1 and "differs from the checkpoint" in other_gbs.output
    assert "global_batch_size" in other_gbs.output and "Traceback" not in other_gbs.output
    again = _train([*base, "--epochs", "3"])
    assert again.exit_code == 1 and "all 3 epochs done: nothing to resume" in again.output


def test_finetune_starts_from_the_pretrained_weights(tmp_path):
    ckpt = tmp_path / "pre"
    common = [*AFNO, *short(1, 2), "--global-batch-size", "4", "--daemon", "none"]
    pre = _train([*common, "--checkpoint-dir", str(ckpt)])
    assert pre.exit_code == 0, pre.output
    out = tmp_path / "ft.json"
    ft = _train([*common, "--mode", "finetune", "--init-checkpoint", str(ckpt / FILENAME),
                 "--output", str(out)])  # fmt: skip
    assert ft.exit_code == 0, ft.output
    summary = load_summary(out)
    assert summary["mode"] == "finetune" and summary["recipe"]["loss"] == "relative_l2_two_step"
    assert summary["recipe"]["peak_lr"] == "0.0001"
    wrong = _train([*common, "--embed-dim", "16", "--mode", "finetune", "--init-checkpoint",
                    str(ckpt / FILENAME)])  # fmt: skip
    assert wrong.exit_code == 1 and "do not fit this model shape" in wrong.output
    assert "warning" not in ft.output
    random_start = _train([*common, "--mode", "finetune"])
    assert random_start.exit_code == 0, random_start.output
    assert "warning: --mode finetune without --init-checkpoint" in random_start.output


def test_a_file_that_is_no_checkpoint_gives_one_clear_error(tmp_path):
    (tmp_path / FILENAME).write_text("junk\n")
    args = [*AFNO, *short(1, 2), "--global-batch-size", "4", "--daemon", "none"]
    for extra in (
        ["--init-checkpoint", str(tmp_path / FILENAME)],
        ["--checkpoint-dir", str(tmp_path)],
    ):
        result = _train([*args, *extra])
        assert result.exit_code == 1, result.output
        # torch says only KeyError(<number>) for this file: the type name makes it readable
        assert re.search(r"not a readable PyTorch checkpoint \(\w+Error: ", result.output)


def test_absent_daemon_changes_nothing_for_training(tmp_path):
    runs = {}
    for name, daemon in (("none", "none"), ("absent", f"127.0.0.1:{free_port()}")):
        out = tmp_path / f"{name}.json"
        result = _train([*AFNO, *short(), "--global-batch-size", "4", "--daemon", daemon,
                         "--output", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        runs[name] = load_summary(out)
    assert runs["absent"]["steps"] == runs["none"]["steps"] == 6
    assert runs["absent"]["param_sha256"] == runs["none"]["param_sha256"]  # bit for bit
    assert runs["absent"]["markers"]["sent"] == 0 and runs["absent"]["markers"]["dropped"] == 18


def test_cpu_device_name_is_the_processor_model():
    assert (
        cpu_device_name("processor\t: 0\nmodel name\t: AMD  EPYC 7763\n") == "CPU (AMD EPYC 7763)"
    )
    assert cpu_device_name("cpu\t\t: POWER9 (raw), altivec supported\n").startswith("CPU (POWER9")
    assert cpu_device_name("processor : 0\n").startswith("CPU (")  # falls back to the arch


def test_loader_workers_start_before_the_run_and_change_no_batch(tmp_path):
    runs = {}
    for workers in ("0", "2"):
        out = tmp_path / f"w{workers}.json"
        args = [*AFNO, *short(), "--global-batch-size", "4", "--daemon", "none",
                "--workers", workers, "--output", str(out)]  # fmt: skip
        result = _train(args)
        assert result.exit_code == 0, result.output
        runs[workers] = load_summary(out)
    assert runs["2"]["param_sha256"] == runs["0"]["param_sha256"]  # bit for bit
    # Start-up is set-up: epoch 0 is not slower than the next by the workers' launch.
    assert runs["2"]["setup_duration_s"] > 0
    assert [e["epoch"] for e in runs["2"]["epoch_results"]] == [0, 1]


_DISK_FULL_AT_THE_END = """
import pathlib, sys
from trainer.cli import main
write_text = pathlib.Path.write_text
def disk_full(path, *args, **kwargs):
    if path.name == "out.json":
        raise OSError(28, "No space left on device")
    return write_text(path, *args, **kwargs)
pathlib.Path.write_text = disk_full
main(["train", "--quiet", *sys.argv[1:]])
"""


def test_a_summary_that_cannot_be_written_is_one_error_and_the_process_exits(tmp_path):
    """Loader workers ignore SIGTERM, so unless the trainer shuts them down, an exception at the
    end left them to multiprocessing's exit handler, which waited for them forever."""
    args = [*RESNET, *short(1, 2), "--global-batch-size", "4", "--daemon", "none",
            "--workers", "1", "--output", str(tmp_path / "out.json")]  # fmt: skip
    proc = subprocess.Popen([PYTHON, "-c", _DISK_FULL_AT_THE_END, *args], cwd=REPO, env=cpu_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _, stderr = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        stop_tree(proc)
        pytest.fail("the trainer hung at exit after failing to write --output")
    assert proc.returncode == 1, stderr
    assert "--output" in stderr and "No space left on device" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "args",
    [["--cooldown", "nan"], ["--cooldown-max-s", "inf"], ["--cooldown-poll-s", "nan"],
     ["--idle-temperature-c", "-inf"], ["--cooldown-poll-s", "0"]],
)  # fmt: skip
def test_sweep_float_flags_must_be_finite_numbers(tmp_path, args):
    result = CliRunner().invoke(main, ["sweep", str(tmp_path / "grid.toml"), *args])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{args[0]}'" in result.output and "Traceback" not in result.output
