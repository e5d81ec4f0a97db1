"""The scenes table: one row per optical + SAR pair, read from a CSV or any table GDAL/OGR reads.

Columns (names case-insensitive, surrounding spaces ignored): ``optical`` and ``sar``
(required), ``cloud_mask`` and ``name`` (optional; empty cells are fine).  Relative paths
are relative to the table's folder, so a table travels with its data.  A row's ``name``
is the stem of its map (``DIR/<name>.tif``); without one, the optical file's stem.  Names
must be unique and usable as file names: a duplicate or a name with a path separator is
an error naming the rows, before anything runs.  Files are *not* checked here: a missing
file fails its own scene only (one bad scene never stops the others).

A ``.csv`` or ``.txt`` table is read with Python's ``csv`` module (delimiter sniffed among
``,`` ``;`` and tab), so a pip-only machine without GDAL's Python bindings reads it; any other
table (GeoPackage, Excel, ODS, Parquet, a shapefile's attributes, ...) through OGR's first layer.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

from ..errors import InputError

REQUIRED = ("optical", "sar")
OPTIONAL = ("cloud_mask", "name")
_BAD_NAME = re.compile(r"[\\/\x00-\x1f]|^\.+$")


@dataclass(frozen=True)
class SceneSpec:
    """One row of the scenes table: absolute paths (cloud mask may be None) and the map's name."""

    name: str
    optical: str
    sar: str
    cloud_mask: Optional[str] = None
    row: int = 0  # 1-based data row in the table, for messages

    def output(self, folder: str) -> str:
        return os.path.join(os.path.abspath(folder), self.name + ".tif")


def read_scenes(table) -> List[SceneSpec]:
    """The scenes of ``table`` (a path), checked for columns, empty cells and unique names."""
    path = os.fspath(table or "")
    if not path:
        raise InputError("No scenes table was given (a CSV with columns optical, sar[, cloud_mask, name]).")
    if not os.path.isfile(path):
        raise InputError(f"The scenes table '{path}' does not exist.")
    rows = _csv_rows(path) if path.lower().endswith((".csv", ".txt")) else _ogr_rows(path)
    base = os.path.dirname(os.path.abspath(path))
    scenes = [_scene(row, k, base, path) for k, row in enumerate(rows, start=1) if any(v for v in row.values())]
    if not scenes:
        raise InputError(f"The scenes table '{path}' has no scene (no data row).")
    _check_names(scenes, path)
    return scenes


def _columns(names, path: str) -> Dict[str, str]:
    """{wanted column: the table's column name}; a missing required column is an error."""
    found = {str(n).strip().lower(): n for n in names if n is not None}
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise InputError(
            f"The scenes table '{path}' has no column {' or '.join(repr(m) for m in missing)}; it needs the columns "
            f"optical and sar (and optionally cloud_mask and name); its columns: {', '.join(map(str, names)) or 'none'}."
        )
    return {c: found[c] for c in REQUIRED + OPTIONAL if c in found}


def _csv_rows(path: str) -> List[Dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Cannot read the scenes table '{path}': {exc}") from None
    try:
        dialect = csv.Sniffer().sniff(text.split("\n", 1)[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.DictReader(text.splitlines(), dialect=dialect)
    cols = _columns(reader.fieldnames or [], path)
    return [{c: (row.get(name) or "").strip() for c, name in cols.items()} for row in reader]


def _ogr_rows(path: str) -> List[Dict[str, str]]:
    from ..vector_io import open_layer

    ds, layer = open_layer(path, None, "scenes table")
    defn = layer.GetLayerDefn()
    cols = _columns([defn.GetFieldDefn(i).GetName() for i in range(defn.GetFieldCount())], path)
    rows = []
    layer.ResetReading()
    for feature in layer:
        rows.append({c: str(feature.GetField(name) or "").strip() for c, name in cols.items()})
    del ds
    return rows


def _scene(row: Dict[str, str], k: int, base: str, path: str) -> SceneSpec:
    for c in REQUIRED:
        if not row.get(c):
            raise InputError(f"Row {k} of the scenes table '{path}' has no {c} raster (the cell is empty).")

    def absolute(value: str) -> Optional[str]:
        if not value:
            return None
        if "://" in value or value.startswith("/vsi"):
            return value  # a URL or a GDAL virtual file system path: as given
        return os.path.normpath(os.path.join(base, os.path.expanduser(value)))

    optical = absolute(row["optical"])
    name = row.get("name") or os.path.splitext(os.path.basename(optical.rstrip("/")))[0]
    return SceneSpec(name=name, optical=optical, sar=absolute(row["sar"]), cloud_mask=absolute(row.get("cloud_mask", "")),
                     row=k)


def _check_names(scenes: List[SceneSpec], path: str) -> None:
    seen: Dict[str, int] = {}
    for s in scenes:
        if _BAD_NAME.search(s.name):
            raise InputError(f"Row {s.row} of the scenes table '{path}': the name '{s.name}' cannot be a file name "
                             "(no slashes or control characters).")
        key = s.name.lower()  # case-insensitive file systems would merge 'A' and 'a'
        if key in seen:
            raise InputError(f"Rows {seen[key]} and {s.row} of the scenes table '{path}' have the same name "
                             f"'{s.name}'; give each scene its own name (column name) so their maps do not collide.")
        seen[key] = s.row
