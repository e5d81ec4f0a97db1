"""optsar:classifybatch through qgis_process: maps, manifest, counts, and a mosaic that opens as one paletted layer."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.helpers import ROOT, batch_scenes, run_algorithm_json

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("algorithms.worker_client") is None and not (ROOT / "algorithms" / "worker_client.py").exists(),
    reason="optsar:classifybatch runs in the engine worker process (issue 11), which this tree does not have yet")


def test_classifybatch_with_qgis_process(qgis_app, tmp_path):
    from qgis.core import QgsRasterLayer

    data = batch_scenes(tmp_path / "data")
    out = tmp_path / "maps"
    result = run_algorithm_json("optsar:classifybatch", {
        "SCENES": data["table"], "CHECKPOINT": data["checkpoint"], "OUTPUT_FOLDER": out, "WORKERS": 2,
        "DEVICE": "cpu", "TILE_SIZE": 64, "OVERLAP": 16, "OUTPUT_MOSAIC": out / "region.vrt",
    })["results"]
    assert (result["DONE"], result["SKIPPED"], result["FAILED"]) == (3, 0, 1)
    assert result["OUTPUT_MANIFEST"] == str(out / "manifest.jsonl")
    assert result["OUTPUT_AREAS"] == str(out / "class_areas.csv")
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["done", "done", "done", "failed"]
    assert "broken_sar.tif" in lines[-1]["error"]
    assert sorted(p.name for p in out.glob("scene*.tif")) == ["scene0.tif", "scene1.tif", "scene2.tif"]

    layer = QgsRasterLayer(result["OUTPUT_MOSAIC"], "region")
    assert layer.isValid() and layer.bandCount() == 1
    assert layer.renderer().type() == "paletted"  # the colour table alone makes QGIS show classes
    message, ok = layer.loadNamedStyle(str(out / "region.qml"))
    assert ok, message
    classes = layer.renderer().classes()
    assert [(c.value, c.label) for c in classes] == [(0, "water"), (4, "crops"), (6, "built")]

    again = run_algorithm_json("optsar:classifybatch", {
        "SCENES": data["table"], "CHECKPOINT": data["checkpoint"], "OUTPUT_FOLDER": out, "WORKERS": 1,
        "DEVICE": "cpu", "TILE_SIZE": 64, "OVERLAP": 16})["results"]
    assert (again["DONE"], again["SKIPPED"], again["FAILED"]) == (0, 3, 1)
