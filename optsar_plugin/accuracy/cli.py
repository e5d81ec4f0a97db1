"""``python -m optsar_plugin assess``: accuracy of a classification against reference polygons or points."""

from __future__ import annotations

import json

from .assess import assess_accuracy
from .options import AssessOptions


def add_arguments(parser) -> None:
    parser.description = (
        "Assess a classification against reference polygons or points: confusion matrix, overall accuracy, kappa "
        "(with variance), per-class producer's/user's accuracy, F1, IoU, and area-adjusted estimates with "
        "confidence intervals (Olofsson et al. 2014)."
    )
    parser.add_argument("classification", help="classification raster (GeoTIFF or any GDAL raster)")
    parser.add_argument("reference", help="reference vector file (GeoPackage, shapefile, GeoJSON, ...)")
    parser.add_argument("--class-field", required=True, help="reference field holding class codes or class names")
    parser.add_argument("--layer", default=None, help="layer of the reference file (default: the first)")
    parser.add_argument("--band", type=int, default=1, help="band of the classification (default 1)")
    parser.add_argument("--all-touched", action="store_true", help="burn every pixel a polygon touches (default: pixel centres)")
    parser.add_argument("--ignore", default=None, help="class codes to leave out of map and reference, e.g. '0,9'")
    parser.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    parser.add_argument("--checkpoint", default=None, help="checkpoint whose metadata names the classes")
    parser.add_argument("--report", default=None, help="HTML report to write")
    parser.add_argument("--matrix", default=None, help="CSV (matrix and tables) to write")
    parser.add_argument("--metrics", default=None, help="JSON metrics to write")
    parser.add_argument("--json", action="store_true", help="print the JSON metrics on stdout")


def _fmt(v):
    return "n/a" if v is None else f"{v:.4f}"


def run_cli(args, feedback) -> int:
    options = AssessOptions(band=args.band, reference_layer=args.layer, all_touched=args.all_touched,
                            ignore_values=args.ignore, confidence=args.confidence)
    res = assess_accuracy(
        args.classification,
        args.reference,
        args.class_field,
        options=options,
        checkpoint=args.checkpoint,
        output_report=args.report,
        output_matrix=args.matrix,
        output_metrics=args.metrics,
        feedback=feedback,
    )
    if args.json:
        print(json.dumps(res.metrics, indent=2, ensure_ascii=False))
        return 0
    s = res.metrics["summary"]
    a = res.metrics["area_adjusted"]
    print(f"reference pixels: {s['n_pixels']}")
    print(f"overall accuracy: {_fmt(s['overall_accuracy'])}   kappa: {_fmt(s['kappa'])}   "
          f"mIoU: {_fmt(s['miou'])}   macro F1: {_fmt(s['macro_f1'])}")
    oa_hw = None if a["overall_accuracy_se"] is None else a["overall_accuracy_se"] * a["z"]
    print(f"area-adjusted overall accuracy: {_fmt(a['overall_accuracy'])} ± {_fmt(oa_hw)}")
    print(f"{'class':<28} {'PA':>7} {'UA':>7} {'F1':>7} {'IoU':>7}")
    for row in res.metrics["per_class"]:
        print(f"{str(row['code']) + ' ' + row['name']:<28.28} {_fmt(row['producers_accuracy']):>7} "
              f"{_fmt(row['users_accuracy']):>7} {_fmt(row['f1']):>7} {_fmt(row['iou']):>7}")
    for name, path in res.outputs.items():
        print(f"{name}: {path}")
    return 0
