"""Reference polygons or points onto the classification's pixel grid, strip by strip.

The features come from :func:`optsar_plugin.vector_io.read_reference` (read with OGR,
reprojected to the classification's CRS, repaired or dropped and reported by feature id).

Polygons (and lines) are burnt strip by strip with GDAL's rasterizer (the one
:func:`rasterio.features.rasterize` wraps) so memory stays bounded whatever the raster
size: two ``int16`` strips (the largest and the smallest class claiming each pixel, see
:class:`StripBurner`), so overlapping polygons *of the same class* simply merge, while
pixels claimed by polygons of *different* classes are excluded and counted as conflicts.

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
    """Burns :class:`ReferenceData` strip by strip on a raster grid, as class indices.

    The geometries go once into an in-memory OGR layer in ascending class order, with their
    class index + 1 as an attribute.  A strip is burnt with GDAL's rasterizer
    (``gdal.RasterizeLayer``, the algorithm ``rasterio.features.rasterize`` wraps; later
    features replace earlier ones) straight into a numpy array, the layer's spatial filter set
    to the strip: each pixel gets the *largest* class claiming it.  The shapes that may share
    a pixel with a shape of another class (:func:`may_conflict`) also go, in descending
    order, into a second layer, burnt on the strips they reach: it leaves the *smallest*
    class among them.  Where that one is set and differs from the largest, polygons of
    different classes overlap: a conflict, excluded.  Everywhere else one class claims the
    pixel (same-class overlaps merge).  Reference polygons that do not overlap - the usual
    case - are burnt once.  No geometry crosses into Python again after reading, and the
    work per strip does not grow with the number of classes.
    """

    def __init__(self, ref: ReferenceData, transform, width: int, height: int, all_touched: bool = False):
        self.ref = ref
        self.transform = transform
        self.width = int(width)
        self.height = int(height)
        self.all_touched = bool(all_touched)
        self.codes = ref.codes
        if len(self.codes) > np.iinfo(np.int16).max - 1:
            raise ValueError("too many reference classes")
        position = {c: i for i, c in enumerate(self.codes)}
        shapes = [(position[code], geom, box) for code, items in sorted(ref.shapes_by_code.items())
                  for geom, box in items]
        self._env = np.asarray([box for _, _, box in shapes], dtype=np.float64).reshape(-1, 4)
        pad = sum(abs(v) for v in (transform.a, transform.b, transform.d, transform.e))  # a pixel, any rotation
        mixed = may_conflict(self._env, np.asarray([k for k, _, _ in shapes], np.int64), pad)
        self._mixed_env = self._env[mixed]
        self._layers = self._make_layers(shapes, [s for s, m in zip(shapes, mixed) if m]) if shapes else None
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

    def _make_layers(self, shapes, mixed):
        """In-memory layers with class index + 1 in field ``k``: all shapes in ascending class order, and
        ``mixed`` (those that may overlap another class) in descending order (None when there are none)."""
        from ..vector_io import ogr_modules

        _, ogr, osr = ogr_modules()
        self._store = ogr.GetDriverByName("Memory").CreateDataSource("optsar-reference")
        # the shapes are already in the raster's CRS: layers and strips share one placeholder CRS
        srs = osr.SpatialReference()
        srs.SetLocalCS("raster grid")
        self._wkt = srs.ExportToWkt()
        layers = []
        for name, order in (("ascending", shapes), ("descending", mixed[::-1])):
            if not order:
                layers.append(None)
                continue
            layer = self._store.CreateLayer(name, srs, geom_type=ogr.wkbUnknown)
            layer.CreateField(ogr.FieldDefn("k", ogr.OFTInteger))
            defn = layer.GetLayerDefn()
            for k, geom, _ in order:
                feature = ogr.Feature(defn)
                feature.SetField(0, k + 1)
                feature.SetGeometry(geom)
                layer.CreateFeature(feature)
            layers.append(layer)
        return layers

    @property
    def has_areas(self) -> bool:
        return self._layers is not None

    def rows_with_reference(self) -> Tuple[int, int]:
        """First and last+1 raster rows any reference can touch (to skip empty strips)."""
        lo, hi = self.height, 0
        t = self.transform
        if len(self._env):
            rows = (np.concatenate([self._env[:, 1], self._env[:, 3]]) - t.f) / t.e
            lo = min(lo, int(np.floor(rows.min())) - 1)
            hi = max(hi, int(np.ceil(rows.max())) + 1)
        if len(self._prow):
            lo = min(lo, int(self._prow.min()))
            hi = max(hi, int(self._prow.max()) + 1)
        return max(0, lo), min(self.height, hi)

    def strip(self, row_off: int, height: int) -> ReferenceStrip:
        index, conflict_pixels = None, 0
        if self._layers is not None:
            # strip extent in y (transform.e is negative for north-up rasters; handle both); a pixel-size
            # margin so that all_touched edges are not lost by the filter
            y0 = self.transform.f + self.transform.e * row_off
            y1 = self.transform.f + self.transform.e * (row_off + height)
            margin = abs(self.transform.e)
            ylo, yhi = min(y0, y1) - margin, max(y0, y1) + margin
            if np.any((self._env[:, 3] >= ylo) & (self._env[:, 1] <= yhi)):
                largest = self._burn(self._layers[0], row_off, height, ylo, yhi)
                if np.any((self._mixed_env[:, 3] >= ylo) & (self._mixed_env[:, 1] <= yhi)):
                    smallest = self._burn(self._layers[1], row_off, height, ylo, yhi)
                    conflict = (smallest > 0) & (smallest != largest)  # polygons of different classes claim it
                    conflict_pixels = int(np.count_nonzero(conflict))
                largest -= 1  # class index, NO_REFERENCE (-1) where no polygon
                if conflict_pixels:
                    largest[conflict] = NO_REFERENCE
                index = largest
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

    def _burn(self, layer, row_off: int, height: int, ylo: float, yhi: float) -> np.ndarray:
        """The layer burnt on the strip: (height, width) int16 of field ``k`` (0 where nothing)."""
        from osgeo import gdal, gdal_array
        from rasterio.windows import Window
        from rasterio.windows import transform as window_transform

        out = np.zeros((height, self.width), dtype=np.int16)
        ds = gdal_array.OpenArray(out)  # a MEM dataset on the array itself: GDAL burns into it
        ds.SetGeoTransform(window_transform(Window(0, row_off, self.width, height), self.transform).to_gdal())
        ds.SetProjection(self._wkt)
        left, right = self.transform.c, self.transform.c + self.transform.a * self.width
        layer.SetSpatialFilterRect(min(left, right), ylo, max(left, right), yhi)
        options = ["ATTRIBUTE=k"] + (["ALL_TOUCHED=TRUE"] if self.all_touched else [])
        try:
            err = gdal.RasterizeLayer(ds, [1], layer, options=options)
        finally:
            layer.SetSpatialFilter(None)
            ds = None
        if err != 0:
            raise RuntimeError(f"GDAL could not burn the reference polygons (error {err})")
        return out


def may_conflict(env: np.ndarray, classes: np.ndarray, pad: float, max_pairs: int = 4_000_000) -> np.ndarray:
    """Which shapes' envelopes, grown by ``pad``, meet the envelope of a shape of another class.

    ``env`` (N, 4) ``(minx, miny, maxx, maxy)``; returns a bool mask (N,).  Only such shapes
    can claim a pixel together with a shape of another class (``pad`` of one pixel covers
    ``all_touched``).  The envelopes are hashed into a grid of cells the size of a typical
    envelope and compared pairwise within each cell (numpy, no Python loop over shapes).
    When that would make more than ``max_pairs`` pairs (huge or heavily stacked shapes),
    every shape counts as possibly conflicting, which is always safe.
    """
    n = len(env)
    if n < 2 or len(np.unique(classes)) < 2:
        return np.zeros(n, bool)
    box = env + np.array([-pad, -pad, pad, pad])
    cell = max(float(np.percentile(np.maximum(box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]), 90)), pad, 1e-9)
    lo = np.floor((box[:, :2] - box[:, :2].min(axis=0)) / cell).astype(np.int64)
    hi = np.floor((box[:, 2:] - box[:, :2].min(axis=0)) / cell).astype(np.int64)
    span = hi - lo + 1
    per_shape = span[:, 0] * span[:, 1]
    if per_shape.sum() > 8 * n:
        return np.ones(n, bool)
    shape_of = np.repeat(np.arange(n), per_shape)  # one entry per (shape, cell it reaches)
    k = _offsets(per_shape)
    cell_id = (lo[shape_of, 0] + k % span[shape_of, 0]) * (int(hi[:, 1].max()) + 1) \
        + lo[shape_of, 1] + k // span[shape_of, 0]
    order = np.argsort(cell_id, kind="stable")
    cell_id, shape_of = cell_id[order], shape_of[order]
    starts = np.flatnonzero(np.r_[True, cell_id[1:] != cell_id[:-1]])
    sizes = np.diff(np.r_[starts, len(cell_id)])
    if int((sizes.astype(np.int64) ** 2).sum()) > max_pairs:
        return np.ones(n, bool)
    per_entry = np.repeat(sizes, sizes)  # each entry meets every entry of its cell
    a = np.repeat(np.arange(len(cell_id)), per_entry)
    b = np.repeat(np.repeat(starts, sizes), per_entry) + _offsets(per_entry)
    a, b = shape_of[a], shape_of[b]
    hit = (classes[a] != classes[b]) & (box[a, 0] <= box[b, 2]) & (box[b, 0] <= box[a, 2]) \
        & (box[a, 1] <= box[b, 3]) & (box[b, 1] <= box[a, 3])
    out = np.zeros(n, bool)
    out[a[hit]] = True
    out[b[hit]] = True
    return out


def _offsets(counts: np.ndarray) -> np.ndarray:
    """0, 1, ..., c - 1 for each count c, concatenated (the position of each entry within its run)."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def strips(height: int, strip_rows: int) -> Iterator[Tuple[int, int]]:
    for off in range(0, int(height), int(strip_rows)):
        yield off, min(int(strip_rows), int(height) - off)
