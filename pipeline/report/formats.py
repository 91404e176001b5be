"""The ablation table for people: Markdown and a rich terminal table, with its legend, the warnings (fewer
than 3 seeds), the weights and data it rests on, and the set-aside runs apart. Scripts read ``records``
(JSON, CSV).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from pipeline.report.paper import BASELINE_EXPERIMENT, paper_baseline_error
from pipeline.report.planning import interval_notes, seed_suggestions
from pipeline.report.runs import SetAsideRun, StudyRuns
from pipeline.report.stats import MAX_SEEDS_NEEDED, MIN_SEEDS, Summary
from pipeline.report.table import AblationRow, Change

FEW_SEEDS_MARK = "⚠"

LEGEND = " ".join(
    (
        "Errors: % on the whole val split, mean ± sample std over the n seeds, scored on the weights named",
        "in 'weights' (final = the weights training ended with). 10-crop: the paper's protocol (softmax",
        "averaged over the four corner crops, the centre crop and their mirrors), the one its 40.7 / 18.2 %",
        "and its changes were measured with; centre: one centre crop.",
        "Δ: the experiment's mean error minus the baseline's, in points; positive = removing the component",
        "raised the error. The paper states each ablation as the reduction the component brings, listed here",
        "as the same positive change (LRN: +1.4 / +1.2); '> 1.0' is a bound ('by over 1%'); n.g. = the paper",
        "gives no number.",
        "[95% CI]: where both arms ran the same seeds with common random numbers (same initial weights,",
        "same data order and augmentation draws: the runs' crn_init / crn_data tags), the paired t interval",
        "of the mean per-seed difference (n-1 degrees of freedom); otherwise Welch's t interval of the",
        "difference of means (no equal-variance assumption; Welch-Satterthwaite degrees of freedom).",
        "'interval' names the method and r, the correlation of the arms' errors across seeds; Welch's",
        "interval is shown beside either way. 'seeds to resolve' ('seeds Δ n, paper n'): seeds per arm",
        "whose interval would exclude 0 at the observed spread, for the observed Δ and for the paper's Δ",
        "(> 1000: more than that). 'paper in CI': whether the",
        "paper's change lies inside the interval (for a bound: whether the interval reaches above it). A",
        "group of one run has no interval.",
    )
)


def format_error(summary: Summary, compact: bool = False) -> str:
    if summary.std is None:
        return f"{summary.mean:.2f}"
    return f"{summary.mean:.2f}{'±' if compact else ' ± '}{summary.std:.2f}"


def signed(points: float) -> str:
    """A change with its sign, 2 decimals; no "-0.00" for a change that rounds to zero."""
    return f"{(round(points, 2) or 0.0):+.2f}"


def format_interval(change: Change) -> str:
    if change.ci95 is None:
        return "n/a (n=1)"
    return f"[{signed(change.ci95.low)}, {signed(change.ci95.high)}]"


def format_welch(change: Change) -> str:
    welch = change.welch
    return "n/a (n=1)" if welch is None else f"[{signed(welch.low)}, {signed(welch.high)}]"


def format_method(row: AblationRow, change: Change) -> str:
    r = "" if change.correlation is None else f", r={change.correlation:.3f}"
    return f"{row.method}{r}"


def format_seeds(count: int | None, target: float | None) -> str:
    if target is None:
        return "—"
    return f"> {MAX_SEEDS_NEEDED}" if count is None else str(count)


def format_in_ci(verdict: bool | None) -> str:
    return "—" if verdict is None else ("yes" if verdict else "no")


def format_n(row: AblationRow) -> str:
    return f"{row.n_runs} {FEW_SEEDS_MARK}" if row.few_seeds else str(row.n_runs)


def _paper_cell(row: AblationRow, metric: str) -> str:
    if row.experiment == BASELINE_EXPERIMENT:
        return f"{paper_baseline_error(metric):.1f} (error)"
    paper = row.paper[metric]
    return "no paper row" if paper is None else paper.text


def _change_cell(row: AblationRow, column: str) -> str:
    if row.experiment == BASELINE_EXPERIMENT:
        return "reference"
    change = row.change.get(column)
    return "— (no baseline)" if change is None else f"{signed(change.delta)} {format_interval(change)}"


MARKDOWN_HEADER = [
    "experiment", "removes", "n", "weights",
    "10-crop top-1 err (%)", "Δ top-1 (pp) [95% CI]", "paper Δ top-1", "paper in CI",
    "interval", "Welch 95% CI top-1", "seeds to resolve Δ / paper Δ",
    "10-crop top-5 err (%)", "Δ top-5 (pp) [95% CI]", "paper Δ top-5", "paper in CI",
    "centre top-1 err (%)", "centre top-5 err (%)",
]  # fmt: skip


def _method_cells(row: AblationRow) -> list[str]:
    change = row.change.get("top1_tencrop")
    if change is None:
        return ["—", "—", "—"]
    paper = row.paper["top1"]
    seeds = (
        f"{format_seeds(change.seeds_needed, change.delta)} / "
        f"{format_seeds(change.seeds_needed_paper, None if paper is None else paper.value)}"
    )
    return [format_method(row, change), format_welch(change), seeds]


def markdown_cells(row: AblationRow) -> list[str]:
    cells = [row.experiment, row.component, format_n(row), row.weights]
    for metric in ("top1", "top5"):
        column = f"{metric}_tencrop"
        cells += [
            format_error(row.errors[column]),
            _change_cell(row, column),
            _paper_cell(row, metric),
            format_in_ci(row.paper_in_ci(column)),
        ]
        if metric == "top1":
            cells += _method_cells(row)
    return cells + [format_error(row.errors["top1_center"]), format_error(row.errors["top5_center"])]


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "|".join("---" for _ in header) + "|", *map(line, body)]


SET_ASIDE_HEADER = ["run", "run id", "experiment", "seed", "why not averaged"]


def _set_aside_cells(item: SetAsideRun) -> list[str]:
    return [item.run.run_name, item.run.run_id, item.run.experiment or "—", item.run.seed or "—", item.reason]


def _title(study: StudyRuns) -> str:
    scope = f"study {study.study!r}" if study.study is not None else "all studies"
    return f"Ablations of MLflow experiment {study.experiment_name!r}, {scope}"


def notes(rows: list[AblationRow], study: str | None = None) -> list[str]:
    """The plain-words lines under the table: too few seeds, no baseline, how each change's interval was
    made, runs whose lr dropped at other epochs than their baseline pair's, how many seeds would resolve each
    change, the data the rows rest on."""
    lines = []
    few = [f"{row.experiment} (n={row.n_runs})" for row in rows if row.few_seeds]
    if few:
        lines.append(
            f"{FEW_SEEDS_MARK} Fewer than {MIN_SEEDS} seeds: {', '.join(few)}. With so few runs the std is "
            "barely an estimate and the interval is wide (t has 1-3 degrees of freedom); run more seeds "
            "before concluding anything from these changes."
        )
    if not any(row.experiment == BASELINE_EXPERIMENT for row in rows):
        lines.append("No baseline run in this study: no change can be computed.")
    lines += interval_notes(rows) + seed_suggestions(rows, study)
    if rows:
        lines.append(f"Data: every row trained on the prep with dataset digest {rows[0].dataset_digest}.")
    return lines


def to_markdown(study: StudyRuns, rows: list[AblationRow], ui_url: str | None = None) -> str:
    lines = [f"# {_title(study)}", ""]
    lines += _markdown_table(MARKDOWN_HEADER, [markdown_cells(row) for row in rows])
    lines += ["", *[f"{note}\n" for note in notes(rows, study.study)], LEGEND, ""]
    if ui_url:
        lines += [f"In the MLflow UI: {ui_url}", ""]
    lines += ["## Runs listed apart (failed, unfinished, not evaluated or of another prep; not averaged)", ""]
    if study.set_aside:
        lines += _markdown_table(SET_ASIDE_HEADER, [_set_aside_cells(item) for item in study.set_aside])
    else:
        lines.append("None.")
    return "\n".join(lines) + "\n"


def _rich_tencrop_cell(row: AblationRow, metric: str) -> str:
    column = f"{metric}_tencrop"
    error = format_error(row.errors[column], compact=True)
    if row.experiment == BASELINE_EXPERIMENT:
        return f"{error}\n[dim]paper {paper_baseline_error(metric):.1f}[/dim]"
    change = row.change.get(column)
    if change is None:
        return f"{error}\nΔ — (no baseline)"
    verdict = {True: "in CI", False: "[bold]outside CI[/bold]", None: ""}[row.paper_in_ci(column)]
    paper = f"[dim]paper {_paper_cell(row, metric)}[/dim] {verdict}"
    method = f"[dim]{format_method(row, change)}[/dim]"
    welch = f"Welch {format_welch(change)}" if change.paired is not None else ""
    paper_value = row.paper[metric].value if row.paper[metric] is not None else None
    seeds = (
        f"[dim]seeds Δ {format_seeds(change.seeds_needed, change.delta)}, "
        f"paper {format_seeds(change.seeds_needed_paper, paper_value)}[/dim]"
    )
    parts = (error, f"Δ {signed(change.delta)}", format_interval(change), method, welch, seeds, paper)
    return "\n".join(part for part in parts if part)


def print_rich(
    study: StudyRuns, rows: list[AblationRow], console: Console, ui_url: str | None = None
) -> None:
    """10-crop cells: the error, Δ, its 95% interval, the paper's change and whether it lies inside; the
    centre crop's errors in the last column. Fits an 80-column terminal."""
    table = Table(title=_title(study), show_lines=True, pad_edge=False)
    table.add_column("experiment\n(weights)", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("10-crop top-1 %\nΔ pp [95% CI]", justify="right")
    table.add_column("10-crop top-5 %\nΔ pp [95% CI]", justify="right")
    table.add_column("centre\ntop-1 / top-5 %", justify="right")
    for row in rows:
        centre = f"{row.errors['top1_center'].mean:.2f}\n{row.errors['top5_center'].mean:.2f}"
        table.add_row(
            f"{row.experiment}\n[dim]({row.weights})[/dim]",
            format_n(row),
            _rich_tencrop_cell(row, "top1"),
            _rich_tencrop_cell(row, "top5"),
            centre,
        )
    console.print(table)
    for note in notes(rows, study.study):
        console.print(note, style="bold" if note.startswith(FEW_SEEDS_MARK) else None)
    console.print(LEGEND, style="dim")
    if study.set_aside:
        apart = Table(title="Runs listed apart (not averaged)")
        for title in SET_ASIDE_HEADER:
            apart.add_column(title, overflow="fold")
        for item in study.set_aside:
            apart.add_row(*_set_aside_cells(item))
        console.print(apart)
    if ui_url:
        console.print("In the MLflow UI (the study's curves, seeds grouped by experiment):")
        console.print(ui_url, soft_wrap=True)
