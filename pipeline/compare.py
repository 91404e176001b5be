"""`python -m pipeline.compare`: the paper's ablation table from the runs of an MLflow experiment or study.

    python -m pipeline.compare                                   # experiment "alexnet" in ./mlflow.db
    python -m pipeline.compare study=2026-11-22T01-02-03 format=markdown
    python -m pipeline.compare tracking_uri=http://127.0.0.1:5000 experiment=alexnet out=reports/run1

Reads the runs (any tracking URI), groups them by their `experiment` tag, prints the table, writes table.md,
table.csv, table.json and three PNGs to out=, and logs them as artifacts of a run tagged kind=report in the
same MLflow experiment (skipped with log=false). Report runs are never read back as training runs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from data_prep.atomic_files import write_text_atomic
from data_prep.cli import Fields, optional, parse_bool, parse_overrides
from pipeline.report.figures import write_figures
from pipeline.report.formats import print_rich, to_csv, to_json, to_markdown
from pipeline.report.runs import StudyRuns, load_study_runs
from pipeline.report.table import AblationRow, build_rows
from pipeline.tracking import keys
from pipeline.tracking.store import resolve_tracking_uri

PROGRAM = "python -m pipeline.compare"
FORMATS = ("rich", "markdown", "csv", "json")
REPORT_ARTIFACT_DIR = "ablation_report"


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


def write_tables(study: StudyRuns, rows: list[AblationRow], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        write_text_atomic(out_dir / "table.md", to_markdown(study, rows)),
        write_text_atomic(out_dir / "table.csv", to_csv(rows)),
        write_text_atomic(out_dir / "table.json", to_json(study, rows)),
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
) -> Comparison:
    """Reads the study, writes the tables and figures to `out_dir`, and logs them as a report run."""
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri, must_exist=True))
    runs = load_study_runs(client, experiment_name, study)
    if not runs.usable:
        reasons = "; ".join(f"{s.run.run_name}: {s.reason}" for s in runs.set_aside)
        raise ValueError(f"no finished run with val metrics to compare in {experiment_name!r} ({reasons})")
    rows = build_rows(runs.usable)
    files = write_tables(runs, rows, out_dir) + write_figures(client, runs.usable, rows, out_dir)
    report_run_id = log_report_run(client, runs, files, to_markdown(runs, rows)) if log_report else None
    return Comparison(runs, rows, files, report_run_id)


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
}


def main(argv: list[str] | None = None) -> int:
    args = parse_overrides(PROGRAM, sys.argv[1:] if argv is None else argv, FIELDS)
    out_dir = args["out"] or Path("reports") / (args["study"] or "all")
    try:
        result = compare(args["tracking_uri"], args["experiment"], args["study"], out_dir, args["log"])
    except ValueError as error:
        print(f"{PROGRAM}: error: {error}", file=sys.stderr)
        return 2
    if args["format"] == "rich":
        console = Console()
        print_rich(result.study, result.rows, console)
        console.print(f"files: {out_dir}/ ({', '.join(p.name for p in result.files)})")
        if result.report_run_id:
            console.print(f"report run: {result.report_run_id} (kind=report)")
    else:
        by_format = {"markdown": "table.md", "csv": "table.csv", "json": "table.json"}
        sys.stdout.write((out_dir / by_format[args["format"]]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
