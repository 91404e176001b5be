"""The ablation table: per experiment the mean ± std over seeds of the paper's test protocol (10 crops, and
the centre crop), and each change against the baseline with its 95% interval (paired by seed where the runs
are pairs by design, else Welch's: ``pipeline.report.pairing``), the seeds that would resolve it, beside the
paper's change.

Errors are percentages here (the runs log fractions). A change is the experiment's mean error minus the
baseline's, in percentage points: positive means the ablation raised the error, the sign in which the paper's
reductions are stored in `pipeline.report.paper`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.report.pairing import (
    PAIRED,
    Pairing,
    lr_drop_mismatches,
    pair_runs,
    same_seed_pairs,
    seed_order,
)
from pipeline.report.paper import (
    BASELINE_EXPERIMENT,
    PaperChange,
    component,
    experiment_sort_key,
    paper_change,
)
from pipeline.report.runs import TrainingRun
from pipeline.report.stats import (
    MIN_SEEDS,
    Interval,
    Summary,
    correlation,
    paired_interval,
    seeds_needed_paired,
    seeds_needed_welch,
    summarize,
    welch_interval,
)
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
    """An experiment's mean error minus the baseline's (points) and its 95% interval: ``ci95`` is the one the
    table reads (paired where ``method`` is paired, else Welch's; None when a group has a single run), with
    both kinds beside it. ``seeds_needed``: seeds per arm whose interval would exclude 0 at this Δ and spread
    (None: more than MAX_SEEDS_NEEDED, or no spread yet); ``seeds_needed_paper``: the same for the paper's
    Δ."""

    delta: float
    ci95: Interval | None
    method: str = "welch"
    welch: Interval | None = None
    paired: Interval | None = None
    correlation: float | None = None  # of the same-seed pairs' errors (None: fewer than 2 pairs)
    seeds_needed: int | None = None
    seeds_needed_paper: int | None = None


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
    method: str = ""  # paired | welch ("" for the baseline or without one)
    method_reason: str = ""
    n_pairs: int = 0
    lr_drops_differ: tuple[str, ...] = ()  # "seed 1: [3] vs [5]": same seed, drops at other epochs

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


def _paper_target(experiment: str, metric: str | None) -> float | None:
    paper = paper_change(experiment, metric) if metric else None
    return None if paper is None else paper.value


def _seeds_needed(
    target: float | None, paired_sd: float | None, arm_sds: tuple[float | None, float | None] | None
) -> int | None:
    """Seeds per arm to resolve ``target`` points: at the paired spread where paired, else at the arms'."""
    if target is None:
        return None
    if paired_sd is not None:
        return seeds_needed_paired(paired_sd, target)
    if arm_sds is not None:
        return seeds_needed_welch(arm_sds[0] or 0.0, arm_sds[1] or 0.0, target)
    return None  # a single run: no spread to plan with


def _change(
    experiment: str,
    column: tuple[str, str, str | None],
    group: list[TrainingRun],
    baseline: list[TrainingRun],
    pairing: Pairing,
) -> Change:
    _, metric, paper_metric = column
    ours, reference = _percent(group, metric), _percent(baseline, metric)
    delta = summarize(ours).mean - summarize(reference).mean
    same_seed = same_seed_pairs(group, baseline)
    pair_a = [100.0 * a.final_metrics[metric] for a, _ in same_seed]
    pair_b = [100.0 * b.final_metrics[metric] for _, b in same_seed]
    welch = welch_interval(ours, reference)
    paired = paired_interval(pair_a, pair_b) if pairing.method == PAIRED else None
    paired_sd = None
    if paired is not None:
        paired_sd = summarize([x - y for x, y in zip(pair_a, pair_b, strict=True)]).std
    arm_sds = (summarize(ours).std, summarize(reference).std) if welch is not None else None
    paper = _paper_target(experiment, paper_metric)
    return Change(
        delta=delta,
        ci95=paired if paired is not None else welch,
        method=pairing.method,
        welch=welch,
        paired=paired,
        correlation=correlation(pair_a, pair_b),
        seeds_needed=_seeds_needed(delta, paired_sd, arm_sds),
        seeds_needed_paper=_seeds_needed(paper, paired_sd, arm_sds),
    )


def build_row(
    experiment: str, group: list[TrainingRun], baseline: list[TrainingRun] | None, interval: str = "auto"
) -> AblationRow:
    compared = baseline is not None and experiment != BASELINE_EXPERIMENT
    pairing = pair_runs(group, baseline, interval) if compared else None
    changes = (
        {column[0]: _change(experiment, column, group, baseline, pairing) for column in ERROR_COLUMNS}
        if compared
        else {}
    )
    return AblationRow(
        experiment=experiment,
        component=component(experiment),
        n_runs=len(group),
        seeds=tuple(sorted((run.seed for run in group), key=seed_order)),
        errors={column: summarize(_percent(group, metric)) for column, metric, _ in ERROR_COLUMNS},
        change=changes if compared else {},
        paper={metric: paper_change(experiment, metric) for metric in ("top1", "top5")},
        weights=weights_label(group),
        dataset_digest=group[0].digest,
        method=pairing.method if pairing else "",
        method_reason=pairing.reason if pairing else "",
        n_pairs=len(pairing.pairs) if pairing else 0,
        lr_drops_differ=tuple(lr_drop_mismatches(same_seed_pairs(group, baseline))) if compared else (),
    )


def build_rows(runs: Iterable[TrainingRun], interval: str = "auto") -> list[AblationRow]:
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
        build_row(experiment, by_experiment[experiment], baseline, interval)
        for experiment in sorted(by_experiment, key=experiment_sort_key)
    ]
