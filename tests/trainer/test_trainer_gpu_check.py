"""The GPU acceptance check on a machine without GPUs: the script fails clearly, and its checks
(trainer/acceptance.py) work on data from a real (simulated-GPU) daemon and on fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from parawatt_proto import parawatt_pb2 as pb
from tests.daemon.daemon_helpers import daemon_stub
from trainer.acceptance import main, multi_gpu_processes, reading_coverage, step_shares

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def _script(tmp_path: Path, nvidia_smi: str | None) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if nvidia_smi is not None:
        fake = bin_dir / "nvidia-smi"
        fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
        fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin", "GPU_CHECK_DIR": str(tmp_path / "o")}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)  # fmt: skip


def test_the_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


@pytest.mark.parametrize(
    ("nvidia_smi", "message"),
    [
        (None, "no NVIDIA driver here (nvidia-smi not found)"),
        ("exit 0", "nvidia-smi lists no GPU"),
        ("echo GPU-00000000-0000-0000-0000-000000000000", "does not see a GPU"),
    ],
)
def test_without_a_gpu_the_script_fails_with_one_clear_line(tmp_path, nvidia_smi, message):
    proc = _script(tmp_path, nvidia_smi)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_readings_check_passes_on_a_daemon_whose_readings_carry_both(sim_daemon):
    uuid = sim_daemon.uuids[0]
    with daemon_stub(sim_daemon.address) as stub:
        for kind in (pb.RUN_START, pb.RUN_END):
            stub.SendMarkers(pb.MarkerBatch(markers=[pb.Marker(
                run_id="acc", kind=kind, time_ns=time.time_ns(), device_uuid=uuid)]))  # fmt: skip
            time.sleep(0.3)
    result = CliRunner().invoke(main, ["readings", "--daemon", sim_daemon.address,
                                       "--run-id", "acc"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{uuid}: " in result.output and "energy 100.0%, instant power 100.0%" in result.output
    missing = CliRunner().invoke(main, ["readings", "--daemon", sim_daemon.address,
                                        "--run-id", "other"])  # fmt: skip
    assert missing.exit_code == 2 and "no RUN_START/RUN_END" in missing.output


def test_coverage_counts_only_the_run_window():
    rows = [("g", 5, True, True), ("g", 10, True, False), ("g", 20, False, True), ("g", 99, 0, 0)]
    (c,) = reading_coverage(rows, 10, 50).values()
    assert (c.readings, c.energy, c.instant) == (2, 1, 1) and c.fraction("energy") == 0.5


def test_step_shares_per_rank_and_epoch():
    rows = [("step", 0, 0, 4.0), ("step", 0, 0, 5.0), ("epoch", 0, 0, 10.0), ("run", 0, 0, 10.0),
            ("step", 1, 0, 6.0), ("epoch", 1, 0, 6.0), ("step", 1, 1, None)]  # fmt: skip
    assert step_shares(rows) == {(0, 0): 0.9, (1, 0): 1.0}


def test_a_process_on_two_gpus_is_found(tmp_path):
    assert multi_gpu_processes([(1, "GPU-a"), (2, "GPU-b"), (2, "GPU-a"), (1, "GPU-a")]) == {
        2: {"GPU-a", "GPU-b"}
    }
    log = tmp_path / "contexts.jsonl"
    rows = [{"pid": 11, "gpu": "GPU-a", "mem": 2**31}, {"pid": 12, "gpu": "GPU-b", "mem": 2**30},
            {"pid": 12, "gpu": "GPU-a", "mem": 500 * 2**20}]  # fmt: skip
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = CliRunner().invoke(main, ["contexts", str(log)])
    assert result.exit_code == 1
    assert "pid 11 on GPU-a: peak 2.00 GiB" in result.output
    assert "pid 12: ['GPU-a', 'GPU-b']" in result.output
    log.write_text(json.dumps(rows[0]) + "\n")
    assert CliRunner().invoke(main, ["contexts", str(log)]).exit_code == 0


def test_the_module_runs_as_a_command():
    proc = subprocess.run([sys.executable, "-m", "trainer.acceptance", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "readings" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [["watch", "--out", "w.jsonl", "--interval-s", "nan"],
     ["watch", "--out", "w.jsonl", "--interval-s", "0"],
     ["energy", "--db", "sqlite://", "--run-id", "r", "--ranks", "1", "--wait-s", "inf"]],
)  # fmt: skip
def test_the_checks_refuse_numbers_that_are_not_finite(args):
    """nan slept for ever between polls (and inf waited for ever): one usage line, exit 2."""
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Invalid value for" in result.output
