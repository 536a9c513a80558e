"""Daemon inventory: Prometheus file_sd target groups, watched live, and sharding of targets.

An inventory is a file, or a directory of `*.json` / `*.yaml` / `*.yml` files, each holding a
list of target groups in the shape Prometheus' `file_sd_configs` reads:

    [{"targets": ["node1:50051", "node2:50051"], "labels": {"cluster": "a"}}]

so one generated inventory serves Prometheus and parawatt. The watcher polls modification times
(stdlib only, ~1 s); a file that cannot be read or parsed is reported in one log line and the
last good inventory stays in force, so a half-written file never unsubscribes the cluster.

Sharding: `--shard K/N` keeps the targets whose rendezvous (highest random weight) hash picks
shard K of N. Every collector computes it alone from the target string, a target's shard does
not depend on the other targets, and adding or removing a target moves no other one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from collector.errors import ConfigError
from parawatt_proto.transport import AddressError, parse_target

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml", ".yml")
MAX_FILE_BYTES = 16 * 1024 * 1024


class InventoryError(ValueError):
    """An inventory file that cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    def owns(self, address: str) -> bool:
        return shard_of(address, self.count) == self.index - 1


def parse_shard(text: str) -> Shard:
    """'K/N' (1 <= K <= N) -> Shard."""
    m = re.fullmatch(r"\s*(\d{1,4})\s*/\s*(\d{1,4})\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise ConfigError(f"expected --shard K/N with 1 <= K <= N, got {text!r}")
    return Shard(int(m.group(1)), int(m.group(2)))


def _weight(k: int, address: str) -> bytes:
    return hashlib.blake2b(f"{k}\0{address}".encode(), digest_size=8).digest()


def shard_of(address: str, count: int) -> int:
    """0-based shard of `address` among `count` (rendezvous hashing)."""
    return max(range(count), key=lambda k: _weight(k, address))


def balanced_shards(addresses: list[str], count: int) -> dict[str, int]:
    """Rendezvous hashing with bounded loads (for a collector's own workers, which see the
    whole list): each address goes to its highest-ranked shard holding fewer than
    ceil(n / count), so a few daemons still spread evenly (plain rendezvous put 3 or 4 of 4
    daemons on one of 2 workers) and a change of the list moves few of them."""
    unique = sorted(set(addresses))
    cap = -(-len(unique) // count) if unique else 0
    load, out = [0] * count, {}
    for a in unique:
        for k in sorted(range(count), key=lambda k: _weight(k, a), reverse=True):
            if load[k] < cap:
                load[k] += 1
                out[a] = k
                break
    return out


def parse_groups(text: str, source: str) -> list[str]:
    """The target addresses of one file's target groups, validated, in file order."""
    try:
        data = json.loads(text) if source.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InventoryError(f"{source}: not valid {_format(source)}: {first}") from None
    if data is None:
        return []  # an empty file: no targets
    if not isinstance(data, list):
        raise InventoryError(f"{source}: expected a list of target groups, got {_kind(data)}")
    out: list[str] = []
    for i, group in enumerate(data):
        if not isinstance(group, dict) or not isinstance(group.get("targets", []), list):
            raise InventoryError(f'{source}: group {i}: expected {{"targets": [...]}}')
        labels = group.get("labels", {})
        if not isinstance(labels, dict):
            raise InventoryError(f"{source}: group {i}: labels must be a mapping")
        for target in group.get("targets", []):
            try:
                out.append(parse_target(target).address)
            except AddressError as exc:
                raise InventoryError(f"{source}: group {i}: {exc}") from None
    return out


def read_inventory(path: Path) -> list[str]:
    """Every target of a file or of a directory's inventory files (sorted by name), deduplicated."""
    files = _files(path)
    seen: dict[str, None] = {}
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as exc:
            raise InventoryError(f"{f}: cannot read: {exc.strerror}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise InventoryError(f"{f}: larger than {MAX_FILE_BYTES // 2**20} MiB")
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            raise InventoryError(f"{f}: not UTF-8 text") from None
        seen.update(dict.fromkeys(parse_groups(text, str(f))))
    return list(seen)


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file())
    if not path.exists():
        raise InventoryError(f"{path}: no such file or directory")
    return [path]


def _stamp(path: Path) -> tuple:
    """What changes when the inventory changes: names, sizes and mtimes of its files."""
    try:
        return tuple((str(f), (s := f.stat()).st_mtime_ns, s.st_size) for f in _files(path))
    except (OSError, InventoryError):
        return ("missing",)


def _format(source: str) -> str:
    return "JSON" if source.endswith(".json") else "YAML"


def _kind(data: object) -> str:
    return type(data).__name__


class InventoryWatcher:
    """Polls an inventory and calls `on_change(addresses)` whenever its valid content changes."""

    def __init__(
        self, path: Path, on_change: Callable[[list[str]], None], poll_s: float = 1.0
    ) -> None:
        self.path, self._on_change, self._poll_s = Path(path), on_change, poll_s
        self._stop = threading.Event()
        self._stamp: tuple = ()
        self._error = ""
        self.targets: list[str] = []
        self.errors_total = 0
        self._thread = threading.Thread(target=self._run, name="inventory", daemon=True)

    def load(self) -> list[str]:
        """The first read: raises InventoryError (a user mistake at start-up)."""
        self._stamp = _stamp(self.path)
        self.targets = read_inventory(self.path)
        return self.targets

    def start(self) -> InventoryWatcher:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)

    def poll(self) -> bool:
        """Re-read if anything changed; True when the targets changed."""
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            targets = read_inventory(self.path)
        except InventoryError as exc:
            self.errors_total += 1
            if str(exc) != self._error:
                log.error("inventory: %s (keeping the last good one: %d targets)",
                          exc, len(self.targets))  # fmt: skip
            self._error = str(exc)
            return False
        self._error = ""
        if targets == self.targets:
            return False
        added, gone = set(targets) - set(self.targets), set(self.targets) - set(targets)
        log.info("inventory: %d targets (+%d, -%d)", len(targets), len(added), len(gone))
        self.targets = targets
        self._on_change(targets)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.poll()
            except Exception:  # a bug here must not end discovery for good
                log.exception("inventory: polling %s failed", self.path)


def open_inventory(
    path: Path | None, on_change: Callable[[list[str]], None], poll_s: float
) -> tuple[InventoryWatcher | None, list[str]]:
    """The watcher of `--daemons-file` (None without one) and its first targets; a bad file at
    start is a ConfigError (a user mistake), later ones keep the last good inventory."""
    if path is None:
        return None, []
    watcher = InventoryWatcher(Path(path), on_change, poll_s)
    try:
        return watcher, watcher.load()
    except InventoryError as exc:
        raise ConfigError(str(exc)) from None


def merge_targets(*lists: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(a for lst in lists for a in lst))
