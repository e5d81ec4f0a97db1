"""Counting, strip by strip: mapped classes over the whole map and (map, reference) pairs on the reference.

One pass over the classification: each strip is read (native dtype), its validity taken
from GDAL (:func:`optsar_plugin.raster_io.valid_mask`), the reference burnt on the same
strip (:class:`~optsar_plugin.accuracy.rasterize.StripBurner`), and both counted at once.
Nodata pixels, ``ignore`` values (in map or reference) and pixels where polygons of
different classes overlap are excluded and counted (:class:`Exclusions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..progress import check_cancel
from ..raster_io import read, valid_mask
from .rasterize import StripBurner, strips


@dataclass
class Exclusions:
    """Reference pixels and points left out, by reason."""

    nodata: int = 0
    ignored: int = 0
    conflict: int = 0
    points_nodata: int = 0
    points_ignored: int = 0


class PairCounter:
    """Counts mapped classes over the whole map and (map value, reference class) pairs, strip by strip.

    For uint8/uint16 maps one ``bincount`` per strip over ``value * (R + 1) + reference index + 1``
    (column 0 = no reference) gives both at once, with no per-pixel Python work and no copies of
    the reference pixels; other integer types go through ``bincount`` over the strip's value range
    or, for very wide ranges, ``np.unique``.  Points are sample units: they add pairs only, never
    mapped area (the pixel they fall in is already counted once as mapped area).
    """

    def __init__(self, dtype: np.dtype, n_ref: int):
        self.r1 = n_ref + 1
        self.small = dtype in (np.dtype("uint8"), np.dtype("uint16"))
        self.nbins = 256 if dtype == np.dtype("uint8") else 65536
        self.dense = np.zeros((self.nbins, self.r1), dtype=np.int64) if self.small else None
        # the narrowest key type that holds every key and the dump bin (uint16 for a uint8 map, < 255 classes)
        self.key_dtype = np.uint16 if self.small and self.nbins * self.r1 < 1 << 16 else np.int64
        self.sparse: Dict[tuple, int] = {}
        self.points: Dict[tuple, int] = {}

    def add_pixels(self, values: np.ndarray, kept: np.ndarray, ref1: Optional[np.ndarray]) -> None:
        if self.small:
            if ref1 is None:
                v = values if kept.all() else values[kept]
                self.dense[:, 0] += np.bincount(v.ravel(), minlength=self.nbins)
                return
            key = np.multiply(values, self.r1, dtype=self.key_dtype)
            # ref1 >= 0 and < r1 (no wrap-around); the strip's int16 seen as uint16 adds without a cast
            np.add(key, ref1.view(np.uint16) if ref1.dtype == np.int16 else ref1, out=key, casting="unsafe")
            dump = self.nbins * self.r1
            key[~kept] = dump
            self.dense += np.bincount(key.ravel(), minlength=dump + 1)[:dump].reshape(self.nbins, self.r1)
            return
        vals = values[kept].astype(np.int64)
        if vals.size == 0:
            return
        refs = np.zeros(vals.size, dtype=np.int64) if ref1 is None else ref1[kept].astype(np.int64)
        vmin = int(vals.min())
        span = int(vals.max()) - vmin + 1
        if span * self.r1 <= 1 << 24:
            bc = np.bincount((vals - vmin) * self.r1 + refs, minlength=span * self.r1)
            keys = np.flatnonzero(bc)
            counts = bc[keys]
            pairs = zip((keys // self.r1 + vmin).tolist(), (keys % self.r1).tolist(), counts.tolist())
        else:
            u, c = np.unique(vals * self.r1 + refs, return_counts=True)
            pairs = zip((u // self.r1).tolist(), (u % self.r1).tolist(), c.tolist())
        for v, r, n in pairs:
            self.sparse[(v, r)] = self.sparse.get((v, r), 0) + n

    def add_points(self, values: np.ndarray, ref1: np.ndarray) -> None:
        for v, r in zip(np.asarray(values).astype(np.int64).tolist(), np.asarray(ref1).tolist()):
            self.points[(v, r)] = self.points.get((v, r), 0) + 1

    def result(self, ref_codes: np.ndarray):
        """``({map value: pixels}, {(map value, reference code): units})``."""
        map_counts: Dict[int, int] = {}
        joint: Dict[tuple, int] = {}
        if self.small:
            rows = self.dense.sum(axis=1)
            map_counts = {int(v): int(rows[v]) for v in np.flatnonzero(rows)}
            for v, r in zip(*np.nonzero(self.dense[:, 1:])):
                joint[(int(v), int(ref_codes[r]))] = int(self.dense[v, r + 1])
        else:
            for (v, r), n in self.sparse.items():
                map_counts[v] = map_counts.get(v, 0) + n
                if r > 0:
                    key = (v, int(ref_codes[r - 1]))
                    joint[key] = joint.get(key, 0) + n
        for (v, r), n in self.points.items():
            key = (v, int(ref_codes[r - 1]))
            joint[key] = joint.get(key, 0) + n
        return map_counts, joint


def _integer_values(src, band: int, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A float map's values as int64 (nodata set to 0); non-integer values mean it is not a classification."""
    if values.dtype.kind != "f":
        return values
    vv = values[valid]
    if vv.size and not np.array_equal(vv, np.round(vv)):
        raise InputError(
            f"The classification '{src.name}' band {band} holds non-integer values; "
            "it is not a classification (class codes must be whole numbers)."
        )
    return np.where(valid, values, 0).astype(np.int64)


def count_pairs(src, band: int, burner: StripBurner, ignore: Sequence[int], strip_rows: int, feedback):
    """``(map counts, joint counts, Exclusions)`` over the whole map (see :meth:`PairCounter.result`).

    Strips are read, burnt and counted one after the other: a background thread would not
    help, since Debian's GDAL bindings hold the GIL while rasterizing (measured).
    """
    ref_codes = np.asarray(burner.codes, dtype=np.int64)
    counter = PairCounter(np.dtype(src.dtypes[band - 1]), len(ref_codes))
    ignore_arr = np.asarray(ignore, dtype=np.int64)
    # by reference index + 1 (0 = no reference): is that reference class ignored?
    ref_ignored1 = np.concatenate([[False], np.isin(ref_codes, ignore_arr)])
    excl = Exclusions()
    all_strips = list(strips(src.height, strip_rows))
    load = _StripLoader(src, band, burner, ignore_arr)
    for s_i, (row_off, h) in enumerate(all_strips):
        check_cancel(feedback)
        feedback.progress(s_i / len(all_strips), f"Rows {row_off}-{row_off + h} of {src.height}")
        values, valid, kept, rs = load(row_off, h)
        _count_strip(counter, excl, rs, values, valid, kept, ref_ignored1)
    feedback.progress(1.0, "Computing statistics")
    map_counts, joint = counter.result(ref_codes)
    return map_counts, joint, excl


class _StripLoader:
    """One strip's map values, validity, kept pixels (not ignored) and burnt reference."""

    def __init__(self, src, band: int, burner: StripBurner, ignore_arr: np.ndarray):
        self.src, self.band, self.burner, self.ignore_arr = src, band, burner, ignore_arr
        self.ref_lo, self.ref_hi = burner.rows_with_reference()

    def __call__(self, row_off: int, h: int):
        from rasterio.windows import Window

        win = Window(0, row_off, self.src.width, h)
        values = read(self.src, self.band, window=win)
        valid = valid_mask(self.src, self.band, values, win)
        values = _integer_values(self.src, self.band, values, valid)
        kept = valid & ~np.isin(values, self.ignore_arr) if len(self.ignore_arr) else valid
        rs = self.burner.strip(row_off, h) if row_off < self.ref_hi and row_off + h > self.ref_lo else None
        return values, valid, kept, rs


def _count_strip(counter: PairCounter, excl: Exclusions, rs, values, valid, kept, ref_ignored1) -> None:
    if rs is None or rs.index is None:
        counter.add_pixels(values, kept, None)  # mapped-class counts only
    else:
        excl.conflict += rs.conflict_pixels
        ref1 = rs.index  # int16, owned by this strip: shift in place to 0 = no reference
        ref1 += 1
        has_ref = ref1 > 0
        excl.nodata += int(np.count_nonzero(has_ref & ~valid))
        if ref_ignored1.any() or kept is not valid:  # skipped without ignore values (the usual case)
            rign = ref_ignored1[ref1]
            excl.ignored += int(np.count_nonzero(has_ref & valid & (~kept | rign)))
            ref1[rign] = 0  # an ignored reference class: the pixel still counts as mapped area
        counter.add_pixels(values, kept, ref1)
    if rs is not None and rs.point_rows.size:
        pv = valid[rs.point_rows, rs.point_cols]
        pk = kept[rs.point_rows, rs.point_cols]
        pr1 = rs.point_index + 1
        pri = ref_ignored1[pr1]
        excl.points_nodata += int((~pv).sum())
        excl.points_ignored += int((pv & (~pk | pri)).sum())
        use = pv & pk & ~pri
        counter.add_points(values[rs.point_rows, rs.point_cols][use], pr1[use])
