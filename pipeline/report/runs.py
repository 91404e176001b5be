"""Reads the training runs of a study from any MLflow tracking store, sorted into usable and set-aside runs.

A run is usable when it FINISHED, logged the paper's test protocol (``eval/{center,tencrop}_top{1,5}_error``,
which every training job logs at its end) and was trained on the study's data: the prep output (dataset
digest) that most of the study's runs trained on. Every other run (failed, killed, still running, never
evaluated, untagged, trained on another prep) is kept with the reason it was set aside, so the report can list
it apart instead of silently averaging it in or dropping it.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys

# The names this module reads, as training writes them.
VAL_TOP1 = keys.VAL_TOP1
TRAIN_EPOCH_TOP1 = keys.TRAIN_EPOCH_TOP1
EPOCH = keys.EPOCH
EVAL_KEYS = (keys.TENCROP_TOP1, keys.TENCROP_TOP5, keys.CENTER_TOP1, keys.CENTER_TOP5)
NO_DATASET = "none"  # the digest of a run that logged no dataset input (trained before lineage was logged)


@dataclass(frozen=True)
class TrainingRun:
    """One training run as the report needs it: identity, tags, final metrics (fractions in [0, 1])."""

    run_id: str
    run_name: str
    experiment: str
    seed: str
    status: str
    final_metrics: dict[str, float] = field(default_factory=dict)
    dataset_digests: tuple[str, ...] = ()  # of its dataset inputs: one for a run trained on one prep
    eval_weights: str = ""  # the eval_weights tag: which weights its eval/* metrics score
    start_time: int = 0
    crn_init: str = ""  # the crn_init / crn_data tags ("" for a run trained before they were recorded)
    crn_data: str = ""
    lr_drop_epochs: tuple[int, ...] | None = None  # epochs whose validation dropped the rate (None: no tag)

    @property
    def digest(self) -> str:
        """The prep it trained on: its one dataset digest, NO_DATASET, or all of them joined (mixed)."""
        return "+".join(self.dataset_digests) if self.dataset_digests else NO_DATASET


@dataclass(frozen=True)
class SetAsideRun:
    """A run that is listed apart, with the reason it was not averaged."""

    run: TrainingRun
    reason: str


@dataclass(frozen=True)
class StudyRuns:
    experiment_name: str
    experiment_id: str
    study: str | None
    usable: list[TrainingRun]
    set_aside: list[SetAsideRun]


def _to_training_run(run: Run) -> TrainingRun:
    tags = run.data.tags
    return TrainingRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment=tags.get(keys.TAG_EXPERIMENT, ""),
        seed=tags.get(keys.TAG_SEED, ""),
        status=run.info.status,
        final_metrics=dict(run.data.metrics),
        dataset_digests=tuple(sorted({item.dataset.digest for item in run.inputs.dataset_inputs})),
        eval_weights=tags.get(keys.TAG_EVAL_WEIGHTS, ""),
        start_time=run.info.start_time or 0,
        crn_init=tags.get(keys.TAG_CRN_INIT, ""),
        crn_data=tags.get(keys.TAG_CRN_DATA, ""),
        lr_drop_epochs=lr_drop_epochs(tags.get(keys.TAG_LR_DROPS)),
    )


def lr_drop_epochs(tag: str | None) -> tuple[int, ...] | None:
    """The epochs of the run's lr_drops tag (a JSON list of {"epoch", ...}); None where it has none."""
    if tag is None:
        return None
    try:
        return tuple(int(drop["epoch"]) for drop in json.loads(tag))
    except (ValueError, TypeError, KeyError):
        return None


def _set_aside_reason(run: TrainingRun) -> str | None:
    if not run.experiment:
        return f"no '{keys.TAG_EXPERIMENT}' tag"
    if run.status != "FINISHED":
        return f"status {run.status}"
    missing = [key for key in EVAL_KEYS if key not in run.final_metrics]
    if missing:
        return (
            f"finished without {', '.join(missing)} (trained with callbacks.final_eval.enabled=false?): "
            f"python -m pipeline.evaluate run_id={run.run_id}"
        )
    if len(run.dataset_digests) > 1:
        return f"trained on {len(run.dataset_digests)} preps (digests {', '.join(run.dataset_digests)})"
    return None


def study_digest(runs: list[TrainingRun]) -> str:
    """The prep the study trained on: the digest most runs have (ties: the earliest run's)."""
    counts = Counter(run.digest for run in runs)
    first_start: dict[str, int] = {}
    for run in sorted(runs, key=lambda r: r.start_time):
        first_start.setdefault(run.digest, run.start_time)
    return max(counts, key=lambda digest: (counts[digest], -first_start[digest]))


def split_by_lineage(runs: list[TrainingRun]) -> tuple[list[TrainingRun], list[SetAsideRun]]:
    """Keeps the runs of the study's prep; the others are set aside, since runs of two preps of "the same"
    data are not seeds of one experiment (nor comparable across experiments)."""
    if not runs:
        return [], []
    digest = study_digest(runs)
    kept = [run for run in runs if run.digest == digest]
    apart = [
        SetAsideRun(run, f"trained on another prep: dataset digest {run.digest}, the study's is {digest}")
        for run in runs
        if run.digest != digest
    ]
    return kept, apart


def _search_all(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Run]:
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def load_study_runs(client: MlflowClient, experiment_name: str, study: str | None) -> StudyRuns:
    """All training runs of `experiment_name` (only those tagged `study` when given), report runs left out."""
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        known = ", ".join(sorted(e.name for e in client.search_experiments())) or "none"
        raise ValueError(
            f"no MLflow experiment named {experiment_name!r} at {client.tracking_uri} "
            f"(experiments there: {known}); pass --experiment"
        )
    filter_string = ""
    if study is not None:
        escaped = study.replace("'", "\\'")
        filter_string = f"tags.{keys.TAG_STUDY} = '{escaped}'"
    found = [
        run
        for run in _search_all(client, experiment.experiment_id, filter_string)
        if run.data.tags.get(keys.TAG_KIND) != keys.KIND_REPORT
    ]
    if not found:
        where = f"with tag study={study!r} " if study is not None else ""
        raise ValueError(
            f"no training runs {where}in MLflow experiment {experiment_name!r} at {client.tracking_uri}"
        )
    complete: list[TrainingRun] = []
    set_aside: list[SetAsideRun] = []
    for training_run in map(_to_training_run, found):
        reason = _set_aside_reason(training_run)
        if reason is None:
            complete.append(training_run)
        else:
            set_aside.append(SetAsideRun(training_run, reason))
    usable, other_prep = split_by_lineage(complete)
    return StudyRuns(experiment.name, experiment.experiment_id, study, usable, set_aside + other_prep)


def epoch_history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    """(epoch, value) pairs of a per-epoch metric, the epoch read from the `epoch` metric at the same step.

    Lightning logs `epoch` at the step of every logged metric; where it is missing (another logger), the n-th
    value counts as epoch n.
    """
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    epoch_at_step = {m.step: int(m.value) for m in client.get_metric_history(run_id, EPOCH)}
    pairs: dict[int, float] = {}
    for index, metric in enumerate(history):
        pairs[epoch_at_step.get(metric.step, index)] = metric.value
    return sorted(pairs.items())
