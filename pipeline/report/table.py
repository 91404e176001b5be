"""The ablation table: per experiment the mean ± std over seeds of the paper's test protocol (10 crops, and
the centre crop), and each change against the baseline with Welch's 95% interval, beside the paper's change.

Errors are percentages here (the runs log fractions). A change is the experiment's mean error minus the
baseline's, in percentage points: positive means the ablation raised the error, the sign in which the paper's
reductions are stored in `pipeline.report.paper`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.report.paper import (
    BASELINE_EXPERIMENT,
    PaperChange,
    component,
    experiment_sort_key,
    paper_change,
)
from pipeline.report.runs import TrainingRun
from pipeline.report.stats import MIN_SEEDS, Interval, Summary, summarize, welch_interval
from pipeline.tracking import keys

# Table columns: (key, metric the runs log, paper metric its change is set beside; None: no paper number).
# The paper's numbers are 10-crop numbers, so only the 10-crop changes are set beside them.
ERROR_COLUMNS: tuple[tuple[str, str, str | None], ...] = (
    ("top1_tencrop", keys.TENCROP_TOP1, "top1"),
    ("top5_tencrop", keys.TENCROP_TOP5, "top5"),
    ("top1_center", keys.CENTER_TOP1, None),
    ("top5_center", keys.CENTER_TOP5, None),
)
COLUMNS = tuple(column for column, _, _ in ERROR_COLUMNS)
PAPER_COLUMNS = {column: metric for column, _, metric in ERROR_COLUMNS if metric is not None}


@dataclass(frozen=True)
class Change:
    """An experiment's mean error minus the baseline's (points) and Welch's 95% interval of it (None when a
    group has a single run)."""

    delta: float
    ci95: Interval | None


@dataclass(frozen=True)
class AblationRow:
    experiment: str
    component: str
    n_runs: int
    seeds: tuple[str, ...]
    errors: dict[str, Summary]  # by column, in %
    change: dict[str, Change]  # by column; empty for the baseline (and where the study has no baseline)
    paper: dict[str, PaperChange | None]  # "top1", "top5"; None: not one of the paper's ablations
    weights: str  # which weights the eval/* metrics score: final, best, ... or "mixed (...)"
    dataset_digest: str

    @property
    def few_seeds(self) -> bool:
        return self.n_runs < MIN_SEEDS

    def paper_in_ci(self, column: str) -> bool | None:
        """Whether the paper's change lies inside this row's 95% interval (None: nothing to compare)."""
        metric = PAPER_COLUMNS.get(column)
        paper = self.paper.get(metric) if metric else None
        change = self.change.get(column)
        if paper is None or change is None or change.ci95 is None:
            return None
        return paper.within(change.ci95.low, change.ci95.high)


def _percent(group: list[TrainingRun], metric: str) -> list[float]:
    return [100.0 * run.final_metrics[metric] for run in group]


def weights_label(group: list[TrainingRun]) -> str:
    """The eval_weights tag the group shares ("final"), or the mix, e.g. "mixed (final x2, best x1)"."""
    counts = Counter(run.eval_weights or "unknown" for run in group)
    if len(counts) == 1:
        return next(iter(counts))
    return "mixed (" + ", ".join(f"{name} x{count}" for name, count in sorted(counts.items())) + ")"


def _changes(group: list[TrainingRun], baseline: list[TrainingRun]) -> dict[str, Change]:
    changes = {}
    for column, metric, _ in ERROR_COLUMNS:
        ours, reference = _percent(group, metric), _percent(baseline, metric)
        delta = summarize(ours).mean - summarize(reference).mean
        changes[column] = Change(delta, welch_interval(ours, reference))
    return changes


def build_row(experiment: str, group: list[TrainingRun], baseline: list[TrainingRun] | None) -> AblationRow:
    return AblationRow(
        experiment=experiment,
        component=component(experiment),
        n_runs=len(group),
        seeds=tuple(sorted((run.seed for run in group), key=_seed_order)),
        errors={column: summarize(_percent(group, metric)) for column, metric, _ in ERROR_COLUMNS},
        change={} if baseline is None or experiment == BASELINE_EXPERIMENT else _changes(group, baseline),
        paper={metric: paper_change(experiment, metric) for metric in ("top1", "top5")},
        weights=weights_label(group),
        dataset_digest=group[0].digest,
    )


def build_rows(runs: Iterable[TrainingRun]) -> list[AblationRow]:
    """Groups usable runs (all of one prep: see runs.split_by_lineage) by their `experiment` tag and
    summarises each group; baseline first."""
    by_experiment: dict[str, list[TrainingRun]] = defaultdict(list)
    for run in runs:
        by_experiment[run.experiment].append(run)
    digests = {run.digest for group in by_experiment.values() for run in group}
    if len(digests) > 1:
        raise ValueError(f"runs of {len(digests)} dataset digests in one table: {sorted(digests)}")
    baseline = by_experiment.get(BASELINE_EXPERIMENT)
    return [
        build_row(experiment, by_experiment[experiment], baseline)
        for experiment in sorted(by_experiment, key=experiment_sort_key)
    ]


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)
