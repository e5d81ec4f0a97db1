"""Training augmentations: the paper recipes' flips and rotations, and simulated clouds for CloudLULC-Net.

* :func:`dihedral` applies one of the 8 symmetries of the square (rotation by k x 90
  degrees, optionally mirrored) to the optical tile, the SAR tile and the labels
  alike (SpecSAR-Former: "random rotation and flipping"; MOSFNet / CloudLULC-Net:
  the usual flips of their recipes).
* :func:`simulate_clouds` contaminates a *raw* optical tile (reflectance units,
  before normalisation), as CloudLULC-Net trains on cloudy Sentinel-2: a smooth
  random field thresholded to a cloud cover drawn uniformly in 10-70 % (the
  CloudLULC-Set cover bins) gives thick clouds with soft edges and a thin haze
  around them; clouds are additive, bright and spectrally flat (0.35-0.85
  reflectance, +/-4 % per band, 10 % spatial variation), blended as
  ``x (1 - a) + cloud a``; their shadows are the cloud shape displaced by 5-20 % of
  the tile in a random direction, darkening the surface by 40-75 % where no cloud
  covers it.  The reflectance unit (1.0 or 10000 digital numbers) is inferred from
  the training statistics (:func:`reflectance_unit`).  The paper does not describe
  its contamination beyond using real cloudy scenes; these ranges are ours.
"""

from __future__ import annotations

import numpy as np

from ..sample_scene import smooth_field

CLOUD_COVER = (0.1, 0.7)


def dihedral(arrays, k: int, flip: bool):
    """Rotate every (..., H, W) array by ``k`` x 90 degrees, then mirror left-right if ``flip``."""
    out = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        a = np.rot90(a, k, axes=(-2, -1))
        if flip:
            a = a[..., ::-1]
        out.append(np.ascontiguousarray(a))
    return out


def reflectance_unit(optical_stats: dict) -> float:
    """The value of reflectance 1 in the units the statistics were computed in: 1.0 when they record
    units (values are then converted to reflectance); for older statistics 10000 when the data look like
    scaled digital numbers (median > 2), else 1.0."""
    if "units" in optical_stats:
        return 1.0
    centre = max(float(c) for c in optical_stats["center"])
    return 10000.0 if centre > 2.0 else 1.0


def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(a)
    h, w = a.shape
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[yd, xd] = a[ys, xs]
    return out


def simulate_clouds(optical: np.ndarray, rng: np.random.Generator, unit: float, cover=None):
    """``(contaminated optical, cloud opacity (H, W))`` for a raw (bands, H, W) tile; NaN stays NaN."""
    b, h, w = optical.shape
    cover = float(rng.uniform(*CLOUD_COVER)) if cover is None else float(cover)
    sigma = float(rng.uniform(0.06, 0.2)) * max(h, w)
    f = smooth_field(rng, (h, w), sigma) + 0.35 * smooth_field(rng, (h, w), sigma / 4)
    thr = np.quantile(f, 1.0 - cover)
    thick = np.clip((f - thr) / rng.uniform(0.15, 0.5) + 0.5, 0, 1) * rng.uniform(0.75, 1.0)
    haze = rng.uniform(0.0, 0.3) * np.clip((f - thr) / 0.6 + 1.0, 0, 1)
    alpha = np.maximum(thick, haze).astype(np.float32)
    angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0.05, 0.2) * h
    shadow = _shift(thick, int(round(dist * np.sin(angle))), int(round(dist * np.cos(angle))))
    depth = rng.uniform(0.4, 0.75)
    cloud = (unit * rng.uniform(0.35, 0.85) * (1 + rng.normal(0, 0.04, b))).astype(np.float32)[:, None, None]
    cloud = cloud * (1 + 0.1 * smooth_field(rng, (h, w), max(1.0, sigma / 3)))[None]
    out = optical * (1 - depth * shadow * (1 - alpha))[None]
    out = out * (1 - alpha[None]) + cloud * alpha[None]
    return out.astype(np.float32), alpha
