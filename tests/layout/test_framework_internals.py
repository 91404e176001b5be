"""No private attribute of a framework (Lightning, torch, torchmetrics, MLflow, Hydra, ...) outside the two
adapter modules: each one breaks silently on a minor upgrade, so each lives where a test watches it.

A private access is ``obj._name`` or ``from library import _name``. The project's own private names (those
its sources define or assign) are allowed: ``module._merged_shapes`` in a hook of the class that set it is
not a framework's internal."""

from __future__ import annotations

import ast

from tests.helpers.paths import REPO

PACKAGES = ("pipeline", "data_prep", "alexnet_common")
ADAPTERS = {
    REPO / "pipeline" / "training" / "lightning_internals.py",  # tests/train/test_lightning_internals.py
    REPO / "pipeline" / "models" / "torch_internals.py",  # tests/model/test_torch_internals.py
}
SOURCES = sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _own_private_names() -> set[str]:
    """Private names the project itself defines (outside the adapters, whose overrides are torch's names):
    methods, functions, classes and attributes it assigns."""
    names: set[str] = set()
    for path in (path for path in SOURCES if path not in ADAPTERS):
        for node in ast.walk(ast.parse(path.read_text())):
            defined = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            if defined and _private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
                names.add(node.attr)
    return names


def private_accesses(source: str, where: str, own: set[str]) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] in PACKAGES:
                continue
            found += [
                f"{where}:{node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if _private(alias.name)
            ]
    return found


def test_framework_internals_live_only_in_the_adapters() -> None:
    own = _own_private_names()
    found = [
        line
        for path in SOURCES
        if path not in ADAPTERS
        for line in private_accesses(path.read_text(), str(path.relative_to(REPO)), own)
    ]
    assert not found, "move these into an adapter module with its test:\n" + "\n".join(found)


def test_the_check_sees_a_private_access() -> None:
    probe = "from lightning.fabric.utilities.logger import _flatten_dict\nx = trainer._logger_connector\n"
    assert len(private_accesses(probe, "probe.py", _own_private_names())) == 2
    assert private_accesses("self._queue = []\nother._queue\n", "probe.py", {"_queue"}) == []
