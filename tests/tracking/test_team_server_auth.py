"""The team server bound beyond 127.0.0.1 (scripts/tracking_server.sh with TRACKING_SERVER_HOST=0.0.0.0):
MLflow's basic-auth app refuses an anonymous request, and a job that reads the generated credentials file
(``logger.credentials_file``) trains into it and ends FINISHED without printing the password."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import keys
from tests.helpers.concurrent_jobs import TINY_STEPS, run_together
from tests.helpers.team_server import TeamServer, team_server
from tests.helpers.training import runs_of, steps_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server() -> Iterator[TeamServer]:
    with team_server(host="0.0.0.0") as running:
        yield running


def _credentials(server: TeamServer) -> dict[str, str]:
    lines = (server.directory / "credentials").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_an_anonymous_request_is_refused(server: TeamServer) -> None:
    assert oct((server.directory / "credentials").stat().st_mode & 0o777) == "0o600"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=30)
    assert refused.value.code == 401


def test_a_job_with_the_credentials_file_trains_into_the_server(
    server: TeamServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = server.directory / "credentials"
    (job,) = run_together(tmp_path, 1, server.url, "auth", extra=(f"logger.credentials_file={credentials}",))
    assert job.returncode == 0, job.log[-3000:]
    user = _credentials(server)
    assert user["password"] not in job.log
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user["username"])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", user["password"])
    client = MlflowClient(server.url)
    (run,) = runs_of(client, "auth")
    assert run.info.status == "FINISHED"
    assert steps_of(client, run.info.run_id, keys.TRAIN_LOSS) == list(range(TINY_STEPS))
