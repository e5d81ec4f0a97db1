"""``python -m optsar_plugin sample``: a stratified random sample (strata = map classes) to label."""

from __future__ import annotations

from ..options import ALLOCATIONS
from .options import SampleOptions
from .sampling import stratified_sample


def add_arguments(parser) -> None:
    parser.description = "Draw a stratified random sample (strata = map classes) and write it as points to label."
    parser.add_argument("classification", help="classification raster")
    parser.add_argument("output", help="output point layer (.gpkg, .geojson or .fgb)")
    parser.add_argument("--band", type=int, default=1)
    parser.add_argument("--allocation", choices=ALLOCATIONS, default="proportional",
                        help="per-class allocation (default proportional; olofsson = fixed minimum for rare classes, "
                             "rest proportional)")
    parser.add_argument("--total", type=int, default=0, help="sample size; 0 = computed from --target-se and --expected-ua")
    parser.add_argument("--target-se", type=float, default=0.01, help="target standard error of overall accuracy (default 0.01)")
    parser.add_argument("--expected-ua", default="0.8", help="expected user's accuracy: 0.8, or code:value pairs '1:0.7,2:0.9'")
    parser.add_argument("--min-per-class", type=int, default=50, help="minimum sample size per class (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same sample)")
    parser.add_argument("--ignore", default=None, help="class codes never to sample, e.g. '0,9'")
    parser.add_argument("--checkpoint", default=None, help="checkpoint whose metadata names the classes")


def run_cli(args, feedback) -> int:
    options = SampleOptions(band=args.band, allocation=args.allocation, total=args.total, target_se=args.target_se,
                            expected_ua=args.expected_ua, min_per_class=args.min_per_class, seed=args.seed,
                            ignore_values=args.ignore)
    res = stratified_sample(args.classification, args.output, options=options, checkpoint=args.checkpoint,
                            feedback=feedback)
    print(res.table())
    se = "n/a" if res.anticipated_oa_se is None else f"{res.anticipated_oa_se:.4f}"
    print(f"{res.total} points written to {res.path} (anticipated SE of overall accuracy: {se})")
    return 0
