"""Imports only point down, and no module imports itself back: drawn from the source with ``ast``.

Every ``import`` counts, at the top of a file or inside a function (a lazy import is still a
dependency); imports under ``if TYPE_CHECKING:`` count too. The rules:

* ``LAYERS``, highest first: a module may import its own group and any layer below it, never a layer
  above. Groups written in one layer are siblings and may not import one another.
* No cycles between modules (a package's ``__init__`` counts as a module of its own).
* Heavy third-party packages stay where they belong (``THIRD_PARTY``): Lightning in the engine, torch
  nowhere in the data layer but the torch dataset and the GAN generator.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Highest first. Each layer is a tuple of sibling groups; a group is a tuple of module prefixes.
LAYERS: list[tuple[tuple[str, ...], ...]] = [
    (("ecgmae", "ecgmae.__main__", "ecgmae.cli"),),  # the package's lazy facade and the command line
    (("ecgmae.demo", "ecgmae.benchmark", "ecgmae.jobs"),),  # recipes that run the engine end to end
    (("ecgmae.export",), ("ecgmae.viz",), ("ecgmae.serve",)),  # users of a loaded model
    (("ecgmae.api", "ecgmae.reconstruction"), ("ecgmae.engine",)),  # the Python face | training
    # run files: typed header, read, check, rebuild; the shipped weights found by name; inference over windows
    (("ecgmae.checkpoint", "ecgmae.guards", "ecgmae.header", "ecgmae.inference", "ecgmae.pretrained"),),
    (("ecgmae.eval",),),  # metrics, probes, pooling of window outputs
    (("ecgmae.models",), ("ecgmae.data",)),  # pure torch models | reading and preparing ECGs
    # the ground floor
    (("ecgmae.config", "ecgmae.errors", "ecgmae.outputs", "ecgmae.streamed", "ecgmae.utils", "ecgmae._version"),),
]


# package -> the only module prefixes that may import it (besides those, nobody).
THIRD_PARTY: dict[str, tuple[str, ...]] = {
    "lightning": ("ecgmae.engine",),  # the engine only: the ground floor (utils) imports no Lightning
    "starlette": ("ecgmae.serve",),  # the web stack of the serve extra, nowhere else
    "uvicorn": ("ecgmae.serve",),
    "torch": (
        "ecgmae.api",
        "ecgmae.reconstruction",
        "ecgmae.engine",
        "ecgmae.checkpoint",
        "ecgmae.guards",
        "ecgmae.inference",
        "ecgmae.export",
        "ecgmae.models",
        "ecgmae.data.dataset",
        "ecgmae.data.sources.deepfake",
        "ecgmae.cli",
        "ecgmae.benchmark",
        "ecgmae.demo",
    ),
}


def modules(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``src/ecgmae``."""
    out = {}
    for path in sorted((src / "ecgmae").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_edges(mods: dict[str, Path]) -> set[tuple[str, str]]:
    """``(importer, imported)`` pairs between modules of the package, every import statement counted."""
    edges = set()
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target not in mods and "." in target:  # `from pkg.mod import name`: the module
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name:
                    edges.add((name, target))
    return edges


def third_party(mods: dict[str, Path]) -> set[tuple[str, str]]:
    """``(module, top-level package)`` for every import of a package outside ecgmae."""
    out = set()
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out |= {(name, a.name.split(".")[0]) for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                out.add((name, node.module.split(".")[0]))
    return out


def misplaced(imports: set[tuple[str, str]]) -> list[str]:
    """One line per import of a ``THIRD_PARTY`` package from a module not allowed to import it."""
    return [
        f"{m} imports {pkg}"
        for m, pkg in sorted(imports)
        if pkg in THIRD_PARTY and not any(m == a or m.startswith(a + ".") for a in THIRD_PARTY[pkg])
    ]


def place(module: str) -> tuple[int, int]:
    """``(layer, group)`` of a module: the longest matching prefix wins."""
    best, where = -1, None
    for li, layer in enumerate(LAYERS):
        for gi, group in enumerate(layer):
            for prefix in group:
                if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                    best, where = len(prefix), (li, gi)
    if where is None:
        raise AssertionError(f"{module}: in no layer; add it to LAYERS in {Path(__file__).name}")
    return where


def violations(edges: set[tuple[str, str]]) -> list[str]:
    """One line per import that points up or sideways between sibling groups."""
    bad = []
    for a, b in sorted(edges):
        (la, ga), (lb, gb) = place(a), place(b)
        if lb < la:
            bad.append(f"{a} imports {b}: upward (layer {la} -> {lb})")
        elif la == lb and ga != gb:
            bad.append(f"{a} imports {b}: between siblings of layer {la}")
    return bad


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    graph: dict[str, list[str]] = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def edges() -> set[tuple[str, str]]:
    return import_edges(modules())


def test_every_module_has_a_layer() -> None:
    for name in modules():
        place(name)


def test_imports_only_point_down(edges) -> None:
    assert violations(edges) == []


def test_no_import_cycles(edges) -> None:
    assert cycles(edges) == []


def test_heavy_packages_stay_in_their_layers() -> None:
    found = third_party(modules())
    assert ("ecgmae.engine.trainer", "lightning") in found and ("ecgmae.data.dataset", "torch") in found
    assert misplaced(found) == []
    assert misplaced(found | {("ecgmae.data.signal", "torch"), ("ecgmae.models.mae", "lightning")}) == [
        "ecgmae.data.signal imports torch",
        "ecgmae.models.mae imports lightning",
    ]


def test_the_checks_catch_an_upward_import_and_a_cycle(edges) -> None:
    assert ("ecgmae.inference", "ecgmae.data.windows") in edges  # the walk sees real imports
    assert ("ecgmae.data.dataset", "ecgmae.data.windows") in edges
    up = edges | {("ecgmae.data.windows", "ecgmae.engine.predict")}
    assert violations(up) == ["ecgmae.data.windows imports ecgmae.engine.predict: upward (layer 6 -> 3)"]
    assert violations(edges | {("ecgmae.models.mae", "ecgmae.data.windows")}) == [
        "ecgmae.models.mae imports ecgmae.data.windows: between siblings of layer 6"
    ]
    loop = edges | {("ecgmae.data.windows", "ecgmae.data.dataset")}
    assert ["ecgmae.data.dataset", "ecgmae.data.windows"] in cycles(loop)


def test_the_walk_reads_lazy_relative_and_type_checking_imports(tmp_path) -> None:
    pkg = tmp_path / "ecgmae"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "engine.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from ecgmae.engine import x\n")
    (pkg / "data" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (pkg / "data" / "c.py").write_text("from .b import y\nimport ecgmae.data.a\n")
    found = import_edges(modules(tmp_path))
    assert {
        ("ecgmae.data.a", "ecgmae.engine"),
        ("ecgmae.data.b", "ecgmae.data.a"),
        ("ecgmae.data.c", "ecgmae.data.b"),
        ("ecgmae.data.c", "ecgmae.data.a"),
    } <= found
    assert violations(found) == ["ecgmae.data.a imports ecgmae.engine: upward (layer 6 -> 3)"]
