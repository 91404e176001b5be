"""End to end through the MLflow UI: a real `mlflow server` on 127.0.0.1, two short demo trainings logging to
it, and the UI's run-compare page opened in headless Chromium, which must show both runs and their val error.

The screenshot lands in the test's tmp folder; with ALEXNET_UPDATE_DOCS_SCREENSHOT=1 it also replaces
docs/img/mlflow-compare.png (the one the docs show).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import torch
from compare_helpers import REPO_ROOT, compose_train, tiny_overrides
from headless_chromium import HeadlessChromium, find_chromium
from mlflow.tracking import MlflowClient
from mlflow_server import mlflow_server
from PIL import Image

from pipeline.train import train

pytestmark = pytest.mark.slow

DOCS_SCREENSHOT = REPO_ROOT / "docs" / "img" / "mlflow-compare.png"
UI_EXPERIMENT = "ui-e2e"
RUN_NAMES = ("baseline-seed1", "no_lrn-seed1")


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


def ui_number(value: float) -> str:
    """How the MLflow UI prints a metric in [0.001, 10) (Utils.formatMetric): rounded to 3 decimals."""
    if value == 0:
        return "0"
    text = repr(math.floor(1000 * value + 0.5) / 1000)
    return text.removesuffix(".0")


def metric_rows(section_text: str) -> dict[str, list[str]]:
    """The compare page's Metrics section as {metric: [value per run]}: its text lists keys, then values."""
    lines = [
        line.strip()
        for line in section_text.splitlines()
        if line.strip() and line.strip() != "Show diff only"
    ]
    is_value = re.compile(r"-?\d[\d.]*(e[+-]?\d+)?|NaN|-")
    n_keys = next(index for index, line in enumerate(lines) if is_value.fullmatch(line))
    keys, values = lines[:n_keys], lines[n_keys:]
    assert len(values) == 2 * n_keys, f"expected two values per metric in:\n{section_text}"
    return {key: values[2 * index : 2 * index + 2] for index, key in enumerate(keys)}


METRICS_SECTION_JS = """(() => {
  const key = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'val/top1_error');
  return key ? key.closest('.du-bois-light-collapse-content-box').innerText : '';
})()"""

# For the screenshot: fold the long sections, bring the run names and the metrics together, and let the
# metrics box (300 px, virtualised; its key column ignores a programmatic scroll) grow to show every row.
# Presentation only, so best effort: it reports a failure instead of raising.
SCREENSHOT_LAYOUT_JS = """(() => { try {
  const headers = [...document.querySelectorAll('.du-bois-light-collapse-header')];
  headers.filter(h => ['Visualizations', 'Parameters', 'Artifacts'].includes(h.innerText.trim()))
         .forEach(h => h.click());
  const key = [...document.querySelectorAll('a')].find(a => a.textContent.trim() === 'val/top1_error');
  const box = key.closest('.du-bois-light-collapse-content-box');
  for (const grid of box.querySelectorAll('.ReactVirtualized__Grid')) {
    const rowsHeight = grid.firstElementChild.scrollHeight;
    for (let el = grid; el && el !== box; el = el.parentElement) {
      el.style.height = 'auto';
      el.style.maxHeight = 'none';
    }
    grid.style.height = rowsHeight + 'px';
  }
  headers.find(h => h.innerText.trim() === 'Run details').scrollIntoView({block: 'start'});
  return 'ok';
} catch (error) { return String(error); } })()"""


def train_demo_runs(shards: Path, url: str, root: Path) -> list[str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_ids = []
        for experiment, name in zip(("baseline", "no_lrn"), RUN_NAMES, strict=True):
            overrides = [*tiny_overrides(shards, url), f"+experiment={experiment}", "seed=1", "study=ui-e2e"]
            overrides += [f"logger.experiment_name={UI_EXPERIMENT}", f"paths.output_dir={root / name}"]
            run_ids.append(train(compose_train(overrides))["run_id"])
        return run_ids
    finally:
        torch.set_num_threads(threads)


def test_compare_page_shows_both_runs_and_their_val_error(demo_shards: Path, tmp_path: Path):
    chromium = chromium_binary()
    with mlflow_server(tmp_path) as url:
        run_ids = train_demo_runs(demo_shards, url, tmp_path)
        client = MlflowClient(url)
        experiment_id = client.get_experiment_by_name(UI_EXPERIMENT).experiment_id
        final = [client.get_run(run_id).data.metrics["val/top1_error"] for run_id in run_ids]
        query = urllib.parse.urlencode(
            {"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])}
        )
        with HeadlessChromium(chromium, tmp_path / "chromium-profile") as browser:
            browser.set_viewport(1400, 4000)  # tall: the virtualised metrics grid renders every row
            browser.open(f"{url}/#/compare-runs?{query}")
            text = browser.wait_for_text([*RUN_NAMES, *run_ids, "val/top1_error"], timeout_s=90)
            assert "Comparing 2 Runs" in text
            metrics = metric_rows(browser.evaluate(METRICS_SECTION_JS))
            assert metrics["val/top1_error"] == [ui_number(value) for value in final]
            assert "val/top5_error" in metrics and "train/epoch_top1_error" in metrics

            browser.set_viewport(1400, 1000)
            layout = browser.evaluate(SCREENSHOT_LAYOUT_JS)
            print(f"screenshot layout: {layout}")
            time.sleep(1.0)  # let React re-render the folded sections
            shot = browser.screenshot(tmp_path / "mlflow-compare.png")
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50  # a rendered page, not blank
    if os.environ.get("ALEXNET_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        partial = DOCS_SCREENSHOT.with_name(DOCS_SCREENSHOT.name + ".partial")
        shutil.copyfile(shot, partial)
        os.replace(partial, DOCS_SCREENSHOT)
