"""`python -m pipeline.compare`: the paper's ablation table from the runs of an MLflow experiment or study.

    python -m pipeline.compare                                   # experiment "alexnet" in ./mlflow.db
    python -m pipeline.compare --study 2026-11-22T01-02-03 --format markdown
    python -m pipeline.compare --tracking-uri http://127.0.0.1:5000 --experiment alexnet --out reports/run1

Reads the runs (any tracking URI), groups them by their `experiment` tag, prints the table, writes table.md,
table.csv, table.json and three PNGs to --out, and logs them as artifacts of a run tagged kind=report in the
same MLflow experiment (skipped with --no-log). Report runs are never read back as training runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from pipeline.ablation_table import AblationRow, build_rows
from pipeline.report_figures import write_figures
from pipeline.report_formats import print_rich, to_csv, to_json, to_markdown
from pipeline.study_runs import (
    DEFAULT_EXPERIMENT_NAME,
    REPORT_KIND_TAG,
    REPORT_KIND_VALUE,
    StudyRuns,
    load_study_runs,
    resolve_tracking_uri,
)

FORMATS = ("rich", "markdown", "csv", "json")
REPORT_ARTIFACT_DIR = "ablation_report"


@dataclass(frozen=True)
class Comparison:
    study: StudyRuns
    rows: list[AblationRow]
    files: list[Path]
    report_run_id: str | None


def _write_text_atomic(path: Path, text: str) -> Path:
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=path.name, suffix=".partial", delete=False
    ) as partial:
        partial.write(text)
    os.replace(partial.name, path)
    return path


def write_tables(study: StudyRuns, rows: list[AblationRow], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _write_text_atomic(out_dir / "table.md", to_markdown(study, rows)),
        _write_text_atomic(out_dir / "table.csv", to_csv(rows)),
        _write_text_atomic(out_dir / "table.json", to_json(study, rows)),
    ]


def log_report_run(client: MlflowClient, study: StudyRuns, files: list[Path], markdown: str) -> str:
    """A run in the study's experiment holding the report files; tagged so compare skips it next time."""
    tags = {
        REPORT_KIND_TAG: REPORT_KIND_VALUE,
        "mlflow.note.content": markdown,  # the UI shows the table on the run's overview page
        "compared_runs": str(len(study.usable)),
        "set_aside_runs": str(len(study.set_aside)),
    }
    if study.study is not None:
        tags["study"] = study.study
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
    experiment_name: str = DEFAULT_EXPERIMENT_NAME,
    study: str | None = None,
    out_dir: Path = Path("reports"),
    log_report: bool = True,
) -> Comparison:
    """Reads the study, writes the tables and figures to `out_dir`, and logs them as a report run."""
    client = MlflowClient(tracking_uri=resolve_tracking_uri(tracking_uri))
    runs = load_study_runs(client, experiment_name, study)
    if not runs.usable:
        reasons = "; ".join(f"{s.run.run_name}: {s.reason}" for s in runs.set_aside)
        raise ValueError(f"no finished run with val metrics to compare in {experiment_name!r} ({reasons})")
    rows = build_rows(runs.usable)
    files = write_tables(runs, rows, out_dir) + write_figures(client, runs.usable, rows, out_dir)
    report_run_id = log_report_run(client, runs, files, to_markdown(runs, rows)) if log_report else None
    return Comparison(runs, rows, files, report_run_id)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.compare",
        description="The paper's ablation table (mean ± std over seeds, change vs baseline beside the "
        "paper's) from the runs of an MLflow experiment.",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)",
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT_NAME,
        help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT_NAME}, the trainer's logger.experiment_name)",
    )
    parser.add_argument("--study", default=None, help="only runs with this `study` tag (default: all runs)")
    parser.add_argument("--format", choices=FORMATS, default="rich", help="what to print on stdout")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for the files (default: reports/<study|all>)"
    )
    parser.add_argument("--no-log", action="store_true", help="do not log the report as an MLflow run")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir = args.out or Path("reports") / (args.study or "all")
    try:
        result = compare(args.tracking_uri, args.experiment, args.study, out_dir, not args.no_log)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.format == "rich":
        console = Console()
        print_rich(result.study, result.rows, console)
        console.print(f"files: {out_dir}/ ({', '.join(p.name for p in result.files)})")
        if result.report_run_id:
            console.print(f"report run: {result.report_run_id} (kind=report)")
    else:
        by_format = {"markdown": "table.md", "csv": "table.csv", "json": "table.json"}
        sys.stdout.write((out_dir / by_format[args.format]).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
