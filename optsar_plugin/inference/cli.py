"""``python -m optsar_plugin classify``: the classification engine on the command line."""

from __future__ import annotations

import argparse
from typing import List

from ..cli import int_list
from ..options import CLOUD_MODES, DEFAULT_BATCH, DEFAULT_OVERLAP, DEVICES, PRECISIONS, TTA_MODES
from .engine import classify
from .options import InferenceOptions


def _float4(text: str) -> List[float]:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4:
        raise argparse.ArgumentTypeError(f"expected xmin,ymin,xmax,ymax, got '{text}'")
    return vals


def add_arguments(parser) -> None:
    parser.description = "Classify an optical + SAR scene with an OptSAR Fusion checkpoint."
    parser.add_argument("--optical", required=True, help="optical raster (the output grid)")
    parser.add_argument("--sar", required=True, help="SAR raster (any CRS/resolution; warped bilinearly)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file")
    parser.add_argument("--output", required=True, help="classification GeoTIFF to write")
    parser.add_argument("--cloud-mask", default=None, help="optional cloud mask raster (non-zero = cloud)")
    add_option_arguments(parser)
    parser.add_argument("--confidence", default=None, help="optional confidence GeoTIFF (max class probability)")
    parser.add_argument("--probabilities", default=None, help="optional per-class probability GeoTIFF")


def add_option_arguments(parser) -> None:
    """The arguments of :class:`InferenceOptions` (shared with ``python -m optsar_plugin batch``)."""
    parser.add_argument("--optical-bands", type=int_list, default=None, help="1-based, in training order, e.g. 2,3,4,8")
    parser.add_argument("--sar-bands", type=int_list, default=None, help="1-based, e.g. 1,2")
    parser.add_argument("--cloud-mode", choices=CLOUD_MODES, default="auto",
                        help="optical data under clouds: keep as is, zero (= training median), auto (by model)")
    parser.add_argument("--model", default=None, help="network the checkpoint must hold (checked)")
    parser.add_argument("--extent", type=_float4, default=None, help="xmin,ymin,xmax,ymax (optical CRS unless --extent-crs)")
    parser.add_argument("--extent-crs", default=None, help="CRS of --extent, e.g. EPSG:4326")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--tile-size", type=int, default=None, help="window edge in px, multiple of 32 (default: checkpoint's)")
    parser.add_argument("--overlap", type=int, default=None,
                        help=f"overlap of windows in px (< tile/2; default min({DEFAULT_OVERLAP}, tile/4))")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32")
    parser.add_argument("--tta", choices=TTA_MODES, default="off",
                        help="test-time augmentation: flips (4 passes) or d4 (8: flips and rotations), averaged")


def options_from_args(args) -> InferenceOptions:
    return InferenceOptions(
        optical_bands=args.optical_bands, sar_bands=args.sar_bands, model=args.model, extent=args.extent,
        extent_crs=args.extent_crs, device=args.device, tile_size=args.tile_size, overlap=args.overlap,
        batch_size=args.batch_size, precision=args.precision, cloud_mode=args.cloud_mode, tta=args.tta,
    )


def run_cli(args, feedback) -> int:
    result = classify(
        args.optical, args.sar, args.checkpoint, args.output, options=options_from_args(args),
        cloud_mask=args.cloud_mask, output_confidence=args.confidence, output_probabilities=args.probabilities,
        feedback=feedback,
    )
    share = 1.0 - result["seconds_model"] / result["seconds"] if result["seconds"] > 0 else 0.0
    feedback.info(
        f"Wrote {result['output']} ({result['width']} x {result['height']} px, {result['windows']} windows) in "
        f"{result['seconds']:.1f} s ({result['width'] * result['height'] / 1e6 / max(result['seconds'], 1e-9):.2f} "
        f"Mpix/s, engine overhead {100 * share:.1f} %)."
    )
    return 0
