"""Option enumerations and defaults: the one place the engine, its CLI and the Processing algorithms read them.

Torch-free (the QGIS process imports it to build its parameter lists).  Typed option
objects that use these live beside their engines: :class:`optsar_plugin.inference.InferenceOptions`,
:class:`optsar_plugin.accuracy.options.AssessOptions` and :class:`~optsar_plugin.accuracy.options.SampleOptions`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Sequence

from .errors import InputError
from .models import MODEL_NAMES

MODELS = MODEL_NAMES  # the networks, in the registry's order
MODEL_SIZES = ("auto", "small", "paper")  # training: auto = paper on a CUDA GPU, small (CPU-friendly) on the CPU
CLASS_BALANCE = ("auto", "none", "sqrt", "inverse")  # training: class weights of the loss
DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "bf16", "fp16")  # inference; bf16/fp16 only on a CUDA GPU
TRAIN_PRECISIONS = ("fp32", "bf16")
CLOUD_MODES = ("auto", "keep", "zero")  # optical data under the cloud mask (see cloud_handling)
TTA_MODES = ("off", "flips", "d4")  # test-time augmentation: none, 4 flips, the 8 flips and rotations
CLOUD_SIMULATION = ("auto", "on", "off")  # simulated clouds on training tiles
ALLOCATIONS = ("proportional", "equal", "olofsson")  # stratified sample allocation

MIN_TILE = 64  # the models' contract: inputs are multiples of 32, at least 64
DEFAULT_TILE = 512
DEFAULT_OVERLAP = 64
DEFAULT_BATCH = 4


def check_choice(value: Optional[str], choices: Sequence[str], label: str, default: Optional[str] = None) -> str:
    """``value`` lower-cased if it is one of ``choices`` (None/empty -> ``default``), else an :class:`InputError`."""
    v = default if value in (None, "") else str(value).lower()
    if v not in choices:
        raise InputError(f"Unknown {label} '{value}': use one of {', '.join(choices)}.")
    return v


def cloud_handling(cloud_mode: Optional[str], model_name: str) -> str:
    """What a network sees under the cloud mask: ``keep`` (as is) or ``zero`` (the training median).

    ``auto`` is ``keep`` for CloudLULC-Net, which is trained on cloudy scenes and models
    optical reliability itself, and ``zero`` for the networks that were not.
    """
    mode = check_choice(cloud_mode, CLOUD_MODES, "cloud mode", default="auto")
    if mode == "auto":
        return "keep" if model_name == "cloudlulc_net" else "zero"
    return mode


def check_tiling(tile_size: int, overlap: int) -> None:
    """Tile a multiple of 32 (>= 64) and ``0 <= overlap < tile/2``; messages for analysts."""
    if int(tile_size) != tile_size or tile_size < MIN_TILE or tile_size % 32:
        raise InputError(
            f"Tile size {tile_size} is not allowed: the networks need a multiple of 32 pixels, at least {MIN_TILE} "
            f"(e.g. 256 or 512)."
        )
    if int(overlap) != overlap or overlap < 0 or 2 * overlap >= tile_size:
        raise InputError(
            f"Overlap {overlap} must be at least 0 and less than half the tile size ({tile_size} px), "
            f"i.e. at most {(tile_size - 1) // 2}."
        )


def default_tile(training_tile: Optional[int]) -> int:
    """A checkpoint's training tile rounded to the nearest multiple of 32 (>= 64; 510 -> 512), else 512."""
    try:
        t = int(training_tile)
    except (TypeError, ValueError):
        return DEFAULT_TILE
    return max(MIN_TILE, int(round(t / 32)) * 32)


def default_overlap(tile_size: int) -> int:
    """:data:`DEFAULT_OVERLAP` px, but at most a quarter of the tile (so small tiles keep a useful stride)."""
    return min(DEFAULT_OVERLAP, int(tile_size) // 4)


class Options:
    """Mixin for the frozen option dataclasses: build from keywords or JSON, validate in ``__post_init__``.

    Front ends (CLI, Processing algorithms, the engine worker, a batch layer) build one
    object and pass it as ``options=``; the engine functions also accept the same fields
    as keyword arguments (their historical API), merged by :meth:`of`.
    """

    @classmethod
    def of(cls, options=None, caller: str = "", **settings):
        """``options`` (an instance, a dict or None) with ``settings`` applied on top."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TypeError(f"{caller or cls.__name__}() got an unexpected keyword argument '{unknown[0]}'")
        if options is None:
            return cls(**settings)
        if isinstance(options, dict):
            return cls.from_dict({**options, **settings})
        return dataclasses.replace(options, **settings) if settings else options

    @classmethod
    def from_dict(cls, data: Dict[str, Any]):
        """From a JSON object (unknown keys are an :class:`InputError`)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"Unknown option '{unknown[0]}' for {cls.__name__}; known: {', '.join(sorted(names))}.")
        return cls(**data)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)


def int_at_least(value, minimum: int, label: str) -> int:
    """``value`` as an int >= ``minimum``, else an :class:`InputError` naming ``label`` and the range."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        v = None
    if v is None or v != value or v < minimum:
        raise InputError(f"{label} must be a whole number of at least {minimum}, got {value!r}.")
    return v


def band_list(bands, label: str) -> Optional[tuple]:
    """Band numbers as a tuple of ints (None/empty = all bands); ``"2,3,4"`` is accepted.

    The range is checked where the raster is known (:func:`optsar_plugin.raster_io.select_bands`).
    """
    if bands is None or (not isinstance(bands, str) and len(bands) == 0):
        return None
    if isinstance(bands, str):
        bands = [b for b in bands.replace(" ", "").split(",") if b]
    out = []
    for b in bands:
        try:
            v = int(b)
        except (TypeError, ValueError):
            v = None
        if v is None or isinstance(b, bool) or (isinstance(b, float) and b != v):
            raise InputError(f"{label}: {b!r} is not a band number (bands are numbered from 1).")
        out.append(v)
    return tuple(out) or None
