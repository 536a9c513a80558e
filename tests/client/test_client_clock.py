"""The CUDA step clock on a fake GPU timeline: a minimum filter removes the sender's GIL delay, the
residual is reported, and the sender thread binds its own CUDA device (no context on GPU 0)."""

from __future__ import annotations

import random
import threading
import time

import parawatt
from parawatt.client import STEP_END, MarkerClient
from parawatt.clock import CudaEventClock
from parawatt_proto import parawatt_pb2 as pb
from tests.client.recorder import Recorder
from tests.support.torchrun import free_port

OFFSET_NS = 1_700_000_000_000_000_000  # host time of GPU time 0


class FakeGpu:
    """A GPU timeline (ms) and a host clock that observes it late by `delays_ns` (GIL waits)."""

    def __init__(self, delays_ns=()):
        self.delays = list(delays_ns)
        self.gpu_ms = 0.0
        self.observed: FakeEvent | None = None

    def now(self) -> int:
        delay = self.delays.pop(0) if self.delays else 0
        return OFFSET_NS + round(self.observed.gpu_ms * 1e6) + delay

    def truth(self, event: FakeEvent) -> int:
        return OFFSET_NS + round(event.gpu_ms * 1e6)


class FakeEvent:
    def __init__(self, gpu: FakeGpu, gpu_ms: float, done: bool):
        self.gpu, self.gpu_ms, self.done = gpu, gpu_ms, done

    def query(self) -> bool:
        return self.done

    def synchronize(self) -> None:
        self.done = True
        self.gpu.observed = self

    def elapsed_time(self, other: FakeEvent) -> float:
        return other.gpu_ms - self.gpu_ms


class FakeCuda:
    """The few torch.cuda calls the clock makes; records which thread set which device."""

    def __init__(self, gpu: FakeGpu):
        self.gpu = gpu
        self.set_device_calls: list[tuple[str, int]] = []
        self.events_resolved_on: set[str] = set()

    def set_device(self, index: int) -> None:
        self.set_device_calls.append((threading.current_thread().name, index))

    def Event(self, enable_timing=False, blocking=False):  # noqa: N802 (torch's name)
        cuda = self

        class Recorded(FakeEvent):
            def record(self):
                pass

            def query(self):
                cuda.events_resolved_on.add(threading.current_thread().name)
                return super().query()

        self.gpu.gpu_ms += 1.0
        return Recorded(self.gpu, self.gpu.gpu_ms, done=False)


def test_minimum_filter_removes_late_observations_and_reports_the_residual():
    rng = random.Random(7)
    delays = [rng.randrange(0, 7_000_000) for _ in range(400)]  # GIL waits, uniform to 7 ms
    gpu = FakeGpu(delays)
    clock = CudaEventClock(0, cuda=FakeCuda(gpu), now=gpu.now, window=64)
    errors, raw = [], []
    for k in range(400):
        pending = FakeEvent(gpu, 10.0 + 3.0 * k, done=False)  # the sender waits: an observation
        errors.append(clock.resolve(pending) - gpu.truth(pending))
        raw.append(delays[k])
        done = FakeEvent(gpu, 10.0 + 3.0 * k + 1.5, done=True)  # completed unobserved: derived
        errors.append(clock.resolve(done) - gpu.truth(done))
    assert min(errors) >= 0  # never early: every observation is late or exact
    settled = sorted(errors[64:])
    # raw observations are late by ~3.5 ms at the median; filtered stamps by a tenth of that
    # (the least delayed of 64 uniform delays up to 7 ms: ~0.1 ms expected)
    assert sorted(raw)[len(raw) // 2] > 2_000_000
    assert settled[len(settled) // 2] < 350_000 and settled[-1] < 1_500_000
    stats = clock.stats()
    assert stats["clock_observations"] == 400
    assert 2_000 < stats["clock_residual_p50_us"] < 5_000  # the bias that was removed
    assert stats["clock_residual_max_us"] <= 7_000


def test_window_follows_a_drifting_gpu_clock():
    """A GPU clock running 50 ppm fast: old anchors age out, so the error stays bounded."""
    gpu = FakeGpu()
    clock = CudaEventClock(0, cuda=FakeCuda(gpu), now=gpu.now, window=16)
    for k in range(2000):
        host_ms = 50.0 * k
        event = FakeEvent(gpu, host_ms * (1 + 50e-6), done=False)
        gpu.delays = [round(50e-6 * host_ms * 1e6 * -1)]  # host time = gpu time minus drift
        stamp = clock.resolve(event)
        expected = OFFSET_NS + round(host_ms * 1e6)
        assert abs(stamp - expected) < 1_000_000, k  # within a millisecond after 100 s


def test_sender_thread_binds_its_device_before_resolving_events():
    gpu = FakeGpu()
    cuda = FakeCuda(gpu)
    clock = CudaEventClock(3, cuda=cuda, now=gpu.now)
    clock.start()  # training thread: one observation on an idle GPU
    client = MarkerClient(f"127.0.0.1:{free_port()}", run_id="r", rank=3, local_rank=3,
                          flush_interval_s=0.01, deadline_s=0.2, resolve_time=clock.resolve,
                          thread_init=clock.thread_init)  # fmt: skip
    stamp = clock.stamp()
    client.mark(STEP_END, 0, 0, None, stamp)
    deadline = time.monotonic() + 30
    while "marker-sender" not in cuda.events_resolved_on and time.monotonic() < deadline:
        time.sleep(0.01)
    client.close(timeout_s=0.5)
    assert cuda.set_device_calls == [("marker-sender", 3)]
    assert "marker-sender" in cuda.events_resolved_on


def test_a_cuda_run_stamps_steps_by_gpu_time_and_reports_the_residual():
    """`track` with the CUDA clock (on the fake GPU): steps tile, the run ends after the GPU's
    last step, the sender binds device 1, and the filter's residual is in RUN_END and the summary."""
    gpu = FakeGpu([3_000_000, 0, 5_000_000, 1_000_000] * 10)
    cuda = FakeCuda(gpu)
    clock = CudaEventClock(1, cuda=cuda, now=gpu.now)
    with Recorder() as rec:
        with parawatt.track(daemon=rec.address, clock=clock) as run, run.epoch():
            for _ in range(5):
                run.step()
        markers = list(rec.markers)
    steps = [m for m in markers if m.kind in (pb.STEP_START, pb.STEP_END)]
    times = [m.time_ns for m in steps]
    assert times == sorted(times) and all(t >= OFFSET_NS for t in times)
    assert all(a.time_ns == b.time_ns for a, b in zip(steps[1:-1:2], steps[2::2], strict=True))
    end = markers[-1]
    assert end.kind == pb.RUN_END and end.time_ns >= times[-1]
    assert end.metrics["clock_observations"] >= 5 and "clock_residual_max_us" in end.metrics
    assert run.summary["clock_residual_max_us"] <= 5_000
    assert cuda.set_device_calls == [("marker-sender", 1)]
