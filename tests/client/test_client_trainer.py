"""The bundled trainer as parawatt's first user: its markers carry the run token, and a run
resumed from `--checkpoint-dir` keeps the token of its first session (it still owns its run)."""

from __future__ import annotations

import stat

from click.testing import CliRunner

from parawatt_proto import parawatt_pb2 as pb
from tests.client.recorder import Recorder
from tests.trainer.trainer_args import AFNO, load_summary
from trainer.cli import main
from trainer.train.run import TOKEN_FILE


def test_resumed_trainer_run_keeps_its_token(tmp_path):
    ckpt = tmp_path / "ckpt"
    with Recorder() as rec:
        base = [*AFNO, "--steps-per-epoch", "2", "--global-batch-size", "4", "--daemon",
                rec.address, "--checkpoint-dir", str(ckpt)]  # fmt: skip
        for epochs, out in (("1", "a.json"), ("2", "b.json")):
            res = CliRunner().invoke(main, ["train", "--quiet", *base, "--epochs", epochs,
                                            "--output", str(tmp_path / out)])  # fmt: skip
            assert res.exit_code == 0, res.output
        markers = list(rec.markers)
    run_id = load_summary(tmp_path / "a.json")["run_id"]
    assert load_summary(tmp_path / "b.json")["run_id"] == run_id
    starts = [m for m in markers if m.kind == pb.RUN_START]
    assert len(starts) == 2 and {m.run_id for m in markers} == {run_id}
    (token,) = {m.run_token for m in markers}
    assert len(token) == 32
    assert [m.step for m in markers if m.kind == pb.STEP_END] == [0, 1, 2, 3]
    assert stat.S_IMODE((ckpt / TOKEN_FILE).stat().st_mode) == 0o600
