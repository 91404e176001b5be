"""bench/scale.py at a small count (``--images 20000 --classes 100``, the command docs/benchmarks.md gives for
a quick rehearsal): the properties that must hold at ImageNet's count hold here.

The figures (seconds, RSS) are measured, never asserted; what is asserted is what a full-count run relies on:
every sample exactly once (one rank's epoch, and the span tables of 1 to 512 ranks x 8 workers), equal steps
on every rank, a 90% resume landing on its position, and every tracked run counted by pipeline.compare.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.paths import REPO

IMAGES, CLASSES, RUNS = 20_000, 100, 16  # RUNS: scale.py's default at this count


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("scale")
    command = [
        sys.executable, str(REPO / "bench" / "scale.py"), "--images", str(IMAGES), "--classes", str(CLASSES),
        "--runs", str(RUNS), "--workers", "2", "--work", str(work), "--json", str(work / "scale.json"),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return json.loads((work / "scale.json").read_text())["counts"][0]


@pytest.mark.slow
def test_prep_and_loader_see_every_image_exactly_once(record: dict) -> None:
    val = record["tree"]["val"]
    assert record["prep"]["images"] == IMAGES + val
    assert record["prep"]["rejected"] == 0
    assert record["verify"]["problems"] == 0
    loader = record["loader"]
    assert (loader["read"], loader["distinct"], loader["expected"]) == (IMAGES, IMAGES, IMAGES)
    assert loader["classes_seen"] == CLASSES


@pytest.mark.slow
def test_span_tables_exactly_once_with_equal_steps(record: dict) -> None:
    assert sorted(record["spans"], key=int) == ["1", "8", "64", "512"]
    for ranks, table in record["spans"].items():
        assert table["overlaps"] == 0, ranks
        assert table["covered"] == table["steps"] * table["batch"] * int(ranks), ranks
        assert 0 <= table["dropped"] < int(ranks) * table["batch"], ranks
        assert table["equal_steps"] and table["steps"] >= 1 and table["got_first"], ranks


@pytest.mark.slow
def test_resume_and_every_run_counted(record: dict) -> None:
    resume = record["resume"]
    assert resume["ranks"] == 64 and resume["at_position"]
    assert resume["delivered"] == resume["steps"] * 9 // 10
    tracking = record["tracking"]
    assert (tracking["runs"], tracking["counted"], tracking["usable"]) == (RUNS, RUNS, RUNS)
    assert tracking["groups"] == 4
    assert all(record["checks"].values())
