"""power-daemon CLI: error paths (one line, non-zero exit, no traceback), probe, SIGTERM."""

import ctypes.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.cli_args import FiniteFloat
from power_daemon.cli import main
from tests.daemon.daemon_helpers import daemon_stub

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def no_nvml() -> None:
    if (
        ctypes.util.find_library("nvidia-ml")
        or "fakenvml" in os.environ.get("LD_LIBRARY_PATH", "").lower()
    ):
        pytest.skip("this machine has an NVML library")


def assert_one_error_line(result, exit_code: int, text: str) -> None:
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("power-daemon: error")]
    assert len(errors) == 1 and text in errors[0], result.output
    assert "Traceback" not in result.output


def test_backend_nvml_without_nvml_is_one_clear_error():
    no_nvml()
    result = run("serve", "--backend", "nvml", "--listen", "127.0.0.1:0")
    assert_one_error_line(result, 1, "NVML is not available")


def test_a_bad_listen_address_is_one_clear_error():
    result = run("serve", "--backend", "sim", "--listen", "localhost")
    assert_one_error_line(result, 2, "--listen must be HOST:PORT")


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--backend", "sim", "--no-rapl", "--listen", f"127.0.0.1:{port}")
    assert_one_error_line(result, 2, f"cannot listen on 127.0.0.1:{port}: Address already in use")


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [
        ("--interval-ms", "0", "interval_ms must be between"),
        ("--interval-ms", "-5", "interval_ms must be between"),
        ("--sim-devices", "0", "sim_devices must be between 1 and"),
        ("--sim-devices", "100000", "sim_devices must be between 1 and"),
        ("--buffer-capacity", "10", "buffer_capacity must be between 1000 and"),
        ("--buffer-capacity", str(10**10), "buffer_capacity must be between 1000 and"),
        ("--max-streams", "0", "max_streams must be between"),
        ("--listen", "::1:50051", "[::1]:50051"),  # IPv6 needs brackets
        ("--listen", "192.0.2.1:5000", "192.0.2.1:5000: Cannot assign requested address"),
    ],
)
def test_bad_option_values_are_one_clear_error(option, value, text):
    result = run("serve", "--backend", "sim", "--listen", "127.0.0.1:0", option, value)
    assert_one_error_line(result, 2, text)


def float_options() -> list[tuple[str, str]]:
    """(subcommand, option) for every float option of every subcommand."""
    return [
        (name, param.opts[0])
        for name, command in sorted(main.commands.items())
        for param in command.params
        if isinstance(param, click.Option) and isinstance(param.type, click.types.FloatParamType)
    ]


def test_every_float_option_takes_the_finite_type():
    assert len(float_options()) >= 15
    for name, option in float_options():
        param = next(p for p in main.commands[name].params if p.opts[0] == option)
        assert isinstance(param.type, FiniteFloat), f"{name} {option}"


# --gil-switch-ms nan aborted the whole interpreter ("Fatal Python error: take_gil"), so it is
# tried in a process of its own below, never in the test's.
@pytest.mark.parametrize(
    ("command", "option"), [c for c in float_options() if c[1] != "--gil-switch-ms"]
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused_for_every_float_option(command, option, value):
    result = run(command, "--backend", "sim", "--no-rapl", option, value)
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}': '{value}' is not a finite number" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--gil-switch-ms", "nan"], "'nan' is not a finite number"),
        (["--sim-counter-ms", "nan"], "'nan' is not a finite number"),
        (["--sim-counter-ms", "inf"], "'inf' is not a finite number"),
        (["--sim-counter-ms", "1e-9"], "1e-09 is not in the range 1.0<=x<=10000.0"),
        (["--sim-counter-ms", "1e6"], "1000000.0 is not in the range 1.0<=x<=10000.0"),
    ],
)
def test_serve_refuses_values_that_crashed_or_broke_it_in_one_line(args, text):
    """Before: rc 134 (take_gil), OverflowError, a sampler raising ZeroDivisionError on every
    tick while serving, "cannot convert float NaN to integer"."""
    proc = subprocess.run(
        [sys.executable, "-m", "power_daemon", "serve", "--backend", "sim", "--no-rapl",
         "--listen", "127.0.0.1:0", "--marker-socket", "", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and text in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout


def test_an_unwritable_port_file_is_one_clear_error(tmp_path):
    port_file = tmp_path / "absent-dir" / "port"
    result = run("serve", "--backend", "sim", "--no-rapl", "--listen", "127.0.0.1:0",
                 "--port-file", str(port_file))  # fmt: skip
    assert_one_error_line(result, 2, "cannot write --port-file")


@pytest.mark.parametrize(
    "args",
    [
        ["--log-level", "loud", "probe"],
        ["probe", "--daemon", "127.0.0.1:1", "--interval-ms", "-5"],
        ["probe", "--daemon", "127.0.0.1:1", "--timeout-s", "nan"],
        ["probe", "--count", "0"],
    ],
)
def test_bad_values_are_usage_errors_not_tracebacks(args):
    result = run(*args)
    assert result.exit_code == 2 and "Invalid value" in result.output, result.output
    assert "Traceback" not in result.output


def test_probe_with_the_sim_backend_lists_devices_and_readings():
    result = run("probe", "--backend", "sim", "--no-rapl", "--count", "2", "--interval-ms", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("backend sim")
    assert sum("sim-GPU-" in line for line in lines) == 2
    assert len([line for line in lines if line[:2].isdigit() and ":" in line[:12]]) == 4


def test_probe_of_a_running_daemon(sim_daemon):
    result = run("probe", "--daemon", sim_daemon.address, "--count", "1")
    assert result.exit_code == 0, result.output
    assert f"boot {sim_daemon.daemon.boot_id}" in result.output
    assert all(u in result.output for u in sim_daemon.uuids)


def test_probe_of_an_absent_daemon_is_one_clear_error():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run("probe", "--daemon", f"127.0.0.1:{port}", "--timeout-s", "2")
    assert_one_error_line(result, 1, f"daemon at 127.0.0.1:{port}: UNAVAILABLE")


def test_serve_prints_its_address_writes_the_port_file_and_exits_0_on_sigterm(tmp_path):
    """...with streams open: they end cleanly, the process exits 0."""
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "power_daemon", "serve", "--backend", "sim", "--sim-devices", "3",
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--hostname", "node-x"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        port = int(port_file.read_text())
        assert line.startswith(f"power-daemon listening on 127.0.0.1:{port} (backend=sim")
        assert "devices=3, boot_id=" in line
        with daemon_stub(f"127.0.0.1:{port}") as stub:
            streams = [stub.Subscribe(pb.SubscribeRequest(), timeout=30) for _ in range(3)]
            for stream in streams:
                next(stream)
            proc.send_signal(signal.SIGTERM)
            for stream in streams:
                for _ in stream:  # drains and ends without an error
                    pass
        assert proc.wait(timeout=15) == 0
        stderr = proc.stderr.read()
        assert "simulating 3 GPUs" in stderr and "Traceback" not in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
