"""What a classification run can be asked to do: :class:`InferenceOptions`, validated when built.

The per-scene paths (optical, SAR, cloud mask, outputs) are not options: a batch of
scenes shares one :class:`InferenceOptions`.  The CLI, the Processing algorithm, the
engine worker and the batch layer build one (from keywords, or from JSON with
:meth:`~optsar_plugin.options.Options.from_dict`) and pass it to
:func:`~optsar_plugin.inference.classify`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ..errors import InputError
from ..options import (
    CLOUD_MODES,
    DEFAULT_BATCH,
    DEVICES,
    PRECISIONS,
    TTA_MODES,
    Options,
    band_list,
    check_choice,
    check_tiling,
    default_overlap,
    int_at_least,
)


@dataclass(frozen=True)
class InferenceOptions(Options):
    """Settings of a classification run (every field has the default ``classify`` has).

    ``optical_bands``/``sar_bands``: 1-based band numbers in the order the checkpoint
    expects (None: all bands); ``model``: the network the checkpoint must hold (None:
    any); ``extent``: (xmin, ymin, xmax, ymax) in ``extent_crs`` (None: the optical
    CRS), snapped outwards to optical pixels; ``device``: auto, cuda, cuda:N or cpu;
    ``tile_size`` (None: the checkpoint's training tile rounded to a multiple of 32),
    ``overlap`` (None: min(64, tile/4)), ``batch_size`` windows per forward pass;
    ``precision`` fp32, bf16 or fp16 (CUDA only); ``cloud_mode`` auto, keep or zero
    (what the network sees under the cloud mask, see
    :func:`optsar_plugin.options.cloud_handling`); ``tta`` test-time augmentation: off,
    flips (4 passes) or d4 (8 passes: flips and 90-degree rotations), probabilities
    averaged (:class:`~optsar_plugin.inference.predictors.TTAPredictor`).
    """

    optical_bands: Optional[Tuple[int, ...]] = None
    sar_bands: Optional[Tuple[int, ...]] = None
    model: Optional[str] = None
    extent: Optional[Tuple[float, float, float, float]] = None
    extent_crs: Optional[Any] = None
    device: str = "auto"
    tile_size: Optional[int] = None
    overlap: Optional[int] = None
    batch_size: int = DEFAULT_BATCH
    precision: str = "fp32"
    cloud_mode: str = "auto"
    tta: str = "off"

    def __post_init__(self):
        self._set("optical_bands", band_list(self.optical_bands, "optical_bands"))
        self._set("sar_bands", band_list(self.sar_bands, "sar_bands"))
        self._set("model", self._model(self.model))
        self._set("extent", _extent(self.extent))
        self._set("device", _device(self.device))
        self._set("batch_size", int_at_least(self.batch_size, 1, "Batch size"))
        self._set("precision", check_choice(self.precision, PRECISIONS, "precision", default="fp32"))
        self._set("cloud_mode", check_choice(self.cloud_mode, CLOUD_MODES, "cloud mode", default="auto"))
        self._set("tta", check_choice(self.tta, TTA_MODES, "test-time augmentation", default="off"))
        if self.overlap is not None:
            self._set("overlap", int_at_least(self.overlap, 0, "Overlap"))
        if self.tile_size is not None:
            self._set("tile_size", int_at_least(self.tile_size, 1, "Tile size") if self.tile_size else 0)
            check_tiling(self.tile_size, default_overlap(self.tile_size) if self.overlap is None else self.overlap)

    @staticmethod
    def _model(model: Optional[str]) -> Optional[str]:
        if not model:
            return None
        from .. import models  # read at call time: tests register stand-in networks

        return check_choice(model, models.MODEL_NAMES, "model")

    def tiling(self, metadata) -> Tuple[int, int]:
        """(tile, overlap) for a checkpoint: the given values or the defaults, checked."""
        tile = self.tile_size or metadata.default_tile()
        overlap = default_overlap(tile) if self.overlap is None else self.overlap
        check_tiling(tile, overlap)
        return tile, overlap


def _extent(extent) -> Optional[Tuple[float, float, float, float]]:
    if extent is None:
        return None
    try:
        values = tuple(float(v) for v in extent)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"The extent must be four numbers xmin, ymin, xmax, ymax; got {extent!r}.")
    return values


def _device(device: Optional[str]) -> str:
    name = (device or "auto").lower()
    if name.startswith("cuda:") and name[5:].isdigit():
        return name
    return check_choice(name, DEVICES, "device")
