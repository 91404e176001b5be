"""A screenshot of a study as `pipeline.compare`'s link opens it in the MLflow UI: the runs view in chart
mode, the study's training runs grouped by experiment (seeds averaged), val top-1/top-5 error against epoch.
It makes docs/img/mlflow-compare.png from the demo's store:

    make demo                                      # prints the study's name (study tag demo-YYYYmmdd-HHMMSS)
    .venv/bin/python scripts/screenshot_mlflow.py study=demo-YYYYmmdd-HHMMSS out=docs/img/mlflow-compare.png

It starts `mlflow server` on the store (127.0.0.1, a free port), shares the study's view as compare does
(an experiment tag), opens the link in headless Chromium (tests/compare/headless_chromium.py), closes the
assistant panel and the shared-view banner, waits for the curves and saves the PNG. Needs Debian's chromium.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "compare")]

from headless_chromium import HeadlessChromium, find_chromium  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow_server import free_port, wait_healthy  # noqa: E402

from alexnet_common.cli import Fields, fail, optional, parse_overrides  # noqa: E402
from pipeline.report.ui_link import runs_chart_url, share_study_view  # noqa: E402
from pipeline.tracking import keys  # noqa: E402
from pipeline.tracking.store import resolve_tracking_uri  # noqa: E402

PROGRAM = "python scripts/screenshot_mlflow.py"
VIEWPORT = (1600, 1000)
TIDY_JS = """(() => {
  for (const id of ['mlflow.assistant.chat_panel.close', 'mlflow.experiment_page.shared_view.dismiss']) {
    const button = document.querySelector(`[data-component-id="${id}"]`);
    if (button) button.click();
  }
})()"""

FIELDS: Fields = {
    "study": (optional(str), None, "the study tag to show (default: every training run)"),
    "tracking_uri": (optional(str), None, "a sqlite store; default: $MLFLOW_TRACKING_URI, else ./mlflow.db"),
    "experiment": (str, keys.DEFAULT_EXPERIMENT_NAME, "the MLflow experiment"),
    "out": (Path, REPO / "docs" / "img" / "mlflow-compare.png", "where the PNG goes"),
    "settle_s": (float, 5.0, "seconds to let the charts finish drawing after they appear"),
}


def start_server(tracking_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
        "--workers", "1", "--backend-store-uri", tracking_uri,
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as log_file:
        server = subprocess.Popen(
            command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, server, log)
    return server, url


def screenshot(url: str, out: Path, settle_s: float, scratch: Path) -> Path:
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("needs Debian's chromium: apt-get update && apt-get install -y chromium")
    with HeadlessChromium(chromium, scratch / "chromium-profile") as browser:
        browser.set_viewport(*VIEWPORT)
        browser.open(url)
        browser.wait_for_text(["Group by: experiment", "val/top1_error", "matching runs"], timeout_s=180)
        browser.evaluate(TIDY_JS)
        time.sleep(settle_s)
        return browser.screenshot(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    uri = resolve_tracking_uri(args["tracking_uri"], must_exist=True)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(args["experiment"])
    if experiment is None:
        fail(PROGRAM, f"no experiment {args['experiment']!r} in {uri}")
    key = share_study_view(client, experiment.experiment_id, args["study"])
    with tempfile.TemporaryDirectory() as scratch:
        server, base = start_server(uri, Path(scratch) / "mlflow-server.log")
        try:
            link = runs_chart_url(base, experiment.experiment_id, key, args["study"])
            print(f"opening {link}")
            print(f"wrote {screenshot(link, args['out'].resolve(), args['settle_s'], Path(scratch))}")
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
