"""Recipes: optimiser and schedule per network, model sizes, and the automatic plan of a run.

**Recipes** (:data:`RECIPES`, the papers' where they say, ours where they are silent):
AdamW (betas 0.9/0.999, no weight decay on biases, norms and position embeddings),
linear warm-up over 5 % of the steps (at most 1500, the SegFormer/ConvNeXt recipes'
warm-up), then the paper's decay: MOSFNet lr 1e-4 (paper) with weight decay 0.05 and
poly 1.0 (its ConvNeXt/UPerNet recipe); SpecSAR-Former lr 5e-4 with cosine annealing
(paper), weight decay 0.01 (SegFormer); CloudLULC-Net (no recipe published) lr 1e-4,
weight decay 0.01, poly 0.9 (CMX).  The ``small`` variants, trained from scratch on a
CPU for a short budget, use lr 1e-3 (measured: the paper rates barely move them in
that budget), MOSFNet's 1e-2 (:data:`MOSFNET_SMALL_LR`).  ``learning_rate`` overrides
all of these.

**Sizes** (:data:`SIZE_PRESETS`): ``paper`` builds each network as published;
``small`` narrows and shallows it (same modules, same wiring) so it trains in minutes
on a CPU; ``auto`` is ``paper`` on a CUDA GPU and ``small`` on the CPU.

**The plan** (:func:`make_plan`): every value the user leaves automatic is chosen
here from the device and the data, and the run logs and records where it came from.
A training run is counted in optimisation *steps*: a step budget (``max_steps``) with
a validation every ``steps_per_epoch`` steps (an "epoch" is that evaluation period) and
early stopping after ``patience`` validations without a better validation mIoU, once half
the budget is done (:data:`EARLY_STOP_FROM`); validations and the checkpoint use a moving
average of the weights (:data:`EMA_DECAY`).  A
step budget, so that the same seed gives the same weights; on a CPU the automatic budget also
has a **time limit** (``max_minutes``, :data:`AUTO_CPU_MINUTES`), because a CPU's speed varies
several-fold between machines (measured on two 2-core machines of the same kind: MOSFNet small
0.4 s and 1.2-1.3 s per step).  After each validation the loop projects the run's end from the
time the validations so far took, and where the limit would be passed it lowers the step budget
and fits the learning-rate schedule to it (:func:`fit_to_time`); a run still over time at the
limit is validated and stopped there.  The log and the result say so.  ``max_minutes`` 0 turns
the limit off (a run then gives the same weights on any machine).  Setting ``epochs`` (with or
without ``steps_per_epoch``) fixes the budget to ``epochs x steps_per_epoch`` steps as before,
with no time limit unless ``max_minutes`` is given.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, Optional

from ..errors import InputError


@dataclass(frozen=True)
class Recipe:
    lr: float
    lr_small: float
    weight_decay: float
    schedule: str  # "poly" | "cosine"
    power: float
    source: str


# MOSFNet small (ConvNeXtV2-atto encoders, trained from scratch) learns far more slowly per step than the
# other two small variants at lr 1e-3, and its CPU budget has a third of their steps.  Chosen by the runs'
# own validation mIoU on the demo scene (300 steps, seed 0: lr 1e-3 0.40, 2e-3 0.43, 3e-3 0.51, 5e-3 0.67,
# 1e-2 0.87) and checked on the real chip's development splits, which never see the assessed half (water
# IoU, dev / dev2: 1e-3 0.490 / 0.276, 1e-2 0.519 / 0.387).  CloudLULC-Net is not helped by a higher rate
# (3e-3: dev / dev2 0.530 / 0.680 against 0.530 / 0.689), so the other variants keep 1e-3.
MOSFNET_SMALL_LR = 1e-2

RECIPES: Dict[str, Recipe] = {
    "mosfnet": Recipe(1e-4, MOSFNET_SMALL_LR, 0.05, "poly", 1.0,
                      "paper: AdamW lr 1e-4; ConvNeXt/UPerNet recipe: wd 0.05, poly 1.0"),
    "specsar_former": Recipe(5e-4, 1e-3, 0.01, "cosine", 1.0, "paper: AdamW lr 5e-4, cosine annealing; SegFormer: wd 0.01"),
    "cloudlulc_net": Recipe(1e-4, 1e-3, 0.01, "poly", 0.9, "paper silent; CMX recipe: AdamW, wd 0.01, poly 0.9"),
}

# Options passed to build_model for each MODEL_SIZE ("paper" = the model's defaults).
SIZE_PRESETS: Dict[str, Dict[str, Dict]] = {
    "specsar_former": {
        "paper": {},
        "small": dict(embed_dims=[32, 64, 128, 256], depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8], decoder_dim=128),
    },
    "cloudlulc_net": {
        "paper": {},
        "small": dict(channels=32, num_blocks=2, order=2, embed_dim=128, depth=2, heads=4),
    },
    # MOSFNet small: ConvNeXtV2-atto encoders (stage widths 40-320, 3.4 M each instead of 27.9 M), same wiring.
    "mosfnet": {
        "paper": {},
        "small": dict(encoder="convnextv2_atto", decoder_channels=64, d_state=4, ssm_ratio=1.0),
    },
}

# Automatic budget.  CPU: the small variants, sized so that a run ends within about ten
# minutes on a 2-core CPU; CUDA: the paper variants on full tiles.
CPU_PIXELS_PER_STEP = 64 * 64 * 16
CPU_TILE = 128
# ~0.1-0.2 s per step for SpecSAR-Former and CloudLULC-Net small, ~0.6-1.2 s for MOSFNet (its SS2D scans run step
# by step on a CPU).  SpecSAR-Former small needs a longer run than 1500 steps: on the synthetic 512 px scene its
# validation mIoU was still rising at the last validation of the budget, and on the real chip early stopping ended
# every 1500-step run at 750-1000 steps, its best validation at 150-600, inside the jumpy first phase of its curve
# (see EARLY_STOP_FROM).  With 4500 steps (schedule and early-stopping start three times later) the real chip's
# development splits gave water IoU 0.535 / 0.694 and 0.506 / 0.729 (seeds 0 and 1; 1500 steps: 0.515 / 0.630 and
# 0.470 / 0.647), best validations at 2700-4500 steps.  CloudLULC-Net with 3000 steps stopped early at 1500-1600,
# no better (seed 0: 0.588 / 0.740 against 0.596 / 0.707), so it keeps 1500.  MOSFNet small's 500 steps also ended
# the synthetic benchmark with its validation still rising; with 1000 steps the real chip's development splits gave
# 0.508 / 0.420 and 0.522 / 0.508 (seeds 0 and 1; 500 steps: 0.519 / 0.387 and 0.517 / 0.423).  The time limit
# (AUTO_CPU_MINUTES) cuts a budget that a slow CPU cannot afford.
CPU_STEPS = {"specsar_former": 4500, "cloudlulc_net": 1500, "mosfnet": 1000}
CUDA_TILE = 512
CUDA_BATCH = 8
CUDA_STEPS = 8000
EVALUATIONS = 30  # validations over a full budget (automatic steps per epoch)
MIN_STEPS_PER_EPOCH = 25
PATIENCE = 8  # validations without improvement before stopping early
# Early stopping watches the validation curve only once this share of the step budget is done: before the
# learning rate has come down, the curve of a small labelled set jumps (measured on the real chip: validation
# mIoU 0.10-0.72 and held-out water IoU 0.10-0.67 from one validation to the next during the first half of a
# SpecSAR-Former run, stable at 0.71-0.72 / 0.64-0.67 in the second), and a stop there is a lottery.
EARLY_STOP_FROM = 0.5
# Validation and the checkpoint use an exponential moving average of the weights (timm's ModelEma; ours, the
# papers are silent).  Measured on the real chip (SpecSAR-Former, held-out quarter scored every 50 steps): the
# raw weights' held-out water IoU swung between 0.26 and 0.67 from one validation to the next even late in a
# run, the average's stayed within 0.65-0.66 from step 700 on.
EMA_DECAY = 0.99
WARMUP_FRACTION, MAX_WARMUP = 0.05, 1500
# Time limit of an automatic CPU budget: the ten minutes for a whole run, less reading the data,
# the statistics and writing the checkpoint.
AUTO_CPU_MINUTES = 9.0


def resolve_model_size(model_size: str, device_type: str) -> str:
    if model_size == "auto":
        return "paper" if device_type == "cuda" else "small"
    return model_size


def model_options_for(model: str, model_size: str, extra: Optional[Dict] = None) -> Dict:
    presets = SIZE_PRESETS.get(model, {})
    if model_size not in presets:
        raise InputError(f"MODEL_SIZE '{model_size}' is not defined for {model}; use 'paper'.")
    return {**presets[model_size], **(extra or {})}


@dataclass
class Plan:
    """Every setting of a run, resolved; ``chosen`` says which were automatic and why."""

    model_size: Optional[str]
    tile: int
    batch: int
    steps_per_epoch: int
    epochs: int
    max_steps: int
    patience: int
    stop_after: int  # early stopping may act from this step on
    lr: float
    warmup: int
    weight_decay: float
    schedule: str
    power: float
    recipe: str
    ema_decay: float = EMA_DECAY
    chosen: Dict[str, str] = field(default_factory=dict)
    max_minutes: float = 0.0  # time limit of the loop (0: none); the step budget is then fitted to it

    def to_dict(self) -> Dict:
        return asdict(self)


def auto_tile(device_type: str, height: int, width: int) -> int:
    """The largest multiple of 32 up to the device's tile that fits the raster (at least 64)."""
    want = CUDA_TILE if device_type == "cuda" else CPU_TILE
    return max(64, min(want, (min(height, width) // 32) * 32))


def auto_batch(device_type: str, tile: int) -> int:
    if device_type == "cuda":
        return CUDA_BATCH
    return max(1, CPU_PIXELS_PER_STEP // (tile * tile))


def make_plan(options, model_size: Optional[str], device_type: str, height: int, width: int) -> Plan:
    """Resolve the automatic settings of ``options`` (a :class:`~.options.TrainOptions`)."""
    chosen = {}
    tile = options.tile_size
    if tile is None:
        tile = auto_tile(device_type, height, width)
        chosen["tile_size"] = f"{tile} px ({device_type}, raster {width} x {height} px)"
    batch = options.batch_size
    if batch is None:
        batch = auto_batch(device_type, tile)
        chosen["batch_size"] = f"{batch} ({device_type}: {'paper-size tiles' if device_type == 'cuda' else 'about 65 000 px per step'})"
    if options.epochs is not None:  # the user's epochs x steps per epoch (max_steps, if given, still caps them)
        spe = options.steps_per_epoch or _auto_interval(options.max_steps or _auto_steps(options, device_type))
        total = options.epochs * spe
        if options.max_steps:
            total = min(total, options.max_steps)
    else:
        total = options.max_steps
        if total is None:
            total = _auto_steps(options, device_type)
            chosen["max_steps"] = f"{total} ({device_type} budget for {options.model} {model_size or 'from the checkpoint'})"
        spe = options.steps_per_epoch or _auto_interval(total)
    if options.steps_per_epoch is None:
        chosen["steps_per_epoch"] = f"{spe} (a validation every {spe} steps)"
    epochs = max(1, math.ceil(total / spe))
    patience = PATIENCE if options.patience is None else options.patience
    recipe = RECIPES[options.model]
    lr = options.learning_rate or (recipe.lr_small if model_size == "small" else recipe.lr)
    warmup = max(1, min(MAX_WARMUP, round(WARMUP_FRACTION * total)))
    minutes = options.max_minutes
    if minutes is None:
        automatic = options.epochs is None and options.max_steps is None and device_type != "cuda"
        minutes = AUTO_CPU_MINUTES if automatic else 0.0
        if automatic:
            chosen["max_minutes"] = f"{minutes:g} (time limit of an automatic CPU budget)"
    return Plan(model_size, int(tile), int(batch), int(spe), int(epochs), int(total), int(patience),
                int(EARLY_STOP_FROM * total), float(lr), warmup,
                recipe.weight_decay, recipe.schedule, recipe.power, recipe.source, EMA_DECAY, chosen, float(minutes))


def fit_to_time(plan: Plan, done_epochs: int, step: int, elapsed: float, epoch_seconds: float) -> Optional[int]:
    """The lower step budget that ends within ``plan.max_minutes``, or None when the current one does.

    ``elapsed``: seconds of the loop so far, ``epoch_seconds``: what one validation period (its steps
    and its validation) has taken.  The budget stays a whole number of periods, at least the
    steps already done; the plan's epochs, warm-up and early-stopping start follow it.
    """
    if not plan.max_minutes or epoch_seconds <= 0:
        return None
    remaining = plan.epochs - done_epochs
    if elapsed + remaining * epoch_seconds <= 60.0 * plan.max_minutes:
        return None
    affordable = max(0, int((60.0 * plan.max_minutes - elapsed) // epoch_seconds))
    total = max(step, min(plan.max_steps, (done_epochs + affordable) * plan.steps_per_epoch))
    if total >= plan.max_steps:
        return None
    plan.max_steps, plan.epochs = total, max(done_epochs, math.ceil(total / plan.steps_per_epoch))
    plan.stop_after = int(EARLY_STOP_FROM * total)
    plan.warmup = max(1, min(plan.warmup, round(WARMUP_FRACTION * total)))
    return total


def _auto_interval(total: int) -> int:
    return max(MIN_STEPS_PER_EPOCH, math.ceil(total / EVALUATIONS))


def _auto_steps(options, device_type: str) -> int:
    return CUDA_STEPS if device_type == "cuda" else CPU_STEPS[options.model]


def lr_lambda(total: int, warmup: int, schedule: str, power: float):
    """Linear warm-up, then cosine or poly decay to 0 at ``total`` steps (a LambdaLR factor)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return (1.0 - p) ** power

    return f


def param_groups(model, weight_decay: float):
    """AdamW groups: no weight decay on biases, norms and position embeddings."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or "pos_embed" in name or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


# Class balancing of the loss ("auto": the paper's where it says, else what was measured; see class_balance).
SAMPLING_POWER = 0.5  # class-balanced tile sampling when the loss has no class weights (see class_balance)
AUTO_BALANCE = {"specsar_former": "inverse", "cloudlulc_net": "inverse", "mosfnet": "none"}
BALANCE_POWER = {"none": 0.0, "sqrt": 0.5, "inverse": 1.0}


def class_balance(balance: str, model: str, counts) -> Dict:
    """How class imbalance is countered, from the labelled training pixels per class - once, not twice.

    With class weights in the loss (SpecSAR-Former's alpha-balanced focal loss, whose alpha
    the paper sets "based on the inverse frequency of the classes": ``auto`` = ``inverse``;
    or ``inverse`` / ``sqrt`` for the others' losses) training tiles are drawn around
    labelled pixels at their natural frequency (``sampling_power`` 1).  Without weights
    (``none``; ``auto`` for MOSFNet) the tiles are centred on a class drawn with probability
    proportional to the square root of its pixel count (``sampling_power`` 0.5), so rare
    classes are seen more often than their share.  CloudLULC-Net's paper names no balancing;
    its ``auto`` is ``inverse`` by measurement (docs/training_notebook.md): without it the
    network never mapped the two rarest classes of one synthetic scene (water, flooded
    vegetation, 1 % each), and over five scenes inverse weights gained mIoU and mIoU under
    clouds, while on the real chip's four halves they moved the mean water IoU by -0.001
    (more water predicted: +0.049 on one half, -0.058 on another).  Measured on the real chip:
    weights and balanced sampling together over-predict the rare class (SpecSAR-Former,
    development split: water IoU 0.51 against 0.65-0.66 for either alone).  Weights are
    ``(1 / frequency) ** power`` (power 1 for inverse, 0.5 for sqrt), mean 1 over the classes.
    Returns ``{"mode", "weights", "focal_alpha", "sampling_power"}``.
    """
    from ..models.losses import inverse_frequency_alpha

    mode = AUTO_BALANCE[model] if balance == "auto" else balance
    weights = None
    if mode != "none":
        weights = [round(w, 6) for w in inverse_frequency_alpha(list(counts), power=BALANCE_POWER[mode])]
    power = 1.0 if weights else SAMPLING_POWER
    if model == "specsar_former":
        return {"mode": mode, "weights": None, "focal_alpha": weights, "sampling_power": power}
    return {"mode": mode, "weights": weights, "focal_alpha": None, "sampling_power": power}
