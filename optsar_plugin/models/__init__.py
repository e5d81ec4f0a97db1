"""The model registry: ``build_model(name, ...)`` and ``available_models()``.

Each network lives in its own module (``mosfnet.py``, ``specsar_former.py``,
``cloudlulc_net.py``) and is imported only when built, so listing the models
needs no torch.

Contract every model honours (the training, classify and checkpoint code rely on it):

* ``model(optical, sar)`` with ``(B, optical_bands, H, W)`` and ``(B, sar_bands, H, W)``
  float tensors returns logits ``(B, num_classes, H, W)`` for H, W multiples of 32 (>= 64).
* ``model.forward_train(optical, sar)`` returns a dict with ``"logits"`` and any
  training-only outputs (auxiliary logits, semantic latent, ...).
* ``model.loss(outputs, target, ignore_index=255)`` returns the paper's training loss
  (a scalar tensor) from ``forward_train``'s dict and an integer target ``(B, H, W)``
  of class *indices* (0..num_classes-1); pixels equal to ``ignore_index`` are ignored.
* ``model.config`` is a JSON-serialisable dict of the constructor's keyword arguments,
  so that ``build_model(name, **model.config)`` rebuilds the same architecture.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ..errors import OptsarError


@dataclass(frozen=True)
class Bound:
    """The values a constructor option may take: a number (``kind`` int or float) from ``lo`` to ``hi``, a bool
    (``kind`` bool), one of ``choices``, or - with ``items`` = (fewest, most) - a list of such numbers;
    ``optional``: None is allowed too.  Bounds keep a configuration (from a user, or from a checkpoint's metadata)
    from asking for a network of gigabytes or hours of construction; they are generous, not the paper's values."""

    kind: type
    lo: float = 0
    hi: float = 0
    choices: Tuple = ()
    items: Optional[Tuple[int, int]] = None
    optional: bool = False

    def problem(self, value: Any) -> Optional[str]:
        """What is wrong with ``value`` (a phrase such as "must be a whole number from 0 to 48, got 300000"), or None."""
        if value is None:
            return None if self.optional else "must not be empty"
        if self.items is None:
            return None if self._fits(value) else f"must be {self._what()}, got {value!r:.40}"
        lo, hi = self.items
        if not isinstance(value, (list, tuple)) or not lo <= len(value) <= hi:
            return f"must be a list of {lo} to {hi} values, each {self._what()}, got {value!r:.60}"
        bad = next((i for i, v in enumerate(value) if not self._fits(v)), None)
        return None if bad is None else f"must hold values each {self._what()}; item {bad} is {value[bad]!r:.40}"

    def _what(self) -> str:
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        if self.kind is str:
            return "a text"
        return f"a {'whole ' if self.kind is int else ''}number from {self.lo:g} to {self.hi:g}"

    def _fits(self, v) -> bool:
        if self.choices:
            return v in self.choices
        if self.kind is bool:
            return isinstance(v, bool)
        if self.kind is str:
            return isinstance(v, str) and len(v) <= 4096
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return self.lo <= v <= self.hi and (self.kind is not int or float(v) == int(v))


def check_options(name: str, options: Dict) -> None:
    """Refuse an option the network does not have or a value outside its :class:`Bound` (nothing is built yet)."""
    info = model_info(name)
    unknown = sorted(set(options) - set(info.bounds))
    if unknown:
        raise OptsarError(f"Unknown {info.title} option(s) {', '.join(unknown)}; known: "
                          f"{', '.join(sorted(info.bounds))}.")
    for key, value in options.items():
        problem = info.bounds[key].problem(value)
        if problem:
            raise OptsarError(f"{info.title} option '{key}' {problem}.")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    title: str
    module: str
    description: str
    paper: str
    defaults: Dict = field(default_factory=dict)  # the paper's configuration
    bounds: Dict[str, Bound] = field(default_factory=dict)  # the constructor's options and what they may be


_FRACTION = Bound(float, 0.0, 1.0)
_BOUNDS = {
    "mosfnet": {
        "decoder_channels": Bound(int, 1, 4096), "fim_kernel": Bound(int, 1, 15), "ffm_kernel": Bound(int, 1, 15),
        "use_fim": Bound(bool), "use_ffm": Bound(bool), "aux_head": Bound(bool), "ffm_residual": Bound(bool),
        "d_state": Bound(int, 1, 256), "ssm_ratio": Bound(float, 0.125, 8.0), "drop_path_rate": _FRACTION,
        "encoder": Bound(str, choices=("convnextv2_tiny", "convnextv2_nano", "convnextv2_pico", "convnextv2_femto",
                                       "convnextv2_atto")),
        "pretrained_path": Bound(str, optional=True),  # a file read when building (never in a checkpoint's config)
    },
    "specsar_former": {
        "embed_dims": Bound(int, 1, 2048, items=(1, 8)), "depths": Bound(int, 0, 64, items=(1, 8)),
        "num_heads": Bound(int, 1, 64, items=(1, 8)), "sr_ratios": Bound(int, 1, 64, items=(1, 8)),
        "mlp_ratio": Bound(float, 0.25, 16.0), "split": Bound(float, 0.01, 0.99), "decoder_dim": Bound(int, 1, 4096),
        "drop_path_rate": _FRACTION, "drop_rate": _FRACTION, "decoder_dropout": _FRACTION,
        "mmam_reduction": Bound(int, 1, 64, optional=True), "focal_gamma": Bound(float, 0.0, 10.0),
        "focal_alpha": Bound(float, 0.0, 1e6, items=(1, 254), optional=True),
    },
    "cloudlulc_net": {
        "channels": Bound(int, 2, 1024), "num_blocks": Bound(int, 1, 16), "order": Bound(int, 1, 8),
        "embed_dim": Bound(int, 1, 2048), "depth": Bound(int, 0, 48), "heads": Bound(int, 1, 64),
        "mlp_ratio": Bound(float, 0.25, 16.0), "anchor_weight": Bound(float, 0.0, 100.0),
        "decoder": Bound(str, choices=("full", "quarter")), "context_dropout": Bound(float, 0.0, 0.95),
    },
}


_REGISTRY: Dict[str, ModelInfo] = {
    "mosfnet": ModelInfo(
        "mosfnet",
        "MOSFNet",
        "optsar_plugin.models.mosfnet",
        "Dual ConvNeXtV2-tiny encoders, Feature Interaction (FIM) and Mamba/SS2D Feature Fusion (FFM) modules, UPerNet decoder.",
        "Zhao et al., Land cover classification of optical-SAR imagery via cross-modal interaction and feature alignment (MOSFNet)",
        {"optical_bands": 4, "sar_bands": 1, "num_classes": 7, "tile_size": 512, "dataset": "WHU-OPT-SAR"},
    ),
    "specsar_former": ModelInfo(
        "specsar_former",
        "SpecSAR-Former",
        "optsar_plugin.models.specsar_former",
        "Dual-branch MiT-B2 transformer (3/4 spectral : 1/4 SAR), DMEM cross-modal blocks, MMAM aggregation, all-MLP decoder, focal loss.",
        "Yu et al., SpecSAR-Former: a lightweight transformer-based network for global LULC mapping (arXiv 2410.03962)",
        {"optical_bands": 10, "sar_bands": 2, "num_classes": 9, "tile_size": 510, "dataset": "Dynamic World+"},
    ),
    "cloudlulc_net": ModelInfo(
        "cloudlulc_net",
        "CloudLULC-Net",
        "optsar_plugin.models.cloudlulc_net",
        "Optical reliability modulation (ORM), high-order interaction blocks (HIAA: SHOI + CHOI), unified semantic mapping transformer (USMT), anchor-guided training.",
        "Xu et al., CloudLULC-Net: cloud-robust SAR-optical land-cover mapping (arXiv 2606.17713)",
        {"optical_bands": 12, "sar_bands": 2, "num_classes": 6, "tile_size": 512, "dataset": "CloudLULC-Set"},
    ),
}

_REGISTRY = {name: ModelInfo(**{**info.__dict__, "bounds": _BOUNDS[name]}) for name, info in _REGISTRY.items()}
MODEL_NAMES = tuple(_REGISTRY)

# Options added after checkpoints were first written, with the value an older configuration
# (which lacks the key) was built with - so an old checkpoint rebuilds the network it was trained as.
LEGACY_OPTIONS: Dict[str, Dict] = {
    "mosfnet": {"ffm_residual": False, "encoder": "convnextv2_tiny", "ffm_kernel": 3},
    "cloudlulc_net": {"decoder": "quarter", "context_dropout": 0.0},
}


def complete_config(name: str, config: Dict) -> Dict:
    """A stored model configuration with the options older versions did not record filled in."""
    return {**LEGACY_OPTIONS.get(name, {}), **config}


def available_models() -> List[Dict]:
    """One dict per model: name, title, one-line description, paper and paper defaults."""
    return [
        {"name": i.name, "title": i.title, "description": i.description, "paper": i.paper, "defaults": dict(i.defaults)}
        for i in _REGISTRY.values()
    ]


def model_info(name: str) -> ModelInfo:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise OptsarError(f"Unknown model '{name}'; known models: {', '.join(MODEL_NAMES)}.") from None


def build_model(name: str, *, optical_bands: int, sar_bands: int, num_classes: int, **options):
    """Build network ``name`` for the given band and class counts (see the module docstring)."""
    info = model_info(name)
    if not 1 <= int(optical_bands) <= 16:
        raise OptsarError(f"{info.title} needs 1-16 optical bands, got {optical_bands}.")
    if not 1 <= int(sar_bands) <= 4:
        raise OptsarError(f"{info.title} needs 1-4 SAR bands, got {sar_bands}.")
    if not 2 <= int(num_classes) <= 254:
        raise OptsarError(f"{info.title} needs 2-254 classes, got {num_classes}.")
    if info.bounds:  # stand-in networks registered by tests declare none
        check_options(name, options)
    from ..deps import require_torch

    require_torch(f"building {info.title}")
    module = importlib.import_module(info.module)
    return module.build(optical_bands=int(optical_bands), sar_bands=int(sar_bands), num_classes=int(num_classes), **options)
