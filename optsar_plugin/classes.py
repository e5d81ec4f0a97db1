"""Class schemes: codes, names and colours that travel with the data.

One :class:`ClassScheme` object carries the classes from the training reference
into the checkpoint metadata, the GeoTIFF colour table and category names, the
``.qml`` style and the accuracy report's class matching.  Class code 0 is an
ordinary class; the output nodata value is :data:`NODATA` (255), which no class
may use.
"""

from __future__ import annotations

import colorsys
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

from .errors import InputError

NODATA = 255
SCHEME_DIR = Path(__file__).resolve().parent / "schemes"  # package data: travels with the engine


def normalise_name(name: str) -> str:
    """Case-, space-, underscore- and hyphen-insensitive key for matching class names."""
    return re.sub(r"[\s_\-/]+", " ", str(name).strip().lower()).strip()


@dataclass(frozen=True)
class LandCoverClass:
    code: int
    name: str
    color: str  # '#RRGGBB'

    def rgb(self) -> tuple:
        c = self.color.lstrip("#")
        return tuple(int(c[i : i + 2], 16) for i in (0, 2, 4))


@dataclass
class ClassScheme:
    """Classes in order (for a network: logit order).  ``byte_codes`` (the default) keeps every code in 0-254,
    as in a uint8 classification with nodata 255; schemes describing other maps (16-bit, negative codes; the
    classes of an accuracy assessment) set it to False."""

    classes: List[LandCoverClass]
    source: str = "custom"
    byte_codes: bool = field(default=True, compare=False)
    _by_code: Dict[int, LandCoverClass] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        codes = [c.code for c in self.classes]
        if len(set(codes)) != len(codes):
            raise InputError(f"Class codes must be unique, got {codes}.")
        for c in self.classes:
            if self.byte_codes and not 0 <= int(c.code) <= 254:
                raise InputError(
                    f"Class '{c.name}' has code {c.code}; codes must be 0-254 (255 is the nodata value)."
                )
        self._by_code = {c.code: c for c in self.classes}

    # -- access ---------------------------------------------------------------------------
    @property
    def codes(self) -> List[int]:
        return [c.code for c in self.classes]

    @property
    def names(self) -> List[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    def by_code(self, code: int) -> LandCoverClass:
        return self._by_code[int(code)]

    def code_for_name(self, name: str) -> Optional[int]:
        key = normalise_name(name)
        for c in self.classes:
            if normalise_name(c.name) == key:
                return c.code
        return None

    def color_table(self) -> Dict[int, tuple]:
        """{code: (r, g, b, 255)} for a GDAL colour table."""
        return {c.code: (*c.rgb(), 255) for c in self.classes}

    # -- (de)serialisation ----------------------------------------------------------------
    def to_list(self) -> List[dict]:
        return [{"code": int(c.code), "name": c.name, "color": c.color} for c in self.classes]

    @classmethod
    def from_list(cls, items: Iterable[dict], source: str = "custom") -> ClassScheme:
        return cls([LandCoverClass(int(i["code"]), str(i["name"]), str(i["color"]).upper()) for i in items], source)

    @classmethod
    def from_names_and_codes(cls, pairs: Sequence[tuple]) -> ClassScheme:
        """Build a scheme from (code, name) pairs, colouring from a known scheme where names match."""
        names = [str(n) for _, n in pairs]
        known = match_known_scheme(names)
        palette = generated_palette(len(pairs))
        out = []
        for i, (code, name) in enumerate(sorted(pairs, key=lambda p: int(p[0]))):
            color = palette[i]
            if known is not None:
                kc = known.code_for_name(name)
                if kc is not None:
                    color = known.by_code(kc).color
            out.append(LandCoverClass(int(code), str(name), color))
        return cls(out, source=known_source(known))


def known_source(scheme: Optional[ClassScheme]) -> str:
    return scheme.source if scheme is not None else "generated"


def load_known_schemes() -> Dict[str, ClassScheme]:
    schemes = {}
    for path in sorted(SCHEME_DIR.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        schemes[data["id"]] = ClassScheme.from_list(data["classes"], source=data["id"])
    return schemes


def match_known_scheme(names: Sequence[str]) -> Optional[ClassScheme]:
    """The known scheme whose class names cover all of ``names`` (the smallest such), or None."""
    keys = {normalise_name(n) for n in names}
    best = None
    for scheme in load_known_schemes().values():
        if keys <= {normalise_name(n) for n in scheme.names}:
            if best is None or len(scheme) < len(best):
                best = scheme
    return best


def generated_palette(n: int) -> List[str]:
    """``n`` distinct, readable colours (golden-angle hues, alternating lightness)."""
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light = 0.45 if i % 2 == 0 else 0.6
        r, g, b = colorsys.hls_to_rgb(h, light, 0.65)
        out.append(f"#{int(r * 255):02X}{int(g * 255):02X}{int(b * 255):02X}")
    return out
