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
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..classes import ClassScheme
from ..errors import InputError
from ..fileio import OutputSet
from ..options import ALLOCATIONS
from ..progress import Feedback, NullFeedback, check_cancel
from ..raster_io import open_classification, read, valid_mask
from ..vector_io import ogr_modules
from .matching import classification_classes
from .options import MAX_CLASSES, SampleOptions, default_strip_rows

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf"}


# --------------------------------------------------------------------------------------
# sample size and allocation (pure)
# --------------------------------------------------------------------------------------
def cochran_sample_size(weights: Sequence[float], expected_ua: Sequence[float], target_se: float) -> int:
    """Olofsson et al. (2014) eq. 13: ``n = ceil((Σ W_i sqrt(U_i (1 - U_i)) / S(Ô))²)``."""
    if not target_se or float(target_se) <= 0:
        raise InputError(f"The target standard error of overall accuracy must be positive, got {target_se}.")
    w = np.asarray(weights, dtype=np.float64)
    u = np.asarray(expected_ua, dtype=np.float64)
    if w.shape != u.shape:
        raise InputError("One expected user's accuracy per class is needed.")
    if ((u <= 0) | (u >= 1)).any():
        raise InputError(f"Expected user's accuracies must be between 0 and 1 (exclusive), got {u.tolist()}.")
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
        raise InputError(f"Unknown allocation '{method}'; choose one of {', '.join(ALLOCATIONS)}.")
    total = int(total)
    if total < 0:
        raise InputError(f"The sample size must not be negative, got {total}.")
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
                raise InputError(
                    f"Cannot read the expected user's accuracy '{value}': give a number (0.8) or code:value pairs (1:0.7, 2:0.9)."
                ) from None
    out = [per.get(int(c), default) for c in codes]
    for c, u in zip(codes, out):
        if not 0 < u < 1:
            raise InputError(f"The expected user's accuracy of class {c} must be between 0 and 1 (exclusive), got {u}.")
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


def _count_classes(src, band: int, strip_rows: int, ignore: Sequence[int], feedback) -> Dict[int, int]:
    """Mapped pixels per class value over the whole map (nodata and ``ignore`` left out)."""
    counts: Dict[int, int] = {}
    for s_i, (values, valid, _) in enumerate(_strips(src, band, strip_rows)):
        check_cancel(feedback)
        feedback.progress(0.5 * s_i * strip_rows / max(1, src.height), "Counting mapped classes")
        vals = values[valid]
        if vals.dtype.kind == "f":
            if vals.size and not np.array_equal(vals, np.round(vals)):
                raise InputError(f"The classification '{src.name}' holds non-integer values; it is not a classification.")
            vals = vals.astype(np.int64)
        if vals.dtype in (np.uint8, np.uint16):
            bc = np.bincount(vals, minlength=1)
            pairs = ((int(c), int(bc[c])) for c in np.flatnonzero(bc))
        else:
            u, c = np.unique(vals, return_counts=True)
            pairs = zip(u.tolist(), c.tolist())
        for code, n in pairs:
            counts[int(code)] = counts.get(int(code), 0) + n
    for c in ignore:
        counts.pop(int(c), None)
    return counts


def _strips(src, band: int, strip_rows: int):
    """``(values, valid, row offset)`` for each strip of ``strip_rows`` rows."""
    from rasterio.windows import Window

    for off in range(0, src.height, strip_rows):
        win = Window(0, off, src.width, min(strip_rows, src.height - off))
        values = read(src, band, window=win)
        yield values, valid_mask(src, band, values, win), off


@dataclass
class _Design:
    """The strata and the allocation: class codes and names, mapped pixels, weights, expected UA, sizes."""

    codes: List[int]
    names: List[str]
    pixels: np.ndarray
    weights: np.ndarray
    expected_ua: List[float]
    requested: int
    sizes: np.ndarray
    warnings: List[str]


def _design(classification: str, counts: Dict[int, int], scheme, opts: SampleOptions, feedback) -> _Design:
    if not counts:
        raise InputError(f"The classification '{classification}' has no valid (non-nodata) pixel to sample.")
    if len(counts) > MAX_CLASSES:
        raise InputError(f"The classification '{classification}' has {len(counts)} distinct values; "
                         "is it a classification?")
    codes = sorted(counts)
    npx = np.asarray([counts[c] for c in codes], dtype=np.int64)
    weights = npx / npx.sum()
    names = [_name(scheme, c) for c in codes]
    ua = parse_expected_ua(opts.expected_ua, codes)
    requested = opts.total
    if requested == 0:
        requested = cochran_sample_size(weights, ua, opts.target_se)
        feedback.info(f"Sample size from the target SE {opts.target_se} of overall accuracy (Olofsson et al. 2014, "
                      f"eq. 13): {requested}.")
    sizes = allocate(npx, requested, opts.allocation, opts.min_per_class)
    warnings = [f"Class {c} '{nm}' has only {px} pixel(s); all are in the sample."
                for c, nm, n, px in zip(codes, names, sizes, npx) if n == px and n < max(opts.min_per_class, 1)]
    return _Design(codes, names, npx, weights, ua, requested, sizes, warnings)


def _draw(src, band: int, strip_rows: int, ranks: Dict[int, np.ndarray], feedback):
    """Rows, columns and classes of the pixels whose rank (row-major order within their class) was drawn."""
    seen = {c: 0 for c in ranks}
    cursor = {c: 0 for c in ranks}
    rows: List[np.ndarray] = [np.zeros(0, np.int64)]
    cols: List[np.ndarray] = [np.zeros(0, np.int64)]
    cls: List[np.ndarray] = [np.zeros(0, np.int64)]
    for s_i, (values, valid, off) in enumerate(_strips(src, band, strip_rows)):
        check_cancel(feedback)
        feedback.progress(0.5 + 0.45 * s_i * strip_rows / max(1, src.height), "Drawing the sample")
        flat, vflat = values.ravel(), valid.ravel()
        for c, r in ranks.items():
            if cursor[c] >= len(r):
                continue
            pos = np.flatnonzero((flat == c) & vflat)
            lo, hi = seen[c], seen[c] + len(pos)
            i1 = int(np.searchsorted(r, hi))
            if i1 > cursor[c]:
                take = pos[r[cursor[c]:i1] - lo]
                rows.append(take // src.width + off)
                cols.append(take % src.width)
                cls.append(np.full(len(take), c, dtype=np.int64))
            cursor[c], seen[c] = i1, hi
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(cls)


def stratified_sample(
    classification: Union[str, Path],
    output: Union[str, Path],
    *,
    options: Optional[SampleOptions] = None,
    checkpoint: Optional[str] = None,
    classes=None,
    feedback: Optional[Feedback] = None,
    **settings,
) -> SampleResult:
    """Draw a stratified random sample of pixels and write it as a point layer (GeoPackage, GeoJSON, FlatGeobuf).

    Settings (:class:`~.options.SampleOptions`, as ``options`` or keywords): ``band``,
    ``allocation``, ``total`` (0: from ``target_se`` and ``expected_ua``,
    :func:`cochran_sample_size`), ``target_se``, ``expected_ua``, ``min_per_class``, ``seed``,
    ``ignore_values`` (never drawn, nor is nodata), ``strip_rows``.
    """
    import rasterio

    feedback = feedback or NullFeedback()
    opts = SampleOptions.of(options, "stratified_sample", **settings)
    classification, output = str(classification), Path(output)
    driver = DRIVERS.get(output.suffix.lower())
    if driver is None:
        raise InputError(
            f"The sample output '{output}' must be a GeoPackage (.gpkg), GeoJSON (.geojson) or FlatGeobuf (.fgb) file."
        )
    with OutputSet([(classification, "classification"), (checkpoint, "checkpoint", False)], feedback) as outs:
        tmp = outs.add(output, "sample output", create=False, make_folder=True)  # OGR creates the file itself
        src, band = open_classification(classification, opts.band)
        with src:
            strip_rows = opts.strip_rows or default_strip_rows(src.width)
            scheme, _source = classification_classes(classification, band, checkpoint, classes)
            d = _design(classification, _count_classes(src, band, strip_rows, opts.ignore_values, feedback), scheme,
                        opts, feedback)
            rng = np.random.default_rng(opts.seed)
            ranks = {c: np.sort(rng.choice(int(px), size=int(n), replace=False))
                     for c, px, n in zip(d.codes, d.pixels, d.sizes) if n > 0}
            rows, cols, cls = _draw(src, band, strip_rows, ranks, feedback)
            xs, ys = rasterio.transform.xy(src.transform, rows, cols, offset="center")
            crs_wkt = src.crs.to_wkt() if src.crs else None
        # shuffle the order so interpreters do not label class by class (and cannot guess the map class)
        order = rng.permutation(len(cls))
        feedback.progress(0.95, "Writing the sample")
        _write_points(tmp, driver, output.stem, crs_wkt, np.asarray(xs, dtype=np.float64)[order],
                      np.asarray(ys, dtype=np.float64)[order], cls[order], dict(zip(d.codes, d.names)),
                      _strata(classification, band, d, opts))
        outs.publish()
    feedback.progress(1.0, "Done")
    for w in d.warnings:
        feedback.warning(w)
    return SampleResult(
        path=str(output), layer=output.stem, codes=[int(c) for c in d.codes], names=d.names,
        mapped_pixels=[int(p) for p in d.pixels], weights=[float(w) for w in d.weights],
        sizes=[int(n) for n in d.sizes], total=int(sum(d.sizes)), requested_total=d.requested,
        expected_ua=d.expected_ua, anticipated_oa_se=anticipated_oa_se(d.weights, d.expected_ua, d.sizes),
        allocation=opts.allocation, seed=opts.seed, warnings=d.warnings,
    )


def _strata(classification: str, band: int, d: _Design, opts: SampleOptions) -> Dict:
    """The design, recorded in the GeoPackage's metadata."""
    return {
        "design": "stratified random sampling, strata = map classes",
        "allocation": opts.allocation,
        "seed": opts.seed,
        "classification": classification,
        "band": band,
        "strata": [
            {"code": int(c), "name": nm, "mapped_pixels": int(px), "weight": float(w), "n": int(n)}
            for c, nm, px, w, n in zip(d.codes, d.names, d.pixels, d.weights, d.sizes)
        ],
    }


def _name(scheme: Optional[ClassScheme], code: int) -> str:
    if scheme is not None and code in scheme.codes:
        return scheme.by_code(code).name
    return f"class {code}"


def _write_points(tmp: str, driver_name: str, layer_name: str, crs_wkt, xs, ys, codes, names, strata) -> None:
    """The sample points, written by OGR to the temporary file ``tmp``."""
    _, ogr, osr = ogr_modules()
    drv = ogr.GetDriverByName(driver_name)
    ds = drv.CreateDataSource(tmp)
    if ds is None:
        raise InputError(f"Cannot create the sample file '{tmp}'.")
    try:
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
    finally:
        ds = None  # closes the file
