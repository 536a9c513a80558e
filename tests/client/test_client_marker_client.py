"""The marker client (parawatt's one client, also the trainer's) against the real power daemon (sim
backend): delivery, the run token on every marker, and that a daemon that is absent, hung,
restarted or rejecting never hurts the caller."""

from __future__ import annotations

import logging
import math
import time

from parawatt import client as T
from parawatt_proto import parawatt_pb2 as pb
from tests.support.daemon_process import DaemonProcess
from tests.support.markers import count_by_kind, read_markers, wait_for_markers
from tests.support.torchrun import free_port


def _client(address: str, **kw) -> T.MarkerClient:
    kw.setdefault("flush_interval_s", 0.02)
    return T.MarkerClient(address, run_id=kw.pop("run_id", "r1"), rank=kw.pop("rank", 0),
                          local_rank=kw.pop("local_rank", 0), **kw)  # fmt: skip


def _steps(markers) -> list[int]:
    return [m.step for m in markers if m.kind == T.STEP_END]


def test_markers_arrive_with_config_metrics_status_and_the_daemons_device(sim_daemon):
    client = _client(sim_daemon.address, local_rank=1, run_token=b"k" * 32)
    client.mark_run_start({"world_size": 2, "model": "resnet50", "recipe": {"optimizer": "sgd"},
                           "tags": {"sweep": "s1"}, "global_batch_size": 16})  # fmt: skip
    client.mark(T.EPOCH_START, 0, 0)
    for step in range(3):
        client.mark(T.STEP_START, 0, step)
        client.mark(T.STEP_END, 0, step, {"loss": 2.5 - step, "lr": 0.1})
    t = time.time_ns()
    client.mark_step(0, 3, t, t + 5, {"loss": 0.5})  # one item, two markers
    client.mark(T.EPOCH_END, 0, 0, {"train_loss": 1.5})
    client.mark_run_end("completed", {"markers_dropped": 0})
    stats = client.close()
    assert (stats.sent, stats.dropped) == (12, 0)

    markers = read_markers(sim_daemon.address, "r1")
    assert count_by_kind(markers) == {"RUN_START": 1, "RUN_END": 1, "EPOCH_START": 1,
                                      "EPOCH_END": 1, "STEP_START": 4, "STEP_END": 4}  # fmt: skip
    start = markers[0]
    assert start.kind == T.RUN_START and start.config.world_size == 2
    assert dict(start.config.recipe) == {"optimizer": "sgd"} and start.config.tags["sweep"] == "s1"
    assert all(m.device_uuid == sim_daemon.uuids[1] for m in markers)  # filled by the daemon
    assert [m.metrics["loss"] for m in markers if m.kind == T.STEP_END] == [2.5, 1.5, 0.5, 0.5]
    pair = [m for m in markers if m.step == 3]
    assert [(m.kind, m.time_ns) for m in pair] == [(T.STEP_START, t), (T.STEP_END, t + 5)]
    assert markers[-1].status == pb.RUN_STATUS_COMPLETED
    times = [m.time_ns for m in markers]
    assert times == sorted(times) and times[0] > 0


def test_absent_daemon_costs_nothing_and_close_is_bounded():
    client = _client(f"127.0.0.1:{free_port()}", deadline_s=0.2)
    for step in range(1000):
        client.mark(T.STEP_END, 0, step)
    began = time.monotonic()
    stats = client.close(timeout_s=0.5)
    assert time.monotonic() - began < 5  # bounded (generous: a loaded CI machine)
    assert (stats.enqueued, stats.sent, stats.dropped) == (1000, 0, 1000)


def test_overflow_drops_the_oldest_and_counts_them(start_sim_daemon):
    port = free_port()
    client = _client(f"127.0.0.1:{port}", max_queue=10, flush_interval_s=60)
    time.sleep(0.5)  # the sender is asleep in its first wait
    for step in range(25):
        client.mark(T.STEP_END, 0, step)
    assert client.stats().dropped == 15
    daemon = start_sim_daemon(listen=f"127.0.0.1:{port}")
    stats = client.close(timeout_s=10)
    assert (stats.sent, stats.dropped) == (10, 15)
    assert _steps(read_markers(daemon.address, "r1")) == list(range(15, 25))


def test_restarted_daemon_gets_the_markers_queued_while_it_was_down(start_sim_daemon):
    first = start_sim_daemon()
    client = _client(first.address, deadline_s=0.3)
    client.mark(T.STEP_END, 0, 0)
    wait_for_markers(first.address, lambda ms: len(ms) == 1, "r1")
    first.daemon.close()
    for step in range(1, 6):
        client.mark(T.STEP_END, 0, step)
    time.sleep(0.5)  # the sender fails and backs off meanwhile
    second = start_sim_daemon(listen=first.address)
    markers = wait_for_markers(second.address, lambda ms: len(ms) == 5, "r1")
    assert _steps(markers) == [1, 2, 3, 4, 5]
    stats = client.close()
    assert (stats.sent, stats.dropped) == (6, 0)


def test_hung_daemon_then_healthy_again(tmp_path):
    with DaemonProcess(tmp_path) as daemon:
        daemon.pause()
        client = _client(daemon.address, deadline_s=0.3)
        for step in range(5):
            client.mark(T.STEP_END, 0, step)
        time.sleep(1.0)  # at least one send runs into its deadline
        daemon.resume()
        markers = wait_for_markers(daemon.address, lambda ms: len(_steps(ms)) >= 5, "r1")
        client.close()
    # At-least-once: a batch whose deadline passed may have landed and been sent again.
    assert sorted(set(_steps(markers))) == [0, 1, 2, 3, 4]


def test_rejected_batch_is_logged_once_and_dropped_not_retried(sim_daemon, caplog):
    client = _client(sim_daemon.address)
    with caplog.at_level(logging.WARNING, logger="parawatt.client"):
        for bad in range(2):
            client.mark(T.STEP_END, -1, bad)  # negative epoch: the daemon refuses the batch
            deadline = time.monotonic() + 10
            while client.stats().rejected < bad + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
        client.mark(T.STEP_END, 0, 7)
        stats = client.close()
    assert (stats.sent, stats.rejected, stats.dropped) == (1, 2, 2)
    assert _steps(read_markers(sim_daemon.address, "r1")) == [7]
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "INVALID_ARGUMENT" in rejected[0].getMessage()


def test_metrics_are_kept_within_the_daemons_rules(sim_daemon):
    client = _client(sim_daemon.address)
    many = {f"m{i}": float(i) for i in range(80)}
    client.mark(T.STEP_END, 0, 0, {"loss": math.nan, "inf": math.inf, "lr": 0.1})
    client.mark(T.EPOCH_END, 0, 0, many)
    assert client.close().dropped == 0
    step, epoch = read_markers(sim_daemon.address, "r1")
    assert dict(step.metrics) == {"lr": 0.1}
    assert len(epoch.metrics) == T.MAX_METRICS


def test_a_metric_the_daemon_would_refuse_is_dropped_alone_not_its_batch(sim_daemon, caplog):
    client = _client(sim_daemon.address, flush_interval_s=60)  # one batch, sent at close
    time.sleep(0.3)  # the sender is asleep in its first wait
    bad = {"x" * 200: 1.0, "bad\x1bname": 1.0, "": 1.0, 7: 1.0, "text": "abc", "none": None,
           "huge": 10**400}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="parawatt.client"):
        for step in range(50):
            client.mark(T.STEP_END, 0, step, {"loss": 1.0, **bad} if step % 10 == 3 else None)
        stats = client.close()
    assert (stats.sent, stats.rejected, stats.dropped) == (50, 0, 0)
    markers = read_markers(sim_daemon.address, "r1")
    assert _steps(markers) == list(range(50))
    assert all(dict(m.metrics) == {"loss": 1.0} for m in markers if m.step % 10 == 3)
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "longer than 128 characters" in warnings[0]  # rate-limited


def test_a_run_start_over_the_daemons_size_limit_loses_metrics_not_the_batch(sim_daemon):
    client = _client(sim_daemon.address, flush_interval_s=60)
    time.sleep(0.3)
    big = {f"k{i:02}": "\U0001f600" * 220 for i in range(64)}  # just within the config limit
    client.mark_run_start({"tags": big, "model": "m"}, {f"{'m' * 120}{i}": 1.0 for i in range(64)})
    client.mark(T.STEP_END, 0, 0)
    stats = client.close()
    assert (stats.sent, stats.dropped) == (2, 0)
    start, step = read_markers(sim_daemon.address, "r1")
    assert start.config.tags == big and 0 < len(start.metrics) < 64 and step.step == 0
