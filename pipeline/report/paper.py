"""The published numbers that `pipeline.compare` sets beside a study's measurements.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
NeurIPS 2012. The paper reports each ablation as the error *reduction* the component brings. The study
measures the opposite direction (the run without the component against the full baseline), so the paper's
reduction of 1.4 points for LRN is the same fact as "removing LRN raises error by +1.4 points": both are
stored here as that positive change.
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINE_EXPERIMENT = "baseline"

# ILSVRC-2012 validation error (%) of one CNN, as printed in the paper.
PAPER_BASELINE_TOP1_ERROR = 40.7
PAPER_BASELINE_TOP5_ERROR = 18.2


@dataclass(frozen=True)
class PaperAblation:
    """One ablation of the paper: what it removes, and the error change (in points) that removing it causes.

    A change of None means the paper gives no number.
    """

    experiment: str
    component: str  # what the experiment removes, short enough for a table cell
    top1_change: float | None
    top5_change: float | None
    note: str


PAPER_ABLATIONS: dict[str, PaperAblation] = {
    ablation.experiment: ablation
    for ablation in (
        PaperAblation("no_lrn", "LRN", 1.4, 1.2, "Sec. 3.3: local response normalisation"),
        PaperAblation("no_overlap_pool", "overlapping pooling", 0.4, 0.3, "Sec. 3.4: z=3, s=2 vs z=s=2"),
        PaperAblation(
            "one_gpu_half", "two-GPU net", 1.7, 1.2, "Sec. 3.2: vs one GPU, half the kernels in conv1-conv4"
        ),
        PaperAblation("no_dropout", "dropout", None, None, 'Sec. 4.2: no number, "substantial overfitting"'),
    )
}

# The table's order: the baseline, then the paper's ablations, then anything else.
PAPER_ORDER: tuple[str, ...] = (BASELINE_EXPERIMENT, *PAPER_ABLATIONS)


def paper_change(experiment: str, metric: str) -> float | None:
    """The paper's error change for `experiment` in percentage points; `metric` is "top1" or "top5"."""
    if metric not in ("top1", "top5"):
        raise ValueError(f"metric must be 'top1' or 'top5', got {metric!r}")
    ablation = PAPER_ABLATIONS.get(experiment)
    if ablation is None:
        return None
    return ablation.top1_change if metric == "top1" else ablation.top5_change


def experiment_sort_key(experiment: str) -> tuple[int, str]:
    """The baseline first, the paper's ablations in the paper's order, then other experiments by name."""
    if experiment in PAPER_ORDER:
        return (PAPER_ORDER.index(experiment), "")
    return (len(PAPER_ORDER), experiment)
