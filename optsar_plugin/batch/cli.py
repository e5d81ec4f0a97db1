"""``python -m optsar_plugin batch``: many scenes on a Dask cluster (a local one by default)."""

from __future__ import annotations

from ..inference.cli import add_option_arguments, options_from_args
from .engine import classify_batch


def add_arguments(parser) -> None:
    parser.description = ("Classify every scene of a table (columns optical, sar[, cloud_mask, name]) with one "
                          "checkpoint on a Dask cluster; writes DIR/<name>.tif per scene, DIR/manifest.jsonl, "
                          "DIR/class_areas.csv and optionally a mosaic.")
    parser.add_argument("--scenes", required=True, help="CSV (or any table GDAL/OGR reads) with columns optical, sar, "
                        "optional cloud_mask and name; relative paths are relative to the table")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file")
    parser.add_argument("--output-dir", required=True, help="folder of the maps, the manifest and the area table")
    parser.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 "
                        "(default: a local cluster of worker processes)")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: one per GPU, "
                        "else a quarter of the cores)")
    parser.add_argument("--mosaic", default=None, help="optional mosaic of all maps: .vrt (virtual) or .tif (COG)")
    parser.add_argument("--area-table", default=None, help="class-area CSV (default DIR/class_areas.csv)")
    add_option_arguments(parser)


def run_cli(args, feedback) -> int:
    result = classify_batch(args.scenes, args.checkpoint, args.output_dir, scheduler=args.scheduler,
                            workers=args.workers, mosaic=args.mosaic, area_table=args.area_table,
                            options=options_from_args(args), feedback=feedback)
    return 1 if result["failed"] else 0
