"""Daemon configuration: one frozen dataclass, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field

from parawatt_proto.limits import DEFAULT_MAX_CLOCK_SKEW_S
from power_daemon.errors import ConfigError

BACKENDS = ("auto", "nvml", "sim")
RAPL_MODES = ("auto", "on", "off")
MAX_BUFFER_CAPACITY = 50_000_000  # a day of 8 GPUs at 50 Hz is 35M readings (~100 B each)
MAX_SIM_DEVICES = 256  # a node has a handful of GPUs; thousands would only stall the sampler
# The sim's energy counter period: GPUs update theirs every 20-100 ms. Under 1 ms the sim keeps
# a tick per counter update of its averaging window (1e-9 ms: a billion, and every reading
# divided by zero); over 10 s the readings no longer show a counter.
MIN_COUNTER_MS, MAX_COUNTER_MS = 1.0, 10_000.0


MARKERS_FROM = ("local", "socket", "any")

# Time between readings. Not a divisor of NVML's ~100 ms energy-counter period: readings every
# 20 ms fall at the same phase of every counter update, which the collector then knows only to
# +-10 ms; readings every 21.7 ms fall at every phase of successive updates, and the collector
# (collector/energy/counter.py refine_phase) intersects their brackets to pin each update to
# ~1 ms. Any interval whose phases spread works (calibrate.phase_spread; `power-daemon doctor`
# checks it against each GPU's measured counter).
DEFAULT_INTERVAL_MS = 21.7


@dataclass(frozen=True)
class SimParams:
    """Behaviour of the simulated GPUs (see backends/sim.py). The defaults are an H100 SXM5 80GB:
    - power_limit_w 700: NVIDIA H100 Tensor Core GPU datasheet (SXM: "up to 700 W", the default
      power limit nvidia-smi shows);
    - busy_w 560 (80 % of the limit): DL training keeps an H100 node well below its rating,
      about 76 % of the 10.2 kW node TDP for compute-intensive training (Newkirk et al., 2025,
      arXiv:2506.14551) and at most 8.4 kW, 18 % below it, on 8 GPUs near full utilisation
      (Latif et al., IEEE Access 13:61740, 2025, arXiv:2412.08602); the GPUs dominate the node;
    - idle_w 70: an idle H100 SXM in its default persistence state reads 60-75 W in nvidia-smi;
      run_w 120: a process holds a CUDA context and the clocks stay up between kernels.
    """

    idle_w: float = 70.0  # no run on the device
    run_w: float = 120.0  # a run is open on the device but no step (data loading, eval, sync)
    busy_w: float = 560.0  # a step is open on the device
    ramp_tau_s: float = 0.03  # first-order time constant of power changes
    noise_w: float = 3.0  # RMS of the seeded power noise
    counter_period_s: float = 0.1  # the energy counter advances in steps this far apart
    avg_window_s: float = 1.0  # power_avg_w averages over this window
    power_limit_w: float = 700.0
    memory_total_bytes: float = 80e9
    ambient_c: float = 30.0
    thermal_c_per_w: float = 0.15  # steady-state temperature rise per watt
    thermal_tau_s: float = 20.0  # heating / cooling time constant
    name: str = "NVIDIA H100 80GB HBM3 (sim)"
    # Sensor modes (backends/sim.py): the sensor observes only this share of each counter
    # window (A100/H100-like part-time sensing; 1 = all), and another job's load drawn
    # whenever no run is open (0 = the GPU idles between runs).
    coverage_fraction: float = 1.0
    background_w: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.idle_w <= self.run_w <= self.busy_w <= self.power_limit_w:
            raise ConfigError("sim power levels must satisfy 0 <= idle <= run <= busy <= limit")
        if self.ramp_tau_s <= 0 or self.counter_period_s <= 0 or self.avg_window_s <= 0:
            raise ConfigError("sim time constants and periods must be > 0")
        if not MIN_COUNTER_MS <= self.counter_period_s * 1e3 <= MAX_COUNTER_MS:
            raise ConfigError(
                f"sim counter_period_s must be between {MIN_COUNTER_MS / 1e3:g} and "
                f"{MAX_COUNTER_MS / 1e3:g} s"
            )
        if self.thermal_tau_s <= 0 or self.noise_w < 0:
            raise ConfigError("sim thermal_tau_s must be > 0 and noise_w >= 0")
        if not 0 < self.coverage_fraction <= 1 or not 0 <= self.background_w <= self.power_limit_w:
            raise ConfigError("sim coverage_fraction must be in (0, 1], background_w in [0, limit]")


@dataclass(frozen=True)
class DaemonConfig:
    listen: str = "127.0.0.1:50051"  # loopback by default: markers and readings stay on the node
    backend: str = "auto"
    sim_devices: int = 2
    interval_ms: float = DEFAULT_INTERVAL_MS
    # The interval was not chosen (serve without --interval-ms): where, against a GPU counter
    # period calibration measured, it would not pin the updates (calibrate.phase_problem), the
    # daemon moves it to the interval near it that spreads them (calibrate.spread_interval_ms).
    tune_interval: bool = False
    rapl: str = "auto"
    rapl_root: str = "/sys/class/powercap"
    # 10 min of 8 devices at the default ~46 Hz is 221,000 readings; the rest is room for markers.
    buffer_capacity: int = 300_000
    hostname: str = ""  # empty: the machine's hostname; set it to simulate several nodes
    seed: int = 0
    max_batch: int = 5000  # cap on readings per StreamBatch a subscriber may ask for
    default_batch: int = 100
    # A follower that has caught up waits this long for a fuller batch before sending: one
    # message per ~5 ticks instead of per tick saves the daemon about half a percent of a core.
    stream_linger_ms: float = 100.0
    grace_s: float = 1.0  # how long in-flight RPCs get on shutdown
    # Each open stream holds a server thread; past this many, Subscribe answers
    # RESOURCE_EXHAUSTED so the threads the trainers' SendMarkers need are never all taken.
    max_streams: int = 32
    # Markers whose time_ns is further than this from the daemon's clock are refused.
    max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S
    # Runs whose owner the daemon remembers (parawatt_proto.ownership); the oldest is forgotten.
    max_runs: int = 65_536
    # Refuse markers without a run token (clients that predate run ownership).
    require_run_token: bool = False
    # Who may send markers: "local" (the Unix socket and loopback TCP: the node's own
    # processes, the trust boundary of DESIGN.md), "socket" (the Unix socket only) or "any".
    markers_from: str = "local"
    sim: SimParams = field(default_factory=SimParams)
    # Poll every GPU this long at start to measure its sensor (power_daemon.calibrate; 0: off,
    # the backend's own figures stand). `serve` measures by default.
    calibrate_s: float = 0.0
    # Priority of the sampler thread (Linux nice, per thread; < 0 needs CAP_SYS_NICE): keeps its
    # period under CPU contention from training ranks. 0 leaves it alone.
    sampler_nice: int = 0
    # Run the sampler thread under SCHED_FIFO (Linux real-time, priority 1; needs
    # CAP_SYS_NICE): the OS then runs it the moment it wakes, ahead of any training rank. It
    # still needs the GIL, so the GIL switch interval bounds the wait. `serve` asks for it
    # (falling back to sampler_nice where it is not allowed); off here for library use.
    sampler_realtime: bool = False
    # gRPC TLS (see serve/tls.py): a certificate and key; with a client CA, mutual TLS.
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None
    # Unix socket for local markers (serve/local_socket.py): a path, "auto" (the runtime dir) or None.
    marker_socket: str | None = None
    marker_socket_group: str | None = None  # group name or id; None: the daemon's own group

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.rapl not in RAPL_MODES:
            raise ConfigError(f"rapl must be one of {', '.join(RAPL_MODES)}, not {self.rapl!r}")
        if not 1 <= self.sim_devices <= MAX_SIM_DEVICES:
            raise ConfigError(f"sim_devices must be between 1 and {MAX_SIM_DEVICES}")
        if not 0.1 <= self.interval_ms <= 60_000:
            raise ConfigError("interval_ms must be between 0.1 and 60000")
        if not 1000 <= self.buffer_capacity <= MAX_BUFFER_CAPACITY:
            raise ConfigError(f"buffer_capacity must be between 1000 and {MAX_BUFFER_CAPACITY}")
        if not 0 <= self.stream_linger_ms <= 10_000:
            raise ConfigError("stream_linger_ms must be between 0 and 10000")
        if not 1 <= self.max_streams <= 1000:
            raise ConfigError("max_streams must be between 1 and 1000")
        if not 1 <= self.default_batch <= self.max_batch:
            raise ConfigError("need 1 <= default_batch <= max_batch")
        if not 1 <= self.max_clock_skew_s <= 10 * 365 * 86400:
            raise ConfigError("max_clock_skew_s must be between 1 s and 10 years")
        if not 1 <= self.max_runs <= 10_000_000:
            raise ConfigError("max_runs must be between 1 and 10000000")
        if not -20 <= self.sampler_nice <= 19:
            raise ConfigError("sampler_nice must be between -20 and 19")
        if not 0 <= self.calibrate_s <= 60:
            raise ConfigError("calibrate_s must be between 0 and 60")
        parse_listen(self.listen)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("--tls-cert and --tls-key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ConfigError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS)")
        if self.markers_from not in MARKERS_FROM:
            raise ConfigError(f"markers_from must be one of {', '.join(MARKERS_FROM)}")
        if self.markers_from == "socket" and not self.marker_socket:
            raise ConfigError("--markers-from socket needs a --marker-socket")
        if self.marker_socket_group is not None and not self.marker_socket:
            raise ConfigError("--marker-socket-group needs a --marker-socket")

    @property
    def interval_ns(self) -> int:
        return round(self.interval_ms * 1e6)


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') -> (host, port); port 0 binds a free port."""
    host, sep, port_text = listen.rpartition(":")
    bare_ipv6 = ":" in host and not (host.startswith("[") and host.endswith("]"))
    if not sep or not host or bare_ipv6 or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"--listen must be HOST:PORT (e.g. 127.0.0.1:50051, [::1]:50051), not {listen!r}"
        )
    return host, int(port_text)
