"""Reference polygons or points onto the classification's pixel grid.

The reference layer is read with GDAL/OGR (``osgeo.ogr``: no shapely or fiona needed),
its features are reprojected to the classification's CRS when the two differ, invalid
geometries are repaired (``MakeValid``, then ``Buffer(0)``) or dropped and reported by
feature id, and features entirely outside the raster are counted and reported.

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

import json
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import OptsarError

NO_REFERENCE = -1
MAX_LISTED_IDS = 20


def list_ids(ids: Sequence, limit: int = MAX_LISTED_IDS) -> str:
    """'3, 7, 12' or '3, 7, ... and 40 more'."""
    ids = list(ids)
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


@dataclass
class ReferenceData:
    """Reference features in the classification's CRS, with the problems met while reading them."""

    path: str
    layer: str
    class_field: str
    shapes_by_code: Dict[int, List[Tuple[dict, Tuple[float, float, float, float]]]] = field(default_factory=dict)
    point_xy: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    point_fids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_features: int = 0
    n_used: int = 0
    geometry_kinds: set = field(default_factory=set)
    reprojected: bool = False
    crs_note: Optional[str] = None
    repaired_ids: List[int] = field(default_factory=list)
    dropped_invalid_ids: List[int] = field(default_factory=list)
    outside_ids: List[int] = field(default_factory=list)
    null_class_ids: List[int] = field(default_factory=list)
    empty_geometry_ids: List[int] = field(default_factory=list)

    @property
    def codes(self) -> List[int]:
        return sorted(set(self.shapes_by_code) | {int(c) for c in self.point_codes})


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def _ogr():
    from osgeo import gdal, ogr, osr

    return gdal, ogr, osr


def _open_layer(path: str, layer_name: Optional[str]):
    gdal, ogr, _ = _ogr()
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = ogr.Open(str(path))
    except RuntimeError:  # when some other code called ogr.UseExceptions()
        ds = None
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise OptsarError(f"Cannot open the reference layer '{path}' (not a vector file OGR can read).")
    if layer_name:
        layer = ds.GetLayerByName(str(layer_name))
        if layer is None:
            names = [ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount())]
            raise OptsarError(f"The reference file '{path}' has no layer '{layer_name}'; its layers: {', '.join(names)}.")
    else:
        if ds.GetLayerCount() == 0:
            raise OptsarError(f"The reference file '{path}' holds no layer.")
        layer = ds.GetLayerByIndex(0)
    return ds, layer


def _polygonal_part(geom):
    """The polygons of a geometry (e.g. the GEOMETRYCOLLECTION MakeValid may return), or None."""
    _, ogr, _ = _ogr()
    flat = ogr.GT_Flatten(geom.GetGeometryType())
    if flat in (ogr.wkbPolygon, ogr.wkbMultiPolygon):
        return geom
    if flat != ogr.wkbGeometryCollection:
        return None  # a polygon that collapsed to a line or point
    out = ogr.Geometry(ogr.wkbMultiPolygon)
    for i in range(geom.GetGeometryCount()):
        g = geom.GetGeometryRef(i)
        gt = ogr.GT_Flatten(g.GetGeometryType())
        if gt == ogr.wkbPolygon:
            out.AddGeometry(g.Clone())
        elif gt == ogr.wkbMultiPolygon:
            for j in range(g.GetGeometryCount()):
                out.AddGeometry(g.GetGeometryRef(j).Clone())
    return out if out.GetGeometryCount() else None


def _repair(geom, polygonal: bool):
    """A valid version of ``geom`` (``MakeValid``, then ``Buffer(0)``) or None.

    A polygon must stay a polygon: a repair that leaves only lines or points (a polygon
    with no area) counts as a failure, so the feature is skipped and reported.
    """
    candidates = []
    for fix in (lambda g: g.MakeValid(), lambda g: g.Buffer(0)):
        try:  # MakeValid needs GEOS >= 3.8; GDAL may raise or return None depending on UseExceptions
            candidates.append(fix(geom))
        except Exception:
            pass
    for g in candidates:
        if g is None or g.IsEmpty():
            continue
        if polygonal:
            g = _polygonal_part(g)
        if g is not None and not g.IsEmpty() and g.IsValid():
            return g
    return None


def _field_kind(layer, class_field: str) -> str:
    _, ogr, _ = _ogr()
    defn = layer.GetLayerDefn()
    idx = defn.GetFieldIndex(class_field)
    if idx < 0:
        names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        raise OptsarError(
            f"The reference layer '{layer.GetName()}' has no field '{class_field}'; its fields: {', '.join(names) or '(none)'}."
        )
    ftype = defn.GetFieldDefn(idx).GetType()
    if ftype in (ogr.OFTInteger, ogr.OFTInteger64):
        return "integer"
    if ftype == ogr.OFTReal:
        return "real"
    return "string"


def read_class_values(path: str, layer_name: Optional[str], class_field: str) -> Tuple[str, List]:
    """The field kind ('integer', 'real', 'string') and the distinct non-null class values."""
    ds, layer = _open_layer(path, layer_name)
    kind = _field_kind(layer, class_field)
    values = set()
    idx = layer.GetLayerDefn().GetFieldIndex(class_field)
    layer.ResetReading()
    for feat in layer:
        if feat.IsFieldSetAndNotNull(idx):
            values.add(feat.GetField(idx))
    del ds
    return kind, sorted(values, key=lambda v: (isinstance(v, str), v))


def read_reference(
    path: str,
    layer_name: Optional[str],
    class_field: str,
    resolve: Callable[[object], int],
    raster_crs_wkt: Optional[str],
    raster_bounds: Tuple[float, float, float, float],
) -> ReferenceData:
    """Read, reproject, repair and class-resolve the reference features.

    ``resolve(value) -> code`` maps a class field value to a class code (it raises
    :class:`OptsarError` for an unknown name).  ``raster_bounds`` is ``(left, bottom,
    right, top)`` in the raster CRS.
    """
    gdal, ogr, osr = _ogr()
    ds, layer = _open_layer(path, layer_name)
    _field_kind(layer, class_field)
    field_index = layer.GetLayerDefn().GetFieldIndex(class_field)
    out = ReferenceData(path=str(path), layer=layer.GetName(), class_field=class_field)

    transform = None
    src_srs = layer.GetSpatialRef()
    if raster_crs_wkt and src_srs is not None:
        dst = osr.SpatialReference()
        dst.ImportFromWkt(raster_crs_wkt)
        src = src_srs.Clone()
        for s in (src, dst):
            s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not src.IsSame(dst):
            transform = osr.CoordinateTransformation(src, dst)
            out.reprojected = True
            out.crs_note = f"reprojected from {src.GetName()} to {dst.GetName()}"
    elif src_srs is None and raster_crs_wkt:
        out.crs_note = "the reference layer has no CRS; its coordinates were taken to be in the classification's CRS"
    elif raster_crs_wkt is None and src_srs is not None:
        out.crs_note = "the classification has no CRS; the reference coordinates were used as they are"

    left, bottom, right, top = raster_bounds
    shapes: Dict[int, list] = {}
    pxy, pcodes, pfids = [], [], []
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        layer.ResetReading()
        for feat in layer:
            out.n_features += 1
            fid = int(feat.GetFID())
            value = feat.GetField(field_index) if feat.IsFieldSetAndNotNull(field_index) else None
            if value is None or (isinstance(value, str) and not value.strip()):
                out.null_class_ids.append(fid)
                continue
            code = int(resolve(value))
            geom = feat.GetGeometryRef()
            if geom is None or geom.IsEmpty():
                out.empty_geometry_ids.append(fid)
                continue
            geom = geom.Clone()
            flat = ogr.GT_Flatten(geom.GetGeometryType())
            is_point = flat in (ogr.wkbPoint, ogr.wkbMultiPoint)
            if not is_point and not geom.IsValid():
                fixed = _repair(geom, polygonal=flat in (ogr.wkbPolygon, ogr.wkbMultiPolygon))
                if fixed is None:
                    out.dropped_invalid_ids.append(fid)
                    continue
                out.repaired_ids.append(fid)
                geom = fixed
            if transform is not None:
                try:
                    failed = geom.Transform(transform) != 0
                except RuntimeError:
                    failed = True
                if failed:
                    out.outside_ids.append(fid)  # not representable in the raster CRS
                    continue
            minx, maxx, miny, maxy = geom.GetEnvelope()
            if not all(map(math.isfinite, (minx, maxx, miny, maxy))) or (
                maxx < left or minx > right or maxy < bottom or miny > top
            ):
                out.outside_ids.append(fid)
                continue
            if is_point:
                pts = [geom] if flat == ogr.wkbPoint else [geom.GetGeometryRef(i) for i in range(geom.GetGeometryCount())]
                inside = 0
                for p in pts:
                    x, y = p.GetX(), p.GetY()
                    if left <= x <= right and bottom <= y <= top:
                        pxy.append((x, y))
                        pcodes.append(code)
                        pfids.append(fid)
                        inside += 1
                if inside == 0:
                    out.outside_ids.append(fid)
                    continue
                out.geometry_kinds.add("point")
            else:
                out.geometry_kinds.add("line" if flat in (ogr.wkbLineString, ogr.wkbMultiLineString) else "polygon")
                shapes.setdefault(code, []).append((json.loads(geom.ExportToJson()), (minx, miny, maxx, maxy)))
            out.n_used += 1
    finally:
        gdal.PopErrorHandler()
    del ds
    out.shapes_by_code = shapes
    if pxy:
        out.point_xy = np.asarray(pxy, dtype=np.float64)
        out.point_codes = np.asarray(pcodes, dtype=np.int64)
        out.point_fids = np.asarray(pfids, dtype=np.int64)
    return out


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
