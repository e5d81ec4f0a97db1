"""Training and fine-tuning: ``train(...)`` and ``python -m optsar_plugin train``.

Modules: :mod:`.reference` (labels and classes on the optical grid), :mod:`.sampler`
(scene reader, spatial-block split, tile sampling, normalisation statistics),
:mod:`.augment` (flips/rotations, simulated clouds), :mod:`.loop` (the engine),
:mod:`.report` (CSV log, HTML curve), :mod:`.cli` (the command line).  Importing
this package does not import torch.
"""

from .cli import add_arguments, run_cli
from .loop import MODEL_SIZES, RECIPES, SIZE_PRESETS, confusion_metrics, train

__all__ = ["train", "add_arguments", "run_cli", "confusion_metrics", "MODEL_SIZES", "RECIPES", "SIZE_PRESETS"]
