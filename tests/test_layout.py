"""The house's layout, read from the source with ast (nothing is imported): which way imports
point between the services and inside the collector, and no import cycle anywhere.

Every import counts, including the ones inside functions and under TYPE_CHECKING: a lazy import
is still a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("power_daemon", "trainer", "collector", "parawatt", "parawatt_proto")
# Which top-level package may import which (DESIGN.md, Architecture and Client library).
ALLOWED = {
    "power_daemon": {"parawatt_proto"},
    "trainer": {"parawatt", "parawatt_proto"},
    "collector": {"parawatt_proto"},
    "parawatt": {"parawatt_proto"},
    "parawatt_proto": set(),
}
# The one documented exception: parawatt.results(run_id, db=...) reads a run back through the
# collector's read side (store queries), imported inside the function only.
EXCEPTIONS = {("parawatt.results", "collector")}
# Collector subpackages: which other subpackages each may import (its __init__ docstring says so).
COLLECTOR_ROOMS = {
    "energy": set(),
    "ingest": set(),
    "join": {"energy"},
    "metrics": set(),
    "store": {"energy", "metrics"},  # the writer reports its backlog to metrics.state
    "report": {"store"},
}
# Plain modules at the collector's top level that every room may use; the rest of the top level
# (cli, service, pipeline, workers, ownership) wires the rooms together and no room imports it.
SHARED = {"collector.records", "collector.summary", "collector.errors", "collector.config"}


def _modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO).with_suffix("")
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")) or "migrations" in rel.parts:
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[str]:
    """Every module name `name` imports (absolute; relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")
                parent = parent[: len(parent) - node.level + (1 if is_pkg else 0)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield sub if sub in MODULES else base


def _project_target(imported: str) -> str | None:
    """The project module an import lands on (the longest known prefix), or None."""
    parts = imported.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


GRAPH = {
    name: {t for i in _imports(name, path) if (t := _project_target(i)) and t != name}
    for name, path in MODULES.items()
}
RAW = {name: set(_imports(name, path)) for name, path in MODULES.items()}


def test_the_layout_is_read():
    assert {"collector.energy.timeline", "collector.store.db", "trainer.cli"} <= MODULES.keys()
    assert "collector.energy.counter" in GRAPH["collector.energy.timeline"]


def test_the_energy_core_is_pure():
    bad = []
    for name, imported in RAW.items():
        if not name.startswith("collector.energy"):
            continue
        for mod in imported:
            top = mod.split(".")[0]
            inside = mod == "collector.energy" or mod.startswith("collector.energy.")
            if top in {"grpc", "sqlalchemy", "parawatt_proto"} or (top in PACKAGES and not inside):
                bad.append(f"{name} imports {mod}")
    assert not bad, "collector/energy must stay pure:\n" + "\n".join(bad)


def test_services_do_not_import_each_other():
    bad = []
    for name, targets in GRAPH.items():
        src = name.split(".")[0]
        for target in targets:
            dst = target.split(".")[0]
            if dst != src and dst not in ALLOWED[src] and (name, dst) not in EXCEPTIONS:
                bad.append(f"{name} imports {target}")
    assert not bad, "imports across services that DESIGN.md does not allow:\n" + "\n".join(bad)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "collector" else None


def test_collector_rooms_import_in_their_direction():
    bad = []
    for name, targets in GRAPH.items():
        room = _room(name)
        if room is None:
            continue
        for target in targets:
            if target in SHARED:
                continue
            other = _room(target)
            if (
                target.startswith("collector")
                and other != room
                and other not in COLLECTOR_ROOMS[room]
            ):
                bad.append(f"{name} imports {target}")
    assert not bad, "collector rooms importing against their direction:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
