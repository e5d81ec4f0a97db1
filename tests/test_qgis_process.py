"""The plugin through QGIS's own command line, as batch users run it."""

from __future__ import annotations

from tests.helpers import run_algorithm_json, run_qgis_process


def test_list_shows_the_provider_and_its_algorithms():
    out = run_qgis_process(["list"]).stdout
    assert "OptSAR Fusion" in out
    for alg in ("optsar:checkenvironment", "optsar:installdependencies", "optsar:classify", "optsar:train",
                "optsar:assessaccuracy", "optsar:stratifiedsample", "optsar:samplescene",
                "optsar:classify_and_assess", "optsar:train_classify_and_assess"):
        assert alg in out, f"{alg} missing from qgis_process list"


def test_checkenvironment_json_reports_torch():
    import torch

    result = run_algorithm_json("optsar:checkenvironment", {})
    assert result["algorithm_details"]["id"] == "optsar:checkenvironment"
    assert result["results"]["TORCH_VERSION"] == str(torch.__version__)
    assert result["results"]["READY"] is True


def test_installdependencies_dry_run_plans_nothing_destructive():
    result = run_algorithm_json("optsar:installdependencies", {"DRY_RUN": "true"})
    plan = result["results"]["PLAN"]
    # The worker's Python (the plugin folder's .venv) has torch without CUDA and there is no GPU: nothing to do.
    assert "kept" in plan
    assert "torch==" not in plan and "venv" not in plan.split("kept")[1]
    assert result["results"]["PYTHON"].endswith("/.venv/bin/python")


def test_errors_reach_batch_users_as_one_line_and_non_zero_exit():
    proc = run_qgis_process(["run", "optsar:classify", "--", "OPTICAL=/nonexistent/optical.tif",
                             "SAR=/nonexistent/sar.tif", "CHECKPOINT=/nonexistent/model.safetensors",
                             "MODEL=cloudlulc_net", "OUTPUT=/tmp/never.tif"], check=False)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr


def test_stratifiedsample_json(tmp_path):
    """The sampler in batch: points written, sample size reported, every class sampled."""
    from osgeo import ogr

    from optsar_plugin.sample_scene import make_sample_scene

    scene = make_sample_scene(tmp_path / "scene", size=128, seed=2)
    out = tmp_path / "sample.gpkg"
    result = run_algorithm_json("optsar:stratifiedsample", {
        "CLASSIFICATION": scene["truth"], "ALLOCATION": 1, "TOTAL": 70, "MIN_PER_CLASS": 5, "SEED": 4, "OUTPUT": out,
    })["results"]
    assert result["OUTPUT"] == str(out) and result["SAMPLE_SIZE"] >= 35
    ds = ogr.Open(str(out))
    layer = ds.GetLayer(0)
    assert layer.GetFeatureCount() == result["SAMPLE_SIZE"]
    codes = {f.GetField("map_code") for f in layer}
    import numpy as np
    import rasterio

    with rasterio.open(scene["truth"]) as src:
        mapped = {int(v) for v in np.unique(src.read(1)) if v != 255}
    assert codes == mapped  # equal allocation reaches every mapped class, class 0 included
