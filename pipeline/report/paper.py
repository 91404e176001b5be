"""The published numbers that `pipeline.compare` sets beside a study's measurements, for every experiment the
project ships (``conf/experiment/*.yaml``).

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural Networks",
NeurIPS 2012. The paper reports each ablation as the error *reduction* the component brings. The study
measures the opposite direction (the run without the component against the full baseline), so the paper's
reduction of 1.4 points for LRN is the same fact as "removing LRN raises error by +1.4 points": both are
stored here as that positive change. Where the paper gives only a bound ("by over 1%") the change is a bound;
where it gives nothing, it is "n.g." (not given).
"""

from __future__ import annotations

from dataclasses import dataclass

BASELINE_EXPERIMENT = "baseline"

# ILSVRC-2012 validation error (%) of one CNN (Table 2), with the paper's test protocol: the softmax averaged
# over ten 224x224 crops (four corners, centre, and their mirrors).
PAPER_BASELINE_TOP1_ERROR = 40.7
PAPER_BASELINE_TOP5_ERROR = 18.2

RELATIONS = ("=", ">")


@dataclass(frozen=True)
class PaperChange:
    """The paper's error change (points) from removing a component: exactly ``value`` ("="), more than
    ``value`` (">", a bound), or not given (``value`` None)."""

    value: float | None
    relation: str = "="

    def __post_init__(self) -> None:
        if self.relation not in RELATIONS:
            raise ValueError(f"relation must be one of {RELATIONS} (got {self.relation!r})")

    @property
    def given(self) -> bool:
        return self.value is not None

    @property
    def exact(self) -> float | None:
        """The number where the paper gives one; None for a bound or nothing."""
        return self.value if self.relation == "=" else None

    @property
    def text(self) -> str:
        if self.value is None:
            return "n.g."
        return f"{self.value:+.1f}" if self.relation == "=" else f"> {self.value:.1f}"

    def within(self, low: float, high: float) -> bool | None:
        """Whether the paper's change lies inside [low, high]; for a bound "> v", whether the interval reaches
        above v. None when the paper gives nothing."""
        if self.value is None:
            return None
        if self.relation == ">":
            return high > self.value
        return low <= self.value <= high


NOT_GIVEN = PaperChange(None)


@dataclass(frozen=True)
class PaperAblation:
    """One ablation of the paper: what it removes (short enough for a table cell), its top-1 and top-5 error
    changes, and where the paper says so."""

    experiment: str
    component: str
    top1: PaperChange
    top5: PaperChange
    note: str


PAPER_ABLATIONS: dict[str, PaperAblation] = {
    ablation.experiment: ablation
    for ablation in (
        PaperAblation(
            "no_lrn", "LRN", PaperChange(1.4), PaperChange(1.2), "Sec. 3.3: local response normalisation"
        ),
        PaperAblation(
            "no_overlap_pool", "overlapping pooling", PaperChange(0.4), PaperChange(0.3),
            "Sec. 3.4: z=3, s=2 vs z=s=2",
        ),
        PaperAblation(
            "one_gpu_half", "two-GPU net", PaperChange(1.7), PaperChange(1.2),
            "Sec. 3.2: vs one GPU, half the kernels in conv1-conv4",
        ),
        PaperAblation("no_dropout", "dropout", NOT_GIVEN, NOT_GIVEN, 'Sec. 4.2: "substantial overfitting"'),
        PaperAblation(
            "no_pca_lighting", "PCA lighting", PaperChange(1.0, ">"), NOT_GIVEN,
            'Sec. 4.1: "reduces the top-1 error rate by over 1%"',
        ),
    )
}  # fmt: skip

# The shipped experiments that are not ablations: what the table says of them instead of a paper change.
NOT_ABLATIONS: dict[str, str] = {
    BASELINE_EXPERIMENT: "the paper's net: the reference of every change",
    "demo": "the paper's net at demo scale (profile=demo): no paper number",
}

# The table's order: the baseline, then the paper's ablations, then anything else.
PAPER_ORDER: tuple[str, ...] = (BASELINE_EXPERIMENT, *PAPER_ABLATIONS)


def paper_change(experiment: str, metric: str) -> PaperChange | None:
    """The paper's change for `experiment`; `metric` is "top1" or "top5". None when `experiment` is not one of
    the paper's ablations (the baseline, the demo, a study's own experiment)."""
    if metric not in ("top1", "top5"):
        raise ValueError(f"metric must be 'top1' or 'top5', got {metric!r}")
    ablation = PAPER_ABLATIONS.get(experiment)
    if ablation is None:
        return None
    return ablation.top1 if metric == "top1" else ablation.top5


def paper_baseline_error(metric: str) -> float:
    if metric not in ("top1", "top5"):
        raise ValueError(f"metric must be 'top1' or 'top5', got {metric!r}")
    return PAPER_BASELINE_TOP1_ERROR if metric == "top1" else PAPER_BASELINE_TOP5_ERROR


def component(experiment: str) -> str:
    """What the experiment removes, for the table: "full model" for the baseline, "" where unknown."""
    if experiment == BASELINE_EXPERIMENT:
        return "full model"
    ablation = PAPER_ABLATIONS.get(experiment)
    return f"without {ablation.component}" if ablation else ""


def experiment_sort_key(experiment: str) -> tuple[int, str]:
    """The baseline first, the paper's ablations in the paper's order, then other experiments by name."""
    if experiment in PAPER_ORDER:
        return (PAPER_ORDER.index(experiment), "")
    return (len(PAPER_ORDER), experiment)
