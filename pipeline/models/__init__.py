"""AlexNet on one device (grouped convolutions) and split over two devices as the 2012 paper trained it."""

from pipeline.models.alexnet import AlexNet, AlexNetHParams
from pipeline.models.split import SplitAlexNet

__all__ = ["AlexNet", "AlexNetHParams", "SplitAlexNet"]
