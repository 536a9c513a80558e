"""CPU package and DRAM energy from Linux powercap (RAPL), Intel and AMD.

Zones are directories under /sys/class/powercap (intel-rapl:0, intel-rapl:0:1, ...) with
`name` (package-N, dram, core, uncore, psys), `energy_uj` and `max_energy_range_uj`. We read the
package and dram zones; core/uncore are parts of the package and would double count, and the
intel-rapl-mmio zones duplicate the package counters. The counter wraps at max_energy_range_uj;
energy_j is unfolded (monotonic), power_w is the mean power since the previous reading.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from parawatt_proto.records import MarkerRec
from power_daemon.errors import BackendUnavailable
from power_daemon.model import DeviceKind, DeviceSpec, Sample

log = logging.getLogger(__name__)


@dataclass
class _Zone:
    path: Path
    max_range_uj: int
    last_raw_uj: int
    total_uj: int  # unfolded counter
    last_ns: int = 0


def unfold(last_raw_uj: int, raw_uj: int, max_range_uj: int) -> int:
    """Energy between two raw counter values, across at most one wrap-around."""
    delta = raw_uj - last_raw_uj
    return delta + max_range_uj if delta < 0 else delta


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def find_zones(root: Path) -> list[tuple[Path, str, DeviceKind]]:
    """(zone dir, zone name, kind) of every package and dram zone, in a stable order."""
    found = []
    for zone in sorted(root.glob("*rapl*")):
        if "mmio" in zone.name or not (zone / "name").is_file():
            continue
        name = (zone / "name").read_text().strip()
        if name.startswith("package"):
            found.append((zone, name, DeviceKind.CPU_PACKAGE))
        elif name == "dram":
            found.append((zone, name, DeviceKind.DRAM))
    return found


class RaplBackend:
    name = "rapl"
    driver_version = ""

    def __init__(self, root: str | os.PathLike[str], hostname: str, now_ns: int) -> None:
        root = Path(root)
        if not root.is_dir():
            raise BackendUnavailable(f"rapl: no powercap interface at {root}")
        self._zones: list[_Zone] = []
        self._specs: list[DeviceSpec] = []
        problems = []
        for path, zone_name, kind in find_zones(root):
            try:
                raw, max_range = (
                    _read_int(path / "energy_uj"),
                    _read_int(path / "max_energy_range_uj"),
                )
            except (OSError, ValueError) as e:
                problems.append(f"{path.name}: {e.__class__.__name__}: {e}")
                continue
            self._zones.append(_Zone(path, max_range, raw, raw, now_ns))
            self._specs.append(self._spec(hostname, path, zone_name, kind, len(self._specs)))
        if not self._zones:
            why = "; ".join(problems) if problems else "no package/dram zones"
            raise BackendUnavailable(f"rapl: nothing readable under {root} ({why})")

    @staticmethod
    def _spec(hostname: str, path: Path, zone_name: str, kind: DeviceKind, i: int) -> DeviceSpec:
        return DeviceSpec(
            uuid=f"rapl:{hostname}:{path.name}",
            name=f"RAPL {zone_name} ({path.name})",
            kind=kind,
            vendor_index=i,
            has_energy_counter=True,
            energy_counter_update_s=0.001,
            energy_counter_resolution_j=1e-6,
        )

    def devices(self) -> list[DeviceSpec]:
        return list(self._specs)

    def read(self, now_ns: int) -> list[Sample]:
        return [self._read_zone(i, z, now_ns) for i, z in enumerate(self._zones)]

    def _read_zone(self, i: int, zone: _Zone, now_ns: int) -> Sample:
        try:
            raw = _read_int(zone.path / "energy_uj")
        except (OSError, ValueError):
            return Sample(device=i, time_ns=now_ns, lost=True)
        delta = unfold(zone.last_raw_uj, raw, zone.max_range_uj)
        dt_ns = now_ns - zone.last_ns
        zone.total_uj += delta
        zone.last_raw_uj, zone.last_ns = raw, now_ns
        power = delta / 1e6 / (dt_ns / 1e9) if dt_ns > 0 else None
        return Sample(device=i, time_ns=now_ns, power_w=power, energy_j=zone.total_uj / 1e6)

    def on_marker(self, marker: MarkerRec, now_ns: int) -> None:
        pass

    def canonical_uuid(self, uuid: str) -> str:
        return uuid

    def close(self) -> None:
        pass
