"""The training log (CSV, one row per epoch) and curve (a self-contained HTML page with inline SVG)."""

from __future__ import annotations

import csv
import html
import io
import math
from typing import Dict, List, Optional, Sequence

from ..classes import normalise_name

BASE_COLUMNS = (
    "epoch",
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


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
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


def _chart(series, title: str, ylabel: str, best_x: Optional[float] = None, width: int = 560, height: int = 300,
           y_range=None) -> str:
    """An inline SVG line chart; ``series`` = [(label, colour, [(x, y), ...])]."""
    pts = [(x, y) for _, _, s in series for x, y in s if y is not None and not math.isnan(y)]
    ml, mr, mt, mb = 60, 20, 30, 45
    pw, ph = width - ml - mr, height - mt - mb
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" style="font-family:sans-serif;font-size:12px">',
           f'<text x="{width / 2}" y="18" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>']
    if not pts:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no data</text></svg>')
        return "".join(out)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    if y_range is not None:
        y0, y1 = y_range
    else:
        y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
        pad = 0.05 * (y1 - y0 or abs(y1) or 1.0)
        y0, y1 = y0 - pad, y1 + pad
    x1 = x1 if x1 > x0 else x0 + 1

    def sx(x):
        return ml + (x - x0) / (x1 - x0) * pw

    def sy(y):
        return mt + ph - (y - y0) / (y1 - y0) * ph

    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#eee"/>'
                   f'<text x="{ml - 6}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    step = max(1, math.ceil((x1 - x0) / 10))
    for x in range(int(math.ceil(x0)), int(x1) + 1, step):
        out.append(f'<text x="{sx(x):.1f}" y="{mt + ph + 16}" text-anchor="middle">{x}</text>')
    out.append(f'<text x="{ml + pw / 2}" y="{height - 8}" text-anchor="middle">epoch</text>'
               f'<text x="14" y="{mt + ph / 2}" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2})">'
               f'{html.escape(ylabel)}</text>')
    if best_x is not None:
        out.append(f'<line x1="{sx(best_x):.1f}" x2="{sx(best_x):.1f}" y1="{mt}" y2="{mt + ph}" '
                   'stroke="#999" stroke-dasharray="4 3"/>'
                   f'<text x="{sx(best_x) - 4:.1f}" y="{mt + ph - 6}" fill="#666" text-anchor="end">best</text>')
    for k, (label, colour, s) in enumerate(series):
        good = [(x, y) for x, y in s if y is not None and not math.isnan(y)]
        if not good:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(good))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{colour}"/>' for x, y in good)
        ly = mt + 14 + 16 * k
        lx = ml + pw - 180
        out.append(f'<line x1="{lx}" x2="{lx + 20}" y1="{ly}" y2="{ly}" stroke="{colour}" '
                   f'stroke-width="2"/><text x="{lx + 25}" y="{ly + 4}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def curve_html(history: List[Dict], header: Dict, classes: List[Dict]) -> str:
    """The training curve page: loss and validation metrics per epoch, and a summary table."""
    summary = dict(header.get("summary", header))
    summary.setdefault("best_epoch", summary.get("best epoch"))

    def series(key):
        return [(row["epoch"], row.get(key)) for row in history]

    best = summary.get("best_epoch")
    loss = _chart([("training loss", "#1f77b4", series("train_loss")),
                   ("validation loss (CE)", "#ff7f0e", series("val_loss"))], "Loss", "loss", best)
    metrics = [("validation mIoU", "#2ca02c", series("val_miou")), ("validation OA", "#9467bd", series("val_oa"))]
    if any(row.get("val_miou_cloudy") is not None for row in history):
        metrics.append(("mIoU under clouds", "#8c564b", series("val_miou_cloudy")))
    acc = _chart(metrics, "Validation metrics", "score", best, y_range=(0.0, 1.0))
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in summary.items()
                   if not isinstance(v, (list, dict)))
    best_row = next((r for r in history if r["epoch"] == best), None)
    cls_rows = ""
    if best_row and best_row.get("val_iou"):
        for c, iou in zip(classes, best_row["val_iou"]):
            cls_rows += (f'<tr><td><span style="display:inline-block;width:12px;height:12px;background:{c["color"]}">'
                         f'</span> {c["code"]}</td><td>{html.escape(c["name"])}</td><td>{_fmt(iou)}</td></tr>')
    cls_table = (f"<h2>Validation IoU per class (epoch {best})</h2><table><tr><th>code</th><th>class</th><th>IoU</th></tr>"
                 f"{cls_rows}</table>") if cls_rows else ""
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>OptSAR Fusion training curve</title>"
        "<style>body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}</style></head><body>"
        "<h1>OptSAR Fusion training</h1>"
        f"<div>{loss}</div><div>{acc}</div>"
        f"<h2>Summary</h2><table>{rows}</table>{cls_table}"
        "<p>Validation pixels lie in held-out spatial blocks (see the checkpoint's training metadata).</p>"
        "</body></html>"
    )
