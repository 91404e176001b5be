"""Where the repository is (the check runs from it and imports the project from it)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
