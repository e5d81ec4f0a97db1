"""``assess_accuracy``: a classification against reference polygons or points.

The engine entry of ``optsar:assessaccuracy`` and ``python -m optsar_plugin assess``:

1. the classification's classes are found (:mod:`.matching`: a checkpoint's metadata, an
   explicit scheme from the caller - the QGIS layer's paletted renderer -, the ``.qml``
   beside the raster, or its GDAL category names);
2. the reference features are read, their class values resolved (integer codes or class
   names matched case-, space- and underscore-insensitively), reprojected and repaired
   (:func:`optsar_plugin.vector_io.read_reference`) and burnt on the classification's grid
   strip by strip (:mod:`.rasterize`);
3. one pass over the classification, strip by strip, counts every mapped class over the whole
   map (the stratum weights of the area-adjusted estimators) and the (map, reference) pairs
   on the reference pixels (:mod:`.counting`);
4. the statistics of :mod:`.stats`, the warnings and alerts, and the reports of :mod:`.report`.

Nodata pixels of the classification, ``ignore_values`` (in map or reference) and pixels
where polygons of different classes overlap are excluded and counted.  Class code 0 is an
ordinary class; only the raster's declared nodata (or its mask band) is nodata.

Memory: one strip of the classification (native dtype), an ``int16`` strip of reference class
indices, one ``int64`` key per pixel for the counting, a few boolean masks and a ``uint8`` mask
per class burnt (see :class:`~.counting.PairCounter`): about 35 bytes per strip pixel at the
peak, so ~140 MB with the default strips of :data:`~.options.STRIP_PIXELS` (4 M) pixels,
whatever the map size.  GDAL's block cache (``GDAL_CACHEMAX``, 5 % of RAM by default) comes on
top; the engine does not change that process-wide setting.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ..classes import ClassScheme, LandCoverClass, generated_palette
from ..errors import InputError
from ..fileio import OutputSet
from ..progress import Feedback, NullFeedback, check_cancel
from ..raster_io import area_unit, open_classification
from ..vector_io import list_ids, read_reference
from . import stats
from .counting import Exclusions, count_pairs
from .matching import classification_classes, make_resolver
from .options import MAX_CLASSES, AssessOptions, default_strip_rows
from .rasterize import StripBurner

ALERT_THRESHOLD = 0.5  # producer's or user's accuracy below this is flagged loudly

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
OUTPUT_ROLES = {"report": "accuracy report", "matrix": "confusion matrix CSV", "metrics": "metrics JSON"}


@dataclass
class AccuracyResult:
    """Everything the reports show; ``metrics`` is the JSON document (see :mod:`.report`).

    ``classes``: the matrix's classes in row/column order; ``alerts``: what the report
    says loudly (classes never mapped, accuracies below :data:`ALERT_THRESHOLD`).
    """

    classes: ClassScheme
    matrix: np.ndarray
    metrics: Dict
    warnings: List[str] = field(default_factory=list)
    outputs: Dict[str, str] = field(default_factory=dict)
    alerts: List[str] = field(default_factory=list)

    overall_accuracy = property(lambda self: self.metrics["summary"]["overall_accuracy"])
    kappa = property(lambda self: self.metrics["summary"]["kappa"])
    miou = property(lambda self: self.metrics["summary"]["miou"])
    macro_f1 = property(lambda self: self.metrics["summary"]["macro_f1"])


def assess_accuracy(
    classification: Union[str, Path],
    reference: Union[str, Path],
    class_field: str,
    *,
    options: Optional[AssessOptions] = None,
    checkpoint: Optional[str] = None,
    classes=None,
    output_report: Optional[Union[str, Path]] = None,
    output_matrix: Optional[Union[str, Path]] = None,
    output_metrics: Optional[Union[str, Path]] = None,
    feedback: Optional[Feedback] = None,
    **settings,
) -> AccuracyResult:
    """Assess ``classification`` against the ``reference`` features' ``class_field``.

    Settings (:class:`~.options.AssessOptions`, as ``options`` or keywords): ``band``,
    ``reference_layer``, ``all_touched``, ``ignore_values``, ``confidence``, ``strip_rows``.
    ``classes`` (a :class:`ClassScheme`, ``[{code, name[, color]}]`` or ``[(code, name)]``)
    overrides the classes found beside the raster; ``checkpoint`` overrides both.  Outputs
    (HTML report, CSV matrix and tables, JSON metrics) are written only for the paths given,
    all published together at the end; none may replace an input.
    """
    feedback = feedback or NullFeedback()
    opts = AssessOptions.of(options, "assess_accuracy", **settings)
    classification, reference = str(classification), str(reference)
    inputs = [(classification, "classification"), (reference, "reference layer"), (checkpoint, "checkpoint", False)]
    with OutputSet(inputs, feedback) as outs:
        paths = {k: p for k, p in (("metrics", output_metrics), ("matrix", output_matrix), ("report", output_report))
                 if p}
        temps = {k: outs.add(p, OUTPUT_ROLES[k], make_folder=True) for k, p in paths.items()}
        src, band = open_classification(classification, opts.band)
        with src:
            scheme, class_source = classification_classes(classification, band, checkpoint, classes)
            feedback.info(f"Classes of the classification: {class_source}.")
            ref = _reference(reference, class_field, opts, scheme, class_source, src)
            burner = StripBurner(ref, src.transform, src.width, src.height, all_touched=opts.all_touched)
            counts = count_pairs(src, band, burner, opts.ignore_values, opts.strip_rows or default_strip_rows(src.width),
                                 feedback)
            record = _inputs_record(classification, band, reference, class_field, opts, checkpoint, class_source,
                                    src, ref)
            notes = [w for w in (_area_unit(src.crs)[1], ref.crs_note.capitalize() + "."
                                 if ref.crs_note and not ref.reprojected else None) if w]
        result = _finish(scheme, counts, ref, record, opts, notes, feedback)
        from .report import render

        for kind, text in render(result.metrics, list(temps)).items():
            with open(temps[kind], "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
        outs.publish()
    result.outputs = {k: str(Path(p).absolute()) for k, p in paths.items()}
    return result


def _reference(reference, class_field, opts: AssessOptions, scheme, class_source, src):
    """The reference features, class values resolved, in the classification's CRS; none usable is an error."""
    resolve = make_resolver(reference, opts.reference_layer, class_field, scheme, class_source)
    crs_wkt = src.crs.to_wkt() if src.crs else None
    ref = read_reference(reference, opts.reference_layer, class_field, resolve, crs_wkt, tuple(src.bounds))
    if ref.n_used == 0:
        raise InputError(
            f"No reference feature of '{reference}' can be used: {ref.n_features} feature(s), "
            f"{len(ref.outside_ids)} outside the classification, {len(ref.null_class_ids)} without a class, "
            f"{len(ref.unlabelled_ids)} of class 255 (unlabelled), "
            f"{len(ref.dropped_invalid_ids)} with unrepairable geometry."
        )
    return ref


def _inputs_record(classification, band, reference, class_field, opts, checkpoint, class_source, src, ref) -> Dict:
    transform = src.transform
    return {
        "classification": classification,
        "band": band,
        "reference": reference,
        "reference_layer": ref.layer,
        "class_field": class_field,
        "all_touched": opts.all_touched,
        "ignore_values": list(opts.ignore_values),
        "confidence": opts.confidence,
        "checkpoint": checkpoint,
        "class_source": class_source,
        "crs": src.crs.to_string() if src.crs else None,
        "width": src.width,
        "height": src.height,
        "pixel_size": [abs(transform.a), abs(transform.e)],
        "pixel_area": abs(transform.a * transform.e - transform.b * transform.d),
        "area_unit": _area_unit(src.crs)[0],
        "nodata": src.nodatavals[band - 1],
        "reference_geometry": sorted(ref.geometry_kinds),
        "reference_reprojected": ref.reprojected,
    }


def _area_unit(crs):
    """(unit, warning or None): :func:`optsar_plugin.raster_io.area_unit` and what the report says about it."""
    unit = area_unit(crs)
    if crs is None:
        return unit, "The classification has no CRS: areas are in squared map units."
    if crs.is_geographic:
        return unit, (
            "The classification is in a geographic CRS: areas are in square degrees and pixels of different "
            "latitudes have different true areas. Reproject it to an equal-area CRS for area estimates."
        )
    return unit, None


# -- from counts to the result -----------------------------------------------------------------


def _finish(scheme, counts, ref, record: Dict, opts: AssessOptions, notes: List[str], feedback) -> AccuracyResult:
    """Matrix, statistics, warnings (after ``notes``), alerts and the metrics document."""
    map_counts, joint, excl = counts
    codes = _matrix_codes(scheme, map_counts, ref, opts.ignore_values, record["classification"])
    classes = matrix_classes(codes, scheme)
    index = {c: i for i, c in enumerate(codes)}
    cm = np.zeros((len(codes), len(codes)), dtype=np.int64)
    for (mcode, rcode), n in joint.items():
        cm[index[mcode], index[rcode]] += n
    mapped = np.asarray([map_counts.get(c, 0) for c in codes], dtype=np.float64)
    warnings = _reference_warnings(ref) + notes
    warnings += _scheme_warnings(scheme, ref, map_counts, opts.ignore_values) + _exclusion_warnings(excl, opts)
    if cm.sum() == 0:
        raise InputError("No reference pixel falls on a valid (non-nodata, non-ignored) pixel of the classification; "
                         "nothing to assess. " + " ".join(warnings))
    warnings += _absent_warnings(classes, cm, mapped)
    sample = stats.sample_measures(cm, opts.confidence)
    est = stats.stratified_estimates(cm, mapped, opts.confidence,
                                     total_area=float(mapped.sum()) * record["pixel_area"])
    warnings += _estimate_warnings(classes, est)
    alerts = accuracy_alerts(classes, cm, mapped, sample["per_class"])
    from .report import build_metrics

    metrics = build_metrics(
        classes=classes, matrix=cm, mapped_pixels=mapped, sample=sample, estimates=est, inputs=record,
        exclusions=_exclusions_record(excl, ref), warnings=warnings, alerts=alerts,
        caveat=POINT_CAVEAT if set(record["reference_geometry"]) == {"point"} else POLYGON_CAVEAT,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    for message in alerts + warnings:
        feedback.warning(message)
    check_cancel(feedback)
    return AccuracyResult(classes=classes, matrix=cm, metrics=metrics, warnings=warnings, alerts=alerts)


def _matrix_codes(scheme, map_counts, ref, ignore, classification) -> List[int]:
    """The matrix's class codes: mapped, referenced and named ones, minus the ignored."""
    scheme_codes = set(scheme.codes) if scheme is not None else set()
    codes = sorted((set(map_counts) | set(ref.codes) | scheme_codes) - set(ignore))
    if len(codes) > MAX_CLASSES:
        raise InputError(
            f"The classification '{classification}' has {len(codes)} distinct values; a classification has class "
            f"codes (at most {MAX_CLASSES}). Is it a continuous raster?"
        )
    return codes


def matrix_classes(codes: List[int], scheme: Optional[ClassScheme]) -> ClassScheme:
    """The classes of the matrix: named and coloured from ``scheme`` where it has them, else 'class N'."""
    palette = generated_palette(len(codes))
    out = []
    for i, c in enumerate(codes):
        if scheme is not None and c in scheme.codes:
            out.append(scheme.by_code(c))
        else:
            out.append(LandCoverClass(int(c), f"class {c}", palette[i]))
    return ClassScheme(out, source=scheme.source if scheme is not None else "codes", byte_codes=False)


def accuracy_alerts(classes: ClassScheme, cm: np.ndarray, mapped: np.ndarray, per_class: Dict) -> List[str]:
    """What the report says loudly: reference classes never mapped, producer's or user's accuracy below 0.5."""
    alerts = []
    for i, c in enumerate(classes):
        ref_n, pa, ua = int(cm[:, i].sum()), per_class["producers_accuracy"][i], per_class["users_accuracy"][i]
        if ref_n and mapped[i] == 0:
            alerts.append(f"Class '{c.name}' ({c.code}) is in the reference ({ref_n} pixels) but never mapped: "
                          "the classification does not know it or never predicts it.")
            continue
        low = [f"{label} accuracy {v:.2f}" for label, v in (("producer's", pa), ("user's", ua))
               if v is not None and v < ALERT_THRESHOLD]
        if low:
            why = {"producer's": "most of its reference pixels are mapped as other classes",
                   "user's": "most pixels mapped as it are other classes in the reference"}
            alerts.append(f"Class '{c.name}' ({c.code}): {' and '.join(low)}, below {ALERT_THRESHOLD} - "
                          + "; ".join(why[t.split(' accuracy')[0]] for t in low) + ".")
    return alerts


def _reference_warnings(ref) -> List[str]:
    def n(ids, one, many):
        return one if len(ids) == 1 else many

    fixed, dropped = ref.repaired_ids, ref.dropped_invalid_ids
    cases = (
        (ref.outside_ids, "reference feature(s) lie outside the classification and were not used"),
        (fixed, f"invalid geometr{n(fixed, 'y was', 'ies were')} repaired (MakeValid/Buffer(0)) before use"),
        (dropped, f"invalid geometr{n(dropped, 'y', 'ies')} could not be repaired and {n(dropped, 'was', 'were')} "
                  "skipped"),
        (ref.null_class_ids, f"reference feature(s) have no value in '{ref.class_field}' and were skipped"),
        (ref.unlabelled_ids, f"reference feature(s) carry class 255 in '{ref.class_field}', the nodata value (unlabelled), "
                             "and were skipped"),
        (ref.empty_geometry_ids, "reference feature(s) have no geometry and were skipped"),
    )
    return [f"{len(ids)} {text} (feature ids {list_ids(ids)})." for ids, text in cases if ids]


def _scheme_warnings(scheme, ref, map_counts, ignore) -> List[str]:
    if scheme is None:
        return []
    out = []
    unknown_ref = sorted(set(ref.codes) - set(ignore) - set(scheme.codes))
    if unknown_ref:
        out.append(f"Reference class code(s) {', '.join(map(str, unknown_ref))} are not classes of the classification "
                   f"(its classes: {', '.join(str(c) for c in sorted(scheme.codes))}).")
    unknown_map = sorted(set(map_counts) - set(scheme.codes))
    if unknown_map:
        out.append(f"The classification holds value(s) {', '.join(map(str, unknown_map))} that its class list does "
                   "not name.")
    return out


def _exclusion_warnings(excl: Exclusions, opts: AssessOptions) -> List[str]:
    out = []
    if excl.nodata:
        out.append(f"{excl.nodata} reference pixel(s) fall on nodata in the classification and were excluded.")
    if excl.points_nodata:
        out.append(f"{excl.points_nodata} reference point(s) fall on nodata in the classification and were excluded.")
    if excl.ignored or excl.points_ignored:
        out.append(f"{excl.ignored} reference pixel(s) and {excl.points_ignored} point(s) carry an ignored value "
                   f"({', '.join(map(str, opts.ignore_values))}) in the map or the reference and were excluded.")
    if excl.conflict:
        out.append(f"{excl.conflict} pixel(s) where overlapping reference polygons of different classes disagree "
                   "were excluded.")
    return out


def _absent_warnings(classes: ClassScheme, cm: np.ndarray, mapped: np.ndarray) -> List[str]:
    out = []
    absent_map = [c.name for i, c in enumerate(classes) if mapped[i] == 0]
    absent_ref = [c.name for i, c in enumerate(classes) if cm[:, i].sum() == 0]
    if absent_map:
        out.append(f"Class(es) absent from the map: {', '.join(absent_map)} (their user's accuracy is n/a).")
    if absent_ref:
        out.append(f"Class(es) absent from the reference: {', '.join(absent_ref)} (their producer's accuracy is n/a).")
    return out


def _estimate_warnings(classes: ClassScheme, est: Dict) -> List[str]:
    out = []
    if est["unsampled_classes"]:
        names = ", ".join(classes.classes[i].name for i in est["unsampled_classes"])
        frac = est["population_fraction"]
        out.append(
            f"Mapped class(es) {names} have no reference pixel: the area-adjusted estimates describe only the "
            f"part of the map covered by the sampled classes ({100 * frac:.2f} % of the mapped area)."
            if frac is not None else f"Mapped class(es) {names} have no reference pixel."
        )
    if est["single_unit_classes"]:
        names = ", ".join(classes.classes[i].name for i in est["single_unit_classes"])
        out.append(f"Mapped class(es) {names} have a single reference unit: standard errors and confidence "
                   "intervals of the area-adjusted estimates are undefined (n/a).")
    return out


def _exclusions_record(excl: Exclusions, ref) -> Dict:
    return {
        "nodata_pixels": excl.nodata,
        "ignored_pixels": excl.ignored,
        "conflict_pixels": excl.conflict,
        "points_on_nodata": excl.points_nodata,
        "points_ignored": excl.points_ignored,
        "features_total": ref.n_features,
        "features_used": ref.n_used,
        "features_outside": len(ref.outside_ids),
        "features_outside_ids": ref.outside_ids,
        "invalid_repaired_ids": ref.repaired_ids,
        "invalid_dropped_ids": ref.dropped_invalid_ids,
        "null_class_ids": ref.null_class_ids,
        "unlabelled_ids": ref.unlabelled_ids,
        "empty_geometry_ids": ref.empty_geometry_ids,
    }
