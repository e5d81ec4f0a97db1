"""Accuracy reports: one metrics document, written as JSON, CSV and a self-contained HTML page.

:func:`build_metrics` assembles the JSON document; the CSV and the HTML page are rendered
from that same document, so the three carry the same numbers.  Undefined values are
``null`` in JSON and ``n/a`` in CSV and HTML.

CSV layout: sections separated by an empty line, each starting with a one-cell title row
(``# confusion matrix (pixel counts) ...``), then a header row and data rows - the
matrix first (rows = map, columns = reference, with totals), then the matrix in area, the
per-class table, the summary, and the area-adjusted table.  Spreadsheets open it as is;
:func:`read_csv_sections` reads it back.

The HTML page is one file that opens offline: inline CSS, the matrix as an inline SVG
heatmap (no plotting library, no external resource), the per-class table, the area table
with confidence intervals, warnings and the sampling caveat.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..fileio import publish, temp_path

FORMAT_VERSION = 1
NA = "n/a"


def _f(v):
    """JSON-friendly float (None stays None)."""
    if v is None:
        return None
    return float(v)


def _pair(v):
    return None if v is None else [float(v[0]), float(v[1])]


def build_metrics(*, classes, matrix, mapped_pixels, sample, estimates, inputs, exclusions, warnings, caveat, created) -> Dict:
    """The JSON document of an assessment (see the module docstring of :mod:`.assess`)."""
    cm = np.asarray(matrix)
    pixel_area = float(inputs["pixel_area"])
    pc = sample["per_class"]
    per_class = []
    for i, c in enumerate(classes):
        per_class.append(
            {
                "code": c["code"],
                "name": c["name"],
                "reference_pixels": int(cm[:, i].sum()),
                "map_pixels_on_reference": int(cm[i, :].sum()),
                "correct_pixels": int(cm[i, i]),
                "producers_accuracy": _f(pc["producers_accuracy"][i]),
                "users_accuracy": _f(pc["users_accuracy"][i]),
                "f1": _f(pc["f1"][i]),
                "iou": _f(pc["iou"][i]),
            }
        )
    est = estimates
    area_classes = []
    for i, c in enumerate(classes):
        area_classes.append(
            {
                "code": c["code"],
                "name": c["name"],
                "mapped_pixels": int(mapped_pixels[i]),
                "mapped_area": float(mapped_pixels[i]) * pixel_area,
                "weight": _f(est["weights"][i]),
                "users_accuracy": _f(est["users_accuracy"][i]),
                "users_accuracy_se": _f(est["users_accuracy_se"][i]),
                "users_accuracy_ci": _pair(est["users_accuracy_ci"][i]),
                "producers_accuracy": _f(est["producers_accuracy"][i]),
                "producers_accuracy_se": _f(est["producers_accuracy_se"][i]),
                "producers_accuracy_ci": _pair(est["producers_accuracy_ci"][i]),
                "area_proportion": _f(est["area_proportion"][i]),
                "area_proportion_se": _f(est["area_proportion_se"][i]),
                "area": _f(est["area"][i]),
                "area_se": _f(est["area_se"][i]),
                "area_ci": _pair(est["area_ci"][i]),
            }
        )
    return {
        "format_version": FORMAT_VERSION,
        "created": created,
        "inputs": inputs,
        "classes": classes,
        "confusion_matrix": {
            "rows": "map",
            "columns": "reference",
            "codes": [c["code"] for c in classes],
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
        "per_class": per_class,
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
            "classes": area_classes,
        },
        "exclusions": exclusions,
        "warnings": list(warnings),
    }


# --------------------------------------------------------------------------------------
# writing, atomically
# --------------------------------------------------------------------------------------
def _atomic_text(path: Path, text: str) -> str:
    """Write to a temporary file in the target folder; the caller renames it."""
    tmp = temp_path(path)
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return tmp


def write_outputs(metrics: Dict, report=None, matrix=None, metrics_path=None) -> Dict[str, str]:
    """Write the requested outputs; all are renamed into place only when all were rendered."""
    jobs = []
    if metrics_path:
        jobs.append(("metrics", Path(metrics_path), to_json(metrics)))
    if matrix:
        jobs.append(("matrix", Path(matrix), to_csv(metrics)))
    if report:
        jobs.append(("report", Path(report), to_html(metrics)))
    temps = []
    try:
        for _, path, text in jobs:
            temps.append(_atomic_text(path, text))
        for (_name, path, _), tmp in zip(jobs, temps):
            publish(tmp, path)
    except BaseException:
        for tmp in temps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise
    return {name: str(path) for name, path, _ in jobs}


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


def _label(c) -> str:
    return f"{c['code']} {c['name']}" if c["name"] != f"class {c['code']}" else str(c["code"])


def to_csv(metrics: Dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    classes = metrics["classes"]
    labels = [_label(c) for c in classes]
    cm = np.asarray(metrics["confusion_matrix"]["counts"], dtype=np.int64).reshape(len(classes), len(classes))
    unit = metrics["confusion_matrix"]["area_unit"]

    w.writerow(["# confusion matrix (pixel counts; rows = map, columns = reference)"])
    w.writerow(["map \\ reference", *labels, "total"])
    for i, lab in enumerate(labels):
        w.writerow([lab, *[int(v) for v in cm[i]], int(cm[i].sum())])
    w.writerow(["total", *[int(v) for v in cm.sum(axis=0)], int(cm.sum())])
    w.writerow([])

    area = np.asarray(metrics["confusion_matrix"]["area"], dtype=np.float64).reshape(cm.shape)
    w.writerow([f"# confusion matrix (area, {unit}; rows = map, columns = reference)"])
    w.writerow(["map \\ reference", *labels, "total"])
    for i, lab in enumerate(labels):
        w.writerow([lab, *[_c(v) for v in area[i]], _c(area[i].sum())])
    w.writerow(["total", *[_c(v) for v in area.sum(axis=0)], _c(area.sum())])
    w.writerow([])

    w.writerow(["# per-class accuracy (sample counts)"])
    cols = ["reference_pixels", "map_pixels_on_reference", "correct_pixels", "producers_accuracy", "users_accuracy", "f1", "iou"]
    w.writerow(["code", "name", *cols])
    for row in metrics["per_class"]:
        w.writerow([row["code"], row["name"], *[_c(row[k]) for k in cols]])
    w.writerow([])

    w.writerow(["# summary"])
    w.writerow(["measure", "value"])
    s = metrics["summary"]
    for key in ("n_pixels", "overall_accuracy", "kappa", "kappa_variance", "kappa_se", "miou", "macro_f1"):
        w.writerow([key, _c(s[key])])
    kci = s["kappa_ci"] or [None, None]
    w.writerow(["kappa_ci_low", _c(kci[0])])
    w.writerow(["kappa_ci_high", _c(kci[1])])
    a = metrics["area_adjusted"]
    oci = a["overall_accuracy_ci"] or [None, None]
    w.writerow(["area_adjusted_overall_accuracy", _c(a["overall_accuracy"])])
    w.writerow(["area_adjusted_overall_accuracy_se", _c(a["overall_accuracy_se"])])
    w.writerow(["area_adjusted_overall_accuracy_ci_low", _c(oci[0])])
    w.writerow(["area_adjusted_overall_accuracy_ci_high", _c(oci[1])])
    w.writerow(["confidence", _c(a["confidence"])])
    w.writerow(["population_fraction", _c(a["population_fraction"])])
    w.writerow([])

    w.writerow([f"# area-adjusted estimates (Olofsson et al. 2014; areas in {unit})"])
    keys = [
        "mapped_pixels", "mapped_area", "weight",
        "users_accuracy", "users_accuracy_se", "users_accuracy_ci",
        "producers_accuracy", "producers_accuracy_se", "producers_accuracy_ci",
        "area", "area_se", "area_ci",
    ]
    header = []
    for k in keys:
        header += [f"{k}_low", f"{k}_high"] if k.endswith("_ci") else [k]
    w.writerow(["code", "name", *header])
    for row in a["classes"]:
        vals = []
        for k in keys:
            if k.endswith("_ci"):
                ci = row[k] or [None, None]
                vals += [_c(ci[0]), _c(ci[1])]
            else:
                vals.append(_c(row[k]))
        w.writerow([row["code"], row["name"], *vals])
    return buf.getvalue()


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


# --------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------
def _h(v, digits: int = 3, pct: bool = False) -> str:
    if v is None:
        return NA
    if pct:
        return f"{100 * float(v):.{max(0, digits - 2)}f} %"
    return f"{float(v):.{digits}f}"


def _num(v, digits: int = 0) -> str:
    if v is None:
        return NA
    return f"{float(v):,.{digits}f}".replace(",", "\u202f")


def _mix(c1, c2, t):
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c1, c2))


def heatmap_svg(cm: np.ndarray, labels: Sequence[str], cell: int = 44) -> str:
    """The confusion matrix as an inline SVG heatmap.

    Cell colour is the share of the map row's reference pixels (the row-normalised matrix,
    white = 0 to dark blue = 1), so classes of very different sizes stay readable; each cell
    shows the pixel count and, on hover, the share.  Rows are map classes, columns reference
    classes; the diagonal is outlined in red.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    longest = max([len(s) for s in labels] + [1])
    label_w = longest * 7 + 12
    left = label_w + 22  # room for the vertical 'map' title
    top = int(longest * 7 * 0.87) + 34  # rotated (-60°) column labels + the 'reference' title
    width = max(left + k * cell + int(longest * 7 * 0.5) + 10, 260)  # the last rotated label leans right
    height = top + k * cell + 10
    rows = cm.sum(axis=1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Confusion matrix heatmap" '
        'font-family="sans-serif" font-size="11">',
        f'<text x="{left + k * cell / 2}" y="14" text-anchor="middle" font-weight="bold">reference</text>',
        f'<text x="12" y="{top + k * cell / 2}" text-anchor="middle" font-weight="bold" '
        f'transform="rotate(-90 12 {top + k * cell / 2})">map</text>',
    ]
    for j, lab in enumerate(labels):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 6}" transform="rotate(-60 {x:.1f} {top - 6})">{html.escape(lab)}</text>')
    for i, lab in enumerate(labels):
        y = top + i * cell + cell / 2 + 4
        parts.append(f'<text x="{left - 6}" y="{y:.1f}" text-anchor="end">{html.escape(lab)}</text>')
        for j in range(k):
            share = cm[i, j] / rows[i] if rows[i] > 0 else 0.0
            r, g, b = _mix((255, 255, 255), (8, 48, 107), share)
            fg = "#fff" if share > 0.5 else "#000"
            x0, y0 = left + j * cell, top + i * cell
            parts.append(
                f'<rect x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="rgb({r},{g},{b})" stroke="#ccc">'
                f"<title>map {html.escape(labels[i])} / reference {html.escape(labels[j])}: {int(cm[i, j])} px "
                f"({100 * share:.1f} % of the row)</title></rect>"
            )
            text = f"{int(cm[i, j])}" if cm[i, j] < 1e5 else f"{cm[i, j]:.2g}"
            parts.append(f'<text x="{x0 + cell / 2}" y="{y0 + cell / 2 + 4}" text-anchor="middle" fill="{fg}">{text}</text>')
    for i in range(k):  # the diagonal on top of all cells
        parts.append(
            f'<rect x="{left + i * cell + 1}" y="{top + i * cell + 1}" width="{cell - 2}" height="{cell - 2}" '
            'fill="none" stroke="#d62728" stroke-width="2"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
.note{background:#eef5ff;border-left:4px solid #3a7bd5;padding:.5em 1em}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #888;vertical-align:middle;margin-right:.3em}
.kv td:first-child{text-align:left;font-weight:600}
""".strip()


def to_html(metrics: Dict) -> str:
    m = metrics
    classes = m["classes"]
    labels = [_label(c) for c in classes]
    cm = np.asarray(m["confusion_matrix"]["counts"], dtype=np.int64).reshape(len(classes), len(classes))
    s = m["summary"]
    a = m["area_adjusted"]
    inp = m["inputs"]
    unit = a["area_unit"]
    conf = int(round(100 * a["confidence"]))
    e = html.escape
    out: List[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Accuracy assessment — {e(Path(str(inp['classification'])).name)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Accuracy assessment of {e(Path(str(inp['classification'])).name)}</h1>",
        f"<p>Created {e(m['created'])} by OptSAR Fusion.</p>",
        "<h2>Inputs</h2><table class='kv'>",
    ]
    rows = [
        ("Classification", f"{inp['classification']} (band {inp['band']})"),
        ("Grid", f"{inp['width']} × {inp['height']} pixels of {inp['pixel_size'][0]:g} × {inp['pixel_size'][1]:g}, CRS {inp['crs']}"),
        ("Reference", f"{inp['reference']} (layer {inp['reference_layer']}, field {inp['class_field']}; "
                      f"{', '.join(inp['reference_geometry']) or 'no'} geometry"
                      f"{'; reprojected to the map CRS' if inp['reference_reprojected'] else ''})"),
        ("Class names from", inp["class_source"]),
        ("Polygon burning", "all touched pixels" if inp["all_touched"] else "pixels whose centre is inside"),
        ("Ignored values", ", ".join(map(str, inp["ignore_values"])) or "none"),
        ("Nodata", str(inp["nodata"])),
        ("Confidence level", f"{conf} %"),
    ]
    out += [f"<tr><td>{e(k)}</td><td class='l'>{e(str(v))}</td></tr>" for k, v in rows]
    out.append("</table>")

    if m["warnings"]:
        out.append("<h2>Warnings</h2><div class='warn'><ul>")
        out += [f"<li>{e(w)}</li>" for w in m["warnings"]]
        out.append("</ul></div>")

    out.append("<h2>Summary (sample counts)</h2><table class='kv'>")
    kci = s["kappa_ci"]
    out += [
        f"<tr><td>Reference pixels</td><td>{_num(s['n_pixels'])}</td></tr>",
        f"<tr><td>Overall accuracy</td><td>{_h(s['overall_accuracy'], 4)}</td></tr>",
        f"<tr><td>Cohen's kappa</td><td>{_h(s['kappa'], 4)}"
        + (f" ({conf} % CI {kci[0]:.4f} – {kci[1]:.4f}; variance {s['kappa_variance']:.3g})" if kci else "")
        + "</td></tr>",
        f"<tr><td>Mean IoU (mIoU)</td><td>{_h(s['miou'], 4)}</td></tr>",
        f"<tr><td>Macro F1</td><td>{_h(s['macro_f1'], 4)}</td></tr>",
        "</table>",
    ]

    out.append("<h2>Confusion matrix</h2>")
    out.append("<p>Rows are map classes, columns reference classes; colour is the share of the map row, numbers are pixel counts.</p>")
    out.append(heatmap_svg(cm, labels))
    out.append("<table><tr><th class='l'>map \\ reference</th>" + "".join(f"<th>{e(lab)}</th>" for lab in labels) + "<th>total</th></tr>")
    for i, lab in enumerate(labels):
        out.append(
            f"<tr><th class='l'>{e(lab)}</th>" + "".join(f"<td>{int(v)}</td>" for v in cm[i]) + f"<td>{int(cm[i].sum())}</td></tr>"
        )
    out.append("<tr><th class='l'>total</th>" + "".join(f"<td>{int(v)}</td>" for v in cm.sum(axis=0)) + f"<td>{int(cm.sum())}</td></tr></table>")

    out.append("<h2>Per-class accuracy (sample counts)</h2><table><tr><th class='l'>class</th><th>reference px</th>"
               "<th>producer's accuracy</th><th>user's accuracy</th><th>F1</th><th>IoU</th></tr>")
    for c, row in zip(classes, m["per_class"]):
        out.append(
            f"<tr><td class='l'><span class='swatch' style='background:{e(c.get('color') or '#FFFFFF')}'></span>{e(_label(c))}</td>"
            f"<td>{_num(row['reference_pixels'])}</td><td>{_h(row['producers_accuracy'])}</td><td>{_h(row['users_accuracy'])}</td>"
            f"<td>{_h(row['f1'])}</td><td>{_h(row['iou'])}</td></tr>"
        )
    out.append("</table>")

    out.append("<h2>Area-adjusted accuracy and area (Olofsson et al. 2014)</h2>")
    out.append(f"<div class='note'><p>{e(a['assumption'])}</p></div>")
    out.append(
        f"<p>Overall accuracy {_h(a['overall_accuracy'], 4)}"
        + (f" ± {_h(a['overall_accuracy_se'] * a['z'], 4)} ({conf} % CI)" if a["overall_accuracy_se"] is not None else " (CI n/a)")
        + (f"; population: {100 * a['population_fraction']:.2f} % of the mapped area." if a["population_fraction"] is not None else ".")
        + "</p>"
    )
    out.append(
        f"<table><tr><th class='l'>class</th><th>mapped area ({e(unit)})</th><th>W<sub>i</sub></th>"
        f"<th>user's acc. ± {conf} % CI</th><th>producer's acc. ± {conf} % CI</th>"
        f"<th>estimated area ({e(unit)})</th><th>± {conf} % CI</th>"
        + ("<th>estimated area (ha)</th><th>± CI (ha)</th>" if unit == "m²" else "")
        + "</tr>"
    )
    for c, row in zip(classes, a["classes"]):
        def pm(est, se):
            return NA if est is None else (_h(est) + (f" ± {_h(se * a['z'])}" if se is not None else " ± n/a"))

        hw = None if row["area_se"] is None else row["area_se"] * a["z"]
        cells = [
            f"<td class='l'>{e(_label(c))}</td>",
            f"<td>{_num(row['mapped_area'])}</td>",
            f"<td>{_h(row['weight'], 4)}</td>",
            f"<td>{pm(row['users_accuracy'], row['users_accuracy_se'])}</td>",
            f"<td>{pm(row['producers_accuracy'], row['producers_accuracy_se'])}</td>",
            f"<td>{_num(row['area'])}</td>",
            f"<td>{_num(hw)}</td>",
        ]
        if unit == "m²":
            cells += [
                f"<td>{_num(None if row['area'] is None else row['area'] / 1e4, 1)}</td>",
                f"<td>{_num(None if hw is None else hw / 1e4, 1)}</td>",
            ]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")

    x = m["exclusions"]
    out.append("<h2>Reference data used</h2><table class='kv'>")
    for k, v in (
        ("Features read", x["features_total"]),
        ("Features used", x["features_used"]),
        ("Features outside the classification", x["features_outside"]),
        ("Invalid geometries repaired", len(x["invalid_repaired_ids"])),
        ("Invalid geometries skipped", len(x["invalid_dropped_ids"])),
        ("Features without class", len(x["null_class_ids"])),
        ("Reference pixels on nodata (excluded)", x["nodata_pixels"]),
        ("Reference pixels with ignored values (excluded)", x["ignored_pixels"]),
        ("Pixels of conflicting overlapping polygons (excluded)", x["conflict_pixels"]),
        ("Points on nodata (excluded)", x["points_on_nodata"]),
    ):
        out.append(f"<tr><td>{e(k)}</td><td>{_num(v)}</td></tr>")
    out.append("</table>")
    out.append(
        "<h2>Definitions</h2><p class='note'>Producer's accuracy = correct / reference total of the class (omission = 1 − PA); "
        "user's accuracy = correct / map total of the class on the reference (commission = 1 − UA); "
        "F1 = 2·correct / (map + reference totals); IoU = correct / (map + reference − correct); mIoU and macro F1 average the classes "
        "where the measure is defined. Kappa variance: delta method (Congalton &amp; Green 2009). Area-adjusted estimators, standard "
        "errors and intervals: Olofsson et al. (2014), Remote Sensing of Environment 148:42–57, section 4. "
        "n/a marks a value that is undefined (a class absent from the map or from the reference, or a stratum with one unit).</p>"
    )
    out.append("</body></html>\n")
    return "\n".join(out)
