"""The GPU check (scripts/gpu_check.sh, bench/gpu_check/) rehearsed on the CPU: the same script, every step
run for real at small sizes, so that nothing in it fails on the GPU machine for a reason a CPU could show.

One run of ``scripts/gpu_check.sh OUT --device cpu --quick`` is shared by the module's tests (slow: nine
processes, one of them a real ``python -m pipeline.train`` job ending with the 10-crop test). The report's
handling of steps that time out or are skipped for want of time, the argument errors and the bf16 peak table
are checked without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import common, report
from tests.helpers.paths import REPO

SCRIPT = REPO / "scripts" / "gpu_check.sh"
ALL_STEPS = list(report.ORDER)


def _run_script(*args: str, timeout_s: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s
    )


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check_out")
    work = tmp_path_factory.mktemp("gpu_check_work")
    done = _run_script(str(out), "--device", "cpu", "--quick", "--work", str(work), timeout_s=900)
    return done, out


@pytest.mark.slow
def test_the_cpu_rehearsal_passes_every_step(rehearsal) -> None:
    done, out = rehearsal
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    result = json.loads((out / "gpu_check.json").read_text())
    statuses = {name: step["status"] for name, step in result["steps"].items()}
    assert list(statuses) == ALL_STEPS
    # pass, or skipped only because the step needs CUDA: nothing may fail for a reason a CPU can show
    assert all(status in (common.PASS, common.NEEDS_CUDA) for status in statuses.values()), statuses
    assert result["summary"] == {"pass": len(ALL_STEPS)}
    assert result["meta"]["device"] == "cpu" and result["meta"]["quick"] is True


@pytest.mark.slow
def test_the_rehearsal_measured_what_the_gpu_run_will(rehearsal) -> None:
    _, out = rehearsal
    steps = json.loads((out / "gpu_check.json").read_text())["steps"]
    environment = steps["environment"]["details"]
    assert environment["gpu"] == common.NEEDS_CUDA and environment["versions"]["torch"]
    assert all(steps[name]["details"]["checks"] for name in ("lrn", "decode", "bf16", "split", "end_to_end"))
    run = steps["end_to_end"]["details"]["run"]
    assert run["status"] == "FINISHED" and run["metrics"]["eval/images"] == 16  # 4 classes x 4 val images
    settings = steps["step_b128"]["details"]["settings"]
    assert {"fp32-torch-lrn", "fp32", "bf16", "bf16+channels_last", "fp32-no-lrn"} <= set(settings)
    assert all(row["images_per_s_median"] > 0 and row["bf16_peak_share"] is None for row in settings.values())
    rows = steps["loaders"]["details"]["rows"]
    assert any(row["name"].startswith("decode=device") for row in rows)


@pytest.mark.slow
def test_only_the_json_and_the_log_land_in_the_out_dir(rehearsal) -> None:
    """The device tool sends back at most 8 files: everything else stays in the work folder."""
    done, out = rehearsal
    assert sorted(path.name for path in out.iterdir()) == ["gpu_check.json", "gpu_check.log"]
    log = (out / "gpu_check.log").read_text()
    assert f"GPU check: {len(ALL_STEPS)} pass" in log and "-- end_to_end (time box" in log
    assert f"GPU check: {len(ALL_STEPS)} pass" in done.stdout


def test_a_step_that_runs_out_of_time_is_an_error_with_its_log(tmp_path) -> None:
    steps = tmp_path / "steps"
    steps.mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"steps": ["lrn", "decode", "bf16"]}))
    common.write_json(steps / "lrn.json", common.StepResult(common.PASS, {"checks": {"x": True}}).to_json())
    (steps / "decode.rc").write_text("124\n")
    (steps / "decode.box").write_text("30\n")
    (steps / "decode.log").write_text("decoding...\nstill decoding\n")
    (steps / "bf16.skip").write_text("skipped: out of the run's 450 s budget\n")
    assert report.main(tmp_path, tmp_path / "out") == 1
    result = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    decode = result["steps"]["decode"]
    assert decode["status"] == common.ERROR
    assert (
        decode["error"].startswith("time box of 30 s ran out (exit 124)")
        and "still decoding" in decode["error"]
    )
    assert result["steps"]["bf16"]["status"] == "skipped: out of the run's 450 s budget"
    assert result["summary"] == {"pass": 1, "error": 1, "skipped": 1}


def test_a_step_that_would_overrun_the_budget_is_skipped_and_said_so(tmp_path) -> None:
    done = _run_script(
        str(tmp_path / "out"), "--device", "cpu", "--budget", "15", "--steps", "lrn", timeout_s=120
    )
    assert done.returncode == 0, done.stderr
    step = json.loads((tmp_path / "out" / "gpu_check.json").read_text())["steps"]["lrn"]
    assert step["status"] == "skipped: out of the run's 15 s budget"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "OUT_DIR missing"),
        (("out", "--device", "tpu"), "--device tpu: use cuda or cpu"),
        (("out", "--steps", "lrn nonsense"), "unknown step nonsense"),
        (("out", "--budget", "soon"), "--budget soon: give whole seconds"),
    ],
)
def test_bad_arguments_name_the_fix_and_exit_2(tmp_path, args, message) -> None:
    done = _run_script(*(str(tmp_path / a) if a == "out" else a for a in args), timeout_s=60)
    assert done.returncode == 2 and message in done.stderr
    assert not (tmp_path / "out").exists()  # nothing created


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
     ("NVIDIA A100-SXM4-80GB", 312.0), ("Tesla T4", None)],
)  # fmt: skip
def test_bf16_peak_by_gpu_name(name: str, peak: float | None) -> None:
    assert common.bf16_peak_tflops(name) == peak


def test_peak_share_is_images_times_flop_over_peak() -> None:
    # 10,000 img/s x 4.3 GFLOP = 43 TFLOP/s of an H200's 989
    assert common.peak_share(10_000, "NVIDIA H200") == pytest.approx(43.0 / 989.0)
    assert common.peak_share(10_000, "Tesla T4") is None
