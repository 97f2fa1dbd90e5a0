"""The shape of bench/: small modules that say what they are for, no import circles, doors that point one way
(config is a leaf; nothing in bench imports the report at module level; the engine does not import the study
runner or the speed tools)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
MAX_LINES = 400  # STYLE.md: files stay small


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of bench/."""
    out = {}
    for path in sorted(BENCH.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def module_imports(name: str, path: Path) -> set[str]:
    """The bench modules `name` imports at module level (imports inside functions are lazy doors, not edges)."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names}
    known = modules()
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    return {name: module_imports(name, path) for name, path in modules().items()}


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle a depth-first walk meets, as the list of modules around it."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_no_import_circles():
    # a package's __init__ re-exporting its own modules is not a circle through the package
    edges = {a: {b for b in bs if not a.startswith(b + ".")} for a, bs in graph().items()}
    assert find_cycles(edges) == []


def test_the_circle_finder_sees_a_circle():
    """The check itself can fail: modules importing each other in a ring are reported."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_doors_point_one_way():
    g = graph()
    assert not {m for m in g["bench.config"] if m != "bench.errors"}, "config is a leaf"
    for name, deps in g.items():
        assert not any(d == "report" or d.startswith("report.") for d in deps), name
        if name.startswith(("bench.engine", "bench.data")):
            assert not any(d.startswith(("bench.study", "bench.perf", "bench.cli")) for d in deps), (name, deps)
        if name.startswith("bench.data"):
            assert not any(d.startswith("bench.engine") for d in deps), (name, deps)


def test_modules_are_small_and_say_what_they_are_for():
    for name, path in modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name}: {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc.splitlines()[0]) > 10, f"{name} opens without a docstring"
