"""``python -m optsar_plugin train``: the training engine on the command line."""

from __future__ import annotations

import argparse
import json

from ..cli import int_list
from ..models import MODEL_NAMES


def _json_dict(text: str):
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got '{text}' ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got '{text}'")
    return value


def add_arguments(parser) -> None:
    from .options import CLASS_BALANCE, CLOUD_MODES, CLOUD_SIMULATION, DEVICES, MODEL_SIZES, PRECISIONS

    parser.description = "Train or fine-tune a network on optical + SAR rasters and reference labels; write a checkpoint."
    parser.add_argument("--optical", required=True, help="optical raster (its grid is the training grid)")
    parser.add_argument("--sar", required=True, help="SAR raster (any CRS/resolution; warped bilinearly)")
    parser.add_argument("--optical-bands", type=int_list, default=None, help="1-based band numbers, e.g. 2,3,4,8")
    parser.add_argument("--sar-bands", type=int_list, default=None, help="1-based band numbers, e.g. 1,2")
    parser.add_argument("--cloud-mask", default=None, help="optional cloud mask raster (non-zero = cloud)")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--reference", help="reference polygons (vector file; 'file.gpkg|layername=x' accepted)")
    src.add_argument("--labels", help="label raster of class codes (nodata/255 = unlabelled)")
    parser.add_argument("--class-field", default=None, help="field with class codes or names (with --reference)")
    parser.add_argument("--name-field", default=None, help="optional field with class names (when CLASS_FIELD has codes)")
    parser.add_argument("--reference-layer", default=None, help="layer name inside the reference file")
    parser.add_argument("--model", choices=MODEL_NAMES, default="specsar_former")
    parser.add_argument("--model-size", choices=MODEL_SIZES, default="auto",
                        help="auto (default): paper on a CUDA GPU, small on the CPU; small: narrow and shallow; "
                             "paper: as published")
    parser.add_argument("--model-options", type=_json_dict, default=None, help='constructor options as JSON, e.g. \'{"depth": 2}\'')
    parser.add_argument("--init-checkpoint", default=None, help="checkpoint of the same network to fine-tune")
    parser.add_argument("--max-steps", type=int, default=0, help="step budget (0 = automatic for the device)")
    parser.add_argument("--patience", type=int, default=-1,
                        help="validations without improvement before stopping (-1 = automatic, 0 = never stop early)")
    parser.add_argument("--max-minutes", type=float, default=-1.0,
                        help="time limit in minutes (-1 = automatic: 9 for an automatic CPU budget, else none; 0 = none)")
    parser.add_argument("--epochs", type=int, default=0, help="0 = from the step budget; else epochs x steps per epoch")
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="steps between validations (0 = automatic)")
    parser.add_argument("--tile-size", type=int, default=0, help="training tile edge in px (multiple of 32, >= 64; 0 = automatic)")
    parser.add_argument("--batch-size", type=int, default=0, help="0 = automatic")
    parser.add_argument("--learning-rate", type=float, default=0.0, help="0 = the model's recipe")
    parser.add_argument("--validation-fraction", type=float, default=0.2, help="labelled share held out in spatial blocks")
    parser.add_argument("--class-balance", choices=CLASS_BALANCE, default="auto",
                        help="class weighting of the loss (auto: inverse frequency for SpecSAR-Former and CloudLULC-Net, none for MOSFNet)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16: CUDA autocast")
    parser.add_argument("--cloud-simulation", choices=CLOUD_SIMULATION, default="auto",
                        help="simulated clouds on training tiles (auto: CloudLULC-Net only)")
    parser.add_argument("--cloud-mode", choices=CLOUD_MODES, default="auto",
                        help="optical data under the cloud mask: keep, zero (auto: keep for CloudLULC-Net)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run of the same output")
    parser.add_argument("--output", required=True, help="checkpoint to write (.safetensors)")
    parser.add_argument("--log", default=None, help="optional CSV log, one row per epoch")
    parser.add_argument("--curve", default=None, help="optional HTML training curve")


def options_from_args(args):
    """The :class:`~.options.TrainOptions` a command line asks for."""
    from .options import TrainOptions

    return TrainOptions(
        model=args.model, model_size=args.model_size, model_options=args.model_options,
        init_checkpoint=args.init_checkpoint, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
        max_steps=args.max_steps, patience=None if args.patience < 0 else args.patience,
        max_minutes=None if args.max_minutes < 0 else args.max_minutes, tile_size=args.tile_size,
        batch_size=args.batch_size, learning_rate=args.learning_rate, validation_fraction=args.validation_fraction,
        class_balance=args.class_balance, seed=args.seed, device=args.device, precision=args.precision,
        cloud_simulation=args.cloud_simulation, cloud_mode=args.cloud_mode, resume=args.resume,
    )


def run_cli(args, feedback) -> int:
    from .engine import train

    result = train(
        args.optical, args.sar, args.output,
        reference=args.reference, class_field=args.class_field, name_field=args.name_field,
        reference_layer=args.reference_layer, labels=args.labels, optical_bands=args.optical_bands,
        sar_bands=args.sar_bands, cloud_mask=args.cloud_mask, output_log=args.log, output_curve=args.curve,
        options=options_from_args(args), feedback=feedback,
    )
    best = result["best"]
    feedback.info(
        f"Best epoch {result['best_epoch']}: validation mIoU {best.get('val_miou')}, OA {best.get('val_oa')}; "
        f"stopped: {result['stop_reason']}; {result['seconds_per_epoch']} s per epoch on {result['device']}"
        + (f"; resumed at step {result['resumed_from_step']}." if result.get("resumed_from_step") is not None else ".")
    )
    return 0
