"""The built wheel, installed (not editable) into a fresh venv, gives every command from any folder: `--help`
for each, and a demo-sized prep and training job in a folder outside the repository, whose logged model then
loads and predicts in that venv.

The venv has no system site packages and the project only as the wheel. Its dependencies are this venv's own
installed files, seen through one ``.pth`` line (the test must not download torch's 3 GB); ``.pth`` files in
that folder are not processed, so this venv's editable install of the project is not on the path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.helpers.paths import REPO

COMMANDS = ("alexnet-train", "alexnet-evaluate", "alexnet-compare", "alexnet-prep", "alexnet-verify")
PREDICT = """
import json, sys, mlflow, pipeline
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict({"image": [open(sys.argv[2], "rb").read()]})
print(json.dumps({"package": pipeline.__file__, "wnids": answer.iloc[0]["wnids"]}))
"""

pytestmark = pytest.mark.slow


class Installed:
    def __init__(self, venv: Path, work: Path) -> None:
        self.venv, self.work = venv, work
        # no PYTHONPATH (the checkout would win), no fused LRN build (a minute of g++ for a smoke job)
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
        self.env |= {"ALEXNET_FUSED_LRN": "0", "OMP_NUM_THREADS": "1", "MPLCONFIGDIR": str(work / "mpl")}

    def run(self, command: str, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.venv / "bin" / command), *args],
            cwd=self.work, env=self.env, capture_output=True, text=True, timeout=timeout_s,
        )  # fmt: skip
        assert done.returncode == 0, f"{command} {args}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    dist, venv, work = root / "dist", root / "venv", root / "work"
    work.mkdir()
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    subprocess.run([*build, str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = dist.glob("alexnet_pipeline-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "shared_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [
        str(venv / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--ignore-installed",  # this venv's editable install is visible through the .pth: not "already there"
        "-q",
        str(wheel),
    ]
    subprocess.run(install, check=True, capture_output=True, timeout=300)
    return Installed(venv, work)


def test_every_command_answers_help_from_outside_the_repository(installed: Installed) -> None:
    located = installed.run("python", "-c", "import pipeline, alexnet_common; print(pipeline.__file__)")
    assert located.stdout.strip().startswith(str(installed.venv)), "the wheel's package, not the checkout's"
    for command in COMMANDS:
        done = installed.run(command, "--help")
        assert "usage" in (done.stdout + done.stderr).lower() or "override" in done.stdout.lower(), command


def test_a_demo_sized_prep_and_training_job_from_an_outside_folder(installed: Installed) -> None:
    fake = ("out=fake", "classes=4", "train_per_class=8", "val_per_class=4", "image_size=320x240")
    installed.run("alexnet-fake-imagenet", *fake)
    installed.run("alexnet-prep", "source=fake", "out=shards", "workers=1", "progress=false")
    installed.run("alexnet-verify", "out=shards")
    uri = f"sqlite:///{installed.work / 'mlflow.db'}"
    installed.run(
        "alexnet-train", "data.root=shards", "data.batch_size=8", "data.num_workers=0", "model.width=0.0625",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
        "callbacks.final_eval.limit_batches=1",
        f"logger.tracking_uri={uri}", "logger.experiment_name=wheel", "logger.system_metrics_interval_s=0",
        "logger.register_model=wheel-demo",
    )  # fmt: skip
    assert (installed.work / "outputs").is_dir()  # Hydra's run folder, in the working directory
    jpeg = sorted((installed.work / "fake" / "val").rglob("*.JPEG"))[0]
    installed.env["MLFLOW_TRACKING_URI"] = uri
    answer = json.loads(
        installed.run("python", "-c", PREDICT, "models:/wheel-demo/1", str(jpeg)).stdout.splitlines()[-1]
    )
    assert answer["package"].startswith(str(installed.venv))
    assert len(answer["wnids"]) == 4  # top-5 of a 4-class net: all four
