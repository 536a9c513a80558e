"""One [[series]] table of a grid file -> one or more series of (GPUs, LBS, GBS, data fraction).

Forms (all with `name`, optional `scaling`, `base_fraction`, `train`):
  gpus = [1, 2, 4], gbs = 256          constant GBS: LBS = GBS / GPUs
  gpus = [1, 2, 4], lbs = 256          constant LBS: GBS = LBS x GPUs
  gpus = [...], gbs = [...], lbs = [...] every combination (gradient accumulation fills the gap)
  points = [[1, 256], [2, 128, 256]]   explicit (GPUs, LBS) or (GPUs, LBS, GBS), as in the study
A list of several GBS (or LBS) values splits the table into one series per value, named
`<name>-gbs<G>` (`<name>-lbs<L>`), because efficiency ratios are taken against the smallest GPU
count of a series that holds its batch size constant.

Weak scaling grows the data set with the GPU count: a point trains on
`base_fraction x GPUs / smallest GPUs` of it; `base_fraction` defaults to smallest / largest GPU
count, so the largest point sees the whole data set.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_KEYS = {"name", "scaling", "gpus", "gbs", "lbs", "points", "base_fraction", "train"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

Entry = tuple[int, int, int, float | None]  # gpus, lbs, gbs, data fraction (None = all)


@dataclass(frozen=True)
class SeriesSpec:
    name: str
    scaling: str  # strong | weak
    entries: tuple[Entry, ...]
    train: tuple[tuple[str, object], ...] = ()


def parse_series(
    raw: object,
    index: int,
    *,
    default_scaling: object,
    parse_train: Callable[[Mapping[str, object], str], tuple[tuple[str, object], ...]],
    error: type[Exception],
) -> list[SeriesSpec]:
    where = f"[[series]] #{index}"
    if not isinstance(raw, dict):
        raise error(f"{where} must be a table")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise error(
            f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})"
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise error(f"{where} needs name = \"...\" (letters, digits, '_', '.', '-')")
    where = f"series {name!r}"
    scaling = raw.get("scaling", default_scaling)
    if scaling not in ("strong", "weak"):
        raise error(f'{where}: scaling must be "strong" or "weak", not {scaling!r}')
    train_raw = raw.get("train", {})
    if not isinstance(train_raw, dict):
        raise error(f"{where}: train must be a table")
    train = parse_train(train_raw, f"{where} train")
    groups = _groups(raw, name, where, error)
    base = raw.get("base_fraction")
    if base is not None and (
        isinstance(base, bool) or not isinstance(base, int | float) or not 0 < base <= 1
    ):
        raise error(f"{where}: base_fraction must be a number in (0, 1], not {base!r}")
    if base is not None and scaling != "weak":
        raise error(f"{where}: base_fraction applies to weak scaling only")
    out = []
    for sub_name, triples in groups:
        fractions = _fractions(triples, base) if scaling == "weak" else [None] * len(triples)
        entries = tuple(
            (g, lbs, gbs, f) for (g, lbs, gbs), f in zip(triples, fractions, strict=True)
        )
        out.append(SeriesSpec(sub_name, scaling, entries, train))
    return out


def _groups(raw: dict, name: str, where: str, error: type[Exception]) -> list[tuple[str, list]]:
    if "points" in raw:
        if any(k in raw for k in ("gpus", "gbs", "lbs")):
            raise error(f"{where}: give either points or gpus/gbs/lbs, not both")
        return [
            (name, [_pair(p, where, error) for p in _list(raw["points"], where, "points", error)])
        ]
    if "gpus" not in raw:
        raise error(
            f"{where} needs gpus = [...] (with gbs and/or lbs) or points = [[gpus, lbs], ...]"
        )
    gpus = _ints(raw["gpus"], where, "gpus", error)
    gbs = _ints(raw["gbs"], where, "gbs", error) if "gbs" in raw else None
    lbs = _ints(raw["lbs"], where, "lbs", error) if "lbs" in raw else None
    if gbs is None and lbs is None:
        raise error(f"{where} needs gbs and/or lbs next to gpus")
    if lbs is None:
        return [
            (_sub(name, "gbs", b, gbs), [(g, max(1, b // g), b) for g in gpus]) for b in gbs or []
        ]
    if gbs is None:
        return [(_sub(name, "lbs", x, lbs), [(g, x, x * g) for g in gpus]) for x in lbs]
    many = len(gbs) > 1 or len(lbs) > 1
    return [
        (f"{name}-gbs{b}-lbs{x}" if many else name, [(g, x, b) for g in gpus])
        for b in gbs
        for x in lbs
    ]


def _fractions(triples: list[tuple[int, int, int]], base: float | None) -> list[float | None]:
    gpus = [g for g, _, _ in triples]
    lo, hi = min(gpus), max(gpus)
    base = lo / hi if base is None else float(base)
    out: list[float | None] = []
    for g in gpus:
        f = base * g / lo
        out.append(None if abs(f - 1.0) < 1e-9 else f)
    return out


def _sub(name: str, what: str, value: int, values: list[int]) -> str:
    return f"{name}-{what}{value}" if len(values) > 1 else name


def _pair(item: object, where: str, error: type[Exception]) -> tuple[int, int, int]:
    if (
        not isinstance(item, list)
        or len(item) not in (2, 3)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in item)
    ):
        raise error(
            f"{where}: each point must be [gpus, lbs] or [gpus, lbs, gbs] of positive integers, not {item!r}"
        )
    g, lbs = item[0], item[1]
    return g, lbs, item[2] if len(item) == 3 else g * lbs


def _list(value: object, where: str, key: str, error: type[Exception]) -> list:
    if not isinstance(value, list) or not value:
        raise error(f"{where}: {key} must be a non-empty list")
    return value


def _ints(value: object, where: str, key: str, error: type[Exception]) -> list[int]:
    items = value if isinstance(value, list) else [value]
    if not items or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items
    ):
        raise error(f"{where}: {key} must be a positive integer or a list of them, not {value!r}")
    return items
