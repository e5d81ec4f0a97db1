"""optsar:classify through Processing (as scripts and the Toolbox run it) and through qgis_process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from tests.helpers import random_checkpoint, run_algorithm_json, run_qgis_process, write_raster


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Sample scene (UTM optical 10 bands, EPSG:4326 SAR, cloud mask) and a tiny CloudLULC-Net checkpoint."""
    from optsar_plugin.sample_scene import make_sample_scene

    folder = tmp_path_factory.mktemp("classify_alg")
    paths = make_sample_scene(folder / "scene", size=128, seed=4)
    ck = random_checkpoint(paths["optical"], paths["sar"], folder / "tiny.safetensors")
    return {**paths, **ck, "folder": folder}


def params(data, out, **extra):
    p = {
        "OPTICAL": data["optical"],
        "SAR": data["sar"],
        "CHECKPOINT": data["checkpoint"],
        "MODEL": "cloudlulc_net",
        "DEVICE": "cpu",
        "TILE_SIZE": 64,
        "OVERLAP": 16,
        "BATCH_SIZE": 2,
        "OUTPUT": str(out),
    }
    p.update(extra)
    return p


def run(parameters):
    import processing

    return processing.run("optsar:classify", parameters)


def test_classify_writes_styled_outputs(processing_provider, data, tmp_path):
    from optsar_plugin.styles import read_qml_classes, read_raster_classes

    out = tmp_path / "lc.tif"
    res = run(params(data, out, CLOUD_MASK=data["cloud_mask"], OUTPUT_CONFIDENCE=str(tmp_path / "conf.tif"),
                     OUTPUT_PROBABILITIES=str(tmp_path / "probs.tif"), PRECISION="bf16"))
    assert res["OUTPUT"] == str(out)
    assert res["OUTPUT_CONFIDENCE"] == str(tmp_path / "conf.tif")
    assert res["OUTPUT_PROBABILITIES"] == str(tmp_path / "probs.tif")
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height, ds.dtypes[0], ds.nodata) == (128, 128, "uint8", 255)
        assert ds.crs.to_epsg() == 32633  # the optical grid, although the SAR is in EPSG:4326
        tags = ds.tags()
        assert set(np.unique(ds.read(1))) <= {0, 4, 6, 255}
    assert tags["OPTSAR_MODEL"] == "cloudlulc_net" and tags["OPTSAR_CLOUD_HANDLING"] == "keep"
    assert [c.name for c in read_raster_classes(out)] == ["water", "crops", "built"]
    assert [c.code for c in read_qml_classes(tmp_path / "lc.qml")] == [0, 4, 6]
    with rasterio.open(tmp_path / "probs.tif") as ds:
        assert ds.count == 3 and ds.descriptions == ("water", "crops", "built")


def test_optional_outputs_are_not_written_by_default(processing_provider, data, tmp_path):
    res = run(params(data, tmp_path / "lc.tif"))
    assert not res.get("OUTPUT_CONFIDENCE") and not res.get("OUTPUT_PROBABILITIES")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lc.qml", "lc.tif", "lc.tif.aux.xml"]


def test_band_selection_and_extent(processing_provider, data, tmp_path):
    """Bands given explicitly (in order) and an extent on part of the scene."""
    with rasterio.open(data["optical"]) as ds:
        b = ds.bounds
        res_x = ds.res[0]
    extent = f"{b.left + 20 * res_x},{b.left + 100 * res_x},{b.bottom + 30 * res_x},{b.bottom + 90 * res_x} [EPSG:32633]"
    out = tmp_path / "part.tif"
    run(params(data, out, OPTICAL_BANDS=list(range(1, data["n_optical"] + 1)), SAR_BANDS=[1, 2], EXTENT=extent))
    with rasterio.open(out) as ds:
        assert (ds.width, ds.height) == (80, 60)
        assert ds.transform.c == pytest.approx(b.left + 20 * res_x)


def run_loading(parameters, *to_load):
    """Run optsar:classify as the Toolbox does, with the outputs named in ``to_load`` loaded on completion."""
    from qgis.core import (
        QgsApplication,
        QgsProcessingContext,
        QgsProcessingFeedback,
        QgsProcessingOutputLayerDefinition,
        QgsProject,
    )

    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    p = dict(parameters)
    for name in to_load:
        p[name] = QgsProcessingOutputLayerDefinition(str(p[name]), QgsProject.instance())
    alg = QgsApplication.processingRegistry().createAlgorithmById("optsar:classify")
    results, ok = alg.run(p, context, QgsProcessingFeedback())
    assert ok
    return results, context


def test_style_post_processor_is_set_and_applies_the_classes(processing_provider, data, tmp_path):
    from qgis.core import QgsProcessingFeedback, QgsRasterLayer

    out = tmp_path / "styled.tif"
    feedback = QgsProcessingFeedback()
    results, context = run_loading(params(data, out), "OUTPUT")
    assert results["OUTPUT"] == str(out)
    assert context.willLoadLayerOnCompletion(str(out))
    processor = context.layerToLoadOnCompletionDetails(str(out)).postProcessor()
    assert processor is not None
    layer = QgsRasterLayer(str(out), "lc")
    assert layer.isValid()
    # whatever renderer the layer had, the post-processor gives it the checkpoint's classes
    processor.postProcessLayer(layer, context, feedback)
    assert layer.renderer().type() == "paletted"
    assert [(int(c.value), c.label) for c in layer.renderer().classes()] == [(0, "water"), (4, "crops"), (6, "built")]


def test_confidence_opens_styled_as_a_0_1_colour_ramp(processing_provider, data, tmp_path):
    from qgis.core import QgsProcessingFeedback, QgsRasterLayer

    conf = tmp_path / "conf.tif"
    _, context = run_loading(params(data, tmp_path / "lc.tif", OUTPUT_CONFIDENCE=conf), "OUTPUT_CONFIDENCE")
    assert (tmp_path / "conf.qml").is_file()
    processor = context.layerToLoadOnCompletionDetails(str(conf)).postProcessor()
    layer = QgsRasterLayer(str(conf), "confidence")
    processor.postProcessLayer(layer, context, QgsProcessingFeedback())
    renderer = layer.renderer()
    assert renderer.type() == "singlebandpseudocolor"
    assert (renderer.classificationMin(), renderer.classificationMax()) == (0.0, 1.0)
    items = renderer.shader().rasterShaderFunction().colorRampItemList()
    assert [i.value for i in items][0] == 0.0 and [i.value for i in items][-1] == 1.0


@pytest.mark.parametrize(
    "extra,match",
    [
        ({"TILE_SIZE": 100}, "multiple of 32"),
        ({"TILE_SIZE": 128, "OVERLAP": 64}, "less than half"),
        ({"TILE_SIZE": 64, "OVERLAP": 64}, "less than half"),
        ({"CHECKPOINT": "/nonexistent/model.safetensors"}, "does not exist"),
        ({"MODEL": "mosfnet"}, "holds a cloudlulc_net network, but MODEL is mosfnet"),
        ({"OPTICAL_BANDS": [1, 2, 3]}, r"trained on 10 optical band\(s\).*3 band\(s\)"),
        ({"SAR_BANDS": [2]}, r"2 SAR band\(s\).*VV, VH"),
    ],
)
def test_check_parameter_values_rejects_early(processing_provider, data, tmp_path, extra, match):
    from qgis.core import QgsProcessingException

    out = tmp_path / "never.tif"
    with pytest.raises(QgsProcessingException, match=match):
        run(params(data, out, **extra))
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_clear_errors_without_output(processing_provider, data, tmp_path):
    from qgis.core import QgsProcessingException

    inputs = tmp_path / "in"
    inputs.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    n = data["n_optical"]
    far_sar = write_raster(inputs / "far_sar.tif", np.ones((2, 64, 64), np.float32), transform=from_origin(900000, 100000, 10, 10))
    with pytest.raises(QgsProcessingException, match="does not overlap"):
        run(params(data, out_dir / "a.tif", SAR=far_sar))
    nocrs = write_raster(inputs / "nocrs.tif", np.ones((2, 64, 64), np.float32), crs=None)
    with pytest.raises(QgsProcessingException, match="no coordinate reference system"):
        run(params(data, out_dir / "a.tif", SAR=nocrs))
    empty = write_raster(inputs / "empty.tif", np.zeros((n, 64, 64), np.uint16), transform=from_origin(*_origin(data), 10, 10),
                    nodata=0)
    with pytest.raises(QgsProcessingException, match="No valid pixel"):
        run(params(data, out_dir / "a.tif", OPTICAL=empty))
    broken = inputs / "broken.safetensors"
    raw = Path(data["checkpoint"]).read_bytes()
    broken.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(QgsProcessingException, match="truncated|corrupted"):
        run(params(data, out_dir / "a.tif", CHECKPOINT=str(broken)))
    with pytest.raises(QgsProcessingException, match="does not exist"):
        run(params(data, out_dir / "missing" / "a.tif"))
    assert list(out_dir.iterdir()) == []


def _origin(data):
    with rasterio.open(data["optical"]) as ds:
        return ds.transform.c, ds.transform.f


def test_a_crafted_checkpoint_is_one_line_not_a_crash(data, tmp_path):
    """JSON nested 100 000 levels deep in a checkpoint's metadata aborted qgis_process (RecursionError)."""
    import torch
    from safetensors.torch import save_file

    bomb = tmp_path / "bomb.safetensors"
    save_file({"w": torch.zeros(2)}, str(bomb), metadata={"optsar": "[" * 100_000 + "]" * 100_000})
    proc = run_qgis_process(["run", "optsar:classify", "--", *[f"{k}={v}" for k, v in params(
        data, tmp_path / "out.tif", CHECKPOINT=bomb).items()]], check=False)
    assert proc.returncode == 1, proc.returncode  # an algorithm error, not a signal
    assert "nested too deeply" in proc.stdout + proc.stderr and "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "out.tif").exists()


def test_qgis_process_runs_the_algorithm(data, tmp_path):
    out = tmp_path / "qp.tif"
    result = run_algorithm_json("optsar:classify", params(data, out, OUTPUT_CONFIDENCE=str(tmp_path / "conf.tif")))
    assert Path(result["results"]["OUTPUT"]) == out and out.is_file()
    assert Path(result["results"]["OUTPUT_CONFIDENCE"]).is_file()
    assert (tmp_path / "qp.qml").is_file()
    bad = run_qgis_process(["run", "optsar:classify", "--", *[f"{k}={v}" for k, v in params(
        data, tmp_path / "bad.tif", TILE_SIZE=100).items()]], check=False)
    assert bad.returncode != 0 and "multiple of 32" in bad.stdout + bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr and not (tmp_path / "bad.tif").exists()


def test_help_names_every_parameter(processing_provider):
    from qgis.core import QgsApplication

    alg = QgsApplication.processingRegistry().algorithmById("optsar:classify")
    help_text = alg.shortHelpString()
    for p in alg.parameterDefinitions():
        assert p.name() in help_text, p.name()
    advanced = {p.name() for p in alg.parameterDefinitions() if p.flags() & p.FlagAdvanced}
    assert advanced == {"DEVICE", "TILE_SIZE", "OVERLAP", "BATCH_SIZE", "PRECISION", "TTA"}
