"""The uncertainty in the table, checked by hand: Welch's interval against a textbook computation, the paper's
numbers (exact, a bound, not given) against an interval, and too few seeds flagged."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from pipeline.report.formats import markdown_cells, notes
from pipeline.report.paper import (
    NOT_ABLATIONS,
    PAPER_ABLATIONS,
    PaperChange,
    experiment_sort_key,
    paper_change,
)
from pipeline.report.runs import TrainingRun
from pipeline.report.stats import summarize, welch_interval
from pipeline.report.table import build_rows
from pipeline.tracking import keys
from tests.helpers.paths import CONF_DIR

CONF_EXPERIMENTS = CONF_DIR / "experiment"


def test_welch_interval_matches_the_textbook_computation_with_equal_sizes():
    # a = 1, 2, 3 and b = 4, 5, 6: means 2 and 5, variances 1 and 1, n 3 and 3.
    # se² = 1/3 + 1/3 = 2/3; df = (2/3)² / ((1/3)²/2 + (1/3)²/2) = (4/9) / (1/9) = 4;
    # t(0.975, 4) = 2.776 (any t table: 2.7764451); half width = 2.7764451 * sqrt(2/3) = 2.2669579.
    interval = welch_interval([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert interval.df == pytest.approx(4.0)
    assert interval.low == pytest.approx(-3.0 - 2.2669579, abs=1e-6)
    assert interval.high == pytest.approx(-3.0 + 2.2669579, abs=1e-6)


def test_welch_interval_with_unequal_sizes_and_spread():
    # a = 1, 2, 3 (mean 2, variance 1, n 3) and b = 4, 6 (mean 5, variance 2, n 2):
    # se² = 1/3 + 2/2 = 4/3; df = (4/3)² / ((1/3)²/2 + 1²/1) = (16/9) / (19/18) = 32/19.
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0]
    interval = welch_interval(a, b)
    assert interval.df == pytest.approx(32 / 19)
    half_width = scipy_stats.t.ppf(0.975, 32 / 19) * math.sqrt(4 / 3)
    assert (interval.low, interval.high) == pytest.approx((-3.0 - half_width, -3.0 + half_width))
    # and scipy's own Welch test agrees
    reference = scipy_stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert (interval.low, interval.high) == pytest.approx((reference.low, reference.high))


def test_welch_interval_needs_two_runs_per_group_and_handles_no_spread():
    assert welch_interval([1.0], [2.0, 3.0]) is None
    flat = welch_interval([2.0, 2.0], [1.0, 1.0])
    assert (flat.low, flat.high) == (1.0, 1.0)
    with pytest.raises(ValueError, match="confidence"):
        welch_interval([1.0, 2.0], [1.0, 2.0], confidence=1.5)
    assert summarize([3.0]).std is None and summarize([1.0, 3.0]).std == pytest.approx(math.sqrt(2))


def test_the_paper_change_inside_an_interval_exact_bound_and_not_given():
    assert PaperChange(1.4).within(0.5, 2.0) is True
    assert PaperChange(1.4).within(1.5, 2.0) is False
    assert PaperChange(1.0, ">").within(-3.0, 1.2) is True  # the interval reaches above the bound
    assert PaperChange(1.0, ">").within(-3.0, 0.9) is False
    assert PaperChange(None).within(-1.0, 1.0) is None
    assert [PaperChange(1.4).text, PaperChange(1.0, ">").text, PaperChange(None).text] == [
        "+1.4",
        "> 1.0",
        "n.g.",
    ]


def test_paper_covers_every_shipped_experiment():
    shipped = {path.stem for path in CONF_EXPERIMENTS.glob("*.yaml")}
    assert shipped == set(PAPER_ABLATIONS) | set(NOT_ABLATIONS)
    assert (paper_change("no_lrn", "top1").exact, paper_change("no_lrn", "top5").exact) == (1.4, 1.2)
    assert (paper_change("no_overlap_pool", "top1").exact, paper_change("one_gpu_half", "top1").exact) == (
        0.4,
        1.7,
    )
    assert (paper_change("no_pca_lighting", "top1").text, paper_change("no_pca_lighting", "top5").text) == (
        "> 1.0",
        "n.g.",
    )
    assert paper_change("no_dropout", "top1").text == "n.g." and paper_change("demo", "top1") is None
    names = ["zeta", "no_pca_lighting", "no_dropout", "no_lrn", "baseline", "one_gpu_half", "no_overlap_pool"]
    assert sorted(names, key=experiment_sort_key) == [
        "baseline", "no_lrn", "no_overlap_pool", "one_gpu_half", "no_dropout", "no_pca_lighting", "zeta",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="'top1' or 'top5'"):
        paper_change("no_lrn", "top3")


def fake_run(experiment: str, seed: int, tencrop_top1: float, digest: str = "d1") -> TrainingRun:
    """A finished, evaluated run: 10-crop top-1 as given (a fraction), the other errors derived from it."""
    metrics = {
        keys.TENCROP_TOP1: tencrop_top1,
        keys.TENCROP_TOP5: tencrop_top1 / 2,
        keys.CENTER_TOP1: tencrop_top1 + 0.01,
        keys.CENTER_TOP5: tencrop_top1 / 2 + 0.01,
    }
    return TrainingRun(
        run_id=f"{experiment}-{seed}", run_name=f"{experiment}-seed{seed}", experiment=experiment,
        seed=str(seed), status="FINISHED", final_metrics=metrics, dataset_digests=(digest,),
        eval_weights="final", start_time=seed,
    )  # fmt: skip


def test_a_group_of_two_seeds_is_flagged_and_three_are_not():
    runs = [fake_run("baseline", seed, 0.40 + 0.01 * seed) for seed in (1, 2, 3)]
    runs += [fake_run("no_lrn", seed, 0.42 + 0.01 * seed) for seed in (1, 2)]
    baseline, no_lrn = build_rows(runs)
    assert (baseline.n_runs, baseline.few_seeds, no_lrn.n_runs, no_lrn.few_seeds) == (3, False, 2, True)
    assert markdown_cells(baseline)[2] == "3" and markdown_cells(no_lrn)[2] == "2 ⚠"
    [warning] = [line for line in notes([baseline, no_lrn]) if "Fewer than 3 seeds" in line]
    assert "no_lrn (n=2)" in warning and "baseline" not in warning
    # Δ and its interval are those of the percentages: mean(43, 44) - mean(41, 42, 43) = +1.5 points
    change = no_lrn.change["top1_tencrop"]
    expected = welch_interval([43.0, 44.0], [41.0, 42.0, 43.0])
    assert change.delta == pytest.approx(1.5)
    assert (change.ci95.low, change.ci95.high) == pytest.approx((expected.low, expected.high))
    assert no_lrn.paper_in_ci("top1_tencrop") is (expected.low <= 1.4 <= expected.high)
    assert no_lrn.paper_in_ci("top1_center") is None  # the paper's changes are 10-crop changes


def test_build_rows_refuses_runs_of_two_digests():
    runs = [fake_run("baseline", 1, 0.4, "d1"), fake_run("baseline", 2, 0.5, "d2")]
    with pytest.raises(ValueError, match="2 dataset digests"):
        build_rows(runs)
