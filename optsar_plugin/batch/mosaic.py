"""The region as one layer: a mosaic over the scenes' maps, and a table of class areas.

**Mosaic** (:func:`build_mosaic`): a GDAL VRT (``.vrt``: a small XML file pointing at the
maps, nothing copied) or a Cloud Optimized GeoTIFF (``.tif``: one self-contained file,
DEFLATE, overviews by nearest neighbour) over every map, with the checkpoint's colour
table, category names and a paletted ``.qml`` beside it, so QGIS opens the region as one
styled layer.  Maps in another CRS than the most common one (a region across UTM zones)
are seen through warped VRTs (nearest neighbour, the target CRS's resolution of the first
map) written beside the mosaic as ``<mosaic stem>.<scene>.warped.vrt``.  Where maps
overlap, the later scene in the table wins (GDAL's VRT order).  A VRT refers to the maps
by paths relative to itself: keep it in the same folder tree as the maps.

**Class areas** (:func:`write_area_table`): a CSV with one row per scene and class
(``scene, status, code, class, pixels, area, unit``) and ``total`` rows per class (summed
over the scenes whose maps share a unit).  Areas are pixels times the pixel area in the
map's CRS (m² for UTM); for a geographic CRS they are in square degrees and not comparable
between latitudes.

Both go through :class:`~optsar_plugin.fileio.OutputSet` (temporary names, published
together, removed on failure).
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from typing import Dict, List, Sequence

from ..classes import NODATA, ClassScheme
from ..errors import InputError
from ..fileio import OutputSet

AREA_TABLE = "class_areas.csv"


def _gdal():
    from ..deps import require

    require("osgeo.gdal", "building a mosaic (GDAL's Python bindings)")
    from osgeo import gdal

    gdal.UseExceptions()
    return gdal


def build_mosaic(maps: Sequence[str], path: str, scheme: ClassScheme, protected=(), feedback=None) -> Dict[str, str]:
    """Write the mosaic of ``maps`` to ``path`` (.vrt or .tif) with its style; returns {"mosaic", "qml"}."""
    from ..styles import apply_class_metadata, class_qml, qml_path_for

    if not maps:
        raise InputError(f"No map to build the mosaic '{path}' from (no scene was classified or skipped).")
    path = os.path.abspath(os.fspath(path))
    cog = path.lower().endswith((".tif", ".tiff"))
    if not cog and not path.lower().endswith(".vrt"):
        raise InputError(f"The mosaic '{path}' must end in .vrt (a virtual mosaic) or .tif (a Cloud Optimized GeoTIFF).")
    gdal = _gdal()
    with OutputSet(list(protected) + [(m, "scene map") for m in maps], feedback) as outs:
        sources = _sources_in_one_crs(gdal, maps, path, outs, cog)
        tmp = outs.add(path, "mosaic", sidecars=(".aux.xml",))
        qml = str(qml_path_for(path))
        vrt = "/vsimem/optsar-mosaic.vrt" if cog else tmp
        gdal.BuildVRT(vrt, sources, resolution="highest", srcNodata=NODATA, VRTNodata=NODATA)
        apply_class_metadata(vrt, scheme)  # before the COG copy: changing a COG afterwards breaks its layout
        if cog:
            gdal.Translate(tmp, vrt, format="COG", creationOptions=["COMPRESS=DEFLATE", "RESAMPLING=NEAREST",
                                                                    "BIGTIFF=IF_SAFER", "NUM_THREADS=ALL_CPUS"])
            gdal.Unlink(vrt)
        outs.write_text(qml, "style file of the mosaic", class_qml(scheme))
        outs.publish()
    return {"mosaic": path, "qml": qml}


def _sources_in_one_crs(gdal, maps: Sequence[str], path: str, outs: OutputSet, in_memory: bool) -> List[str]:
    """The maps, those in another CRS than the most common one replaced by warped VRTs onto it."""
    from osgeo import osr

    crs = {}
    for m in maps:
        ds = gdal.Open(m)
        crs[m] = (ds.GetProjection(), ds.GetGeoTransform()[1])
        ds = None
    target, _ = Counter(wkt for wkt, _ in crs.values()).most_common(1)[0]
    res = next(r for wkt, r in crs.values() if wkt == target)
    target_srs = osr.SpatialReference(wkt=target)
    sources = []
    stem = os.path.splitext(path)[0]
    for k, m in enumerate(maps):
        wkt = crs[m][0]
        if wkt == target or osr.SpatialReference(wkt=wkt).IsSame(target_srs):
            sources.append(m)
            continue
        name = os.path.splitext(os.path.basename(m))[0]
        warped = f"/vsimem/optsar-warped-{k}.vrt" if in_memory else outs.add(
            f"{stem}.{name}.warped.vrt", "warped map of the mosaic")
        gdal.Warp(warped, m, format="VRT", dstSRS=target, xRes=res, yRes=res, resampleAlg="near",
                  srcNodata=NODATA, dstNodata=NODATA)
        sources.append(warped)
    return sources


def area_rows(records: Sequence[Dict], scheme: ClassScheme) -> List[Dict]:
    """Rows of the class-area table: per scene and class, then ``total`` per class and unit."""
    names = {c.code: c.name for c in scheme.classes}
    rows, totals = [], {}
    for r in records:
        if r.get("status") not in ("done", "skipped"):
            continue
        for a in r.get("class_areas") or []:
            rows.append({"scene": r["name"], "status": r["status"], "code": a["code"],
                         "class": names.get(a["code"], str(a["code"])), "pixels": a["pixels"], "area": a["area"],
                         "unit": r.get("area_unit") or ""})
            key = (a["code"], r.get("area_unit") or "")
            px, ar = totals.get(key, (0, 0.0))
            totals[key] = (px + a["pixels"], ar + a["area"])
    for (code, unit), (px, ar) in sorted(totals.items()):
        rows.append({"scene": "total", "status": "", "code": code, "class": names.get(code, str(code)), "pixels": px,
                     "area": ar, "unit": unit})
    return rows


def write_area_table(records: Sequence[Dict], path: str, scheme: ClassScheme, protected=()) -> str:
    """Write :func:`area_rows` as CSV to ``path`` (atomically)."""
    buf = io.StringIO()
    fields = ["scene", "status", "code", "class", "pixels", "area", "unit"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in area_rows(records, scheme):
        writer.writerow({**row, "area": f"{row['area']:.2f}"})
    with OutputSet(protected) as outs:
        outs.write_text(path, "class area table", buf.getvalue())
        outs.publish()
    return os.path.abspath(path)
