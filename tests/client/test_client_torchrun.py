"""Two ranks under torchrun (gloo, CPU), each with `parawatt.track` around a plain loop: one run id
and token broadcast by rank 0, and results with every step of every rank with energy."""

from __future__ import annotations

import re

import pytest

import parawatt
from tests.client.conftest import assert_every_step_has_energy
from tests.client.recorder import Recorder
from tests.support.markers import read_markers
from tests.support.torchrun import run_torchrun

pytestmark = pytest.mark.slow


def test_two_ranks_one_run_every_step_of_every_rank_has_energy(stack):
    proc = run_torchrun(["tests.client.loop_script", "--daemon", stack.address, "--dist",
                         "--epochs", "2", "--steps", "3", "--step-s", "0.1"], nproc=2)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    run_id = re.search(r"RUN_ID (\S+)", proc.stdout).group(1)
    res = parawatt.results(run_id, db=stack.db, wait_s=60)
    assert_every_step_has_energy(res, ranks=2, steps=6)
    markers = read_markers(stack.address, run_id)
    starts = [m for m in markers if m.config.world_size]
    assert sorted(m.rank for m in starts) == [0, 1]
    assert {m.config.local_rank for m in starts} == {0, 1}
    assert all(m.config.backend == "gloo" and m.config.world_size == 2 for m in starts)


def test_rank_zero_shares_its_run_id_and_token_with_every_rank():
    with Recorder() as rec:
        proc = run_torchrun(["tests.client.loop_script", "--daemon", rec.address, "--dist",
                             "--epochs", "1", "--steps", "2", "--step-s", "0"], nproc=2)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        markers = list(rec.markers)
    assert len(markers) == 2 * (2 + 2 + 2 * 2) and {m.rank for m in markers} == {0, 1}
    assert len({m.run_id for m in markers}) == 1
    (token,) = {m.run_token for m in markers}
    assert len(token) == 32 and token.hex() not in proc.stdout + proc.stderr
