"""The shape of the package and the notebooks: imports point one way, each notebook declares what it reads."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import papermill
import pytest

from provlib import paths
from provlib.study.profiles import PROFILES

PACKAGE = paths.PACKAGE_DIR
MAX_LINES = 450
NOTEBOOKS = sorted(paths.NOTEBOOKS_DIR.glob("[0-9]*.ipynb"))


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = list(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(module: str, path: Path, modules: dict) -> list[tuple[str, str]]:
    """``(imported module, name)`` of every import in ``path``, in functions too (name "" for a whole module)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, "") for a in node.names if a.name.startswith("provlib")]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            if source.startswith("provlib"):
                out += [(f"{source}.{a.name}", "") if f"{source}.{a.name}" in modules else (source, a.name)
                        for a in node.names]
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: {target for target, _ in _imports(m, f, modules) if target in modules} for m, f in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = "done"
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_import_graph_finds_a_loop_when_there_is_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_loop_among_provlibs_modules_in_function_imports_included():
    graph = _graph()
    assert "provlib.study.run" in graph["provlib.study.artifacts"]   # the graph sees the package's imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_module_imports_another_modules_private_names():
    modules = _modules()
    private = []
    for m, f in modules.items():
        tree = ast.parse(f.read_text())
        private += [f"{m} imports {src}.{name}" for src, name in _imports(m, f, modules)
                    if name.startswith("_") and src != m]
        aliases = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                   for a in node.names}
        private += [f"{m} reads {node.value.id}.{node.attr}" for node in ast.walk(tree)
                    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")]
    assert not private, private


def test_no_module_is_longer_than_a_newcomer_reads_at_once():
    long = {m: n for m, f in _modules().items() if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_kernels_import_nothing_above_them():
    for m, imported in _graph().items():
        if m.startswith("provlib.kernels"):
            above = {i for i in imported if i.startswith(("provlib.attacks", "provlib.study", "provlib.detector"))}
            assert not above, (m, above)


# ----------------------------------------------------------------------------- notebooks

def _parameters(nb_path: Path) -> dict:
    return papermill.inspect_notebook(str(nb_path))


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebooks_parameters_are_literals_with_the_tiny_profiles_values(nb_path):
    declared = _parameters(nb_path)
    assert {"profile", "seed"} <= set(declared)
    for name, info in declared.items():
        assert name in PROFILES["tiny"], f"{nb_path.name}: {name} is not a profile parameter"
        assert info["help"], f"{nb_path.name}: {name} has no comment saying what it is"
        assert json.loads(info["default"]) == PROFILES["tiny"][name], f"{nb_path.name}: {name}"


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_notebook_hands_every_parameter_it_declares_to_its_run(nb_path):
    cells = nbformat.read(nb_path, as_version=4).cells
    call = next(c.source for c in cells if c.cell_type == "code" and "report.setup(" in c.source)
    tree = ast.parse(call[call.index("report.setup("):].split("\nrun\n")[0].replace("report.setup", "setup", 1))
    setup = next(n for n in ast.walk(tree) if isinstance(n, ast.Call))
    passed = {k.arg for k in setup.keywords}
    assert passed | {"profile"} == set(_parameters(nb_path)), nb_path.name
    assert all(isinstance(k.value, ast.Name) and k.value.id == k.arg for k in setup.keywords), nb_path.name
