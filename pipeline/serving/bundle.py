"""What a logged model carries besides the code: the net's weights, its hyperparameters, the class index and
the RGB mean, all taken from the training run and its prep manifest. Written to files that travel with the
model as MLflow artifacts, and read back when the model loads in a fresh process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.models import AlexNet, AlexNetHParams

WEIGHTS_ARTIFACT = "weights"  # the artifact keys the pyfunc reads (context.artifacts[...])
CARD_ARTIFACT = "card"
WEIGHTS_FILE = "weights.pt"
CARD_FILE = "model_card.json"
CARD_VERSION = 1


@dataclass(frozen=True)
class ModelCard:
    """Everything but the weights: how to build the net and how to read its outputs.

    Attributes:
        hparams: ``AlexNetHParams`` fields.
        wnids, names: per output index, the class's WordNet id and readable name (the manifest's classes).
        mean: the per-channel RGB mean (0-255) the net was trained with subtracted (zeros without).
        full_size: the side of the square the image is first brought to (the paper's 256).
    """

    hparams: dict[str, Any]
    wnids: list[str]
    names: list[str]
    mean: list[float]
    full_size: int = 256

    def __post_init__(self) -> None:
        if len(self.wnids) != len(self.names) or not self.wnids:
            raise ValueError(f"model card: {len(self.wnids)} wnids but {len(self.names)} names")
        if len(self.mean) != 3:
            raise ValueError(f"model card: mean must hold 3 channels (got {self.mean})")

    @property
    def num_classes(self) -> int:
        return len(self.wnids)

    @property
    def in_size(self) -> int:
        return AlexNetHParams.of(**self.hparams).in_size

    def build_net(self) -> AlexNet:
        return AlexNet(self.num_classes, AlexNetHParams.of(**self.hparams))


def write_bundle(folder: Path, card: ModelCard, state_dict: dict[str, torch.Tensor]) -> dict[str, str]:
    """Writes the weights (CPU tensors, readable with ``weights_only=True``) and the card into ``folder``;
    returns the artifacts mapping ``mlflow.pyfunc.log_model`` takes."""
    folder.mkdir(parents=True, exist_ok=True)
    weights, card_path = folder / WEIGHTS_FILE, folder / CARD_FILE
    torch.save({name: tensor.detach().cpu() for name, tensor in state_dict.items()}, weights)
    card_path.write_text(json.dumps({"version": CARD_VERSION, **asdict(card)}, indent=1))
    return {WEIGHTS_ARTIFACT: str(weights), CARD_ARTIFACT: str(card_path)}


def read_card(path: str | Path) -> ModelCard:
    data = json.loads(Path(path).read_text())
    version = data.pop("version", None)
    if version != CARD_VERSION:
        raise ValueError(f"{path}: model card version {version}, this package reads {CARD_VERSION}")
    return ModelCard(**data)


def load_net(card: ModelCard, weights: str | Path) -> nn.Module:
    """The net in eval mode on the CPU with the bundle's weights (``weights_only``: tensors only)."""
    net = card.build_net()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
