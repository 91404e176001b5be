"""Paired seeds on real runs: the session's 2x2 sweep (tests/compare/conftest.py), copied, with seed 3 of both
arms added to its study afterwards (as `python -m pipeline.train -m +experiment=baseline,no_lrn seed=3
study=<the study>` adds them), so compare merges a 2x3 study; and baseline seed 1 trained again, in another
study, to check that the same config on the same machine gives bit-identical results."""

from __future__ import annotations

import json
import sqlite3
import statistics
from contextlib import closing
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats

from pipeline.compare import compare, main
from pipeline.tracking import keys
from pipeline.train import train
from tests.helpers.compare_study import STUDY, TrainedStudy, tiny_overrides
from tests.helpers.training import compose_train

pytestmark = pytest.mark.slow  # three more tiny trainings beside the session's study

REPEAT_STUDY = "repeat"
SEEDS = ["1", "2", "3"]


@pytest.fixture(scope="module")
def merged_study(trained_study: TrainedStudy, demo_shards: Path, tmp_path_factory) -> TrainedStudy:
    root = tmp_path_factory.mktemp("merged-study")
    # the session's study stays as it is; sqlite's backup copies what its write-ahead log still holds too
    with (
        closing(sqlite3.connect(trained_study.root / "mlflow.db")) as source,
        closing(sqlite3.connect(root / "mlflow.db")) as copy,
    ):
        source.backup(copy)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the sweep's jobs ran (OMP_NUM_THREADS=1)
    try:
        added = (("baseline", 3, STUDY), ("no_lrn", 3, STUDY), ("baseline", 1, REPEAT_STUDY))
        for experiment, seed, study in added:
            train(
                compose_train(
                    [
                        *tiny_overrides(demo_shards, uri),
                        f"+experiment={experiment}",
                        f"seed={seed}",
                        f"study={study}",
                        f"paths.output_dir={root / f'{experiment}-{seed}-{study}'}",
                    ]
                )  # fmt: skip
            )
    finally:
        torch.set_num_threads(threads)
    return TrainedStudy(uri, trained_study.experiment_name, STUDY, root)


def finished(study: TrainedStudy, name: str, study_tag: str = STUDY):
    experiment = study.client().get_experiment_by_name(study.experiment_name)
    [run] = study.client().search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.run_name = '{name}' AND tags.study = '{study_tag}' "
        "AND attributes.status = 'FINISHED'",
    )
    return run


def errors(study: TrainedStudy, experiment: str, key: str = keys.TENCROP_TOP1) -> list[float]:
    return [100.0 * finished(study, f"{experiment}-seed{seed}").data.metrics[key] for seed in SEEDS]


def test_added_seeds_merge_into_the_study(merged_study: TrainedStudy, tmp_path: Path):
    result = compare(merged_study.tracking_uri, merged_study.experiment_name, STUDY, tmp_path, False)
    assert [(row.experiment, row.seeds) for row in result.rows] == [
        ("baseline", ("1", "2", "3")),
        ("no_lrn", ("1", "2", "3")),
    ]
    assert [item.reason for item in result.study.set_aside] == ["status FAILED"]  # the crashed no_lrn seed 3
    assert not any(row.few_seeds for row in result.rows)


def test_runs_record_common_random_numbers_the_machine_and_their_lr_drops(merged_study: TrainedStudy):
    tags = {(exp, seed): finished(merged_study, f"{exp}-seed{seed}").data.tags
            for exp in ("baseline", "no_lrn") for seed in SEEDS}  # fmt: skip
    for seed in SEEDS:
        for key in (keys.TAG_CRN_INIT, keys.TAG_CRN_DATA):
            assert tags["baseline", seed][key] == tags["no_lrn", seed][key]
    assert len({tags["baseline", seed][keys.TAG_CRN_INIT] for seed in SEEDS}) == 3
    assert len({tags["baseline", seed][keys.TAG_CRN_DATA] for seed in SEEDS}) == 3
    for run_tags in tags.values():
        assert run_tags[keys.TAG_TORCH_CPU_CAPABILITY] == torch.backends.cpu.get_cpu_capability()
        assert run_tags[keys.TAG_CPU_MODEL] and run_tags[keys.TAG_GPU_NAME]
        assert json.loads(run_tags[keys.TAG_LR_DROPS]) == []  # 2 epochs, patience 2: no drop
        assert keys.TAG_LR_LEARNING_STARTED in run_tags


def test_json_on_the_2x3_study_pairs_by_seed_narrower_than_welch(merged_study, tmp_path, capsys):
    argv = [f"tracking_uri={merged_study.tracking_uri}", f"experiment={merged_study.experiment_name}",
            f"study={STUDY}", f"out={tmp_path}", "log=false", "format=json"]  # fmt: skip
    assert main(argv) == 0
    document = json.loads(capsys.readouterr().out)
    assert (document["schema_version"], document["interval"]) == (3, "auto")
    _, no_lrn = document["rows"]
    ours, base = errors(merged_study, "no_lrn"), errors(merged_study, "baseline")
    paired = scipy_stats.ttest_rel(ours, base).confidence_interval(0.95)
    welch = scipy_stats.ttest_ind(ours, base, equal_var=False).confidence_interval(0.95)
    assert (no_lrn["method"], no_lrn["n_pairs"]) == ("paired", 3)
    assert no_lrn["delta_top1_tencrop_ci95"] == pytest.approx([paired.low, paired.high])
    assert no_lrn["delta_top1_tencrop_ci95_paired"] == no_lrn["delta_top1_tencrop_ci95"]
    assert no_lrn["delta_top1_tencrop_ci95_welch"] == pytest.approx([welch.low, welch.high])
    r = statistics.correlation(ours, base)
    assert no_lrn["delta_top1_tencrop_correlation"] == pytest.approx(r)
    # Same init and data stream: the arms' errors move together across seeds, and the paired interval is
    # the narrower one.
    assert r > 0.5
    paired_width = paired.high - paired.low
    assert paired_width < welch.high - welch.low
    assert no_lrn["lr_drops_differ"] == []
    # interval=welch: the unpaired reading on request
    assert main([*argv[:-1], "format=json", "interval=welch"]) == 0
    unpaired = json.loads(capsys.readouterr().out)["rows"][1]
    assert unpaired["method"] == "welch" and unpaired["delta_top1_tencrop_ci95"] == pytest.approx(
        [welch.low, welch.high]
    )


def test_same_config_same_machine_is_bit_identical(merged_study: TrainedStudy):
    """baseline seed 1 trained twice, in the sweep's subprocess and here: every logged value is equal."""
    client = merged_study.client()
    first = finished(merged_study, "baseline-seed1")
    again = finished(merged_study, "baseline-seed1", REPEAT_STUDY)
    # what the run computes (not how fast it ran: throughput/*, system/*)
    computed = {key for key in first.data.metrics if key.split("/")[0] in ("train", "val", "eval", "lr")}
    assert {keys.TRAIN_LOSS, keys.VAL_TOP1, keys.TENCROP_TOP1, keys.EVAL_IMAGES} <= computed
    assert {key: again.data.metrics[key] for key in computed} == {
        key: first.data.metrics[key] for key in computed
    }
    for key in (keys.TRAIN_LOSS, keys.VAL_TOP1):
        history = [(m.step, m.value) for m in client.get_metric_history(first.info.run_id, key)]
        assert sorted(history) == sorted(
            (m.step, m.value) for m in client.get_metric_history(again.info.run_id, key)
        )
    for key in (keys.TAG_CRN_INIT, keys.TAG_CRN_DATA, keys.TAG_CPU_MODEL, keys.TAG_TORCH_CPU_CAPABILITY):
        assert first.data.tags[key] == again.data.tags[key]
