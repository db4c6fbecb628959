"""The package's shape: imports run only down the layers, never in a circle; functions stay short.

Every module's imports are read from its source (AST), including imports inside functions, so a
lazy import cannot hide an upward edge or a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "scoresde"

# Each folder is one layer; a module may import from its own folder and the ones listed.
BELOW: dict[str, set[str]] = {
    "core": set(),
    "nets": set(),
    "viz": set(),
    "data": {"core"},
    "samplers": {"core"},
    "control": {"core", "samplers"},
    "training": {"core", "samplers", "control", "nets", "data", "viz"},
    "interop": {"core", "samplers", "nets", "data", "training"},
    "app": {"core", "samplers", "control", "nets", "data", "training", "interop", "viz"},
}
TOP = {"scoresde", "scoresde.__main__"}  # the public API and `python -m scoresde`
MAX_LINES = 60  # longest function (def to last line, docstring included)
PARSER_BUILDERS = {"build_parser"}  # argparse builders are long lists of options


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _package(name: str, path: Path) -> str:
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _imports(name: str, path: Path) -> set[str]:
    """Modules of the package that ``name`` imports anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = _package(name, path).split(".")
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod; `from mod import name`, mod itself
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    return found - {name}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and name not in TOP else None


def test_every_module_sits_in_a_layer():
    loose = [m for m in MODULES if m not in TOP and _layer(m) not in BELOW]
    assert not loose, f"modules outside the layer folders {sorted(BELOW)}: {loose}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m not in TOP))
def test_imports_run_down_the_layers(name):
    layer = _layer(name)
    allowed = BELOW[layer] | {layer}
    up = sorted(t for t in GRAPH[name] if t in TOP or _layer(t) not in allowed)
    assert not up, f"{name} ({layer}) imports {up}; {layer} may import only {sorted(allowed)}"


def _cycle() -> list[str] | None:
    """One import cycle among the package's modules, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m] - {p for p in TOP}):
            if state.get(t) == 1:
                return stack[stack.index(t) :] + [t]
            if t not in state and (found := visit(t)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycles():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The AST reader resolves relative imports: a core module importing training is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from ..training.config import Config\n")
    got = _imports("scoresde.core.bad", bad)
    assert "scoresde.training.config" in got
    assert _layer("scoresde.training.config") not in BELOW["core"]


def _functions() -> list[tuple[int, str]]:
    rows = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name not in PARSER_BUILDERS:
                    rows.append((node.end_lineno - node.lineno + 1, f"{name}.{node.name}"))
    return sorted(rows, reverse=True)


def test_no_function_is_longer_than_a_screen():
    long = [f"{where} ({n} lines)" for n, where in _functions() if n > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines: {long}"
