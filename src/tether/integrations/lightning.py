"""PyTorch Lightning (the ``lightning`` package): ``TetherLogger``, a ``Logger`` that
writes into a tether run, and autologging that adds it to every ``Trainer.fit``. What
they record is in ``tether.integrations.lightning_logger``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only as _rank_zero_only

from tether.integrations.lightning_logger import FitPatch, LoggerMethods


class TetherLogger(LoggerMethods, Logger):  # type: ignore[misc,unused-ignore]
    """``Trainer(logger=TetherLogger())``: Lightning's logging into a tether run (``run``,
    or the run active when a value is logged)."""

    rank_zero_only = _rank_zero_only


_fits = FitPatch(Trainer, TetherLogger, "lightning")


def enable(record: Callable[[Callable[[Any], None], str], None]) -> None:
    _fits.enable()


def disable() -> None:
    _fits.disable()
