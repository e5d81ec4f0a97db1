"""Per-band normalisation computed from training data and stored in the checkpoint.

Robust statistics (median and the interquartile range scaled to a standard
deviation) resist clouds, saturated pixels and speckle outliers better than mean
and standard deviation.  SAR is normalised in dB: when the training SAR is linear
backscatter (its 5th percentile is not negative, which dB data never satisfies),
``to_db`` is recorded and applied identically at inference.  Normalised values
are clipped to +/-``CLIP`` so a saturated pixel cannot dominate a window, and
invalid pixels (NaN, nodata) become 0 - they are masked in the output anyway.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

CLIP = 6.0
_IQR_TO_STD = 1.349


def to_db(x: np.ndarray) -> np.ndarray:
    return (10.0 * np.log10(np.maximum(x, 1e-6))).astype(np.float32)


def compute_stats(samples: np.ndarray, kind: str, valid: Optional[np.ndarray] = None) -> Dict:
    """Statistics of ``samples`` (bands, N) pixels; ``kind`` is 'optical' or 'sar'.

    ``valid`` (N,) bool selects the pixels to use.  Returns a JSON-serialisable dict.
    """
    x = np.asarray(samples, dtype=np.float64)
    if valid is not None:
        x = x[:, np.asarray(valid, bool)]
    x = np.where(np.isfinite(x), x, np.nan)
    if x.shape[1] == 0 or np.all(np.isnan(x)):
        raise ValueError("no valid pixels to compute normalisation statistics from")
    convert = False
    if kind == "sar":
        convert = bool(np.nanpercentile(x, 5) >= 0.0)
        if convert:
            x = 10.0 * np.log10(np.maximum(x, 1e-6))
    q25, med, q75 = np.nanpercentile(x, [25, 50, 75], axis=1)
    scale = (q75 - q25) / _IQR_TO_STD
    std = np.nanstd(x, axis=1)
    scale = np.where(scale > 1e-6, scale, np.where(std > 1e-6, std, 1.0))
    return {
        "method": "robust_zscore",
        "to_db": convert,
        "center": [float(v) for v in med],
        "scale": [float(v) for v in scale],
        "clip": CLIP,
    }


def apply(array: np.ndarray, stats: Dict, invalid: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalise ``array`` (bands, H, W) with ``stats``; returns float32 with invalid pixels at 0."""
    x = np.asarray(array, dtype=np.float32)
    if stats.get("to_db"):
        x = to_db(x)
    center = np.asarray(stats["center"], np.float32).reshape(-1, 1, 1)
    scale = np.asarray(stats["scale"], np.float32).reshape(-1, 1, 1)
    if center.shape[0] != x.shape[0]:
        raise ValueError(f"normalisation has {center.shape[0]} bands, data has {x.shape[0]}")
    out = (x - center) / scale
    clip = float(stats.get("clip", CLIP))
    out = np.clip(out, -clip, clip)
    bad = ~np.isfinite(out)
    if invalid is not None:
        bad |= np.broadcast_to(invalid, out.shape)
    out[bad] = 0.0
    return out


def band_names_default(prefix: str, count: int) -> Sequence[str]:
    return [f"{prefix}{i + 1}" for i in range(count)]
