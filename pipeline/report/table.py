"""The ablation table: per experiment the mean ± std over seeds of the final errors, and the change against
the baseline beside the paper's published change.

Errors are percentages here (the runs log fractions). A change is the experiment's mean error minus the
baseline's, in percentage points: positive means the ablation raised the error, the sign in which the paper's
reductions are stored in `pipeline.report.paper`.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.report.paper import BASELINE_EXPERIMENT, PAPER_ABLATIONS, experiment_sort_key, paper_change
from pipeline.report.runs import TENCROP_TOP1, TENCROP_TOP5, VAL_TOP1, VAL_TOP5, TrainingRun

# Table columns: (key, metric logged by the runs, paper metric the change is compared with).
ERROR_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("top1", VAL_TOP1, "top1"),
    ("top5", VAL_TOP5, "top5"),
    ("tencrop_top1", TENCROP_TOP1, "top1"),
    ("tencrop_top5", TENCROP_TOP5, "top5"),
)


@dataclass(frozen=True)
class ErrorSummary:
    """An error over seeds, in %. `std` is the sample standard deviation (None for a single run)."""

    mean: float
    std: float | None
    n: int


@dataclass(frozen=True)
class AblationRow:
    experiment: str
    component: str
    n_runs: int
    seeds: tuple[str, ...]
    errors: dict[str, ErrorSummary]
    change: dict[str, float]
    paper_change: dict[str, float | None]


def summarize(values_percent: list[float]) -> ErrorSummary:
    std = statistics.stdev(values_percent) if len(values_percent) > 1 else None
    return ErrorSummary(statistics.fmean(values_percent), std, len(values_percent))


def _component(experiment: str) -> str:
    if experiment == BASELINE_EXPERIMENT:
        return "full model"
    ablation = PAPER_ABLATIONS.get(experiment)
    return f"without {ablation.component}" if ablation else ""


def build_rows(runs: Iterable[TrainingRun]) -> list[AblationRow]:
    """Groups usable runs by their `experiment` tag and summarises each group; baseline first."""
    by_experiment: dict[str, list[TrainingRun]] = defaultdict(list)
    for run in runs:
        by_experiment[run.experiment].append(run)
    summaries: dict[str, dict[str, ErrorSummary]] = {}
    for experiment, group in by_experiment.items():
        summaries[experiment] = {
            column: summarize([100.0 * run.final_metrics[metric] for run in group])
            for column, metric, _ in ERROR_COLUMNS
            # A column is reported only where every run of the group has it: a mean over a subset would mix
            # seeds silently (e.g. 10-crop evaluated for one seed only).
            if all(metric in run.final_metrics for run in group)
        }
    baseline = summaries.get(BASELINE_EXPERIMENT, {})
    rows = []
    for experiment in sorted(by_experiment, key=experiment_sort_key):
        errors = summaries[experiment]
        change = {
            column: errors[column].mean - baseline[column].mean
            for column in errors
            if column in baseline and experiment != BASELINE_EXPERIMENT
        }
        rows.append(
            AblationRow(
                experiment=experiment,
                component=_component(experiment),
                n_runs=len(by_experiment[experiment]),
                seeds=tuple(sorted((run.seed for run in by_experiment[experiment]), key=_seed_order)),
                errors=errors,
                change=change,
                paper_change={
                    column: paper_change(experiment, paper_metric)
                    for column, _, paper_metric in ERROR_COLUMNS
                },
            )
        )
    return rows


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), "") if seed.lstrip("-").isdigit() else (0, seed)


def present_columns(rows: list[AblationRow]) -> list[str]:
    """The error columns any row reports (10-crop ones only once `pipeline.evaluate` has logged them)."""
    return [column for column, _, _ in ERROR_COLUMNS if any(column in row.errors for row in rows)]
