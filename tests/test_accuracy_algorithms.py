"""optsar:assessaccuracy and optsar:stratifiedsample through Processing and through qgis_process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers import rect, three_class_map, write_vector


@pytest.fixture
def scene(tmp_path):
    arr, mp = three_class_map(tmp_path)
    feats = [(rect(0, 10, 25, 20), 0), (rect(25, 10, 45, 20), 1), (rect(45, 10, 60, 20), 2)]
    return tmp_path, arr, mp, feats


def _expected_matrix():
    # rect(0..25) is 20 px of class 0 and 5 px of class 1 per row, etc.; 10 rows each
    return np.array([[200, 0, 0], [50, 150, 0], [0, 50, 150]])


def test_assessaccuracy_with_file_layers(processing_provider, scene):
    import processing

    tmp, arr, mp, feats = scene
    ref = write_vector(tmp / "ref.gpkg", feats)
    out = processing.run("optsar:assessaccuracy", {
        "CLASSIFICATION": mp, "BAND": 1, "REFERENCE": ref, "CLASS_FIELD": "cls", "ALL_TOUCHED": False,
        "IGNORE_VALUES": "", "CONFIDENCE": 0.9,
        "OUTPUT_REPORT": str(tmp / "r.html"), "OUTPUT_MATRIX": str(tmp / "m.csv"), "OUTPUT_METRICS": str(tmp / "m.json"),
    })
    metrics = json.loads((tmp / "m.json").read_text())
    np.testing.assert_array_equal(metrics["confusion_matrix"]["counts"], _expected_matrix())
    assert out["OA"] == pytest.approx(500 / 600)
    assert out["KAPPA"] == pytest.approx(metrics["summary"]["kappa"])
    assert out["MIOU"] == pytest.approx(metrics["summary"]["miou"])
    assert out["MACRO_F1"] == pytest.approx(metrics["summary"]["macro_f1"])
    assert out["OUTPUT_REPORT"] == str(tmp / "r.html") and (tmp / "r.html").is_file()
    assert metrics["area_adjusted"]["confidence"] == 0.9


def test_assessaccuracy_memory_layer_and_paletted_renderer_names(processing_provider, scene):
    """A reference layer that is not a file (memory layer) and class names from the layer's style."""
    import processing
    from qgis.core import (
        QgsFeature,
        QgsGeometry,
        QgsPalettedRasterRenderer,
        QgsRasterLayer,
        QgsVectorLayer,
    )
    from qgis.PyQt.QtGui import QColor

    tmp, arr, mp, feats = scene
    raster = QgsRasterLayer(mp, "map")
    assert raster.isValid()
    classes = [QgsPalettedRasterRenderer.Class(v, QColor(c), n) for v, c, n in
               ((0, "#0000ff", "Water"), (1, "#00ff00", "Forest"), (2, "#ff0000", "Urban area"))]
    raster.setRenderer(QgsPalettedRasterRenderer(raster.dataProvider(), 1, classes))
    mem = QgsVectorLayer("Polygon?crs=EPSG:32633&field=label:string", "ref", "memory")
    names = ["water", "FOREST", "urban_area"]
    feats_out = []
    for (wkt, _), name in zip(feats, names):
        f = QgsFeature(mem.fields())
        f.setAttribute("label", name)
        f.setGeometry(QgsGeometry.fromWkt(wkt))
        feats_out.append(f)
    mem.dataProvider().addFeatures(feats_out)
    out = processing.run("optsar:assessaccuracy", {
        "CLASSIFICATION": raster, "REFERENCE": mem, "CLASS_FIELD": "label",
        "OUTPUT_REPORT": str(tmp / "r.html"), "OUTPUT_MATRIX": str(tmp / "m.csv"), "OUTPUT_METRICS": str(tmp / "m.json"),
    })
    metrics = json.loads((tmp / "m.json").read_text())
    np.testing.assert_array_equal(metrics["confusion_matrix"]["counts"], _expected_matrix())
    assert [c["name"] for c in metrics["classes"]] == ["Water", "Forest", "Urban area"]
    assert metrics["inputs"]["class_source"] == "the layer's style"
    assert out["OA"] == pytest.approx(500 / 600)


def test_assessaccuracy_unknown_name_is_a_processing_error(processing_provider, scene):
    import processing
    from qgis.core import QgsProcessingException

    from optsar_plugin.classes import ClassScheme
    from optsar_plugin.styles import write_qml

    tmp, arr, mp, feats = scene
    write_qml(mp, ClassScheme.from_names_and_codes([(0, "water"), (1, "forest"), (2, "urban")]))
    ref = write_vector(tmp / "n.gpkg", [(feats[0][0], "wetland")], field_type="str")
    with pytest.raises(QgsProcessingException, match="wetland.*Known classes"):
        processing.run("optsar:assessaccuracy", {
            "CLASSIFICATION": mp, "REFERENCE": ref, "CLASS_FIELD": "cls",
            "OUTPUT_REPORT": str(tmp / "r.html"), "OUTPUT_MATRIX": str(tmp / "m.csv"), "OUTPUT_METRICS": str(tmp / "m.json"),
        })
    assert not (tmp / "m.json").exists()


def test_stratifiedsample_then_assess(processing_provider, scene):
    import processing
    from qgis.core import QgsVectorLayer

    tmp, arr, mp, feats = scene
    out = processing.run("optsar:stratifiedsample", {
        "CLASSIFICATION": mp, "BAND": 1, "ALLOCATION": 2, "TOTAL": 90, "TARGET_SE": 0.01, "EXPECTED_UA": "0.8",
        "MIN_PER_CLASS": 20, "SEED": 4, "OUTPUT": str(tmp / "sample.gpkg"),
    })
    assert out["SAMPLE_SIZE"] == 90
    assert out["ANTICIPATED_SE"] > 0
    layer = QgsVectorLayer(out["OUTPUT"], "sample", "ogr")
    assert layer.isValid() and layer.featureCount() == 90
    assert {f.name() for f in layer.fields()} >= {"sample_id", "map_code", "map_class", "reference"}
    # label with the map code: a perfect map
    res = processing.run("optsar:assessaccuracy", {
        "CLASSIFICATION": mp, "REFERENCE": out["OUTPUT"], "CLASS_FIELD": "map_code",
        "OUTPUT_REPORT": str(tmp / "r.html"), "OUTPUT_MATRIX": str(tmp / "m.csv"), "OUTPUT_METRICS": str(tmp / "m.json"),
    })
    assert res["OA"] == 1.0 and res["KAPPA"] == 1.0


def test_algorithms_are_documented(processing_provider):
    from qgis.core import QgsApplication

    reg = QgsApplication.processingRegistry()
    for alg_id in ("optsar:assessaccuracy", "optsar:stratifiedsample"):
        alg = reg.algorithmById(alg_id)
        assert alg is not None, alg_id
        assert alg.group() == "Accuracy assessment" and alg.groupId() == "accuracy"
        help_text = alg.shortHelpString()
        for p in alg.parameterDefinitions():
            assert p.name() in help_text, f"{alg_id}: {p.name()} not explained"


def test_assessaccuracy_through_qgis_process_json(scene):
    from tests.helpers import run_algorithm_json

    tmp, arr, mp, feats = scene
    ref = write_vector(tmp / "ref.gpkg", feats)
    result = run_algorithm_json("optsar:assessaccuracy", {
        "CLASSIFICATION": mp, "REFERENCE": ref, "CLASS_FIELD": "cls", "IGNORE_VALUES": "2",
        "OUTPUT_REPORT": tmp / "r.html", "OUTPUT_MATRIX": tmp / "m.csv", "OUTPUT_METRICS": tmp / "m.json",
    })
    r = result["results"]
    metrics = json.loads((tmp / "m.json").read_text())
    # class 2 ignored in map and reference: [[200, 0], [50, 150]]
    np.testing.assert_array_equal(metrics["confusion_matrix"]["counts"], [[200, 0], [50, 150]])
    assert r["OA"] == pytest.approx(350 / 400)
    assert r["KAPPA"] == pytest.approx(metrics["summary"]["kappa"])
    assert r["MIOU"] == pytest.approx(metrics["summary"]["miou"])
    assert r["MACRO_F1"] == pytest.approx(metrics["summary"]["macro_f1"])
    assert r["OUTPUT_METRICS"] == str(tmp / "m.json")
