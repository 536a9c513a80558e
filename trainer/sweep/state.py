"""The sweep's state file: which (point, repeat) runs completed, failed or were interrupted.

Re-running a sweep skips completed runs and retries everything else. The file is rewritten
atomically (temporary file + rename) after every change, so a killed runner never leaves it torn.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from trainer.sweep.grid import SweepError

STATE_VERSION = 1


@dataclass(frozen=True)
class RunRecord:
    point_id: str
    repeat: int
    status: str  # running | completed | failed | interrupted
    attempts: int = 0
    run_id: str = ""
    returncode: int | None = None
    started_ns: int | None = None
    ended_ns: int | None = None
    log: str = ""
    start_temperature_c: dict[str, float] = field(default_factory=dict)
    cooldown_waited_s: float | None = None

    @property
    def key(self) -> str:
        return run_key(self.point_id, self.repeat)


def run_key(point_id: str, repeat: int) -> str:
    return f"{point_id}/r{repeat}"


class SweepState:
    def __init__(self, path: Path, sweep: str, records: dict[str, RunRecord] | None = None):
        self.path = path
        self.sweep = sweep
        self.records: dict[str, RunRecord] = dict(records or {})

    @classmethod
    def load(cls, path: str | Path, sweep: str) -> SweepState:
        path = Path(path)
        if not path.exists():
            return cls(path, sweep)
        try:
            data = json.loads(path.read_text())
            if data.get("sweep") != sweep:
                raise SweepError(
                    f"state file {path} belongs to sweep {data.get('sweep')!r}, not {sweep!r}"
                )
            records = {k: RunRecord(**v) for k, v in data.get("runs", {}).items()}
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise SweepError(
                f"state file {path} is corrupt ({exc}); move it away to start over"
            ) from None
        return cls(path, sweep, records)

    def get(self, point_id: str, repeat: int) -> RunRecord | None:
        return self.records.get(run_key(point_id, repeat))

    def is_completed(self, point_id: str, repeat: int) -> bool:
        rec = self.get(point_id, repeat)
        return rec is not None and rec.status == "completed"

    def put(self, record: RunRecord) -> None:
        self.records[record.key] = record
        self.save()

    def update(self, record: RunRecord, **changes: object) -> RunRecord:
        new = replace(record, **changes)
        self.put(new)
        return new

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "version": STATE_VERSION,
            "sweep": self.sweep,
            "runs": {k: asdict(v) for k, v in sorted(self.records.items())},
        }
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)
