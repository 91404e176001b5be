"""pipeline.compare on a study made by real trainings (tests/compare/conftest.py): a 2x2 Hydra sweep whose
jobs end with their 10-crop eval, a crashed run, a run of another study."""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pytest

from pipeline.compare import REPORT_ARTIFACT_DIR, Comparison, compare, main
from pipeline.report.figures import CHANGES_PNG, GAP_PNG, VAL_CURVES_PNG
from pipeline.report.formats import signed
from pipeline.report.runs import epoch_history
from pipeline.report.stats import paired_interval, welch_interval
from pipeline.report.ui_link import SHARED_VIEW_TAG_PREFIX
from pipeline.tracking import keys
from tests.helpers.compare_study import OTHER_STUDY, TrainedStudy
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow  # the shared study takes about a minute of real training

EXPECTED_FILES = {"table.md", "table.csv", "table.json", VAL_CURVES_PNG, CHANGES_PNG, GAP_PNG}


def final_errors(study: TrainedStudy, run_names: list[str], key: str) -> list[float]:
    """The runs' last logged value of `key`, in %, read straight from MLflow."""
    runs = study.runs()
    return [100.0 * runs[name].data.metrics[key] for name in run_names]


def study_table(trained: TrainedStudy, out: Path, study: str | None = "", log: bool = False) -> Comparison:
    """compare() on the session's store; `study` defaults to the sweep's study tag."""
    return compare(
        trained.tracking_uri, trained.experiment_name, trained.study if study == "" else study, out, log
    )


def cli_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    return {**env, "COLUMNS": "120"}


def report_runs(study: TrainedStudy) -> list:
    client = study.client()
    experiment = client.get_experiment_by_name(study.experiment_name)
    return client.search_runs([experiment.experiment_id], filter_string="tags.kind = 'report'")


def test_the_sweep_tags_every_job_with_one_study(trained_study: TrainedStudy):
    runs = trained_study.runs()
    sweep = ["baseline-seed1", "baseline-seed2", "no_lrn-seed1", "no_lrn-seed2"]
    assert {runs[name].data.tags["study"] for name in sweep} == {trained_study.study}
    experiments = [runs[name].data.tags["experiment"] for name in sweep]
    assert experiments == ["baseline", "baseline", "no_lrn", "no_lrn"]
    assert {runs[name].data.tags["kind"] for name in sweep} == {"training"}
    assert {runs[name].data.tags["eval_weights"] for name in sweep} == {"final"}
    assert runs["no_lrn-seed3"].info.status == "FAILED"


def test_a_2x2_sweep_gives_two_rows_of_two_runs(trained_study: TrainedStudy, tmp_path: Path):
    result = study_table(trained_study, tmp_path)
    assert [(row.experiment, row.n_runs, row.seeds) for row in result.rows] == [
        ("baseline", 2, ("1", "2")),
        ("no_lrn", 2, ("1", "2")),
    ]
    assert all(row.few_seeds and row.weights == "final" for row in result.rows)


def test_without_a_study_every_experiment_is_grouped(trained_study: TrainedStudy, tmp_path: Path):
    result = study_table(trained_study, tmp_path, study=None)
    groups = [(row.experiment, row.n_runs) for row in result.rows]
    assert groups == [("baseline", 2), ("no_lrn", 2), ("no_dropout", 1)]
    no_dropout_line = next(
        line for line in (tmp_path / "table.md").read_text().splitlines() if line.startswith("| no_dropout ")
    )
    assert "| n.g. |" in no_dropout_line
    only_other = study_table(trained_study, tmp_path, study=OTHER_STUDY)
    assert [row.experiment for row in only_other.rows] == ["no_dropout"]


def test_mean_std_and_change_are_those_of_the_runs(trained_study: TrainedStudy, tmp_path: Path):
    rows = {row.experiment: row for row in study_table(trained_study, tmp_path).rows}
    for column, key in (
        ("top1_tencrop", keys.TENCROP_TOP1),
        ("top5_center", keys.CENTER_TOP5),
    ):
        baseline = final_errors(trained_study, ["baseline-seed1", "baseline-seed2"], key)
        no_lrn = final_errors(trained_study, ["no_lrn-seed1", "no_lrn-seed2"], key)
        assert rows["baseline"].errors[column].mean == pytest.approx(statistics.fmean(baseline))
        assert rows["baseline"].errors[column].std == pytest.approx(statistics.stdev(baseline))
        assert rows["no_lrn"].errors[column].mean == pytest.approx(statistics.fmean(no_lrn))
        change = rows["no_lrn"].change[column]
        assert change.delta == pytest.approx(statistics.fmean(no_lrn) - statistics.fmean(baseline))
        interval = welch_interval(no_lrn, baseline)
        assert (change.welch.low, change.welch.high) == pytest.approx((interval.low, interval.high))
        # seeds 1, 2 in both arms, same init and data stream: the table reads the paired interval
        paired = paired_interval(no_lrn, baseline)
        assert (change.method, change.ci95) == ("paired", change.paired)
        assert (change.ci95.low, change.ci95.high) == pytest.approx((paired.low, paired.high))
        assert column not in rows["baseline"].change
    assert rows["no_lrn"].paper["top1"].exact == 1.4
    assert rows["no_lrn"].paper["top5"].exact == 1.2


def test_failed_run_is_listed_apart_and_not_averaged(trained_study: TrainedStudy, tmp_path: Path):
    result = study_table(trained_study, tmp_path)
    failed_id = trained_study.runs()["no_lrn-seed3"].info.run_id
    assert [(s.run.run_id, s.reason) for s in result.study.set_aside] == [(failed_id, "status FAILED")]
    assert failed_id not in {run.run_id for run in result.study.usable}
    assert next(row for row in result.rows if row.experiment == "no_lrn").seeds == ("1", "2")
    apart = (tmp_path / "table.md").read_text().split("## Runs listed apart")[1]
    assert f"| no_lrn-seed3 | {failed_id} | no_lrn | 3 | status FAILED |" in apart


def test_the_centre_crop_of_the_final_eval_is_the_last_validation(trained_study: TrainedStudy):
    """Both score the final weights on the whole val split with one centre crop: the same number."""
    for run in trained_study.runs().values():
        if run.info.status == "FINISHED":
            metrics = run.data.metrics
            assert metrics[keys.CENTER_TOP1] == pytest.approx(metrics[keys.VAL_TOP1])
            assert metrics[keys.EVAL_IMAGES] == 359


def test_markdown_and_csv_hold_the_table(trained_study: TrainedStudy, tmp_path: Path):
    result = study_table(trained_study, tmp_path)
    no_lrn = next(row for row in result.rows if row.experiment == "no_lrn")
    markdown = (tmp_path / "table.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| experiment "))
    assert header.startswith(
        "| experiment | removes | n | weights | 10-crop top-1 err (%) | Δ top-1 (pp) [95% CI] "
        "| paper Δ top-1 |"
    )
    line = next(line for line in markdown.splitlines() if line.startswith("| no_lrn "))
    top1, change = no_lrn.errors["top1_tencrop"], no_lrn.change["top1_tencrop"]
    interval = f"[{signed(change.ci95.low)}, {signed(change.ci95.high)}]"
    in_ci = "yes" if change.ci95.low <= 1.4 <= change.ci95.high else "no"
    assert line.startswith(
        f"| no_lrn | without LRN | 2 ⚠ | final | {top1.mean:.2f} ± {top1.std:.2f} "
        f"| {signed(change.delta)} {interval} | +1.4 | {in_ci} |"
    )
    assert (
        "| baseline | full model | 2 ⚠ | final |" in markdown and "| reference | 40.7 (error) |" in markdown
    )
    assert "Fewer than 3 seeds: baseline (n=2), no_lrn (n=2)" in markdown
    assert (
        "Welch's t interval" in markdown and "positive = removing the component raised the error" in markdown
    )

    records = list(csv.DictReader(io.StringIO((tmp_path / "table.csv").read_text())))
    assert [(r["experiment"], r["n"], r["seeds"]) for r in records] == [
        ("baseline", "2", "1;2"),
        ("no_lrn", "2", "1;2"),
    ]
    assert float(records[1]["top1_tencrop_mean"]) == pytest.approx(top1.mean)
    assert float(records[1]["delta_top1_tencrop_ci95_low"]) == pytest.approx(change.ci95.low)
    assert (records[1]["paper_delta_top1"], records[1]["paper_delta_top5"]) == ("1.4", "1.2")
    assert records[0]["delta_top1_tencrop"] == "" and records[0]["weights"] == "final"


def test_figures_are_written_and_logged_in_a_report_run(trained_study: TrainedStudy, tmp_path: Path):
    before = len(report_runs(trained_study))
    result = study_table(trained_study, tmp_path, log=True)
    assert {path.name for path in result.files} == EXPECTED_FILES
    for name in (VAL_CURVES_PNG, CHANGES_PNG, GAP_PNG):
        height, width, _ = matplotlib.image.imread(tmp_path / name).shape
        assert height > 200 and width > 300
    client = trained_study.client()
    report = client.get_run(result.report_run_id)
    assert (report.info.status, report.data.tags["kind"], report.data.tags["study"]) == (
        "FINISHED", "report", trained_study.study,
    )  # fmt: skip
    logged = {Path(a.path).name for a in client.list_artifacts(result.report_run_id, REPORT_ARTIFACT_DIR)}
    assert logged == EXPECTED_FILES
    # the UI link opens a shared view that the experiment now holds: the study's training runs, grouped
    key = result.ui_url.split("viewStateShareKey=")[1]
    experiment = client.get_experiment_by_name(trained_study.experiment_name)
    view = json.loads(experiment.tags[SHARED_VIEW_TAG_PREFIX + key])
    assert view["searchFilter"] == f"tags.study = '{trained_study.study}' AND tags.kind = 'training'"
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "experiment"}]
    assert len(report_runs(trained_study)) == before + 1
    # The report run sits in the study's experiment with its study tag, yet is never read as a training run.
    again = study_table(trained_study, tmp_path)
    assert [(row.experiment, row.n_runs) for row in again.rows] == [("baseline", 2), ("no_lrn", 2)]
    assert result.report_run_id not in {s.run.run_id for s in again.study.set_aside}


def test_cli_json_and_csv_for_scripts_without_logging(trained_study: TrainedStudy, tmp_path: Path, capsys):
    before = len(report_runs(trained_study))
    common = [f"tracking_uri={trained_study.tracking_uri}", f"experiment={trained_study.experiment_name}",
              f"study={trained_study.study}", f"out={tmp_path}", "log=false"]  # fmt: skip
    assert main([*common, "format=json"]) == 0
    document = json.loads(capsys.readouterr().out)
    groups = [(row["experiment"], row["n"]) for row in document["rows"]]
    assert groups == [("baseline", 2), ("no_lrn", 2)]
    assert [item["run_name"] for item in document["set_aside"]] == ["no_lrn-seed3"]
    assert main([*common, "format=csv"]) == 0
    assert capsys.readouterr().out == (tmp_path / "table.csv").read_text()
    assert len(report_runs(trained_study)) == before


def test_cli_rich_table_in_a_subprocess(trained_study: TrainedStudy, tmp_path: Path):
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.compare", f"tracking_uri={trained_study.tracking_uri}",
         f"experiment={trained_study.experiment_name}", f"study={trained_study.study}",
         f"out={tmp_path}"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=cli_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no_lrn" in done.stdout and "paper +1.4" in done.stdout and "paper 40.7" in done.stdout
    assert "Fewer than 3 seeds" in done.stdout and "Welch" in done.stdout
    assert "Runs listed apart" in done.stdout and "no_lrn-seed3" in done.stdout
    assert "report run:" in done.stdout
    assert (
        "compareRunsMode=CHART&viewStateShareKey=" in done.stdout
        and "mlflow ui --backend-store-uri" in done.stdout
    )


def test_unknown_study_is_a_clear_error(trained_study: TrainedStudy, tmp_path: Path, capsys):
    argv = [f"tracking_uri={trained_study.tracking_uri}", f"experiment={trained_study.experiment_name}",
            "study=no-such-study", f"out={tmp_path}"]  # fmt: skip
    assert main(argv) == 2
    assert "no training runs with tag study='no-such-study'" in capsys.readouterr().err


def test_epoch_curves_follow_the_runs_metric_history(trained_study: TrainedStudy):
    client = trained_study.client()
    run_id = trained_study.runs()["baseline-seed1"].info.run_id
    logged = sorted(client.get_metric_history(run_id, keys.VAL_TOP1), key=lambda metric: metric.step)
    history = epoch_history(client, run_id, keys.VAL_TOP1)
    assert history == [(0, logged[0].value), (1, logged[1].value)]  # two epochs, by Lightning's 0-based count
