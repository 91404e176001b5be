"""Fixtures for the prep tests only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


def _shard_files(out: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("*/*.tar"))}
    files["manifest.json"] = (out / "manifest.json").read_bytes()
    return files


@pytest.fixture
def shard_files() -> Callable[[Path], dict[str, bytes]]:
    """Every shard's bytes by relative name, plus manifest.json: what "byte-identical output" compares."""
    return _shard_files
