"""The UI link compare prints, without a browser: the shared view it writes and the URL that opens it (the
browser side: test_mlflow_ui.py)."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

from mlflow.tracking import MlflowClient

from pipeline.report.ui_link import (
    SHARED_VIEW_TAG_PREFIX,
    runs_chart_url,
    share_study_view,
    study_filter,
    ui_base_url,
    ui_command,
)


def test_the_filter_keeps_the_study_training_runs_and_escapes_quotes():
    assert study_filter("s1") == "tags.study = 's1' AND tags.kind = 'training'"
    assert study_filter("it's") == "tags.study = 'it\\'s' AND tags.kind = 'training'"
    assert study_filter(None) == "tags.kind = 'training'"


def test_the_shared_view_groups_by_experiment_and_is_written_once(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("alexnet")
    key = share_study_view(client, experiment_id, "s1")
    assert share_study_view(client, experiment_id, "s1") == key  # same study, same view, same key
    tags = client.get_experiment(experiment_id).tags
    assert [name for name in tags if name.startswith(SHARED_VIEW_TAG_PREFIX)] == [
        SHARED_VIEW_TAG_PREFIX + key
    ]
    view = json.loads(tags[SHARED_VIEW_TAG_PREFIX + key])
    assert view["searchFilter"] == study_filter("s1")
    assert view["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "experiment"}],
    }
    assert view["globalLineChartConfig"]["selectedXAxisMetricKey"] == "epoch"


def test_the_url_opens_the_runs_view_in_chart_mode():
    shared = runs_chart_url("http://127.0.0.1:5000", "7", "abc123", "s1")
    assert shared == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning&compareRunsMode=CHART"
        "&viewStateShareKey=abc123"
    )
    # without a shared view (log=false) the filter goes into the URL itself (the UI then ignores any view)
    query = urllib.parse.parse_qs(runs_chart_url("http://h:1", "7", None, "s1").split("?", 1)[1])
    assert query["searchFilter"] == [study_filter("s1")] and query["compareRunsMode"] == ["CHART"]
    assert (
        ui_base_url("http://server:5000/") == "http://server:5000"
        and ui_command("http://server:5000") is None
    )
    assert ui_base_url("sqlite:////x/mlflow.db") == "http://127.0.0.1:5000"
    assert ui_command("sqlite:////x/mlflow.db").endswith(
        "mlflow ui --backend-store-uri sqlite:////x/mlflow.db --host 127.0.0.1 --port 5000"
    )
