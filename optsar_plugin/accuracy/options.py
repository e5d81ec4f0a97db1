"""What an accuracy assessment or a stratified sample can be asked to do, validated when built.

:class:`AssessOptions` and :class:`SampleOptions` are what the CLI, the Processing
algorithms and the engine worker build (from keywords, or from JSON with
:meth:`~optsar_plugin.options.Options.from_dict`); :func:`~optsar_plugin.accuracy.assess_accuracy`
and :func:`~optsar_plugin.accuracy.stratified_sample` take one as ``options=`` or the same
fields as keywords.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ..errors import InputError
from ..options import ALLOCATIONS, Options, check_choice, int_at_least
from ..raster_io import parse_ignore_values


@dataclass(frozen=True)
class AssessOptions(Options):
    """``band`` of the classification; ``reference_layer`` (None: the first); ``all_touched``: burn every pixel a
    polygon touches (else pixel centres); ``ignore_values``: class codes left out of map and reference (a
    sequence or ``"0, 9"``); ``confidence`` level of the intervals; ``strip_rows`` per strip (None: about
    4 M pixels per strip)."""

    band: int = 1
    reference_layer: Optional[str] = None
    all_touched: bool = False
    ignore_values: Tuple[int, ...] = ()
    confidence: float = 0.95
    strip_rows: Optional[int] = None

    def __post_init__(self):
        self._set("band", int_at_least(self.band, 1, "The band"))
        self._set("all_touched", bool(self.all_touched))
        self._set("ignore_values", tuple(parse_ignore_values(self.ignore_values)))
        try:
            conf = float(self.confidence)
        except (TypeError, ValueError):
            conf = float("nan")
        if not 0.5 <= conf < 1.0:
            raise InputError(f"The confidence level must be between 0.5 and 1 (e.g. 0.95), got {self.confidence}.")
        self._set("confidence", conf)
        if self.strip_rows is not None:
            self._set("strip_rows", int_at_least(self.strip_rows, 1, "Strip rows"))


@dataclass(frozen=True)
class SampleOptions(Options):
    """``band``; ``allocation`` proportional, equal or olofsson; ``total`` points (0: from ``target_se`` and
    ``expected_ua``, Olofsson et al. 2014 eq. 13); ``expected_ua``: 0.8, ``"1:0.7, 2:0.9"`` or a dict;
    ``min_per_class``; ``seed``; ``ignore_values`` never sampled; ``strip_rows`` as for :class:`AssessOptions`."""

    band: int = 1
    allocation: str = "proportional"
    total: int = 0
    target_se: float = 0.01
    expected_ua: Any = 0.8
    min_per_class: int = 50
    seed: int = 0
    ignore_values: Tuple[int, ...] = ()
    strip_rows: Optional[int] = None

    def __post_init__(self):
        self._set("band", int_at_least(self.band, 1, "The band"))
        self._set("allocation", check_choice(self.allocation, ALLOCATIONS, "allocation", default="proportional"))
        if isinstance(self.total, (int, float)) and not isinstance(self.total, bool) and self.total < 0:
            raise InputError(f"The sample size must not be negative, got {self.total}.")
        self._set("total", int_at_least(self.total, 0, "The sample size"))
        self._set("min_per_class", int_at_least(self.min_per_class, 0, "The minimum per class"))
        self._set("seed", int_at_least(self.seed, 0, "The seed"))
        self._set("ignore_values", tuple(parse_ignore_values(self.ignore_values)))
        if self.strip_rows is not None:
            self._set("strip_rows", int_at_least(self.strip_rows, 1, "Strip rows"))


MAX_CLASSES = 1000  # more distinct values than this: not a classification
STRIP_PIXELS = 4_000_000  # pixels per strip: ~35 bytes each at the peak (map, masks, index, int64 keys)


def default_strip_rows(width: int) -> int:
    """Rows per strip so that a strip holds about :data:`STRIP_PIXELS` pixels."""
    return max(1, STRIP_PIXELS // max(1, int(width)))
