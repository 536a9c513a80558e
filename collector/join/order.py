"""Readings out of their stream's order, and a node clock that steps (pure core; part of
Joiner, see joiner.py).

Each device's readings are taken in stream order (Joiner._flush). One more than two counter
updates behind the device's newest is late (its counter is older still: delivered late or sent
again; set aside, and intervals over its stamps flagged late) or a step of the node's clock
back (the counter went on: the device goes on with a new timeline, _clock_step). Intervals
across a step are flagged clock_step, and their duration takes it back (Accumulator.shift_ns).
A clock jumping ahead is a gap in the stamps (flagged gap; the counter's energy across it is
right): told from a pause in the readings only by how little the counter grew over it, which a
low idle power or a slow counter makes unreliable, so it is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from collector.energy.timeline import IntervalEnergy
from collector.join.accum import Accumulator, shared_piece
from collector.join.state import DeviceState, JoinConfig, NodeState
from parawatt_proto.block import FLOAT_INDEX

_POWER, _ENERGY = FLOAT_INDEX["power_w"], FLOAT_INDEX["energy_j"]

log = logging.getLogger("collector.join.joiner")

I64_MIN = -(1 << 63)
BEHIND_NS = 100_000_000  # a block with readings this far behind its node's newest may hold a
# clock step back (shared out before markers are added: Joiner._flush)


class StreamOrder:
    """Joiner's stream-order side; Joiner.__init__ sets the state used here."""

    cfg: JoinConfig
    _late: int
    _clock_steps: int
    _minutely: Callable[[str], bool]  # MarkerIntake's

    def _in_order(self, dev: DeviceState, t: np.ndarray, c: np.ndarray) -> list[tuple]:
        """A device's new readings, in stream order, as (lo, hi, what) runs: "keep", "late"
        (behind the newest reading by more than two counter updates, with a counter no newer
        than the newest one's: readings delivered out of order or sent again; merged, they
        would change energy already integrated ahead across their hole), "step" (behind, but
        the counter went on: the node's clock stepped back; a new timeline from lo)."""
        tol, top = dev.margin_ns, dev.last_ns
        if top is None:
            top = int(t[0])
        floor = I64_MIN + tol  # stamps are anyone's int64: differences must not wrap
        if int(t.min()) >= max(top, floor) - tol and (
            len(t) < 2 or bool(np.all(t[1:] >= np.maximum(t[:-1], floor) - tol))
        ):
            return [(0, len(t), "keep")]  # hot path
        runs, i, n, last_c = [], 0, len(t), dev.timeline.newest_counter()
        stepped = False
        while i < n:
            prev = np.maximum(np.maximum.accumulate(t[i:]), top)
            prev = np.maximum(np.concatenate(([top], prev[:-1])), floor)
            behind = np.flatnonzero(t[i:] < prev - tol)
            if not len(behind):
                runs.append((i, n, "keep"))
                break
            j = i + int(behind[0])
            if j > i:
                runs.append((i, j, "keep"))
                ok = c[i:j][~np.isnan(c[i:j])]
                last_c = float(ok[-1]) if len(ok) else last_c
            top = int(prev[behind[0]])
            back = np.flatnonzero(t[j:] >= top - tol)
            k = j + max(1, int(back[0])) if len(back) else n
            counted = c[j:k][~np.isnan(c[j:k])]
            # a step needs two readings behind whose counter went on (one stray stamp is
            # late), no further back than max_step_back_ns, and one per device and flush
            if (
                not stepped
                and len(counted) >= 2
                and not np.isnan(last_c)
                and float(counted.max()) > last_c
                and top - int(t[j]) <= self.cfg.max_step_back_ns
            ):
                runs.append((j, j, "step"))  # from j on, a new timeline
                top, i, last_c, stepped = int(t[j]), j, float("nan"), True
                continue
            runs.append((j, k, "late"))
            i = k
        return runs

    def _clock_step(
        self, node: NodeState, dev: DeviceState, t: np.ndarray, rows: np.ndarray
    ) -> None:
        """The node's clock stepped back before t[0] (an NTP step, a VM resumed): its stamps
        from here overlap those before. The device goes on with a new timeline; intervals that
        ended on the old one are computed now; those open across the step take the old
        timeline up to its newest reading, the counter's energy from there to the first of
        the new (bridged: its bound is kept whole) and the new one after, flagged clock_step
        (their stamps are off by the step: shift_ns). The node's step is counted, and the
        stamps it made ambiguous kept, by the first of its devices to show it (dev.era).
        Intervals begun after that, on the node's new clock, are left to the new timeline."""
        old = dev.new_era(self.cfg)
        t_last = old.covered_until_ns() or int(t[0])
        if dev.era == node.era:  # the node's step, first seen on this device
            node.era += 1
            node.clock_steps = [*node.clock_steps[-7:], (int(t[0]), t_last)]
            self._clock_steps += 1
            if self._minutely("clock_step"):
                log.warning(
                    "node %r: readings went %.3f s back in time while the counter went on: its "
                    "clock stepped back; intervals open across it are flagged clock_step",
                    node.hostname, (t_last - int(t[0])) / 1e9,
                )  # fmt: skip
        era, dev.era = dev.era, node.era  # this device's timeline so far was of `era`
        counted = np.flatnonzero(~np.isnan(rows[:, _ENERGY]))
        t_first = int(t[counted[0]])
        e_last = old.energy_at(t_last)  # the old timeline's estimate past its last update
        watts = np.concatenate((old.recent_power(8), rows[:8, _POWER]))
        watts = watts[np.isfinite(watts)]
        p_max = float(watts.max()) if len(watts) else 0.0
        p_first = float(rows[counted[0], _POWER])
        p_first = p_first if np.isfinite(p_first) else p_max
        spec = dev.spec
        # The first new reading's counter misses what came since its last update: half an
        # update's energy on average (the reading's phase in the update period is uniform);
        # the bound takes a whole update, and the old side's extrapolation past its own.
        energy = float(rows[counted[0], _ENERGY]) + p_first * spec.update_s / 2
        energy -= e_last if e_last is not None else 0.0
        bound = p_max * 2 * spec.update_s + 2 * spec.resolution_j
        bridge = IntervalEnergy(
            t_last, t_first, energy, "counter", energy, bound, None, p_max or None, 0.0,
            frozenset({"clock_step"}), bound_j=bound, bridged_j=bound,
        )  # fmt: skip
        pieces: dict[tuple[int, int], IntervalEnergy] = {}  # shared, as in Joiner._advance
        for p in node.pending.values():
            if dev.uuid not in p.devices or p.start is None or p.era > era:
                continue
            acc = p.accs.get(dev.uuid)
            cut = acc.cut_ns if acc is not None else p.start.time_ns
            end = p.end.time_ns if p.end is not None else None
            if end is not None and end < cut:
                continue  # its end came too late already (_emit says so)
            if acc is None:
                acc = p.accs[dev.uuid] = Accumulator(p.start.time_ns)
            if end is not None and end <= t_last:  # ended before the step: finished now
                acc.add(shared_piece(pieces, (cut, end), old, cut, end))
                acc.sealed = True
                continue
            if e_last is None:
                p.flags.add("clock_step")
                continue  # nothing to bridge from: _emit finds the old part's hole flagged
            if cut < t_last:
                acc.add(shared_piece(pieces, (cut, t_last), old, cut, t_last))
            acc.add(bridge)
            acc.shift_ns += max(0, t_last - t_first)
            p.flags.add("clock_step")

    def _log_late(self, node: NodeState, dev: DeviceState, count: int) -> None:
        if self._minutely("late"):
            log.warning(
                "node %r device %s: %d reading(s) came behind newer ones with an older "
                "counter (delivered late or sent again): stored, not joined",
                node.hostname, dev.uuid, count,
            )  # fmt: skip

    @staticmethod
    def _ambiguous(node: NodeState, start: int, end: int) -> bool:
        """Whether a marker of the interval is stamped where the node clock's stamps before
        and after a step overlap: either clock may have stamped it (a marker can come before
        the readings that show the step, and is then taken on the wrong side of it)."""
        return any(lo <= t <= hi for lo, hi in node.clock_steps for t in (start, end))
