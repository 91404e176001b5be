"""The lines under the table that plan the next runs: how each change's interval was made (paired or Welch's,
and why), a flag where same-seed runs of two arms dropped the lr at different epochs, and how many seeds would
resolve each unresolved change, with the sweep that adds them to the study (``compare`` merges runs by their
``study`` tag, so added seeds join the table).
"""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.report.paper import BASELINE_EXPERIMENT
from pipeline.report.stats import MAX_SEEDS_NEEDED
from pipeline.report.table import AblationRow

LR_FLAG = "⚑"


def next_seeds(seeds: Sequence[str], count: int) -> list[int]:
    """``count`` integer seeds after the largest integer one in ``seeds`` (1, 2, ... if there is none)."""
    last = max((int(seed) for seed in seeds if seed.lstrip("-").isdigit()), default=0)
    return list(range(last + 1, last + 1 + count))


def interval_notes(rows: list[AblationRow]) -> list[str]:
    """Per compared row: the interval's method and why; a flag where same-seed runs dropped the lr apart."""
    lines = []
    for row in rows:
        if row.method:
            lines.append(f"Interval, {row.experiment}: {row.method} ({row.method_reason}).")
        if row.lr_drops_differ:
            lines.append(
                f"{LR_FLAG} {row.experiment}: the lr dropped at other epochs than in the baseline run of the "
                f"same seed ({'; '.join(row.lr_drops_differ)}); part of Δ may be the schedule's, not the "
                "component's."
            )
    return lines


def seed_suggestions(rows: list[AblationRow], study: str | None) -> list[str]:
    """One line per change whose 10-crop top-1 interval still holds 0: the seeds that would resolve it at
    this spread, and the sweep that adds them to the study."""
    lines = []
    for row in rows:
        change = row.change.get("top1_tencrop")
        if change is None or change.ci95 is None or not change.ci95.low <= 0.0 <= change.ci95.high:
            continue
        target = f"{abs(change.delta):.2f} pp"
        if change.seeds_needed is None:
            lines.append(f"{row.experiment}: more than {MAX_SEEDS_NEEDED} seeds to resolve {target} here.")
            continue
        extra = ",".join(map(str, next_seeds(row.seeds, max(change.seeds_needed - row.n_runs, 1))))
        study_arg = f" study={study}" if study else ""
        lines.append(
            f"{row.experiment}: about {change.seeds_needed} seeds to resolve {target} at this spread "
            f"({row.method}); rerun with seed={extra}: python -m pipeline.train -m "
            f"+experiment={BASELINE_EXPERIMENT},{row.experiment} seed={extra}{study_arg}"
        )
    return lines
