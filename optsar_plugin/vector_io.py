"""Reading vector layers with GDAL/OGR: open a layer, check a field, read reference features.

Used by accuracy assessment (reference polygons or points) and by training (reference
polygons).  Only ``osgeo.ogr``: no shapely or fiona.  :func:`read_reference` reprojects
features to a raster's CRS when the two differ, repairs invalid geometries
(``MakeValid``, then ``Buffer(0)``) or drops them, and reports by feature id what it
repaired, dropped or found outside the raster.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .classes import NODATA
from .errors import InputError
from .fileio import refuse_special_file

MAX_LISTED_IDS = 20


def list_ids(ids: Sequence, limit: int = MAX_LISTED_IDS) -> str:
    """'3, 7, 12' or '3, 7, ... and 40 more'."""
    ids = list(ids)
    head = ", ".join(str(i) for i in ids[:limit])
    return head + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


@functools.cache
def ogr_modules():
    """``(gdal, ogr, osr)`` from the GDAL Python bindings (looked up once: it is called per feature)."""
    from .deps import require

    require("osgeo.ogr", "reading vector layers")
    from osgeo import gdal, ogr, osr

    return gdal, ogr, osr


def open_layer(path: str, layer_name: Optional[str] = None, role: str = "reference layer"):
    """``(dataset, layer)``: the named layer (default the first) of a vector file; keep the dataset alive."""
    gdal, ogr, _ = ogr_modules()
    refuse_special_file(path, role)
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        ds = ogr.Open(str(path))
    except RuntimeError:  # when some other code called ogr.UseExceptions()
        ds = None
    finally:
        gdal.PopErrorHandler()
    if ds is None:
        raise InputError(f"Cannot open the {role} '{path}' (not a vector file OGR can read).")
    if layer_name:
        layer = ds.GetLayerByName(str(layer_name))
        if layer is None:
            names = [ds.GetLayerByIndex(i).GetName() for i in range(ds.GetLayerCount())]
            raise InputError(f"The {role} file '{path}' has no layer '{layer_name}'; its layers: {', '.join(names)}.")
    else:
        if ds.GetLayerCount() == 0:
            raise InputError(f"The {role} file '{path}' holds no layer.")
        layer = ds.GetLayerByIndex(0)
    return ds, layer


def only_field(layer, field_name: str, geometry: bool = True) -> None:
    """Make OGR read only ``field_name`` (and the geometry when ``geometry``) of ``layer``'s features.

    The other attributes - and, without ``geometry``, the geometries - are not decoded at all
    (``OGRLayer::SetIgnoredFields``); the layer lives as long as its dataset, so nothing is reset.
    """
    defn = layer.GetLayerDefn()
    ignored = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())
               if defn.GetFieldDefn(i).GetName() != field_name] + ["OGR_STYLE"]
    try:
        layer.SetIgnoredFields(ignored if geometry else ignored + ["OGR_GEOMETRY"])
    except RuntimeError:  # a driver that cannot skip fields (with ogr.UseExceptions()): it reads them all
        pass


def field_kind(layer, field_name: str, path: str = "") -> str:
    """'integer', 'real' or 'string'; a missing field is an :class:`InputError` listing the fields (and naming the
    file ``path`` when given)."""
    _, ogr, _ = ogr_modules()
    defn = layer.GetLayerDefn()
    idx = defn.GetFieldIndex(field_name)
    if idx < 0:
        names = [defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())]
        of = f" of '{path}'" if path else ""
        raise InputError(
            f"The reference layer '{layer.GetName()}'{of} has no field '{field_name}'; its fields: "
            f"{', '.join(names) or '(none)'}."
        )
    ftype = defn.GetFieldDefn(idx).GetType()
    if ftype in (ogr.OFTInteger, ogr.OFTInteger64):
        return "integer"
    if ftype == ogr.OFTReal:
        return "real"
    return "string"


def read_class_values(path: str, layer_name: Optional[str], class_field: str) -> Tuple[str, List]:
    """The field kind ('integer', 'real', 'string') and the distinct non-null class values."""
    ds, layer = open_layer(path, layer_name)
    kind = field_kind(layer, class_field, path)
    values = set()
    idx = layer.GetLayerDefn().GetFieldIndex(class_field)
    only_field(layer, class_field, geometry=False)  # a pass over the values alone: no geometry is decoded
    layer.ResetReading()
    for feat in layer:
        if feat.IsFieldSetAndNotNull(idx):
            values.add(feat.GetField(idx))
    del ds
    return kind, sorted(values, key=lambda v: (isinstance(v, str), v))


# -- geometry repair ---------------------------------------------------------------------------


def _polygonal_part(geom):
    """The polygons of a geometry (e.g. the GEOMETRYCOLLECTION MakeValid may return), or None."""
    _, ogr, _ = ogr_modules()
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


def repair_geometry(geom, polygonal: bool):
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


# -- reference features ------------------------------------------------------------------------


@dataclass
class ReferenceData:
    """Reference features in the classification's CRS, with the problems met while reading them."""

    path: str
    layer: str
    class_field: str
    # class code -> [(OGR geometry in the raster CRS, (minx, miny, maxx, maxy))]
    shapes_by_code: Dict[int, List[Tuple[object, Tuple[float, float, float, float]]]] = field(default_factory=dict)
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
    unlabelled_ids: List[int] = field(default_factory=list)  # class 255: the nodata / unlabelled value

    @property
    def codes(self) -> List[int]:
        return sorted(set(self.shapes_by_code) | {int(c) for c in self.point_codes})


def _transform_to_raster(layer, raster_crs_wkt: Optional[str], out: ReferenceData):
    """The coordinate transformation from the layer's CRS to the raster's, or None; notes it in ``out``."""
    _, _, osr = ogr_modules()
    src_srs = layer.GetSpatialRef()
    if raster_crs_wkt and src_srs is not None:
        dst = osr.SpatialReference()
        dst.ImportFromWkt(raster_crs_wkt)
        src = src_srs.Clone()
        for s in (src, dst):
            s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
        if not src.IsSame(dst):
            out.reprojected = True
            out.crs_note = f"reprojected from {src.GetName()} to {dst.GetName()}"
            return osr.CoordinateTransformation(src, dst)
    elif src_srs is None and raster_crs_wkt:
        out.crs_note = "the reference layer has no CRS; its coordinates were taken to be in the classification's CRS"
    elif raster_crs_wkt is None and src_srs is not None:
        out.crs_note = "the classification has no CRS; the reference coordinates were used as they are"
    return None


def _usable_geometry(geom, flat, transform, fid: int, out: ReferenceData):
    """The feature's geometry repaired and reprojected, or None (the reason is recorded in ``out``)."""
    _, ogr, _ = ogr_modules()
    if flat not in (ogr.wkbPoint, ogr.wkbMultiPoint) and not geom.IsValid():
        fixed = repair_geometry(geom, polygonal=flat in (ogr.wkbPolygon, ogr.wkbMultiPolygon))
        if fixed is None:
            out.dropped_invalid_ids.append(fid)
            return None
        out.repaired_ids.append(fid)
        geom = fixed
    if transform is not None:
        try:
            failed = geom.Transform(transform) != 0
        except RuntimeError:
            failed = True
        if failed:
            out.outside_ids.append(fid)  # not representable in the raster CRS
            return None
    return geom


def _points_inside(geom, flat, bounds) -> List[Tuple[float, float]]:
    _, ogr, _ = ogr_modules()
    left, bottom, right, top = bounds
    pts = [geom] if flat == ogr.wkbPoint else [geom.GetGeometryRef(i) for i in range(geom.GetGeometryCount())]
    return [(p.GetX(), p.GetY()) for p in pts if left <= p.GetX() <= right and bottom <= p.GetY() <= top]


def _add_feature(out: ReferenceData, geom, flat, code: int, fid: int, bounds, points: list) -> None:
    """File a usable geometry under its class (shapes by code, or points), or as outside the raster."""
    _, ogr, _ = ogr_modules()
    left, bottom, right, top = bounds
    minx, maxx, miny, maxy = geom.GetEnvelope()
    if not all(map(math.isfinite, (minx, maxx, miny, maxy))) or (
        maxx < left or minx > right or maxy < bottom or miny > top
    ):
        out.outside_ids.append(fid)
        return
    if flat in (ogr.wkbPoint, ogr.wkbMultiPoint):
        inside = _points_inside(geom, flat, bounds)
        if not inside:
            out.outside_ids.append(fid)
            return
        points.extend((x, y, code, fid) for x, y in inside)
        out.geometry_kinds.add("point")
    else:
        out.geometry_kinds.add("polygon")
        out.shapes_by_code.setdefault(code, []).append((geom, (minx, miny, maxx, maxy)))
    out.n_used += 1


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
    :class:`InputError` for an unknown name); features of code 255 (nodata, unlabelled) are
    skipped and listed (``unlabelled_ids``); line features are refused (reference data are
    polygons or points).  ``raster_bounds`` is ``(left, bottom,
    right, top)`` in the raster CRS.
    """
    gdal, _, _ = ogr_modules()
    ds, layer = open_layer(path, layer_name)
    field_kind(layer, class_field, path)
    field_index = layer.GetLayerDefn().GetFieldIndex(class_field)
    only_field(layer, class_field)
    out = ReferenceData(path=str(path), layer=layer.GetName(), class_field=class_field)
    transform = _transform_to_raster(layer, raster_crs_wkt, out)
    points: List[tuple] = []
    lines: List[int] = []
    gdal.PushErrorHandler("CPLQuietErrorHandler")
    try:
        layer.ResetReading()
        for feat in layer:
            out.n_features += 1
            found = _classified_geometry(feat, field_index, resolve, out, lines)
            if found is not None:
                geom, flat, code, fid = found
                geom = _usable_geometry(geom.Clone(), flat, transform, fid, out)
                if geom is not None:
                    _add_feature(out, geom, flat, code, fid, raster_bounds, points)
    finally:
        gdal.PopErrorHandler()
    del ds
    if lines:
        raise InputError(
            f"The reference layer '{out.layer}' of '{path}' holds {len(lines)} line feature(s) (feature ids "
            f"{list_ids(lines)}): reference data must be polygons or points. Buffer the lines into polygons first."
        )
    if points:
        xs, ys, codes, fids = zip(*points)
        out.point_xy = np.column_stack([xs, ys]).astype(np.float64)
        out.point_codes = np.asarray(codes, dtype=np.int64)
        out.point_fids = np.asarray(fids, dtype=np.int64)
    return out


def _classified_geometry(feat, field_index: int, resolve, out: ReferenceData, lines: List[int]):
    """``(geometry, flat type, class code, fid)`` of one feature, or None when it is skipped.

    A skipped feature is recorded in ``out`` (no class, unlabelled code 255, empty geometry) or,
    for a line, in ``lines`` (the caller refuses the layer once all lines are counted).
    """
    _, ogr, _ = ogr_modules()
    fid = int(feat.GetFID())
    value = feat.GetField(field_index) if feat.IsFieldSetAndNotNull(field_index) else None
    if value is None or (isinstance(value, str) and not value.strip()):
        out.null_class_ids.append(fid)
        return None
    code = int(resolve(value))
    if code == NODATA:  # 255 is never a class (as in label rasters and classifications)
        out.unlabelled_ids.append(fid)
        return None
    geom = feat.GetGeometryRef()
    if geom is None or geom.IsEmpty():
        out.empty_geometry_ids.append(fid)
        return None
    flat = ogr.GT_Flatten(geom.GetGeometryType())
    if flat in (ogr.wkbLineString, ogr.wkbMultiLineString, ogr.wkbCircularString, ogr.wkbCompoundCurve,
                ogr.wkbMultiCurve):
        lines.append(fid)
        return None
    return geom, flat, code, fid
