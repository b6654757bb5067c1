"""The import graph of the project's packages: layers that must hold, and no new import cycle.

Every ``import`` counts, at module level or inside a function (an import
moved into a function still makes the dependency). Read from the source with
``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, FrozenSet, Iterable, List, Set

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sentinel", "detectors", "operators", "sinks", "sources", "flows", "simulator", "devtools")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:  # Alembic's scripts, loaded by Alembic, not imported
                continue
            out[_module_name(path)] = path
    return out


def _imports(name: str, path: Path, known: Iterable[str]) -> Set[str]:
    """The project modules ``name`` imports (a package's ``__init__`` when a package is named)."""
    known = set(known)
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: Set[str] = set()

    def resolve(target: str) -> None:
        # the longest known module the dotted name starts with
        parts = target.split(".")
        for n in range(len(parts), 0, -1):
            cand = ".".join(parts[:n])
            if cand in known:
                found.add(cand)
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                resolve(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:  # `from pkg import module` names a module
                if f"{mod}.{alias.name}" in known:
                    found.add(f"{mod}.{alias.name}")
                else:
                    resolve(mod)
    found.discard(name)
    return found


def graph() -> Dict[str, Set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


# The bottom layer (shared types and helpers) is a package of its own inside sentinel/.
CORE = "sentinel.core"


def _package(module: str) -> str:
    if module == CORE or module.startswith(CORE + "."):
        return CORE
    return module.split(".")[0]


def package_graph(g: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    out: Dict[str, Set[str]] = {p: set() for p in PACKAGES + (CORE,)}
    for a, targets in g.items():
        for b in targets:
            if _package(a) != _package(b):
                out[_package(a)].add(_package(b))
    return out


def cycles(g: Dict[str, Set[str]]) -> List[FrozenSet[str]]:
    """Strongly connected components of more than one node (Tarjan), i.e. the import cycles."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[FrozenSet[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


# The cycles there are today. Between modules there are none. Between packages, sentinel/ still holds
# modules of the bottom layer (config, events, metrics, ...) and of the top (cli, runtime, control, ...),
# so as a package it cycles with the packages between; LAYERS below says which of its modules is where,
# and test_layers holds every module to it. A cycle that is not inside one of these (a new one, or one
# that grew) fails the test; one that shrinks or goes away passes (then shrink the list).
KNOWN_PACKAGE_CYCLES = [
    frozenset({"sentinel", "operators", "sinks", "sources", "flows"}),
]
KNOWN_MODULE_CYCLES: List[FrozenSet[str]] = []

# The layers, bottom first: a module imports only from its own layer and the ones below (a module is
# in the layer of the longest name it starts with; every module must be in one).
LAYERS = [
    ("core", ["sentinel", "sentinel.core", "sentinel.config", "sentinel.events", "sentinel.metrics",
              "sentinel.parse", "sentinel.otlp", "sentinel.records", "sentinel.tls", "sentinel.store",
              "sentinel.shutdown", "sentinel.pii", "sentinel.policy_reload", "simulator", "devtools"]),
    ("detectors", ["detectors"]),
    ("operators", ["operators", "sentinel.crosskey", "sentinel.redeploy"]),
    ("sinks and sources", ["sinks", "sources"]),
    ("flows", ["flows"]),
    ("app", ["flows.main", "sentinel.cli", "sentinel.runtime", "sentinel.control", "sentinel.api", "sentinel.audit",
             "sentinel.auth", "sentinel.health", "sentinel.progress", "sentinel.dashboards"]),
]


def layer(module: str) -> int:
    """Index in LAYERS of ``module``'s layer; -1 when it is in none."""
    best, length = -1, -1
    for i, (_, names) in enumerate(LAYERS):
        for n in names:
            if (module == n or module.startswith(n + ".")) and len(n) > length:
                best, length = i, len(n)
    return best


def _not_known(found: List[FrozenSet[str]], known: List[FrozenSet[str]]) -> List[List[str]]:
    return [sorted(c) for c in found if not any(c <= k for k in known)]


def test_the_graph_is_read():
    g = graph()
    assert "sentinel.config" in g and "simulator.core" in g and "detectors.episode" in g
    assert "sentinel.config" in g["operators.parse"] or any(
        m.startswith("sentinel.") for m in g["operators.parse"]), g["operators.parse"]
    assert "simulator" in g["sources.simulator"]
    # a cycle is found when there is one
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_no_new_package_cycle():
    found = cycles(package_graph(graph()))
    assert not _not_known(found, KNOWN_PACKAGE_CYCLES), f"new import cycle between packages: {found}"


def test_no_new_module_cycle():
    found = cycles(graph())
    new = _not_known(found, KNOWN_MODULE_CYCLES)
    assert not new, f"new import cycle between modules: {new}"


def _imports_of(pkg: str, g: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    return {m: {t for t in ts if _package(t) != pkg} for m, ts in g.items() if _package(m) == pkg}


def test_every_module_has_a_layer_and_imports_none_above_it():
    g = graph()
    assert not [m for m in g if layer(m) < 0], "put these in LAYERS"
    up = sorted(f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]})"
                for m, ts in g.items() for t in ts if layer(t) > layer(m))
    assert not up, "a layer is crossed upwards:\n" + "\n".join(up)
    # the check sees a crossing when there is one
    assert layer("sinks.qdrant") > layer("operators.incidents") > layer("detectors.episode") > layer("sentinel.config")
    assert layer("sentinel.core.types") == layer("sentinel.events") == 0 and layer("flows.main") == len(LAYERS) - 1


def test_layers():
    g = graph()
    outside = {m: ts for m, ts in _imports_of(CORE, g).items() if ts}
    assert not outside, f"sentinel/core/ imports nothing outside sentinel/core/: {outside}"
    outside = {m: {t for t in ts if _package(t) != CORE} for m, ts in _imports_of("detectors", g).items()}
    outside = {m: ts for m, ts in outside.items() if ts}
    assert not outside, f"detectors/ imports nothing outside detectors/ but sentinel/core/: {outside}"
    for pkg in ("simulator", "devtools"):
        outside = {m: ts for m, ts in _imports_of(pkg, g).items() if ts}
        assert not outside, f"{pkg}/ stands alone: {outside}"
    wrong = {m: {t for t in ts if _package(t) in ("detectors", "flows")}
             for m, ts in _imports_of("sinks", g).items()}
    assert not any(wrong.values()), f"sinks/ never imports detectors/ or flows/: {wrong}"
    # the runtime reaches the simulator only for `sentinel simulate` and the simulator source
    def users(pkg: str) -> List[str]:
        return sorted(m for m, ts in g.items() if _package(m) != pkg and any(_package(t) == pkg for t in ts))

    assert users("simulator") == ["sentinel.cli", "sources.simulator"]
    assert users("devtools") == [], "devtools/ is for tests and benchmarks only"
