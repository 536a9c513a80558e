"""Run, epoch and job-step queries over known rows (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from collector.errors import UnknownRunError
from collector.records import IntervalRec, RankUpdate
from collector.store import queries
from collector.store.db import create_db_engine, migrate
from collector.store.store import Store
from collector.store.writebatch import WriteBatch
from parawatt_proto.records import DeviceRec, NodeRec, RunConfigRec
from tests.collector.synth import T0, S, marker


def interval(kind, rank, uuid, epoch, step, start, end, e, active=None, flags=()):
    return IntervalRec("r1", rank, uuid, kind, epoch, step, start, end, e, active, "counter",
                       e, 0.5, e / ((end - start) / 1e9), e, 1.0, frozenset(flags))  # fmt: skip


@pytest.fixture
def engine(db_url):
    engine = create_db_engine(db_url)
    migrate(engine)
    devices = (DeviceRec(0, "gpu-0", "H100", "gpu"), DeviceRec(1, "gpu-1", "H100", "gpu"),
               DeviceRec(2, "cpu-0", "pkg", "cpu"), DeviceRec(3, "dram-0", "dram", "dram"))  # fmt: skip
    b = WriteBatch()
    b.nodes["b1"] = NodeRec("n1", "b1", devices=devices)
    cfg = RunConfigRec(world_size=2, nodes=1, model="resnet50", dataset="imagenet",
                       global_batch_size=64, local_batch_size=32, device_name="H100",
                       tags={"sweep": "s1", "point": "p0"})  # fmt: skip
    ms = []
    for rank in (0, 1):
        kw = dict(rank=rank, device_uuid=f"gpu-{rank}", local_rank=rank)
        ms += [
            marker("run_start", T0, config=cfg, **kw),
            marker("run_end", T0 + 10 * S, status="completed", metrics={"top1_error": 0.3}, **kw),
        ]
        for e in (0, 1):
            ms += [
                marker("epoch_start", T0 + (1 + 4 * e) * S, epoch=e, **kw),
                marker(
                    "epoch_end",
                    T0 + (5 + 4 * e) * S,
                    epoch=e,
                    metrics={"top1_error": 0.5 - 0.1 * e, "train_loss": 2.0 - e},
                    **kw,
                ),
            ]
            for k in range(3):
                step = 3 * e + k
                ms += [marker("step_start", T0 + (1 + 4 * e + k) * S, epoch=e, step=step, **kw),
                       marker("step_end", T0 + (2 + 4 * e + k) * S, epoch=e, step=step, **kw)]  # fmt: skip
    b.markers = [("b1", m) for m in ms]
    iv = []
    for rank in (0, 1):
        g = f"gpu-{rank}"
        iv.append(interval("run", rank, g, 0, 0, T0, T0 + 10 * S, 3000.0, 2400.0))
        for e in (0, 1):
            iv.append(interval("epoch", rank, g, e, 0, T0 + (1 + 4 * e) * S, T0 + (5 + 4 * e) * S,
                               1200.0, 960.0, flags=("gap",) if e else ()))  # fmt: skip
            for k in range(3):
                s = 3 * e + k
                iv.append(interval("step", rank, g, e, s, T0 + (1 + 4 * e + k) * S,
                                   T0 + (2 + 4 * e + k) * S, 300.0 + s + rank))  # fmt: skip
    iv.append(interval("run", 0, "cpu-0", 0, 0, T0, T0 + 10 * S, 500.0))
    iv.append(interval("run", 0, "dram-0", 0, 0, T0, T0 + 10 * S, 100.0))
    iv.append(interval("epoch", 0, "cpu-0", 0, 0, T0 + S, T0 + 5 * S, 200.0))
    b.intervals = iv
    b.rank_updates = [RankUpdate("r1", 0, 35.0, 60.0), RankUpdate("r1", 1, 36.0, 61.0)]
    Store(engine).write(b)
    yield engine
    engine.dispose()


def test_run_summary(engine):
    (r,) = queries.run_summaries(engine)
    assert (r.model, r.dataset, r.hardware, r.status) == (
        "resnet50",
        "imagenet",
        "H100",
        "completed",
    )
    assert (r.world_size, r.nodes, r.global_batch_size, r.local_batch_size) == (2, 1, 64, 32)
    assert (r.epochs, r.steps, r.samples) == (2, 6, 6 * 64)
    assert r.duration_s == 10.0 and r.gpu_hours == pytest.approx(20 / 3600)
    assert r.gpu_energy_j == 6000.0 and r.cpu_energy_j == 600.0 and r.energy_j == 6600.0
    assert r.active_energy_j == 4800.0 and r.energy_uncertainty_j == pytest.approx(2.0)
    assert r.final_metrics == {"top1_error": 0.3, "train_loss": 1.0}
    assert r.tags == {"sweep": "s1", "point": "p0"}
    assert r.flags == {"gap"}  # epoch 1's: every interval's flags surface on the run
    assert r.start_temperature_c == {"gpu-0": 35.0, "gpu-1": 36.0}
    assert queries.run_summaries(engine, sweep="s1") == [r]
    assert queries.run_summaries(engine, sweep="other") == []
    assert queries.run_summary(engine, "r1") == r
    with pytest.raises(UnknownRunError):
        queries.run_summary(engine, "nope")


def test_a_run_whose_run_and_epoch_intervals_are_not_written_yet_is_partial(db_url):
    """The collector writes a run's steps before its epochs and run interval (they settle
    later): until one is stored the run's energy is unknown and flagged partial, so
    parawatt.results() waits instead of calling the run complete with no energy."""
    engine = create_db_engine(db_url)
    migrate(engine)
    b = WriteBatch()
    b.nodes["b1"] = NodeRec("n1", "b1", devices=(DeviceRec(0, "gpu-0", "H100", "gpu"),))
    kw = dict(rank=0, device_uuid="gpu-0", local_rank=0)
    b.markers = [("b1", m) for m in (
        marker("run_start", T0, config=RunConfigRec(world_size=1), **kw),
        marker("step_start", T0 + S, epoch=0, step=0, **kw),
        marker("step_end", T0 + 2 * S, epoch=0, step=0, **kw),
        marker("run_end", T0 + 3 * S, status="completed", **kw),
    )]  # fmt: skip
    b.intervals = [interval("step", 0, "gpu-0", 0, 0, T0 + S, T0 + 2 * S, 300.0)]
    Store(engine).write(b)
    (r,) = queries.run_summaries(engine)
    assert r.status == "completed" and r.energy_j is None and "partial" in r.flags
    b = WriteBatch(intervals=[interval("run", 0, "gpu-0", 0, 0, T0, T0 + 3 * S, 900.0)])
    Store(engine).write(b)
    (r,) = queries.run_summaries(engine)
    assert r.energy_j == 900.0 and "partial" not in r.flags
    engine.dispose()


def test_epoch_summaries(engine):
    e0, e1 = queries.epoch_summaries(engine, "r1")
    assert (e0.epoch, e0.steps, e0.duration_s) == (0, 3, 4.0)
    assert e0.energy_j == 2600.0 and e0.active_energy_j == 1920.0 and e0.avg_power_w == 650.0
    assert e0.metrics == {"top1_error": 0.5, "train_loss": 2.0} and e0.flags == frozenset()
    assert e1.energy_j == 2400.0 and e1.flags == {"gap"}


def test_job_steps_sum_over_ranks(engine):
    steps = queries.job_steps(engine, "r1")
    assert [s.step for s in steps] == list(range(6)) and all(s.ranks == 2 for s in steps)
    assert [s.energy_j for s in steps] == [601.0 + 2 * k for k in range(6)]
    assert steps[4].epoch == 1 and steps[4].duration_s == 1.0 and steps[4].uncertainty_j == 1.0
    assert queries.step_energies(engine, "r1") == [601.0 + 2 * k for k in range(6)]


def test_hardware_is_the_measured_devices_name(db_url):
    """A CPU trainer reports its architecture; the energy is the daemon's device's."""
    engine = create_db_engine(db_url)
    migrate(engine)
    b = WriteBatch()
    b.nodes["b1"] = NodeRec(
        "n1", "b1", devices=(DeviceRec(0, "gpu-0", "NVIDIA H100 (sim)", "gpu"),)
    )
    cfg = RunConfigRec(world_size=1, device_name="x86_64")
    b.markers = [("b1", marker("run_start", T0, run_id="cpu-run", config=cfg)),
                 ("b1", marker("run_start", T0, run_id="lost-dev", config=cfg,
                               device_uuid="gpu-9"))]  # fmt: skip
    Store(engine).write(b)
    runs = {r.run_id: r.hardware for r in queries.run_summaries(engine)}
    engine.dispose()
    assert runs == {"cpu-run": "NVIDIA H100 (sim)", "lost-dev": "x86_64"}


def _write(engine, intervals):
    Store(engine).write(WriteBatch(intervals=intervals))


def test_a_node_part_without_energy_leaves_the_run_energy_unknown(engine):
    """A CPU or DRAM run interval stored with no energy (the device's readings did not cover
    it) makes the node energy unknown, as a GPU's does: GPU-only energy under the name of
    node energy undercounted by every CPU and DRAM joule, in the report's energy per sample
    and its fits, with nothing but a flag to say so."""
    b = WriteBatch()  # rank 1's node, whose CPU package's readings did not cover the run
    b.nodes["b2"] = NodeRec("n2", "b2", devices=(DeviceRec(0, "cpu-1", "pkg", "cpu"),))
    b.intervals = [IntervalRec("r1", 1, "cpu-1", "run", 0, 0, T0, T0 + 10 * S, None, None,
                               "none", None, 0.0, None, None, 0.5, frozenset({"incomplete"}))]  # fmt: skip
    Store(engine).write(b)
    (r,) = queries.run_summaries(engine)
    assert r.gpu_energy_j == 6000.0  # the GPUs' own energy is still known
    assert r.cpu_energy_j is None and r.energy_j is None
    assert "incomplete" in r.flags


def test_a_job_step_with_one_rank_s_energy_unknown_has_no_energy(engine):
    """A step's job-level energy is the sum over its ranks: with one rank's unknown, the sum of
    the others is not the step's energy (it was summed over the ranks that had one)."""
    _write(engine, [
        interval("step", 0, "gpu-0", 1, 6, T0 + 9 * S, T0 + 10 * S, 400.0),
        IntervalRec("r1", 1, "gpu-1", "step", 1, 6, T0 + 9 * S, T0 + 10 * S, None, None, "none",
                    None, 0.0, None, None, 0.0, frozenset({"incomplete"})),
    ])  # fmt: skip
    steps = queries.job_steps(engine, "r1")
    assert steps[6].energy_j is None and steps[6].ranks == 2 and "incomplete" in steps[6].flags
    assert [s.energy_j for s in steps[:6]] == [601.0 + 2 * k for k in range(6)]
    assert queries.step_energies(engine, "r1") == [601.0 + 2 * k for k in range(6)]


TWO_RANKS = RunConfigRec(world_size=2, nodes=1, global_batch_size=8, local_batch_size=4)


def _one_node(db_url, *devices: DeviceRec):
    """A migrated database and a batch with node n1 (boot b1) holding `devices`."""
    engine = create_db_engine(db_url)
    migrate(engine)
    b = WriteBatch()
    b.nodes["b1"] = NodeRec("n1", "b1", devices=devices)
    return engine, b


@pytest.fixture
def shared(db_url):
    """Run "sh": two ranks on one GPU (both LOCAL_RANK 0: each also got the node's CPU), each
    with the same run, epoch and step intervals, as the join gives every rank its device's."""
    engine, b = _one_node(db_url, DeviceRec(0, "gpu-0", "H100", "gpu"),
                          DeviceRec(1, "cpu-0", "pkg", "cpu"))  # fmt: skip
    cfg = TWO_RANKS
    ms = []
    for rank in (0, 1):
        kw = dict(run_id="sh", rank=rank, device_uuid="gpu-0", local_rank=0)
        ms += [marker("run_start", T0, config=cfg, **kw),
               marker("step_start", T0 + S, epoch=0, step=0, **kw),
               marker("step_end", T0 + 2 * S, epoch=0, step=0, **kw),
               marker("run_end", T0 + 3 * S, status="completed", **kw)]  # fmt: skip
    b.markers = [("b1", m) for m in ms]

    def iv(kind, rank, uuid, start, end, e):
        return IntervalRec("sh", rank, uuid, kind, 0, 0, start, end, e, 0.8 * e, "counter",
                           e, 0.5, e / ((end - start) / 1e9), e, 1.0, frozenset())  # fmt: skip

    b.intervals = [
        x for rank in (0, 1) for x in (
            iv("run", rank, "gpu-0", T0, T0 + 3 * S, 900.0),
            iv("run", rank, "cpu-0", T0, T0 + 3 * S, 150.0),
            iv("epoch", rank, "gpu-0", T0 + S, T0 + 2 * S, 300.0),
            iv("epoch", rank, "cpu-0", T0 + S, T0 + 2 * S, 50.0),
            iv("step", rank, "gpu-0", T0 + S, T0 + 2 * S, 300.0),
        )
    ]  # fmt: skip
    Store(engine).write(b)
    yield engine
    engine.dispose()


def test_a_gpu_two_ranks_share_is_counted_once_and_flagged(shared):
    """Two ranks on one GPU (CUDA_VISIBLE_DEVICES or LOCAL_RANK set alike by mistake, or MIG
    slices of one GPU) each measure the whole GPU: summed over ranks, the job's energy was
    that GPU's twice. Each device counts once, and the run says its ranks shared one."""
    (r,) = queries.run_summaries(shared)
    assert r.gpu_energy_j == 900.0 and r.cpu_energy_j == 150.0 and r.energy_j == 1050.0
    assert r.active_energy_j == pytest.approx(720.0)
    assert "shared_device" in r.flags and "partial" not in r.flags
    (e,) = queries.epoch_summaries(shared, "sh")
    assert e.energy_j == 350.0 and "shared_device" in e.flags and "partial" not in e.flags
    (s,) = queries.job_steps(shared, "sh")
    assert s.energy_j == 300.0 and s.ranks == 2 and "shared_device" in s.flags
    assert s.active_energy_j == pytest.approx(240.0)
    assert queries.step_energies(shared, "sh") == [300.0]
    ranks = queries.rank_steps(shared, "sh")
    assert [x.energy_j for x in ranks] == [300.0, 300.0]  # each rank's own view: its GPU's
    assert all("shared_device" in x.flags for x in ranks)


def test_a_run_resumed_with_its_ranks_on_other_gpus_counts_every_session(db_url):
    """Session 1: rank 0 on gpu-0, rank 1 on gpu-1; session 2 (a requeue that listed the nodes
    in another order): rank 0 on gpu-1, rank 1 on gpu-0. Each GPU served two ranks, at
    different times: all four run intervals are energy spent, and nothing is shared."""
    engine, b = _one_node(db_url, DeviceRec(0, "gpu-0", "H100", "gpu"),
                          DeviceRec(1, "gpu-1", "H100", "gpu"))  # fmt: skip
    cfg = TWO_RANKS
    b.markers = [("b1", marker("run_start", T0, run_id="rs", rank=r, device_uuid=f"gpu-{r}",
                               local_rank=r, config=cfg)) for r in (0, 1)]  # fmt: skip

    def iv(rank, uuid, start, end, e, step=None):
        kind = "run" if step is None else "step"
        return IntervalRec("rs", rank, uuid, kind, 0, step or 0, start, end, e, None, "counter",
                           e, 0.5, e / ((end - start) / 1e9), e, 1.0, frozenset())  # fmt: skip

    b.intervals = [iv(0, "gpu-0", T0, T0 + 10 * S, 100.0), iv(1, "gpu-1", T0, T0 + 10 * S, 100.0),
                   iv(0, "gpu-1", T0 + 20 * S, T0 + 30 * S, 200.0),
                   iv(1, "gpu-0", T0 + 20 * S, T0 + 30 * S, 200.0),
                   iv(0, "gpu-0", T0 + S, T0 + 2 * S, 10.0, step=1),
                   iv(1, "gpu-1", T0 + S, T0 + 2 * S, 10.0, step=1),
                   iv(0, "gpu-1", T0 + 21 * S, T0 + 22 * S, 20.0, step=2),
                   iv(1, "gpu-0", T0 + 21 * S, T0 + 22 * S, 20.0, step=2)]  # fmt: skip
    Store(engine).write(b)
    (r,) = queries.run_summaries(engine)
    assert r.gpu_energy_j == 600.0 and "shared_device" not in r.flags
    assert [s.energy_j for s in queries.job_steps(engine, "rs")] == [20.0, 40.0]
    assert not any("shared_device" in s.flags for s in queries.rank_steps(engine, "rs"))
    engine.dispose()
