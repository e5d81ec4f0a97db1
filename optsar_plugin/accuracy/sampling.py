"""Stratified random sample of a classification, to label and assess with.

``python -m optsar_plugin sample`` and ``optsar:stratifiedsample``: the map classes are
the strata; a number of pixels is allocated to each class and drawn at random without
replacement; each drawn pixel becomes a point at the pixel centre with the mapped class
code and name and an empty ``reference`` field for the interpreter.  Labelled, the layer
goes back into :func:`optsar_plugin.accuracy.assess.assess_accuracy` (points), whose
area-adjusted estimators (Olofsson et al. 2014) are exactly those of this design.

Sample size (Olofsson et al. 2014, section 5.1.1, eq. 13, after Cochran 1977):
``n = (Σ W_i S_i / S(Ô))²`` with ``W_i`` the mapped proportion of class ``i``,
``S_i = sqrt(U_i (1 - U_i))`` from the *expected* user's accuracy ``U_i`` and ``S(Ô)`` the
target standard error of overall accuracy.  (Their example: W = 0.02, 0.015, 0.32, 0.645,
U = 0.70, 0.60, 0.90, 0.95, S(Ô) = 0.01 gives n = 641.)

Allocation (what is implemented):

* ``proportional``: ``n_i ∝ W_i`` (largest-remainder rounding, so the sizes add up to the
  total); then every class below ``min_per_class`` is raised to it, so the total can grow.
* ``equal``: ``total / K`` per class (remainder to the largest classes), raised to
  ``min_per_class`` where lower.
* ``olofsson``: the allocation Olofsson et al. (2014, section 5.1.1, and the
  recommendation that ends it) suggest for rare classes: every class whose proportional
  share is below ``min_per_class`` (they suggest 50-100 for rare classes) gets exactly
  ``min_per_class`` and the rest of the total is shared proportionally among the other
  classes, repeated until no class falls below; the total is kept (when every class would
  be "rare" each gets ``min_per_class`` and the total grows).  Their Table 5 lists such
  allocations; the sample of their worked example (75, 75, 165, 325) is of this kind.

A class with fewer pixels than its allocation is taken whole (a census of that stratum);
the shortfall is not redistributed.  The anticipated standard error of overall accuracy
for the final allocation (the variance of overall accuracy with the expected ``U_i``) is reported.

Memory: the classification is read twice by strips (counts, then the drawn pixels); only
the drawn ranks and one strip are held.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..classes import ClassScheme
from ..errors import OptsarError
from ..fileio import publish, temp_path
from ..progress import Feedback, NullFeedback, check_cancel

ALLOCATIONS = ("proportional", "equal", "olofsson")
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}


# --------------------------------------------------------------------------------------
# sample size and allocation (pure)
# --------------------------------------------------------------------------------------
def cochran_sample_size(weights: Sequence[float], expected_ua: Sequence[float], target_se: float) -> int:
    """Olofsson et al. (2014) eq. 13: ``n = ceil((Σ W_i sqrt(U_i (1 - U_i)) / S(Ô))²)``."""
    if not target_se or float(target_se) <= 0:
        raise OptsarError(f"The target standard error of overall accuracy must be positive, got {target_se}.")
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(expected_ua, dtype=np.float64)
    if w.shape != u.shape:
        raise OptsarError("One expected user's accuracy per class is needed.")
    if ((u <= 0) | (u >= 1)).any():
        raise OptsarError(f"Expected user's accuracies must be between 0 and 1 (exclusive), got {u.tolist()}.")
    s = float(np.sum(w * np.sqrt(u * (1 - u))))
    # round before ceil: (0.25308/0.01)² must not become 641.0000000001 -> 642
    return int(math.ceil(round((s / float(target_se)) ** 2, 9)))


def _largest_remainder(shares, total: int, tiebreak=None) -> np.ndarray:
    """Integers proportional to ``shares`` that add up to ``total`` (ties go to larger ``tiebreak``)."""
    shares = np.asarray(shares, dtype=np.float64)
    if total <= 0 or shares.sum() <= 0:
        return np.zeros(len(shares), dtype=np.int64)
    tiebreak = shares if tiebreak is None else np.asarray(tiebreak, dtype=np.float64)
    exact = shares / shares.sum() * total
    base = np.floor(exact).astype(np.int64)
    left = int(total - base.sum())
    if left > 0:
        order = np.lexsort((-tiebreak, -(exact - base)))  # largest remainder first, then larger class
        base[order[:left]] += 1
    return base


def allocate(mapped_pixels: Sequence[int], total: int, method: str = "proportional", min_per_class: int = 0) -> np.ndarray:
    """Sample size per class (same order as ``mapped_pixels``); see the module docstring.

    Classes with no mapped pixel get 0; no class gets more than its pixel count.
    """
    method = str(method).lower()
    if method not in ALLOCATIONS:
        raise OptsarError(f"Unknown allocation '{method}'; choose one of {', '.join(ALLOCATIONS)}.")
    total = int(total)
    if total < 0:
        raise OptsarError(f"The sample size must not be negative, got {total}.")
    npx = np.asarray(mapped_pixels, dtype=np.int64)
    present = npx > 0
    mn = max(0, int(min_per_class))
    out = np.zeros(len(npx), dtype=np.int64)
    if not present.any():
        return out
    if method == "proportional":
        out[present] = np.maximum(_largest_remainder(npx[present], total), mn)
    elif method == "equal":
        ones = np.ones(int(present.sum()))
        out[present] = np.maximum(_largest_remainder(ones, total, tiebreak=npx[present]), mn)
    else:  # olofsson: rare classes fixed at the minimum, the rest proportional, total kept
        rare = np.zeros(len(npx), dtype=bool)
        while True:
            rest = present & ~rare
            budget = total - mn * int(rare.sum())
            if not rest.any() or budget <= 0:
                out[present] = mn  # every class is "rare": all at the minimum
                break
            alloc = _largest_remainder(npx[rest], budget)
            low = alloc < mn
            if not low.any():
                out[rest] = alloc
                out[rare] = mn
                break
            rare[np.flatnonzero(rest)[low]] = True
    return np.minimum(out, npx)


def anticipated_oa_se(weights: Sequence[float], expected_ua: Sequence[float], sizes: Sequence[int]) -> Optional[float]:
    """The stratified SE of overall accuracy, sqrt(Σ W_i² U_i (1 - U_i) / (n_i - 1)), with the expected U_i."""
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(expected_ua, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    use = w > 0
    if (n[use] < 2).any():
        return None
    return float(np.sqrt(np.sum(w[use] ** 2 * u[use] * (1 - u[use]) / (n[use] - 1))))


def parse_expected_ua(value, codes: Sequence[int]) -> List[float]:
    """Expected user's accuracy per class from ``0.8``, ``"0.8"``, ``"1:0.7, 2:0.6"`` or a dict.

    ``code:value`` pairs set some classes; a bare number in the list sets the default for
    the others (0.8 when none is given).
    """
    default = 0.8
    per: Dict[int, float] = {}
    if value is None or (isinstance(value, str) and not value.strip()):
        pass
    elif isinstance(value, (int, float)):
        default = float(value)
    elif isinstance(value, dict):
        per = {int(k): float(v) for k, v in value.items()}
    else:
        for part in [p for p in re.split(r"[,;\s]+", str(value).strip()) if p]:
            try:
                if ":" in part or "=" in part:
                    c, v = re.split(r"[:=]", part, maxsplit=1)
                    per[int(c)] = float(v)
                else:
                    default = float(part)
            except ValueError:
                raise OptsarError(
                    f"Cannot read the expected user's accuracy '{value}': give a number (0.8) or code:value pairs (1:0.7, 2:0.9)."
                ) from None
    out = [per.get(int(c), default) for c in codes]
    for c, u in zip(codes, out):
        if not 0 < u < 1:
            raise OptsarError(f"The expected user's accuracy of class {c} must be between 0 and 1 (exclusive), got {u}.")
    return out


# --------------------------------------------------------------------------------------
# drawing the sample
# --------------------------------------------------------------------------------------
@dataclass
class SampleResult:
    path: str
    layer: str
    codes: List[int]
    names: List[str]
    mapped_pixels: List[int]
    weights: List[float]
    sizes: List[int]
    total: int
    requested_total: int
    expected_ua: List[float]
    anticipated_oa_se: Optional[float]
    allocation: str
    seed: int
    warnings: List[str] = field(default_factory=list)

    def table(self) -> str:
        lines = [f"{'code':>5} {'class':<24} {'mapped px':>12} {'W_i':>8} {'n':>6}"]
        for c, nm, px, w, n in zip(self.codes, self.names, self.mapped_pixels, self.weights, self.sizes):
            lines.append(f"{c:>5} {nm[:24]:<24} {px:>12} {w:>8.4f} {n:>6}")
        return "\n".join(lines)


def _count_classes(src, band: int, strip_rows: int, ignore: Sequence[int], feedback, start=0.0, span=0.5):
    from rasterio.windows import Window

    from .assess import _valid_mask

    counts: Dict[int, int] = {}
    n_strips = max(1, math.ceil(src.height / strip_rows))
    for s, off in enumerate(range(0, src.height, strip_rows)):
        check_cancel(feedback)
        feedback.progress(start + span * s / n_strips, "Counting mapped classes")
        h = min(strip_rows, src.height - off)
        win = Window(0, off, src.width, h)
        v = src.read(band, window=win)
        valid = _valid_mask(src, band, v, win)
        vals = v[valid]
        if vals.dtype.kind == "f":
            if vals.size and not np.array_equal(vals, np.round(vals)):
                raise OptsarError(f"The classification '{src.name}' holds non-integer values; it is not a classification.")
            vals = vals.astype(np.int64)
        if vals.dtype in (np.uint8, np.uint16):
            bc = np.bincount(vals, minlength=1)
            for c in np.flatnonzero(bc):
                counts[int(c)] = counts.get(int(c), 0) + int(bc[c])
        else:
            u, c = np.unique(vals, return_counts=True)
            for a, b in zip(u.tolist(), c.tolist()):
                counts[int(a)] = counts.get(int(a), 0) + int(b)
    for c in ignore:
        counts.pop(int(c), None)
    return counts


def stratified_sample(
    classification: Union[str, Path],
    output: Union[str, Path],
    *,
    band: int = 1,
    allocation: str = "proportional",
    total: int = 0,
    target_se: float = 0.01,
    expected_ua=0.8,
    min_per_class: int = 50,
    seed: int = 0,
    ignore_values: Optional[Sequence[int]] = None,
    checkpoint: Optional[str] = None,
    classes=None,
    strip_rows: Optional[int] = None,
    feedback: Optional[Feedback] = None,
) -> SampleResult:
    """Draw a stratified random sample of pixels and write it as a point layer (GeoPackage).

    ``total = 0`` computes the sample size from ``target_se`` and ``expected_ua``
    (:func:`cochran_sample_size`).  Nodata pixels and ``ignore_values`` are never drawn.
    """
    import rasterio
    from rasterio.windows import Window

    from .assess import _parse_ignore, classification_classes, default_strip_rows

    feedback = feedback or NullFeedback()
    classification = str(classification)
    output = Path(output)
    driver = DRIVERS.get(output.suffix.lower())
    if driver is None:
        raise OptsarError(
            f"The sample output '{output}' must be a GeoPackage (.gpkg), GeoJSON (.geojson) or FlatGeobuf (.fgb) file."
        )
    if int(total) < 0:
        raise OptsarError(f"The sample size must not be negative, got {total}.")
    ignore = _parse_ignore(ignore_values)
    try:  # not only files: GDAL subdatasets and /vsi paths open too
        src = rasterio.open(classification)
    except rasterio.errors.RasterioIOError as exc:
        missing = "does not exist" if not Path(classification).exists() else "cannot be read"
        raise OptsarError(f"The classification raster '{classification}' {missing}: {exc}") from None
    warnings: List[str] = []
    with src:
        if not 1 <= int(band) <= src.count:
            raise OptsarError(f"The classification '{classification}' has {src.count} band(s); band {band} does not exist.")
        band = int(band)
        strip_rows = int(strip_rows or default_strip_rows(src.width))
        scheme, _source = classification_classes(classification, band, checkpoint, classes)
        counts = _count_classes(src, band, strip_rows, ignore, feedback)
        if not counts:
            raise OptsarError(f"The classification '{classification}' has no valid (non-nodata) pixel to sample.")
        if len(counts) > 1000:
            raise OptsarError(f"The classification '{classification}' has {len(counts)} distinct values; is it a classification?")
        codes = sorted(counts)
        npx = np.asarray([counts[c] for c in codes], dtype=np.int64)
        weights = npx / npx.sum()
        names = [_name(scheme, c) for c in codes]
        ua = parse_expected_ua(expected_ua, codes)
        requested = int(total)
        if requested == 0:
            requested = cochran_sample_size(weights, ua, target_se)
            feedback.info(
                f"Sample size from the target SE {target_se} of overall accuracy (Olofsson et al. 2014, eq. 13): {requested}."
            )
        sizes = allocate(npx, requested, allocation, min_per_class)
        for c, nm, n, px in zip(codes, names, sizes, npx):
            if n == px and n < max(int(min_per_class), 1):
                warnings.append(f"Class {c} '{nm}' has only {px} pixel(s); all are in the sample.")
        rng = np.random.default_rng(int(seed))
        ranks = {c: np.sort(rng.choice(int(px), size=int(n), replace=False)) for c, px, n in zip(codes, npx, sizes) if n > 0}

        # second pass: find the pixels with the drawn ranks (row-major order within each class)
        seen = {c: 0 for c in codes}
        cursor = {c: 0 for c in codes}
        rows: List[np.ndarray] = []
        cols: List[np.ndarray] = []
        cls: List[np.ndarray] = []
        n_strips = max(1, math.ceil(src.height / strip_rows))
        from .assess import _valid_mask

        for s, off in enumerate(range(0, src.height, strip_rows)):
            check_cancel(feedback)
            feedback.progress(0.5 + 0.45 * s / n_strips, "Drawing the sample")
            h = min(strip_rows, src.height - off)
            win = Window(0, off, src.width, h)
            v = src.read(band, window=win)
            valid = _valid_mask(src, band, v, win)
            flat = v.ravel()
            vflat = valid.ravel()
            for c in ranks:
                r = ranks[c]
                i0 = cursor[c]
                if i0 >= len(r):
                    continue
                pos = np.flatnonzero((flat == c) & vflat)
                lo, hi = seen[c], seen[c] + len(pos)
                i1 = int(np.searchsorted(r, hi))
                if i1 > i0:
                    take = pos[r[i0:i1] - lo]
                    rows.append(take // src.width + off)
                    cols.append(take % src.width)
                    cls.append(np.full(len(take), c, dtype=np.int64))
                cursor[c] = i1
                seen[c] = hi
        rows_a = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        cols_a = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        cls_a = np.concatenate(cls) if cls else np.zeros(0, dtype=np.int64)
        xs, ys = rasterio.transform.xy(src.transform, rows_a, cols_a, offset="center")
        crs_wkt = src.crs.to_wkt() if src.crs else None

    # shuffle the order so interpreters do not label class by class (and cannot guess the map class)
    order = rng.permutation(len(cls_a))
    feedback.progress(0.95, "Writing the sample")
    layer = output.stem
    strata = {
        "design": "stratified random sampling, strata = map classes",
        "allocation": allocation,
        "seed": int(seed),
        "classification": classification,
        "band": band,
        "strata": [
            {"code": int(c), "name": nm, "mapped_pixels": int(px), "weight": float(w), "n": int(n)}
            for c, nm, px, w, n in zip(codes, names, npx, weights, sizes)
        ],
    }
    _write_points(
        output, driver, layer, crs_wkt,
        np.asarray(xs, dtype=np.float64)[order], np.asarray(ys, dtype=np.float64)[order],
        cls_a[order], {c: nm for c, nm in zip(codes, names)}, strata,
    )
    feedback.progress(1.0, "Done")
    for w in warnings:
        feedback.warning(w)
    return SampleResult(
        path=str(output), layer=layer, codes=[int(c) for c in codes], names=names,
        mapped_pixels=[int(p) for p in npx], weights=[float(w) for w in weights],
        sizes=[int(n) for n in sizes], total=int(sum(sizes)), requested_total=requested,
        expected_ua=ua, anticipated_oa_se=anticipated_oa_se(weights, ua, sizes),
        allocation=allocation, seed=int(seed), warnings=warnings,
    )


def _name(scheme: Optional[ClassScheme], code: int) -> str:
    if scheme is not None and code in scheme.codes:
        return scheme.by_code(code).name
    return f"class {code}"


def _write_points(output: Path, driver_name: str, layer_name: str, crs_wkt, xs, ys, codes, names, strata) -> None:
    from osgeo import ogr, osr

    tmp = temp_path(output, create=False)  # OGR creates the file itself
    try:
        drv = ogr.GetDriverByName(driver_name)
        ds = drv.CreateDataSource(tmp)
        if ds is None:
            raise OptsarError(f"Cannot create the sample file '{output}'.")
        srs = None
        if crs_wkt:
            srs = osr.SpatialReference()
            srs.ImportFromWkt(crs_wkt)
        lyr = ds.CreateLayer(layer_name, srs, ogr.wkbPoint)
        for name, ftype in (("sample_id", ogr.OFTInteger), ("map_code", ogr.OFTInteger),
                            ("map_class", ogr.OFTString), ("reference", ogr.OFTString)):
            lyr.CreateField(ogr.FieldDefn(name, ftype))
        if driver_name == "GPKG":
            lyr.SetMetadataItem("DESCRIPTION", "Stratified random sample (OptSAR Fusion); label the 'reference' field")
            lyr.SetMetadataItem("OPTSAR_STRATA", json.dumps(strata))
        defn = lyr.GetLayerDefn()
        transactions = bool(lyr.TestCapability(ogr.OLCTransactions))
        if transactions:
            lyr.StartTransaction()
        for i, (x, y, c) in enumerate(zip(xs, ys, codes)):
            f = ogr.Feature(defn)
            f.SetField("sample_id", i + 1)
            f.SetField("map_code", int(c))
            f.SetField("map_class", names[int(c)])
            pt = ogr.Geometry(ogr.wkbPoint)
            pt.AddPoint_2D(float(x), float(y))
            f.SetGeometry(pt)
            lyr.CreateFeature(f)
        if transactions:
            lyr.CommitTransaction()
        ds = None
        publish(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------
# command line: python -m optsar_plugin sample
# --------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.description = "Draw a stratified random sample (strata = map classes) and write it as points to label."
    parser.add_argument("classification", help="classification raster")
    parser.add_argument("output", help="output point layer (.gpkg, .geojson or .fgb)")
    parser.add_argument("--band", type=int, default=1)
    parser.add_argument("--allocation", choices=ALLOCATIONS, default="proportional",
                        help="per-class allocation (default proportional; olofsson = fixed minimum for rare classes, rest proportional)")
    parser.add_argument("--total", type=int, default=0, help="sample size; 0 = computed from --target-se and --expected-ua")
    parser.add_argument("--target-se", type=float, default=0.01, help="target standard error of overall accuracy (default 0.01)")
    parser.add_argument("--expected-ua", default="0.8", help="expected user's accuracy: 0.8, or code:value pairs '1:0.7,2:0.9'")
    parser.add_argument("--min-per-class", type=int, default=50, help="minimum sample size per class (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (same seed, same sample)")
    parser.add_argument("--ignore", default=None, help="class codes never to sample, e.g. '0,9'")
    parser.add_argument("--checkpoint", default=None, help="checkpoint whose metadata names the classes")


def run_cli(args, feedback) -> int:
    res = stratified_sample(
        args.classification, args.output, band=args.band, allocation=args.allocation, total=args.total,
        target_se=args.target_se, expected_ua=args.expected_ua, min_per_class=args.min_per_class,
        seed=args.seed, ignore_values=args.ignore, checkpoint=args.checkpoint, feedback=feedback,
    )
    print(res.table())
    se = "n/a" if res.anticipated_oa_se is None else f"{res.anticipated_oa_se:.4f}"
    print(f"{res.total} points written to {res.path} (anticipated SE of overall accuracy: {se})")
    return 0
