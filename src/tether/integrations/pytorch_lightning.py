"""PyTorch Lightning as the standalone ``pytorch_lightning`` package (``import
pytorch_lightning as pl``): the same ``TetherLogger`` and autologging as
``tether.integrations.lightning``, made from that package's own classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pytorch_lightning import Trainer
from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities import rank_zero_only as _rank_zero_only

from tether.integrations.lightning_logger import FitPatch, LoggerMethods


class TetherLogger(LoggerMethods, Logger):  # type: ignore[misc,unused-ignore]
    """``pl.Trainer(logger=TetherLogger())``: Lightning's logging into a tether run."""

    rank_zero_only = _rank_zero_only


_fits = FitPatch(Trainer, TetherLogger, "pytorch_lightning")


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    _fits.enable()


def disable() -> None:
    _fits.disable()
