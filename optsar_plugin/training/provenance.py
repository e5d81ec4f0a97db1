"""What a run writes: the checkpoint metadata (with the training record), the CSV log, the HTML curve.

All outputs are reserved in the run's :class:`~optsar_plugin.fileio.OutputSet` before any
work (writable, distinct from each other and from the inputs), written into their
temporary files at the end and published together; on any error, cancellation before
the first epoch or SIGTERM the temporary files go.
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..classes import NODATA
from . import report

BEST_KEYS = ("val_oa", "val_miou", "val_macro_f1", "val_miou_clear", "val_miou_cloudy", "val_iou", "train_loss",
             "val_loss")


def reserve_outputs(outs, inputs) -> Tuple[Dict[str, str], Dict[str, str]]:
    """(finals, temporary files) of the checkpoint [, log, curve], reserved in the run's
    :class:`~optsar_plugin.fileio.OutputSet` before any work (writable, distinct, not an input)."""
    wanted = {"checkpoint": (inputs.output_checkpoint, "output checkpoint"),
              "log": (inputs.output_log, "training log"), "curve": (inputs.output_curve, "training curve")}
    finals, temps = {}, {}
    for key, (path, role) in wanted.items():
        if path:
            temps[key] = outs.add(path, role)
            finals[key] = os.path.abspath(os.fspath(path))
    from .resume import state_path

    outs.check(state_path(finals["checkpoint"]), "resumable training state")  # written after every epoch
    return finals, temps


@dataclass
class Record:
    """Everything a finished run reports (built by the entry point, read by the writers)."""

    inputs: object  # options.TrainInputs
    options: object  # options.TrainOptions
    plan: object  # recipes.Plan
    labels: object  # reference.Labels
    split: object  # sampler.Split
    result: object  # loop.LoopResult
    run: object  # loop.Run
    balance: Dict
    init_info: Optional[Dict]
    model_options: Optional[Dict]
    device: str
    precision: str
    torch_version: str
    seconds: float

    @property
    def best_row(self) -> Dict:
        h = self.result.history
        return next((r for r in h if r["epoch"] == self.result.best_epoch), h[-1])


def training_metadata(rec: Record) -> Dict:
    """The checkpoint's ``training`` record: data, settings as used, validation, why it stopped."""
    from .. import __version__

    i, o, p, res = rec.inputs, rec.options, rec.plan, rec.result
    scheme = rec.labels.scheme
    return {
        "engine": f"optsar_plugin.training {__version__}",
        "optical": os.path.abspath(i.optical), "optical_band_numbers": rec.run.source.obands,
        "sar": os.path.abspath(i.sar), "sar_band_numbers": rec.run.source.sbands,
        "cloud_mask": os.path.abspath(i.cloud_mask) if i.cloud_mask else None,
        "reference": os.path.abspath(str(i.reference).split("|")[0]) if i.reference else None,
        "reference_layer": i.reference_layer, "class_field": i.class_field, "name_field": i.name_field,
        "labels": os.path.abspath(i.labels) if i.labels else None,
        "labelled_pixels": {c.name: int(n) for c, n in zip(scheme.classes, rec.labels.counts)},
        "model_size": p.model_size, "model_options": rec.model_options, "init_checkpoint": rec.init_info,
        "options": o.to_dict(), "plan": p.to_dict(),
        "epochs": p.epochs, "epochs_completed": len(res.history), "steps_per_epoch": p.steps_per_epoch,
        "steps": res.steps, "batch_size": p.batch, "tile_size": p.tile,
        "stopped": res.stopped, "stop_reason": res.reason, "resumed_from_step": res.resumed_from_step,
        "optimizer": {"name": "AdamW", "lr": p.lr, "weight_decay": p.weight_decay, "betas": [0.9, 0.999],
                      "recipe": p.recipe},
        "schedule": {"name": p.schedule, "power": p.power, "warmup_steps": p.warmup, "total_steps": p.max_steps},
        "class_balance": rec.balance,
        "augmentation": ["rot90", "flip"], "weight_average": {"ema_decay": p.ema_decay},
        "cloud_simulation": {"probability": 0.5, "cover": [0.1, 0.7], "reflectance_unit": rec.run.unit}
        if rec.run.simulate else None,
        "cloud_mode": rec.run.handling, "ignore_sar": bool(o.ignore_sar),
        "validation": _validation(rec),
        "seed": int(o.seed), "device": rec.device, "precision": rec.precision, "torch": rec.torch_version,
        "best_epoch": res.best_epoch, "best": {k: rec.best_row.get(k) for k in BEST_KEYS},
        "confusion_matrix": res.best_confusion, "history": res.history, "cancelled": res.stopped == "cancelled",
        "seconds": round(rec.seconds, 2), "seconds_per_epoch": res.seconds_per_epoch,
    }


def _validation(rec: Record) -> Dict:
    s = rec.split
    return {"fraction": float(rec.options.validation_fraction), "block_px": s.block,
            "held_out_blocks": [[int(r), int(c)] for r, c in np.argwhere(s.val_blocks)],
            "train_pixels": int(s.train_counts.sum()), "validation_pixels": int(s.val_counts.sum())}


def checkpoint_metadata(rec: Record, net, band_names) -> Dict:
    return {
        "model": {"name": rec.options.model, "config": dict(net.config)},
        "bands": {"optical": band_names[0], "sar": band_names[1]},
        "normalisation": {"optical": rec.run.stats_o, "sar": rec.run.stats_s},
        "classes": rec.labels.scheme.to_list(),
        "nodata": {"output": NODATA, "ignore_index": NODATA},
        "tile_size": rec.plan.tile,
        "training": training_metadata(rec),
    }


def report_header(rec: Record) -> Dict:
    """What the training report shows around the charts (:func:`.report.curve_html`)."""
    i, p, res, s = rec.inputs, rec.plan, rec.result, rec.split
    scheme = rec.labels.scheme
    return {
        "model": rec.options.model, "model_size": p.model_size or "fine-tuned",
        "output": os.path.basename(i.output_checkpoint),
        "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "inputs": {"Optical": i.optical, "SAR": i.sar,
                   "Labels": str(i.reference or i.labels) + (f" (field {i.class_field})" if i.class_field else ""),
                   **({"Cloud mask": i.cloud_mask} if i.cloud_mask else {}),
                   **({"Fine-tuned from": rec.options.init_checkpoint} if rec.options.init_checkpoint else {})},
        "class_pixels": {c.name: (int(t), int(v)) for c, t, v in zip(scheme.classes, s.train_counts, s.val_counts)},
        "summary": {
            "stopped": res.reason, "steps": f"{res.steps} of {p.max_steps}"
            + (f" (resumed at step {res.resumed_from_step})" if res.resumed_from_step is not None else ""),
            "best epoch": res.best_epoch, "best step": rec.best_row.get("step"),
            "best validation mIoU": rec.best_row.get("val_miou"), "best validation OA": rec.best_row.get("val_oa"),
            "device": rec.device, "seconds": round(rec.seconds, 1), "seconds per epoch": res.seconds_per_epoch,
        },
        "settings": {
            "tile size (px)": p.tile, "batch size": p.batch, "steps per epoch (between validations)": p.steps_per_epoch,
            "early stopping": (f"after {p.patience} validations without improvement, from step {p.stop_after}"
                               if p.patience else "off"),
            "time limit": f"{p.max_minutes:g} min" if p.max_minutes else "none",
            "optimiser": f"AdamW, lr {p.lr:g}, weight decay {p.weight_decay:g}",
            "schedule": f"{p.schedule}, warm-up {p.warmup} steps",
            "weight average": f"EMA {p.ema_decay:g}" if p.ema_decay else "off",
            "class balance": rec.balance["mode"] + (f" (weights {', '.join(f'{w:.3g}' for w in rec.balance['weights'] or rec.balance['focal_alpha'])})"
                                                    if (rec.balance["weights"] or rec.balance["focal_alpha"]) else ""),
            "validation blocks": f"{s.n_val_blocks} of {s.block} x {s.block} px" if s.n_val_blocks else "none",
            "seed": rec.options.seed, "precision": rec.precision,
            "automatic choices": "; ".join(f"{k}: {v}" for k, v in p.chosen.items()) or "none",
        },
    }


def write_outputs(temps: Dict[str, str], net, rec: Record, band_names) -> Dict:
    """Write the log, the report and the checkpoint into their reserved temporary files."""
    from ..checkpoints import save_checkpoint

    scheme = rec.labels.scheme
    if "log" in temps:
        _write_text(temps["log"], report.log_csv(rec.result.history, scheme.names))
    if "curve" in temps:
        _write_text(temps["curve"], report.curve_html(rec.result.history, report_header(rec), scheme.to_list()))
    return save_checkpoint(temps["checkpoint"], net, checkpoint_metadata(rec, net, band_names))


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def result_dict(finals: Dict[str, str], rec: Record, written: Dict, warnings: List[str]) -> Dict:
    res, p = rec.result, rec.plan
    return {
        "checkpoint": finals["checkpoint"], "log": finals.get("log"), "curve": finals.get("curve"),
        "best_epoch": res.best_epoch, "best": {k: rec.best_row.get(k) for k in BEST_KEYS}, "history": res.history,
        "classes": rec.labels.scheme.to_list(), "device": rec.device, "plan": p.to_dict(),
        "model_size": p.model_size, "steps_per_epoch": p.steps_per_epoch, "steps": res.steps,
        "stopped": res.stopped, "stop_reason": res.reason, "resumed_from_step": res.resumed_from_step,
        "seconds": round(rec.seconds, 2),
        "seconds_per_epoch": res.seconds_per_epoch, "cancelled": res.stopped == "cancelled",
        "content_hash": written.get("content_hash"), "warnings": warnings,
    }
