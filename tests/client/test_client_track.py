"""`parawatt.track` in one process: a plain loop measured end to end (sim daemon -> collector on
SQLite -> `parawatt.results`), exit statuses, run token, Unix sockets, no daemon, dead daemon."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest

import parawatt
from parawatt_proto import parawatt_pb2 as pb
from tests.client.conftest import assert_every_step_has_energy
from tests.client.recorder import Recorder
from tests.support.daemon_process import DaemonProcess
from tests.support.markers import read_markers, wait_for_markers
from tests.support.torchrun import PYTHON, REPO, cpu_env, free_port


def loop(run, epochs=2, steps=4, step_s=0.05):
    for _ in range(epochs):
        with run.epoch() as epoch:
            for k in range(steps):
                time.sleep(step_s)
                run.step(loss=1.0 / (k + 1))
            epoch.metrics["train_loss"] = 0.5


def test_plain_loop_every_step_has_energy_in_results(stack):
    config = {"model": "mynet", "global_batch_size": 8, "optimizer": "sgd"}
    with parawatt.track(daemon=stack.address, config=config, tags={"exp": "a"}) as run:
        loop(run)
    assert run.summary["status"] == "completed" and run.summary["markers_dropped"] == 0
    res = parawatt.results(run.id, db=stack.db, wait_s=60)
    assert_every_step_has_energy(res, ranks=1, steps=8)
    assert [e.epoch for e in res.epochs] == [0, 1] and all(e.energy_j > 0 for e in res.epochs)
    assert res.epochs[1].metrics["train_loss"] == 0.5
    # steps tile their epoch: each starts where the previous ended
    mine = res.steps_of(0)
    assert all(a.end_ns == b.start_ns for a, b in zip(mine[:3], mine[1:4], strict=True))
    start = read_markers(stack.address, run.id)[0]
    assert start.kind == pb.RUN_START and start.config.model == "mynet"
    assert dict(start.config.tags) == {"exp": "a"} and start.config.recipe["optimizer"] == "sgd"
    assert start.config.world_size == 1 and start.config.device_name.startswith("CPU (")
    assert start.config.global_batch_size == 8


def test_results_to_pandas_when_pandas_is_installed(stack):
    pd = pytest.importorskip("pandas")
    with parawatt.track(daemon=stack.address) as run:
        loop(run, epochs=1, steps=2)
    frame = parawatt.results(run.id, db=stack.db, wait_s=60).to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["step"]) == [0, 1]


@pytest.mark.parametrize(
    ("error", "status"),
    [(RuntimeError("boom"), pb.RUN_STATUS_FAILED),
     (KeyboardInterrupt(), pb.RUN_STATUS_INTERRUPTED)],
)  # fmt: skip
def test_leaving_by_an_exception_ends_the_run_failed_or_interrupted(sim_daemon, error, status):
    run = parawatt.track(daemon=sim_daemon.address)
    with pytest.raises(type(error)), run, run.epoch():
        run.step()
        raise error
    markers = read_markers(sim_daemon.address, run.id)
    kinds = [pb.MarkerKind.Name(m.kind) for m in markers]
    assert kinds == ["RUN_START", "EPOCH_START", "STEP_START", "STEP_END", "EPOCH_END", "RUN_END"]
    assert markers[-2].metrics["partial"] == 1.0 and markers[-1].status == status


def test_sigterm_ends_the_run_interrupted_and_exits_143(sim_daemon, tmp_path):
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [PYTHON, "-m", "tests.client.loop_script", "--daemon", sim_daemon.address,
         "--block-at", "2", "--ready-file", str(ready)],
        cwd=REPO, env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run_id = ready.read_text()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert '"status": "interrupted"' in out
    markers = wait_for_markers(sim_daemon.address, lambda ms: ms[-1:] and ms[-1].kind == pb.RUN_END,
                               run_id)  # fmt: skip
    assert markers[-1].status == pb.RUN_STATUS_INTERRUPTED
    assert sum(m.kind == pb.STEP_END for m in markers) == 2


def test_every_marker_carries_the_run_token_which_is_never_shown(caplog):
    token = bytes(range(32))
    os.environ["PARAWATT_RUN_TOKEN"] = token.hex()
    try:
        with Recorder() as rec, caplog.at_level(logging.DEBUG):
            with parawatt.track(daemon=rec.address, run_id="tok-run") as run:
                loop(run, epochs=1, steps=3, step_s=0)
                shown = repr(run) + str(run.summary) + str(run.config)
            markers = list(rec.markers)
    finally:
        del os.environ["PARAWATT_RUN_TOKEN"]
    assert len(markers) == 2 + 2 + 2 * 3
    assert {m.run_token for m in markers} == {token}
    for text in (shown + str(run.summary), caplog.text):
        assert token.hex() not in text and str(token) not in text


def test_a_fresh_token_per_run_and_a_bad_env_token_is_refused_without_showing_it():
    with Recorder() as rec:
        for _ in range(2):
            with parawatt.track(daemon=rec.address) as run:
                run.step()
        tokens = {m.run_id: m.run_token for m in rec.markers}
    assert len(set(tokens.values())) == 2 and all(len(t) == 32 for t in tokens.values())
    os.environ["PARAWATT_RUN_TOKEN"] = "zz" + "ab" * 31
    try:
        with pytest.raises(ValueError, match="not hexadecimal") as info:
            parawatt.track(daemon="off").start()
    finally:
        del os.environ["PARAWATT_RUN_TOKEN"]
    assert "zz" not in str(info.value)


def test_unix_socket_daemon_address(tmp_path):
    path = tmp_path / "marker.sock"
    with Recorder(f"unix:{path}") as rec:
        with parawatt.track(daemon=f"unix:{path}") as run:
            loop(run, epochs=1, steps=2, step_s=0)
        assert run.summary["markers_sent"] == 2 + 2 + 4 and len(rec.markers) == 8


def test_daemon_address_from_the_environment(sim_daemon):
    os.environ["PARAWATT_DAEMON"] = sim_daemon.address
    try:
        with parawatt.track() as run:
            run.step()
    finally:
        del os.environ["PARAWATT_DAEMON"]
    assert run.summary["markers_sent"] == 4 and read_markers(sim_daemon.address, run.id)


def test_no_daemon_changes_nothing_and_the_summary_counts_the_drops(caplog):
    run = parawatt.track(daemon=f"127.0.0.1:{free_port()}", close_timeout_s=0.5)
    with caplog.at_level(logging.WARNING, logger="parawatt"), run:
        loop(run, epochs=2, steps=5, step_s=0)
    assert run.steps == 10 and run.summary["status"] == "completed"
    assert run.summary["markers_sent"] == 0 and run.summary["markers_dropped"] == 1 + 4 + 20 + 1
    assert "markers dropped" in caplog.text


def test_daemon_dying_mid_run_changes_nothing(tmp_path):
    with DaemonProcess(tmp_path) as daemon:
        run = parawatt.track(daemon=daemon.address, close_timeout_s=1.0)
        with run, run.epoch():
            for _ in range(3):
                run.step()
            wait_for_markers(daemon.address, lambda ms: len(ms) >= 8, run.id)
            daemon.kill()
            for _ in range(5):
                time.sleep(0.01)
                run.step()
    assert run.steps == 8 and run.summary["status"] == "completed"
    assert run.summary["markers_sent"] == 8 and run.summary["markers_dropped"] == 10 + 1 + 1


def test_markers_off():
    with parawatt.track(daemon="off") as run:
        loop(run, epochs=1, steps=3, step_s=0)
    assert run.summary["markers_sent"] == 0 and run.summary["markers_dropped"] == 0
    assert run.id.startswith("run-")


def test_bad_input_is_one_clear_error():
    with pytest.raises(ValueError, match="not HOST:PORT or unix:PATH"):
        parawatt.track(daemon="nonsense").start()
    with pytest.raises(ValueError, match="expected a whole number"):
        parawatt.track(daemon="off", config={"global_batch_size": "many"}).start()
    with pytest.raises(ValueError, match="device"):
        parawatt.track(daemon="off", device="gpu7").start()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"run_id": "r" * 10_000}, "longer than 128 characters"),
     ({"run_id": "bad\x1b[31mid"}, "control character"),
     ({"run_id": 5}, "expected a string"),
     ({"config": {"global_batch_size": -1}}, "global_batch_size -1 is outside"),
     ({"config": {"world_size": 10**9}}, "world_size"),
     ({"config": {"seed": 2**70}}, "out of range"),
     ({"tags": {"k" * 100: "v"}}, "tags key"),
     ({"tags": {"a\x00": "b"}}, "tags key"),
     ({"tags": {f"t{i}": "v" for i in range(65)}}, "65 entries"),
     ({"tags": {f"t{i}": "\U0001f600" * 256 for i in range(64)}}, "bytes"),
     ({"run_token": b"short"}, "5 bytes")],
)  # fmt: skip
def test_what_the_daemon_would_refuse_is_a_value_error_when_the_run_is_made(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parawatt.track(daemon="127.0.0.1:9", **kwargs)  # made, not started: nothing is sent


def test_a_run_id_from_the_environment_is_checked_too():
    os.environ["PARAWATT_RUN_ID"] = "x" * 200
    try:
        with pytest.raises(ValueError, match=r"PARAWATT_RUN_ID.*longer than 128"):
            parawatt.track(daemon="127.0.0.1:9").start()  # refused before any connection
    finally:
        del os.environ["PARAWATT_RUN_ID"]


def test_an_unknown_status_is_refused_and_the_run_can_still_be_ended():
    with Recorder() as rec:
        run = parawatt.track(daemon=rec.address).start()
        run.step()
        with pytest.raises(ValueError, match="'completed', 'failed', 'interrupted'"):
            run.end("exploded")
        assert run.status is None
        assert run.end("failed")["status"] == "failed"
        assert rec.markers[-1].kind == pb.RUN_END
        assert rec.markers[-1].status == pb.RUN_STATUS_FAILED


def test_an_epoch_the_daemon_would_refuse_is_a_value_error():
    with parawatt.track(daemon="off") as run:
        with pytest.raises(ValueError, match="epochs are numbered"):
            run.begin_epoch(-1)
        with run.epoch(3):
            run.step()
    assert run.summary["epochs"] == 4


def test_import_parawatt_does_not_import_torch():
    code = "import sys, parawatt; print('torch' in sys.modules, 'collector' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)  # fmt: skip
    assert out.stdout.split() == ["False", "False"]


def test_markers_off_refuse_nothing_and_a_long_description_is_made_to_fit(caplog):
    """With markers off nothing is sent, so nothing need fit the daemon (a 70-character model,
    70 config entries, a 2**25 batch in tokens all ran before the up-front checks); with a
    daemon, what only describes the run (model name, free-form config) is cut to fit with one
    warning instead of failing the training script."""
    big = {f"arg_{i}": i for i in range(70)}
    off = dict(model="m" * 70, global_batch_size=2**25, world_size=200_000, **big)
    with parawatt.track(daemon="off", run_id="x" * 300, config=off) as run:
        run.step()
    assert run.status == "completed"
    described = {"model": "m" * 70, **big, "long_value": "v" * 1000}
    config = parawatt.facts.run_config({}, described, {})
    assert config["model"] == "m" * 64 and len(config["recipe"]) == 64
    assert "arg_0" in config["recipe"] and "long_value" not in config["recipe"]
    assert "made to fit the daemon's limits" in caplog.text
    cut = parawatt.facts.run_config({}, {"notes": "v" * 1000}, {})
    assert cut["recipe"]["notes"] == "v" * 256
    with pytest.raises(ValueError, match="global_batch_size"):  # a number is never made up
        parawatt.facts.run_config({}, {"global_batch_size": -1}, {})
