"""The packages' floors: import-linter's contracts (pyproject.toml) hold, and no module of ours is
part of an import cycle, whatever package it is in."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp
import pytest
from importlinter.cli import lint_imports

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).parent.parent
PACKAGES = (
    "alipayplus",
    "wallet",
    "activities",
    "workflows",
    "api",
    "workers",
    "devstack",
    "sandbox",
    "hce_device",
    "bench",
)


@pytest.fixture(scope="module", autouse=True)
def project_on_path() -> Iterator[None]:
    """``bench`` is not installed: the analysis reads the project from its root, as ``lint-imports`` does."""
    sys.path.insert(0, str(ROOT))
    yield
    sys.path.remove(str(ROOT))


@pytest.fixture(autouse=True)
def loggers_left_enabled() -> Iterator[None]:
    """import-linter configures logging with ``dictConfig``, which disables every logger that exists
    already; later tests in this process must still see our loggers' records."""
    existing = [logging.getLogger(name) for name in logging.root.manager.loggerDict]
    enabled = [logger for logger in existing if not logger.disabled]
    yield
    for logger in enabled:
        logger.disabled = False


def test_every_import_contract_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(no_cache=True) == 0  # prints the broken contract and the imports that break it


def import_cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    imports = {module: graph.find_modules_directly_imported_by(module) & graph.modules for module in graph.modules}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for imported in imports[module]:
            if imported not in order:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in stack:
                low[module] = min(low[module], order[imported])
        if low[module] == order[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in order:
            visit(module)
    return cycles


def test_no_module_imports_itself_round_a_circle() -> None:
    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=True)
    assert len(graph.modules) > 100  # the whole project was read
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    graph = grimp.ImportGraph()
    for module in ("a", "a.one", "a.two", "a.three"):
        graph.add_module(module)
    graph.add_import(importer="a.one", imported="a.two")
    graph.add_import(importer="a.two", imported="a.one")
    graph.add_import(importer="a.three", imported="a.one")
    assert import_cycles(graph) == [["a.one", "a.two"]]
