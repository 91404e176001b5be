"""The study's figures as PNG: val top-1 error per epoch, changes against the paper's, the train/val gap."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display (clusters, CI)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from alexnet_common.atomic_files import atomic_file  # noqa: E402
from pipeline.report.paper import BASELINE_EXPERIMENT, PaperChange, experiment_sort_key  # noqa: E402
from pipeline.report.runs import TRAIN_EPOCH_TOP1, VAL_TOP1, TrainingRun, epoch_history  # noqa: E402
from pipeline.report.table import AblationRow  # noqa: E402

# Per experiment, per run id: the run's curve as {epoch (0-based, as Lightning counts): error %}.
Curves = dict[str, dict[str, dict[int, float]]]

VAL_CURVES_PNG = "val_top1_error_vs_epoch.png"
CHANGES_PNG = "change_vs_paper.png"  # with the 95% intervals
GAP_PNG = "train_val_gap.png"


def collect_curves(client: MlflowClient, runs: list[TrainingRun], key: str) -> Curves:
    curves: Curves = defaultdict(dict)
    for run in runs:
        history = epoch_history(client, run.run_id, key)
        if history:
            curves[run.experiment][run.run_id] = {epoch: 100.0 * value for epoch, value in history}
    return dict(curves)


def mean_band(seed_curves: list[dict[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epochs (1-based), the mean over the seeds that reached each epoch, the sample std (0 for one seed)."""
    epochs = sorted({epoch for curve in seed_curves for epoch in curve})
    means, stds = [], []
    for epoch in epochs:
        values = [curve[epoch] for curve in seed_curves if epoch in curve]
        means.append(statistics.fmean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return np.array(epochs) + 1, np.array(means), np.array(stds)


def _save_atomic(figure: Figure, path: Path) -> Path:
    with atomic_file(path, "wb") as stream:
        figure.savefig(stream, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def _plot_mean_bands(axes: plt.Axes, curves: Curves) -> None:
    for experiment in sorted(curves, key=experiment_sort_key):
        epochs, mean, std = mean_band(list(curves[experiment].values()))
        style = "-" if experiment == BASELINE_EXPERIMENT else "--"
        (line,) = axes.plot(
            epochs, mean, style, marker="o", markersize=3, label=f"{experiment} (n={len(curves[experiment])})"
        )
        axes.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if curves:
        axes.legend(fontsize="small")
    axes.grid(alpha=0.3)


def plot_val_curves(curves: Curves, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    _plot_mean_bands(axes, curves)
    axes.set_ylabel("val top-1 error (%)")
    axes.set_title("Validation top-1 error (mean over seeds, band ±1 std)")
    return _save_atomic(figure, path)


def _paper_marks(axes: plt.Axes, x: np.ndarray, papers: list[PaperChange | None]) -> None:
    """The paper's changes as black diamonds; a bound as an upward triangle at it; "n.g." written."""
    exact = [np.nan if p is None or p.exact is None else p.exact for p in papers]
    axes.scatter(x, exact, marker="D", color="black", zorder=3, label="paper")
    for index, paper in enumerate(papers):
        if paper is not None and paper.relation == ">":
            axes.scatter([x[index]], [paper.value], marker="^", color="black", zorder=3)
            axes.annotate(paper.text, (x[index], paper.value), textcoords="offset points", xytext=(6, 0))
        elif paper is None or not paper.given:
            axes.annotate(
                "paper: n.g.", (x[index], 0), textcoords="offset points", xytext=(6, 4), fontsize="small"
            )


def plot_changes(rows: list[AblationRow], path: Path) -> Path:
    """Per ablation, the measured 10-crop change against the baseline with its 95% interval (paired or
    Welch's, as the table reads it) as an error bar, beside the paper's change, for top-1 and top-5."""
    ablations = [row for row in rows if row.change]
    figure, panels = plt.subplots(1, 2, figsize=(10, 4.5), sharey=False)
    x = np.arange(len(ablations))
    for axes, metric, title in zip(panels, ("top1", "top5"), ("top-1", "top-5"), strict=True):
        changes = [row.change[f"{metric}_tencrop"] for row in ablations]
        low = [c.delta - c.ci95.low if c.ci95 else np.nan for c in changes]
        high = [c.ci95.high - c.delta if c.ci95 else np.nan for c in changes]
        axes.bar(x, [c.delta for c in changes], 0.5, yerr=[low, high], capsize=6, label="this study, 95% CI")
        for index, row in enumerate(ablations):
            axes.annotate(
                f"n={row.n_runs}",
                (x[index] - 0.25, 0),
                textcoords="offset points",
                xytext=(-22, 3),
                fontsize="small",
            )
        _paper_marks(axes, x + 0.32, [row.paper[metric] for row in ablations])  # beside the bar
        axes.axhline(0, color="black", linewidth=0.8)
        axes.set_xlim(-0.7, max(len(ablations), 1) - 0.1)
        axes.set_xticks(x, [row.experiment for row in ablations], rotation=20, ha="right")
        axes.set_ylabel(f"Δ 10-crop {title} error vs baseline (pp)")
        axes.set_title(f"{title}: + = removing it raises error")
        axes.legend(fontsize="small")
        axes.grid(axis="y", alpha=0.3)
    return _save_atomic(figure, path)


def gap_curves(train: Curves, val: Curves) -> Curves:
    """Per run and epoch: val error minus train error (positive = the net fits train better than val)."""
    gaps: Curves = {}
    for experiment, val_runs in val.items():
        train_runs = train.get(experiment, {})
        run_gaps = {
            run_id: {
                epoch: val_error - train_runs[run_id][epoch]
                for epoch, val_error in curve.items()
                if epoch in train_runs[run_id]
            }  # fmt: skip
            for run_id, curve in val_runs.items()
            if run_id in train_runs
        }
        run_gaps = {run_id: gap for run_id, gap in run_gaps.items() if gap}
        if run_gaps:
            gaps[experiment] = run_gaps
    return gaps


def plot_train_val_gap(train: Curves, val: Curves, path: Path) -> Path:
    figure, axes = plt.subplots(figsize=(7, 4.5))
    gaps = gap_curves(train, val)
    if gaps:
        _plot_mean_bands(axes, gaps)
    else:
        axes.text(0.5, 0.5, "no run logged both train/epoch_top1_error and val/top1_error", ha="center")
    axes.axhline(0, color="black", linewidth=0.8)
    axes.set_ylabel("val − train top-1 error (pp)")
    axes.set_title("Train/val gap (overfitting shows as a growing gap, e.g. without dropout)")
    return _save_atomic(figure, path)


def write_figures(
    client: MlflowClient, runs: list[TrainingRun], rows: list[AblationRow], out_dir: Path
) -> list[Path]:
    """Writes the three PNGs into `out_dir` and returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    val = collect_curves(client, runs, VAL_TOP1)
    train = collect_curves(client, runs, TRAIN_EPOCH_TOP1)
    return [
        plot_val_curves(val, out_dir / VAL_CURVES_PNG),
        plot_changes(rows, out_dir / CHANGES_PNG),
        plot_train_val_gap(train, val, out_dir / GAP_PNG),
    ]
