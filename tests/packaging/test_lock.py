"""requirements.lock against pyproject.toml: a dependency changed without `make lock` fails here (no network:
the lock records a digest of the dependency specification it was compiled from)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.helpers.paths import REPO, SCRIPTS

LOCK_SCRIPT = SCRIPTS / "lock.py"


def _check(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(root / "scripts" / "lock.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_lock_is_up_to_date_with_pyproject() -> None:
    done = _check(REPO)
    assert done.returncode == 0, done.stderr


def test_a_changed_dependency_makes_the_lock_stale(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(LOCK_SCRIPT, tmp_path / "scripts" / "lock.py")
    assert _check(tmp_path).returncode == 0
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"rich>=13",', '"rich>=13",\n    "datasets>=3",'))
    done = _check(tmp_path)
    assert done.returncode == 1
    assert "requirements.lock is stale" in done.stderr and "make lock" in done.stderr


def test_the_lock_pins_every_dependency_with_hashes_and_admits_the_ranges() -> None:
    """Exact, hashed pins; the package's own ranges admit them (torch included: never force-replaced)."""
    pins: dict[str, str] = {}
    lines = (REPO / "requirements.lock").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            [spec] = requirement.specifier
            assert spec.operator == "==", line
            assert lines[index + 1].strip().startswith("--hash=sha256:"), f"{line}: no hash"
            pins[requirement.name.lower().replace("_", "-")] = spec.version
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        requirement = Requirement(text)
        assert not any(spec.operator == "==" for spec in requirement.specifier), f"{text}: a range, not a pin"
        name = requirement.name.lower().replace("_", "-")
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} vs {text}"
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
