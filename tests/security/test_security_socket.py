"""Local marker intake over the daemon's Unix domain socket: permissions, path handling, and the
trainer's markers arriving through it (`trainer train --daemon unix:PATH`)."""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from power_daemon.config import DaemonConfig
from power_daemon.errors import ConfigError
from power_daemon.serve import local_socket
from power_daemon.serve.server import create_server
from tests.support.markers import count_by_kind, read_markers
from tests.support.torchrun import PYTHON, REPO, run_torchrun
from tests.trainer.trainer_args import AFNO, load_summary, short

SIM = dict(listen="127.0.0.1:0", backend="sim", rapl="off")


@pytest.fixture
def open_dir():
    """A directory any user may traverse (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pw-sock-"))
    path.chmod(0o755)
    yield path
    for p in path.iterdir():
        p.unlink()
    path.rmdir()


def _connect_as(path: Path, uid: int, gid: int) -> str:
    """Connect from a child process running as uid:gid with no other groups."""
    pid = os.fork()
    if pid == 0:  # the child only makes system calls, then leaves without cleanup
        code = 2
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return {0: "connected", 1: "PermissionError"}.get(os.waitstatus_to_exitcode(status), "error")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as two other users")
def test_socket_is_0660_and_only_its_group_may_connect(start_sim_daemon, open_dir):
    path = open_dir / "marker.sock"
    daemon = start_sim_daemon(marker_socket=str(path), marker_socket_group="daemon")
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == 1  # group "daemon"
    assert daemon.daemon.marker_socket == str(path)
    assert _connect_as(path, 65534, 65534) == "PermissionError"  # nobody, another group
    assert _connect_as(path, 65534, 1) == "connected"  # nobody, in the marker group


def test_socket_without_group_has_the_daemons_group_and_goes_away_at_close(tmp_path):
    path = tmp_path / "m.sock"
    server, _ = create_server(DaemonConfig(**SIM, marker_socket=str(path)))
    assert os.stat(path).st_gid == os.getegid()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    server.close()
    assert not path.exists()


def test_stale_socket_is_replaced_and_a_live_one_is_not(tmp_path, caplog):
    path = tmp_path / "m.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))  # a socket file nobody listens on: its daemon was killed
    stale.close()
    first, _ = create_server(DaemonConfig(**SIM, marker_socket=str(path)))
    try:
        assert first.marker_socket == str(path)
        with pytest.raises(ConfigError, match="is in use by another daemon"):
            create_server(DaemonConfig(**SIM, marker_socket=str(path)))
        # "auto" leaves a live socket alone and goes on without one.
        caplog.set_level(logging.WARNING, logger="power_daemon.serve.local_socket")
        assert local_socket.prepare(str(path), auto=True) is None
        assert "in use by another daemon" in caplog.text
        assert path.exists()
    finally:
        first.close()


@pytest.mark.parametrize(
    ("setup", "overrides", "message"),
    [
        ("file", {}, "exists and is not a socket"),
        (None, {"marker_socket": "/no/such/dir/m.sock"}, "does not exist"),
        (None, {"marker_socket_group": "no-such-group-pw"}, "no group named"),
        (None, {"marker_socket": "/tmp/" + "x" * 120}, "longer than 107 bytes"),
    ],
)
def test_unusable_socket_paths_are_refused(tmp_path, setup, overrides, message):
    path = tmp_path / "m.sock"
    if setup == "file":
        path.write_text("precious\n")
    config = DaemonConfig(**{**SIM, "marker_socket": str(path), **overrides})
    with pytest.raises(ConfigError, match=message):
        create_server(config)
    if setup == "file":
        assert path.read_text() == "precious\n"  # never removed


def test_auto_uses_the_runtime_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    server, _ = create_server(DaemonConfig(**SIM, marker_socket="auto"))
    try:
        assert server.marker_socket == str(tmp_path / "parawatt" / "marker.sock")
    finally:
        server.close()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    expected = "/run/parawatt/marker.sock" if os.access("/run/parawatt", os.W_OK) else None
    assert local_socket.default_path() == expected


def test_cli_reports_the_socket_and_empty_disables_it(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    lines = {}
    for name, extra in (("auto", []), ("off", ["--marker-socket", ""])):
        proc = subprocess.Popen(
            [PYTHON, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl", "--listen",
             "127.0.0.1:0", *extra],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        try:
            lines[name] = proc.stdout.readline()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    sock = tmp_path / "parawatt" / "marker.sock"
    assert f"markers also on unix:{sock})" in lines["auto"]
    assert "power-daemon listening on 127.0.0.1:" in lines["off"]
    assert "markers also on" not in lines["off"] and ", plaintext)" in lines["off"]


def test_trainer_sends_its_markers_through_the_socket(start_sim_daemon, tmp_path):
    from trainer.cli import main

    sock = tmp_path / "m.sock"
    daemon = start_sim_daemon(marker_socket=str(sock))
    out = tmp_path / "summary.json"
    args = ["train", "--quiet", *AFNO, *short(), "--global-batch-size", "4",
            "--local-batch-size", "4", "--daemon", f"unix:{sock}", "--run-id", "sock-1",
            "--output", str(out)]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert load_summary(out)["markers"]["dropped"] == 0
    markers = read_markers(f"unix:{sock}", "sock-1")
    assert count_by_kind(markers) == {"RUN_START": 1, "RUN_END": 1, "EPOCH_START": 2,
                                      "EPOCH_END": 2, "STEP_START": 6, "STEP_END": 6}  # fmt: skip
    assert read_markers(daemon.address, "sock-1") == markers  # one buffer behind both listeners


def test_trainer_refuses_a_malformed_socket_address():
    from trainer.cli import main

    result = CliRunner().invoke(main, ["train", "--quiet", "--daemon", "unix:"])
    assert result.exit_code == 2 and "has no socket path after 'unix:'" in result.output


@pytest.mark.slow
def test_torchrun_ranks_send_markers_through_the_socket(start_sim_daemon, tmp_path):
    sock = tmp_path / "m.sock"
    start_sim_daemon(marker_socket=str(sock))
    args = ["trainer", "train", "--quiet", *AFNO, *short(2, 2), "--global-batch-size", "4",
            "--local-batch-size", "2", "--daemon", f"unix:{sock}", "--run-id", "sock-ddp"]  # fmt: skip
    proc = run_torchrun(args, nproc=2)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    markers = read_markers(f"unix:{sock}", "sock-ddp")
    assert {m.rank for m in markers} == {0, 1}
    counts = count_by_kind(markers)
    assert counts["STEP_END"] == 2 * 4 and counts["RUN_END"] == 2
