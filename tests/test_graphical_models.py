"""The shipped graphical models run with qgis_process on the sample scene and expose the accuracy numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import run_qgis_process, train_tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "resources" / "models"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene")
    from optsar_plugin.sample_scene import make_sample_scene

    return make_sample_scene(out / "scene", size=160, seed=3)


@pytest.fixture(scope="module")
def checkpoint(scene, tmp_path_factory):
    return train_tiny_checkpoint(scene, tmp_path_factory.mktemp("ckpt") / "cloudlulc.safetensors")


def run_model(model_file, params):
    args = ["run", str(MODELS / model_file), "--json", "--"] + [f"{k}={v}" for k, v in params.items()]
    proc = run_qgis_process(args)
    return json.loads(proc.stdout[proc.stdout.index("{"):])["results"]


def check_accuracy_results(results, out):
    for key in ("assess:OA", "assess:KAPPA", "assess:MIOU", "assess:MACRO_F1"):
        assert isinstance(results[key], float) and math.isfinite(results[key]), key
    assert 0.0 <= results["assess:OA"] <= 1.0
    metrics = json.loads(Path(results["assess:Accuracy metrics"]).read_text())
    assert metrics["summary"]["overall_accuracy"] == pytest.approx(results["assess:OA"])
    assert Path(results["assess:Accuracy report"]).read_text().lstrip().lower().startswith("<!doctype html")
    assert Path(results["classify:Land cover map"]) == out / "map.tif"
    assert (out / "map.qml").is_file()


def test_model_files_are_offered_by_the_provider():
    listing = run_qgis_process(["list"]).stdout
    assert "Classify and assess" in listing
    assert "Train, classify and assess" in listing


def test_classify_and_assess(scene, checkpoint, tmp_path):
    results = run_model("classify_and_assess.model3", {
        "optical": scene["optical"], "sar": scene["sar"], "network": "cloudlulc_net",
        "reference": scene["reference_test"], "class_field": "class_name", "tile_size": 64,
        "checkpoint": checkpoint,
        "classify:Land cover map": tmp_path / "map.tif",
        "assess:Accuracy report": tmp_path / "report.html",
        "assess:Accuracy metrics": tmp_path / "metrics.json",
    })
    check_accuracy_results(results, tmp_path)


def test_train_classify_and_assess(scene, tmp_path):
    results = run_model("train_classify_and_assess.model3", {
        "optical": scene["optical"], "sar": scene["sar"], "network": "cloudlulc_net",
        "training": scene["reference_train"], "training_field": "class_name",
        "reference": scene["reference_test"], "class_field": "class_name", "tile_size": 64, "epochs": 1,
        "train:Checkpoint": tmp_path / "model.safetensors",
        "classify:Land cover map": tmp_path / "map.tif",
        "assess:Accuracy report": tmp_path / "report.html",
        "assess:Accuracy metrics": tmp_path / "metrics.json",
    })
    check_accuracy_results(results, tmp_path)
    from optsar_plugin.checkpoints import read_metadata

    meta = read_metadata(tmp_path / "model.safetensors")
    assert meta["model"]["name"] == "cloudlulc_net"
    assert [c["name"] for c in meta["classes"]]  # classes travelled from the reference into the checkpoint
