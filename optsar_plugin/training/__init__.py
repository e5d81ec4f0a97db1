"""Training and fine-tuning: ``train(...)`` and ``python -m optsar_plugin train``.

Modules: :mod:`.options` (:class:`TrainInputs`, :class:`TrainOptions`), :mod:`.recipes`
(optimiser recipes, model sizes, the automatic plan of a run), :mod:`.reference` (labels
and classes on the optical grid), :mod:`.sampler` (scene reader, spatial-block split,
tile sampling, normalisation statistics), :mod:`.augment` (flips/rotations, simulated
clouds), :mod:`.finetune` (starting from a checkpoint), :mod:`.loop` (batches, steps,
validation, early stopping), :mod:`.provenance` (checkpoint metadata and outputs),
:mod:`.report` (CSV log, HTML curve), :mod:`.engine` (the ``train`` entry point),
:mod:`.cli` (the command line).  Importing this package does not import torch.
"""

from .cli import add_arguments, run_cli
from .engine import run_training, train
from .metrics import confusion_metrics
from .options import MODEL_SIZES, TrainInputs, TrainOptions
from .recipes import RECIPES, SIZE_PRESETS

__all__ = ["train", "run_training", "TrainInputs", "TrainOptions", "add_arguments", "run_cli", "confusion_metrics",
           "MODEL_SIZES", "RECIPES", "SIZE_PRESETS"]
