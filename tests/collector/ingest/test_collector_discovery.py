"""Daemon discovery: a Prometheus file_sd inventory, watched live; and --shard K/N."""

from __future__ import annotations

import json
import logging
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from collector.cli import main
from collector.config import CollectorConfig
from collector.errors import ConfigError
from collector.ingest.discovery import (
    InventoryError,
    Shard,
    balanced_shards,
    parse_groups,
    parse_shard,
    read_inventory,
    shard_of,
)
from collector.service import create_collector
from collector.store.models import Boot, Node, Reading


def wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def write_sd(path, *groups) -> None:
    """Whole or not at all, as a generator of inventories should (rename over the old one)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps([{"targets": list(t), "labels": {"job": "parawatt"}} for t in groups])
    )
    tmp.replace(path)


# -- parsing ---------------------------------------------------------------------------------
def test_json_and_yaml_target_groups(tmp_path):
    (tmp_path / "a.json").write_text(
        '[{"targets": ["n1:50051", "[::1]:50051"], "labels": {"rack": "1"}}, {"targets": []}]'
    )
    (tmp_path / "b.yaml").write_text(
        "- targets: ['n2:50051', 'n1:50051']\n  labels: {rack: '2'}\n- targets: [unix:/run/pw.sock]\n"
    )
    (tmp_path / "notes.txt").write_text("not an inventory")
    assert read_inventory(tmp_path) == ["n1:50051", "[::1]:50051", "n2:50051", "unix:/run/pw.sock"]
    assert read_inventory(tmp_path / "b.yaml") == ["n2:50051", "n1:50051", "unix:/run/pw.sock"]
    assert parse_groups("", "empty.yml") == []


@pytest.mark.parametrize(
    ("text", "name", "says"),
    [
        ('[{"targets": ["n1:50051"]', "x.json", "x.json: not valid JSON"),
        ("- targets: [n1:50051\n", "x.yaml", "x.yaml: not valid YAML"),
        ('{"targets": ["n1:1"]}', "x.json", "expected a list of target groups, got dict"),
        ('[{"targets": "n1:1"}]', "x.json", 'group 0: expected {"targets": [...]}'),
        ('[{"targets": ["n1:1"], "labels": ["a"]}]', "x.json", "labels must be a mapping"),
        ('[{"targets": ["n1"]}]', "x.json", "group 0:"),
        ('[{"targets": [""]}]', "x.json", "empty daemon address"),
    ],
)
def test_a_malformed_inventory_says_where(text, name, says):
    with pytest.raises(InventoryError, match=None) as err:
        parse_groups(text, name)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_shards_partition_the_targets_and_stay_put():
    targets = [f"node{i}:50051" for i in range(300)]
    for n in (1, 2, 3, 7):
        owned = [[t for t in targets if Shard(k, n).owns(t)] for k in range(1, n + 1)]
        assert sorted(t for part in owned for t in part) == sorted(targets)  # each exactly once
        assert min(map(len, owned)) > 300 / n * 0.6  # and evenly enough
    # A target's shard depends on the target and N alone: growing N moves only ~1/N of them
    moved = sum(shard_of(t, 4) != shard_of(t, 5) for t in targets)
    assert moved < 300 * 0.35
    assert parse_shard(" 2/3 ") == Shard(2, 3)
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard K/N"):
            parse_shard(bad)


# -- live ------------------------------------------------------------------------------------
def _readings_of(engine, hostname: str) -> int:
    with engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(Reading)
            .join(Boot, Boot.id == Reading.boot_id)
            .join(Node, Node.id == Boot.node_id)
            .where(Node.hostname == hostname)
        )


def test_targets_are_added_and_dropped_live(start_sim_daemon, tmp_path, caplog):
    a = start_sim_daemon(hostname="node-a")
    b = start_sim_daemon(hostname="node-b")
    inventory = tmp_path / "sd"
    inventory.mkdir()
    write_sd(inventory / "nodes.json", [a.address])
    cfg = CollectorConfig(daemons_file=str(inventory), db_url=f"sqlite:///{tmp_path / 'p.db'}",
                          metrics_listen=None, inventory_poll_s=0.1, flush_interval_s=0.1)  # fmt: skip
    with create_collector(cfg) as c, caplog.at_level(logging.INFO, logger="collector"):
        addresses = lambda: sorted(s.address for s in c.subscribers)  # noqa: E731
        assert addresses() == [a.address]
        assert wait_for(lambda: _readings_of(c.engine, "node-a") > 0)

        (inventory / "more.yaml").write_text(f"- targets: ['{b.address}']\n")
        assert wait_for(lambda: addresses() == sorted([a.address, b.address]))
        assert wait_for(lambda: _readings_of(c.engine, "node-b") > 0)

        write_sd(inventory / "nodes.json")  # node-a leaves the inventory
        assert wait_for(lambda: addresses() == [b.address])
        assert c.flush()
        n_a = _readings_of(c.engine, "node-a")
        time.sleep(0.5)
        assert c.flush() and _readings_of(c.engine, "node-a") == n_a  # no longer read

        (inventory / "more.yaml").write_text("- targets: [broken\n")  # malformed: keep the last
        assert wait_for(lambda: c.inventory.errors_total >= 1)
        assert addresses() == [b.address]
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "more.yaml: not valid YAML" in errors[0].getMessage()
        assert "keeping the last good one: 1 targets" in errors[0].getMessage()

        write_sd(inventory / "nodes.json", [a.address])  # back, resuming where it was
        (inventory / "more.yaml").write_text(f"- targets: ['{b.address}']\n")
        assert wait_for(lambda: addresses() == sorted([a.address, b.address]))
        assert wait_for(lambda: _readings_of(c.engine, "node-a") > n_a)


def test_shard_reads_only_its_daemons(start_sim_daemon, tmp_path):
    daemons = [start_sim_daemon(hostname=f"node-{i}") for i in range(4)]
    inventory = tmp_path / "nodes.json"
    write_sd(inventory, [d.address for d in daemons])
    db = f"sqlite:///{tmp_path / 'p.db'}"
    seen = []
    for k in (1, 2):
        cfg = CollectorConfig(daemons_file=str(inventory), db_url=db, metrics_listen=None,
                              shard=(k, 2))  # fmt: skip
        with create_collector(cfg) as c:
            seen.append({s.address for s in c.subscribers})
    assert seen[0].isdisjoint(seen[1])
    assert seen[0] | seen[1] == {d.address for d in daemons}
    assert seen[0] == {d.address for d in daemons if shard_of(d.address, 2) == 0}


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["serve", "--daemons-file", str(tmp_path / "nope.json"),
                               "--db", f"sqlite:///{tmp_path / 'p.db'}"])  # fmt: skip
    assert res.exit_code == 1 and res.output.strip().endswith(
        "nope.json: no such file or directory"
    )
    (tmp_path / "bad.json").write_text('[{"targets": ["n1:port"]}]')
    res = runner.invoke(main, ["serve", "--daemons-file", str(tmp_path / "bad.json"),
                               "--db", f"sqlite:///{tmp_path / 'p.db'}"])  # fmt: skip
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "bad.json: group 0:" in res.output
    res = runner.invoke(main, ["serve", "--daemon", "n1:1", "--shard", "3/2"])
    assert res.exit_code == 1 and "--shard K/N" in res.output
    res = runner.invoke(main, ["serve", "--db", f"sqlite:///{tmp_path / 'p.db'}"], env={})
    assert res.exit_code == 1 and "--daemons-file" in res.output


def test_workers_get_even_shares_and_a_change_moves_few():
    for n, count in [(4, 2), (6, 2), (10, 3), (7, 4), (1, 3), (0, 2), (300, 8)]:
        targets = [f"10.0.{i // 250}.{i % 250}:50051" for i in range(n)]
        got = balanced_shards(targets, count)
        assert sorted(got) == sorted(targets)
        loads = [list(got.values()).count(k) for k in range(count)]
        assert max(loads) <= -(-n // count), (n, count, loads)  # plain rendezvous: 4-0 happens
        assert got == balanced_shards(list(reversed(targets)), count)  # order does not matter
    targets = [f"gpu{i:03d}:50051" for i in range(64)]
    before, after = balanced_shards(targets, 4), balanced_shards([*targets, "gpu999:50051"], 4)
    assert sum(before[t] != after[t] for t in targets) <= 8  # one node more: few move
