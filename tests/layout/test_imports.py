"""The wings' import rules (docs/design.md, "What may import what"), checked on the source: a change that
couples two wings fails here, not in a reviewer's head."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

PROJECT_PACKAGES = ("pipeline", "data_prep", "alexnet_common")

# module prefix -> the project modules it may import (prefix match); anything outside the project is free,
# except where THIRD_PARTY limits it. The commands (COMMANDS) may import anything and nothing imports them.
ALLOWED: dict[str, tuple[str, ...]] = {
    "alexnet_common": ("alexnet_common",),
    "data_prep": ("data_prep", "alexnet_common"),
    "pipeline.models": ("pipeline.models",),
    "pipeline.data": ("pipeline.data", "data_prep.manifest", "alexnet_common"),
    "pipeline.checkpoints": ("pipeline.checkpoints",),
    "pipeline.tracking.keys": (),
    "pipeline.tracking": (
        "pipeline.tracking",
        "pipeline.checkpoints",
        "data_prep.manifest",
        "alexnet_common",
    ),
    "pipeline.report": ("pipeline.report", "pipeline.tracking.keys", "alexnet_common"),
    "pipeline.training": (
        "pipeline.training",
        "pipeline.models",
        "pipeline.data",
        "pipeline.checkpoints",
        "pipeline.tracking",
        "pipeline.serving",
        "alexnet_common",
    ),
    # the logged model's code: what a fresh process imports to load it (the net, the data's resize)
    "pipeline.serving": ("pipeline.serving", "pipeline.models", "pipeline.data.transforms"),
}
COMMANDS = ("pipeline.train", "pipeline.evaluate", "pipeline.compare")
PACKAGE_ROOTS = ("pipeline", "data_prep", "alexnet_common")  # their __init__ modules hold no code to police
# The nets run on bare-torch GPU machines: torch and the standard library only. The shared tools: stdlib only.
THIRD_PARTY = {"pipeline.models": ("torch",), "alexnet_common": ()}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # "from pipeline.tracking import keys" imports pipeline.tracking.keys (or a name in the package)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _rule(module: str) -> str | None:
    matches = [prefix for prefix in ALLOWED if module == prefix or module.startswith(prefix + ".")]
    return max(matches, key=len) if matches else None


SOURCES = sorted(
    path
    for package in PROJECT_PACKAGES
    for path in (REPO / package).rglob("*.py")
    if _module_name(path) not in COMMANDS + PACKAGE_ROOTS
)


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(REPO)))
def test_each_module_imports_only_what_its_wing_may(path: Path) -> None:
    module = _module_name(path)
    rule = _rule(module)
    assert rule is not None, f"{module} is in no wing: give it a rule here and in docs/design.md"
    free = set(sys.stdlib_module_names) | {"__future__", *THIRD_PARTY.get(rule, ())}
    breaches = []
    for name in _imports(path):
        top = name.split(".")[0]
        if top in PROJECT_PACKAGES:
            if not any(name == allowed or name.startswith(allowed + ".") for allowed in ALLOWED[rule]):
                breaches.append(name)
        elif rule in THIRD_PARTY and top not in free:
            breaches.append(name)
    assert not breaches, f"{module} may not import {sorted(breaches)} (rule {rule!r}, docs/design.md)"


def test_the_rules_catch_a_breach(tmp_path: Path) -> None:
    """The checker itself: a report module importing the trainer is a breach."""
    fake = tmp_path / "bad.py"
    fake.write_text("from pipeline.train import train\nimport torch\n")
    assert _imports(fake) == {"pipeline.train.train", "torch"}
    assert _rule("pipeline.report.table") == "pipeline.report"
    assert not any("pipeline.train".startswith(allowed) for allowed in ALLOWED["pipeline.report"])


def test_the_pipeline_root_holds_the_commands_only() -> None:
    """``ls pipeline/*.py``: the package marker and the three commands; every part lives in a wing."""
    root_modules = sorted(path.name for path in (REPO / "pipeline").glob("*.py"))
    assert root_modules == sorted(["__init__.py", *(f"{name.split('.')[1]}.py" for name in COMMANDS)])


def test_no_part_imports_a_command() -> None:
    offenders = [
        f"{_module_name(path)} imports {name}"
        for path in SOURCES
        for name in _imports(path)
        if any(name == command or name.startswith(command + ".") for command in COMMANDS)
    ]
    assert not offenders


def test_no_part_imports_the_benchmarks_or_the_tests() -> None:
    """bench/ and tests/ use the parts (and the commands); nothing the product ships may lean on them."""
    offenders = [
        f"{_module_name(path)} imports {name}"
        for path in SOURCES
        for name in _imports(path)
        if name.split(".")[0] in ("bench", "tests")
    ]
    assert not offenders
