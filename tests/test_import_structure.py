"""The house shows its shape: imports stand at the top of each module, and no modules import each
other (issue 11, point 7).

Both checks read the source with ``ast``; nothing is imported.

* An import inside a function or method is allowed only for a heavy *optional* dependency
  (:data:`OPTIONAL`, not in pyproject's ``dependencies``), and it carries a comment saying so.
* The graph of module-level imports between dnnlab's modules has no cycle. ``import a.b.c`` is an
  edge to ``a.b.c``; ``from a.b import y`` is an edge to ``a.b.y`` when that is a module, else to
  ``a.b`` (taking a submodule from a package needs the package's ``__init__`` to have started, not
  to have finished, so ``from dnnlab import io`` is an edge to ``dnnlab.io`` only). Imports under
  ``if TYPE_CHECKING:`` count as edges too: they do not run, but a module that needs another's
  types for its own contract depends on it (issue 27: the callbacks once hid a circle with the
  driver there).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dnnlab"

# Heavy optional dependencies (pyproject's optional-dependencies) that may be imported inside the
# function that needs them, so that dnnlab works without them. Matched by dotted prefix.
OPTIONAL = ("onnx", "onnxruntime", "tensorboard", "torch.utils.tensorboard", "nbclient",
            "nbformat", "pyarrow")
OPTIONAL_COMMENT = "optional dependency"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of ``from <node.module> import ...`` written in ``module``."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.Module):
    """Yield (import node, inside a function?) for every import, ``if TYPE_CHECKING:`` ones too."""
    def walk(node: ast.AST, in_function: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            yield from walk(child, in_function or isinstance(
                child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))
    yield from walk(tree, False)


def _parsed() -> dict[str, tuple[ast.Module, list[str]]]:
    out = {}
    for name, path in MODULES.items():
        text = path.read_text(encoding="utf-8")
        out[name] = (ast.parse(text, filename=str(path)), text.splitlines())
    return out


PARSED = _parsed()


def _optional(dotted: str) -> bool:
    return any(dotted == o or dotted.startswith(o + ".") for o in OPTIONAL)


def test_imports_stand_at_the_top():
    bad, uncommented = [], []
    for name, (tree, lines) in PARSED.items():
        for node, in_function in _imports(tree):
            if not in_function:
                continue
            where = f"{MODULES[name].relative_to(SRC.parent)}:{node.lineno}: {ast.unparse(node)}"
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [_absolute(name, node)])
            if not all(_optional(m) for m in modules):
                bad.append(where)
                continue
            nearby = "\n".join(lines[max(0, node.lineno - 3):node.end_lineno])
            if OPTIONAL_COMMENT not in nearby:
                uncommented.append(where)
    assert not bad, ("imports inside functions (move them to the top of the module; only heavy "
                     "optional dependencies may stay, with a comment):\n" + "\n".join(bad))
    assert not uncommented, (f"an optional dependency imported inside a function needs a "
                             f"'# {OPTIONAL_COMMENT}: ...' comment:\n" + "\n".join(uncommented))


def by_name(tree: ast.Module) -> set[str]:
    """The dnnlab modules a module names in its module-level tables, to import them by name
    later (``importlib.import_module``): the command line's COMMANDS, the packages' lazy
    exports (PEP 562 ``__getattr__``). Edges of the graph like any import, so a lazy import can
    close no cycle either."""
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            found |= {c.value for c in ast.walk(node.value)
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)
                      and c.value.startswith("dnnlab.") and c.value in MODULES}
    return found


def import_graph() -> dict[str, set[str]]:
    """dnnlab module -> the dnnlab modules its module-level imports run, and those it names
    for a later import by name (:func:`by_name`)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, (tree, _lines) in PARSED.items():
        graph[name].update(m for m in by_name(tree) if m != name)
        for node, in_function in _imports(tree):
            if in_function:
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name in MODULES]
            else:
                base = _absolute(name, node)
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
                names = [a.name for a in node.names if f"{base}.{a.name}" not in MODULES]
                targets = subs + ([base] if names and base in MODULES else [])
            graph[name].update(t for t in targets if t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}        # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_find_cycle_reports_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_graph_sees_the_edges():
    graph = import_graph()
    typed = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dnnlab.io\n")
    assert [ast.unparse(n) for n, _ in _imports(typed)][-1] == "import dnnlab.io"
    assert "dnnlab.train.driver" not in graph["dnnlab.train.callbacks"]    # a RunView instead
    assert "dnnlab.errors" in graph["dnnlab.cli"]
    assert "dnnlab.io" in graph["dnnlab.studies.explain"]        # from dnnlab import io
    assert "dnnlab" not in graph["dnnlab.studies.explain"]
    # the command line imports its subcommands; they do not import it back
    assert "dnnlab.tune.cli" in graph["dnnlab.cli"]
    assert [m for m, targets in graph.items() if "dnnlab.cli" in targets] == ["dnnlab.__main__"]


def test_no_module_imports_another_that_imports_it_back():
    graph = import_graph()
    mutual = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                     if a in graph.get(b, ())})
    assert not mutual, "modules importing each other: " + ", ".join(f"{a} <-> {b}" for a, b in mutual)


def test_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


# The engine's layers point down (issue 19, point 4): what each lower package may not import.
FORBIDDEN_ABOVE = {
    "dnnlab.config": ("dnnlab.data", "dnnlab.nn", "dnnlab.optim", "dnnlab.train", "dnnlab.doctor",
                      "dnnlab.runs", "dnnlab.studies", "dnnlab.report", "dnnlab.cli"),
    "dnnlab.optim": ("dnnlab.train", "dnnlab.doctor", "dnnlab.runs", "dnnlab.studies",
                     "dnnlab.report", "dnnlab.cli"),
    "dnnlab.train": ("dnnlab.doctor", "dnnlab.runs", "dnnlab.studies", "dnnlab.report",
                     "dnnlab.analysis", "dnnlab.tune", "dnnlab.cli"),
    "dnnlab.doctor": ("dnnlab.runs", "dnnlab.studies", "dnnlab.cli"),
}


def test_layers_point_down():
    graph = import_graph()
    bad = [(m, t) for m, targets in graph.items() for low, above in FORBIDDEN_ABOVE.items()
           if (m == low or m.startswith(low + ".")) and not m.endswith(".cli")
           for t in targets if any(t == a or t.startswith(a + ".") for a in above)]
    assert not bad, f"a lower layer imports a higher one: {bad}"
