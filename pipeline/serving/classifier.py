"""The pyfunc model: images in, the top-5 classes out (WordNet ids, names, probabilities).

Logged as MLflow "models from code" (``model_code.py``): the model is this class, imported from the installed
package when it loads, with the weights and the model card as artifacts; nothing is pickled.

Input: a DataFrame with an ``image`` column (what the REST server and ``mlflow.pyfunc`` hand over), a list of
images, or one image, where an image is encoded bytes (JPEG, PNG, anything PIL reads; base64 text in JSON) or
a uint8 array [H, W, 3] of any size. Params: ``crops`` (``tencrop``, the paper's test, or ``center``) and
``top_k``. Output: one row per image with the columns ``wnids``, ``names``, ``probabilities``, best first.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType, Array

from pipeline.serving.bundle import CARD_ARTIFACT, WEIGHTS_ARTIFACT, ModelCard, load_net, read_card
from pipeline.serving.preprocess import to_uint8_chw, views

IMAGE_COLUMN = "image"
OUTPUT_COLUMNS = ("wnids", "names", "probabilities")
DEFAULT_CROPS = "tencrop"
DEFAULT_TOP_K = 5


def signature() -> ModelSignature:
    """``image``: any type (bytes, base64 text, an array): MLflow's ``binary`` would refuse arrays."""
    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), IMAGE_COLUMN)]),
        outputs=Schema(
            [
                ColSpec(Array(DataType.string), "wnids"),
                ColSpec(Array(DataType.string), "names"),
                ColSpec(Array(DataType.double), "probabilities"),
            ]
        ),
        params=ParamSchema(
            [
                ParamSpec("crops", DataType.string, DEFAULT_CROPS),
                ParamSpec("top_k", DataType.long, DEFAULT_TOP_K),
            ]
        ),
    )


def _images(model_input: Any) -> list[Any]:
    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(f"the input has no {IMAGE_COLUMN!r} column (got {list(model_input.columns)})")
        return list(model_input[IMAGE_COLUMN])
    if isinstance(model_input, (bytes, str)) or (
        isinstance(model_input, np.ndarray) and model_input.ndim >= 2
    ):
        return [model_input]
    return list(model_input)


class AlexNetClassifier(PythonModel):
    """The net and its card; ``net`` and ``card`` are public so that ``pipeline.evaluate`` can score the same
    weights on the shard loader (``mlflow.pyfunc.load_model(uri).unwrap_python_model()``)."""

    def __init__(self) -> None:
        self.net: torch.nn.Module | None = None
        self.card: ModelCard | None = None
        self.mean = torch.zeros(3)

    def load_context(self, context: PythonModelContext) -> None:
        self.card = read_card(context.artifacts[CARD_ARTIFACT])
        self.net = load_net(self.card, context.artifacts[WEIGHTS_ARTIFACT])
        self.mean = torch.tensor(self.card.mean, dtype=torch.float32)

    @torch.inference_mode()
    def probabilities(self, images: list[Any], crops: str = DEFAULT_CROPS) -> torch.Tensor:
        """[N, classes]: the softmax, averaged over the crops, of each image."""
        if self.net is None or self.card is None:
            raise ValueError("the model is not loaded (load it with mlflow.pyfunc.load_model)")
        rows = []
        for image in images:
            stacked = views(
                to_uint8_chw(image),
                crop=self.card.in_size,
                full_size=self.card.full_size,
                crops=crops,
                mean=self.mean,
            )
            rows.append(self.net(stacked).softmax(dim=1).mean(dim=0))
        return torch.stack(rows) if rows else torch.empty(0, self.card.num_classes)

    # No type hints on the input: MLflow would read them as a schema of their own (the signature is one).
    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        params = params or {}
        top_k = int(params.get("top_k", DEFAULT_TOP_K))
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {top_k})")
        probabilities = self.probabilities(_images(model_input), str(params.get("crops", DEFAULT_CROPS)))
        assert self.card is not None
        values, indices = probabilities.topk(min(top_k, self.card.num_classes), dim=1)
        return pd.DataFrame(
            {
                "wnids": [[self.card.wnids[i] for i in row] for row in indices.tolist()],
                "names": [[self.card.names[i] for i in row] for row in indices.tolist()],
                "probabilities": values.tolist(),
            }
        )
