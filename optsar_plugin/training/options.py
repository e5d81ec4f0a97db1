"""What a training run reads and writes (:class:`TrainInputs`) and how it trains (:class:`TrainOptions`).

Both are plain dataclasses of JSON-able values, so the command line, the Processing
algorithm and the worker process build the same objects (``TrainOptions(**kwargs)``
or :func:`split_keywords` on ``train(...)``'s keywords).  ``None`` (or 0 where a
number is asked for) means *automatic*: the value is chosen for the data and the
device when the run starts (:mod:`.recipes`), and the checkpoint records what was
chosen.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

from ..errors import InputError
from ..options import CLASS_BALANCE, CLOUD_MODES, CLOUD_SIMULATION, DEVICES, MIN_TILE, MODEL_SIZES, Options
from ..options import TRAIN_PRECISIONS as PRECISIONS

MAX_TILE = 2048


@dataclass
class TrainInputs:
    """Rasters, labels and output paths of a run (paths as given; checked when the run starts)."""

    optical: str
    sar: str
    output_checkpoint: str
    reference: Optional[str] = None
    class_field: Optional[str] = None
    name_field: Optional[str] = None
    reference_layer: Optional[str] = None
    labels: Optional[str] = None
    optical_bands: Optional[List[int]] = None
    sar_bands: Optional[List[int]] = None
    cloud_mask: Optional[str] = None
    output_log: Optional[str] = None
    output_curve: Optional[str] = None

    def __post_init__(self):
        for name in ("optical", "sar", "output_checkpoint", "reference", "labels", "cloud_mask", "output_log",
                     "output_curve"):
            value = getattr(self, name)
            if value is not None and value != "":
                setattr(self, name, os.fspath(value) if not isinstance(value, str) else value)
            elif name not in ("optical", "sar", "output_checkpoint"):
                setattr(self, name, None)
        self.optical_bands = _band_list(self.optical_bands)
        self.sar_bands = _band_list(self.sar_bands)



@dataclass
class TrainOptions(Options):
    """How to train.  ``None`` = automatic (see the module docstring and :mod:`.recipes`)."""

    model: str = "specsar_former"
    model_size: str = "auto"
    model_options: Optional[Dict] = None
    init_checkpoint: Optional[str] = None
    epochs: Optional[int] = None
    steps_per_epoch: Optional[int] = None
    max_steps: Optional[int] = None
    patience: Optional[int] = None
    max_minutes: Optional[float] = None
    tile_size: Optional[int] = None
    batch_size: Optional[int] = None
    learning_rate: Optional[float] = None
    validation_fraction: float = 0.2
    class_balance: str = "auto"
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    cloud_simulation: str = "auto"
    cloud_mode: str = "auto"
    ignore_sar: bool = False
    resume: bool = False
    memory_limit: int = 1 << 30

    def __post_init__(self):
        self.model_options = dict(self.model_options or {})
        self.init_checkpoint = os.fspath(self.init_checkpoint) if self.init_checkpoint else None
        for name in ("epochs", "steps_per_epoch", "max_steps", "tile_size", "batch_size"):
            setattr(self, name, _auto_int(getattr(self, name), name.upper()))
        self.patience = None if self.patience is None or self.patience == "" else _int(self.patience, "PATIENCE")
        m = self.max_minutes
        self.max_minutes = None if m is None or m == "" else _float(m, "MAX_MINUTES")
        lr = self.learning_rate
        self.learning_rate = None if lr in (None, "", 0, 0.0) else _float(lr, "LEARNING_RATE")
        self.validation_fraction = _float(self.validation_fraction, "VALIDATION_FRACTION")
        self.seed = _int(self.seed, "SEED")
        self.device = str(self.device or "auto").lower()
        self.ignore_sar, self.resume = bool(self.ignore_sar), bool(self.resume)
        self.check()

    def check(self) -> None:
        """One clear line per bad value (raises :class:`~optsar_plugin.errors.InputError`)."""
        from ..models import model_info

        model_info(self.model)
        _choice(self.model_size, MODEL_SIZES, "MODEL_SIZE")
        _choice(self.precision, PRECISIONS, "PRECISION")
        _choice(self.cloud_simulation, CLOUD_SIMULATION, "CLOUD_SIMULATION")
        _choice(self.cloud_mode, CLOUD_MODES, "CLOUD_MODE")
        _choice(self.class_balance, CLASS_BALANCE, "CLASS_BALANCE")
        if self.device.split(":")[0] not in DEVICES:
            raise InputError(f"Unknown DEVICE '{self.device}': use auto, cuda or cpu.")
        for name in ("epochs", "steps_per_epoch", "max_steps", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"{name.upper()} must be at least 1 (or 0 for automatic), got {value}.")
        t = self.tile_size
        if t is not None and (t < MIN_TILE or t % 32 or t > MAX_TILE):
            raise InputError(
                f"TILE_SIZE {t} is not allowed: the networks need a multiple of 32 pixels, at least 64 "
                f"(0 = automatic).")
        if self.patience is not None and self.patience < 0:
            raise InputError(f"PATIENCE must be 0 (no early stopping) or more, got {self.patience}.")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise InputError(f"MAX_MINUTES must be 0 (no time limit) or more, got {self.max_minutes:g}.")
        if self.learning_rate is not None and not 0 < self.learning_rate < 1:
            raise InputError(f"LEARNING_RATE must be between 0 (the model's recipe) and 1, got {self.learning_rate}.")
        if not 0 <= self.validation_fraction <= 0.5:
            raise InputError(f"VALIDATION_FRACTION must be between 0 and 0.5, got {self.validation_fraction}.")


_INPUT_NAMES = {f.name for f in fields(TrainInputs)}
_OPTION_NAMES = {f.name for f in fields(TrainOptions)}


def split_keywords(kwargs: Dict) -> Tuple[Dict, Dict]:
    """``train(...)`` keywords -> (TrainInputs keywords, TrainOptions keywords); unknown names are an error."""
    unknown = sorted(set(kwargs) - _INPUT_NAMES - _OPTION_NAMES - {"feedback", "options"})
    if unknown:
        raise InputError(f"train() does not know the option(s) {', '.join(unknown)}.")
    return ({k: v for k, v in kwargs.items() if k in _INPUT_NAMES},
            {k: v for k, v in kwargs.items() if k in _OPTION_NAMES})


def _choice(value, allowed: Sequence[str], name: str) -> None:
    if value not in allowed:
        raise InputError(f"Unknown {name} '{value}': use one of {', '.join(allowed)}.")


def _int(value, name: str) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}.") from None
    if out != float(value):
        raise InputError(f"{name} must be a whole number, got {value!r}.")
    return out


def _float(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.") from None


def _auto_int(value, name: str) -> Optional[int]:
    if value is None or value == "" or value == 0:
        return None
    return _int(value, name)


def _band_list(values) -> Optional[List[int]]:
    if values is None:
        return None
    out = [int(v) for v in values]
    return out or None
