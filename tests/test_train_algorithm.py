"""optsar:train through Processing and qgis_process; its checkpoint through optsar:classify."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.helpers import run_algorithm_json, run_qgis_process


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from optsar_plugin.sample_scene import make_sample_scene

    return make_sample_scene(tmp_path_factory.mktemp("train_alg"), size=256, seed=1)


def params(scene, folder, **extra):
    p = {
        "OPTICAL": scene["optical"],
        "SAR": scene["sar"],
        "CLOUD_MASK": scene["cloud_mask"],
        "REFERENCE": scene["reference_train"],
        "CLASS_FIELD": "class_name",
        "MODEL": "cloudlulc_net",
        "MODEL_SIZE": "small",
        "EPOCHS": 2,
        "STEPS_PER_EPOCH": 2,
        "TILE_SIZE": 64,
        "BATCH_SIZE": 2,
        "SEED": 0,
        "DEVICE": "cpu",
        "OUTPUT_CHECKPOINT": str(Path(folder) / "model.safetensors"),
        "OUTPUT_LOG": str(Path(folder) / "log.csv"),
        "OUTPUT_CURVE": str(Path(folder) / "curve.html"),
    }
    p.update(extra)
    return p


def run(alg, parameters):
    import processing

    return processing.run(alg, parameters)


@pytest.fixture(scope="module")
def trained(processing_provider, scene, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained_alg")
    return run("optsar:train", params(scene, folder)), folder


def test_train_writes_checkpoint_log_and_curve(trained):
    from optsar_plugin.checkpoints import read_metadata

    res, folder = trained
    assert Path(res["OUTPUT_CHECKPOINT"]) == folder / "model.safetensors"
    meta = read_metadata(res["OUTPUT_CHECKPOINT"])
    assert meta["model"]["name"] == "cloudlulc_net" and meta["training"]["model_size"] == "small"
    assert [c["name"] for c in meta["classes"]][:3] == ["water", "trees", "grass"]
    assert res["BEST_EPOCH"] in (1, 2) and 0 <= res["BEST_MIOU"] <= 1 and 0 <= res["BEST_OA"] <= 1
    with open(res["OUTPUT_LOG"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and float(rows[res["BEST_EPOCH"] - 1]["val_miou"]) == pytest.approx(res["BEST_MIOU"], abs=1e-5)
    assert "<svg" in Path(res["OUTPUT_CURVE"]).read_text(encoding="utf-8")


def test_checkpoint_classifies_like_the_engine(trained, scene, tmp_path):
    """optsar:classify with the trained checkpoint gives exactly the engine's classification."""
    from optsar_plugin.inference import classify

    res, _ = trained
    common = dict(OPTICAL=scene["optical"], SAR=scene["sar"], CLOUD_MASK=scene["cloud_mask"],
                  CHECKPOINT=res["OUTPUT_CHECKPOINT"], DEVICE="cpu", TILE_SIZE=64, OVERLAP=16, BATCH_SIZE=2)
    alg = run("optsar:classify", {**common, "OUTPUT": str(tmp_path / "alg.tif")})
    eng = classify(scene["optical"], scene["sar"], res["OUTPUT_CHECKPOINT"], str(tmp_path / "eng.tif"),
                   cloud_mask=scene["cloud_mask"], device="cpu", tile_size=64, overlap=16, batch_size=2)
    with rasterio.open(alg["OUTPUT"]) as a, rasterio.open(eng["output"]) as b:
        x, y = a.read(1), b.read(1)
    np.testing.assert_array_equal(x, y)
    assert len(np.unique(x)) >= 2 and set(np.unique(x)) <= {0, 1, 2, 3, 4, 6, 7}


def _memory_layer(scene, classes):
    """A memory layer (not a file: the algorithm must export it) holding polygons of the given classes."""
    from qgis.core import QgsFeature, QgsField, QgsGeometry, QgsRectangle, QgsVectorLayer
    from qgis.PyQt.QtCore import QVariant

    with rasterio.open(scene["optical"]) as ds:
        b = ds.bounds
    layer = QgsVectorLayer("Polygon?crs=EPSG:32633", "ref", "memory")
    layer.dataProvider().addAttributes([QgsField("lc", QVariant.String)])
    layer.updateFields()
    feats = []
    for i, name in enumerate(classes):
        f = QgsFeature(layer.fields())
        x0 = b.left + 100 + 1200 * i
        f.setGeometry(QgsGeometry.fromRect(QgsRectangle(x0, b.bottom + 100, x0 + 1000, b.bottom + 1100)))
        f.setAttribute("lc", name)
        feats.append(f)
    layer.dataProvider().addFeatures(feats)
    return layer


def test_memory_layer_reference(processing_provider, scene, tmp_path):
    layer = _memory_layer(scene, ["grass", "trees"])
    res = run("optsar:train", params(scene, tmp_path, REFERENCE=layer, CLASS_FIELD="lc", EPOCHS=1, STEPS_PER_EPOCH=1,
                                     VALIDATION_FRACTION=0.0))
    from optsar_plugin.checkpoints import read_metadata

    meta = read_metadata(res["OUTPUT_CHECKPOINT"])
    assert [(c["code"], c["name"]) for c in meta["classes"]] == [(1, "trees"), (2, "grass")]  # Dynamic World codes


@pytest.mark.parametrize(
    "extra, match",
    [
        ({"LABELS": "TRUTH"}, "not both"),
        ({"CLASS_FIELD": None}, "CLASS_FIELD"),
        ({"TILE_SIZE": 80}, "multiple of 32"),
        ({"REFERENCE": "ONE_CLASS", "CLASS_FIELD": "lc"}, "one class only"),
        ({"MODEL": "specsar_former", "INIT_CHECKPOINT": "TRAINED"}, "same network"),
    ],
)
def test_bad_input_is_a_processing_exception_without_output(processing_provider, trained, scene, tmp_path, extra,
                                                             match):
    from qgis.core import QgsProcessingException

    values = {"TRUTH": scene["truth"], "ONE_CLASS": _memory_layer(scene, ["water", "water"]),
              "TRAINED": trained[0]["OUTPUT_CHECKPOINT"]}
    extra = {k: values.get(v, v) if isinstance(v, str) else v for k, v in extra.items()}
    p = params(scene, tmp_path, **extra)
    p = {k: v for k, v in p.items() if v is not None}
    with pytest.raises(QgsProcessingException, match=match):
        run("optsar:train", p)
    assert list(tmp_path.iterdir()) == []


def test_help_and_group(processing_provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("optsar:train")
    assert (alg.group(), alg.groupId()) == ("Training", "training")
    help_text = alg.shortHelpString()
    for p in alg.parameterDefinitions():
        assert p.name() in help_text, p.name()
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & p.FlagAdvanced}
    assert advanced == {"STEPS_PER_EPOCH", "PATIENCE", "MAX_MINUTES", "EPOCHS", "CLASS_BALANCE", "CLOUD_SIMULATION",
                        "PRECISION"}
    defaults = {p.name(): p.defaultValue() for p in alg.parameterDefinitions()}
    assert defaults["MODEL_SIZE"] == "auto" and defaults["MAX_STEPS"] == defaults["TILE_SIZE"] == 0
    assert defaults["EPOCHS"] == defaults["BATCH_SIZE"] == 0 and defaults["PATIENCE"] == defaults["MAX_MINUTES"] == -1


def test_qgis_process_trains(scene, tmp_path):
    result = run_algorithm_json("optsar:train", params(scene, tmp_path, EPOCHS=1, STEPS_PER_EPOCH=1))
    assert Path(result["results"]["OUTPUT_CHECKPOINT"]).is_file()
    assert result["results"]["BEST_EPOCH"] == 1
    assert result["results"]["STOPPED"] == "the step budget (1 step) was reached"
    (tmp_path / "bad").mkdir()
    bad = run_qgis_process(["run", "optsar:train", "--", *[f"{k}={v}" for k, v in params(
        scene, tmp_path / "bad", CLASS_FIELD="nope").items()]], check=False)
    assert bad.returncode != 0 and "no field 'nope'" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and list((tmp_path / "bad").iterdir()) == []
