"""The README's algorithm reference names every parameter and output each algorithm has."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_sections():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    parts = re.split(r"^### (optsar:\w+)\s*$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def test_readme_documents_every_parameter_and_output(processing_provider):
    from qgis.core import QgsProcessingModelAlgorithm

    sections = readme_sections()
    missing = []
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for alg in processing_provider.algorithms():
        if isinstance(alg, QgsProcessingModelAlgorithm):  # graphical models: their own section, by id and name
            if f"`{alg.id()}`" not in text or alg.displayName() not in sections.get("graphical-models", text):
                missing.append(f"{alg.id()}: not in the graphical models section")
            continue
        if alg.id().startswith("optsar:"):
            section = sections.get(alg.id())
            if section is None:
                missing.append(f"{alg.id()}: no section")
                continue
            names = [p.name() for p in alg.parameterDefinitions()] + [o.name() for o in alg.outputDefinitions()]
            missing += [f"{alg.id()}: {n}" for n in names if f"`{n}`" not in section and not re.search(rf"\b{n}\b", section)]
            anchor = alg.helpUrl().rsplit("#", 1)[1]
            if f'<a name="{anchor}">' not in section:
                missing.append(f"{alg.id()}: help anchor #{anchor} not in its section")
    assert missing == []


def test_readme_gives_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
