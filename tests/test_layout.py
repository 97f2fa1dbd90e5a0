"""The shape of bench/ and report/: small modules that say what they are for, no import circles, doors that point
one way (config is a leaf; bench imports the report only in bench/cli.py's report commands; the report never
imports the engine; the engine does not import the study runner or the speed tools; the top doors, bench/cli.py and
the Python API bench/api.py, are imported by nothing below them: bench/__init__.py re-exports the API lazily,
bench/__main__.py runs the CLI, and the API uses the CLI's parser so that both take the same options).

Every import statement counts, the ones inside functions too: a lazy import that closes a circle is the same
dependency, hidden."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "report")
MAX_LINES = 400  # STYLE.md: files stay small
# bench/cli.py may import the report, and only inside these functions (the commands that build or export it)
CLI_REPORT_DOORS = {"cmd_report", "cmd_export", "export_study"}
# the top doors, above every room: the `bench` command and the Python API; each is imported only by these
TOP_DOORS = {"bench.cli": {"bench.__main__", "bench.api"}, "bench.api": {"bench"}}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of bench/ and report/."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def imports_in(name: str, path: Path) -> list[tuple[str, str]]:
    """(imported module, enclosing top-level function or "") for every import statement anywhere in the file,
    relative imports resolved; `from a import b` counts a.b when b is a module, else a."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = modules()
    found: list[tuple[str, str]] = []

    def walk(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = where or (child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else "")
            if isinstance(child, ast.Import):
                found.extend((a.name, where) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for a in child.names:
                    found.append((f"{target}.{a.name}" if f"{target}.{a.name}" in known else target, where))
            walk(child, inner)

    walk(tree, "")
    return [(m, where) for m, where in found if m in known and m != name]


def graph() -> dict[str, set[str]]:
    return {name: {m for m, _ in imports_in(name, path)} for name, path in modules().items()}


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
    cycles = find_cycles(edges)
    assert cycles == [], "import circles (imports inside functions count):\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_circle_finder_sees_a_circle():
    """The check itself can fail: modules importing each other in a ring are reported."""
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_the_import_reader_sees_imports_inside_functions(tmp_path):
    """The reader counts an import inside a function, and resolves a relative one."""
    fake = tmp_path / "config.py"
    fake.write_text("from . import errors\n\ndef f():\n    from .engine import rules\n    import report.stats\n")
    found = set(imports_in("bench.config", fake))
    assert found == {("bench.errors", ""), ("bench.engine.rules", "f"), ("report.stats", "f")}


def test_doors_point_one_way():
    g = graph()
    wrong = []
    if {m for m in g["bench.config"] if m != "bench.errors"}:
        wrong.append(f"config is a leaf, but imports {sorted(g['bench.config'])}")
    for name, path in modules().items():
        for dep, where in imports_in(name, path):
            if name.startswith("bench") and dep.startswith("report"):
                if not (name == "bench.cli" and where in CLI_REPORT_DOORS):
                    wrong.append(f"{name} ({where or 'module level'}) imports the report ({dep})")
            if name.startswith("report") and dep.startswith(("bench.engine", "bench.data", "bench.perf", "bench.cli")):
                wrong.append(f"{name} imports the engine side of bench ({dep})")
            if name.startswith(("bench.engine", "bench.data")) and dep.startswith(("bench.study", "bench.perf", "bench.cli")):
                wrong.append(f"{name} imports {dep}")
            if name.startswith("bench.data") and dep.startswith("bench.engine"):
                wrong.append(f"{name} imports {dep}")
            if dep in TOP_DOORS and name not in TOP_DOORS[dep]:
                wrong.append(f"{name} imports {dep}, a top door (only {', '.join(sorted(TOP_DOORS[dep]))} may)")
    assert not wrong, "doors pointing the wrong way:\n" + "\n".join(wrong)


def test_the_report_reaches_no_engine_when_imported():
    """What importing the report loads, through module-level imports of every module it reaches: never the engine,
    the data, perf or the CLI (those load torch); bench/study/files.py asks the engine only inside the functions
    that check configs, which the report never calls (load_study(check=False))."""
    at_import = {n: {m for m, where in imports_in(n, p) if not where} for n, p in modules().items()}
    reached, todo = set(), [n for n in at_import if n.startswith("report")]
    while todo:
        name = todo.pop()
        if name not in reached:
            reached.add(name)
            todo.extend(at_import.get(name, ()))
    bad = sorted(m for m in reached if m.startswith(("bench.engine", "bench.data", "bench.perf", "bench.cli")))
    assert not bad, f"importing the report loads {bad}"


def test_modules_are_small_and_say_what_they_are_for():
    for name, path in modules().items():
        text = path.read_text()
        assert len(text.splitlines()) <= MAX_LINES, f"{name}: {len(text.splitlines())} lines"
        doc = ast.get_docstring(ast.parse(text))
        assert doc and len(doc.splitlines()[0]) > 10, f"{name} opens without a docstring"
