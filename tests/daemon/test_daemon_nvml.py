"""The real nvidia-ml-py code path against a fake libnvidia-ml.so.1 (tests/fakenvml), run in
subprocesses so the fake never loads into the test process."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parawatt_proto import parawatt_pb2 as pb
from tests.daemon.daemon_helpers import daemon_stub
from tests.fakenvml.build import nvml_env

ROOT = Path(__file__).resolve().parents[2]


def dump(lib: Path, reads: int = 3, **fake: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fakenvml.dump_backend", str(reads)],
        env=nvml_env(lib, **fake),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_devices_and_readings_come_through_nvidia_ml_py(fake_nvml_lib):
    out = dump(fake_nvml_lib, count="2")
    assert out["driver"] == "999.99-fake"
    d0, d1 = out["devices"]
    assert d0["uuid"] == "GPU-fa4e0000-0000-0000-0000-000000000000"
    assert d0["name"] == "Fake NVIDIA A100-SXM4-40GB" and d0["pci_bus_id"] == "00000000:10:00.0"
    assert d0["power_limit_w"] == 400.0 and d0["memory_total_bytes"] == 40 * 2**30
    assert d0["has_energy_counter"] and d0["has_instant_power"]
    first = out["reads"][0][1]
    assert first["power_w"] == pytest.approx(110.5)  # instant power field (mW -> W)
    assert first["power_avg_w"] == pytest.approx(110.1)  # nvmlDeviceGetPowerUsage
    assert first["energy_j"] == pytest.approx(2002.0)
    assert (first["gpu_util_pct"], first["mem_util_pct"]) == (51.0, 20.0)
    assert (first["temperature_c"], first["sm_clock_mhz"], first["mem_clock_mhz"]) == (
        41.0,
        1410.0,
        1215.0,
    )
    energies = [r[0]["energy_j"] for r in out["reads"]]
    assert energies == sorted(energies) and energies[0] < energies[-1]


def test_missing_counter_and_unsupported_functions_are_absent_fields(fake_nvml_lib):
    out = dump(
        fake_nvml_lib, count="2", no_energy="1", no_instant="1",
        unsupported="nvmlDeviceGetClockInfo,nvmlDeviceGetUtilizationRates",
    )  # fmt: skip
    d0, d1 = out["devices"]
    assert d0["has_energy_counter"] and not d1["has_energy_counter"]
    assert d1["energy_counter_update_s"] is None and not d1["has_instant_power"]
    for read in out["reads"]:
        s0, s1 = read
        assert s0["energy_j"] is not None and s1["energy_j"] is None
        assert s1["power_w"] == s1["power_avg_w"]  # no instant power: the average stands in
        for s in read:
            assert s["sm_clock_mhz"] is None and s["gpu_util_pct"] is None
            assert s["temperature_c"] is not None and not s["lost"]


def test_a_gpu_lost_mid_run_is_reported_lost_while_the_others_keep_going(fake_nvml_lib):
    out = dump(fake_nvml_lib, reads=6, count="3", lost="1:3")
    status = [[s["lost"] for s in read] for read in out["reads"]]
    assert status[0] == [False, False, False]
    assert status[-1] == [False, True, False]
    lost_from = next(i for i, read in enumerate(status) if read[1])
    assert all(read[1] for read in status[lost_from:])
    for read in out["reads"][lost_from:]:
        assert read[1]["power_w"] is None and read[0]["power_w"] is not None


def test_no_gpu_or_no_driver_is_backend_unavailable(fake_nvml_lib):
    assert dump(fake_nvml_lib, count="0")["error"] == "NVML found no GPU"
    assert "Driver Not Loaded" in dump(fake_nvml_lib, init_error="9")["error"]


def test_auto_picks_nvml_when_a_gpu_is_there(fake_nvml_lib):
    proc = subprocess.run(
        [sys.executable, "-m", "power_daemon", "probe", "--count", "1", "--no-rapl"],
        env=nvml_env(fake_nvml_lib, count="1"),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backend nvml  driver 999.99-fake")
    assert "backend nvml with 1 devices" in proc.stderr


def test_auto_falls_back_to_sim_when_nvml_does_not_start(fake_nvml_lib):
    proc = subprocess.run(
        [sys.executable, "-m", "power_daemon", "probe", "--count", "1", "--no-rapl"],
        env=nvml_env(fake_nvml_lib, init_error="9"),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("backend sim")
    assert "NVML is not available (Driver Not Loaded), so simulating 2 GPUs" in proc.stderr


def test_serve_with_nvml_streams_a_lost_gpu_and_stops_on_sigterm(fake_nvml_lib, tmp_path):
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "power_daemon", "serve", "--backend", "nvml", "--no-rapl",
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--interval-ms", "10"],
        env=nvml_env(fake_nvml_lib, count="2", lost="0:5"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("power-daemon listening on 127.0.0.1:"), proc.stderr.read()
        assert "backend=nvml, devices=2" in line
        port = int(port_file.read_text())
        with daemon_stub(f"127.0.0.1:{port}") as stub:
            for _ in range(100):
                readings = stub.GetLatest(pb.GetLatestRequest(), timeout=5).readings
                if readings and readings[0].status == pb.DEVICE_STATUS_LOST:
                    break
            assert readings[0].status == pb.DEVICE_STATUS_LOST
            assert readings[1].status == pb.DEVICE_STATUS_OK and readings[1].HasField("power_w")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
