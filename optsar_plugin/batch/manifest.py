"""``DIR/manifest.jsonl``: one JSON line per scene, rewritten whole (atomically) as scenes finish.

Each line is a scene's record from :func:`~optsar_plugin.batch.task.run_scene`::

    {"name": "T33UVP_2024-06-01", "status": "done", "output": "/maps/T33UVP_2024-06-01.tif",
     "seconds": 41.2, "device": "cuda:0", "valid_pixels": 120560400, "area_unit": "m²",
     "class_areas": [{"code": 0, "name": "water", "pixels": 5412, "area": 541200.0}, ...],
     "error": null, "worker": "tcp://10.0.0.7:40231", "network_loaded": false,
     "optical": "...", "sar": "...", "cloud_mask": null, "messages": [...]}

``status`` is ``done`` (classified in this run), ``skipped`` (its map was already current)
or ``failed`` (``error`` holds the one-line reason).  The file is rewritten through
:class:`~optsar_plugin.fileio.OutputSet` after every scene, so it is always complete and
valid JSON lines, in the order of the scenes table, and shows the progress of a long run
(scenes not finished yet are absent).
"""

from __future__ import annotations

import json
import os
from typing import Dict, Iterable, List

from ..fileio import OutputSet

MANIFEST = "manifest.jsonl"
STATUSES = ("done", "skipped", "failed")


def manifest_path(folder: str) -> str:
    return os.path.join(os.path.abspath(folder), MANIFEST)


def write_manifest(path: str, records: Iterable[Dict], protected=()) -> str:
    """Write the records as JSON lines (atomically); ``protected`` inputs are never replaced."""
    text = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)
    with OutputSet(protected) as outs:
        outs.write_text(path, "batch manifest", text)
        outs.publish()
    return path


def read_manifest(path: str) -> List[Dict]:
    """The records of an earlier run (an unreadable line is skipped; a missing file is no record)."""
    records = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "name" in item:
                    records.append(item)
    except OSError:
        pass
    return records


def summary(records: Iterable[Dict]) -> Dict[str, int]:
    """{status: number of scenes} for every status."""
    counts = {s: 0 for s in STATUSES}
    for r in records:
        counts[r.get("status", "failed")] = counts.get(r.get("status", "failed"), 0) + 1
    return counts
