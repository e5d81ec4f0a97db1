"""``train(...)``: train or fine-tune a network from optical + SAR rasters and reference labels.

Data flow::

    reference polygons / label raster ─> class indices on the optical grid (reference.py)
        ─> spatial-block split (train / held-out blocks) ─> tile sampler (sampler.py)
    device + data ─> the plan: model size, tile, batch, step budget, validations (recipes.py)
    the network (new, or from INIT_CHECKPOINT: finetune.py) ─> the loop (loop.py)
        ─> best epoch by validation mIoU ─> checkpoint + CSV log + HTML curve (provenance.py, report.py)

* **Clouds**: with a cloud mask, networks other than CloudLULC-Net see their optical
  input zeroed (= the training median) under the mask, exactly as ``optsar:classify``
  feeds them (its ``auto`` cloud mode); CloudLULC-Net sees the optical data as they are
  and, in addition, half of its training tiles get simulated clouds and shadows
  (:mod:`.augment`).  ``cloud_simulation`` switches the simulation on for any network or
  off for CloudLULC-Net.
* **Repeatability**: ``seed`` seeds torch (weights, dropout; inside
  :func:`torch.random.fork_rng`, so the caller's random state is untouched) and a numpy
  Generator (split, tiles, augmentation); on the CPU deterministic algorithms are
  switched on for the run, so the same seed, data and thread count give the same
  checkpoint weights.
* **Cancelling** keeps and writes the best epoch so far (the result says ``cancelled``);
  cancelling before the first epoch ends writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Dict, List, Optional

import numpy as np

from ..classes import NODATA
from ..errors import InputError
from ..fileio import OutputSet
from ..progress import NullFeedback
from . import provenance, resume
from .augment import reflectance_unit
from .loop import Run, make_optimiser, run_loop
from .options import TrainInputs, TrainOptions, split_keywords
from .recipes import class_balance, make_plan, model_options_for, resolve_model_size
from .reference import drop_empty, labels_from_raster, labels_from_vector
from .sampler import SceneSource, TileSampler, choose_block, compute_statistics, spatial_split, validation_cells


class CollectingFeedback:
    """Forwards everything to ``feedback`` and keeps the warnings for the result."""

    def __init__(self, feedback):
        self.feedback = feedback or NullFeedback()
        self.warnings: List[str] = []

    def progress(self, fraction, message=None):
        self.feedback.progress(fraction, message)

    def info(self, message):
        self.feedback.info(message)

    def warning(self, message):
        self.warnings.append(message)
        self.feedback.warning(message)

    def is_canceled(self):
        return self.feedback.is_canceled()


def train(optical, sar, output_checkpoint, *, options: Optional[TrainOptions] = None, feedback=None, **keywords) -> Dict:
    """Train ``model`` (or fine-tune ``init_checkpoint``) and write ``output_checkpoint``.

    Keywords are the fields of :class:`~.options.TrainInputs` (``reference`` with
    ``class_field`` [, ``name_field``, ``reference_layer``] or ``labels``;
    ``optical_bands``/``sar_bands``, ``cloud_mask``, ``output_log``, ``output_curve``) and
    of :class:`~.options.TrainOptions` (``model``, ``model_size``, ``max_steps``,
    ``patience``, ``tile_size``, ...; ``None``/0 = automatic), or ``options`` = a
    TrainOptions whose fields the keywords override.

    Returns a dict: output paths, ``best_epoch``, ``best`` metrics, ``history`` (one dict
    per epoch), ``classes``, ``device``, ``plan`` (every setting as used), ``stopped`` and
    ``stop_reason``, ``steps``, ``seconds``, ``seconds_per_epoch``, ``steps_per_epoch``,
    ``cancelled``, ``content_hash``, ``warnings``.  Raises :class:`~optsar_plugin.errors.InputError` for bad
    input (nothing written) and :class:`~optsar_plugin.errors.Cancelled` when cancelled
    before an epoch finished.
    """
    input_kw, option_kw = split_keywords(keywords)
    inputs = TrainInputs(optical, sar, output_checkpoint, **input_kw)
    if options is None:
        options = TrainOptions(**option_kw)
    elif option_kw:
        options = dataclasses.replace(options, **option_kw)
    return run_training(inputs, options, feedback)


def run_training(inputs: TrainInputs, options: TrainOptions, feedback=None) -> Dict:
    """:func:`train` on typed inputs and options."""
    t_start = time.perf_counter()
    fb = CollectingFeedback(feedback)
    if (inputs.reference is None) == (inputs.labels is None):
        raise InputError("Give either REFERENCE (polygons with CLASS_FIELD) or LABELS (a raster of class codes), not both.")
    with OutputSet(inputs=_protected(inputs, options), feedback=fb) as outs:
        finals, temps = provenance.reserve_outputs(outs, inputs)
        result, record, written = _train_and_write(inputs, options, finals, temps, fb, t_start)
        outs.publish()
    if result.stopped != "cancelled":
        resume.remove(resume.state_path(finals["checkpoint"]))
    fb.info(f"Wrote {finals['checkpoint']} (best epoch {result.best_epoch}, validation mIoU "
            f"{_f(record.best_row.get('val_miou'))}, OA {_f(record.best_row.get('val_oa'))}).")
    return provenance.result_dict(finals, record, written, fb.warnings)


def _protected(inputs: TrainInputs, options: TrainOptions):
    roles = (("optical", "optical raster"), ("sar", "SAR raster"), ("cloud_mask", "cloud mask"),
             ("labels", "label raster"), ("reference", "reference layer"))
    out = [(getattr(inputs, key), role) for key, role in roles if getattr(inputs, key)]
    return out + ([(options.init_checkpoint, "initial checkpoint")] if options.init_checkpoint else [])


def _train_and_write(inputs: TrainInputs, options: TrainOptions, finals: Dict, temps: Dict, fb, t_start: float):
    """Read, plan, train and write the outputs into their temporary files; (loop result, record, metadata written)."""
    from ..deps import require_torch
    from ..devices import resolve_device

    torch = require_torch("training a network")
    with SceneSource(inputs.optical, inputs.sar, inputs.optical_bands, inputs.sar_bands, inputs.cloud_mask,
                     options.memory_limit) as source:
        lab = read_labels(inputs, source, fb)
        dev = resolve_device(options.device, fb)
        precision = _precision(options.precision, dev, fb)
        size = None if options.init_checkpoint else resolve_model_size(options.model_size, dev.type)
        plan = make_plan(options, size, dev.type, source.height, source.width)
        _check_tile(plan.tile, source, lab)
        split = make_split(lab, plan, options, fb)
        balance = class_balance(options.class_balance, options.model, split.train_counts)
        rng = np.random.default_rng(options.seed)
        sampler = TileSampler(lab.index, split, plan.tile, rng, balance["sampling_power"])
        cells = validation_cells(split, source.height, source.width, plan.tile, lab.index) if split.n_val_blocks else []
        stats_o, stats_s = compute_statistics(source, sampler, split, rng, feedback=fb)
        with seeded(torch, options.seed, dev):
            net, stats_o, stats_s, init_info, built_with = build_network(options, size, source, lab, balance,
                                                                          stats_o, stats_s, fb)
            run = Run(torch, net, source, lab, split, sampler, cells, stats_o, stats_s, dev, rng, fb, plan,
                      _handling(options, source), _simulate(options), reflectance_unit(stats_o),
                      options.ignore_sar, precision, balance["weights"])
            _log_start(run, options, balance)
            result = _loop_with_resume(run, inputs, options, finals, fb)
        record = provenance.Record(inputs, options, plan, lab, split, result, run, balance, init_info, built_with,
                                   str(dev), precision, torch.__version__, time.perf_counter() - t_start)
        written = provenance.write_outputs(temps, net, record, source.band_names())
    return result, record, written


# ------------------------------------------------------------------------------------------
# steps of the run
# ------------------------------------------------------------------------------------------
def read_labels(inputs: TrainInputs, source: SceneSource, fb):
    """Class indices on the optical grid; labels where the inputs are nodata are dropped."""
    fb.info(f"Reading the training labels on the optical grid ({source.width} x {source.height} px)...")
    if inputs.reference is not None:
        lab = labels_from_vector(str(inputs.reference), inputs.class_field, source.optical_ds,
                                 name_field=inputs.name_field, layer=inputs.reference_layer, feedback=fb)
    else:
        lab = labels_from_raster(str(inputs.labels), source.optical_ds, feedback=fb)
    invalid = source.invalid_mask()
    if invalid is not None:
        n_bad = int((invalid & (lab.index != NODATA)).sum())
        if n_bad:
            lab.index[invalid] = NODATA
            fb.warning(f"{n_bad} labelled pixel(s) where the optical or SAR raster is nodata are ignored.")
            lab.counts = np.bincount(lab.index[lab.index != NODATA], minlength=len(lab.scheme))[: len(lab.scheme)]
            lab.index, lab.scheme, lab.counts, _ = drop_empty(lab.index, lab.scheme, lab.counts, lab.source, fb)
    fb.info("Classes (code, name: labelled pixels): " + "; ".join(
        f"{c.code} {c.name}: {int(n)}" for c, n in zip(lab.scheme.classes, lab.counts)))
    return lab


def _check_tile(tile: int, source: SceneSource, lab) -> None:
    if tile > min(source.height, source.width):
        raise InputError(
            f"TILE_SIZE {tile} is larger than the optical raster '{source.optical_ds.name}' ({source.width} x "
            f"{source.height} px); use a smaller tile (a multiple of 32, at least 64) or 0 (automatic)."
        )
    if lab.labelled < 64 * 64:
        raise InputError(
            f"Only {lab.labelled} pixels of {lab.source} are labelled on the optical raster, fewer than one "
            f"64 x 64 tile ({64 * 64} px). Add reference data."
        )


def make_split(lab, plan, options: TrainOptions, fb):
    """The spatial-block split of the labels into training and held-out blocks (sized by :func:`choose_block`)."""
    K = len(lab.scheme)
    block = choose_block(lab.index, plan.tile)
    split = spatial_split(lab.index, K, plan.tile, options.validation_fraction, options.seed, block=block)
    if split.n_val_blocks:
        fb.info(f"Validation: {split.n_val_blocks} of {split.n_val_blocks + split.n_train_blocks} labelled blocks of "
                f"{split.block} x {split.block} px held out ({int(split.val_counts.sum())} of {lab.labelled} labelled "
                "pixels).")
        missing = [c.name for c, n in zip(lab.scheme.classes, split.val_counts) if n == 0]
        if missing:
            fb.warning(f"No validation pixels for class(es) {', '.join(missing)}; their IoU is not measured.")
        notrain = [c.name for c, n in zip(lab.scheme.classes, split.train_counts) if n == 0]
        if notrain:
            fb.warning(f"Class(es) {', '.join(notrain)} have labels only in held-out blocks and are never trained on.")
    else:
        fb.warning("VALIDATION_FRACTION is 0: no validation, no early stopping; the last epoch is kept.")
    return split


def build_network(options: TrainOptions, size, source: SceneSource, lab, balance, stats_o, stats_s, fb):
    """(network, optical stats, SAR stats, fine-tuning record, constructor options) - new or from a checkpoint."""
    from .finetune import checkpoint_statistics, from_checkpoint

    if options.init_checkpoint:
        names = source.band_names()
        complete = source.descriptions_complete
        spec = {"optical_bands": names[0] if complete[0] else len(names[0]),
                "sar_bands": names[1] if complete[1] else len(names[1])}
        net, meta, reinit = from_checkpoint(options.init_checkpoint, options.model, lab.scheme, spec, fb)
        stats_o, stats_s = checkpoint_statistics(meta, stats_o, stats_s, fb)
        if options.model_size != "auto" or options.model_options:
            fb.info("Fine-tuning: the network configuration comes from INIT_CHECKPOINT (MODEL_SIZE ignored).")
        info = {"path": str(options.init_checkpoint), "content_hash": meta.get("content_hash"),
                "classes": meta.get("classes"), "reinitialised": reinit}
        return net, stats_o, stats_s, info, None
    from ..models import build_model

    built_with = model_options_for(options.model, size, options.model_options)
    if balance["focal_alpha"] is not None and "focal_alpha" not in (options.model_options or {}):
        built_with["focal_alpha"] = balance["focal_alpha"]
    net = build_model(options.model, optical_bands=len(source.obands), sar_bands=len(source.sbands),
                      num_classes=len(lab.scheme), **built_with)
    return net, stats_o, stats_s, None, built_with


def _loop_with_resume(run: Run, inputs: TrainInputs, options: TrainOptions, finals: Dict, fb):
    """The loop, writing a resumable state after every epoch and continuing one when ``options.resume``."""
    path = resume.state_path(finals["checkpoint"])
    print_ = resume.fingerprint(inputs, options, run.plan)
    restored = resume.load(path, run, print_, make_optimiser) if options.resume else None
    if options.resume and restored is None:
        fb.warning(f"RESUME is on but there is no resumable state '{path}': training starts from the beginning.")
    elif restored is not None:
        fb.info(f"Resuming from '{path}' at step {restored[0].step} (epoch {len(restored[0].history)} done).")
    state, optimiser, scheduler = restored or (None, None, None)
    start = state.step if state is not None else None
    result = run_loop(run, state, optimiser, scheduler,
                      on_epoch=lambda st, opt, sched: resume.save(path, run, st, opt, sched, print_))
    result.resumed_from_step = start
    return result


@contextlib.contextmanager
def seeded(torch, seed: int, dev):
    """Seed torch inside ``fork_rng`` (the caller's state is untouched); deterministic algorithms on the CPU."""
    deterministic = dev.type == "cpu"
    previous = torch.are_deterministic_algorithms_enabled()
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(int(seed))
            yield
    finally:
        if deterministic:
            torch.use_deterministic_algorithms(previous)


def _precision(precision: str, dev, fb) -> str:
    if precision == "bf16" and dev.type != "cuda":
        fb.warning("Precision bf16 needs a CUDA GPU; training in fp32 on the CPU.")
        return "fp32"
    return precision


def _handling(options: TrainOptions, source: SceneSource) -> Optional[str]:
    from ..options import cloud_handling

    return cloud_handling(options.cloud_mode, options.model) if source.has_cloud_mask else None


def _simulate(options: TrainOptions) -> bool:
    return options.cloud_simulation == "on" or (options.cloud_simulation == "auto" and options.model == "cloudlulc_net")


def _log_start(run: Run, options: TrainOptions, balance: Dict) -> None:
    plan = run.plan
    n_params = sum(p.numel() for p in run.net.parameters())
    auto = "; ".join(f"{k} {v}" for k, v in plan.chosen.items())
    run.feedback.info(
        f"Training {options.model} ({plan.model_size or 'from INIT_CHECKPOINT'}, {n_params / 1e6:.2f} M parameters) on "
        f"{run.device}: up to {plan.max_steps} steps of {plan.batch} tile(s) of {plan.tile} x {plan.tile} px, a "
        f"validation every {plan.steps_per_epoch} steps ({len(run.cells)} validation tile(s)), early stopping after "
        f"{plan.patience or 'no'} validations without improvement"
        + (f", at most {plan.max_minutes:g} min" if plan.max_minutes else "") + f"; AdamW lr {plan.lr:g} ({plan.schedule}, warm-up "
        f"{plan.warmup} steps); class balance {balance['mode']} (tiles centred on classes drawn with probability "
        f"~ pixels^{balance['sampling_power']:g})"
        + ("; simulated clouds on half of the tiles" if run.simulate else "")
        + ("; optical zeroed under the cloud mask" if run.handling == "zero" else "")
        + ("; SAR input ignored (ablation)" if run.ignore_sar else "")
        + "." + (f" Automatic: {auto}." if auto else "")
    )


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
