"""Input units and per-band normalisation, computed from training data and stored in the checkpoint.

**Units.** Analysts hold Sentinel-2 and Sentinel-1 in several encodings; every input is
first brought to one physical unit per band, detected from the raster itself
(:func:`detect_optical_units`, :func:`detect_sar_units`), so that a network trained on
one encoding classifies another:

* optical -> reflectance (0-1).  In this order: the raster's own GDAL scale/offset per
  band (``DN x scale + offset``); the Sentinel-2 processing-baseline offset named in
  its metadata (``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` = -1000, or
  ``PROCESSING_BASELINE`` >= 04.00 without them), i.e. ``(DN - 1000) / 10000``;
  floating-point values that already look like reflectance (99th percentile <= 2) as
  they are; anything else as integer reflectance x 10000 (``DN / 10000``).  Without
  metadata the offset cannot be told from the values; when every band's darkest
  values sit above 900 - as with the offset, rarely without - a warning says so.
* SAR -> dB, per band: a band whose 5th percentile is not negative (which dB data
  never satisfy) is linear power and converted with ``10 log10``.

The units of the training data are recorded with the statistics; :func:`unit_warnings`
names every band whose encoding differs at classification (the conversion then makes
them agree, the warning says it happened).

**Normalisation.** Robust statistics (median and the interquartile range scaled to a
standard deviation) resist clouds, saturated pixels and speckle outliers better than
mean and standard deviation.  Normalised values are clipped to +/-``CLIP`` so a
saturated pixel cannot dominate a window, and invalid pixels (NaN, nodata) become 0 -
they are masked in the output anyway.  Statistics written before units were recorded
(no ``units`` key) apply to the raw values as before.
"""

from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

CLIP = 6.0
_IQR_TO_STD = 1.349
S2_OFFSET = -1000.0  # processing baseline 04.00 and later (L1C RADIO_ADD_OFFSET, L2A BOA_ADD_OFFSET)
S2_QUANTIFICATION = 10000.0
OFFSET_HINT_DN = 900.0


def to_db(x: np.ndarray) -> np.ndarray:
    return (10.0 * np.log10(np.maximum(x, 1e-6))).astype(np.float32)


# ------------------------------------------------------------------------------------------
# units
# ------------------------------------------------------------------------------------------
def _baseline_offset(tags: Mapping[str, str]) -> Optional[float]:
    """The Sentinel-2 offset named by metadata tags, or None when they say nothing."""
    for key, value in tags.items():
        k = str(key).upper()
        if "BOA_ADD_OFFSET" in k or "RADIO_ADD_OFFSET" in k:
            try:
                return float(value)
            except (TypeError, ValueError):
                continue
    for key, value in tags.items():
        if "PROCESSING_BASELINE" in str(key).upper():
            m = re.search(r"(\d+)\.(\d+)", str(value))
            if m:
                return S2_OFFSET if (int(m.group(1)), int(m.group(2))) >= (4, 0) else 0.0
    return None


def detect_optical_units(sample: np.ndarray, *, scales: Optional[Sequence[float]] = None,
                         offsets: Optional[Sequence[float]] = None, tags: Optional[Mapping[str, str]] = None,
                         is_float: Optional[bool] = None) -> Dict:
    """``{"scale", "offset", "source", "hint"}`` turning ``sample`` (bands, N) into reflectance per band.

    ``scales``/``offsets``: the raster's GDAL band scale/offset (rasterio ``ds.scales``,
    ``ds.offsets``) for the selected bands; ``tags``: dataset and band metadata merged;
    ``is_float``: whether the raster's data type is floating point (default: inferred
    from the values).  ``hint`` is a warning text or None.
    """
    x = np.asarray(sample, np.float64)
    n = x.shape[0]
    if scales is not None and offsets is not None and any(
            float(s) != 1.0 or float(o) != 0.0 for s, o in zip(scales, offsets)):
        return {"scale": [float(s) for s in scales], "offset": [float(o) for o in offsets],
                "source": "GDAL band scale/offset", "hint": None}
    base = _baseline_offset(tags or {})
    if base is not None:
        return {"scale": [1.0 / S2_QUANTIFICATION] * n, "offset": [base / S2_QUANTIFICATION] * n,
                "source": f"Sentinel-2 metadata: offset {base:g}, quantification {S2_QUANTIFICATION:g}", "hint": None}
    finite = np.where(np.isfinite(x), x, np.nan)
    valid = ~np.all(np.isnan(finite), axis=0)
    if not valid.any():
        return {"scale": [1.0] * n, "offset": [0.0] * n, "source": "no valid values", "hint": None}
    finite = finite[:, valid]
    if is_float is None:
        is_float = bool(np.any(np.abs(finite[np.isfinite(finite)] % 1) > 0))
    if is_float and float(np.nanpercentile(finite, 99)) <= 2.0:
        return {"scale": [1.0] * n, "offset": [0.0] * n, "source": "reflectance (values 0-1)", "hint": None}
    hint = None
    low = np.nanpercentile(finite, 0.5, axis=1)
    if np.all(low >= OFFSET_HINT_DN) and n > 1:
        hint = ("every optical band's darkest values lie above 900, as with the Sentinel-2 processing-baseline "
                "offset of 1000 (baseline 04.00, from 25 January 2022); without metadata saying so the values are "
                "read as reflectance x 10000 without offset - if the data carry the offset, set the bands' GDAL "
                "offset (e.g. gdal_edit.py -offset -1000) or subtract 1000")
    return {"scale": [1.0 / S2_QUANTIFICATION] * n, "offset": [0.0] * n,
            "source": "integer reflectance x 10000", "hint": hint}


def detect_sar_units(sample: np.ndarray) -> Dict:
    """``{"to_db": [bool per band], "source"}``: linear power bands (5th percentile >= 0) go to dB."""
    x = np.asarray(sample, np.float64)
    x = np.where(np.isfinite(x), x, np.nan)
    flags = []
    for band in x:
        band = band[~np.isnan(band)]
        flags.append(bool(band.size and np.percentile(band, 5) >= 0.0))
    return {"to_db": flags, "source": "per band: linear power when the 5th percentile is not negative"}


def raster_units(ds, bands: Sequence[int], sample: np.ndarray, kind: str) -> Dict:
    """:func:`detect_optical_units` / :func:`detect_sar_units` for the 1-based ``bands`` of an open raster."""
    if kind == "sar":
        return detect_sar_units(sample)
    tags = dict(ds.tags())
    for b in bands:
        tags.update({f"band{b}:{k}": v for k, v in ds.tags(b).items()})
    dtype = np.dtype(ds.dtypes[bands[0] - 1])
    return detect_optical_units(sample, scales=[ds.scales[b - 1] for b in bands],
                                offsets=[ds.offsets[b - 1] for b in bands], tags=tags,
                                is_float=bool(np.issubdtype(dtype, np.floating)))


def to_physical(array: np.ndarray, units: Optional[Dict]) -> np.ndarray:
    """(bands, ...) values in reflectance (optical units) or dB (SAR units); ``None`` = as they are."""
    x = np.asarray(array, dtype=np.float32)
    if not units:
        return x
    shape = (-1,) + (1,) * (x.ndim - 1)
    if "scale" in units:
        return x * np.asarray(units["scale"], np.float32).reshape(shape) + np.asarray(units["offset"], np.float32).reshape(shape)
    flags = units.get("to_db") or []
    if any(flags):
        x = x.copy()
        for i, f in enumerate(flags):
            if f:
                x[i] = to_db(x[i])
    return x


def unit_warnings(trained: Optional[Dict], given: Optional[Dict], band_names: Sequence[str], kind: str) -> List[str]:
    """One warning naming the bands whose units differ between training and this input (converted)."""
    if not trained or not given:
        return []
    if kind == "sar":
        a, b = trained.get("to_db") or [], given.get("to_db") or []
        diff = [n for n, x, y in zip(band_names, a, b) if bool(x) != bool(y)]
        what = "linear at training and dB now, or the reverse"
    else:
        pairs = zip(band_names, trained["scale"], trained["offset"], given["scale"], given["offset"])
        diff = [n for n, s1, o1, s2, o2 in pairs if not (np.isclose(s1, s2) and np.isclose(o1, o2))]
        what = f"training data: {trained.get('source')}; this input: {given.get('source')}"
    if not diff:
        return []
    return [f"The {kind} band(s) {', '.join(diff)} are encoded differently from the training data ({what}); "
            "they were converted to the training units - check that these are the same bands."]


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------
def compute_stats(samples: np.ndarray, kind: str, valid: Optional[np.ndarray] = None,
                  units: Optional[Dict] = None) -> Dict:
    """Statistics of ``samples`` (bands, N) pixels; ``kind`` is 'optical' or 'sar'.

    ``valid`` (N,) bool selects the pixels to use; ``units`` (from :func:`raster_units`)
    are recorded and the statistics are computed in physical units; without ``units``
    the SAR units are detected from the samples and optical values are used as they are.
    Returns a JSON-serialisable dict.
    """
    x = np.asarray(samples, dtype=np.float64)
    if valid is not None:
        x = x[:, np.asarray(valid, bool)]
    x = np.where(np.isfinite(x), x, np.nan)
    if x.shape[1] == 0 or np.all(np.isnan(x)):
        raise ValueError("no valid pixels to compute normalisation statistics from")
    if kind == "sar" and units is None:
        units = detect_sar_units(x)
    if units is not None:
        units = {k: v for k, v in units.items() if k != "hint"}
        x = to_physical(x, units).astype(np.float64)
    q25, med, q75 = np.nanpercentile(x, [25, 50, 75], axis=1)
    scale = (q75 - q25) / _IQR_TO_STD
    std = np.nanstd(x, axis=1)
    scale = np.where(scale > 1e-6, scale, np.where(std > 1e-6, std, 1.0))
    out = {
        "method": "robust_zscore",
        "to_db": bool(kind == "sar" and any(units.get("to_db") or [])) if units else False,
        "center": [float(v) for v in med],
        "scale": [float(v) for v in scale],
        "clip": CLIP,
    }
    if units is not None:
        out["units"] = units
    return out


def apply(array: np.ndarray, stats: Dict, invalid: Optional[np.ndarray] = None, units: Optional[Dict] = None,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    """Normalise ``array`` (bands, H, W) with ``stats``; returns float32 with invalid pixels at 0.

    ``units``: the units of *this* input (:func:`raster_units`); default: the training
    data's (``stats["units"]``).  Statistics without recorded units apply to raw values
    (``to_db`` converting all SAR bands), as checkpoints before units were recorded.
    ``out``: a float32 array of the same shape to write into (the inference batch buffers).
    """
    if "units" in stats:
        x = to_physical(array, units or stats["units"])
    else:
        x = np.asarray(array, dtype=np.float32)
        if stats.get("to_db"):
            x = to_db(x)
    return standardise(x, stats, invalid, out=out)


def standardise(x: np.ndarray, stats: Dict, invalid: Optional[np.ndarray] = None,
                out: Optional[np.ndarray] = None) -> np.ndarray:
    """The robust z-score of values already in the statistics' units, clipped; invalid pixels -> 0.

    Computed in place in ``out`` (a new array when None): four passes over the data, no temporaries
    but one boolean mask.
    """
    x = np.asarray(x, dtype=np.float32)
    center = np.asarray(stats["center"], np.float32).reshape(-1, 1, 1)
    scale = np.asarray(stats["scale"], np.float32).reshape(-1, 1, 1)
    if center.shape[0] != x.shape[0]:
        raise ValueError(f"normalisation has {center.shape[0]} bands, data has {x.shape[0]}")
    out = np.subtract(x, center, out=out)
    out /= scale
    clip = float(stats.get("clip", CLIP))
    np.clip(out, -clip, clip, out=out)  # NaN stays NaN, infinities become the bounds
    bad = np.isnan(out)
    if invalid is not None:
        bad |= np.broadcast_to(invalid, out.shape)
    np.copyto(out, 0.0, where=bad)
    return out


def physical(array: np.ndarray, stats: Dict) -> np.ndarray:
    """Raw training values in the units ``stats`` were computed in (raw values for older statistics)."""
    if "units" in stats:
        return to_physical(array, stats["units"])
    x = np.asarray(array, dtype=np.float32)
    return to_db(x) if stats.get("to_db") else x


def band_names_default(prefix: str, count: int) -> Sequence[str]:
    return [f"{prefix}{i + 1}" for i in range(count)]
