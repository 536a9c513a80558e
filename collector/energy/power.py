"""Trapezoid integration of sampled power (pure numpy; times in float seconds).

Power between two readings is taken as the straight line through them, so the integral up to
any moment (not only up to a reading) is exact for that model: bounds that fall between
readings are interpolated, never snapped to the nearest reading.
"""

from __future__ import annotations

import numpy as np


def cumulative_trapezoid(ts: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """cum[i] = integral of the piecewise-linear power from ts[0] to ts[i]."""
    cum = np.zeros(len(ts))
    if len(ts) > 1:
        np.cumsum(0.5 * (pw[1:] + pw[:-1]) * np.diff(ts), out=cum[1:])
    return cum


def edge_budget(ts: np.ndarray, pw: np.ndarray) -> np.ndarray:
    """q[i] = sum over segments k < i of (|p[k+1] - p[k]| * (t[k+1] - t[k]))^2.

    A power edge somewhere inside a segment makes the trapezoid wrong by at most half of
    |dp| * dt; differences of q give the squared budget of any run of segments in O(1).
    """
    q = np.zeros(len(ts))
    if len(ts) > 1:
        np.cumsum((np.diff(pw) * np.diff(ts)) ** 2, out=q[1:])
    return q


def integral_at(ts: np.ndarray, pw: np.ndarray, cum: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Integral from ts[0] to each x; outside the readings power is held at the end values."""
    x = np.asarray(x, dtype=float)
    n = len(ts)
    if n == 1:
        return pw[0] * (x - ts[0])
    j = np.clip(np.searchsorted(ts, x, side="right") - 1, 0, n - 2)
    d = np.clip(x - ts[j], 0.0, None)
    h = ts[j + 1] - ts[j]
    d = np.minimum(d, h)
    inside = cum[j] + pw[j] * d + 0.5 * (pw[j + 1] - pw[j]) * d * d / h
    before = pw[0] * np.minimum(x - ts[0], 0.0)
    after = pw[-1] * np.maximum(x - ts[-1], 0.0)
    return inside + before + after


def integral_scalar(ts: np.ndarray, pw: np.ndarray, cum: np.ndarray, x: float) -> float:
    """integral_at for one x without numpy's per-call overhead (the hot path of queries)."""
    if x <= ts[0] or len(ts) == 1:
        return float(pw[0]) * (x - float(ts[0]))
    if x >= ts[-1]:
        return float(cum[-1]) + float(pw[-1]) * (x - float(ts[-1]))
    j = int(ts.searchsorted(x, side="right")) - 1
    t0, p0, p1 = float(ts[j]), float(pw[j]), float(pw[j + 1])
    d = x - t0
    return float(cum[j]) + p0 * d + 0.5 * (p1 - p0) * d * d / (float(ts[j + 1]) - t0)


def trapezoid(ts: np.ndarray, pw: np.ndarray, a: float, b: float) -> float:
    """Integral over [a, b] with both bounds interpolated (a <= b, both inside the readings)."""
    cum = cumulative_trapezoid(ts, pw)
    ia, ib = integral_at(ts, pw, cum, np.array([a, b]))
    return float(ib - ia)
