"""The import rules of the code base, checked from its own imports (every ``import``, also inside functions).

* No import circles, between files or between parts (a part: ``cli``, a package of ``synbt_factory`` such as
  ``synbt_factory.models``, or a top-level module such as ``synbt_factory.io``).
* Imports run one way: ``cli`` → ``synbt_factory``; the library never imports ``cli`` or ``bench``.
* The library and the CLI never select a matplotlib backend nor use pyplot.
* ``synbt_factory.models`` imports nothing from ``training``, ``store``, ``data``, ``generate``, ``experiments``,
  ``evaluate`` or ``cli``.

``python tests/test_import_layers.py [ROOT]`` prints the parts in layers (a part stands above every part it
imports), their import counts, and any circle: the same figures the tests check, for any checkout.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("synbt_factory", "cli")
MODELS_MAY_NOT_IMPORT = ("training", "store", "data", "generate", "experiments", "evaluate")


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` file of the library and the CLI."""
    out = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the modules of this code base it imports (``from a import b`` counts ``a.b`` when it is one)."""
    files = module_files(root)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def part_of(module: str) -> str:
    """``cli``, ``synbt_factory.<package>`` or ``synbt_factory.<module>``."""
    parts = module.split(".")
    return parts[0] if parts[0] == "cli" else ".".join(parts[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, dict[str, int]]:
    """Part → part → number of module imports between them (within a part not counted)."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for module, targets in graph.items():
        out[part_of(module)]  # every part appears
        for target in targets:
            if part_of(target) != part_of(module):
                out[part_of(module)][part_of(target)] += 1
    return {k: dict(v) for k, v in out.items()}


def circles(graph: dict[str, set[str]] | dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layers(parts: dict[str, dict[str, int]]) -> dict[str, int]:
    """Each part's layer: 1 + the highest layer it imports (1: imports no other part); needs no circles."""
    memo: dict[str, int] = {}

    def layer(part: str) -> int:
        if part not in memo:
            memo[part] = 1 + max((layer(t) for t in parts.get(part, {})), default=0)
        return memo[part]

    return {part: layer(part) for part in parts}


def test_no_import_circles_between_files() -> None:
    assert circles(import_graph(ROOT)) == []


def test_no_import_circles_between_parts() -> None:
    assert circles(part_graph(import_graph(ROOT))) == []


def test_the_library_never_imports_the_cli() -> None:
    graph = import_graph(ROOT)
    upward = sorted(
        f"{m} -> {t}" for m, ts in graph.items() if m.startswith("synbt_factory") for t in ts if t.startswith("cli")
    )
    assert upward == []


def test_models_import_nothing_from_training_store_data_or_the_cli() -> None:
    graph = import_graph(ROOT)
    banned = tuple(f"synbt_factory.{p}" for p in MODELS_MAY_NOT_IMPORT) + ("cli",)
    wrong = sorted(
        f"{m} -> {t}"
        for m, ts in graph.items()
        if m.startswith("synbt_factory.models")
        for t in ts
        if any(t == b or t.startswith(b + ".") for b in banned)
    )
    assert wrong == []


def test_the_library_never_selects_a_matplotlib_backend() -> None:
    """Figures are ``matplotlib.figure.Figure`` objects: no ``matplotlib.use``, no pyplot global state."""
    found = []
    for name, path in module_files(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "use" and getattr(node.value, "id", "") == "matplotlib":
                found.append(f"{name}: matplotlib.use")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                names += [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) else []
                found += [f"{name}: imports {n}" for n in names if n == "matplotlib.pyplot"]
    assert found == []


def test_the_graph_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "synbt_factory"
    (pkg / "models").mkdir(parents=True)
    (tmp_path / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models" / "__init__.py").write_text("")
    (pkg / "models" / "net.py").write_text("def f():\n    from synbt_factory.training import loop\n")
    (pkg / "training").mkdir()
    (pkg / "training" / "__init__.py").write_text("")
    (pkg / "training" / "loop.py").write_text("from ..models import net\n")
    (tmp_path / "cli" / "__init__.py").write_text("")
    graph = import_graph(tmp_path)
    # ``from a import b`` runs a's __init__ too
    assert graph["synbt_factory.models.net"] == {"synbt_factory.training", "synbt_factory.training.loop"}
    assert graph["synbt_factory.training.loop"] == {"synbt_factory.models", "synbt_factory.models.net"}
    assert circles(graph) == [["synbt_factory.models.net", "synbt_factory.training.loop"]]


def main(root: Path) -> None:
    graph = import_graph(root)
    parts = part_graph(graph)
    file_circles, part_circles = circles(graph), circles(parts)
    print(f"{len(graph)} files, {len(parts)} parts, {sum(len(v) for v in parts.values())} part-to-part arrows")
    print(f"file circles: {len(file_circles)}", *(" <-> ".join(c) for c in file_circles), sep="\n  ")
    print(f"part circles: {len(part_circles)}", *(" <-> ".join(c) for c in part_circles), sep="\n  ")
    if part_circles:
        return
    by_layer: dict[int, list[str]] = defaultdict(list)
    for part, level in layers(parts).items():
        by_layer[level].append(part)
    for level in sorted(by_layer, reverse=True):
        print(f"layer {level:2d}: " + ", ".join(sorted(by_layer[level])))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT)
