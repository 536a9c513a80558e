"""Thousands of runs started on one daemon: the collector keeps up, its state stays bounded.

(bench/bench_hostile.py prints the figure for 10,000 runs within a minute.)
"""

from __future__ import annotations

import secrets
import threading
import time
import urllib.request

from collector.config import CollectorConfig
from collector.join.joiner import JoinConfig, Joiner
from collector.service import create_collector
from parawatt_proto import parawatt_pb2 as pb
from tests.collector.synth import T0, SynthDevice, marker, node
from tests.daemon.daemon_helpers import daemon_stub

RUNS = 2000


def test_thousands_of_runs_do_not_stall_ingest_and_series_stay_bounded(sim_daemon, tmp_path):
    config = CollectorConfig(daemons=(sim_daemon.address,), db_url=f"sqlite:///{tmp_path}/r.db",
                             metrics_listen="127.0.0.1:0", max_run_series=50)  # fmt: skip
    host = sim_daemon.daemon.core.hostname
    with create_collector(config) as c, daemon_stub(sim_daemon.address) as stub:
        lags: list[float] = []
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.2):
                if mark := c.joiner.watermark_ns(host):
                    lags.append((time.time_ns() - mark) / 1e9)

        sampler = threading.Thread(target=sample)
        sampler.start()
        for b in range(0, RUNS, 100):
            now = time.time_ns()
            batch = [pb.Marker(run_id=f"flood-{i}", kind=pb.RUN_START, time_ns=now,
                               local_rank=i % 2, run_token=secrets.token_bytes(32))
                     for i in range(b, b + 100)]  # fmt: skip
            assert stub.SendMarkers(pb.MarkerBatch(markers=batch), timeout=30).accepted == 100
        # Ingest catches up: the join's newest reading is close to now again (waited for, with
        # a wide margin for a loaded machine).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not lags or lags[-1] > 3.0):
            time.sleep(0.2)
        done.set()
        sampler.join()
        assert lags and lags[-1] <= 3.0, f"ingest lag {lags[-1] if lags else None} s"
        assert max(lags) < 30.0, f"ingest stalled: lag reached {max(lags):.1f} s"
        assert c.flush(60)
        deadline = time.monotonic() + 60  # series are refreshed once a second
        while time.monotonic() < deadline and c.live.runs_overflow_total < RUNS - 50:
            time.sleep(0.1)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{c.metrics_port}/metrics").read()
    series = [x for x in metrics.decode().splitlines() if x.startswith("parawatt_run_active{")]
    assert len(series) == 50
    assert f"parawatt_run_series_overflow_total {RUNS - 50}.0" in metrics.decode()


def test_open_intervals_are_bounded_with_a_counted_overflow(caplog):
    j = Joiner(JoinConfig(max_open=100, max_runs=150))
    j.add_node(node("n1", [SynthDevice("gpu-0")]))
    j.add_markers("n1", [marker("run_start", T0 + i, run_id=f"r{i}") for i in range(300)])
    out = j.poll()
    assert len(j.pending_keys()) == 100 and out.open_overflow == 200
    assert len(j.progress()) == 150  # the oldest runs' progress is forgotten
    assert sum("the join's limit" in r.getMessage() for r in caplog.records) == 1
