"""The classes of a classification, and reference class values matched to them.

Where a classification's classes come from, in order of precedence: a checkpoint's
metadata (the user asked for it), classes given by the caller (the QGIS layer's paletted
renderer), the ``<raster stem>.qml`` beside the raster, the raster's GDAL category names.
Reference class values are integer codes or class names matched case-, space- and
underscore-insensitively (:func:`optsar_plugin.classes.normalise_name`).
"""

from __future__ import annotations

import math
import re
from typing import Dict, Optional

from ..classes import ClassScheme, generated_palette
from ..errors import InputError
from ..vector_io import read_class_values

INT_RE = re.compile(r"^[+-]?\d+$")
MAX_LISTED_CLASSES = 12


def as_scheme(classes) -> Optional[ClassScheme]:
    """A :class:`ClassScheme` from a scheme, ``[{code, name[, color]}]`` or ``[(code, name)]``; None stays None."""
    if classes is None:
        return None
    if isinstance(classes, ClassScheme):
        return classes
    items = list(classes)
    if items and isinstance(items[0], dict):
        palette = generated_palette(len(items))
        return ClassScheme.from_list(
            [{"code": d["code"], "name": d["name"], "color": d.get("color") or palette[i]} for i, d in enumerate(items)]
        )
    return ClassScheme.from_names_and_codes([(int(c), str(n)) for c, n in items])


def classification_classes(
    classification: str, band: int = 1, checkpoint: Optional[str] = None, classes=None
) -> tuple:
    """``(ClassScheme or None, description of where it came from)``.

    Order: a checkpoint's metadata (the user asked for it), ``classes`` given by the caller
    (the QGIS layer's paletted renderer), ``<raster stem>.qml`` beside the raster, the
    raster's GDAL category names.
    """
    if checkpoint:
        from ..checkpoints import load_metadata

        return load_metadata(checkpoint).classes, f"checkpoint {checkpoint}"
    scheme = as_scheme(classes)
    if scheme is not None:
        return scheme, "the layer's style"
    from ..styles import qml_path_for, read_qml_classes, read_raster_classes

    qml = qml_path_for(classification)
    if qml.is_file():
        try:
            return read_qml_classes(qml), f"style {qml}"
        except InputError:
            pass  # a style without a palette names no classes; try the raster itself
    try:
        scheme = read_raster_classes(classification, band)
    except InputError:
        scheme = None
    if scheme is not None:
        return scheme, "the raster's category names"
    return None, "none (codes only)"


def make_resolver(path: str, layer: Optional[str], class_field: str, scheme: Optional[ClassScheme], source: str):
    """A function turning a class-field value into a class code; checks every value first.

    Integer fields hold codes.  Real fields must hold whole numbers.  Text fields hold class
    names (matched to the classification's classes) or integer codes written as text; a name
    that matches no class is an error listing the known names.
    """
    kind, values = read_class_values(path, layer, class_field)
    mapping: Dict[object, int] = {}
    unmatched = []
    for v in values:
        if kind == "integer":
            mapping[v] = int(v)
        elif kind == "real":
            if not math.isfinite(float(v)) or float(v) != int(v):
                raise InputError(
                    f"The class field '{class_field}' of '{path}' holds {v}, which is not a whole number class code."
                )
            mapping[v] = int(v)
        else:
            text = str(v).strip()
            if not text:
                continue
            code = scheme.code_for_name(text) if scheme is not None else None
            if code is None and INT_RE.match(text):
                code = int(text)
            if code is None:
                unmatched.append(text)
            else:
                mapping[v] = code
    if unmatched:
        if scheme is None:
            raise InputError(
                f"The reference classes in field '{class_field}' are names ({', '.join(repr(u) for u in unmatched[:10])}), "
                "but the classification names no classes (no .qml style beside it, no GDAL category names). "
                "Give the checkpoint that produced it (CHECKPOINT / --checkpoint), style the raster, or use integer codes."
            )
        known = ", ".join(f"{c.code} '{c.name}'" for c in scheme.classes[:MAX_LISTED_CLASSES])
        if len(scheme) > MAX_LISTED_CLASSES:
            known += f" and {len(scheme) - MAX_LISTED_CLASSES} more"
        raise InputError(
            f"Reference class name(s) {', '.join(repr(u) for u in unmatched)} in field '{class_field}' match no class "
            f"of the classification. Known classes (from {source}): {known}."
        )

    def resolve(value):
        try:
            return mapping[value]
        except KeyError:
            raise InputError(f"Unexpected class value {value!r} in field '{class_field}'.") from None

    return resolve
