"""Where a process stands (torchrun, SLURM), which daemon it talks to, how ranks agree on the run
id and token without torch.distributed, and runs ended at interpreter exit."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parawatt import env
from parawatt_proto import parawatt_pb2 as pb
from tests.support.markers import wait_for_markers
from tests.support.torchrun import REPO, cpu_env

TORCHRUN = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "LOCAL_WORLD_SIZE": "4",
            "GROUP_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "abc"}  # fmt: skip
SLURM = {"SLURM_PROCID": "9", "SLURM_LOCALID": "1", "SLURM_NTASKS": "16", "SLURM_NNODES": "4",
         "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_ID": "777", "SLURM_STEP_ID": "0"}  # fmt: skip


def test_place_from_torchrun_and_slurm():
    assert env.place(TORCHRUN) == env.Place(5, 1, 8, 4, 2, "")
    assert env.place(SLURM) == env.Place(9, 1, 16, 4, 4, "")
    assert env.place({}) == env.Place()


def test_daemon_address_precedence():
    assert env.daemon_address("unix:/run/p.sock", {"PARAWATT_DAEMON": "h:1"}) == "unix:/run/p.sock"
    assert env.daemon_address(None, {"PARAWATT_DAEMON": "h:1"}) == "h:1"
    assert env.daemon_address(None, {}) == "127.0.0.1:50051"
    assert (
        env.daemon_address("off", {}) is None
        and env.daemon_address(None, {"PARAWATT_DAEMON": "none"}) is None
    )


def test_ranks_without_torch_distributed_agree_through_the_environment():
    token = "ab" * 32
    where = env.place(TORCHRUN)
    assert env.agree(None, "m", where, env={**TORCHRUN, "PARAWATT_RUN_TOKEN": token}) == (
        "job-abc",
        bytes.fromhex(token),
        "environment",
    )
    run_id, tok, how = env.agree(None, "m", env.place(SLURM), env={**SLURM, "PARAWATT_RUN_ID": "x"})
    assert (run_id, tok, how) == ("x", b"", "environment, no token")
    with pytest.raises(ValueError, match="same run id to all ranks"):
        env.agree(None, "m", env.Place(world_size=2), env={})
    run_id, tok, how = env.agree(None, "my net", env.Place(), env={})
    assert run_id.startswith("my-net-") and len(tok) == 32 and how == "local"


@pytest.mark.parametrize(("raise_", "status"), [("RuntimeError('x')", pb.RUN_STATUS_FAILED),
                                               ("KeyboardInterrupt", pb.RUN_STATUS_INTERRUPTED),
                                               ("SystemExit(0)", pb.RUN_STATUS_COMPLETED)])  # fmt: skip
def test_a_run_left_open_is_ended_at_exit(sim_daemon, raise_, status):
    """What a callback without an exception hook (Hugging Face) relies on."""
    code = (f"import parawatt; run = parawatt.track(daemon={sim_daemon.address!r}, "
            f"run_id='open-run').start(); run.step(); raise {raise_}")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=cpu_env({"PYTHONPATH": str(REPO)}),
                   capture_output=True, timeout=120)  # fmt: skip
    markers = wait_for_markers(sim_daemon.address, lambda ms: any(m.kind == pb.RUN_END for m in ms),
                               "open-run")  # fmt: skip
    assert markers[-1].kind == pb.RUN_END and markers[-1].status == status
