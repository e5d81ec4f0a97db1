"""Class styling of classification rasters, without QGIS.

Two carriers travel with every classification GeoTIFF so that QGIS, GDAL and
other GIS show the classes by name and colour:

* **GDAL colour table and category names** (:func:`apply_class_metadata`,
  read back by :func:`read_raster_classes`).  The colour table lives inside
  the GeoTIFF; GDAL's GeoTIFF driver keeps *category names* in the PAM
  side-car ``<raster>.aux.xml`` (it has no TIFF tag for them), so that file
  must travel with the raster.  Category names are indexed by pixel value:
  the list runs from 0 to the largest class code, gaps hold ``''``.  Code
  255 is the nodata value: its colour-table entry is transparent
  ``(0, 0, 0, 0)`` and it gets no category name.
* **A QGIS layer style** ``<raster stem>.qml`` (:func:`write_qml`, read back by
  :func:`read_qml_classes`) with a paletted renderer.  QGIS loads
  ``<raster stem>.qml`` beside a raster as the layer's default style (for
  ``classes.tif`` it reads ``classes.qml``), which gives a clean legend of
  the classes only, where the colour table alone would list 256 entries.

The QML follows what QGIS 3.22's ``QgsRasterLayer.saveNamedStyle`` writes for a
``QgsPalettedRasterRenderer`` (checked against a style saved by QGIS 3.22.16)::

    <!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
    <qgis version="3.22.0" styleCategories="AllStyleCategories" ...>
      <pipe>
        <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
          <colorPalette>
            <paletteEntry value="0" color="#419bdf" label="water" alpha="255"/>
            ...

QGIS writes colours in lower case; :class:`~optsar_plugin.classes.ClassScheme`
keeps them upper case, so reading normalises to upper case.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Union

from .classes import NODATA, ClassScheme, LandCoverClass, generated_palette
from .errors import InputError
from .fileio import atomic_write_bytes, atomic_write_text

QML_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
QML_VERSION = "3.22.0"
NODATA_RGBA = (0, 0, 0, 0)

PathLike = Union[str, "os.PathLike[str]"]


# -- small helpers -------------------------------------------------------------------------


def qml_path_for(raster_or_qml: PathLike) -> Path:
    """The style path QGIS looks for beside a raster: ``x.tif`` -> ``x.qml`` (a ``.qml`` path is kept)."""
    p = Path(raster_or_qml)
    return p if p.suffix.lower() == ".qml" else p.with_suffix(".qml")


def _upper_hex(color: str) -> str:
    c = str(color).strip()
    if not c.startswith("#"):
        c = "#" + c
    if len(c) == 9:  # QGIS may write #AARRGGBB; drop the alpha
        c = "#" + c[3:]
    if len(c) != 7:
        raise ValueError(f"not a #RRGGBB colour: {color!r}")
    int(c[1:], 16)
    return c.upper()


def _gdal():
    """``osgeo.gdal`` with exceptions on, or None where the GDAL Python bindings are absent."""
    try:
        from osgeo import gdal
    except ImportError:
        return None
    gdal.UseExceptions()
    return gdal


# -- QML -----------------------------------------------------------------------------------


def _qml_root() -> ET.Element:
    root = ET.Element(
        "qgis",
        {
            "version": QML_VERSION,
            "styleCategories": "AllStyleCategories",
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "1e+08",
            "maxScale": "0",
        },
    )
    flags = ET.SubElement(root, "flags")
    for tag, value in (("Identifiable", "1"), ("Removable", "1"), ("Searchable", "1"), ("Private", "0")):
        ET.SubElement(flags, tag).text = value
    return root


def _qml_text(root: ET.Element, pipe: ET.Element, resampler: Dict[str, str]) -> str:
    """Close a style document: the pipe's colour adjustments and resampler, then the XML text."""
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(
        pipe,
        "huesaturation",
        {
            "saturation": "0",
            "grayscaleMode": "0",
            "invertColors": "0",
            "colorizeOn": "0",
            "colorizeRed": "255",
            "colorizeGreen": "128",
            "colorizeBlue": "128",
            "colorizeStrength": "100",
        },
    )
    ET.SubElement(pipe, "rasterresampler", resampler)
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root, space="  ")
    return QML_DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def _renderer(pipe: ET.Element, kind: str, band: int, opacity: float, **extra) -> ET.Element:
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"Style opacity must be between 0 and 1, got {opacity}.")
    attrs = {"type": kind, "band": str(int(band)), "opacity": format(float(opacity), "g"), "alphaBand": "-1",
             "nodataColor": "", **extra}
    return ET.SubElement(pipe, "rasterrenderer", attrs)


def class_qml(scheme: ClassScheme, band: int = 1, opacity: float = 1.0) -> str:
    """A QGIS paletted-renderer style (the text of a ``.qml``) for ``scheme``'s classes."""
    root = _qml_root()
    pipe = ET.SubElement(root, "pipe")
    palette = ET.SubElement(_renderer(pipe, "paletted", band, opacity), "colorPalette")
    for c in sorted(scheme.classes, key=lambda c: c.code):
        ET.SubElement(
            palette,
            "paletteEntry",
            {"value": str(int(c.code)), "color": _upper_hex(c.color).lower(), "label": c.name, "alpha": "255"},
        )
    # Nearest-neighbour resampling: averaging class codes would invent classes.
    return _qml_text(root, pipe, {"maxOversampling": "2"})


RAMP = ("#D7191C", "#FDAE61", "#FFFFBF", "#A6D96A", "#1A9641")  # ColorBrewer RdYlGn: low confidence red


def ramp_qml(minimum: float = 0.0, maximum: float = 1.0, colors=RAMP, band: int = 1, label: str = "",
             opacity: float = 1.0) -> str:
    """A QGIS single-band pseudocolour style: a linear colour ramp from ``minimum`` to ``maximum``."""
    if not maximum > minimum:
        raise InputError(f"A colour ramp needs maximum > minimum, got {minimum} and {maximum}.")
    root = _qml_root()
    pipe = ET.SubElement(root, "pipe")
    renderer = _renderer(pipe, "singlebandpseudocolor", band, opacity, classificationMin=format(minimum, "g"),
                         classificationMax=format(maximum, "g"))
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader", {
        "colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
        "minimumValue": format(minimum, "g"), "maximumValue": format(maximum, "g"),
    })
    for k, color in enumerate(colors):
        value = minimum + (maximum - minimum) * k / (len(colors) - 1)
        text = f"{value:.2f}" + (f" {label}" if label and k in (0, len(colors) - 1) else "")
        ET.SubElement(shader, "item", {"value": format(value, "g"), "color": _upper_hex(color).lower(),
                                       "label": text, "alpha": "255"})
    return _qml_text(root, pipe, {"maxOversampling": "2", "zoomedInResampler": "bilinear"})


def write_qml(path: PathLike, scheme: ClassScheme, band: int = 1, opacity: float = 1.0) -> Path:
    """Write a QGIS paletted-renderer style for ``scheme``; returns the ``.qml`` path.

    ``path`` is the raster (the style goes to ``<stem>.qml`` beside it, the name
    QGIS loads as the default style) or the ``.qml`` path itself.  The file is
    written to a temporary file and renamed into place.
    """
    qml = qml_path_for(path)
    atomic_write_text(qml, class_qml(scheme, band, opacity))
    return qml


def read_qml_classes(path: PathLike) -> ClassScheme:
    """The classes of a QGIS raster style: a paletted renderer's palette entries.

    Also accepts a single-band pseudocolour style whose colour-ramp items are
    integer values (an "exact"/"discrete" classification style).  Entries for
    the nodata value 255 are dropped.  Raises :class:`InputError` naming the
    file when it is missing, not XML, or has no class palette.
    """
    qml = Path(path)
    if not qml.is_file():
        raise InputError(f"Style file '{qml}' does not exist.")
    try:
        root = ET.parse(qml).getroot()
    except ET.ParseError as exc:
        raise InputError(f"Style file '{qml}' is not a valid QGIS .qml (XML error: {exc}).") from None
    entries = root.findall(".//rasterrenderer[@type='paletted']/colorPalette/paletteEntry")
    if not entries:
        entries = root.findall(".//rasterrenderer[@type='singlebandpseudocolor']//colorrampshader/item")
    if not entries:
        raise InputError(
            f"Style file '{qml}' has no paletted (unique values) raster renderer, so it names no classes."
        )
    classes: List[LandCoverClass] = []
    for e in entries:
        try:
            value = float(e.get("value"))
            color = _upper_hex(e.get("color", ""))
        except (TypeError, ValueError):
            raise InputError(
                f"Style file '{qml}' has a palette entry with an invalid value or colour: {ET.tostring(e, 'unicode').strip()}"
            ) from None
        if value != int(value):
            raise InputError(f"Style file '{qml}' has a non-integer class value {value}.")
        code = int(value)
        if code == NODATA:
            continue
        label = e.get("label") or str(code)
        classes.append(LandCoverClass(code, label, color))
    if not classes:
        raise InputError(f"Style file '{qml}' defines no class other than the nodata value {NODATA}.")
    return ClassScheme(sorted(classes, key=lambda c: c.code), source="qml")


# -- GDAL colour table and category names --------------------------------------------------


def category_names(scheme: ClassScheme) -> List[str]:
    """Names indexed by pixel value from 0 to the largest code, gaps as ``''`` (GDAL's convention)."""
    names = [""] * (max(scheme.codes) + 1)
    for c in scheme.classes:
        names[c.code] = c.name
    return names


def colormap(scheme: ClassScheme) -> Dict[int, tuple]:
    """``{code: (r, g, b, a)}`` with the nodata value 255 transparent."""
    cmap = scheme.color_table()
    cmap[NODATA] = NODATA_RGBA
    return cmap


def _pam_path(raster: PathLike) -> Path:
    return Path(str(raster) + ".aux.xml")


def _write_pam_category_names(raster: PathLike, names: List[str], band: int = 1) -> None:
    """Merge category names into GDAL's PAM side-car, keeping whatever else it holds."""
    pam = _pam_path(raster)
    root = None
    if pam.is_file():
        try:
            root = ET.parse(pam).getroot()
        except ET.ParseError:
            root = None
    if root is None or root.tag != "PAMDataset":
        root = ET.Element("PAMDataset")
    band_el = next((b for b in root.findall("PAMRasterBand") if b.get("band") == str(band)), None)
    if band_el is None:
        band_el = ET.SubElement(root, "PAMRasterBand", {"band": str(band)})
    for old in band_el.findall("CategoryNames"):
        band_el.remove(old)
    cats = ET.Element("CategoryNames")
    for n in names:
        ET.SubElement(cats, "Category").text = n
    band_el.insert(0, cats)
    ET.indent(root, space="  ")
    atomic_write_bytes(pam, (ET.tostring(root, encoding="unicode") + "\n").encode("utf-8"))


def _read_pam_category_names(raster: PathLike, band: int = 1) -> Optional[List[str]]:
    pam = _pam_path(raster)
    if not pam.is_file():
        return None
    try:
        root = ET.parse(pam).getroot()
    except ET.ParseError:
        return None
    for b in root.findall("PAMRasterBand"):
        if b.get("band") == str(band):
            cats = b.find("CategoryNames")
            if cats is not None:
                return [c.text or "" for c in cats.findall("Category")]
    return None


def apply_class_metadata(target, scheme: ClassScheme, band: int = 1) -> None:
    """Give a classification raster ``scheme``'s colour table and category names.

    ``target`` is a raster path or a rasterio dataset open for writing (mode
    ``'w'`` or ``'r+'``).  For a path, GDAL's Python bindings write both (the
    colour table into the GeoTIFF, the names into ``<raster>.aux.xml``);
    where ``osgeo`` is not importable (a pip-only GPU machine) rasterio writes
    the colour table and the names are merged into the same ``.aux.xml`` that
    GDAL would write.  For an open rasterio dataset, rasterio writes the colour
    table and the names go into the ``.aux.xml`` at once - so call this after
    the last write that could make GDAL rewrite its side-car (statistics), or
    call it with the path after closing the dataset.
    """
    names = category_names(scheme)
    cmap = colormap(scheme)
    if not isinstance(target, (str, os.PathLike)):  # an open rasterio dataset
        if getattr(target, "mode", "r") not in ("w", "w+", "r+") or not hasattr(target, "write_colormap"):
            raise InputError(f"Raster '{target.name}' is open read-only; cannot write its colour table.")
        target.write_colormap(band, cmap)
        _write_pam_category_names(target.name, names, band)
        return
    path = Path(target)
    if not str(target).startswith("/vsi") and not path.is_file():  # GDAL's virtual files are not on disk
        raise InputError(f"Raster '{path}' does not exist.")
    gdal = _gdal()
    if gdal is not None:
        try:
            ds = gdal.Open(str(path), gdal.GA_Update)
        except RuntimeError as exc:
            raise InputError(f"Cannot open raster '{path}' for update: {exc}") from None
        try:
            b = ds.GetRasterBand(band)
            table = gdal.ColorTable()
            for code, rgba in cmap.items():
                table.SetColorEntry(int(code), tuple(int(v) for v in rgba))
            b.SetColorTable(table)
            b.SetCategoryNames(names)
            ds.FlushCache()
        except RuntimeError as exc:
            raise InputError(f"Cannot write the colour table / class names of '{path}': {exc}") from None
        finally:
            b = None
            ds = None
        return
    import rasterio

    try:
        with rasterio.open(path, "r+") as ds:
            ds.write_colormap(band, cmap)
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"Cannot write the colour table of '{path}': {exc}") from None
    _write_pam_category_names(path, names, band)


def _raster_category_names_and_colours(path: Path, band: int):
    gdal = _gdal()
    if gdal is not None:
        try:
            ds = gdal.Open(str(path))
        except RuntimeError as exc:
            raise InputError(f"Cannot open raster '{path}': {exc}") from None
        b = ds.GetRasterBand(band)
        # GDAL 3.6's GeoTIFF driver loads the PAM side-car lazily and GetCategoryNames()
        # does not trigger the load (it returns None on a fresh handle); GetMetadata() does.
        b.GetMetadata()
        names = b.GetCategoryNames()
        table = b.GetColorTable()
        colours = {}
        if table is not None:
            colours = {i: table.GetColorEntry(i)[:3] for i in range(table.GetCount())}
        b = None
        ds = None
        return names, colours
    import rasterio

    try:
        with rasterio.open(path) as ds:
            try:
                colours = {int(k): tuple(v[:3]) for k, v in ds.colormap(band).items()}
            except ValueError:  # no colour table
                colours = {}
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"Cannot open raster '{path}': {exc}") from None
    return _read_pam_category_names(path, band), colours


def read_raster_classes(path: PathLike, band: int = 1) -> Optional[ClassScheme]:
    """The classes a raster names through GDAL category names (colours from its colour table).

    Empty names and the nodata value 255 are ignored; classes without a colour-table
    entry get generated colours.  None when the raster has no category names.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Raster '{p}' does not exist.")
    names, colours = _raster_category_names_and_colours(p, band)
    if not names:
        return None
    pairs = [(i, str(n).strip()) for i, n in enumerate(names) if i != NODATA and n and str(n).strip()]
    if not pairs:
        return None
    fallback = generated_palette(len(pairs))
    classes = []
    for k, (code, name) in enumerate(pairs):
        rgb = colours.get(code)
        color = "#{:02X}{:02X}{:02X}".format(*rgb) if rgb is not None else fallback[k]
        classes.append(LandCoverClass(code, name, color))
    return ClassScheme(classes, source="raster")
