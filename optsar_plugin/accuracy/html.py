"""The accuracy report as one self-contained HTML page, rendered from the metrics document.

Sections, in order: title, alerts (said loudly: reference classes the map never shows,
producer's or user's accuracy below 0.5), inputs, warnings, summary, the confusion matrix
as an inline SVG heatmap and as a table, per-class accuracy, the area-adjusted estimates
with their caveat, the reference data used, definitions.  No script, no external resource.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from .report import NA, class_label

FONT_PX = 12  # every text of the heatmap; readable when the page is printed or shown on a projector
CHAR_PX = 7.2  # the average advance of a sans-serif character at FONT_PX (to size the SVG)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.alert{background:#fdecea;border-left:6px solid #d62728;padding:.2em 1em}
.alert h2{border:none;color:#b71c1c;margin-top:.6em}
.warn{background:#fff4e5;border-left:4px solid #f0a020;padding:.5em 1em}
.note{background:#eef5ff;border-left:4px solid #3a7bd5;padding:.5em 1em}
.swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #888;vertical-align:middle;margin-right:.3em}
.kv td:first-child{text-align:left;font-weight:600}
""".strip()


def _h(v, digits: int = 3) -> str:
    return NA if v is None else f"{float(v):.{digits}f}"


def _num(v, digits: int = 0) -> str:
    if v is None:
        return NA
    return f"{float(v):,.{digits}f}".replace(",", "\u202f")


def _mix(c1, c2, t):
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(c1, c2))


# -- the heatmap ------------------------------------------------------------------------------


def heatmap_svg(cm: np.ndarray, labels: Sequence[str], cell: int = 44) -> str:
    """The confusion matrix as an inline SVG heatmap.

    Cell colour is the share of the map row's reference pixels (the row-normalised matrix,
    white = 0 to dark blue = 1), so classes of very different sizes stay readable; each cell
    shows the pixel count and, on hover, the share.  Rows are map classes, columns reference
    classes; the diagonal is outlined in red.  The axis titles sit in the corner above the
    row labels ("reference →" over "map ↓"), right beside the first column label and right
    above the first row, so there is no empty band between a title and its labels.
    """
    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    text = [f"{int(v)}" if v < 1e5 else f"{v:.2g}" for v in cm.ravel()]
    cell = max(cell, int(max(len(t) for t in text) * CHAR_PX) + 10) if k else cell
    longest = max([len(s) for s in labels] + [1])
    left = int(max(longest * CHAR_PX, len("reference →") * CHAR_PX)) + 12
    rise = longest * CHAR_PX * 0.87  # height of a column label rotated by -60 degrees
    top = int(max(rise, 2 * FONT_PX + 8)) + 10
    width = left + k * cell + int(longest * CHAR_PX * 0.5) + 10  # the last rotated label leans right
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{top + k * cell + 4}" '
        f'viewBox="0 0 {width} {top + k * cell + 4}" role="img" aria-label="Confusion matrix heatmap" '
        f'font-family="sans-serif" font-size="{FONT_PX}">',
        f'<text x="{left - 8}" y="{top - FONT_PX - 10}" text-anchor="end" font-weight="bold">reference →</text>',
        f'<text x="{left - 8}" y="{top - 6}" text-anchor="end" font-weight="bold">map ↓</text>',
    ]
    for j, lab in enumerate(labels):
        x = left + j * cell + cell / 2
        parts.append(f'<text x="{x:.1f}" y="{top - 6}" transform="rotate(-60 {x:.1f} {top - 6})">{html.escape(lab)}</text>')
    rows = cm.sum(axis=1)
    for i, lab in enumerate(labels):
        parts.append(f'<text x="{left - 8}" y="{top + i * cell + cell / 2 + FONT_PX / 3:.1f}" text-anchor="end">'
                     f"{html.escape(lab)}</text>")
        for j in range(k):
            share = cm[i, j] / rows[i] if rows[i] > 0 else 0.0
            parts.append(_heat_cell(left + j * cell, top + i * cell, cell, share, text[i * k + j], labels[i], labels[j],
                                    int(cm[i, j])))
    for i in range(k):  # the diagonal on top of all cells
        parts.append(f'<rect x="{left + i * cell + 1}" y="{top + i * cell + 1}" width="{cell - 2}" height="{cell - 2}" '
                     'fill="none" stroke="#d62728" stroke-width="2"/>')
    parts.append("</svg>")
    return "".join(parts)


def _heat_cell(x0: int, y0: int, cell: int, share: float, text: str, row: str, col: str, count: int) -> str:
    r, g, b = _mix((255, 255, 255), (8, 48, 107), share)
    fg = "#fff" if share > 0.5 else "#000"
    e = html.escape
    return (f'<rect x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="rgb({r},{g},{b})" stroke="#ccc">'
            f"<title>map {e(row)} / reference {e(col)}: {count} px ({100 * share:.1f} % of the row)</title></rect>"
            f'<text x="{x0 + cell / 2}" y="{y0 + cell / 2 + FONT_PX / 3:.1f}" text-anchor="middle" fill="{fg}">'
            f"{text}</text>")


# -- the page --------------------------------------------------------------------------------


def to_html(metrics: Dict) -> str:
    """The whole report page."""
    name = html.escape(Path(str(metrics["inputs"]["classification"])).name)
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Accuracy assessment — {name}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Accuracy assessment of {name}</h1>",
        f"<p>Created {html.escape(metrics['created'])} by OptSAR Fusion.</p>",
    ]
    sections = (_alerts, _inputs, _warnings, _summary, _matrix, _per_class, _area, _reference_used, _definitions)
    return "\n".join(head + [line for section in sections for line in section(metrics)] + ["</body></html>\n"])


def _alerts(m: Dict) -> List[str]:
    if not m.get("alerts"):
        return []
    return (["<div class='alert'><h2>Attention</h2><ul>"] + [f"<li>{html.escape(a)}</li>" for a in m["alerts"]]
            + ["</ul></div>"])


def _inputs(m: Dict) -> List[str]:
    inp = m["inputs"]
    rows = [
        ("Classification", f"{inp['classification']} (band {inp['band']})"),
        ("Grid", f"{inp['width']} × {inp['height']} pixels of {inp['pixel_size'][0]:g} × {inp['pixel_size'][1]:g}, "
                 f"CRS {inp['crs']}"),
        ("Reference", f"{inp['reference']} (layer {inp['reference_layer']}, field {inp['class_field']}; "
                      f"{', '.join(inp['reference_geometry']) or 'no'} geometry"
                      f"{'; reprojected to the map CRS' if inp['reference_reprojected'] else ''})"),
        ("Class names from", inp["class_source"]),
        ("Polygon burning", "all touched pixels" if inp["all_touched"] else "pixels whose centre is inside"),
        ("Ignored values", ", ".join(map(str, inp["ignore_values"])) or "none"),
        ("Nodata", str(inp["nodata"])),
        ("Confidence level", f"{int(round(100 * m['area_adjusted']['confidence']))} %"),
    ]
    return (["<h2>Inputs</h2><table class='kv'>"]
            + [f"<tr><td>{html.escape(k)}</td><td class='l'>{html.escape(str(v))}</td></tr>" for k, v in rows]
            + ["</table>"])


def _warnings(m: Dict) -> List[str]:
    if not m["warnings"]:
        return []
    return (["<h2>Warnings</h2><div class='warn'><ul>"] + [f"<li>{html.escape(w)}</li>" for w in m["warnings"]]
            + ["</ul></div>"])


def _summary(m: Dict) -> List[str]:
    s = m["summary"]
    kci = s["kappa_ci"]
    conf = int(round(100 * m["area_adjusted"]["confidence"]))
    return [
        "<h2>Summary (sample counts)</h2><table class='kv'>",
        f"<tr><td>Reference pixels</td><td>{_num(s['n_pixels'])}</td></tr>",
        f"<tr><td>Overall accuracy</td><td>{_h(s['overall_accuracy'], 4)}</td></tr>",
        f"<tr><td>Cohen's kappa</td><td>{_h(s['kappa'], 4)}"
        + (f" ({conf} % CI {kci[0]:.4f} – {kci[1]:.4f}; variance {s['kappa_variance']:.3g})" if kci else "")
        + "</td></tr>",
        f"<tr><td>Mean IoU (mIoU)</td><td>{_h(s['miou'], 4)}</td></tr>",
        f"<tr><td>Macro F1</td><td>{_h(s['macro_f1'], 4)}</td></tr>",
        "</table>",
    ]


def _matrix(m: Dict) -> List[str]:
    labels = [class_label(c) for c in m["classes"]]
    cm = np.asarray(m["confusion_matrix"]["counts"], dtype=np.int64).reshape(len(labels), len(labels))
    e = html.escape
    out = [
        "<h2>Confusion matrix</h2>",
        "<p>Rows are map classes, columns reference classes; colour is the share of the map row, numbers are pixel "
        "counts.</p>",
        heatmap_svg(cm, labels),
        "<table><tr><th class='l'>map \\ reference</th>" + "".join(f"<th>{e(lab)}</th>" for lab in labels)
        + "<th>total</th></tr>",
    ]
    for i, lab in enumerate(labels):
        out.append(f"<tr><th class='l'>{e(lab)}</th>" + "".join(f"<td>{int(v)}</td>" for v in cm[i])
                   + f"<td>{int(cm[i].sum())}</td></tr>")
    out.append("<tr><th class='l'>total</th>" + "".join(f"<td>{int(v)}</td>" for v in cm.sum(axis=0))
               + f"<td>{int(cm.sum())}</td></tr></table>")
    return out


def _per_class(m: Dict) -> List[str]:
    out = ["<h2>Per-class accuracy (sample counts)</h2><table><tr><th class='l'>class</th><th>reference px</th>"
           "<th>producer's accuracy</th><th>user's accuracy</th><th>F1</th><th>IoU</th></tr>"]
    for c, row in zip(m["classes"], m["per_class"]):
        swatch = f"<span class='swatch' style='background:{html.escape(c.get('color') or '#FFFFFF')}'></span>"
        out.append(
            f"<tr><td class='l'>{swatch}{html.escape(class_label(c))}</td><td>{_num(row['reference_pixels'])}</td>"
            f"<td>{_h(row['producers_accuracy'])}</td><td>{_h(row['users_accuracy'])}</td>"
            f"<td>{_h(row['f1'])}</td><td>{_h(row['iou'])}</td></tr>"
        )
    return out + ["</table>"]


def _area(m: Dict) -> List[str]:
    a = m["area_adjusted"]
    unit, z, e = a["area_unit"], a["z"], html.escape
    conf = int(round(100 * a["confidence"]))
    hectares = unit == "m²"
    out = [
        "<h2>Area-adjusted accuracy and area (Olofsson et al. 2014)</h2>",
        f"<div class='note'><p>{e(a['assumption'])}</p></div>",
        f"<p>Overall accuracy {_h(a['overall_accuracy'], 4)}"
        + (f" ± {_h(a['overall_accuracy_se'] * z, 4)} ({conf} % CI)" if a["overall_accuracy_se"] is not None
           else " (CI n/a)")
        + (f"; population: {100 * a['population_fraction']:.2f} % of the mapped area."
           if a["population_fraction"] is not None else ".") + "</p>",
        f"<table><tr><th class='l'>class</th><th>mapped area ({e(unit)})</th><th>W<sub>i</sub></th>"
        f"<th>user's acc. ± {conf} % CI</th><th>producer's acc. ± {conf} % CI</th>"
        f"<th>estimated area ({e(unit)})</th><th>± {conf} % CI</th>"
        + ("<th>estimated area (ha)</th><th>± CI (ha)</th>" if hectares else "") + "</tr>",
    ]
    for c, row in zip(m["classes"], a["classes"]):
        hw = None if row["area_se"] is None else row["area_se"] * z
        cells = [f"<td class='l'>{e(class_label(c))}</td>", f"<td>{_num(row['mapped_area'])}</td>",
                 f"<td>{_h(row['weight'], 4)}</td>", f"<td>{_pm(row['users_accuracy'], row['users_accuracy_se'], z)}</td>",
                 f"<td>{_pm(row['producers_accuracy'], row['producers_accuracy_se'], z)}</td>",
                 f"<td>{_num(row['area'])}</td>", f"<td>{_num(hw)}</td>"]
        if hectares:
            cells += [f"<td>{_num(None if row['area'] is None else row['area'] / 1e4, 1)}</td>",
                      f"<td>{_num(None if hw is None else hw / 1e4, 1)}</td>"]
        out.append("<tr>" + "".join(cells) + "</tr>")
    return out + ["</table>"]


def _pm(estimate, se, z) -> str:
    if estimate is None:
        return NA
    return _h(estimate) + (f" ± {_h(se * z)}" if se is not None else " ± n/a")


def _reference_used(m: Dict) -> List[str]:
    x = m["exclusions"]
    rows = (
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
    )
    return (["<h2>Reference data used</h2><table class='kv'>"]
            + [f"<tr><td>{html.escape(k)}</td><td>{_num(v)}</td></tr>" for k, v in rows] + ["</table>"])


def _definitions(m: Dict) -> List[str]:
    return [
        "<h2>Definitions</h2><p class='note'>Producer's accuracy = correct / reference total of the class (omission = "
        "1 − PA); user's accuracy = correct / map total of the class on the reference (commission = 1 − UA); "
        "F1 = 2·correct / (map + reference totals); IoU = correct / (map + reference − correct); mIoU and macro F1 "
        "average the classes where the measure is defined. Kappa variance: delta method (Congalton &amp; Green 2009). "
        "Area-adjusted estimators, standard errors and intervals: Olofsson et al. (2014), Remote Sensing of "
        "Environment 148:42–57, section 4. n/a marks a value that is undefined (a class absent from the map or from "
        "the reference, or a stratum with one unit).</p>"
    ]
