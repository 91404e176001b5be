"""Reads the training runs of a study from any MLflow tracking store, sorted into usable and set-aside runs.

A run is usable when it FINISHED and logged a final `val/top1_error`; every other run (failed, killed, still
running, never validated, untagged) is kept with the reason it was set aside, so the report can list it apart
instead of silently averaging it in or dropping it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys

# The names this module reads, as training writes them.
VAL_TOP1 = keys.VAL_TOP1
VAL_TOP5 = keys.VAL_TOP5
TENCROP_TOP1 = keys.TENCROP_TOP1
TENCROP_TOP5 = keys.TENCROP_TOP5
TRAIN_EPOCH_TOP1 = keys.TRAIN_EPOCH_TOP1
EPOCH = keys.EPOCH


@dataclass(frozen=True)
class TrainingRun:
    """One training run as the report needs it: identity, tags, final metrics (fractions in [0, 1])."""

    run_id: str
    run_name: str
    experiment: str
    seed: str
    status: str
    final_metrics: dict[str, float] = field(default_factory=dict)


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
    )


def _set_aside_reason(run: TrainingRun) -> str | None:
    if not run.experiment:
        return f"no '{keys.TAG_EXPERIMENT}' tag"
    if run.status != "FINISHED":
        return f"status {run.status}"
    if VAL_TOP1 not in run.final_metrics or VAL_TOP5 not in run.final_metrics:
        return f"finished without {VAL_TOP1} / {VAL_TOP5}"
    return None


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
    usable: list[TrainingRun] = []
    set_aside: list[SetAsideRun] = []
    for training_run in map(_to_training_run, found):
        reason = _set_aside_reason(training_run)
        if reason is None:
            usable.append(training_run)
        else:
            set_aside.append(SetAsideRun(training_run, reason))
    return StudyRuns(experiment.name, experiment.experiment_id, study, usable, set_aside)


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
