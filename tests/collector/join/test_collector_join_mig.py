"""Ranks on MIG slices: the daemon names the whole GPU (device_uuid) and the slice
(device_slice); the join gives such a rank the whole GPU's energy and flags every interval
`mig_shared`, so no report passes a GPU's energy off as one slice's."""

from __future__ import annotations

import dataclasses

from collector.join.joiner import Joiner
from parawatt_proto import parawatt_pb2 as pb
from parawatt_proto.convert import marker_rec
from tests.collector.join.test_collector_join import CFG, busy_device, feed, node
from tests.collector.synth import MS, T0, S, run_markers


def _run(slices: dict[int, str]):
    start = T0 + 15 * S
    markers, spans, end = run_markers(start, steps=4, step_ns=300 * MS, gap_ns=50 * MS, epochs=1,
                                      device_uuid="gpu-0")  # fmt: skip
    markers = [dataclasses.replace(m, device_slice=slices.get(m.rank, "")) for m in markers]
    dev = busy_device("gpu-0", spans, run=(start, end))
    joiner = Joiner(CFG)
    joiner.add_node(node("n1", [dev]))
    return feed(joiner, "n1", dev.readings(T0, end + 5 * S), markers)


def test_intervals_of_a_rank_on_a_mig_slice_are_flagged_mig_shared():
    intervals = _run({0: "MIG-fa4e0000-0000-0000-0000-000000000001"})
    assert intervals and all("mig_shared" in i.flags for i in intervals)
    assert {i.kind for i in intervals} == {"step", "epoch", "run"}
    assert all(i.device_uuid == "gpu-0" and i.energy_j > 0 for i in intervals)


def test_a_rank_on_a_whole_gpu_is_not_flagged():
    intervals = _run({})
    assert intervals and not any("mig_shared" in i.flags for i in intervals)


def test_the_slice_travels_from_the_wire_into_the_marker_record():
    wire = pb.Marker(run_id="r", rank=1, kind=pb.STEP_START, time_ns=1, device_uuid="GPU-a",
                     device_slice="MIG-b")  # fmt: skip
    rec = marker_rec(wire)
    assert (rec.device_uuid, rec.device_slice) == ("GPU-a", "MIG-b")
