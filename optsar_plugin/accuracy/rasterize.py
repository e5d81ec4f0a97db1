"""Reference polygons or points onto the classification's pixel grid, strip by strip.

The features come from :func:`optsar_plugin.vector_io.read_reference` (read with OGR,
reprojected to the classification's CRS, repaired or dropped and reported by feature id).

Polygons (and lines) are burnt strip by strip with :func:`rasterio.features.rasterize`
so memory stays bounded whatever the raster size: one ``int16`` strip of reference class
indices (positions in :attr:`ReferenceData.codes`) plus one ``uint8`` mask per class
present in the strip.  Each class is burnt as its own
mask, so overlapping polygons *of the same class* simply merge, while pixels claimed by
polygons of *different* classes are excluded and counted as conflicts.

Points are sample units: each point is the pixel it falls in (``~transform`` of its
coordinates, floor), and each point counts once, even when two points share a pixel
(a stratified random sample never draws the same pixel twice; a hand-made point layer
might, and then both labels are kept as separate units).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

import numpy as np

from ..vector_io import ReferenceData

NO_REFERENCE = -1


# --------------------------------------------------------------------------------------
# burning, strip by strip
# --------------------------------------------------------------------------------------
@dataclass
class ReferenceStrip:
    row_off: int
    height: int
    index: Optional[np.ndarray]  # (height, width) int16: position in ReferenceData.codes, NO_REFERENCE (-1) if none
    conflict_pixels: int
    point_rows: np.ndarray  # rows relative to the strip
    point_cols: np.ndarray
    point_index: np.ndarray  # position in ReferenceData.codes


class StripBurner:
    """Burns :class:`ReferenceData` strip by strip on a raster grid, as class indices."""

    def __init__(self, ref: ReferenceData, transform, width: int, height: int, all_touched: bool = False):
        self.ref = ref
        self.transform = transform
        self.width = int(width)
        self.height = int(height)
        self.all_touched = bool(all_touched)
        self.codes = ref.codes
        if len(self.codes) > np.iinfo(np.int16).max:
            raise ValueError("too many reference classes")
        position = {c: i for i, c in enumerate(self.codes)}
        # per class: its index, the shapes and their envelopes as an array for a fast strip filter
        self._classes = []
        for code, items in sorted(ref.shapes_by_code.items()):
            env = np.asarray([b for _, b in items], dtype=np.float64).reshape(-1, 4)
            self._classes.append((position[code], [g for g, _ in items], env))
        self._pindex = np.asarray([position[int(c)] for c in ref.point_codes], dtype=np.int64)
        # points: pixel indices (floor of the inverse transform), clipped to the grid edge
        if len(ref.point_xy):
            inv = ~transform
            cols, rows = inv * (ref.point_xy[:, 0], ref.point_xy[:, 1])
            self._prow = np.clip(np.floor(rows).astype(np.int64), 0, self.height - 1)
            self._pcol = np.clip(np.floor(cols).astype(np.int64), 0, self.width - 1)
        else:
            self._prow = np.zeros(0, dtype=np.int64)
            self._pcol = np.zeros(0, dtype=np.int64)

    @property
    def has_areas(self) -> bool:
        return bool(self._classes)

    def rows_with_reference(self) -> Tuple[int, int]:
        """First and last+1 raster rows any reference can touch (to skip empty strips)."""
        lo, hi = self.height, 0
        t = self.transform
        for _, _, env in self._classes:
            if len(env):
                ys = np.concatenate([env[:, 1], env[:, 3]])
                rows = (ys - t.f) / t.e
                lo = min(lo, int(np.floor(rows.min())) - 1)
                hi = max(hi, int(np.ceil(rows.max())) + 1)
        if len(self._prow):
            lo = min(lo, int(self._prow.min()))
            hi = max(hi, int(self._prow.max()) + 1)
        return max(0, lo), min(self.height, hi)

    def strip(self, row_off: int, height: int) -> ReferenceStrip:
        from rasterio.features import rasterize
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform

        win = Window(0, row_off, self.width, height)
        wt = window_transform(win, self.transform)
        # strip extent in y (transform.e is negative for north-up rasters; handle both)
        y0 = self.transform.f + self.transform.e * row_off
        y1 = self.transform.f + self.transform.e * (row_off + height)
        ylo, yhi = min(y0, y1), max(y0, y1)
        # a pixel-size margin so that all_touched edges are not lost by the filter
        margin = abs(self.transform.e)
        index = None
        conflict = None
        for k, geoms, env in self._classes:
            sel = np.flatnonzero((env[:, 3] >= ylo - margin) & (env[:, 1] <= yhi + margin))
            if sel.size == 0:
                continue
            mask = rasterize(
                ((geoms[i], 1) for i in sel),
                out_shape=(height, self.width),
                transform=wt,
                fill=0,
                all_touched=self.all_touched,
                dtype="uint8",
            ).view(bool)
            if index is None:
                index = np.full((height, self.width), NO_REFERENCE, dtype=np.int16)
                conflict = np.zeros((height, self.width), dtype=bool)
            conflict |= mask & (index != NO_REFERENCE)  # claimed by a polygon of another class
            index[mask] = k
        conflict_pixels = 0
        if conflict is not None and conflict.any():
            conflict_pixels = int(conflict.sum())
            index[conflict] = NO_REFERENCE
        sel = (self._prow >= row_off) & (self._prow < row_off + height)
        return ReferenceStrip(
            row_off=row_off,
            height=height,
            index=index,
            conflict_pixels=conflict_pixels,
            point_rows=self._prow[sel] - row_off,
            point_cols=self._pcol[sel],
            point_index=self._pindex[sel],
        )


def strips(height: int, strip_rows: int) -> Iterator[Tuple[int, int]]:
    for off in range(0, int(height), int(strip_rows)):
        yield off, min(int(strip_rows), int(height) - off)
