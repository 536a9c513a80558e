"""Exact power trajectories for the sim backend (pure: no clock reads, no I/O).

Power on a device is a first-order response to a piecewise-constant target (set when markers
arrive) plus deterministic noise. Both parts integrate in closed form, so the energy of any
interval is exact, not a re-sum of samples:

    ramp:  P(t) = target + (p0 - target) * exp(-(t - t0) / tau)  on each segment [t0, t1)
    noise: n(t) = sum_i a_i * sin(w_i * t + phi_i)               (seeded, incommensurate w_i)
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right


class Noise:
    """Seeded sum of sinusoids: looks like sensor noise when sampled, yet has an exact integral."""

    def __init__(self, rng: random.Random, rms_w: float, terms: int = 8) -> None:
        amp = rms_w * math.sqrt(
            2.0 / terms
        )  # sum of K sinusoids of amplitude a has RMS a*sqrt(K/2)
        self._terms = [
            (amp, 2 * math.pi * math.exp(rng.uniform(math.log(0.2), math.log(40.0))),
             rng.uniform(0, 2 * math.pi))
            for _ in range(terms)
        ]  # fmt: skip

    def value(self, t_s: float) -> float:
        return sum(a * math.sin(w * t_s + ph) for a, w, ph in self._terms)

    def integral(self, t_s: float) -> float:
        """Integral of the noise from 0 to t_s."""
        return sum(a / w * (math.cos(ph) - math.cos(w * t_s + ph)) for a, w, ph in self._terms)


class PowerTrace:
    """Power of one device from start_ns on. set_target() only ever appends: the past is fixed."""

    def __init__(
        self,
        start_ns: int,
        level_w: float,
        tau_s: float,
        noise: Noise | None = None,
        max_segments: int = 200_000,
    ) -> None:
        self.start_ns = start_ns
        self._tau = tau_s
        self._noise = noise
        self._max_segments = max_segments
        self._t: list[int] = [start_ns]  # segment start times
        self._p0: list[float] = [level_w]  # ramp power at segment start
        self._target: list[float] = [level_w]
        self._cum: list[float] = [0.0]  # ramp energy from start_ns to the segment start

    @property
    def target_w(self) -> float:
        return self._target[-1]

    @property
    def history_start_ns(self) -> int:
        return self._t[0]

    def set_target(self, t_ns: int, target_w: float) -> int:
        """Power heads for target_w from t_ns on (clamped to the last change); returns that time."""
        t = max(t_ns, self._t[-1])
        if t == self._t[-1]:
            self._target[-1] = target_w
            return t
        p, e = self._ramp(len(self._t) - 1, t)
        self._t.append(t)
        self._p0.append(p)
        self._target.append(target_w)
        self._cum.append(self._cum[-1] + e)
        if len(self._t) > self._max_segments:
            cut = len(self._t) // 2
            for lst in (self._t, self._p0, self._target, self._cum):
                del lst[:cut]
        return t

    def power_w(self, t_ns: int) -> float:
        p, _ = self._ramp(self._segment(t_ns), t_ns)
        return p + (self._noise.value(self._rel_s(t_ns)) if self._noise else 0.0)

    def energy_j(self, t_ns: int) -> float:
        """Exact energy from start_ns to t_ns."""
        i = self._segment(t_ns)
        _, e = self._ramp(i, t_ns)
        noise = self._noise.integral(self._rel_s(t_ns)) if self._noise else 0.0
        return self._cum[i] + e + noise

    def integral_j(self, a_ns: int, b_ns: int) -> float:
        return self.energy_j(b_ns) - self.energy_j(a_ns)

    def _rel_s(self, t_ns: int) -> float:
        return (t_ns - self.start_ns) / 1e9

    def _segment(self, t_ns: int) -> int:
        if t_ns < self._t[0]:
            raise ValueError(
                f"time {t_ns} is before the trace history, which starts at {self._t[0]}"
            )
        return bisect_right(self._t, t_ns) - 1

    def _ramp(self, i: int, t_ns: int) -> tuple[float, float]:
        """(ramp power at t, ramp energy from segment i's start to t)."""
        dt = (t_ns - self._t[i]) / 1e9
        target = self._target[i]
        d = self._p0[i] - target
        decay = math.exp(-dt / self._tau)
        return target + d * decay, target * dt + d * self._tau * (1.0 - decay)
