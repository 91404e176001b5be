"""Paired-seed intervals and seeds-needed planning, checked by hand: the paired t interval against a textbook
computation, when compare pairs and when it falls back to Welch (and says why), how many seeds would resolve
a change, the suggestion under the table, and the flag for runs whose lr dropped at other epochs."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest

from pipeline.report.formats import markdown_cells, notes
from pipeline.report.pairing import pair_runs
from pipeline.report.records import row_record, to_csv, to_json
from pipeline.report.runs import StudyRuns, TrainingRun
from pipeline.report.stats import (
    MAX_SEEDS_NEEDED,
    correlation,
    paired_interval,
    seeds_needed_paired,
    seeds_needed_welch,
    welch_interval,
)
from pipeline.report.table import build_rows
from pipeline.tracking import keys

# The measurement: 10-crop top-1 error (%) of a fresh-clone `make demo`, seeds 1, 2, 3.
BASELINE = [16.99, 19.22, 18.94]
NO_LRN = [19.50, 20.89, 20.61]


def test_paired_interval_matches_the_textbook_computation():
    # d = 2.51, 1.67, 1.67: mean 1.95; deviations 0.56, -0.28, -0.28, s_d² = 0.4704 / 2 = 0.2352,
    # s_d = 0.484974; se = s_d / sqrt(3) = 0.280000; t(0.975, 2) = 4.302653 (any t table: 4.303);
    # half width = 4.302653 * 0.280000 = 1.204743: [0.745257, 3.154743].
    interval = paired_interval(NO_LRN, BASELINE)
    assert interval.df == 2
    assert (interval.low, interval.high) == pytest.approx((0.745257, 3.154743), abs=1e-5)
    # the same six runs read as unrelated groups: Welch's [-0.53, +4.43], 2.08x as wide
    welch = welch_interval(NO_LRN, BASELINE)
    assert (welch.low, welch.high) == pytest.approx((-0.532839, 4.432839), abs=1e-5)
    assert correlation(NO_LRN, BASELINE) == pytest.approx(0.997, abs=5e-4)


def test_paired_interval_edge_cases():
    assert paired_interval([1.0], [2.0]) is None
    flat = paired_interval([3.0, 4.0], [2.0, 3.0])  # every difference exactly 1: no spread
    assert (flat.low, flat.high) == (1.0, 1.0)
    with pytest.raises(ValueError, match="as many values"):
        paired_interval([1.0, 2.0], [1.0])
    assert correlation([1.0, 1.0], [1.0, 2.0]) is None


def test_seeds_needed_against_a_hand_computation():
    # paired, s_d = 1, |Δ| = 1: half width t(0.975, n-1) / sqrt(n): n=6: 2.5706 / 2.4495 = 1.049 (not
    # below 1); n=7: 2.4469 / 2.6458 = 0.925: 7 pairs.
    assert seeds_needed_paired(1.0, 1.0) == 7
    assert seeds_needed_paired(1.0, -1.0) == 7  # a change's size, whatever its sign
    # Welch, s_a = s_b = 1, |Δ| = 1: se = sqrt(2/n), df = 2(n-1): n=8: t(14) 2.1448 * 0.5 = 1.072;
    # n=9: t(16) 2.1199 * 0.4714 = 0.9993: 9 seeds per arm.
    assert seeds_needed_welch(1.0, 1.0, 1.0) == 9
    # the demo, paired: s_d = 0.485 resolves +1.95 with 3 pairs (half width 1.20)
    assert seeds_needed_paired(0.484974, 1.95) == 3
    assert seeds_needed_paired(1.0, 0.0) is None  # nothing to resolve
    assert seeds_needed_paired(100.0, 0.01) is None  # beyond MAX_SEEDS_NEEDED


def fake_run(experiment: str, seed: int, top1: float, **tags: object) -> TrainingRun:
    """A finished, evaluated run: 10-crop top-1 as given (%), the other errors derived from it."""
    fraction = top1 / 100
    metrics = {
        keys.TENCROP_TOP1: fraction,
        keys.TENCROP_TOP5: fraction / 2,
        keys.CENTER_TOP1: fraction + 0.01,
        keys.CENTER_TOP5: fraction / 2 + 0.01,
    }
    defaults: dict[str, object] = {"crn_init": f"init{seed}", "crn_data": f"data{seed}"}
    return TrainingRun(
        run_id=f"{experiment}-{seed}", run_name=f"{experiment}-seed{seed}", experiment=experiment,
        seed=str(seed), status="FINISHED", final_metrics=metrics, dataset_digests=("d",),
        eval_weights="final", start_time=seed, **{**defaults, **tags},
    )  # fmt: skip


def demo_study(**no_lrn_tags: object) -> list[TrainingRun]:
    runs = [fake_run("baseline", seed, error) for seed, error in zip((1, 2, 3), BASELINE, strict=True)]
    return runs + [
        fake_run("no_lrn", seed, error, **no_lrn_tags) for seed, error in zip((1, 2, 3), NO_LRN, strict=True)
    ]


def test_compare_pairs_the_demo_study_and_shows_welch_beside():
    _, no_lrn = build_rows(demo_study())
    change = no_lrn.change["top1_tencrop"]
    assert (no_lrn.method, no_lrn.n_pairs) == ("paired", 3)
    assert (change.ci95.low, change.ci95.high) == pytest.approx((0.745257, 3.154743), abs=1e-5)
    assert change.paired == change.ci95 and change.welch.low == pytest.approx(-0.532839, abs=1e-5)
    assert change.seeds_needed == 3 and change.seeds_needed_paper == 3  # +1.95 and the paper's +1.4
    assert no_lrn.paper_in_ci("top1_tencrop") is True
    cells = markdown_cells(no_lrn)
    assert cells[5] == "+1.95 [+0.75, +3.15]" and cells[8] == "paired, r=0.997"
    assert cells[9] == "[-0.53, +4.43]" and cells[10] == "3 / 3"
    record = row_record(no_lrn)
    assert record["method"] == "paired" and record["n_pairs"] == 3
    assert record["delta_top1_tencrop_ci95_welch"] == pytest.approx([-0.532839, 4.432839], abs=1e-5)
    assert record["delta_top1_tencrop_correlation"] == pytest.approx(0.9971, abs=1e-4)
    # interval=welch: the unpaired reading, with its own planning
    _, unpaired = build_rows(demo_study(), interval="welch")
    assert unpaired.method == "welch" and "interval=welch" in unpaired.method_reason
    assert unpaired.change["top1_tencrop"].ci95 == change.welch
    assert unpaired.change["top1_tencrop"].paired is None
    sd_a, sd_b = math.sqrt(0.540433), math.sqrt(1.475633)  # the arms' sample stds (0.74 and 1.21)
    assert unpaired.change["top1_tencrop"].seeds_needed == seeds_needed_welch(sd_a, sd_b, 1.95)


@pytest.mark.parametrize(
    ("runs", "reason"),
    [
        (demo_study()[:-1], "seed sets differ (1,2 vs baseline 1,2,3)"),
        (demo_study(crn_init="other"), "initial weights differ from the baseline's (crn_init)"),
        (demo_study(crn_data="other"), "data order or augmentation draws differ from the baseline's"),
        (demo_study(crn_init=""), "runs without crn_init/crn_data tags"),
        (demo_study() + [fake_run("no_lrn", 3, 21.0)], "a seed appears twice in one arm"),
    ],
    ids=["seed-sets", "init", "data", "untagged", "repeated-seed"],
)
def test_welch_where_the_runs_are_not_pairs_by_design(runs: list[TrainingRun], reason: str):
    _, row = build_rows(runs)
    assert row.method == "welch" and reason in row.method_reason and row.n_pairs == 0
    change = row.change["top1_tencrop"]
    assert change.paired is None and change.ci95 == change.welch
    assert f"Interval, no_lrn: welch ({row.method_reason})." in notes(build_rows(runs))
    paired = pair_runs(demo_study()[3:], demo_study()[:3])
    assert (paired.method, paired.reason) == ("paired", "same seeds, common random numbers: 3 pairs")


def test_one_pair_is_no_pairing_and_bad_interval_is_refused():
    one = [fake_run("baseline", 1, 17.0), fake_run("no_lrn", 1, 19.0)]
    assert pair_runs(one[1:], one[:1]).reason == "fewer than 2 pairs"
    with pytest.raises(ValueError, match="interval must be one of auto, welch"):
        pair_runs(one[1:], one[:1], "bayes")


def test_a_change_inside_zero_gets_the_seeds_to_resolve_it_and_the_sweep():
    # no_overlap_pool seeds 1-3: differences 0.9, -0.3, 0.6 (mean 0.4, s_d 0.6245): the interval holds 0.
    runs = [fake_run("baseline", seed, error) for seed, error in ((1, 20.0), (2, 21.0), (3, 22.0))]
    runs += [fake_run("no_overlap_pool", seed, error) for seed, error in ((1, 20.9), (2, 20.7), (3, 22.6))]
    _, row = build_rows(runs)
    change = row.change["top1_tencrop"]
    assert change.ci95.low < 0 < change.ci95.high and change.delta == pytest.approx(0.4)
    assert change.seeds_needed == seeds_needed_paired(0.6244998, 0.4) == 12
    [line] = [line for line in notes([*build_rows(runs)], "s1") if "seeds to resolve" in line]
    assert line == (
        "no_overlap_pool: about 12 seeds to resolve 0.40 pp at this spread (paired); rerun with "
        "seed=4,5,6,7,8,9,10,11,12: python -m pipeline.train -m +experiment=baseline,no_overlap_pool "
        "seed=4,5,6,7,8,9,10,11,12 study=s1"
    )


def test_rows_whose_same_seed_runs_dropped_the_lr_at_other_epochs_are_flagged():
    runs = [fake_run("baseline", seed, 18.0 + seed, lr_drop_epochs=(5,)) for seed in (1, 2)]
    runs += [fake_run("no_lrn", seed, 19.0 + seed, lr_drop_epochs=(drop,)) for seed, drop in ((1, 5), (2, 7))]
    _, row = build_rows(runs)
    assert row.lr_drops_differ == ("seed 2: [7] vs [5]",)
    [flag] = [line for line in notes(build_rows(runs)) if line.startswith("⚑")]
    assert "no_lrn: the lr dropped at other epochs" in flag and "seed 2: [7] vs [5]" in flag
    assert row_record(row)["lr_drops_differ"] == ["seed 2: [7] vs [5]"]


def test_json_and_csv_carry_the_method_both_intervals_and_the_suggestions():
    runs = [fake_run("baseline", seed, error) for seed, error in ((1, 20.0), (2, 21.0), (3, 22.0))]
    runs += [fake_run("no_overlap_pool", seed, error) for seed, error in ((1, 20.9), (2, 20.7), (3, 22.6))]
    rows = build_rows(runs)
    document = json.loads(to_json(StudyRuns("alexnet", "1", "s1", runs, []), rows, interval="auto"))
    assert (document["schema_version"], document["interval"]) == (3, "auto")
    assert document["max_seeds_needed"] == MAX_SEEDS_NEEDED
    assert set(document["interval_methods"]) == {"paired", "welch"}
    [suggestion] = document["suggestions"]
    assert suggestion.startswith("no_overlap_pool: about 12 seeds to resolve 0.40 pp")
    record = document["rows"][1]
    assert record["delta_top1_tencrop_seeds_needed"] == 12
    assert record["delta_top1_tencrop_seeds_needed_paper"] == seeds_needed_paired(0.6244998, 0.4)
    assert record["delta_top1_center_seeds_needed_paper"] is None  # the paper has no centre-crop numbers
    [line] = list(csv.DictReader(io.StringIO(to_csv(rows))))[1:]
    assert (line["method"], line["n_pairs"], line["lr_drops_differ"]) == ("paired", "3", "")
    welch, paired = record["delta_top1_tencrop_ci95_welch"], record["delta_top1_tencrop_ci95"]
    assert float(line["delta_top1_tencrop_ci95_welch_low"]) == pytest.approx(welch[0])
    assert float(line["delta_top1_tencrop_ci95_paired_high"]) == pytest.approx(paired[1])
