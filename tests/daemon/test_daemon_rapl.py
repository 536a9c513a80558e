"""RAPL through a fake powercap sysfs tree: zones, wrap-around, unreadable counters, auto."""

import logging
from pathlib import Path

import pytest

from power_daemon.backends.factory import build_backend
from power_daemon.backends.rapl import RaplBackend, unfold
from power_daemon.config import DaemonConfig
from power_daemon.errors import BackendUnavailable
from power_daemon.model import DeviceKind

S = 1_000_000_000
MAX_UJ = 262_143_328_850


def zone(root: Path, name: str, label: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(f"{label}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return path


@pytest.fixture
def powercap(tmp_path: Path) -> Path:
    # Real trees nest subzones under their package and also link them at the top level.
    zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    zone(tmp_path, "intel-rapl:0:0", "core", 500_000)
    zone(tmp_path, "intel-rapl:0:1", "dram", 2_000_000)
    zone(tmp_path, "intel-rapl:1", "package-1", MAX_UJ - 1_000_000)
    zone(tmp_path, "intel-rapl-mmio:0", "package-0", 7)  # duplicates package-0
    (tmp_path / "dtpm").mkdir()  # some other powercap control type
    return tmp_path


def set_uj(root: Path, name: str, energy_uj: int) -> None:
    (root / name / "energy_uj").write_text(f"{energy_uj}\n")


def test_finds_package_and_dram_zones_only(powercap):
    rapl = RaplBackend(powercap, "node", now_ns=0)
    specs = rapl.devices()
    assert [d.uuid for d in specs] == [
        "rapl:node:intel-rapl:0",
        "rapl:node:intel-rapl:0:1",
        "rapl:node:intel-rapl:1",
    ]
    assert [d.kind for d in specs] == [
        DeviceKind.CPU_PACKAGE,
        DeviceKind.DRAM,
        DeviceKind.CPU_PACKAGE,
    ]
    assert all(d.has_energy_counter for d in specs)


def test_energy_unfolds_across_wrap_around_and_power_is_the_interval_mean(powercap):
    rapl = RaplBackend(powercap, "node", now_ns=0)
    set_uj(powercap, "intel-rapl:0", 1_000_000 + 50_000_000)  # +50 J in 1 s
    set_uj(powercap, "intel-rapl:1", 2_000_000)  # wrapped: +3 J
    pkg0, dram, pkg1 = rapl.read(S)
    assert pkg0.energy_j == pytest.approx(51.0) and pkg0.power_w == pytest.approx(50.0)
    assert dram.energy_j == pytest.approx(2.0) and dram.power_w == 0.0
    assert pkg1.energy_j == pytest.approx((MAX_UJ + 2_000_000) / 1e6)
    assert pkg1.power_w == pytest.approx(3.0)
    set_uj(powercap, "intel-rapl:1", 4_000_000)
    assert rapl.read(2 * S)[2].energy_j == pytest.approx((MAX_UJ + 4_000_000) / 1e6)


def test_unfold():
    assert unfold(10, 25, 100) == 15
    assert unfold(90, 5, 100) == 15


def test_an_unreadable_counter_is_skipped_and_none_readable_is_unavailable(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", 10)
    bad = zone(tmp_path, "intel-rapl:1", "package-1", 10)
    (bad / "energy_uj").unlink()
    (bad / "energy_uj").mkdir()  # reading it fails like a root-only file does for a user
    assert len(RaplBackend(tmp_path, "n", 0).devices()) == 1
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("garbage")
    with pytest.raises(BackendUnavailable, match="nothing readable"):
        RaplBackend(tmp_path, "n", 0)
    with pytest.raises(BackendUnavailable, match="no powercap"):
        RaplBackend(tmp_path / "absent", "n", 0)


def test_a_counter_that_becomes_unreadable_reports_the_zone_lost(powercap):
    rapl = RaplBackend(powercap, "node", now_ns=0)
    (powercap / "intel-rapl:0:1" / "energy_uj").unlink()
    assert [s.lost for s in rapl.read(S)] == [False, True, False]


def test_auto_runs_rapl_beside_the_gpus(powercap):
    backend = build_backend(DaemonConfig(backend="sim", sim_devices=2, rapl_root=str(powercap)))
    assert backend.name == "sim+rapl"
    devices = backend.devices()
    assert [d.kind for d in devices][:2] == [DeviceKind.GPU, DeviceKind.GPU]
    assert [s.device for s in backend.read(S)] == [0, 1, 2, 3, 4]


def test_absent_powercap_is_one_log_line_and_gpus_are_still_measured(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="power_daemon")
    config = DaemonConfig(backend="sim", rapl_root=str(tmp_path / "none"))
    backend = build_backend(config)
    assert backend.name == "sim" and len(backend.devices()) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "no powercap interface" in lines[0] and "simulating 2" in lines[0]


def test_rapl_off_does_not_look(powercap):
    config = DaemonConfig(backend="sim", rapl="off", rapl_root=str(powercap))
    assert build_backend(config).name == "sim"
