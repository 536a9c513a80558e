"""End to end under torchrun (2 CPU processes, gloo) against a real sim daemon: every rank's
markers arrive, ranks stay in lockstep, accumulation equals one big batch, a dead daemon changes
nothing, and SIGTERM / Ctrl-C end the run cleanly as `interrupted`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter

import pytest
import torch

from parawatt_proto import parawatt_pb2 as pb
from tests.support.daemon_process import DaemonProcess
from tests.support.markers import read_markers, wait_for_markers
from tests.support.torchrun import (
    PYTHON,
    REPO,
    cpu_env,
    free_port,
    run_torchrun,
    start_torchrun,
    stop_tree,
)
from tests.trainer.trainer_args import AFNO, RESNET, load_summary, short
from trainer.config import AfnoShape
from trainer.models.afno import AFNONet
from trainer.train.checkpoint import FILENAME

pytestmark = pytest.mark.slow
KINDS = ("RUN_START", "EPOCH_START", "STEP_START", "STEP_END", "EPOCH_END", "RUN_END")


def _train(args: list[str], nproc: int = 2):
    proc = run_torchrun(["trainer", "train", "--quiet", *args], nproc, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _per_rank(markers) -> dict[int, Counter]:
    out: dict[int, Counter] = {}
    for m in markers:
        out.setdefault(m.rank, Counter())[pb.MarkerKind.Name(m.kind)] += 1
    return out


def _assert_complete_marking(markers, epochs: int, steps: int, ranks: int = 2) -> None:
    expected = {"RUN_START": 1, "RUN_END": 1, "EPOCH_START": epochs, "EPOCH_END": epochs,
                "STEP_START": epochs * steps, "STEP_END": epochs * steps}  # fmt: skip
    assert _per_rank(markers) == {r: Counter(expected) for r in range(ranks)}
    assert sum(m.kind == pb.STEP_END for m in markers) == epochs * steps * ranks
    for rank in range(ranks):
        mine = [m for m in markers if m.rank == rank]
        assert [m.step for m in mine if m.kind == pb.STEP_END] == list(range(epochs * steps))
        assert [pb.MarkerKind.Name(m.kind) for m in mine][0] == "RUN_START"
        assert mine[-1].kind == pb.RUN_END and mine[-1].status == pb.RUN_STATUS_COMPLETED
        assert mine[0].config.local_rank == rank and mine[0].local_rank == rank
    ends = [m for m in markers if m.kind == pb.RUN_END]
    assert len({m.metrics["param_checksum"] for m in ends}) == 1  # identical parameters
    assert all(m.metrics["markers_dropped"] == 0 for m in ends)


def test_resnet50_two_ranks_mark_every_boundary_in_lockstep(sim_daemon, tmp_path):
    out = tmp_path / "summary.json"
    _train([*RESNET, *short(), "--global-batch-size", "4", "--daemon", sim_daemon.address,
            "--output", str(out)])  # fmt: skip
    summary = load_summary(out)
    markers = read_markers(sim_daemon.address, summary["run_id"])
    _assert_complete_marking(markers, 2, 3)
    assert len(set(summary["param_sha256"])) == 1 and len(summary["param_sha256"]) == 2
    cfg = markers[0].config
    assert (cfg.world_size, cfg.nodes, cfg.backend, cfg.model) == (2, 1, "gloo", "resnet50")
    assert (cfg.global_batch_size, cfg.local_batch_size, cfg.accumulation_steps) == (4, 2, 1)
    assert cfg.parameter_count == 23_528_522  # torchvision resnet50, 10 classes
    assert cfg.recipe["optimizer"] == "sgd" and cfg.recipe["schedule"] == "step"
    assert {m.device_uuid for m in markers if m.rank == 1} == {sim_daemon.uuids[1]}
    assert {"eval_top1", "eval_top5", "train_loss"} <= set(summary["metrics"])
    assert summary["markers"] == {"daemon": sim_daemon.address, "sent": 36, "dropped": 0,
                                  "per_rank": [{"rank": 0, "sent": 18, "dropped": 0},
                                               {"rank": 1, "sent": 18, "dropped": 0}]}  # fmt: skip


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with DaemonProcess(tmp_path_factory.mktemp("daemon")) as d:
        yield d


@pytest.fixture(scope="module")
def afno_accumulated(daemon, tmp_path_factory):
    """GBS 16 = LBS 4 x 2 ranks x 2 accumulation micro-batches."""
    tmp = tmp_path_factory.mktemp("afno")
    _train([*AFNO, *short(), "--global-batch-size", "16", "--local-batch-size", "4",
            "--daemon", daemon.address, "--checkpoint-dir", str(tmp / "ckpt"),
            "--output", str(tmp / "summary.json")])  # fmt: skip
    return tmp


def test_fourcastnet_two_ranks_mark_every_boundary_in_lockstep(daemon, afno_accumulated):
    summary = load_summary(afno_accumulated / "summary.json")
    markers = read_markers(daemon.address, summary["run_id"])
    _assert_complete_marking(markers, 2, 3)
    assert len(set(summary["param_sha256"])) == 1
    assert {"eval_rmse_mean", "eval_acc_mean", "eval_rmse_c0"} <= set(summary["metrics"])


def test_accumulation_applies_the_same_update_as_one_big_batch(tmp_path, afno_accumulated):
    summary = load_summary(afno_accumulated / "summary.json")
    assert (summary["accumulation_steps"], summary["micro_batches"]) == (2, 6 * 2)
    _train([*AFNO, *short(), "--global-batch-size", "16", "--local-batch-size", "16",
            "--daemon", "none", "--checkpoint-dir", str(tmp_path)], nproc=1)  # fmt: skip
    accumulated = torch.load(afno_accumulated / "ckpt" / FILENAME, weights_only=True)
    big = torch.load(tmp_path / FILENAME, weights_only=True)
    assert accumulated["global_step"] == big["global_step"] == 6
    torch.manual_seed(0)  # the trainer's initial weights (--seed 0)
    initial = AFNONet(
        AfnoShape(
            img_height=16,
            img_width=32,
            in_channels=3,
            out_channels=3,
            patch_size=4,
            embed_dim=32,
            depth=2,
            num_blocks=4,
        )
    ).state_dict()
    moved = differ = 0.0
    for name, value in big["model"].items():
        torch.testing.assert_close(accumulated["model"][name], value, atol=2e-6, rtol=1e-4)
        differ = max(differ, (accumulated["model"][name] - value).abs().max().item())
        moved = max(moved, (value - initial[name]).abs().max().item())
    assert moved > 1000 * differ  # training really moved the weights; the two runs agree


LONG = [*AFNO, *short(3, 20), "--global-batch-size", "4"]


def test_daemon_killed_mid_run_changes_nothing(tmp_path):
    absent = tmp_path / "absent.json"
    _train([*LONG, "--daemon", f"127.0.0.1:{free_port()}", "--output", str(absent)])
    killed = tmp_path / "killed.json"
    with DaemonProcess(tmp_path) as daemon:
        proc = start_torchrun(["trainer", "train", "--quiet", *LONG, "--daemon", daemon.address,
                               "--run-id", "killed", "--output", str(killed)], 2)  # fmt: skip
        try:
            seen = wait_for_markers(  # wide: two ranks start slowly on a loaded machine
                daemon.address,
                lambda ms: sum(m.kind == pb.STEP_END for m in ms) >= 6,
                "killed",
                timeout_s=240,
            )
            assert sum(m.kind == pb.STEP_END for m in seen) >= 6  # the kill is mid-run
            assert not any(m.kind == pb.RUN_END for m in seen)  # still training
            daemon.kill()
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            stop_tree(proc)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-4000:]
    a, k = load_summary(absent), load_summary(killed)
    assert k["status"] == "completed" and k["steps"] == a["steps"] == 60
    assert k["param_sha256"] == a["param_sha256"]  # bit for bit the same training
    assert k["markers"]["sent"] >= 12 and k["markers"]["dropped"] > 0
    assert k["markers"]["sent"] + k["markers"]["dropped"] == 2 * (2 + 2 * 3 + 2 * 60)


def test_sigterm_stops_every_rank_at_the_same_step_as_interrupted(sim_daemon, tmp_path):
    out = tmp_path / "summary.json"
    proc = start_torchrun(["trainer", "train", "--quiet", *AFNO, *short(5, 1000),
                           "--synthetic-size", "8000", "--global-batch-size", "4",
                           "--daemon", sim_daemon.address, "--run-id", "term",
                           "--output", str(out)], 2)  # fmt: skip
    try:
        wait_for_markers(
            sim_daemon.address,
            lambda ms: sum(m.kind == pb.STEP_END for m in ms) >= 10,
            "term",
            timeout_s=240,
        )
        proc.send_signal(signal.SIGTERM)  # to the torchrun agent, which forwards it
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop_tree(proc)
    assert proc.returncode != 0
    markers = read_markers(sim_daemon.address, "term")
    ends = {m.rank: m for m in markers if m.kind == pb.RUN_END}
    assert sorted(ends) == [0, 1], stderr[-4000:]
    assert all(m.status == pb.RUN_STATUS_INTERRUPTED for m in ends.values())
    last = {r: max(m.step for m in markers if m.rank == r and m.kind == pb.STEP_END) for r in ends}
    assert last[0] == last[1] < 5 * 1000 - 1
    partial = [m for m in markers if m.kind == pb.EPOCH_END]
    assert len(partial) == 2 and all(m.metrics["partial"] == 1 for m in partial)
    summary = load_summary(out)
    assert summary["status"] == "interrupted" and summary["final_step"] == last[0]


def test_ctrl_c_single_process_exits_130_with_an_interrupted_run_end(sim_daemon, tmp_path):
    # As at a terminal: Ctrl-C signals the whole process group, loader workers included, while
    # a step is still fetching its micro-batches (GBS 4 = LBS 1 x 4 accumulation).
    proc = subprocess.Popen(
        [PYTHON, "-m", "trainer", "train", "--quiet", *AFNO, *short(5, 1000),
         "--synthetic-size", "8000", "--global-batch-size", "4", "--local-batch-size", "1",
         "--workers", "2", "--daemon", sim_daemon.address, "--run-id", "ctrl-c"],
        cwd=REPO, env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_markers(
            sim_daemon.address, lambda ms: any(m.kind == pb.STEP_END for m in ms), "ctrl-c"
        )
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_tree(proc)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    end = read_markers(sim_daemon.address, "ctrl-c")[-1]
    assert end.kind == pb.RUN_END and end.status == pb.RUN_STATUS_INTERRUPTED
    assert sys.platform.startswith("linux")
