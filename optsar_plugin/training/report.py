"""The training log (CSV, one row per epoch) and report (a self-contained HTML page with inline SVG).

The report has the accuracy report's look (:mod:`optsar_plugin.accuracy.report`): a
title naming the network, the date, the inputs, the classes with their colours and
labelled pixels, why training stopped, and two charts against the optimisation step -
the losses, and the validation OA, mIoU and per-class IoU (in the class colours) - with
rounded axis ticks; numbers carry 3-4 significant digits.
"""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Dict, List, Optional, Sequence, Tuple

from ..accuracy.html import CSS
from ..classes import normalise_name

BASE_COLUMNS = (
    "epoch",
    "step",
    "steps",
    "seconds",
    "lr",
    "train_loss",
    "val_loss",
    "val_oa",
    "val_miou",
    "val_macro_f1",
    "val_miou_clear",
    "val_miou_cloudy",
    "best",
)
TITLES = {"mosfnet": "MOSFNet", "specsar_former": "SpecSAR-Former", "cloudlulc_net": "CloudLULC-Net"}


def _fmt(v) -> str:
    """CSV value: empty for missing, 1/0 for booleans, 6 significant digits for floats."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def _num(v, digits: int = 4) -> str:
    """Report value: ``digits`` significant digits, no exponent for everyday magnitudes."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}".replace(",", "\u202f")
    if isinstance(v, float):
        if v == 0:
            return "0"
        if 1e-4 <= abs(v) < 1e6:
            decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
            return f"{v:.{decimals}f}".rstrip("0").rstrip(".") if decimals else f"{v:.0f}"
        return f"{v:.{digits - 1}e}"
    return str(v)


def iou_column(name: str) -> str:
    return "iou_" + normalise_name(name).replace(" ", "_")


def log_csv(history: List[Dict], class_names: Sequence[str]) -> str:
    """CSV text: the columns of :data:`BASE_COLUMNS` then ``iou_<class>`` per class (validation IoU)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(BASE_COLUMNS) + [iou_column(n) for n in class_names])
    for row in history:
        ious = row.get("val_iou") or [None] * len(class_names)
        w.writerow([_fmt(row.get(c)) for c in BASE_COLUMNS] + [_fmt(v) for v in ious])
    return buf.getvalue()


def nice_ticks(lo: float, hi: float, count: int = 5) -> Tuple[List[float], int]:
    """Round tick values (1, 2, 2.5 or 5 x 10^k apart) covering [lo, hi], and the decimals to print them with."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t < hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    decimals = max(0, -int(math.floor(math.log10(step) + 1e-9)) + (1 if round(step / mag, 6) == 2.5 else 0))
    return ticks, decimals


def _chart(series, title: str, ylabel: str, best_x: Optional[float] = None, width: int = 640, height: int = 300,
           y_range=None) -> str:
    """An inline SVG line chart against the step; ``series`` = [(label, colour, dashed, [(x, y), ...])]."""
    pts = [(x, y) for _, _, _, s in series for x, y in s if y is not None and not math.isnan(y)]
    ml, mr, mt, mb = 64, 170, 30, 45
    pw, ph = width - ml - mr, height - mt - mb
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" style="font-family:sans-serif;font-size:12px">',
           f'<text x="{ml + pw / 2}" y="18" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    xt, xd = nice_ticks(min(0.0, min(p[0] for p in pts)), max(p[0] for p in pts), 6)
    lo, hi = y_range if y_range is not None else (min(p[1] for p in pts), max(p[1] for p in pts))
    yt, yd = nice_ticks(lo, hi, 5)
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def sx(x):
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return mt + ph - (y - y0) / (y1 - y0) * ph

    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for y in yt:
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                   f'<text x="{ml - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.{yd}f}</text>')
    for x in xt:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{mt + ph}" y2="{mt + ph + 4}" stroke="#888"/>'
                   f'<text x="{sx(x):.1f}" y="{mt + ph + 16}" text-anchor="middle">{x:,.{xd}f}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle">optimisation step</text>'
               f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
               f'{html.escape(ylabel)}</text>')
    if best_x is not None:
        out.append(f'<line x1="{sx(best_x):.1f}" x2="{sx(best_x):.1f}" y1="{mt}" y2="{mt + ph}" '
                   'stroke="#999" stroke-dasharray="4 3"/>'
                   f'<text x="{sx(best_x) - 4:.1f}" y="{mt + 12}" fill="#666" text-anchor="end">best</text>')
    for k, (label, colour, dashed, s) in enumerate(series):
        colour = html.escape(str(colour))  # a class colour: data, never markup
        good = [(x, y) for x, y in s if y is not None and not math.isnan(y)]
        if not good:
            continue
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(good))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in good)
        ly, lx = mt + 8 + 16 * k, ml + pw + 12
        out.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="2"{dash}/>'
                   f'<text x="{lx + 25}" y="{ly + 4}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def _series(history: List[Dict], key, index: Optional[int] = None):
    out = []
    for row in history:
        v = row.get(key)
        if index is not None:
            v = v[index] if v else None
        out.append((row.get("step") or row["epoch"], v))
    return out


def _charts(history: List[Dict], classes: List[Dict], best_step) -> Tuple[str, str]:
    loss = _chart([("training loss", "#1f77b4", False, _series(history, "train_loss")),
                   ("validation loss (CE)", "#ff7f0e", False, _series(history, "val_loss"))],
                  "Loss", "loss", best_step)
    metrics = [("validation mIoU", "#222222", False, _series(history, "val_miou")),
               ("validation OA", "#888888", True, _series(history, "val_oa"))]
    if any(row.get("val_miou_cloudy") is not None for row in history):
        metrics.append(("mIoU under clouds", "#8c564b", True, _series(history, "val_miou_cloudy")))
    if len(classes) <= 10:
        metrics += [(f"IoU {c['name']}", c["color"], False, _series(history, "val_iou", i)) for i, c in enumerate(classes)]
    return loss, _chart(metrics, "Validation (held-out blocks)", "score", best_step, y_range=(0.0, 1.0))


def _kv_table(rows: Dict) -> str:
    e = html.escape
    return "<table class='kv'>" + "".join(
        f"<tr><td>{e(str(k))}</td><td class='l'>{e(_num(v) if not isinstance(v, str) else v)}</td></tr>"
        for k, v in rows.items() if not isinstance(v, (list, dict))) + "</table>"


def _class_table(classes: List[Dict], header: Dict, best_row: Optional[Dict]) -> str:
    e = html.escape
    pixels = header.get("class_pixels") or {}
    ious = (best_row or {}).get("val_iou") or [None] * len(classes)
    rows = ["<table><tr><th class='l'>class</th><th>training px</th><th>validation px</th>"
            "<th>validation IoU (best epoch)</th></tr>"]
    for c, iou in zip(classes, ious):
        train, val = pixels.get(c["name"], (None, None))
        rows.append(f"<tr><td class='l'><span class='swatch' style='background:{e(c['color'])}'></span>"
                    f"{e(str(c['code']))} {e(c['name'])}</td><td>{_num(train)}</td><td>{_num(val)}</td>"
                    f"<td>{_num(iou, 3)}</td></tr>")
    return "".join(rows) + "</table>"


def curve_html(history: List[Dict], header: Dict, classes: List[Dict]) -> str:
    """The training report: title, inputs, classes, result, charts and settings (see the module docstring).

    ``header``: ``model``, ``model_size``, ``output``, ``date``, ``inputs`` {label: file},
    ``class_pixels`` {name: (training, validation)}, ``summary`` {label: value} (why and
    when it stopped, best epoch...), ``settings`` {label: value}.
    """
    e = html.escape
    best = (header.get("summary") or {}).get("best epoch")
    best_row = next((r for r in history if r["epoch"] == best), None)
    loss, acc = _charts(history, classes, (best_row or {}).get("step"))
    title = f"Training of {TITLES.get(header.get('model'), header.get('model', 'a network'))}"
    if header.get("model_size"):
        title += f" ({header['model_size']})"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{e(title)}{' — ' + e(header['output']) if header.get('output') else ''}</h1>",
        f"<p>Created {e(header.get('date', ''))} by OptSAR Fusion.</p>",
        "<h2>Inputs</h2>", _kv_table(header.get("inputs") or {}),
        "<h2>Classes</h2>", _class_table(classes, header, best_row),
        "<h2>Result</h2>", _kv_table(header.get("summary") or {}),
        f"<div>{loss}</div><div>{acc}</div>",
        "<h2>Settings</h2>", _kv_table(header.get("settings") or {}),
        "<p class='note'>Validation pixels lie in held-out spatial blocks that training never scores on (see the "
        "checkpoint's training metadata); the kept weights are those of the best validation mIoU.</p>",
        "</body></html>",
    ])
