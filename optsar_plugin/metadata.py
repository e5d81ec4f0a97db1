"""Checkpoint metadata as a typed object, validated once against one schema; and the one "does it fit" check.

:class:`CheckpointMetadata` is what a checkpoint says about its network (see
:mod:`optsar_plugin.checkpoints` for the file).  The JSON form, format version 1::

    format_version  1                                 required, an integer this version reads
    model           {"name": str, "config": {...}}    required; config holds optical_bands, sar_bands,
                                                      num_classes (>= 1) and the constructor's other options
    bands           {"optical": [str], "sar": [str]}  required; band names in input order, one per model band
    normalisation   {"optical": stats, "sar": stats}  required; stats = {"method": "robust_zscore" (optional),
                                                      "to_db": bool, "center": [finite], "scale": [> 0],
                                                      "clip": > 0 (optional), "units": units (optional)},
                                                      one value per band; units = the training data's encoding
                                                      (normalisation.raster_units): optical {"scale": [finite],
                                                      "offset": [finite], "source": str}, SAR {"to_db": [bool],
                                                      "source": str}
    classes         [{"code": 0-254, "name": str, "color": "#RRGGBB"}]  required, one per model class,
                                                      in logit order, unique codes
    nodata          {"output": 255, "ignore_index": 255}  optional (always these values)
    tile_size       int, 32-16384                     optional; the training tile
    training        {...}                             optional; provenance, any JSON object
    created         str                               required in a written file (ISO-8601 UTC)
    content_hash    64 hex digits                     required in a written file (sha256 of the weights)

:meth:`CheckpointMetadata.from_dict` refuses anything outside this schema with one
line naming the file and the field (``classes[2].color``); :meth:`~CheckpointMetadata.to_dict`
gives the JSON form back.  JSON is parsed with :func:`load_json`, which bounds the
nesting depth (:data:`MAX_JSON_DEPTH`) and turns everything a parser can raise into a
:class:`~optsar_plugin.errors.CheckpointError` naming the file.

:func:`check_fit` is the one answer to "does this checkpoint fit these inputs" (the
network asked for, band counts, band names, tile and overlap), used by the engine and
by the Processing algorithms' early parameter checks; it is torch-free.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .classes import NODATA, ClassScheme, LandCoverClass
from .errors import CheckpointError, InputError, OptsarError
from .options import check_tiling, default_overlap, default_tile

FORMAT_VERSION = 1
MAX_JSON_DEPTH = 32
NORMALISATION_METHODS = ("robust_zscore",)
KEYS = ("format_version", "model", "bands", "normalisation", "classes", "nodata", "tile_size", "training", "created",
        "content_hash")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")


# -- bounded JSON ------------------------------------------------------------------------------


def json_depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0), without recursion."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
    return depth


def load_json(raw, what: str, max_depth: int = MAX_JSON_DEPTH):
    """``json.loads`` that never lets a parser error escape: a :class:`CheckpointError` naming ``what``.

    Deeply nested input raises ``RecursionError`` inside the parser (or would exhaust
    the stack of whoever walks it later); anything nested more than ``max_depth`` levels
    is refused.
    """
    try:
        value = json.loads(raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw)
    except RecursionError:
        raise CheckpointError(f"{what} is nested too deeply to be read.") from None
    except (ValueError, TypeError, MemoryError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CheckpointError(f"{what} is not valid JSON ({type(exc).__name__}).") from None
    if json_depth(value) > max_depth:
        raise CheckpointError(f"{what} is nested more than {max_depth} levels deep.")
    return value


# -- field checks ------------------------------------------------------------------------------


class _Fields:
    """Field checks for one document: every failure names the source and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, name: str, problem: str):
        where = f"Checkpoint '{self.source}' metadata" if self.source else "Checkpoint metadata"
        raise CheckpointError(f"{where} field '{name}' {problem}.")

    def obj(self, value, name: str, required: Sequence[str] = (), optional: Optional[Sequence[str]] = ()) -> Dict:
        """A JSON object with the ``required`` keys; ``optional=None`` allows any other key, else only those."""
        if not isinstance(value, dict):
            self.fail(name, f"must be a JSON object, not {type(value).__name__}")
        for key in required:
            if key not in value:
                self.fail(f"{name}.{key}" if name else key, "is missing")
        if optional is not None:
            for key in value:
                if key not in required and key not in optional:
                    self.fail(f"{name}.{key}" if name else str(key), "is not part of the checkpoint schema")
        return value

    def integer(self, value, name: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(name, f"must be a whole number from {lo} to {hi}, got {value!r:.40}")
        return value

    def text(self, value, name: str, pattern=None, max_len: int = 200) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_len or (
                pattern is not None and not pattern.match(value)):
            self.fail(name, f"must be {'a text' if pattern is None else 'of the form ' + pattern.pattern}"
                            f" (up to {max_len} characters), got {value!r:.40}")
        return value

    def numbers(self, value, name: str, count: int, positive: bool = False) -> List[float]:
        if not isinstance(value, list) or len(value) != count:
            self.fail(name, f"must be a list of {count} number(s), one per band")
        for i, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
                self.fail(f"{name}[{i}]", f"must be a finite{' positive' if positive else ''} number, got {v!r:.40}")
        return [float(v) for v in value]


def _units(f: _Fields, value, name: str, count: int) -> None:
    u = f.obj(value, name, optional=("scale", "offset", "to_db", "source"))
    if "scale" in u or "offset" in u:
        f.numbers(u.get("scale"), f"{name}.scale", count)
        f.numbers(u.get("offset"), f"{name}.offset", count)
    elif "to_db" in u:
        flags = u["to_db"]
        if not isinstance(flags, list) or len(flags) != count or not all(isinstance(b, bool) for b in flags):
            f.fail(f"{name}.to_db", f"must be a list of {count} true/false value(s), one per band")
    else:
        f.fail(name, "must give scale and offset (optical) or to_db (SAR)")


def _stats(f: _Fields, value, name: str, count: int) -> Dict:
    s = f.obj(value, name, required=("to_db", "center", "scale"), optional=("method", "clip", "units"))
    if "units" in s:
        _units(f, s["units"], f"{name}.units", count)
    if s.get("method", NORMALISATION_METHODS[0]) not in NORMALISATION_METHODS:
        f.fail(f"{name}.method", f"must be one of {', '.join(NORMALISATION_METHODS)}, got {s['method']!r:.40}")
    if not isinstance(s["to_db"], bool):
        f.fail(f"{name}.to_db", "must be true or false")
    f.numbers(s["center"], f"{name}.center", count)
    f.numbers(s["scale"], f"{name}.scale", count, positive=True)
    if "clip" in s:
        f.numbers([s["clip"]], f"{name}.clip", 1, positive=True)
    return dict(s)


def _classes(f: _Fields, value, count: int) -> ClassScheme:
    if not isinstance(value, list) or len(value) != count:
        f.fail("classes", f"must list {count} class(es), one per model output (model.config.num_classes)")
    out = []
    for i, c in enumerate(value):
        c = f.obj(c, f"classes[{i}]", required=("code", "name", "color"))
        code = f.integer(c["code"], f"classes[{i}].code", 0, NODATA - 1)
        name = f.text(c["name"], f"classes[{i}].name")
        color = f.text(c["color"], f"classes[{i}].color", _COLOR)
        out.append(LandCoverClass(code, name, color.upper()))
    try:
        return ClassScheme(out, source="checkpoint")
    except OptsarError as exc:
        f.fail("classes", f"is invalid: {exc}")


# -- the typed object --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointMetadata:
    """Everything a checkpoint says about its network, validated (see the module docstring for the schema).

    Build it with :meth:`from_dict` (a file's JSON, or a dict built in memory - a training
    run's before saving: ``written=False`` lets ``format_version``, ``created`` and
    ``content_hash`` be absent).
    """

    model: str
    config: Mapping[str, Any]
    optical_bands: Tuple[str, ...]
    sar_bands: Tuple[str, ...]
    normalisation: Mapping[str, Mapping[str, Any]]
    classes: ClassScheme
    tile_size: Optional[int] = None
    training: Optional[Mapping[str, Any]] = None
    created: str = ""
    content_hash: str = ""
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)  # 'nodata' as read

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "", written: bool = True) -> CheckpointMetadata:
        """Validate ``data`` against the schema; a :class:`CheckpointError` names ``source`` and the field."""
        f = _Fields(str(source))
        required = ("model", "bands", "normalisation", "classes")
        d = f.obj(data, "", required=required + (("format_version", "created", "content_hash") if written else ()),
                  optional=KEYS)
        version = d.get("format_version", FORMAT_VERSION)
        if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
            raise CheckpointError(
                f"Checkpoint '{source}' uses checkpoint format {version}, newer than this OptSAR Fusion reads "
                f"(up to {FORMAT_VERSION}). Update the plugin to use it."
            )
        f.integer(version, "format_version", 1, FORMAT_VERSION)
        model = f.obj(d["model"], "model", required=("name", "config"))
        name = f.text(model["name"], "model.name", max_len=64)
        config = f.obj(model["config"], "model.config", required=("optical_bands", "sar_bands", "num_classes"),
                       optional=None)
        counts = {k: f.integer(config[k], f"model.config.{k}", 1, 1000) for k in ("optical_bands", "sar_bands")}
        k = f.integer(config["num_classes"], "model.config.num_classes", 1, NODATA)
        bands = f.obj(d["bands"], "bands", required=("optical", "sar"))
        names = {}
        for kind in ("optical", "sar"):
            listed = bands[kind]
            if not isinstance(listed, list) or len(listed) != counts[f"{kind}_bands"]:
                f.fail(f"bands.{kind}", f"must list {counts[f'{kind}_bands']} band name(s), one per model band "
                                        f"(model.config.{kind}_bands)")
            names[kind] = tuple(f.text(b, f"bands.{kind}[{i}]") for i, b in enumerate(listed))
        norm = f.obj(d["normalisation"], "normalisation", required=("optical", "sar"))
        stats = {kind: _stats(f, norm[kind], f"normalisation.{kind}", len(names[kind])) for kind in ("optical", "sar")}
        if "nodata" in d and d["nodata"] != {"output": NODATA, "ignore_index": NODATA}:
            f.fail("nodata", f'must be {{"output": {NODATA}, "ignore_index": {NODATA}}}')
        if d.get("training") is not None:
            f.obj(d["training"], "training", optional=None)
        return cls(
            model=name, config=dict(config), optical_bands=names["optical"], sar_bands=names["sar"],
            normalisation=stats, classes=_classes(f, d["classes"], k),
            tile_size=f.integer(d["tile_size"], "tile_size", 32, 16384) if d.get("tile_size") is not None else None,
            training=d.get("training"),
            created=f.text(d["created"], "created", max_len=64) if "created" in d else "",
            content_hash=f.text(d["content_hash"], "content_hash", _HEX64) if "content_hash" in d else "",
            format_version=version, extra={"nodata": d["nodata"]} if "nodata" in d else {},
        )

    @classmethod
    def coerce(cls, metadata, source: str = "") -> CheckpointMetadata:
        """``metadata`` itself if it is one, else :meth:`from_dict` of a dict built in memory (``written=False``)."""
        return metadata if isinstance(metadata, cls) else cls.from_dict(metadata, source, written=False)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form (absent optional fields stay absent)."""
        out: Dict[str, Any] = {
            "format_version": self.format_version,
            "model": {"name": self.model, "config": dict(self.config)},
            "bands": {"optical": list(self.optical_bands), "sar": list(self.sar_bands)},
            "normalisation": {k: dict(v) for k, v in self.normalisation.items()},
            "classes": self.classes.to_list(),
            **self.extra,
        }
        if self.tile_size is not None:
            out["tile_size"] = self.tile_size
        if self.training is not None:
            out["training"] = self.training
        if self.created:
            out["created"] = self.created
        if self.content_hash:
            out["content_hash"] = self.content_hash
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def default_tile(self) -> int:
        """The training tile rounded to a multiple of 32 (>= 64; 510 -> 512), else the default tile."""
        return default_tile(self.tile_size)


# -- does a checkpoint fit the inputs? ---------------------------------------------------------


@dataclass(frozen=True)
class BandChoice:
    """The bands given for one input: how many, their 1-based numbers and names where known, the raster's name."""

    count: int
    numbers: Tuple[int, ...] = ()
    names: Optional[Tuple[str, ...]] = None
    source: str = ""

    @classmethod
    def of(cls, numbers: Sequence[int], names: Optional[Sequence[Optional[str]]] = None, source: str = ""):
        """From band numbers; ``names`` count only when every band has one."""
        known = tuple(str(n) for n in names) if names and all(names) else None
        return cls(len(numbers), tuple(int(b) for b in numbers), known, str(source))


ENGINE_LABELS = {"model": "model", "optical_bands": "optical_bands", "sar_bands": "sar_bands"}


def check_fit(meta: CheckpointMetadata, *, model: Optional[str] = None, optical: Optional[BandChoice] = None,
              sar: Optional[BandChoice] = None, tile_size: Optional[int] = None, overlap: Optional[int] = None,
              checkpoint: str = "", labels: Mapping[str, str] = ENGINE_LABELS, strict_names: bool = False) -> List[str]:
    """Check that inputs fit the checkpoint ``meta``; returns warnings, raises :class:`InputError` otherwise.

    ``model``: the network asked for (None: any).  ``optical``/``sar``: the bands
    chosen; their counts must equal the checkpoint's.  Band names are compared
    (case-insensitively) when both sides have them: the same names in another order is
    an error (the bands would reach the wrong inputs), merely different names a warning,
    because providers name bands differently - unless ``strict_names``.  ``tile_size``
    and ``overlap`` (None: the checkpoint's tile, min(64, tile/4)) must suit the
    networks.  ``labels`` names the parameters in messages (engine keywords by default;
    the algorithms pass their parameter names).
    """
    where = f"The checkpoint '{checkpoint}'" if checkpoint else "The checkpoint"
    if model and model != meta.model:
        raise InputError(
            f"{where} holds a {meta.model} network, but {labels['model']} is {model}. Choose {meta.model} "
            f"(or leave {labels['model']} empty), or a {model} checkpoint."
        )
    problems, warnings = [], []
    for kind, label, choice, expected in (("optical", "optical", optical, meta.optical_bands),
                                          ("sar", "SAR", sar, meta.sar_bands)):
        if choice is not None:
            _check_bands(f"{where} ({meta.model})", label, choice, expected, labels[f"{kind}_bands"], strict_names,
                         problems, warnings)
    if problems:
        raise InputError(" ".join(problems))
    tile = int(tile_size) if tile_size is not None else meta.default_tile()
    check_tiling(tile, default_overlap(tile) if overlap is None else int(overlap))
    return warnings


def _check_bands(where, label, choice: BandChoice, expected, parameter, strict, problems, warnings) -> None:
    chosen = f" ({', '.join(map(str, choice.numbers))})" if choice.numbers else ""
    of = f" of '{choice.source}'" if choice.source else ""
    if choice.count != len(expected):
        problems.append(
            f"{where} was trained on {len(expected)} {label} band(s) in this order: {', '.join(expected)}; "
            f"{choice.count} band(s){of} were chosen{chosen}. Set {parameter} to the same bands in the same order."
        )
        return
    if not choice.names:
        return
    a = [n.strip().lower() for n in expected]
    b = [n.strip().lower() for n in choice.names]
    if a == b:
        return
    if strict or sorted(a) == sorted(b):
        problems.append(
            f"{where} expects the {label} bands in the order {', '.join(expected)}; the bands chosen{of} are "
            f"{', '.join(choice.names)}{chosen}. Set {parameter} to the same bands in the same order."
        )
    else:
        warnings.append(
            f"The {label} band names differ: the checkpoint was trained on {', '.join(expected)}, the bands "
            f"chosen{of} are named {', '.join(choice.names)}; check that they are the same bands in the same order."
        )
