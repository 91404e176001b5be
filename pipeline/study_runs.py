"""Reads the training runs of a study from any MLflow tracking store, sorted into usable and set-aside runs.

A run is usable when it FINISHED and logged a final `val/top1_error`; every other run (failed, killed, still
running, never validated, untagged) is kept with the reason it was set aside, so the report can list it apart
instead of silently averaging it in or dropping it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///./mlflow.db"
DEFAULT_EXPERIMENT_NAME = "alexnet"

# Report runs carry this tag so the next comparison does not read them as training runs.
REPORT_KIND_TAG = "kind"
REPORT_KIND_VALUE = "report"

VAL_TOP1 = "val/top1_error"
VAL_TOP5 = "val/top5_error"
TENCROP_TOP1 = "eval/tencrop_top1_error"
TENCROP_TOP5 = "eval/tencrop_top5_error"
TRAIN_EPOCH_TOP1 = "train/epoch_top1_error"
EPOCH = "epoch"


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


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The explicit URI, else MLFLOW_TRACKING_URI, else the embedded sqlite store in the working directory."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        # Opening a missing sqlite file would silently create an empty store and report "no runs".
        db_path = Path(uri.removeprefix("sqlite:///"))
        if not db_path.is_file():
            raise ValueError(
                f"no MLflow store at {db_path.resolve()} (tracking URI {uri}): run a training first, "
                "or pass --tracking-uri / set MLFLOW_TRACKING_URI to the store that holds the study"
            )
    return uri


def _to_training_run(run: Run) -> TrainingRun:
    tags = run.data.tags
    return TrainingRun(
        run_id=run.info.run_id,
        run_name=run.info.run_name or run.info.run_id,
        experiment=tags.get("experiment", ""),
        seed=tags.get("seed", ""),
        status=run.info.status,
        final_metrics=dict(run.data.metrics),
    )


def _set_aside_reason(run: TrainingRun) -> str | None:
    if not run.experiment:
        return "no 'experiment' tag"
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
        filter_string = f"tags.study = '{escaped}'"
    found = [
        run
        for run in _search_all(client, experiment.experiment_id, filter_string)
        if run.data.tags.get(REPORT_KIND_TAG) != REPORT_KIND_VALUE
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
