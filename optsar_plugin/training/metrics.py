"""Validation metrics from a confusion matrix."""

from __future__ import annotations

import math
from typing import Dict

import numpy as np


def confusion_metrics(cm: np.ndarray) -> Dict:
    """OA, mIoU, macro F1 and per-class IoU from a (K, K) matrix (rows = reference)."""
    cm = np.asarray(cm, np.float64)
    total = cm.sum()
    if total == 0:
        return {"oa": None, "miou": None, "macro_f1": None, "iou": [None] * len(cm)}
    tp = np.diag(cm)
    ref, pred = cm.sum(1), cm.sum(0)
    union = ref + pred - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(ref + pred > 0, 2 * tp / (ref + pred), np.nan)
    return {
        "oa": float(tp.sum() / total),
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else None,
        "macro_f1": float(np.nanmean(f1)) if np.isfinite(f1).any() else None,
        "iou": [None if math.isnan(v) else float(v) for v in iou],
    }
