"""The ablation table as Markdown, CSV, JSON and a rich terminal table, with the set-aside runs apart."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from pipeline.report.paper import BASELINE_EXPERIMENT, PAPER_BASELINE_TOP1_ERROR, PAPER_BASELINE_TOP5_ERROR
from pipeline.report.runs import SetAsideRun, StudyRuns
from pipeline.report.table import ERROR_COLUMNS, AblationRow, ErrorSummary, present_columns

COLUMN_TITLES = {
    "top1": "top-1",
    "top5": "top-5",
    "tencrop_top1": "10-crop top-1",
    "tencrop_top5": "10-crop top-5",
}

SIGN_CONVENTION = (
    "Errors in % (final epoch, mean ± sample std over seeds). Δ = the experiment's mean error minus the "
    "baseline's, in percentage points: positive means removing the component raised the error. The paper "
    "reports the same effects as the error reductions the components bring, so its LRN result "
    "(1.4 / 1.2 lower top-1 / top-5 error) is listed as paper +1.4 / +1.2. Centre-crop columns are "
    "the last val/*_error of training; 10-crop columns appear where pipeline.evaluate logged eval/tencrop_*."
)


def format_error(summary: ErrorSummary | None, compact: bool = False) -> str:
    if summary is None:
        return "—"
    if summary.std is None:
        return f"{summary.mean:.2f}"
    plus_minus = "±" if compact else " ± "
    return f"{summary.mean:.2f}{plus_minus}{summary.std:.2f}"


def _paper_text(value: float | None, experiment: str) -> str:
    if value is not None:
        return f"paper {value:+.1f}"
    return "paper: not given" if experiment == "no_dropout" else "no paper row"


def format_change(row: AblationRow, column: str) -> str:
    """E.g. '+1.23 (paper +1.4)'; the baseline row names the paper's own baseline error instead."""
    if row.experiment == BASELINE_EXPERIMENT:
        paper_error = PAPER_BASELINE_TOP1_ERROR if column.endswith("top1") else PAPER_BASELINE_TOP5_ERROR
        return f"reference (paper {paper_error:.1f})"
    measured = f"{row.change[column]:+.2f}" if column in row.change else "—"
    return f"{measured} ({_paper_text(row.paper_change[column], row.experiment)})"


def table_header(columns: list[str]) -> list[str]:
    header = ["experiment", "removes", "n"]
    for column in columns:
        header += [f"{COLUMN_TITLES[column]} err (%)", f"Δ {COLUMN_TITLES[column]} (pp)"]
    return header


def table_cells(row: AblationRow, columns: list[str]) -> list[str]:
    cells = [row.experiment, row.component, str(row.n_runs)]
    for column in columns:
        cells += [format_error(row.errors.get(column)), format_change(row, column)]
    return cells


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, body)]


def _set_aside_cells(item: SetAsideRun) -> list[str]:
    return [item.run.run_name, item.run.run_id, item.run.experiment or "—", item.run.seed or "—", item.reason]


SET_ASIDE_HEADER = ["run", "run id", "experiment", "seed", "why not averaged"]


def _title(study: StudyRuns) -> str:
    scope = f"study {study.study!r}" if study.study is not None else "all studies"
    return f"Ablations of MLflow experiment {study.experiment_name!r}, {scope}"


def to_markdown(study: StudyRuns, rows: list[AblationRow]) -> str:
    columns = present_columns(rows)
    lines = [f"# {_title(study)}", ""]
    lines += _markdown_table(table_header(columns), [table_cells(row, columns) for row in rows])
    lines += ["", SIGN_CONVENTION, ""]
    lines += ["## Runs listed apart (failed, unfinished or incomplete; not averaged)", ""]
    if study.set_aside:
        lines += _markdown_table(SET_ASIDE_HEADER, [_set_aside_cells(item) for item in study.set_aside])
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["experiment", "removes", "n_runs", "seeds"] + [
    field
    for column, _, _ in ERROR_COLUMNS
    for field in (
        f"{column}_error_pct_mean",
        f"{column}_error_pct_std",
        f"{column}_change_pp",
        f"paper_{column}_change_pp",
    )
]


def _csv_record(row: AblationRow) -> dict[str, object]:
    record: dict[str, object] = {
        "experiment": row.experiment,
        "removes": row.component,
        "n_runs": row.n_runs,
        "seeds": ";".join(row.seeds),
    }
    for column, _, _ in ERROR_COLUMNS:
        summary = row.errors.get(column)
        record[f"{column}_error_pct_mean"] = "" if summary is None else summary.mean
        record[f"{column}_error_pct_std"] = "" if summary is None or summary.std is None else summary.std
        record[f"{column}_change_pp"] = row.change.get(column, "")
        paper = row.paper_change[column]
        record[f"paper_{column}_change_pp"] = "" if paper is None else paper
    return record


def to_csv(rows: list[AblationRow]) -> str:
    """One line per experiment with a fixed set of columns (blank where a value does not exist)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(_csv_record(row))
    return buffer.getvalue()


def to_json(study: StudyRuns, rows: list[AblationRow]) -> str:
    document = {
        "experiment_name": study.experiment_name,
        "study": study.study,
        "units": {"errors": "percent", "changes": "percentage points, experiment minus baseline"},
        "rows": [asdict(row) for row in rows],
        "set_aside": [
            {
                "run_id": s.run.run_id,
                "run_name": s.run.run_name,
                "experiment": s.run.experiment,
                "seed": s.run.seed,
                "status": s.run.status,
                "reason": s.reason,
            }
            for s in study.set_aside
        ],
    }
    return json.dumps(document, indent=2) + "\n"


def _short_change(row: AblationRow, column: str) -> str:
    """The change cell of the terminal table: '+1.62 (+1.4)', the paper's change in brackets."""
    if row.experiment == BASELINE_EXPERIMENT:
        paper_error = PAPER_BASELINE_TOP1_ERROR if column.endswith("top1") else PAPER_BASELINE_TOP5_ERROR
        return f"[dim]paper {paper_error:.1f}[/dim]"
    measured = f"{row.change[column]:+.2f}" if column in row.change else "—"
    paper = row.paper_change[column]
    if paper is not None:
        return f"{measured} [dim]({paper:+.1f})[/dim]"
    return f"{measured} [dim]({'n.g.' if row.experiment == 'no_dropout' else 'none'})[/dim]"


def print_rich(study: StudyRuns, rows: list[AblationRow], console: Console) -> None:
    """Each metric cell holds the error on its first line and the change (the paper's in brackets) on its
    second, which keeps the table readable in an 80-column terminal."""
    columns = present_columns(rows)
    table = Table(title=_title(study), show_lines=True, pad_edge=False)
    table.add_column("experiment", no_wrap=True)
    table.add_column("n", justify="right")
    for column in columns:
        table.add_column(f"{COLUMN_TITLES[column]} %\nΔ (paper)", justify="right")
    for row in rows:
        cells = [f"{format_error(row.errors.get(c), compact=True)}\n{_short_change(row, c)}" for c in columns]
        table.add_row(row.experiment, str(row.n_runs), *cells)
    console.print(table)
    console.print(SIGN_CONVENTION + " n.g. = the paper gives no number.", style="dim")
    if study.set_aside:
        apart = Table(title="Runs listed apart (not averaged)")
        for title in SET_ASIDE_HEADER:
            apart.add_column(title, overflow="fold")
        for item in study.set_aside:
            apart.add_row(*_set_aside_cells(item))
        console.print(apart)
