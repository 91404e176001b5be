"""The serving parts on their own: preprocessing, the model card, the retries and the name check."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.serving.bundle import ModelCard, load_net, read_card, write_bundle
from pipeline.serving.preprocess import to_uint8_chw, views
from pipeline.tracking.logged_model import check_model_name
from pipeline.tracking.retry import with_retries
from pipeline.training.model_logging import LogModel


def _jpeg(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), 128).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_any_size_and_mode_becomes_the_paper_views() -> None:
    mean = torch.tensor([100.0, 110.0, 120.0])
    for data in (_jpeg(500, 375), _jpeg(200, 640, "L"), _jpeg(300, 300, "CMYK")):
        image = to_uint8_chw(data)
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        assert views(image, crop=227, full_size=256, crops="tencrop", mean=mean).shape == (10, 3, 227, 227)
        centre = views(image, crop=227, full_size=256, crops="center", mean=mean)
        assert centre.shape == (1, 3, 227, 227)
    grey = views(
        to_uint8_chw(np.full((40, 90), 128, np.uint8)), crop=227, full_size=256, crops="center", mean=mean
    )
    assert grey[0, :, 100, 100].tolist() == [28.0, 18.0, 8.0]  # 128 minus the mean, per channel


def test_bad_images_and_settings_are_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="not a readable image"):
        to_uint8_chw(b"not a jpeg at all")
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        to_uint8_chw(np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="crops must be one of"):
        views(to_uint8_chw(_jpeg(64, 64)), crop=227, full_size=256, crops="five", mean=torch.zeros(3))
    with pytest.raises(ValueError, match="callbacks.log_model.weights"):
        LogModel(weights="last")
    with pytest.raises(ValueError, match="without '/' or ':'"):
        LogModel(register_model="team/alexnet")
    check_model_name("alexnet-demo")


def test_the_bundle_rebuilds_the_same_net(tmp_path) -> None:
    card = ModelCard(hparams={"width": 0.0625}, wnids=["n1", "n2"], names=["a", "b"], mean=[1.0, 2.0, 3.0])
    net = card.build_net()
    artifacts = write_bundle(tmp_path, card, net.state_dict())
    again = read_card(artifacts["card"])
    assert again == card
    loaded = load_net(again, artifacts["weights"])
    batch = torch.randn(2, 3, 227, 227)
    assert torch.equal(loaded(batch), net.eval()(batch))


def test_logging_retries_a_store_restart_and_raises_anything_else_at_once() -> None:
    """Model logging goes through the tracking wing's retry (pipeline.tracking.retry)."""
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("connection refused: store restarting")
        return "logged"

    assert with_retries(flaky, "flaky", attempts=3, first_delay_s=0.0) == "logged"
    assert len(calls) == 2

    def restarting_for_ever() -> None:
        calls.append(1)
        raise OSError("connection refused")

    calls.clear()
    with pytest.raises(OSError, match="connection refused"):
        with_retries(restarting_for_ever, "restarting", attempts=3, first_delay_s=0.0)
    assert len(calls) == 3

    def refused() -> None:
        calls.append(1)
        raise PermissionError("artifact store: permission denied")

    calls.clear()
    with pytest.raises(PermissionError, match="permission denied"):
        with_retries(refused, "refused", attempts=3, first_delay_s=0.0)
    assert len(calls) == 1  # not a transient error: no minute of waiting before the job fails
