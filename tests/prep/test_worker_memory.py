"""Prep's forked workers share the parent's sample references instead of copying them.

Found by ``bench/scale.py`` at ImageNet's count: the parent holds 1.33M references (~0.6 GiB); a garbage
collection in a worker touched every object it inherited and so copied ~0.3 GiB into each worker (~19 GiB for
64 workers on a 64-core node). ``data_prep.execute.start_pool`` freezes the parent's objects out of the
workers' collections: every object a worker inherits is in the permanent generation, which no collection
visits (without the freeze a worker counts 0 there).
"""

from __future__ import annotations

import gc

from data_prep.execute import start_pool
from data_prep.sources import SampleRef

REFERENCES = 200_000


def _objects_no_collection_visits(_: int) -> int:
    return gc.get_freeze_count()


def test_a_collection_in_a_worker_copies_none_of_the_parents_references() -> None:
    refs = [
        SampleRef(f"n0000{i % 1000:04d}_{i}", f"n0000{i % 1000:04d}", f"/src/train/{i}.JPEG", -1, 1, f"{i}")
        for i in range(REFERENCES)
    ]
    pool, _ = start_pool(2)
    with pool:
        frozen = pool.map(_objects_no_collection_visits, range(2), chunksize=1)
    assert len(refs) == REFERENCES  # alive in the parent while the workers run
    assert min(frozen) > REFERENCES, frozen  # the references, and every other object the parent had
    assert gc.get_freeze_count() == 0  # the parent's own collections are as before
