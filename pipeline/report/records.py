"""``compare format=json`` and ``format=csv``: the table as a stable interface for scripts.

JSON (``schema_version`` 3; documented in docs/ablations.md with its changelog): the study, units, the
interval methods and the one asked for, the paper's baseline, the UI link, one record per experiment, the
seed suggestions and the runs set apart. A record's keys are fixed; a value that does not exist is null (CSV:
empty). Errors in %, changes in percentage points.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pipeline.report.paper import paper_baseline_error
from pipeline.report.planning import seed_suggestions
from pipeline.report.runs import SetAsideRun, StudyRuns
from pipeline.report.stats import CONFIDENCE, MAX_SEEDS_NEEDED, MIN_SEEDS
from pipeline.report.table import COLUMNS, AblationRow

SCHEMA_VERSION = 3
INTERVAL_METHODS = {
    "paired": "paired t interval of the mean per-seed difference (n_pairs - 1 df): both arms ran the same "
    "seeds with common random numbers (equal crn_init and crn_data tags)",
    "welch": "Welch's t interval of the difference of means (unequal variances, Welch-Satterthwaite df)",
}


def row_record(row: AblationRow) -> dict[str, Any]:
    """One experiment: identity, n, mean/std per column, changes with their 95% interval, the paper's."""
    record: dict[str, Any] = {
        "experiment": row.experiment,
        "removes": row.component,
        "n": row.n_runs,
        "seeds": list(row.seeds),
        "few_seeds": row.few_seeds,
        "weights": row.weights,
        "dataset_digest": row.dataset_digest,
        "method": row.method or None,
        "method_reason": row.method_reason or None,
        "n_pairs": row.n_pairs,
        "lr_drops_differ": list(row.lr_drops_differ),
    }
    for column in COLUMNS:
        record[f"{column}_mean"] = row.errors[column].mean
        record[f"{column}_std"] = row.errors[column].std
    for column in COLUMNS:
        change = row.change.get(column)
        record[f"delta_{column}"] = None if change is None else change.delta
        for suffix, interval in (
            ("", None if change is None else change.ci95),
            ("_paired", None if change is None else change.paired),
            ("_welch", None if change is None else change.welch),
        ):
            record[f"delta_{column}_ci95{suffix}"] = None if interval is None else interval.as_list()
        record[f"delta_{column}_correlation"] = None if change is None else change.correlation
        record[f"delta_{column}_seeds_needed"] = None if change is None else change.seeds_needed
        record[f"delta_{column}_seeds_needed_paper"] = None if change is None else change.seeds_needed_paper
    for metric in ("top1", "top5"):
        paper = row.paper[metric]
        record[f"paper_delta_{metric}"] = None if paper is None else paper.exact
        record[f"paper_delta_{metric}_text"] = None if paper is None else paper.text
        record[f"paper_delta_{metric}_in_ci95"] = row.paper_in_ci(f"{metric}_tencrop")
    return record


def set_aside_record(item: SetAsideRun) -> dict[str, Any]:
    run = item.run
    return {
        "run_id": run.run_id,
        "run_name": run.run_name,
        "experiment": run.experiment,
        "seed": run.seed,
        "status": run.status,
        "dataset_digest": run.digest,
        "reason": item.reason,
    }


def to_json(
    study: StudyRuns, rows: list[AblationRow], ui_url: str | None = None, interval: str = "auto"
) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "experiment_name": study.experiment_name,
        "study": study.study,
        "units": {"errors": "percent", "changes": "percentage points, experiment minus baseline"},
        "confidence": CONFIDENCE,
        "interval": interval,
        "interval_methods": INTERVAL_METHODS,
        "min_seeds": MIN_SEEDS,
        "max_seeds_needed": MAX_SEEDS_NEEDED,
        "paper_baseline": {f"{m}_tencrop": paper_baseline_error(m) for m in ("top1", "top5")},
        "ui_url": ui_url,
        "rows": [row_record(row) for row in rows],
        "suggestions": seed_suggestions(rows, study.study),
        "set_aside": [set_aside_record(item) for item in study.set_aside],
    }
    return json.dumps(document, indent=2) + "\n"


def _csv_cells(record: dict[str, Any]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for key, value in record.items():
        if key.startswith("delta_") and "_ci95" in key:
            low, high = value if value is not None else ("", "")
            cells[f"{key}_low"], cells[f"{key}_high"] = low, high
        elif key in ("seeds", "lr_drops_differ"):
            cells[key] = ";".join(value)
        else:
            cells[key] = "" if value is None else value
    return cells


def to_csv(rows: list[AblationRow]) -> str:
    """One line per experiment, the JSON record's keys as columns (an interval as _low and _high; blank:
    null)."""
    lines = [_csv_cells(row_record(row)) for row in rows]
    buffer = io.StringIO()
    if lines:
        writer = csv.DictWriter(buffer, fieldnames=list(lines[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(lines)
    return buffer.getvalue()
