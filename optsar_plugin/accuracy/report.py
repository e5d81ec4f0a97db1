"""Accuracy reports: one metrics document, written as JSON, CSV and a self-contained HTML page.

:func:`build_metrics` assembles the JSON document; the CSV and the HTML page are rendered
from that same document, so the three carry the same numbers.  Undefined values are
``null`` in JSON and ``n/a`` in CSV and HTML.

CSV layout: sections separated by an empty line, each starting with a one-cell title row
(``# confusion matrix (pixel counts) ...``), then a header row and data rows - the
matrix first (rows = map, columns = reference, with totals), then the matrix in area, the
per-class table, the summary, and the area-adjusted table.  Spreadsheets open it as is;
:func:`read_csv_sections` reads it back.

The HTML page (:mod:`.html`) is one file that opens offline: inline CSS, the matrix as an
inline SVG heatmap (no plotting library, no external resource), the per-class table, the
area table with confidence intervals, alerts, warnings and the sampling caveat.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Dict, List

import numpy as np

FORMAT_VERSION = 1
NA = "n/a"


def _f(v):
    """JSON-friendly float (None stays None)."""
    if v is None:
        return None
    return float(v)


def _pair(v):
    return None if v is None else [float(v[0]), float(v[1])]


def _per_class_rows(classes, cm: np.ndarray, pc: Dict) -> List[Dict]:
    return [
        {
            "code": c.code,
            "name": c.name,
            "reference_pixels": int(cm[:, i].sum()),
            "map_pixels_on_reference": int(cm[i, :].sum()),
            "correct_pixels": int(cm[i, i]),
            "producers_accuracy": _f(pc["producers_accuracy"][i]),
            "users_accuracy": _f(pc["users_accuracy"][i]),
            "f1": _f(pc["f1"][i]),
            "iou": _f(pc["iou"][i]),
        }
        for i, c in enumerate(classes)
    ]


def _area_rows(classes, mapped_pixels, pixel_area: float, est: Dict) -> List[Dict]:
    rows = []
    for i, c in enumerate(classes):
        row = {"code": c.code, "name": c.name, "mapped_pixels": int(mapped_pixels[i]),
               "mapped_area": float(mapped_pixels[i]) * pixel_area, "weight": _f(est["weights"][i])}
        for key in ("users_accuracy", "producers_accuracy"):
            row.update({key: _f(est[key][i]), f"{key}_se": _f(est[f"{key}_se"][i]),
                        f"{key}_ci": _pair(est[f"{key}_ci"][i])})
        row.update(area_proportion=_f(est["area_proportion"][i]), area_proportion_se=_f(est["area_proportion_se"][i]),
                   area=_f(est["area"][i]), area_se=_f(est["area_se"][i]), area_ci=_pair(est["area_ci"][i]))
        rows.append(row)
    return rows


def build_metrics(*, classes, matrix, mapped_pixels, sample, estimates, inputs, exclusions, warnings, caveat, created,
                  alerts=()) -> Dict:
    """The JSON document of an assessment; ``classes`` is a :class:`~optsar_plugin.classes.ClassScheme`.

    Keys: ``format_version``, ``created``, ``inputs``, ``classes`` ([{code, name, color}]),
    ``confusion_matrix`` (rows = map, columns = reference; counts and area), ``summary``
    (sample-count measures), ``per_class``, ``area_adjusted`` (Olofsson et al. 2014),
    ``exclusions``, ``alerts`` (what the report says loudly) and ``warnings``.
    """
    cm = np.asarray(matrix)
    pixel_area = float(inputs["pixel_area"])
    est = estimates
    return {
        "format_version": FORMAT_VERSION,
        "created": created,
        "inputs": inputs,
        "classes": classes.to_list(),
        "confusion_matrix": {
            "rows": "map",
            "columns": "reference",
            "codes": classes.codes,
            "counts": cm.astype(int).tolist(),
            "area": (cm.astype(np.float64) * pixel_area).tolist(),
            "area_unit": inputs["area_unit"],
        },
        "summary": {
            "n_pixels": int(sample["n"]),
            "overall_accuracy": _f(sample["overall_accuracy"]),
            "kappa": _f(sample["kappa"]),
            "kappa_variance": _f(sample["kappa_variance"]),
            "kappa_se": _f(sample["kappa_se"]),
            "kappa_ci": _pair(sample["kappa_ci"]),
            "miou": _f(sample["miou"]),
            "macro_f1": _f(sample["macro_f1"]),
        },
        "per_class": _per_class_rows(classes, cm, sample["per_class"]),
        "area_adjusted": {
            "method": "Olofsson et al. (2014) stratified estimators, map classes as strata",
            "assumption": caveat,
            "confidence": float(est["confidence"]),
            "z": float(est["z"]),
            "overall_accuracy": _f(est["overall_accuracy"]),
            "overall_accuracy_se": _f(est["overall_accuracy_se"]),
            "overall_accuracy_ci": _pair(est["overall_accuracy_ci"]),
            "population_area": _f(est["population_area"]),
            "population_fraction": _f(est["population_fraction"]),
            "area_unit": inputs["area_unit"],
            "proportions": est["proportions"],
            "classes": _area_rows(classes, mapped_pixels, pixel_area, est),
        },
        "exclusions": exclusions,
        "alerts": list(alerts),
        "warnings": list(warnings),
    }


def render(metrics: Dict, kinds) -> Dict[str, str]:
    """The texts of the requested outputs: ``metrics`` (JSON), ``matrix`` (CSV), ``report`` (HTML)."""
    from .html import to_html

    renderers = {"metrics": to_json, "matrix": to_csv, "report": to_html}
    return {kind: renderers[kind](metrics) for kind in kinds}


def to_json(metrics: Dict) -> str:
    return json.dumps(metrics, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------
def _c(v, digits: int = 12):
    """A CSV cell: integers as they are, floats to ``digits`` significant digits, None as n/a."""
    if v is None:
        return NA
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return format(float(v), f".{digits}g")


def class_label(c) -> str:
    """A class as the tables show it: "code name", or the code alone for unnamed classes."""
    return f"{c['code']} {c['name']}" if c["name"] != f"class {c['code']}" else str(c["code"])


def to_csv(metrics: Dict) -> str:
    """The CSV (see the module docstring): matrix in pixels and area, per-class table, summary, area table."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    labels = [class_label(c) for c in metrics["classes"]]
    k = len(labels)
    m = metrics["confusion_matrix"]
    unit = m["area_unit"]
    counts = np.asarray(m["counts"], dtype=np.int64).reshape(k, k)
    _csv_matrix(w, "pixel counts", labels, counts, int)
    _csv_matrix(w, f"area, {unit}", labels, np.asarray(m["area"], dtype=np.float64).reshape(k, k), _c)
    w.writerow(["# per-class accuracy (sample counts)"])
    cols = ["reference_pixels", "map_pixels_on_reference", "correct_pixels", "producers_accuracy", "users_accuracy",
            "f1", "iou"]
    w.writerow(["code", "name", *cols])
    for row in metrics["per_class"]:
        w.writerow([row["code"], row["name"], *[_c(row[c]) for c in cols]])
    w.writerow([])
    _csv_summary(w, metrics["summary"], metrics["area_adjusted"])
    _csv_area(w, metrics["area_adjusted"], unit)
    return buf.getvalue()


def _csv_matrix(w, what: str, labels: List[str], m: np.ndarray, cell) -> None:
    w.writerow([f"# confusion matrix ({what}; rows = map, columns = reference)"])
    w.writerow(["map \\ reference", *labels, "total"])
    for i, lab in enumerate(labels):
        w.writerow([lab, *[cell(v) for v in m[i]], cell(m[i].sum())])
    w.writerow(["total", *[cell(v) for v in m.sum(axis=0)], cell(m.sum())])
    w.writerow([])


def _csv_summary(w, s: Dict, a: Dict) -> None:
    w.writerow(["# summary"])
    w.writerow(["measure", "value"])
    for key in ("n_pixels", "overall_accuracy", "kappa", "kappa_variance", "kappa_se", "miou", "macro_f1"):
        w.writerow([key, _c(s[key])])
    kci = s["kappa_ci"] or [None, None]
    oci = a["overall_accuracy_ci"] or [None, None]
    for key, value in (("kappa_ci_low", kci[0]), ("kappa_ci_high", kci[1]),
                       ("area_adjusted_overall_accuracy", a["overall_accuracy"]),
                       ("area_adjusted_overall_accuracy_se", a["overall_accuracy_se"]),
                       ("area_adjusted_overall_accuracy_ci_low", oci[0]),
                       ("area_adjusted_overall_accuracy_ci_high", oci[1]),
                       ("confidence", a["confidence"]), ("population_fraction", a["population_fraction"])):
        w.writerow([key, _c(value)])
    w.writerow([])


AREA_COLUMNS = ("mapped_pixels", "mapped_area", "weight", "users_accuracy", "users_accuracy_se", "users_accuracy_ci",
                "producers_accuracy", "producers_accuracy_se", "producers_accuracy_ci", "area", "area_se", "area_ci")


def _csv_area(w, a: Dict, unit: str) -> None:
    w.writerow([f"# area-adjusted estimates (Olofsson et al. 2014; areas in {unit})"])
    header = []
    for k in AREA_COLUMNS:
        header += [f"{k}_low", f"{k}_high"] if k.endswith("_ci") else [k]
    w.writerow(["code", "name", *header])
    for row in a["classes"]:
        vals = []
        for k in AREA_COLUMNS:
            vals += [_c(v) for v in (row[k] or [None, None])] if k.endswith("_ci") else [_c(row[k])]
        w.writerow([row["code"], row["name"], *vals])


def read_csv_sections(text: str) -> Dict[str, List[List[str]]]:
    """Parse :func:`to_csv` output back into ``{section title: rows (header first)}``."""
    out: Dict[str, List[List[str]]] = {}
    current = None
    for row in csv.reader(io.StringIO(text)):
        if not row:
            current = None
            continue
        if len(row) == 1 and row[0].startswith("# "):
            current = row[0][2:]
            out[current] = []
            continue
        if current is not None:
            out[current].append(row)
    return out
