"""Merging consecutive pieces of one interval's energy (pure core).

Counter energy telescopes: the pieces' energies add up to counter(end) − counter(start) exactly,
and only the two outer bounds carry interpolation error, so the merged uncertainty is taken from
the first and last piece (half of each: a piece's uncertainty covers both its bounds). Without a
counter, errors of power integration accumulate: bounds add, variances add (independent
pieces). Neither telescopes either: energy bridged across a counter reset (bridged_j) and the
unobserved-window term of a partial-coverage sensor (var_windows_j2) are kept from every piece
(each piece's windows at its ends carry their whole mean square: conservative when added).
"""

from __future__ import annotations

import dataclasses

from collector.energy.timeline import IntervalEnergy
from collector.energy.types import calibrated_u


class Accumulator:
    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.cut_ns = start_ns  # pieces cover [start_ns, cut_ns)
        self.pieces: list[IntervalEnergy] = []  # only the first and the last are kept
        self.count = 0
        self.energy_j: float | None = 0.0
        self.power_integral_j: float | None = 0.0
        self.bound_sum_j = 0.0
        self.bridged_j = 0.0
        self.var_sum_j2 = 0.0  # of every piece (power: errors of all pieces add up)
        self.var_windows_j2 = 0.0
        self.covered_ns = 0.0
        self.max_power_w: float | None = None
        self.flags: set[str] = set()
        self.sources: set[str] = set()
        # Finished early, at its node's clock step, on the timeline before it (Joiner._clock_step)
        self.sealed = False
        # Real time the interval's stamps leave out: the node's clock stepped back this much
        # while it was open (its duration and mean power take it back)
        self.shift_ns = 0

    def add(self, e: IntervalEnergy) -> None:
        duration_ns = e.end_ns - e.start_ns
        self.energy_j = _add(self.energy_j, e.energy_j)
        self.power_integral_j = _add(self.power_integral_j, e.power_integral_j)
        self.bound_sum_j += e.bound_j
        self.bridged_j += e.bridged_j
        self.var_sum_j2 += e.var_bounds_j2
        self.var_windows_j2 += e.var_windows_j2
        self.covered_ns += (e.coverage or 0.0) * duration_ns
        if e.max_power_w is not None:
            self.max_power_w = max(self.max_power_w or e.max_power_w, e.max_power_w)
        self.flags.update(e.flags or ())
        self.sources.add(e.source)
        self.count += 1
        self.pieces = [self.pieces[0], e] if self.pieces else [e]
        self.cut_ns = e.end_ns

    def result(self, start_ns: int, end_ns: int) -> IntervalEnergy:
        last = self.pieces[-1]
        if self.count == 1:
            return last
        duration_s = (end_ns - start_ns + self.shift_ns) / 1e9
        source = next(iter(self.sources)) if len(self.sources) == 1 else "mixed"
        first, bridged = self.pieces[0], self.bridged_j
        if source == "counter":  # half of each outer piece: a piece's figures cover both bounds
            bound = (first.bound_j + last.bound_j - first.bridged_j - last.bridged_j) / 2 + bridged
            var = (first.var_bounds_j2 + last.var_bounds_j2) / 2
        else:
            bound, var = self.bound_sum_j, self.var_sum_j2
        uncertainty = calibrated_u(bound, bridged, var + self.var_windows_j2)
        avg = self.energy_j / duration_s if self.energy_j is not None and duration_s > 0 else None
        return dataclasses.replace(
            last,
            start_ns=start_ns,
            end_ns=end_ns,
            energy_j=self.energy_j,
            source=source,
            power_integral_j=self.power_integral_j,
            uncertainty_j=uncertainty,
            avg_power_w=avg,
            max_power_w=self.max_power_w,
            coverage=min(1.0, self.covered_ns / max(1, end_ns - start_ns + self.shift_ns)),
            flags=frozenset(self.flags),
            bound_j=bound,
            bridged_j=bridged,
            var_bounds_j2=var,
            var_windows_j2=self.var_windows_j2,
        )


def shared_piece(cache: dict, key: tuple, timeline, a: int, b: int) -> IntervalEnergy:
    """timeline.interval(a, b), computed once per key for every open interval cut there."""
    piece = cache.get(key)
    if piece is None:
        piece = cache[key] = timeline.interval(a, b)
    return piece


def _add(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b
