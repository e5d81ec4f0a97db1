"""Batch classification on a Dask LocalCluster: maps, manifest, reruns, a killed worker, the mosaic, the scenes table."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from tests.helpers import ROOT, batch_scenes

SETTINGS = dict(device="cpu", tile_size=64, overlap=16, batch_size=2)
GOOD = ["scene0", "scene1", "scene2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three small sample scenes and one whose SAR file is not a raster, in a CSV with relative paths."""
    return batch_scenes(tmp_path_factory.mktemp("batch"))


@pytest.fixture(scope="module")
def reference_maps(data):
    """Each good scene classified alone by the engine's classify (what optsar:classify runs)."""
    from optsar_plugin.inference import classify

    out = data["root"] / "single"
    out.mkdir()
    maps = {}
    for k, name in enumerate(GOOD):
        s = data["root"] / f"s{k}"
        classify(s / "optical.tif", s / "sar.tif", data["checkpoint"], out / f"{name}.tif",
                 cloud_mask=s / "cloud_mask.tif", **SETTINGS)
        maps[name] = out / f"{name}.tif"
    return maps


@pytest.fixture(scope="module")
def first_run(data):
    from optsar_plugin.batch import classify_batch

    out = data["root"] / "maps"
    result = classify_batch(data["table"], data["checkpoint"], out, workers=2, mosaic=out / "region.vrt", **SETTINGS)
    return out, result


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(1), ds.colormap(1), ds.transform, ds.crs


def leftovers(folder: Path):
    return [p.name for p in folder.iterdir() if ".optsar-" in p.name]


def test_two_workers_classify_three_scenes_like_classify_and_report_the_broken_one(data, first_run, reference_maps):
    out, result = first_run
    assert (result["done"], result["skipped"], result["failed"]) == (3, 0, 1)
    for name in GOOD:
        got, want = read(out / f"{name}.tif"), read(reference_maps[name])
        assert np.array_equal(got[0], want[0]) and got[1:] == want[1:]
        assert (out / f"{name}.qml").read_text() == reference_maps[name].with_suffix(".qml").read_text()
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["name"] for r in lines] == GOOD + ["broken"]  # the table's order
    broken = lines[-1]
    assert broken["status"] == "failed" and "broken_sar.tif" in broken["error"] and "\n" not in broken["error"]
    for r in lines[:3]:
        assert r["status"] == "done" and r["device"] == "cpu" and r["error"] is None and r["seconds"] > 0
        assert r["valid_pixels"] == 96 * 96 and r["area_unit"] == "m²"
        assert sum(a["pixels"] for a in r["class_areas"]) == r["valid_pixels"]
        assert sum(a["area"] for a in r["class_areas"]) == pytest.approx(96 * 96 * 100.0)
    assert len({r["worker"] for r in lines[:3]}) == 2  # both workers took scenes
    assert sum(r["network_loaded"] for r in lines) <= 2  # once per worker, not once per scene
    assert leftovers(out) == []


def test_area_table_and_mosaic(first_run):
    import csv

    from optsar_plugin.styles import read_qml_classes, read_raster_classes

    out, result = first_run
    rows = list(csv.DictReader(open(result["area_table"], encoding="utf-8")))
    assert {r["scene"] for r in rows} == set(GOOD) | {"total"}
    totals = {r["class"]: float(r["area"]) for r in rows if r["scene"] == "total"}
    assert sum(totals.values()) == pytest.approx(3 * 96 * 96 * 100.0)
    assert result["mosaic"] == str(out / "region.vrt")
    with rasterio.open(out / "region.vrt") as ds:
        assert ds.count == 1 and ds.dtypes[0] == "uint8" and ds.nodata == 255 and ds.colormap(1)[4][:3] == (228, 150, 53)
        assert ds.read(1).shape == (96, 96)
    assert [c.name for c in read_raster_classes(out / "region.vrt")] == ["water", "crops", "built"]
    assert [c.code for c in read_qml_classes(out / "region.qml")] == [0, 4, 6]


def test_rerun_skips_current_maps_and_retries_the_failed_scene(data, first_run):
    from optsar_plugin.batch import classify_batch

    out, _ = first_run
    before = {n: os.stat(out / f"{n}.tif").st_mtime_ns for n in GOOD}
    shutil.copy(data["root"] / "s1" / "sar.tif", data["root"] / "broken_sar.tif")  # the broken scene is repaired
    result = classify_batch(data["table"], data["checkpoint"], out, workers=2, **SETTINGS)
    status = {r["name"]: r["status"] for r in result["scenes"]}
    assert status == {"scene0": "skipped", "scene1": "skipped", "scene2": "skipped", "broken": "done"}
    assert {n: os.stat(out / f"{n}.tif").st_mtime_ns for n in GOOD} == before  # not rewritten
    skipped = result["scenes"][0]
    assert skipped["valid_pixels"] == 96 * 96 and skipped["class_areas"]  # areas read back from the map's tags
    # another tile size makes other maps: nothing is skipped
    again = classify_batch(data["table"], data["checkpoint"], out, workers=1, **{**SETTINGS, "tile_size": 96})
    assert again["done"] == 4


def test_a_killed_worker_does_not_lose_its_scene(data, reference_maps, tmp_path):
    """Through the command line: the worker classifying scene1 kills itself mid-scene; Dask runs it again."""
    out = tmp_path / "maps"
    marker = tmp_path / "killed"
    env = dict(os.environ, OPTSAR_BATCH_TEST_KILL=f"scene1:{marker}", PYTHONPATH=str(ROOT))
    table = tmp_path / "scenes.csv"
    header, *rows = data["table"].read_text().splitlines()[:4]  # the three good scenes, absolute paths
    table.write_text("\n".join([header] + [r.replace(",s", f",{data['root']}/s") for r in rows]) + "\n")
    proc = subprocess.run([sys.executable, "-m", "optsar_plugin", "batch", "--scenes", str(table), "--checkpoint",
                           data["checkpoint"], "--output-dir", str(out), "--workers", "2", "--device", "cpu",
                           "--tile-size", "64", "--overlap", "16", "--batch-size", "2"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert marker.is_file()  # the kill happened
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(r["name"], r["status"]) for r in lines] == [(n, "done") for n in GOOD]
    assert np.array_equal(read(out / "scene1.tif")[0], read(reference_maps["scene1"])[0])
    assert leftovers(out) == []


def test_scenes_table(tmp_path):
    from optsar_plugin.batch import read_scenes
    from optsar_plugin.errors import InputError

    t = tmp_path / "t.csv"
    t.write_text("Optical ; SAR ; name\na/o.tif;b/s.tif;\n/abs/o2.tif;s2.tif;x2\n\n")
    s = read_scenes(t)
    assert [(x.name, x.optical, x.sar, x.cloud_mask) for x in s] == [
        ("o", str(tmp_path / "a" / "o.tif"), str(tmp_path / "b" / "s.tif"), None),
        ("x2", "/abs/o2.tif", str(tmp_path / "s2.tif"), None)]
    for text, words in (("optical,name\na.tif,x\n", "no column 'sar'"),
                        ("optical,sar\na/x.tif,s.tif\nb/x.tif,s.tif\n", "same name 'x'"),
                        ("optical,sar,name\na.tif,s.tif,../up\n", "cannot be a file name"),
                        ("optical,sar\n,s.tif\n", "Row 1")):
        t.write_text(text)
        with pytest.raises(InputError, match=words):
            read_scenes(t)


def test_scenes_from_a_geopackage(tmp_path):
    from osgeo import ogr

    from optsar_plugin.batch import read_scenes

    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(tmp_path / "scenes.gpkg"))
    lyr = ds.CreateLayer("scenes", None, ogr.wkbNone)
    for field in ("optical", "sar", "name"):
        lyr.CreateField(ogr.FieldDefn(field, ogr.OFTString))
    f = ogr.Feature(lyr.GetLayerDefn())
    for field, value in (("optical", "o.tif"), ("sar", "s.tif"), ("name", "tile 1")):
        f.SetField(field, value)
    lyr.CreateFeature(f)
    ds = None
    (scene,) = read_scenes(tmp_path / "scenes.gpkg")
    assert (scene.name, scene.optical) == ("tile 1", str(tmp_path / "o.tif"))


class CancelAfterFirstScene:
    """Feedback that asks to stop once the first scene has finished."""

    def __init__(self):
        self.finished = 0

    def progress(self, fraction, message=None):
        self.finished += 1

    def info(self, message):
        pass

    def warning(self, message):
        pass

    def is_canceled(self):
        return self.finished > 0


def test_cancel_stops_the_cluster_and_leaves_only_complete_maps(data, tmp_path):
    import time

    from optsar_plugin.batch import ID_TAG, classify_batch
    from optsar_plugin.errors import Cancelled

    out = tmp_path / "maps"
    table = tmp_path / "scenes.csv"
    header, *rows = data["table"].read_text().splitlines()[:4]
    rows = [r.replace(",s", f",{data['root']}/s") for r in rows]
    table.write_text("\n".join([header] + [r.replace("scene", f"copy{k}-scene") for k in range(3) for r in rows]) + "\n")
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        classify_batch(table, data["checkpoint"], out, workers=2, feedback=CancelAfterFirstScene(),
                       **{**SETTINGS, "batch_size": 1})
    assert time.monotonic() - t0 < 60
    assert leftovers(out) == []
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 9 and any(r["status"] == "done" for r in lines)
    assert any(r["status"] == "failed" and "Cancelled" in r["error"] for r in lines)
    for tif in out.glob("*.tif"):  # every map there is complete: tagged, styled, readable
        with rasterio.open(tif) as ds:
            assert ID_TAG in ds.tags() and ds.read(1).shape == (96, 96)
        assert tif.with_suffix(".qml").is_file()
    assert {r["name"] for r in lines if r["status"] == "done"} <= {p.stem for p in out.glob("*.tif")}


def test_local_workers_keep_glibcs_dynamic_mmap_threshold():
    """Dask's default MALLOC_TRIM_THRESHOLD_ made every large array an mmap/munmap (+77 % in bench_batch);
    the local cluster's workers start without it, and keep Dask's other settings."""
    from optsar_plugin.batch.cluster import dask_client

    with dask_client(workers=1) as cluster:
        env = cluster.client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
    assert list(env.values()) == [(None, "1")]
