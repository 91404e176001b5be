"""Model-logging benchmark: what logging a run's net as an MLflow model costs at the end of a job, and how
fast the logged pyfunc classifies JPEGs on the CPU.

1. Logging (``pipeline.tracking.logged_model.log_pyfunc_model``, as every job's ``LogModel`` callback does:
   the weights and card written, the model from code saved with its signature and input example, the input
   example checked by MLflow, the artifacts copied into the store, a registry version) into a sqlite store,
   for the demo's net (width 1/16, 10 classes) and the paper's (61 M parameters, 1000 classes), against
   ``torch.save`` of the same weights (the floor: writing the file once), best of ``--rounds``.
2. The pyfunc on real-photo JPEGs of 500x375 (ImageNet's typical size): images/s with the centre crop and
   with the paper's 10 crops, against the bare net on already-cropped tensors (the preprocessing's share).

    .venv/bin/python bench/model_logging.py [--rounds 3] [--images 32]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.tracking import MlflowClient

from data_prep.fake import jpeg_bytes
from data_prep.photos import photo_like
from pipeline.serving import model_code
from pipeline.serving.bundle import ModelCard, write_bundle
from pipeline.serving.classifier import IMAGE_COLUMN, signature
from pipeline.tracking.logged_model import log_pyfunc_model

NETS = {"demo (width 1/16, 10 classes)": (0.0625, 10), "paper (61 M parameters, 1000 classes)": (1.0, 1000)}


def jpeg(rng: np.random.Generator, width: int = 500, height: int = 375) -> bytes:
    return jpeg_bytes(photo_like(rng, width, height))


def card_of(width: float, classes: int) -> ModelCard:
    wnids = [f"n{index:08d}" for index in range(classes)]
    return ModelCard(hparams={"width": width}, wnids=wnids, names=wnids, mean=[123.0, 117.0, 104.0])


def time_logging(root: Path, card: ModelCard, example: bytes, rounds: int) -> tuple[float, float, str]:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("bench") or client.get_experiment(
        client.create_experiment("bench")
    )
    state = card.build_net().state_dict()
    best_log, best_save, model_uri = float("inf"), float("inf"), ""
    for index in range(rounds):
        started = time.perf_counter()
        torch.save(state, root / "floor.pt")
        best_save = min(best_save, time.perf_counter() - started)
        run_id = client.create_run(experiment.experiment_id).info.run_id
        started = time.perf_counter()
        artifacts = write_bundle(root / f"bundle{index}", card, state)
        info = log_pyfunc_model(
            tracking_uri=uri, run_id=run_id, code_path=Path(model_code.__file__), artifacts=artifacts,
            signature=signature(), input_example=pd.DataFrame({IMAGE_COLUMN: [example]}),
            params={"weights": "final"}, step=0, registered_model_name="bench",
        )  # fmt: skip
        best_log = min(best_log, time.perf_counter() - started)
        model_uri = info.model_uri
    return best_log, best_save, model_uri


def time_pyfunc(model_uri: str, images: list[bytes], rounds: int) -> dict[str, float]:
    model = mlflow.pyfunc.load_model(model_uri)
    net = model.unwrap_python_model().net
    frame = pd.DataFrame({IMAGE_COLUMN: images})
    rates = {}
    for crops, views in (("center", 1), ("tencrop", 10)):
        model.predict(
            frame.head(2), params={"crops": crops}
        )  # untimed warm-up: oneDNN's first calls per shape
        with torch.inference_mode():
            net(torch.randn(views, 3, 227, 227))
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            model.predict(frame, params={"crops": crops})
            best = min(best, time.perf_counter() - started)
        rates[f"pyfunc {crops}"] = len(images) / best
        batch = torch.randn(views, 3, 227, 227)
        best = float("inf")
        for _ in range(rounds):
            started = time.perf_counter()
            with torch.inference_mode():
                for _ in images:
                    net(batch).softmax(dim=1)
            best = min(best, time.perf_counter() - started)
        rates[f"bare net {crops}"] = len(images) / best
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    rng = np.random.default_rng(0)
    images = [jpeg(rng) for _ in range(args.images)]
    print(f"torch threads {torch.get_num_threads()}, rounds {args.rounds} (best of)")
    with tempfile.TemporaryDirectory() as scratch:
        for name, (width, classes) in NETS.items():
            root = Path(scratch) / f"w{width}"
            root.mkdir()
            logged, saved, model_uri = time_logging(root, card_of(width, classes), images[0], args.rounds)
            print(f"{name}: log_model {logged:.2f} s, torch.save {saved:.3f} s ({logged / saved:.1f}x)")
            rates = time_pyfunc(model_uri, images, args.rounds)
            for crops in ("center", "tencrop"):
                pyfunc, bare = rates[f"pyfunc {crops}"], rates[f"bare net {crops}"]
                print(f"  {crops}: pyfunc {pyfunc:.1f} images/s, bare net {bare:.1f} ({pyfunc / bare:.2f}x)")


if __name__ == "__main__":
    main()
