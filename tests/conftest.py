"""Shared session fixtures: the demo source tree, its shards, and a small fake ImageNet.

Building the demo (1,797 images) and sharding it takes tens of seconds on a busy 2-core machine, so both are
kept in pytest's cache folder under a key that hashes the data_prep sources: a change to data_prep rebuilds
them, and every session re-verifies the cached shards against their manifest (sha256) before handing them
out, so a test that damaged them cannot poison the next session. A file lock makes the xdist workers take
turns: one builds, the other reuses.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from data_prep.demo import DEMO_SHARD_SAMPLES, build_demo_source
from data_prep.fake import make_fake_imagenet
from data_prep.manifest import load_manifest
from data_prep.prep import run_prep
from data_prep.verify import verify_shards
from tests.helpers.paths import REPO

pytest_plugins = ["tests.helpers.fixtures"]  # one thread per process, the session's sqlite store


def _data_prep_hash() -> str:
    digest = hashlib.sha256()
    for path in [*sorted((REPO / "data_prep").glob("*.py")), Path(__file__)]:
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def _build_demo(folder: Path) -> None:
    build_demo_source(folder / "source")
    run_prep(
        folder / "source", folder / "shards", workers=2, shard_samples=DEMO_SHARD_SAMPLES, progress=False
    )


def _demo_is_sound(folder: Path) -> bool:
    try:
        return not verify_shards(load_manifest(folder / "shards"))
    except (OSError, ValueError):
        return False


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``make test``'s scheduling (tests.helpers.scheduling): a file, or a group of files sharing a costly
    fixture, is one unit of work."""
    from tests.helpers.scheduling import SharedFixtureScheduling

    return SharedFixtureScheduling(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The units that take minutes first, longest first (tests.helpers.scheduling); otherwise as collected."""
    from tests.helpers.scheduling import start_order

    items.sort(key=lambda item: start_order(item.nodeid))  # stable: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def _one_thread_per_xdist_worker(request: pytest.FixtureRequest) -> None:
    """Under pytest-xdist (``make test``: two workers on the two cores) every worker trains with one thread;
    two threads each would oversubscribe the cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        request.getfixturevalue("one_thread_per_test_process")


@pytest.fixture(scope="session")
def demo_root(pytestconfig: pytest.Config) -> Path:
    """A folder with ``source/`` (the demo tree) and ``shards/`` (its prep output), cached per data_prep."""
    cache = Path(pytestconfig.cache.mkdir("alexnet-demo"))
    folder = cache / f"demo-{_data_prep_hash()}"
    # one builder at a time: the other xdist worker (or a second session) waits and reuses the folder
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir() and _demo_is_sound(folder):
            return folder
        building = cache / f".building-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        _build_demo(building)
        shutil.rmtree(folder, ignore_errors=True)
        building.rename(folder)
        for stale in cache.glob("demo-*"):
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
    return folder


@pytest.fixture(scope="session")
def demo_source(demo_root: Path) -> Path:
    """The demo ImageNet-layout tree (train/<wnid>/, val/<wnid>/, LOC_synset_mapping.txt); do not modify."""
    return demo_root / "source"


@pytest.fixture(scope="session")
def demo_shards(demo_root: Path) -> Path:
    """A prep output of the demo, as ``python -m data_prep.demo`` makes it: manifest.json, train/ (15 shards),
    val/ (4 shards), resize=paper (256x256 JPEGs), 10 classes. Do not modify it:
    copy it (shutil.copytree) when a test needs to change shards."""
    return demo_root / "shards"


@pytest.fixture(scope="session")
def fake_imagenet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small folder-layout fake ImageNet: 4 classes x 6 train + 3 val images of 160x120, no bad files."""
    return make_fake_imagenet(
        tmp_path_factory.mktemp("fake_imagenet"),
        classes=4,
        train_per_class=6,
        val_per_class=3,
        image_size=(160, 120),
    )
