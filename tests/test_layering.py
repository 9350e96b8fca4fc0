"""The house plan of ``emo_ray/``: no module imports from a higher layer, and the module import
graph has no circle (issue 24: "0 imports running up, 0 circles").

The graph is read with ``ast`` from the source, so every import counts, also the ones inside a
function (a lazy import still ties the two modules together: the circle ``evaluation/config <->
icl/tasks`` ran through one). ``from a.b import c`` is an edge to ``a.b`` and, when ``c`` is a
module, to ``a.b.c``.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "emo_ray"

LAYERS: list[set[str]] = [
    # The losses are pure tensor maths importing nothing of the project, so they sit below the
    # config, which checks loss hyper-parameters at load (losses.check_hparams).
    {"losses"},
    # The foundation, imported by everything. console / tracking / ray_runtime / placement /
    # stats are not named in the plan; they import only this layer, so they belong to it.
    {"emo_ray", "typed_config", "config", "precision", "storage", "stats", "tracking", "console", "placement",
     "ray_runtime", "ray_reaper", "preflight", "bounds", "plugins"},
    {"models", "perf"},  # perf reads the model cache folder
    {"data"},
    {"inference"},  # the executor, sampler and decoders that evaluation and the oracle corpus share
    {"train"},
    {"evaluation"},
    {"sweep"},
    {"report"},
    {"cli"},
]
"""Lowest first: a module may import its own layer and the ones before it (issue 24:
losses < typed_config/config/precision/storage < models < data < inference < train < evaluation
< sweep < report < cli). Its layer is that of its top-level module or subpackage."""

# Known debts of issue 24, to be emptied by its other changes; the tests fail on anything new.
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLES: list[set[str]] = []


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """``emo_ray.evaluation.config`` -> its file (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imported(module: str, path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level:  # relative: resolved against the importing module's package
        base = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the ``emo_ray`` modules it imports anywhere in its source."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = _imported(module, path, node)
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            graph[module] |= {n for n in names if n in files and n != module}
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else parts[0]
    for rank, members in enumerate(LAYERS):
        if key in members:
            return rank
    raise AssertionError(f"{module} has no layer: add {key!r} to one of LAYERS in {Path(__file__).name}")


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.add(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files())


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a)}


def test_no_module_imports_from_a_higher_layer(graph):
    new = sorted(upward_imports(graph) - KNOWN_UPWARD)
    assert not new, "imports running up a layer (importer -> imported, see LAYERS):\n" + "\n".join(
        f"  {a} (layer {layer_of(a)}) -> {b} (layer {layer_of(b)})" for a, b in new)


def test_the_import_graph_has_no_new_circle(graph):
    new = [c for c in cycles(graph) if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, "import circles:\n" + "\n".join(f"  {sorted(c)}" for c in new)


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path):
    """The parser on a toy package: a lazy import from a higher layer and a two-module circle
    (through a relative import) are both found, so a clean result above means something."""
    pkg = tmp_path / "emo_ray"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("from . import b\n\ndef f():\n    from emo_ray.evaluation import run\n")
    (pkg / "data" / "b.py").write_text("import emo_ray.data.a\n")
    (pkg / "evaluation").mkdir()
    (pkg / "evaluation" / "__init__.py").write_text("")
    (pkg / "evaluation" / "run.py").write_text("import json\n")
    toy = import_graph(module_files(pkg))
    assert upward_imports(toy) == {("emo_ray.data.a", "emo_ray.evaluation"), ("emo_ray.data.a", "emo_ray.evaluation.run")}
    assert cycles(toy) == [{"emo_ray.data.a", "emo_ray.data.b"}]
