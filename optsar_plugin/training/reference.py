"""Training labels on the optical grid, and the classes they define.

Two sources:

* **Reference polygons** (:func:`labels_from_vector`): read, reprojected to the optical
  CRS, repaired and burnt with the accuracy module's reader and strip burner
  (:mod:`optsar_plugin.accuracy.rasterize`, GDAL/OGR + ``rasterio.features.rasterize``,
  pixel-centre rule).  Pixels claimed by polygons of *different* classes are left
  unlabelled and counted; points label the pixel they fall in; lines the pixels
  they cross.
* **A label raster** (:func:`labels_from_raster`): class codes, warped to the optical
  grid by nearest neighbour when the grids differ; its nodata value and 255 are
  unlabelled; class names come from its GDAL category names, colours from its colour
  table, where present.

Classes (our rules; the papers use fixed data sets):

* An integer field (or a real field of whole numbers, or text that is all integers)
  holds class **codes**; names come from ``name_field`` when given (one name per code),
  else they are ``class <code>``.
* A text field holds class **names**.  Names are matched case-, space-, hyphen- and
  underscore-insensitively to the known schemes (Dynamic World, WHU-OPT-SAR,
  CloudLULC-Set, ESA WorldCover); when all of them belong to one, its codes and
  colours are used, otherwise the names get codes 0..n-1 in sorted order and a
  generated palette.
* Class 0 is a class; 255 is never a class (it is the nodata/ignore value).
* Classes without a single labelled pixel on the optical grid are dropped with a
  warning; at least two classes must remain.
* The logit index of a class is its position in code order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..classes import NODATA, ClassScheme, LandCoverClass, generated_palette, match_known_scheme, normalise_name
from ..errors import OptsarError
from ..progress import NullFeedback

INT_RE = re.compile(r"^[+-]?\d+$")
STRIP_ROWS = 2048


@dataclass
class Labels:
    """Class indices (0..K-1) on the optical grid, 255 where unlabelled, and the classes."""

    index: np.ndarray  # (H, W) uint8
    scheme: ClassScheme  # classes in logit-index order
    counts: np.ndarray  # (K,) labelled pixels per class
    source: str
    notes: List[str] = field(default_factory=list)

    @property
    def labelled(self) -> int:
        return int(self.counts.sum())


def split_layer_uri(path: str, layer: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """``'x.gpkg|layername=roads'`` -> ``('x.gpkg', 'roads')`` (QGIS's OGR source syntax)."""
    path = str(path)
    if "|" in path:
        base, *opts = path.split("|")
        for o in opts:
            key, _, value = o.partition("=")
            if key.strip().lower() == "layername" and value and not layer:
                layer = value
        path = base
    return path, layer


# ------------------------------------------------------------------------------------------
# classes from field values
# ------------------------------------------------------------------------------------------
def _as_code(value, field_name: str, path: str) -> Optional[int]:
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise OptsarError(f"The class field '{field_name}' of '{path}' holds {value}, which is not a whole-number class code.")
        return int(value)
    text = str(value).strip()
    return int(text) if INT_RE.match(text) else None


def scheme_from_values(values: Sequence, names: Optional[Dict] = None, field_name: str = "", path: str = "") -> Tuple[ClassScheme, Dict]:
    """(scheme, {field value: code}) from the distinct class-field values.

    ``names`` maps a field value to its name (from a second field), when given.
    """
    values = [v for v in values if v is not None and str(v).strip() != ""]
    codes = {v: _as_code(v, field_name, path) for v in values}
    if values and all(c is not None for c in codes.values()):
        by_code: Dict[int, str] = {}
        for v, c in codes.items():
            name = str(names[v]).strip() if names and names.get(v) not in (None, "") else f"class {c}"
            if c in by_code and normalise_name(by_code[c]) != normalise_name(name):
                raise OptsarError(
                    f"Class code {c} has two names in '{path}': '{by_code[c]}' and '{name}'. Each code needs one name."
                )
            by_code[c] = name
        for c in by_code:
            if not 0 <= c <= 254:
                raise OptsarError(
                    f"Class code {c} in field '{field_name}' of '{path}' is outside 0-254 (255 is the nodata value)."
                )
        pairs = sorted(by_code.items())
        return ClassScheme.from_names_and_codes(pairs), {v: c for v, c in codes.items()}
    # Names.
    canon: Dict[str, str] = {}  # normalised key -> first spelling met (sorted order)
    for v in sorted(values, key=lambda x: str(x)):
        canon.setdefault(normalise_name(str(v)), str(v).strip())
    spellings = sorted(canon.values(), key=lambda s: normalise_name(s))
    known = match_known_scheme(spellings)
    if known is not None:
        pairs = [(known.code_for_name(n), n) for n in spellings]
    else:
        pairs = list(enumerate(spellings))
    code_of_key = {normalise_name(n): c for c, n in pairs}
    mapping = {v: code_of_key[normalise_name(str(v))] for v in values}
    return ClassScheme.from_names_and_codes(pairs), mapping


def _read_pairs(path: str, layer_name: Optional[str], class_field: str, name_field: Optional[str]):
    """Distinct class values and, with ``name_field``, {value: name}."""
    from ..vector_io import field_kind, open_layer

    ds, layer = open_layer(path, layer_name)
    field_kind(layer, class_field, path)  # raises a clear error for a missing field
    if name_field:
        field_kind(layer, name_field, path)
    values, names = set(), {}
    layer.ResetReading()
    for feat in layer:
        if not feat.IsFieldSetAndNotNull(class_field):
            continue
        v = feat.GetField(class_field)
        values.add(v)
        if name_field and feat.IsFieldSetAndNotNull(name_field):
            n = str(feat.GetField(name_field)).strip()
            if v in names and normalise_name(names[v]) != normalise_name(n):
                raise OptsarError(
                    f"Class value {v!r} of field '{class_field}' has two names in field '{name_field}' of '{path}': "
                    f"'{names[v]}' and '{n}'."
                )
            names.setdefault(v, n)
    count = layer.GetFeatureCount()
    del ds
    return sorted(values, key=lambda x: (isinstance(x, str), x)), names, count


def drop_empty(index: np.ndarray, scheme: ClassScheme, counts: np.ndarray, source: str, feedback) -> Tuple[np.ndarray, ClassScheme, np.ndarray, List[str]]:
    notes = []
    keep = [k for k in range(len(scheme)) if counts[k] > 0]
    if len(keep) < len(scheme):
        gone = [scheme.classes[k].name for k in range(len(scheme)) if counts[k] == 0]
        msg = f"Class(es) {', '.join(repr(g) for g in gone)} of {source} cover no pixel centre of the optical raster and are left out."
        feedback.warning(msg)
        notes.append(msg)
        lut = np.full(256, NODATA, np.uint8)
        for new, old in enumerate(keep):
            lut[old] = new
        index = lut[index]
        scheme = ClassScheme([scheme.classes[k] for k in keep], source=scheme.source)
        counts = counts[keep]
    if len(scheme) < 2:
        only = f" (only '{scheme.classes[0].name}')" if len(scheme) == 1 else ""
        raise OptsarError(
            f"Training needs at least two classes with labelled pixels on the optical raster; {source} has "
            f"{len(scheme)}{only}. Add reference polygons of other classes."
        )
    return index, scheme, counts, notes


# ------------------------------------------------------------------------------------------
# polygons
# ------------------------------------------------------------------------------------------
def _burn(ref, scheme: ClassScheme, optical_ds) -> Tuple[np.ndarray, int]:
    """(class index per pixel of the optical grid, NODATA elsewhere; pixels left unlabelled by conflicts).

    Burns strip by strip, as positions in ``ref.codes``, then maps them to class indices.
    """
    from ..accuracy.rasterize import StripBurner, strips

    H, W = optical_ds.height, optical_ds.width
    index = np.full((H, W), NODATA, np.uint8)
    pos_to_idx = np.full(len(ref.codes) + 1, NODATA, np.uint8)
    idx_of_code = {c: k for k, c in enumerate(scheme.codes)}
    for p, code in enumerate(ref.codes):
        pos_to_idx[p] = idx_of_code[code]
    burner = StripBurner(ref, optical_ds.transform, W, H)
    conflicts = 0
    lo, hi = burner.rows_with_reference()
    for off, h in strips(H, STRIP_ROWS):
        if off + h <= lo or off >= hi:
            continue
        s = burner.strip(off, h)
        conflicts += s.conflict_pixels
        if s.index is not None:
            sel = s.index >= 0
            index[off : off + h][sel] = pos_to_idx[s.index[sel]]
        if len(s.point_rows):
            index[off + s.point_rows, s.point_cols] = pos_to_idx[s.point_index]
    return index, conflicts


def labels_from_vector(path: str, class_field: str, optical_ds, *, name_field: Optional[str] = None,
                       layer: Optional[str] = None, feedback=None) -> Labels:
    """Burn reference features (``class_field``) on the grid of the open optical raster ``optical_ds``."""
    from ..vector_io import list_ids, read_reference

    feedback = feedback or NullFeedback()
    path, layer = split_layer_uri(path, layer)
    if not class_field:
        raise OptsarError("CLASS_FIELD is required with reference polygons: the field holding class codes or names.")
    values, names, n_features = _read_pairs(path, layer, class_field, name_field)
    source = f"the reference layer '{path}'" + (f" (layer {layer})" if layer else "")
    if not values:
        raise OptsarError(f"The class field '{class_field}' of {source} is empty in all {n_features} features.")
    scheme, mapping = scheme_from_values(values, names, class_field, path)
    if len(scheme) < 2:
        raise OptsarError(
            f"The class field '{class_field}' of {source} holds one class only ({scheme.classes[0].name!r}); "
            "training needs at least two."
        )
    ref = read_reference(
        path,
        layer,
        class_field,
        lambda v: mapping[v],
        optical_ds.crs.to_wkt() if optical_ds.crs is not None else None,
        tuple(optical_ds.bounds),
    )
    notes = []
    if ref.n_used == 0:
        b = optical_ds.bounds
        raise OptsarError(
            f"None of the {ref.n_features} features of {source} overlaps the optical raster '{optical_ds.name}' "
            f"(extent {b.left:.6g}, {b.bottom:.6g} : {b.right:.6g}, {b.top:.6g}). Check the layers' CRSs and extents."
        )
    for ids, what in (
        (ref.outside_ids, "lie outside the optical raster and are ignored"),
        (ref.dropped_invalid_ids, "have invalid geometries that could not be repaired and are ignored"),
        (ref.null_class_ids, f"have no value in '{class_field}' and are ignored"),
    ):
        if ids:
            msg = f"{len(ids)} reference feature(s) ({list_ids(ids)}) {what}."
            feedback.warning(msg)
            notes.append(msg)
    if ref.crs_note:
        feedback.info(f"Reference: {ref.crs_note}.")
    index, conflicts = _burn(ref, scheme, optical_ds)
    if conflicts:
        msg = f"{conflicts} pixel(s) covered by reference polygons of different classes are left unlabelled."
        feedback.warning(msg)
        notes.append(msg)
    counts = np.bincount(index[index != NODATA].ravel(), minlength=len(scheme))[: len(scheme)]
    if counts.sum() == 0:
        raise OptsarError(
            f"The reference features of {source} overlap the optical raster '{optical_ds.name}' but cover no pixel "
            "centre of it (they are smaller than a pixel or lie on its edge)."
        )
    index, scheme, counts, more = drop_empty(index, scheme, counts, source, feedback)
    return Labels(index, scheme, counts, source, notes + more)


# ------------------------------------------------------------------------------------------
# label raster
# ------------------------------------------------------------------------------------------
def _raster_class_info(ds) -> Tuple[Dict[int, str], Dict[int, str]]:
    """({code: name} from GDAL category names, {code: '#RRGGBB'} from the colour table)."""
    from ..styles import read_raster_classes

    names, colors = {}, {}
    try:
        named = read_raster_classes(ds.name)
    except OptsarError:  # an unreadable side-car: names are optional
        named = None
    if named is not None:
        names = {c.code: c.name for c in named.classes}
    try:
        for code, rgba in ds.colormap(1).items():
            colors[int(code)] = "#{:02X}{:02X}{:02X}".format(*rgba[:3])
    except ValueError:  # no colour table
        pass
    return names, colors


def labels_from_raster(path: str, optical_ds, *, feedback=None) -> Labels:
    """Class codes from a label raster (band 1) on the grid of the open optical raster ``optical_ds``."""
    from .. import raster_io

    feedback = feedback or NullFeedback()
    source = f"the label raster '{path}'"
    H, W = optical_ds.height, optical_ds.width
    with raster_io.open_raster(path, "label raster") as ds:
        raster_io.require_crs(ds, "label raster", optical_ds, raster_io.OPTICAL)
        raster_io.check_overlap(optical_ds, ds, raster_io.Region(0, 0, H, W), "label raster")
        names, colors = _raster_class_info(ds)
        codes = np.full((H, W), -1, np.int32)
        with raster_io.aligned(ds, optical_ds, "nearest") as src:
            for off, h in ((o, min(STRIP_ROWS, H - o)) for o in range(0, H, STRIP_ROWS)):
                data = raster_io.read_window(src, [1], off, 0, h, W)[0]
                ok = np.isfinite(data) & (data != NODATA)
                bad = ok & ((data < 0) | (data > 254) | (data != np.round(data)))
                if bad.any():
                    raise OptsarError(
                        f"{source} holds the value {data[bad][0]:g}; class codes must be whole numbers 0-254 "
                        "(set the raster's nodata value for unlabelled pixels)."
                    )
                codes[off : off + h][ok] = data[ok].astype(np.int32)
    present = np.unique(codes[codes >= 0])
    if present.size == 0:
        raise OptsarError(f"{source} has no labelled pixel on the optical raster '{optical_ds.name}'.")
    pairs = [(int(c), names.get(int(c), f"class {int(c)}")) for c in present]
    scheme = ClassScheme.from_names_and_codes(pairs)
    if colors:
        palette = generated_palette(len(pairs))
        scheme = ClassScheme(
            [LandCoverClass(c.code, c.name, colors.get(c.code, palette[i])) for i, c in enumerate(scheme.classes)],
            source="label raster",
        )
    lut = np.full(256, NODATA, np.uint8)
    for k, c in enumerate(scheme.codes):
        lut[c] = k
    index = np.full((H, W), NODATA, np.uint8)
    sel = codes >= 0
    index[sel] = lut[codes[sel]]
    counts = np.bincount(index[sel].ravel(), minlength=len(scheme))[: len(scheme)]
    index, scheme, counts, notes = drop_empty(index, scheme, counts, source, feedback)
    return Labels(index, scheme, counts, source, notes)
