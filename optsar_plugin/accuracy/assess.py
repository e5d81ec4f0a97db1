"""``assess_accuracy``: a classification against reference polygons or points.

The engine entry of ``optsar:assessaccuracy`` and ``python -m optsar_plugin assess``:

1. the classification's classes are found (a checkpoint's metadata, an explicit scheme from
   the caller - the QGIS layer's paletted renderer -, the ``.qml`` beside the raster, or its
   GDAL category names);
2. the reference features are read, their class values resolved (integer codes or class
   names matched case-, space- and underscore-insensitively), reprojected, repaired and
   burnt on the classification's grid strip by strip (:mod:`.rasterize`);
3. one pass over the classification, strip by strip, counts every mapped class over the whole
   map (the stratum weights of the area-adjusted estimators) and the (map, reference) pairs
   on the reference pixels;
4. the statistics of :mod:`.stats` and the reports of :mod:`.report`.

Nodata pixels of the classification, ``ignore_values`` (in map or reference) and pixels
where polygons of different classes overlap are excluded and counted.  Class code 0 is an
ordinary class; only the raster's declared nodata (or its mask band) is nodata.

Memory: one strip of the classification (native dtype), an ``int16`` strip of reference class
indices, one ``int64`` key per pixel for the counting, a few boolean masks and a ``uint8`` mask
per class burnt (see :class:`_PairCounter`): about 35 bytes per strip pixel at the peak, so
~140 MB with the default strips of :data:`STRIP_PIXELS` (4 M) pixels, whatever the map size.
GDAL's block cache (``GDAL_CACHEMAX``, 5 % of RAM by default) comes on top; the engine does
not change that process-wide setting.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from ..classes import ClassScheme, generated_palette
from ..errors import OptsarError
from ..progress import Feedback, NullFeedback, check_cancel
from . import stats
from .rasterize import StripBurner, list_ids, read_class_values, read_reference, strips

MAX_CLASSES = 1000
STRIP_PIXELS = 4_000_000  # pixels per strip: ~35 bytes each at the peak (map, masks, index, int64 keys)


def default_strip_rows(width: int) -> int:
    return max(1, STRIP_PIXELS // max(1, int(width)))
INT_RE = re.compile(r"^[+-]?\d+$")

POLYGON_CAVEAT = (
    "The area-adjusted estimates (Olofsson et al. 2014) assume that the reference units were a "
    "random sample within each mapped class (stratified random sampling with the map classes as "
    "strata; simple random or systematic samples are analysed the same way). Pixels inside "
    "hand-drawn reference polygons are not such a sample: neighbouring pixels are correlated and "
    "polygons are placed where the interpreter is confident, so these estimates and especially "
    "their standard errors and confidence intervals are indicative only. For defensible area "
    "estimates, label the points of a stratified random sample (optsar:stratifiedsample) and "
    "assess with them."
)
POINT_CAVEAT = (
    "The area-adjusted estimates (Olofsson et al. 2014) assume that the reference points were a "
    "random sample within each mapped class (stratified random sampling with the map classes as "
    "strata, e.g. from optsar:stratifiedsample; simple random or systematic samples are analysed "
    "the same way). If the points were placed by hand, the estimates are indicative only."
)


@dataclass
class AccuracyResult:
    """Everything the reports show; ``metrics`` is the JSON document (see :mod:`.report`)."""

    classes: List[dict]
    matrix: np.ndarray
    metrics: Dict
    warnings: List[str] = field(default_factory=list)
    outputs: Dict[str, str] = field(default_factory=dict)

    @property
    def overall_accuracy(self) -> Optional[float]:
        return self.metrics["summary"]["overall_accuracy"]

    @property
    def kappa(self) -> Optional[float]:
        return self.metrics["summary"]["kappa"]

    @property
    def miou(self) -> Optional[float]:
        return self.metrics["summary"]["miou"]

    @property
    def macro_f1(self) -> Optional[float]:
        return self.metrics["summary"]["macro_f1"]


# --------------------------------------------------------------------------------------
# classes of the classification
# --------------------------------------------------------------------------------------
def _as_scheme(classes) -> Optional[ClassScheme]:
    if classes is None:
        return None
    if isinstance(classes, ClassScheme):
        return classes
    items = list(classes)
    if items and isinstance(items[0], dict):
        palette = generated_palette(len(items))
        return ClassScheme.from_list(
            [{"code": d["code"], "name": d["name"], "color": d.get("color") or palette[i]} for i, d in enumerate(items)]
        )
    return ClassScheme.from_names_and_codes([(int(c), str(n)) for c, n in items])


def classification_classes(
    classification: str, band: int = 1, checkpoint: Optional[str] = None, classes=None
) -> tuple:
    """``(ClassScheme or None, description of where it came from)``.

    Order: a checkpoint's metadata (the user asked for it), ``classes`` given by the caller
    (the QGIS layer's paletted renderer), ``<raster stem>.qml`` beside the raster, the
    raster's GDAL category names.
    """
    if checkpoint:
        from ..checkpoints import class_scheme, read_metadata

        return class_scheme(read_metadata(checkpoint)), f"checkpoint {checkpoint}"
    scheme = _as_scheme(classes)
    if scheme is not None:
        return scheme, "the layer's style"
    from ..styles import qml_path_for, read_qml_classes, read_raster_classes

    qml = qml_path_for(classification)
    if qml.is_file():
        try:
            return read_qml_classes(qml), f"style {qml}"
        except OptsarError:
            pass  # a style without a palette names no classes; try the raster itself
    try:
        scheme = read_raster_classes(classification, band)
    except OptsarError:
        scheme = None
    if scheme is not None:
        return scheme, "the raster's category names"
    return None, "none (codes only)"


def make_resolver(path: str, layer: Optional[str], class_field: str, scheme: Optional[ClassScheme], source: str):
    """A function turning a class-field value into a class code; checks every value first.

    Integer fields hold codes.  Real fields must hold whole numbers.  Text fields hold class
    names (matched to the classification's classes) or integer codes written as text; a name
    that matches no class is an error listing the known names.
    """
    kind, values = read_class_values(path, layer, class_field)
    mapping: Dict[object, int] = {}
    unmatched = []
    for v in values:
        if kind == "integer":
            mapping[v] = int(v)
        elif kind == "real":
            if not math.isfinite(float(v)) or float(v) != int(v):
                raise OptsarError(
                    f"The class field '{class_field}' of '{path}' holds {v}, which is not a whole number class code."
                )
            mapping[v] = int(v)
        else:
            text = str(v).strip()
            if not text:
                continue
            code = scheme.code_for_name(text) if scheme is not None else None
            if code is None and INT_RE.match(text):
                code = int(text)
            if code is None:
                unmatched.append(text)
            else:
                mapping[v] = code
    if unmatched:
        if scheme is None:
            raise OptsarError(
                f"The reference classes in field '{class_field}' are names ({', '.join(repr(u) for u in unmatched[:10])}), "
                "but the classification names no classes (no .qml style beside it, no GDAL category names). "
                "Give the checkpoint that produced it (CHECKPOINT / --checkpoint), style the raster, or use integer codes."
            )
        known = ", ".join(f"{c.code} '{c.name}'" for c in scheme.classes)
        raise OptsarError(
            f"Reference class name(s) {', '.join(repr(u) for u in unmatched)} in field '{class_field}' match no class "
            f"of the classification. Known classes (from {source}): {known}."
        )

    def resolve(value):
        try:
            return mapping[value]
        except KeyError:
            raise OptsarError(f"Unexpected class value {value!r} in field '{class_field}'.") from None

    return resolve


# --------------------------------------------------------------------------------------
# the engine entry
# --------------------------------------------------------------------------------------
def _parse_ignore(ignore_values) -> List[int]:
    if ignore_values is None:
        return []
    if isinstance(ignore_values, str):
        parts = [p for p in re.split(r"[,;\s]+", ignore_values.strip()) if p]
    else:
        parts = list(ignore_values)
    out = []
    for p in parts:
        try:
            f = float(p)
        except (TypeError, ValueError):
            raise OptsarError(f"Ignore values must be integer class codes, got {p!r}.") from None
        if f != int(f):
            raise OptsarError(f"Ignore values must be integer class codes, got {p!r}.")
        out.append(int(f))
    return sorted(set(out))


def _valid_mask(src, band: int, values: np.ndarray, window) -> np.ndarray:
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums[band - 1]
    if values.dtype.kind == "f":
        valid = np.isfinite(values)
    else:
        valid = np.ones(values.shape, dtype=bool)
    if MaskFlags.all_valid in flags:
        return valid
    if MaskFlags.nodata in flags and src.nodatavals[band - 1] is not None:
        nd = src.nodatavals[band - 1]
        if values.dtype.kind == "f" and np.isnan(nd):
            return valid
        return valid & (values != nd)
    return valid & (src.read_masks(band, window=window) > 0)


def assess_accuracy(
    classification: Union[str, Path],
    reference: Union[str, Path],
    class_field: str,
    *,
    band: int = 1,
    reference_layer: Optional[str] = None,
    all_touched: bool = False,
    ignore_values: Optional[Sequence[int]] = None,
    confidence: float = 0.95,
    checkpoint: Optional[str] = None,
    classes=None,
    output_report: Optional[Union[str, Path]] = None,
    output_matrix: Optional[Union[str, Path]] = None,
    output_metrics: Optional[Union[str, Path]] = None,
    strip_rows: Optional[int] = None,
    feedback: Optional[Feedback] = None,
) -> AccuracyResult:
    """Assess ``classification`` (band ``band``) against ``reference`` features' ``class_field``.

    ``classes`` (a :class:`ClassScheme`, ``[{code, name[, color]}]`` or ``[(code, name)]``)
    overrides the classes found beside the raster; ``checkpoint`` overrides both.
    Outputs (HTML report, CSV matrix and tables, JSON metrics) are written only for the
    paths given, each to a temporary file renamed into place at the end.  ``strip_rows``
    (default: about :data:`STRIP_PIXELS` pixels per strip) bounds the memory.
    """
    import rasterio
    from rasterio.windows import Window

    feedback = feedback or NullFeedback()
    classification = str(classification)
    reference = str(reference)
    if not 0.5 <= float(confidence) < 1.0:
        raise OptsarError(f"The confidence level must be between 0.5 and 1 (e.g. 0.95), got {confidence}.")
    ignore = _parse_ignore(ignore_values)
    warnings: List[str] = []

    try:  # not only files: GDAL subdatasets and /vsi paths open too
        src = rasterio.open(classification)
    except rasterio.errors.RasterioIOError as exc:
        missing = "does not exist" if not Path(classification).exists() else "cannot be read"
        raise OptsarError(f"The classification raster '{classification}' {missing}: {exc}") from None
    with src:
        if not 1 <= int(band) <= src.count:
            raise OptsarError(f"The classification '{classification}' has {src.count} band(s); band {band} does not exist.")
        band = int(band)
        scheme, class_source = classification_classes(classification, band, checkpoint, classes)
        feedback.info(f"Classes of the classification: {class_source}.")
        resolve = make_resolver(reference, reference_layer, class_field, scheme, class_source)
        crs_wkt = src.crs.to_wkt() if src.crs else None
        ref = read_reference(reference, reference_layer, class_field, resolve, crs_wkt, tuple(src.bounds))
        check_cancel(feedback)
        _reference_warnings(ref, warnings)
        if ref.n_used == 0:
            raise OptsarError(
                f"No reference feature of '{reference}' can be used: {ref.n_features} feature(s), "
                f"{len(ref.outside_ids)} outside the classification, {len(ref.null_class_ids)} without a class, "
                f"{len(ref.dropped_invalid_ids)} with unrepairable geometry."
            )

        burner = StripBurner(ref, src.transform, src.width, src.height, all_touched=all_touched)
        ref_codes = np.asarray(burner.codes, dtype=np.int64)
        ref_lo, ref_hi = burner.rows_with_reference()
        counter = _PairCounter(np.dtype(src.dtypes[band - 1]), len(ref_codes))
        ignore_arr = np.asarray(ignore, dtype=np.int64)
        # by reference index + 1 (0 = no reference): is that reference class ignored?
        ref_ignored1 = np.concatenate([[False], np.isin(ref_codes, ignore_arr)])
        excl = {"nodata": 0, "ignored": 0, "conflict": 0, "points_nodata": 0, "points_ignored": 0}

        all_strips = list(strips(src.height, strip_rows or default_strip_rows(src.width)))
        for s_i, (row_off, h) in enumerate(all_strips):
            check_cancel(feedback)
            feedback.progress(s_i / len(all_strips), f"Rows {row_off}-{row_off + h} of {src.height}")
            win = Window(0, row_off, src.width, h)
            values = src.read(band, window=win)
            valid = _valid_mask(src, band, values, win)
            if values.dtype.kind == "f":
                vv = values[valid]
                if vv.size and not np.array_equal(vv, np.round(vv)):
                    raise OptsarError(
                        f"The classification '{classification}' band {band} holds non-integer values; "
                        "it is not a classification (class codes must be whole numbers)."
                    )
                values = np.where(valid, values, 0).astype(np.int64)
            kept = valid & ~np.isin(values, ignore_arr) if ignore else valid
            rs = burner.strip(row_off, h) if row_off < ref_hi and row_off + h > ref_lo else None
            if rs is None or rs.index is None:
                counter.add_pixels(values, kept, None)  # mapped-class counts only
            else:
                excl["conflict"] += rs.conflict_pixels
                ref1 = rs.index  # int16, owned by this strip: shift in place to 0 = no reference
                ref1 += 1
                has_ref = ref1 > 0
                excl["nodata"] += int(np.count_nonzero(has_ref & ~valid))
                rign = ref_ignored1[ref1]
                excl["ignored"] += int(np.count_nonzero(has_ref & valid & (~kept | rign)))
                ref1[rign] = 0  # an ignored reference class: the pixel still counts as mapped area
                counter.add_pixels(values, kept, ref1)
            if rs is not None and rs.point_rows.size:
                pv = valid[rs.point_rows, rs.point_cols]
                pk = kept[rs.point_rows, rs.point_cols]
                pr1 = rs.point_index + 1
                pri = ref_ignored1[pr1]
                excl["points_nodata"] += int((~pv).sum())
                excl["points_ignored"] += int((pv & (~pk | pri)).sum())
                use = pv & pk & ~pri
                counter.add_points(values[rs.point_rows, rs.point_cols][use], pr1[use])
        feedback.progress(1.0, "Computing statistics")
        map_counts, joint = counter.result(ref_codes)

        transform = src.transform
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        area_unit, area_note = _area_unit(src.crs)
        inputs = {
            "classification": classification,
            "band": band,
            "reference": reference,
            "reference_layer": ref.layer,
            "class_field": class_field,
            "all_touched": bool(all_touched),
            "ignore_values": ignore,
            "confidence": float(confidence),
            "checkpoint": checkpoint,
            "class_source": class_source,
            "crs": src.crs.to_string() if src.crs else None,
            "width": src.width,
            "height": src.height,
            "pixel_size": [abs(transform.a), abs(transform.e)],
            "pixel_area": pixel_area,
            "area_unit": area_unit,
            "nodata": src.nodatavals[band - 1],
            "reference_geometry": sorted(ref.geometry_kinds),
            "reference_reprojected": ref.reprojected,
        }

    if area_note:
        warnings.append(area_note)
    if ref.crs_note and not ref.reprojected:
        warnings.append(ref.crs_note.capitalize() + ".")
    return _finish(
        scheme, map_counts, joint, ignore, inputs, excl, ref, warnings, confidence,
        output_report, output_matrix, output_metrics, feedback,
    )


class _PairCounter:
    """Counts mapped classes over the whole map and (map value, reference class) pairs, strip by strip.

    For uint8/uint16 maps one ``bincount`` per strip over ``value * (R + 1) + reference index + 1``
    (column 0 = no reference) gives both at once, with no per-pixel Python work and no copies of
    the reference pixels; other integer types go through ``bincount`` over the strip's value range
    or, for very wide ranges, ``np.unique``.  Points are sample units: they add pairs only, never
    mapped area (the pixel they fall in is already counted once as mapped area).
    """

    def __init__(self, dtype: np.dtype, n_ref: int):
        self.r1 = n_ref + 1
        self.small = dtype in (np.dtype("uint8"), np.dtype("uint16"))
        self.nbins = 256 if dtype == np.dtype("uint8") else 65536
        self.dense = np.zeros((self.nbins, self.r1), dtype=np.int64) if self.small else None
        self.sparse: Dict[tuple, int] = {}
        self.points: Dict[tuple, int] = {}

    def add_pixels(self, values: np.ndarray, kept: np.ndarray, ref1: Optional[np.ndarray]) -> None:
        if self.small:
            if ref1 is None:
                v = values if kept.all() else values[kept]
                self.dense[:, 0] += np.bincount(v.ravel(), minlength=self.nbins)
                return
            # int64 keys: bincount would copy int32 input to intp anyway
            key = values.astype(np.int64)
            key *= self.r1
            key += ref1
            dump = self.nbins * self.r1
            np.putmask(key, ~kept, dump)
            self.dense += np.bincount(key.ravel(), minlength=dump + 1)[:dump].reshape(self.nbins, self.r1)
            return
        vals = values[kept].astype(np.int64)
        if vals.size == 0:
            return
        refs = np.zeros(vals.size, dtype=np.int64) if ref1 is None else ref1[kept].astype(np.int64)
        vmin = int(vals.min())
        span = int(vals.max()) - vmin + 1
        if span * self.r1 <= 1 << 24:
            bc = np.bincount((vals - vmin) * self.r1 + refs, minlength=span * self.r1)
            keys = np.flatnonzero(bc)
            counts = bc[keys]
            pairs = zip((keys // self.r1 + vmin).tolist(), (keys % self.r1).tolist(), counts.tolist())
        else:
            u, c = np.unique(vals * self.r1 + refs, return_counts=True)
            pairs = zip((u // self.r1).tolist(), (u % self.r1).tolist(), c.tolist())
        for v, r, n in pairs:
            self.sparse[(v, r)] = self.sparse.get((v, r), 0) + n

    def add_points(self, values: np.ndarray, ref1: np.ndarray) -> None:
        for v, r in zip(np.asarray(values).astype(np.int64).tolist(), np.asarray(ref1).tolist()):
            self.points[(v, r)] = self.points.get((v, r), 0) + 1

    def result(self, ref_codes: np.ndarray):
        """``({map value: pixels}, {(map value, reference code): units})``."""
        map_counts: Dict[int, int] = {}
        joint: Dict[tuple, int] = {}
        if self.small:
            rows = self.dense.sum(axis=1)
            map_counts = {int(v): int(rows[v]) for v in np.flatnonzero(rows)}
            for v, r in zip(*np.nonzero(self.dense[:, 1:])):
                joint[(int(v), int(ref_codes[r]))] = int(self.dense[v, r + 1])
        else:
            for (v, r), n in self.sparse.items():
                map_counts[v] = map_counts.get(v, 0) + n
                if r > 0:
                    key = (v, int(ref_codes[r - 1]))
                    joint[key] = joint.get(key, 0) + n
        for (v, r), n in self.points.items():
            key = (v, int(ref_codes[r - 1]))
            joint[key] = joint.get(key, 0) + n
        return map_counts, joint


def _area_unit(crs):
    if crs is None:
        return "map units²", "The classification has no CRS: areas are in squared map units."
    if crs.is_geographic:
        return "degree²", (
            "The classification is in a geographic CRS: areas are in square degrees and pixels of different "
            "latitudes have different true areas. Reproject it to an equal-area CRS for area estimates."
        )
    unit = (crs.linear_units or "").lower()
    if unit in ("metre", "meter", "m", "metres", "meters"):
        return "m²", None
    return f"{unit or 'map unit'}²", None


def _reference_warnings(ref, warnings: List[str]) -> None:
    if ref.outside_ids:
        warnings.append(
            f"{len(ref.outside_ids)} reference feature(s) lie outside the classification and were not used "
            f"(feature ids {list_ids(ref.outside_ids)})."
        )
    if ref.repaired_ids:
        warnings.append(
            f"{len(ref.repaired_ids)} invalid geometr{'y was' if len(ref.repaired_ids) == 1 else 'ies were'} "
            f"repaired (MakeValid/Buffer(0)) before use (feature ids {list_ids(ref.repaired_ids)})."
        )
    if ref.dropped_invalid_ids:
        warnings.append(
            f"{len(ref.dropped_invalid_ids)} invalid geometr{'y' if len(ref.dropped_invalid_ids) == 1 else 'ies'} could "
            f"not be repaired and {'was' if len(ref.dropped_invalid_ids) == 1 else 'were'} skipped "
            f"(feature ids {list_ids(ref.dropped_invalid_ids)})."
        )
    if ref.null_class_ids:
        warnings.append(
            f"{len(ref.null_class_ids)} reference feature(s) have no value in '{ref.class_field}' and were skipped "
            f"(feature ids {list_ids(ref.null_class_ids)})."
        )
    if ref.empty_geometry_ids:
        warnings.append(
            f"{len(ref.empty_geometry_ids)} reference feature(s) have no geometry and were skipped "
            f"(feature ids {list_ids(ref.empty_geometry_ids)})."
        )


def _finish(scheme, map_counts, joint, ignore, inputs, excl, ref, warnings, confidence,
            output_report, output_matrix, output_metrics, feedback) -> AccuracyResult:
    scheme_codes = set(scheme.codes) if scheme is not None else set()
    ref_codes = set(ref.codes) - set(ignore)
    codes = sorted((set(map_counts) | ref_codes | scheme_codes) - set(ignore))
    if len(codes) > MAX_CLASSES:
        raise OptsarError(
            f"The classification '{inputs['classification']}' has {len(codes)} distinct values; "
            "a classification has class codes (at most {MAX_CLASSES}). Is it a continuous raster?"
        )
    index = {c: i for i, c in enumerate(codes)}
    k = len(codes)
    cm = np.zeros((k, k), dtype=np.int64)
    for (mcode, rcode), n in joint.items():
        cm[index[mcode], index[rcode]] += n
    mapped_pixels = np.asarray([map_counts.get(c, 0) for c in codes], dtype=np.float64)

    palette = generated_palette(k)
    class_list = []
    for i, c in enumerate(codes):
        if scheme is not None and c in scheme_codes:
            lc = scheme.by_code(c)
            class_list.append({"code": int(c), "name": lc.name, "color": lc.color})
        else:
            class_list.append({"code": int(c), "name": f"class {c}", "color": palette[i]})

    if scheme is not None:
        unknown_ref = sorted(ref_codes - scheme_codes)
        if unknown_ref:
            warnings.append(
                f"Reference class code(s) {', '.join(map(str, unknown_ref))} are not classes of the classification "
                f"(its classes: {', '.join(str(c) for c in sorted(scheme_codes))})."
            )
        unknown_map = sorted(set(map_counts) - scheme_codes)
        if unknown_map:
            warnings.append(
                f"The classification holds value(s) {', '.join(map(str, unknown_map))} that its class list does not name."
            )
    if excl["nodata"]:
        warnings.append(f"{excl['nodata']} reference pixel(s) fall on nodata in the classification and were excluded.")
    if excl["points_nodata"]:
        warnings.append(f"{excl['points_nodata']} reference point(s) fall on nodata in the classification and were excluded.")
    if excl["ignored"] or excl["points_ignored"]:
        warnings.append(
            f"{excl['ignored']} reference pixel(s) and {excl['points_ignored']} point(s) carry an ignored value "
            f"({', '.join(map(str, ignore))}) in the map or the reference and were excluded."
        )
    if excl["conflict"]:
        warnings.append(
            f"{excl['conflict']} pixel(s) where overlapping reference polygons of different classes disagree were excluded."
        )
    if cm.sum() == 0:
        raise OptsarError(
            "No reference pixel falls on a valid (non-nodata, non-ignored) pixel of the classification; "
            "nothing to assess. " + " ".join(warnings)
        )
    absent_map = [class_list[i]["name"] for i in range(k) if mapped_pixels[i] == 0]
    absent_ref = [class_list[i]["name"] for i in range(k) if cm[:, i].sum() == 0]
    if absent_map:
        warnings.append(f"Class(es) absent from the map: {', '.join(absent_map)} (their user's accuracy is n/a).")
    if absent_ref:
        warnings.append(f"Class(es) absent from the reference: {', '.join(absent_ref)} (their producer's accuracy is n/a).")

    sample = stats.sample_measures(cm, confidence)
    pixel_area = inputs["pixel_area"]
    est = stats.stratified_estimates(cm, mapped_pixels, confidence, total_area=float(mapped_pixels.sum()) * pixel_area)
    if est["unsampled_classes"]:
        names = [class_list[i]["name"] for i in est["unsampled_classes"]]
        frac = est["population_fraction"]
        warnings.append(
            f"Mapped class(es) {', '.join(names)} have no reference pixel: the area-adjusted estimates describe only the "
            f"part of the map covered by the sampled classes ({100 * frac:.2f} % of the mapped area)."
            if frac is not None else f"Mapped class(es) {', '.join(names)} have no reference pixel."
        )
    if est["single_unit_classes"]:
        names = [class_list[i]["name"] for i in est["single_unit_classes"]]
        warnings.append(
            f"Mapped class(es) {', '.join(names)} have a single reference unit: standard errors and confidence "
            "intervals of the area-adjusted estimates are undefined (n/a)."
        )
    kinds = set(inputs["reference_geometry"])
    caveat = POINT_CAVEAT if kinds == {"point"} else POLYGON_CAVEAT

    from .report import build_metrics, write_outputs

    metrics = build_metrics(
        classes=class_list,
        matrix=cm,
        mapped_pixels=mapped_pixels,
        sample=sample,
        estimates=est,
        inputs=inputs,
        exclusions={
            "nodata_pixels": excl["nodata"],
            "ignored_pixels": excl["ignored"],
            "conflict_pixels": excl["conflict"],
            "points_on_nodata": excl["points_nodata"],
            "points_ignored": excl["points_ignored"],
            "features_total": ref.n_features,
            "features_used": ref.n_used,
            "features_outside": len(ref.outside_ids),
            "features_outside_ids": ref.outside_ids,
            "invalid_repaired_ids": ref.repaired_ids,
            "invalid_dropped_ids": ref.dropped_invalid_ids,
            "null_class_ids": ref.null_class_ids,
            "empty_geometry_ids": ref.empty_geometry_ids,
        },
        warnings=warnings,
        caveat=caveat,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    for w in warnings:
        feedback.warning(w)
    result = AccuracyResult(classes=class_list, matrix=cm, metrics=metrics, warnings=warnings)
    result.outputs = write_outputs(metrics, report=output_report, matrix=output_matrix, metrics_path=output_metrics)
    return result
