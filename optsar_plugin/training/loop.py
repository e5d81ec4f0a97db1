"""``train(...)``: train or fine-tune a network from optical + SAR rasters and reference labels.

Data flow::

    reference polygons / label raster ─> class indices on the optical grid (reference.py)
        ─> spatial-block split (train / held-out blocks) ─> tile sampler (sampler.py)
    optical + SAR (warped per window) + cloud mask ─> raw tile ─> [simulated clouds] ─> normalise
        ─> [optical zeroed under the cloud mask] ─> flips / rotations ─> model.forward_train ─> model.loss
    every epoch: held-out blocks ─> model(optical, sar) ─> confusion matrix ─> OA, mIoU, per-class IoU
    best epoch by validation mIoU ─> checkpoint (+ CSV log, HTML curve)

Choices where the papers are silent or the plugin's setting differs (ours):

* **Recipes** (:data:`RECIPES`): AdamW (betas 0.9/0.999, no weight decay on biases,
  norms and position embeddings), linear warm-up over 5 % of the steps (at most 1500,
  the SegFormer/ConvNeXt recipes' warm-up) then the paper's decay: MOSFNet lr 1e-4
  (paper) with weight decay 0.05 and poly 1.0 (its ConvNeXt/UPerNet recipe);
  SpecSAR-Former lr 5e-4 with cosine annealing (paper), weight decay 0.01 (SegFormer);
  CloudLULC-Net (no recipe published) lr 1e-4, weight decay 0.01, poly 0.9 (CMX).
  The ``small`` variants, trained from scratch on a CPU for a few epochs, use lr 1e-3
  (measured on the sample scene: the paper rates barely move them in that budget).
  ``LEARNING_RATE`` overrides all of these.
* **Losses** are the models' own ``model.loss`` (cross-entropy + auxiliary head for
  MOSFNet, focal loss for SpecSAR-Former, cross-entropy + semantic anchor for
  CloudLULC-Net), with 255 ignored.
* **Sizes** (:data:`SIZE_PRESETS`): ``paper`` builds each network as published;
  ``small`` narrows and shallows it (same modules, same wiring) so that the demo
  trains in minutes on a laptop CPU: SpecSAR-Former with stage widths 32-256, one
  block per stage and a 128-wide decoder (1.8 M parameters instead of 26.5 M);
  CloudLULC-Net with C = 32, N = 2 blocks of order 2, D = 128, depth 2 (1.2 M
  instead of 10.5 M); MOSFNet only with a 64-wide decoder and a smaller SS2D state,
  because the model fixes its encoders to ConvNeXtV2-tiny (about 80 M parameters
  remain, some ten times slower per step than the other two on a CPU).
* **Clouds**: with a cloud mask, networks other than CloudLULC-Net see their optical
  input zeroed (= the training median) under the mask, exactly as
  ``optsar:classify`` feeds them (its ``auto`` cloud mode); CloudLULC-Net sees the
  optical data as they are and, in addition, half of its training tiles get
  simulated clouds and shadows (:mod:`.augment`).  ``cloud_simulation`` can switch
  the simulation on for any network or off for CloudLULC-Net.
* **Epoch** = as many training tiles as would cover the labelled training blocks
  once (``steps_per_epoch`` overrides).
* **Best checkpoint** = the epoch with the highest validation mIoU (ties: the
  earlier); without validation (``validation_fraction`` 0) the last epoch.
  Cancelling keeps and writes the best epoch so far (the result says
  ``cancelled``); cancelling before the first epoch ends writes nothing.
* **Repeatability**: ``seed`` seeds torch (weights, dropout; inside
  :func:`torch.random.fork_rng`, so the caller's random state is untouched) and a
  numpy Generator (split, tiles, augmentation); on the CPU deterministic algorithms
  are switched on for the run, so the same seed, data and thread count give the same
  checkpoint weights.
* **Fine-tuning** (``init_checkpoint``): the network, its configuration and its
  normalisation statistics come from the checkpoint (``model_size`` is ignored) -
  the weights were learnt on inputs scaled that way, and a warning says when the
  new data are far from them.  The network must be the same and the band counts
  must match (names are compared as ``optsar:classify`` does).  When the classes
  differ, the layers whose shape depends on the number of classes (the classifier,
  auxiliary heads, CloudLULC-Net's anchor encoder) start from fresh random weights
  and everything else continues from the checkpoint.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import normalisation, raster_io
from ..classes import NODATA, normalise_name
from ..errors import Cancelled, OptsarError
from ..progress import NullFeedback, check_cancel
from . import report
from .augment import dihedral, reflectance_unit, simulate_clouds
from .reference import _drop_empty, labels_from_raster, labels_from_vector
from .sampler import (
    DEFAULT_MEMORY_LIMIT,
    SceneSource,
    TileSampler,
    compute_statistics,
    spatial_split,
    stats_shift,
    training_tiles_per_epoch,
    validation_cells,
)

MODEL_SIZES = ("paper", "small")
DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("fp32", "bf16")
CLOUD_SIMULATION = ("auto", "on", "off")
CLOUD_MODES = ("auto", "keep", "zero")
CLOUD_PROBABILITY = 0.5
MAX_BAD_STEPS = 5


@dataclass(frozen=True)
class Recipe:
    lr: float
    lr_small: float
    weight_decay: float
    schedule: str  # "poly" | "cosine"
    power: float
    source: str


RECIPES: Dict[str, Recipe] = {
    "mosfnet": Recipe(1e-4, 1e-3, 0.05, "poly", 1.0, "paper: AdamW lr 1e-4; ConvNeXt/UPerNet recipe: wd 0.05, poly 1.0"),
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
    # MOSFNet's encoders are fixed to ConvNeXtV2-tiny by the model (no narrower encoder option), so its
    # small variant only narrows the UPerNet decoder and the SS2D state: still ~80 M parameters.
    "mosfnet": {
        "paper": {},
        "small": dict(decoder_channels=64, d_state=4, ssm_ratio=1.0),
    },
}


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------
def _check_options(model, model_size, epochs, tile_size, batch_size, learning_rate, validation_fraction,
                   steps_per_epoch, device, precision, cloud_simulation, cloud_mode):
    from ..models import model_info

    model_info(model)
    if model_size not in MODEL_SIZES:
        raise OptsarError(f"Unknown MODEL_SIZE '{model_size}': use one of {', '.join(MODEL_SIZES)}.")
    if int(epochs) < 1:
        raise OptsarError(f"EPOCHS must be at least 1, got {epochs}.")
    t = int(tile_size)
    if t != tile_size or t < raster_io.MIN_TILE or t % 32:
        raise OptsarError(f"TILE_SIZE {tile_size} is not allowed: the networks need a multiple of 32 pixels, at least 64.")
    if int(batch_size) < 1:
        raise OptsarError(f"BATCH_SIZE must be at least 1, got {batch_size}.")
    if learning_rate is not None and not (0 <= float(learning_rate) < 1):
        raise OptsarError(f"LEARNING_RATE must be between 0 (the model's recipe) and 1, got {learning_rate}.")
    if not 0 <= float(validation_fraction) <= 0.5:
        raise OptsarError(f"VALIDATION_FRACTION must be between 0 and 0.5, got {validation_fraction}.")
    if steps_per_epoch is not None and int(steps_per_epoch) < 0:
        raise OptsarError(f"Steps per epoch must be at least 1 (or 0 for automatic), got {steps_per_epoch}.")
    if str(device).lower().split(":")[0] not in DEVICES:
        raise OptsarError(f"Unknown DEVICE '{device}': use auto, cuda or cpu.")
    if precision not in PRECISIONS:
        raise OptsarError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    if cloud_simulation not in CLOUD_SIMULATION:
        raise OptsarError(f"Unknown cloud simulation '{cloud_simulation}': use one of {', '.join(CLOUD_SIMULATION)}.")
    if cloud_mode not in CLOUD_MODES:
        raise OptsarError(f"Unknown cloud mode '{cloud_mode}': use one of {', '.join(CLOUD_MODES)}.")


def model_options_for(model: str, model_size: str, extra: Optional[Dict] = None) -> Dict:
    presets = SIZE_PRESETS.get(model, {})
    if model_size not in presets:
        raise OptsarError(f"MODEL_SIZE '{model_size}' is not defined for {model}; use 'paper'.")
    return {**presets[model_size], **(extra or {})}


def confusion_metrics(cm: np.ndarray) -> Dict:
    """OA, mIoU, macro F1 and per-class IoU from a (K, K) matrix (rows = reference)."""
    cm = np.asarray(cm, np.float64)
    total = cm.sum()
    if total == 0:
        return {"oa": None, "miou": None, "macro_f1": None, "iou": [None] * len(cm)}
    tp = np.diag(cm)
    ref, pred = cm.sum(1), cm.sum(0)
    union = ref + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(ref + pred > 0, 2 * tp / (ref + pred), np.nan)
    return {
        "oa": float(tp.sum() / total),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else None,
        "iou": [None if math.isnan(v) else float(v) for v in iou],
    }


def _lr_lambda(total: int, warmup: int, schedule: str, power: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        p = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * p))
        return (1.0 - p) ** power

    return f


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or "pos_embed" in name or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _temp(final: str) -> str:
    folder, name = os.path.split(final)
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")


def _write_text(path: str, text: str) -> str:
    tmp = _temp(path)
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return tmp


# ------------------------------------------------------------------------------------------
# fine-tuning
# ------------------------------------------------------------------------------------------
def _from_checkpoint(path, model_name, scheme, band_spec, feedback):
    """(model, metadata, re-initialised tensor names) for fine-tuning from ``path``."""
    from ..checkpoints import check_compatible, load_checkpoint
    from ..models import build_model

    net, meta = load_checkpoint(path, device="cpu")
    name = meta["model"]["name"]
    if name != model_name:
        raise OptsarError(
            f"INIT_CHECKPOINT '{path}' holds a {name} network, but MODEL is {model_name}: fine-tuning needs the same "
            f"network. Choose MODEL {name}, or train {model_name} from scratch."
        )
    for w in check_compatible(meta, model_name=model_name, path=path, **band_spec):
        feedback.warning(w)
    old = [(int(c["code"]), normalise_name(c["name"])) for c in meta.get("classes") or []]
    new = [(c.code, normalise_name(c.name)) for c in scheme]
    if old == new:
        return net, meta, []
    config = dict(meta["model"]["config"])
    config["num_classes"] = len(scheme)
    for key, value in list(config.items()):  # per-class options (e.g. focal_alpha) cannot carry over
        if isinstance(value, list) and len(value) == len(old) and key not in ("optical_bands", "sar_bands"):
            if key not in ("embed_dims", "depths", "num_heads", "sr_ratios"):
                config[key] = None
    model = build_model(name, **config)
    probe = build_model(name, **{**config, "num_classes": len(scheme) + 1}).state_dict()
    target = model.state_dict()
    dependent = sorted(k for k, v in target.items() if k in probe and probe[k].shape != v.shape)
    for k, v in net.state_dict().items():
        if k in target and k not in dependent and target[k].shape == v.shape:
            target[k] = v
    model.load_state_dict(target)
    feedback.warning(
        f"The classes ({', '.join(c.name for c in scheme)}) differ from INIT_CHECKPOINT's "
        f"({', '.join(c['name'] for c in meta.get('classes') or [])}): the {len(dependent)} class-dependent "
        f"tensor(s) ({', '.join(dependent[:6])}{', ...' if len(dependent) > 6 else ''}) start from random weights, "
        "the rest is fine-tuned."
    )
    return model, meta, dependent


# ------------------------------------------------------------------------------------------
# the engine
# ------------------------------------------------------------------------------------------
def train(
    optical,
    sar,
    output_checkpoint,
    *,
    reference=None,
    class_field: Optional[str] = None,
    name_field: Optional[str] = None,
    reference_layer: Optional[str] = None,
    labels=None,
    optical_bands: Optional[Sequence[int]] = None,
    sar_bands: Optional[Sequence[int]] = None,
    cloud_mask=None,
    model: str = "specsar_former",
    model_size: str = "small",
    model_options: Optional[Dict] = None,
    init_checkpoint=None,
    epochs: int = 10,
    tile_size: int = 256,
    batch_size: int = 4,
    learning_rate: Optional[float] = None,
    validation_fraction: float = 0.2,
    seed: int = 0,
    device: str = "auto",
    output_log=None,
    output_curve=None,
    steps_per_epoch: Optional[int] = None,
    cloud_simulation: str = "auto",
    cloud_mode: str = "auto",
    precision: str = "fp32",
    ignore_sar: bool = False,
    memory_limit: int = DEFAULT_MEMORY_LIMIT,
    feedback=None,
) -> Dict:
    """Train ``model`` (or fine-tune ``init_checkpoint``) and write ``output_checkpoint``.

    Inputs: ``optical``/``sar``/``cloud_mask`` raster paths (SAR and mask may be on any
    grid; the optical grid is the training grid), ``optical_bands``/``sar_bands``
    1-based band numbers (default all); labels from ``reference`` (a vector file, QGIS
    ``path|layername=x`` accepted, or ``reference_layer``) with ``class_field`` (codes
    or names) and optional ``name_field``, or from a ``labels`` raster of class codes.
    ``model``: mosfnet | specsar_former | cloudlulc_net; ``model_size``: paper | small
    (``model_options`` override single constructor options); ``learning_rate`` None/0 =
    the recipe's; ``validation_fraction`` of the labelled pixels held out in spatial
    blocks (0 = none); ``device`` auto | cuda | cpu; ``precision`` fp32 | bf16 (CUDA
    autocast); ``cloud_simulation`` auto | on | off; ``cloud_mode`` auto | keep | zero
    (what the network sees under the cloud mask, as in classify); ``ignore_sar`` (an
    ablation for benchmarks: SAR input replaced by zeros; the checkpoint still needs a
    SAR raster).  Outputs: the checkpoint, and optionally ``output_log`` (CSV) and
    ``output_curve`` (HTML).

    Returns a dict: output paths, ``best_epoch``, ``best`` metrics, ``history`` (one
    dict per epoch), ``classes``, ``device``, ``seconds``, ``seconds_per_epoch``,
    ``steps_per_epoch``, ``cancelled``, ``warnings``.
    Raises :class:`OptsarError` for bad input (nothing written) and
    :class:`~optsar_plugin.errors.Cancelled` when cancelled before an epoch finished.
    """
    feedback = feedback or NullFeedback()
    t_start = time.perf_counter()
    model_options = dict(model_options or {})
    learning_rate = None if learning_rate in (None, 0, 0.0) else float(learning_rate)
    steps_per_epoch = int(steps_per_epoch) if steps_per_epoch else None
    _check_options(model, model_size, epochs, tile_size, batch_size, learning_rate, validation_fraction,
                   steps_per_epoch, device, precision, cloud_simulation, cloud_mode)
    if (reference is None) == (labels is None):
        raise OptsarError("Give either REFERENCE (polygons with CLASS_FIELD) or LABELS (a raster of class codes), not both.")
    finals = {"checkpoint": raster_io.check_writable(output_checkpoint, "output checkpoint")}
    if output_log:
        finals["log"] = raster_io.check_writable(output_log, "training log")
    if output_curve:
        finals["curve"] = raster_io.check_writable(output_curve, "training curve")
    inputs = {os.path.abspath(os.fspath(p)) for p in (optical, sar, cloud_mask, labels, init_checkpoint) if p}
    if reference:
        inputs.add(os.path.abspath(str(reference).split("|")[0]))
    if len(set(finals.values())) != len(finals) or inputs & set(finals.values()):
        raise OptsarError("The outputs must differ from each other and from the inputs.")
    tile = int(tile_size)
    warnings: List[str] = []

    class _Collect:  # keeps the warnings for the result while forwarding everything
        def progress(self, fraction, message=None):
            feedback.progress(fraction, message)

        def info(self, message):
            feedback.info(message)

        def warning(self, message):
            warnings.append(message)
            feedback.warning(message)

        def is_canceled(self):
            return feedback.is_canceled()

    fb = _Collect()
    from .. import __version__
    from ..deps import require_torch
    from ..devices import resolve_device
    from ..options import cloud_handling

    torch = require_torch("training a network")
    with SceneSource(optical, sar, optical_bands, sar_bands, cloud_mask, memory_limit) as source:
        H, W = source.height, source.width
        if tile > min(H, W):
            raise OptsarError(
                f"TILE_SIZE {tile} is larger than the optical raster '{source.optical_ds.name}' ({W} x {H} px); "
                "use a smaller tile (a multiple of 32, at least 64)."
            )
        fb.info(f"Reading the training labels on the optical grid ({W} x {H} px)...")
        if reference is not None:
            lab = labels_from_vector(str(reference), class_field, source.optical_ds, name_field=name_field,
                                     layer=reference_layer, feedback=fb)
        else:
            lab = labels_from_raster(str(labels), source.optical_ds, feedback=fb)
        invalid = source.invalid_mask()  # labels where the inputs are nodata cannot be learnt from
        if invalid is not None:
            n_bad = int((invalid & (lab.index != NODATA)).sum())
            if n_bad:
                lab.index[invalid] = NODATA
                fb.warning(f"{n_bad} labelled pixel(s) where the optical or SAR raster is nodata are ignored.")
                lab.counts = np.bincount(lab.index[lab.index != NODATA], minlength=len(lab.scheme))[: len(lab.scheme)]
                lab.index, lab.scheme, lab.counts, _ = _drop_empty(lab.index, lab.scheme, lab.counts, lab.source, fb)
        scheme = lab.scheme
        K = len(scheme)
        if lab.labelled < tile * tile:
            raise OptsarError(
                f"Only {lab.labelled} pixels of {lab.source} are labelled on the optical raster, fewer than one "
                f"{tile} x {tile} tile ({tile * tile} px). Add reference data or use a smaller TILE_SIZE."
            )
        fb.info("Classes (code, name: labelled pixels): " + "; ".join(
            f"{c.code} {c.name}: {int(n)}" for c, n in zip(scheme.classes, lab.counts)))
        split = spatial_split(lab.index, K, tile, float(validation_fraction), int(seed))
        if split.n_val_blocks:
            missing = [c.name for c, n in zip(scheme.classes, split.val_counts) if n == 0]
            fb.info(
                f"Validation: {split.n_val_blocks} of {split.n_val_blocks + split.n_train_blocks} labelled blocks of "
                f"{split.block} x {split.block} px held out ({int(split.val_counts.sum())} of {lab.labelled} labelled "
                "pixels)."
            )
            if missing:
                fb.warning(f"No validation pixels for class(es) {', '.join(missing)}; their IoU is not measured.")
            notrain = [c.name for c, n in zip(scheme.classes, split.train_counts) if n == 0]
            if notrain:
                fb.warning(f"Class(es) {', '.join(notrain)} have labels only in held-out blocks and are never trained on.")
        else:
            fb.warning("VALIDATION_FRACTION is 0: no validation; the last epoch is kept.")
        rng = np.random.default_rng(int(seed))
        sampler = TileSampler(lab.index, split, tile, rng)
        cells = validation_cells(split, H, W, tile, lab.index) if split.n_val_blocks else []
        o_names, s_names = source.band_names()
        stats_o, stats_s = compute_statistics(source, sampler, split, rng)

        dev = resolve_device(device, fb)
        if precision == "bf16" and dev.type != "cuda":
            fb.warning("Precision bf16 needs a CUDA GPU; training in fp32 on the CPU.")
            precision = "fp32"
        deterministic = dev.type == "cpu"
        prev_det = torch.are_deterministic_algorithms_enabled()
        fork_devices = [dev.index or 0] if dev.type == "cuda" else []
        try:
            if deterministic:
                torch.use_deterministic_algorithms(True, warn_only=True)
            with torch.random.fork_rng(devices=fork_devices):
                torch.manual_seed(int(seed))
                init_info = None
                if init_checkpoint:
                    spec = {
                        "optical_bands": o_names if source.descriptions_complete[0] else len(o_names),
                        "sar_bands": s_names if source.descriptions_complete[1] else len(s_names),
                    }
                    net, init_meta, reinit = _from_checkpoint(os.fspath(init_checkpoint), model, scheme, spec, fb)
                    norm = init_meta.get("normalisation") or {}
                    if norm.get("optical") and norm.get("sar"):
                        for kind, old, new in (("optical", norm["optical"], stats_o), ("SAR", norm["sar"], stats_s)):
                            if stats_shift(old, new) > 3.0:
                                fb.warning(
                                    f"The {kind} data differ strongly from INIT_CHECKPOINT's training data (a band "
                                    "median more than 3 robust standard deviations away); check the units and bands."
                                )
                        stats_o, stats_s = norm["optical"], norm["sar"]
                    init_info = {"path": os.path.abspath(os.fspath(init_checkpoint)),
                                 "content_hash": init_meta.get("content_hash"),
                                 "classes": init_meta.get("classes"), "reinitialised": reinit}
                    if model_size != "small" or model_options:
                        fb.info("Fine-tuning: the network configuration comes from INIT_CHECKPOINT (MODEL_SIZE ignored).")
                    options_used = None
                else:
                    from ..models import build_model

                    options_used = model_options_for(model, model_size, model_options)
                    net = build_model(model, optical_bands=len(source.obands), sar_bands=len(source.sbands),
                                      num_classes=K, **options_used)
                result = _run(
                    torch, net, source, lab, split, sampler, cells, stats_o, stats_s, dev, rng, fb,
                    model=model, epochs=int(epochs), tile=tile, batch_size=int(batch_size),
                    learning_rate=learning_rate, model_size=model_size if not init_checkpoint else "checkpoint",
                    steps_per_epoch=steps_per_epoch, cloud_simulation=cloud_simulation,
                    handling=cloud_handling(cloud_mode, model) if source.has_cloud_mask else None,
                    precision=precision, ignore_sar=bool(ignore_sar),
                )
        finally:
            if deterministic:
                torch.use_deterministic_algorithms(prev_det)

        # -- outputs -------------------------------------------------------------------------
        history, best_epoch = result["history"], result["best_epoch"]
        best_row = next((r for r in history if r["epoch"] == best_epoch), history[-1])
        training = {
            "engine": f"optsar_plugin.training {__version__}",
            "optical": os.path.abspath(os.fspath(optical)),
            "optical_band_numbers": source.obands,
            "sar": os.path.abspath(os.fspath(sar)),
            "sar_band_numbers": source.sbands,
            "cloud_mask": os.path.abspath(os.fspath(cloud_mask)) if cloud_mask else None,
            "reference": os.path.abspath(str(reference).split("|")[0]) if reference else None,
            "reference_layer": reference_layer,
            "class_field": class_field,
            "name_field": name_field,
            "labels": os.path.abspath(os.fspath(labels)) if labels else None,
            "labelled_pixels": {c.name: int(n) for c, n in zip(scheme.classes, lab.counts)},
            "model_size": model_size if not init_checkpoint else None,
            "model_options": options_used,
            "init_checkpoint": init_info,
            "epochs": int(epochs),
            "epochs_completed": len(history),
            "steps_per_epoch": result["steps_per_epoch"],
            "batch_size": int(batch_size),
            "tile_size": tile,
            "optimizer": result["optimizer"],
            "schedule": result["schedule"],
            "augmentation": ["rot90", "flip"],
            "cloud_simulation": result["cloud_simulation"],
            "cloud_mode": result["handling"],
            "ignore_sar": bool(ignore_sar),
            "validation": {
                "fraction": float(validation_fraction),
                "block_px": split.block,
                "held_out_blocks": [[int(r), int(c)] for r, c in np.argwhere(split.val_blocks)],
                "train_pixels": int(split.train_counts.sum()),
                "validation_pixels": int(split.val_counts.sum()),
            },
            "seed": int(seed),
            "device": str(dev),
            "precision": precision,
            "torch": torch.__version__,
            "best_epoch": best_epoch,
            "best": {k: best_row.get(k) for k in ("val_oa", "val_miou", "val_macro_f1", "val_miou_clear",
                                                    "val_miou_cloudy", "val_iou", "train_loss", "val_loss")},
            "confusion_matrix": result["best_confusion"],
            "history": history,
            "cancelled": result["cancelled"],
            "seconds": round(time.perf_counter() - t_start, 2),
            "seconds_per_epoch": result["seconds_per_epoch"],
        }
        metadata = {
            "model": {"name": model, "config": dict(result["model"].config)},
            "bands": {"optical": o_names, "sar": s_names},
            "normalisation": {"optical": stats_o, "sar": stats_s},
            "classes": scheme.to_list(),
            "nodata": {"output": NODATA, "ignore_index": NODATA},
            "tile_size": tile,
            "training": training,
        }
        summary = {
            "model": model,
            "model size": training["model_size"] or "from INIT_CHECKPOINT",
            "device": str(dev),
            "epochs completed": f"{len(history)} of {epochs}" + (" (cancelled)" if result["cancelled"] else ""),
            "steps per epoch": result["steps_per_epoch"],
            "tile size": tile,
            "batch size": int(batch_size),
            "learning rate": result["optimizer"]["lr"],
            "best epoch": best_epoch,
            "best validation mIoU": best_row.get("val_miou"),
            "best validation OA": best_row.get("val_oa"),
            "seconds per epoch": result["seconds_per_epoch"],
        }
        temps = {}
        try:
            if "log" in finals:
                temps["log"] = _write_text(finals["log"], report.log_csv(history, scheme.names))
            if "curve" in finals:
                temps["curve"] = _write_text(finals["curve"], report.curve_html(history, summary, scheme.to_list()))
            from ..checkpoints import save_checkpoint

            written = save_checkpoint(finals["checkpoint"], result["model"], metadata)
            for key, tmp in temps.items():
                os.replace(tmp, finals[key])
            temps.clear()
        finally:
            for tmp in temps.values():
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
    fb.info(
        f"Wrote {finals['checkpoint']} (best epoch {best_epoch}, validation mIoU "
        f"{_f(best_row.get('val_miou'))}, OA {_f(best_row.get('val_oa'))})."
    )
    return {
        "checkpoint": finals["checkpoint"],
        "log": finals.get("log"),
        "curve": finals.get("curve"),
        "best_epoch": best_epoch,
        "best": training["best"],
        "history": history,
        "classes": scheme.to_list(),
        "device": str(dev),
        "steps_per_epoch": result["steps_per_epoch"],
        "seconds": training["seconds"],
        "seconds_per_epoch": result["seconds_per_epoch"],
        "cancelled": result["cancelled"],
        "content_hash": written.get("content_hash"),
        "warnings": warnings,
    }


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _run(torch, net, source, lab, split, sampler, cells, stats_o, stats_s, dev, rng, fb, *, model, epochs, tile,
         batch_size, learning_rate, model_size, steps_per_epoch, cloud_simulation, handling, precision, ignore_sar):
    """The optimisation loop; returns the (best) model and the history."""
    import torch.nn.functional as F

    K = len(lab.scheme)
    recipe = RECIPES[model]
    lr = learning_rate or (recipe.lr_small if model_size == "small" else recipe.lr)
    tiles = training_tiles_per_epoch(split, source.height, source.width, tile)
    S = steps_per_epoch or max(1, math.ceil(tiles / batch_size))
    total = S * epochs
    warmup = max(1, min(1500, round(0.05 * total)))
    simulate = cloud_simulation == "on" or (cloud_simulation == "auto" and model == "cloudlulc_net")
    unit = reflectance_unit(stats_o)
    net = net.to(dev)
    net.train()
    opt = torch.optim.AdamW(_param_groups(net, recipe.weight_decay), lr=lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, warmup, recipe.schedule, recipe.power))
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else None
    n_params = sum(p.numel() for p in net.parameters())
    fb.info(
        f"Training {model} ({n_params / 1e6:.2f} M parameters) on {dev}: {epochs} epoch(s) x {S} step(s) of "
        f"{batch_size} tile(s) of {tile} x {tile} px; AdamW lr {lr:g} ({recipe.schedule}, warm-up {warmup} steps); "
        f"{len(cells)} validation tile(s)"
        + ("; simulated clouds on half of the tiles" if simulate else "")
        + ("; optical zeroed under the cloud mask" if handling == "zero" else "")
        + ("; SAR input ignored (ablation)" if ignore_sar else "")
        + "."
    )

    def prepare(o, s, cloud):
        on = normalisation.apply(o, stats_o)
        sn = normalisation.apply(s, stats_s)
        if cloud is not None and handling == "zero":
            on[:, cloud] = 0.0
        if ignore_sar:
            sn[:] = 0.0
        return on, sn

    def batch():
        os_, ss_, ys_ = [], [], []
        while len(ys_) < batch_size:
            for _ in range(20):
                r0, c0 = sampler.sample()
                o, s, cloud = source.read(r0, c0, tile, tile)
                y = lab.index[r0 : r0 + tile, c0 : c0 + tile].copy()
                y[split.is_val(r0, c0, tile, tile)] = NODATA
                y[raster_io.all_invalid(o) | raster_io.all_invalid(s)] = NODATA
                if (y != NODATA).any():
                    break
            if simulate and rng.random() < CLOUD_PROBABILITY:
                o, _ = simulate_clouds(o, rng, unit)
            on, sn = prepare(o, s, cloud)
            on, sn, y = dihedral([on, sn, y], int(rng.integers(0, 4)), bool(rng.random() < 0.5))
            os_.append(on)
            ss_.append(sn)
            ys_.append(y)
        return (torch.from_numpy(np.stack(os_)).to(dev), torch.from_numpy(np.stack(ss_)).to(dev),
                torch.from_numpy(np.stack(ys_).astype(np.int64)).to(dev))

    def validate():
        cm = np.zeros((K, K), np.int64)
        cm_cloud = np.zeros((K, K), np.int64) if source.has_cloud_mask else None
        loss_sum, n_px = 0.0, 0
        net.eval()
        try:
            with torch.no_grad():
                for b0 in range(0, len(cells), batch_size):
                    check_cancel(fb)
                    items = []
                    for wr, wc, cr, cc, ch, cw in cells[b0 : b0 + batch_size]:
                        o, s, cloud = source.read(wr, wc, tile, tile)
                        y = np.full((tile, tile), NODATA, np.uint8)
                        a, b = cr - wr, cc - wc
                        y[a : a + ch, b : b + cw] = lab.index[cr : cr + ch, cc : cc + cw]
                        y[raster_io.all_invalid(o) | raster_io.all_invalid(s)] = NODATA
                        on, sn = prepare(o, s, cloud)
                        items.append((on, sn, y, cloud))
                    o_t = torch.from_numpy(np.stack([i[0] for i in items])).to(dev)
                    s_t = torch.from_numpy(np.stack([i[1] for i in items])).to(dev)
                    y_np = np.stack([i[2] for i in items])
                    y_t = torch.from_numpy(y_np.astype(np.int64)).to(dev)
                    if autocast:
                        with autocast():
                            logits = net(o_t, s_t)
                    else:
                        logits = net(o_t, s_t)
                    logits = logits.float()
                    labelled = y_np != NODATA
                    n = int(labelled.sum())
                    if n:
                        loss_sum += float(F.cross_entropy(logits, y_t, ignore_index=NODATA, reduction="sum"))
                        n_px += n
                    pred = logits.argmax(1).cpu().numpy()
                    cm += np.bincount(y_np[labelled].astype(np.int64) * K + pred[labelled], minlength=K * K).reshape(K, K)
                    if cm_cloud is not None:
                        clouds = np.stack([i[3] for i in items]) & labelled
                        cm_cloud += np.bincount(y_np[clouds].astype(np.int64) * K + pred[clouds],
                                                minlength=K * K).reshape(K, K)
        finally:
            net.train()
        out = confusion_metrics(cm)
        out["loss"] = loss_sum / n_px if n_px else None
        out["cm"] = cm
        if cm_cloud is not None:
            out["miou_cloudy"] = confusion_metrics(cm_cloud)["miou"] if cm_cloud.sum() else None
            out["miou_clear"] = confusion_metrics(cm - cm_cloud)["miou"] if (cm - cm_cloud).sum() else None
        return out

    history: List[Dict] = []
    best_state, best_epoch, best_miou, best_cm = None, None, -1.0, None
    last_miou = None
    bad = 0
    step = 0
    cancelled = False
    epoch_seconds = []
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            losses = []
            for s_i in range(S):
                check_cancel(fb)
                o_t, s_t, y_t = batch()
                if autocast:
                    with autocast():
                        loss = net.loss(net.forward_train(o_t, s_t), y_t, ignore_index=NODATA)
                else:
                    loss = net.loss(net.forward_train(o_t, s_t), y_t, ignore_index=NODATA)
                opt.zero_grad(set_to_none=True)
                if not torch.isfinite(loss):
                    bad += 1
                    fb.warning(f"Step {step + 1}: the loss is not finite; the step is skipped.")
                    if bad >= MAX_BAD_STEPS:
                        raise OptsarError(
                            f"Training diverged ({bad} steps with a non-finite loss). Lower LEARNING_RATE "
                            f"(it is {lr:g}) or check the input data for extreme values."
                        )
                else:
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                sched.step()
                step += 1
                msg = f"Epoch {epoch}/{epochs}, step {s_i + 1}/{S}: loss {losses[-1] if losses else float('nan'):.4f}"
                if last_miou is not None:
                    msg += f", last validation mIoU {last_miou:.3f}"
                fb.progress(step / total, msg)
            val = validate() if cells else None
            seconds = time.perf_counter() - t0
            epoch_seconds.append(seconds)
            row = {
                "epoch": epoch,
                "steps": S,
                "seconds": round(seconds, 2),
                "lr": float(opt.param_groups[0]["lr"]),
                "train_loss": float(np.mean(losses)) if losses else None,
                "val_loss": val["loss"] if val else None,
                "val_oa": val["oa"] if val else None,
                "val_miou": val["miou"] if val else None,
                "val_macro_f1": val["macro_f1"] if val else None,
                "val_miou_clear": val.get("miou_clear") if val else None,
                "val_miou_cloudy": val.get("miou_cloudy") if val else None,
                "val_iou": val["iou"] if val else None,
                "best": False,
            }
            score = val["miou"] if val and val["miou"] is not None else None
            if val is None or (score is not None and score > best_miou):
                best_miou = score if score is not None else best_miou
                best_epoch = epoch
                best_state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                best_cm = val["cm"].tolist() if val else None
                for r in history:
                    r["best"] = False
                row["best"] = True
            if best_state is None and val is not None:  # a validation without any score still gives a model
                best_epoch, best_state = epoch, {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
                row["best"] = True
            history.append(row)
            last_miou = score
            fb.info(
                f"Epoch {epoch}/{epochs}: training loss {_f(row['train_loss'])}"
                + (f", validation loss {_f(row['val_loss'])}, OA {_f(row['val_oa'])}, mIoU {_f(row['val_miou'])}"
                   if val else "")
                + (f" (clear {_f(row['val_miou_clear'])}, under clouds {_f(row['val_miou_cloudy'])})"
                   if val and val.get("miou_cloudy") is not None else "")
                + (" - best so far" if row["best"] else "")
                + f"; {seconds:.1f} s."
            )
    except Cancelled:
        if best_state is None:
            raise
        cancelled = True
        fb.warning(f"Training cancelled during epoch {len(history) + 1}; writing the best epoch so far ({best_epoch}).")
    net.load_state_dict(best_state)
    net = net.to("cpu").eval()
    return {
        "model": net,
        "history": history,
        "best_epoch": best_epoch,
        "best_confusion": best_cm,
        "cancelled": cancelled,
        "steps_per_epoch": S,
        "seconds_per_epoch": round(float(np.mean(epoch_seconds)), 2) if epoch_seconds else None,
        "optimizer": {"name": "AdamW", "lr": lr, "weight_decay": recipe.weight_decay, "betas": [0.9, 0.999],
                      "recipe": recipe.source},
        "schedule": {"name": recipe.schedule, "power": recipe.power, "warmup_steps": warmup, "total_steps": total},
        "cloud_simulation": {"probability": CLOUD_PROBABILITY, "cover": [0.1, 0.7], "reflectance_unit": unit}
        if simulate else None,
        "handling": handling,
    }
