"""`python -m pipeline.compare`: the paper's ablation table from the runs of an MLflow experiment or study.

    python -m pipeline.compare                                   # experiment "alexnet" in ./mlflow.db
    python -m pipeline.compare study=2026-11-22T01-02-03 format=markdown
    python -m pipeline.compare tracking_uri=http://127.0.0.1:5000 experiment=alexnet out=reports/run1
    python -m pipeline.compare study=2026-11-22T01-02-03 interval=welch   # the unpaired reading only

Reads the training runs (any tracking URI), keeps those of the study's prep (dataset digest), groups them by
their `experiment` tag, prints the table (10-crop errors; changes with their 95% intervals, paired by seed
where both arms ran the same seeds with common random numbers, else Welch's, both shown; the seeds that would
resolve each change; the paper's),
writes table.md, table.csv, table.json and three PNGs to out=, logs them as artifacts of a run tagged
kind=report in the same MLflow experiment, and ends with a link that opens the study in the MLflow UI (a
shared view tag on the experiment). log=false writes nothing to the store. Report runs are never read back
as training runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from alexnet_common.atomic_files import write_text_atomic
from alexnet_common.cli import Fields, optional, parse_bool, parse_overrides
from pipeline.report.figures import write_figures
from pipeline.report.formats import print_rich, to_markdown
from pipeline.report.pairing import INTERVALS
from pipeline.report.records import to_csv, to_json
from pipeline.report.runs import StudyRuns, load_study_runs
from pipeline.report.table import AblationRow, build_rows
from pipeline.report.ui_link import runs_chart_url, share_study_view, ui_base_url, ui_command
from pipeline.tracking import keys
from pipeline.tracking.store import resolve_tracking_uri

PROGRAM = "python -m pipeline.compare"
FORMATS = ("rich", "markdown", "csv", "json")
REPORT_ARTIFACT_DIR = "ablation_report"


def _interval(text: str) -> str:
    if text not in INTERVALS:
        raise ValueError(f"use one of {', '.join(INTERVALS)}")
    return text


def _format(text: str) -> str:
    if text not in FORMATS:
        raise ValueError(f"use one of {', '.join(FORMATS)}")
    return text


@dataclass(frozen=True)
class Comparison:
    study: StudyRuns
    rows: list[AblationRow]
    files: list[Path]
    report_run_id: str | None
    ui_url: str
    ui_command: str | None  # what serves ui_url for a local store (None: a server serves its own)


def write_tables(
    study: StudyRuns, rows: list[AblationRow], out_dir: Path, ui_url: str | None, interval: str = "auto"
) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(out_dir / "table.md", to_markdown(study, rows, ui_url)),
        write_text_atomic(out_dir / "table.csv", to_csv(rows)),
        write_text_atomic(out_dir / "table.json", to_json(study, rows, ui_url, interval)),
    ]


def log_report_run(client: MlflowClient, study: StudyRuns, files: list[Path], markdown: str) -> str:
    """A run in the study's experiment holding the report files; tagged so compare skips it next time."""
    tags = {
        keys.TAG_KIND: keys.KIND_REPORT,
        "mlflow.note.content": markdown,  # the UI shows the table on the run's overview page
        "compared_runs": str(len(study.usable)),
        "set_aside_runs": str(len(study.set_aside)),
    }
    if study.study is not None:
        tags[keys.TAG_STUDY] = study.study
    run_name = f"report-{study.study}" if study.study is not None else "report-all"
    run = client.create_run(study.experiment_id, run_name=run_name, tags=tags)
    try:
        for path in files:
            client.log_artifact(run.info.run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    except Exception:
        client.set_terminated(run.info.run_id, status="FAILED")
        raise
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def compare(
    tracking_uri: str | None,
    experiment_name: str = keys.DEFAULT_EXPERIMENT_NAME,
    study: str | None = None,
    out_dir: Path = Path("reports"),
    log_report: bool = True,
    interval: str = "auto",
) -> Comparison:
    """Reads the study, writes the tables and figures to `out_dir`, and (unless not `log_report`) logs them as
    a report run and shares the study's UI view. ``interval``: "auto" (paired where the runs are pairs by
    design, else Welch's) or "welch"."""
    if interval not in INTERVALS:
        raise ValueError(f"interval={interval}: use one of {', '.join(INTERVALS)}")
    uri = resolve_tracking_uri(tracking_uri, must_exist=True)
    client = MlflowClient(tracking_uri=uri)
    runs = load_study_runs(client, experiment_name, study)
    if not runs.usable:
        reasons = "; ".join(f"{s.run.run_name}: {s.reason}" for s in runs.set_aside)
        raise ValueError(f"no finished, evaluated run to compare in {experiment_name!r} ({reasons})")
    rows = build_rows(runs.usable, interval)
    share_key = share_study_view(client, runs.experiment_id, study) if log_report else None
    ui_url = runs_chart_url(ui_base_url(uri), runs.experiment_id, share_key, study)
    files = write_tables(runs, rows, out_dir, ui_url, interval) + write_figures(
        client, runs.usable, rows, out_dir
    )
    markdown = to_markdown(runs, rows, ui_url)
    report_run_id = log_report_run(client, runs, files, markdown) if log_report else None
    return Comparison(runs, rows, files, report_run_id, ui_url, ui_command(uri))


FIELDS: Fields = {
    "tracking_uri": (
        optional(str),
        None,
        "MLflow tracking URI; default: $MLFLOW_TRACKING_URI, else ./mlflow.db",
    ),
    "experiment": (
        str,
        keys.DEFAULT_EXPERIMENT_NAME,
        "MLflow experiment (the trainer's logger.experiment_name)",
    ),
    "study": (optional(str), None, "only runs with this `study` tag (default: all runs)"),
    "format": (_format, "rich", f"what to print on stdout: {' | '.join(FORMATS)}"),
    "out": (optional(Path), None, "folder for the files (default: reports/<study|all>)"),
    "log": (parse_bool, True, "log the report as an MLflow run (kind=report)"),
    "interval": (
        _interval,
        "auto",
        "auto: paired t by seed where both arms share seeds and common random numbers, else Welch; "
        "welch: Welch's interval for every change",
    ),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    out_dir = args["out"] or Path("reports") / (args["study"] or "all")
    try:
        result = compare(
            args["tracking_uri"], args["experiment"], args["study"], out_dir, args["log"], args["interval"]
        )
    except ValueError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    if args["format"] == "rich":
        console = Console()
        print_rich(result.study, result.rows, console)
        console.print(f"files: {out_dir}/ ({', '.join(p.name for p in result.files)})")
        if result.report_run_id:
            console.print(f"report run: {result.report_run_id} (kind=report)")
        _print_ui_link(result, console)
    else:
        by_format = {"markdown": "table.md", "csv": "table.csv", "json": "table.json"}
        sys.stdout.write((out_dir / by_format[args["format"]]).read_text())
        _print_ui_link(result, Console(stderr=True))  # stdout stays the document alone
    return 0


def _print_ui_link(result: Comparison, console: Console) -> None:
    grouped = "seeds grouped by experiment" if result.report_run_id else "ungrouped: log=false shares no view"
    if result.ui_command:
        console.print(f"MLflow UI: start it with\n  {result.ui_command}", soft_wrap=True)
    console.print(f"then open the study's curves ({grouped}):", soft_wrap=True)
    console.print(f"  {result.ui_url}", soft_wrap=True, highlight=False)


if __name__ == "__main__":
    sys.exit(main())
