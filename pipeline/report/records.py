"""``compare format=json`` and ``format=csv``: the table as a stable interface for scripts.

JSON (``schema_version`` 2; documented in docs/ablations.md): the study, units, the interval method, the
paper's baseline, the UI link, one record per experiment and the runs set apart. A record's keys are fixed;
a value that does not exist is null (CSV: empty). Errors in %, changes in percentage points.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pipeline.report.paper import paper_baseline_error
from pipeline.report.runs import SetAsideRun, StudyRuns
from pipeline.report.stats import CONFIDENCE, MIN_SEEDS
from pipeline.report.table import COLUMNS, AblationRow

SCHEMA_VERSION = 2
INTERVAL_METHOD = "Welch's t interval of the difference of means (unequal variances, Welch-Satterthwaite df)"


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
    }
    for column in COLUMNS:
        record[f"{column}_mean"] = row.errors[column].mean
        record[f"{column}_std"] = row.errors[column].std
    for column in COLUMNS:
        change = row.change.get(column)
        record[f"delta_{column}"] = None if change is None else change.delta
        interval = None if change is None else change.ci95
        record[f"delta_{column}_ci95"] = None if interval is None else interval.as_list()
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


def to_json(study: StudyRuns, rows: list[AblationRow], ui_url: str | None = None) -> str:
    document = {
        "schema_version": SCHEMA_VERSION,
        "experiment_name": study.experiment_name,
        "study": study.study,
        "units": {"errors": "percent", "changes": "percentage points, experiment minus baseline"},
        "confidence": CONFIDENCE,
        "interval": INTERVAL_METHOD,
        "min_seeds": MIN_SEEDS,
        "paper_baseline": {f"{m}_tencrop": paper_baseline_error(m) for m in ("top1", "top5")},
        "ui_url": ui_url,
        "rows": [row_record(row) for row in rows],
        "set_aside": [set_aside_record(item) for item in study.set_aside],
    }
    return json.dumps(document, indent=2) + "\n"


def _csv_cells(record: dict[str, Any]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for key, value in record.items():
        if key.startswith("delta_") and key.endswith("_ci95"):
            low, high = value if value is not None else ("", "")
            cells[f"{key}_low"], cells[f"{key}_high"] = low, high
        elif key == "seeds":
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
