"""A link that opens a study in the MLflow UI as a researcher compares it: the runs view in chart mode, only
the study's training runs, grouped by the ``experiment`` tag so that the seeds of an experiment aggregate into
one curve, val error against epoch.

MLflow 3.17's UI reads the runs view's search facets from the URL (``searchFilter=``, ``orderByKey=``, ...)
and the chart mode from ``compareRunsMode=CHART``, but grouping only from a *shared view*: an experiment tag
``mlflow.sharedViewState.<key>`` holding the view as JSON, opened with ``viewStateShareKey=<key>`` (what the
UI's own Share button writes). The view carries the filter, so the UI fills ``searchFilter=`` into the URL as
it opens it (a URL holding a facet itself would make the UI ignore the shared view). ``workflowType=
machine_learning`` opens the model-training side of the UI instead of the GenAI overview.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from pipeline.tracking import keys

SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
LOCAL_UI_HOST = "127.0.0.1"
LOCAL_UI_PORT = 5000


def study_filter(study: str | None) -> str:
    """The runs view's search: the study's training runs (report runs left out), or every training run."""
    training = f"tags.{keys.TAG_KIND} = '{keys.KIND_TRAINING}'"
    if study is None:
        return training
    escaped = study.replace("'", "\\'")
    return f"tags.{keys.TAG_STUDY} = '{escaped}' AND {training}"


def study_view(study: str | None) -> dict[str, Any]:
    """The shared view: filter, group by the experiment tag (averaged), curves against the epoch metric."""
    return {
        "searchFilter": study_filter(study),
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "groupBy": {
            "aggregateFunction": "average",
            "groupByKeys": [{"mode": "tag", "groupByData": keys.TAG_EXPERIMENT}],
        },
        "useGroupedValuesInCharts": True,
        "globalLineChartConfig": {
            "xAxisKey": "metric",
            "selectedXAxisMetricKey": keys.EPOCH,
            "lineSmoothness": 0,
        },
        "chartsSearchFilter": "val/top",  # val/top1_error, val/top5_error (a substring: "val/" hits eval/)
        "hideEmptyCharts": True,
    }


def share_study_view(client: MlflowClient, experiment_id: str, study: str | None) -> str:
    """Writes the study's view as a shared-view tag on the experiment (idempotent); returns its key."""
    state = json.dumps(study_view(study), sort_keys=True)
    key = hashlib.sha256(state.encode()).hexdigest()[:16]
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG_PREFIX + key, state)
    return key


def ui_base_url(tracking_uri: str) -> str:
    """Where the UI of this store is: the server itself, or a local `mlflow ui` (see `ui_command`)."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://{LOCAL_UI_HOST}:{LOCAL_UI_PORT}"


def ui_command(tracking_uri: str) -> str | None:
    """The command that serves a local store's UI at `ui_base_url` (None for a server: it serves its own):
    this environment's `mlflow` (e.g. .venv/bin/mlflow), so that it runs without an activated venv."""
    if tracking_uri.startswith(("http://", "https://")):
        return None
    beside = Path(sys.executable).with_name("mlflow")
    mlflow = shlex.quote(str(beside)) if beside.is_file() else "mlflow"
    return f"{mlflow} ui --backend-store-uri {tracking_uri} --host {LOCAL_UI_HOST} --port {LOCAL_UI_PORT}"


def runs_chart_url(base_url: str, experiment_id: str, share_key: str | None, study: str | None) -> str:
    """The runs view in chart mode: with the shared view (filter + grouping), or without one (log=false,
    nothing written to the store) the filter alone, ungrouped."""
    query = {"workflowType": "machine_learning", "compareRunsMode": "CHART"}
    if share_key is not None:
        query["viewStateShareKey"] = share_key
    else:
        query["searchFilter"] = study_filter(study)
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return f"{base_url}/#/experiments/{experiment_id}/runs?{encoded}"
