"""Turning shard plans into shards: in this process (workers=1) or in a pool of forked workers, with a
progress bar.

Workers get one planned shard at a time and report images done through a shared counter, so the bar moves per
image, not per shard. A shard already finished by an earlier run (verified by its sidecar) is kept, not
redone.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import multiprocessing.pool
import signal
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from data_prep.images import resize_backend
from data_prep.report import make_progress
from data_prep.shards import ShardResult, ShardTask, load_finished, write_shard

SPLITS = ("train", "val")

_progress_counter = None


def _init_worker(counter) -> None:
    global _progress_counter
    _progress_counter = counter
    resize_backend()[0].set_num_threads(1)  # one image at a time per process: the pool is the parallelism
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    if sys.platform.startswith("linux"):
        # die with the parent: a SIGKILLed prep must not leave workers writing shards behind the rerun
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _run_task(task: ShardTask) -> ShardResult:
    slot = SPLITS.index(task.split)

    def count_sample() -> None:
        with _progress_counter.get_lock():
            _progress_counter[slot] += 1

    return load_finished(task) or write_shard(task, on_sample=count_sample)


def _run_in_process(tasks: Iterator[ShardTask], progress, bars: dict[str, int]) -> Iterator[ShardResult]:
    torch = resize_backend()[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # workers=1 means one core, as in the pool; the caller's setting is restored
    try:
        for task in tasks:
            result = load_finished(task)
            if result is None:
                result = write_shard(task, on_sample=lambda bar=bars[task.split]: progress.advance(bar))
            else:
                progress.advance(bars[task.split], len(task.refs))
            yield result
    finally:
        torch.set_num_threads(threads)


def start_pool(workers: int) -> tuple[multiprocessing.pool.Pool, Any]:
    """The workers and their shared progress counter. Forked before the progress display starts (no rich
    refresh thread is running at fork time), with the parent's objects frozen out of garbage collection: a
    collection in a worker would otherwise write to every object it inherited (1.33M sample references at
    ImageNet's count) and so copy their pages into each worker, about 0.3 GiB per worker (bench/scale.py)."""
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    counter = context.Array("q", len(SPLITS))  # images done per split, summed over workers
    gc.freeze()  # the workers inherit it: what they share stays shared
    try:
        return context.Pool(workers, initializer=_init_worker, initargs=(counter,)), counter
    finally:
        gc.unfreeze()  # the parent collects as before


def _run_in_pool(
    pool: multiprocessing.pool.Pool, counter, tasks: Iterator[ShardTask], progress, bars: dict[str, int]
) -> Iterator[ShardResult]:
    reused = dict.fromkeys(SPLITS, 0)
    results = pool.imap_unordered(_run_task, tasks, chunksize=1)
    while True:
        try:
            result = results.next(timeout=0.2)
        except multiprocessing.TimeoutError:
            result = None
        except StopIteration:
            break
        if result is not None and result.reused:
            reused[result.info.name.split("/", 1)[0]] += _planned_size(result)
        for i, name in enumerate(SPLITS):
            if name in bars:
                progress.update(bars[name], completed=counter[i] + reused[name])
        if result is not None:
            yield result


def _planned_size(result: ShardResult) -> int:
    return result.info.samples + len(result.rejected)


def execute_plans(
    tasks: Iterator[ShardTask], totals: dict[str, int], *, workers: int, show: bool
) -> dict[str, list[ShardResult]]:
    """Runs every task; returns each split's results in shard order. ``totals``: planned images per split."""
    results: dict[str, list[ShardResult]] = {split: [] for split in totals}
    progress = make_progress(Console(stderr=True), show)
    bars = {split: progress.add_task(split, total=total) for split, total in totals.items()}
    resize_backend()  # imported before forking: the workers share its pages instead of each importing it
    with contextlib.ExitStack() as stack:
        if workers == 1:
            run = _run_in_process(tasks, progress, bars)
        else:
            pool, counter = start_pool(workers)
            stack.enter_context(pool)  # on error or Ctrl-C: terminate the workers
            run = _run_in_pool(pool, counter, tasks, progress, bars)
        stack.enter_context(progress)
        for result in run:
            results[result.info.name.split("/", 1)[0]].append(result)
        for split, total in totals.items():
            progress.update(bars[split], completed=total)
    for split_results in results.values():
        split_results.sort(key=lambda r: r.info.name)
    return results
