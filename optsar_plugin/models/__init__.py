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
from dataclasses import dataclass, field
from typing import Dict, List

from ..errors import OptsarError


@dataclass(frozen=True)
class ModelInfo:
    name: str
    title: str
    module: str
    description: str
    paper: str
    defaults: Dict = field(default_factory=dict)  # the paper's configuration


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

MODEL_NAMES = tuple(_REGISTRY)

# Options added after checkpoints were first written, with the value an older configuration
# (which lacks the key) was built with - so an old checkpoint rebuilds the network it was trained as.
LEGACY_OPTIONS: Dict[str, Dict] = {
    "mosfnet": {"ffm_residual": False, "encoder": "convnextv2_tiny", "ffm_kernel": 3},
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
    from ..deps import require_torch

    require_torch(f"building {info.title}")
    module = importlib.import_module(info.module)
    return module.build(optical_bands=int(optical_bands), sar_bands=int(sar_bands), num_classes=int(num_classes), **options)
