"""The package's layers: every module of ``llmkit`` imports only modules of its own layer or
of the layers below it, and no two modules import each other, directly or round a circle.
Imports inside functions and under ``TYPE_CHECKING`` count like any other.

Layers, bottom first (README, "How llmkit is built")::

    core < calls < http < base < providers < registry < wrap < jobs < sync, ray < cli < llmkit

``sync`` and ``ray`` share a floor and do not import each other. The package's ``__init__`` (lazy re-exports) and ``__main__`` sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "llmkit"

FLOORS = {
    "core": 0,
    "calls": 1,
    "http": 2,
    "base": 3,
    "providers": 4,
    "registry": 5,
    "wrap": 6,
    "jobs": 7,
    "sync": 8,
    "ray": 8,
    "cli": 9,
    "": 10,  # llmkit/__init__.py
    "__main__": 10,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def layer(module: str) -> str:
    """The top-level name under ``llmkit`` a module belongs to ('' for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports(module: str) -> set[str]:
    """The llmkit modules ``module`` imports, anywhere in its text. ``from pkg import sub``
    counts as importing ``pkg.sub``; a module's own ancestor packages are not counted (Python
    initialises them first, whatever the module does)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own_package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = own_package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            subs = [f"{prefix}.{alias.name}" for alias in node.names]
            names = [s for s in subs if s in MODULES]
            if len(names) < len(subs):
                names.append(prefix)
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name.startswith("llmkit") and name != module and name not in ancestors:
                found.add(name)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_every_top_level_module_has_a_floor():
    assert {layer(m) for m in MODULES} <= FLOORS.keys(), sorted(
        {layer(m) for m in MODULES} - FLOORS.keys()
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    here = FLOORS[layer(module)]
    upward = []
    for target in sorted(GRAPH[module]):
        there = FLOORS[layer(target)]
        same_floor_elsewhere = there == here and layer(target) != layer(module)
        if there > here or same_floor_elsewhere:
            upward.append(f"{module} imports {target} ({layer(target) or 'llmkit'} is above {layer(module) or 'llmkit'})")
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    state: dict[str, int] = {}
    stack: list[str] = []
    circles: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                circles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_the_check_sees_a_violation(tmp_path):
    """The parser finds imports inside functions and under TYPE_CHECKING."""
    assert "llmkit.base" not in GRAPH["llmkit.calls.guard"]
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from llmkit.base import BaseLLM\n"
        "def f():\n    from llmkit.registry import create_llm\n"
    )
    module = "llmkit.core.probe"
    path = tmp_path / "probe.py"
    path.write_text(source)
    MODULES[module] = path
    try:
        assert imports(module) == {"llmkit.base", "llmkit.registry"}
    finally:
        del MODULES[module]
