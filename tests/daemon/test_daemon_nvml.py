"""The real nvidia-ml-py code path against a fake libnvidia-ml.so.1 (tests/fakenvml), run in
subprocesses so the fake never loads into the test process."""

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from parawatt_proto import parawatt_pb2 as pb
from tests.daemon.daemon_helpers import catch_up, daemon_stub, marker
from tests.fakenvml.build import nvml_env

ROOT = Path(__file__).resolve().parents[2]


def dump(
    lib: Path, reads: int = 3, uuids: tuple[str, ...] = (), interval_ms: float = 0, **fake: str
) -> dict:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fakenvml.dump_backend",
            str(reads),
            "--interval-ms",
            str(interval_ms),
            *uuids,
        ],  # fmt: skip
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
    # The fake's counter moves with its power reads: read first, the counter has not moved yet.
    assert first["energy_j"] == pytest.approx(2000.0)
    assert not first["power_from_avg"]
    assert (first["gpu_util_pct"], first["mem_util_pct"]) == (51.0, 20.0)
    assert (first["temperature_c"], first["sm_clock_mhz"], first["mem_clock_mhz"]) == (
        41.0,
        1410.0,
        1215.0,
    )
    energies = [r[0]["energy_j"] for r in out["reads"]]
    assert energies == sorted(energies) and energies[0] < energies[-1]
    # GPU scope, not the module's (the fake adds 250 W there), and NVML left up for others.
    assert all(r[1]["power_w"] < 200 for r in out["reads"])
    assert out["nvml_up_for_others"], "close() must shut NVML down exactly once"


@pytest.mark.parametrize("value_type", ["0", "3"])  # double, unsigned long long
def test_instant_power_is_read_in_whatever_value_type_the_driver_reports(fake_nvml_lib, value_type):
    out = dump(fake_nvml_lib, count="1", value_type=value_type)
    assert out["devices"][0]["has_instant_power"]
    assert out["reads"][0][0]["power_w"] == pytest.approx(100.5)


def test_an_unknown_value_type_is_no_instant_power_not_garbage(fake_nvml_lib):
    out = dump(fake_nvml_lib, count="1", value_type="99")
    assert not out["devices"][0]["has_instant_power"]
    assert all(r[0]["power_w"] == r[0]["power_avg_w"] for r in out["reads"])
    assert all(r[0]["power_from_avg"] for r in out["reads"])


def test_a_failed_instant_read_falls_back_to_the_average_and_says_so(fake_nvml_lib):
    out = dump(fake_nvml_lib, reads=6, count="2", flaky="1")
    gpu1 = [read[1] for read in out["reads"]]
    assert [s["power_from_avg"] for s in gpu1] == [False, False, True, False, False, True]
    for s in gpu1:
        assert s["power_w"] is not None and s["power_avg_w"] is not None
        assert (s["power_w"] == s["power_avg_w"]) == s["power_from_avg"]
    assert not any(read[0]["power_from_avg"] for read in out["reads"])
    assert out["devices"][1]["has_instant_power"]


def test_a_gpu_whose_name_fails_keeps_its_place_and_its_readings(fake_nvml_lib):
    out = dump(fake_nvml_lib, count="3", no_name="1")
    assert [d["vendor_index"] for d in out["devices"]] == [0, 1, 2]
    assert out["devices"][1]["name"] == "NVIDIA GPU"
    assert out["devices"][1]["uuid"].endswith("000000000001")
    for read in out["reads"]:
        assert [s["device"] for s in read] == [0, 1, 2]
        assert not read[1]["lost"] and read[1]["energy_j"] is not None


def test_mig_gpus_are_measured_whole_and_markers_for_instances_map_to_them(fake_nvml_lib):
    mig = "MIG-fa4e0000-0000-0000-0001-000000000001"
    uuids = (
        mig,
        "GPU-fa4e0000-0000-0000-0001-000000000000",  # its other instance, "GPU-" + CUDA's UUID
        "GPU-fa4e0000-0000-0000-0000-000000000000",  # a whole GPU
        "GPU-somewhere-else",
    )
    out = dump(fake_nvml_lib, count="2", mig="1", uuids=uuids)
    gpu1 = out["devices"][1]["uuid"]
    assert [d["uuid"].startswith("GPU-") for d in out["devices"]] == [True, True]
    assert out["canonical"] == {
        mig: gpu1,
        uuids[1]: gpu1,
        uuids[2]: uuids[2],
        uuids[3]: uuids[3],
    }
    for read in out["reads"]:
        assert read[1]["power_w"] is not None and read[1]["energy_j"] is not None
        assert read[1]["gpu_util_pct"] is None  # not available in MIG mode
        assert read[0]["gpu_util_pct"] is not None


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
    """...and files a marker naming a MIG instance under its GPU."""
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "power_daemon", "serve", "--backend", "nvml", "--no-rapl",
         "--listen", "127.0.0.1:0", "--port-file", str(port_file), "--interval-ms", "10"],
        env=nvml_env(fake_nvml_lib, count="2", lost="0:5", mig="1"),
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
            assert not readings[1].power_from_avg
            info = stub.GetLatest(pb.GetLatestRequest(), timeout=5).info
            assert [d.power_scope for d in info.devices] == ["gpu", "gpu"]
            assert info.devices[1].power_avg_window_s == 0.0  # the fake is an A100 (GA100)
            mig = "MIG-fa4e0000-0000-0000-0001-000000000000"
            ack = stub.SendMarkers(pb.MarkerBatch(markers=[marker(pb.RUN_START, device_uuid=mig)]))
            (stored,) = [m for b in catch_up(stub, from_seq=ack.next_seq - 1) for m in b.markers]
            assert stored.device_uuid == "GPU-fa4e0000-0000-0000-0000-000000000001"
            assert stored.device_slice == mig  # the slice the rank trains on is kept
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert not port_file.exists(), "the port file is removed on exit"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
