"""End to end through the MLflow UI: a real `mlflow server` on 127.0.0.1, a small study of demo trainings
logging to it, `pipeline.compare` on it, and the link compare prints opened in headless Chromium, which must
show the study's training runs (not its report run) grouped by experiment, and their val error curves.

docs/img/mlflow-compare.png is made the same way from the real demo study: scripts/screenshot_mlflow.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import pytest
import torch

from pipeline.compare import compare
from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.compare_study import tiny_overrides
from tests.helpers.headless_chromium import HeadlessChromium, find_chromium
from tests.helpers.mlflow_server import mlflow_server
from tests.helpers.training import compose_train

pytestmark = pytest.mark.slow

UI_EXPERIMENT = "ui-e2e"
UI_STUDY = "ui-e2e"
RUNS = (("baseline", 1), ("baseline", 2), ("no_lrn", 1))


def chromium_binary() -> str:
    """Debian's chromium, installed with apt-get when missing; skips (saying why) where that cannot be."""
    found = find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("needs Debian's chromium: run `apt-get update && apt-get install -y chromium` as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.skip(
                f"`{' '.join(command)}` failed ({done.returncode}), no chromium: {done.stderr[-300:]}"
            )
    return find_chromium() or pytest.skip("apt-get installed chromium, but no chromium binary is on PATH")


# The chart card of val/top1_error: its legend and how many curves (plotly line paths) it draws.
VAL_CHART_JS = """(() => {
  const cards = [...document.querySelectorAll('[data-testid="experiment-view-compare-runs-card"]')];
  const card = cards.find(c => c.innerText.split('\\n')[0].trim() === 'val/top1_error');
  if (!card) return null;
  const paths = [...card.querySelectorAll('.scatterlayer path.js-line')];
  const lines = paths.filter(p => (p.getAttribute('d') || '').length > 8);
  const titles = cards.map(c => c.innerText.split('\\n')[0].trim());
  return {text: card.innerText, lines: lines.length, cards: titles};
})()"""


def train_study(shards: Path, url: str, root: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for experiment, seed in RUNS:
            overrides = [*tiny_overrides(shards, url), f"+experiment={experiment}", f"seed={seed}"]
            overrides += [f"study={UI_STUDY}", f"logger.experiment_name={UI_EXPERIMENT}"]
            train(compose_train([*overrides, f"paths.output_dir={root / f'{experiment}-{seed}'}"]))
    finally:
        torch.set_num_threads(threads)


def test_compare_link_opens_the_study_curves_grouped_by_experiment(demo_shards: Path, tmp_path: Path):
    chromium = chromium_binary()
    with mlflow_server(tmp_path) as url:
        train_study(demo_shards, url, tmp_path)
        result = compare(url, UI_EXPERIMENT, UI_STUDY, tmp_path / "report")  # also logs a report run
        assert result.ui_url.startswith(f"{url}/#/experiments/")
        with HeadlessChromium(chromium, tmp_path / "chromium-profile") as browser:
            browser.set_viewport(1400, 1000)
            browser.open(result.ui_url)
            needles = ["Group: baseline", "Group: no_lrn", "3 matching runs", "Group by: experiment"]
            text = browser.wait_for_text(needles, timeout_s=120)
            assert f"report-{UI_STUDY}" not in text  # the report run is filtered out
            href = urllib.parse.unquote_plus(browser.evaluate("location.href"))
            assert f"searchFilter=tags.study = '{UI_STUDY}' AND tags.kind = 'training'" in href
            assert "compareRunsMode=CHART" in href
            browser.wait_for_text(["baseline (val/top1_error)", "no_lrn (val/top1_error)"], timeout_s=60)
            # plotly draws the curves after the legend is in the page: wait for them, as a user would
            chart = browser.wait_for(VAL_CHART_JS, lambda chart: chart and chart["lines"] >= 2, timeout_s=60)
    assert chart is not None, "no val/top1_error chart"
    assert chart["cards"] == [keys.VAL_TOP1, keys.VAL_TOP5]  # the view's chart filter: val/top
    assert chart["lines"] >= 2  # one curve per experiment (the seeds averaged), drawn
