"""The synthetic demo scene: determinism, grids, files, reference split, and the properties that make fusion matter."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio
from osgeo import ogr
from rasterio.vrt import WarpedVRT

from optsar_plugin import cli
from optsar_plugin.errors import OptsarError
from optsar_plugin.sample_scene import CLASSES, OPTICAL_BANDS, SAR_BANDS, make_sample_scene

SIZE = 128


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_sample_scene(tmp_path_factory.mktemp("scene"), size=SIZE, seed=3)


def _read(path):
    with rasterio.open(path) as ds:
        return ds.read()


def _sar_on_optical_grid(paths):
    with rasterio.open(paths["optical"]) as o, rasterio.open(paths["sar"]) as s:
        with WarpedVRT(
            s,
            crs=o.crs,
            transform=o.transform,
            width=o.width,
            height=o.height,
            resampling=rasterio.enums.Resampling.bilinear,
        ) as v:
            return v.read()


def _features(path):
    ds = ogr.Open(path)
    layer = ds.GetLayer(0)
    out = []
    for f in layer:
        out.append(
            (
                f.GetField("class_name"),
                f.GetField("class_code"),
                f.GetField("split"),
                f.GetField("block"),
                f.GetGeometryRef().GetEnvelope(),
            )
        )
    return out


def test_files_grids_and_bands(scene):
    for role in (
        "optical",
        "optical_clear",
        "sar",
        "cloud_mask",
        "truth",
        "reference",
        "reference_train",
        "reference_test",
        "metadata",
    ):
        assert os.path.isfile(scene[role]), role
    with rasterio.open(scene["optical"]) as o, rasterio.open(scene["sar"]) as s:
        assert o.crs.to_epsg() == 32633 and s.crs.to_epsg() == 4326  # different CRSs on purpose
        assert (o.width, o.height, o.count, o.dtypes[0], o.nodata) == (SIZE, SIZE, 10, "uint16", 0)
        assert o.res == (10.0, 10.0)
        assert list(o.descriptions) == list(OPTICAL_BANDS)
        assert list(s.descriptions) == list(SAR_BANDS) and s.dtypes[0] == "float32"
    # The truth map names its classes (GDAL category names + colour table) and has a QGIS style.
    from optsar_plugin.styles import read_raster_classes

    named = read_raster_classes(scene["truth"])
    assert [(c.code, c.name) for c in named.classes] == list(CLASSES)
    assert named.by_code(0).color == "#419BDF" and os.path.isfile(scene["truth_style"])
    # No temporary file is left behind.
    assert not [n for n in os.listdir(os.path.dirname(scene["optical"])) if ".tmp-" in n]


def test_sar_is_speckled_db_and_covers_the_optical_grid(scene):
    sar = _sar_on_optical_grid(scene)
    assert np.isfinite(sar).all()  # the SAR footprint covers every optical pixel
    raw = _read(scene["sar"])
    assert np.nanmax(raw) < 25 and np.nanmin(raw) > -45  # dB, not linear power
    # Speckle: neighbouring SAR pixels differ by several dB (gamma speckle, ENL 4.4: ~2.3 dB per pixel).
    vv = raw[0][np.isfinite(raw[0])]
    assert np.std(np.diff(vv)) > 2.0


def test_same_seed_same_scene_other_seed_other_scene(tmp_path, scene):
    again = make_sample_scene(tmp_path / "a", size=SIZE, seed=3)
    other = make_sample_scene(tmp_path / "b", size=SIZE, seed=4)
    for role in ("optical", "sar", "truth", "cloud_mask"):
        np.testing.assert_array_equal(_read(again[role]), _read(scene[role]))
    assert not np.array_equal(_read(other["truth"]), _read(scene["truth"]))
    assert _features(again["reference"]) == _features(scene["reference"])


def test_reference_polygons_classes_and_spatial_split(scene):
    meta = json.loads(open(scene["metadata"]).read())
    feats = _features(scene["reference"])
    codes = {name: code for code, name in CLASSES}
    assert all(codes[name] == code for name, code, *_ in feats)
    # Every class appears in both parts; the parts are whole, disjoint blocks.
    for split in ("train", "test"):
        assert {n for n, _, s, *_ in feats if s == split} == set(codes)
    test_blocks = {b for *_, s, b, _ in feats if s == "test"}
    train_blocks = {b for *_, s, b, _ in feats if s == "train"}
    assert test_blocks == set(meta["test_blocks"]) and not (test_blocks & train_blocks)
    assert len(_features(scene["reference_train"])) + len(_features(scene["reference_test"])) == len(feats)
    assert {s for *_, s, _, _ in _features(scene["reference_test"])} == {"test"}
    # Polygons lie on pure pixels of their class: rasterised back, they agree with the truth map.
    from rasterio.features import rasterize

    with rasterio.open(scene["truth"]) as t:
        truth, transform = t.read(1), t.transform
    ds = ogr.Open(scene["reference"])
    shapes = [(json.loads(f.GetGeometryRef().ExportToJson()), f.GetField("class_code")) for f in ds.GetLayer(0)]
    lab = rasterize(shapes, out_shape=truth.shape, transform=transform, fill=255, dtype="uint8")
    m = lab != 255
    assert m.mean() > 0.3
    assert (lab[m] == truth[m]).mean() > 0.99


def test_clouds_only_on_optical_with_mask(scene):
    mask = _read(scene["cloud_mask"])[0]
    cloudy, optical, clear = mask == 1, _read(scene["optical"]), _read(scene["optical_clear"])
    assert 0.1 < cloudy.mean() < 0.6 and (mask == 2).any()
    assert np.median(optical[0][cloudy]) > 4000 > 1.5 * np.median(clear[0][cloudy])  # bright, flat clouds
    assert np.median(optical[6][mask == 2]) < 0.6 * np.median(clear[6][mask == 2])  # darker shadows
    assert np.abs(optical[:, mask == 0].astype(float) - clear[:, mask == 0]).mean() < 0.1 * clear.mean()


def _pair_separability(x, y, a, b):
    """Balanced accuracy of a small random forest telling class a from b per pixel (half the pixels held out)."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(0)
    idx = rng.permutation(np.flatnonzero(((y == a) | (y == b)).ravel()))
    tr, te = idx[: min(4000, idx.size // 2)], idx[idx.size // 2 :]
    xs, ys = x.reshape(x.shape[0], -1).T, y.ravel()
    rf = RandomForestClassifier(30, min_samples_leaf=3, random_state=0, n_jobs=1).fit(xs[tr], ys[tr])
    pred = rf.predict(xs[te])
    return np.mean([np.mean(pred[ys[te] == c] == c) for c in (a, b)])


def test_fusion_matters(tmp_path):
    paths = make_sample_scene(tmp_path, size=256, seed=0)
    truth = _read(paths["truth"])[0]
    clear = _read(paths["optical_clear"])
    sar = _sar_on_optical_grid(paths)
    code = {n: c for c, n in CLASSES}
    # Confusable in the optical image, separable in SAR ...
    for a, b in (("grass", "flooded_vegetation"), ("built", "bare")):
        opt_acc = _pair_separability(clear, truth, code[a], code[b])
        sar_acc = _pair_separability(sar, truth, code[a], code[b])
        assert sar_acc > opt_acc + 0.05 and opt_acc < 0.95, (a, b, opt_acc, sar_acc)
    # ... and the other way round.
    for a, b in (("water", "bare"), ("grass", "crops")):
        opt_acc = _pair_separability(clear, truth, code[a], code[b])
        sar_acc = _pair_separability(sar, truth, code[a], code[b])
        assert opt_acc > sar_acc + 0.1, (a, b, opt_acc, sar_acc)


def test_no_clouds_and_bad_size(tmp_path):
    paths = make_sample_scene(tmp_path / "c", size=64, seed=1, clouds=False)
    assert "cloud_mask" not in paths and "optical_clear" not in paths
    assert json.loads(open(paths["metadata"]).read())["cloud_fraction"] == 0.0
    with pytest.raises(OptsarError, match="size"):
        make_sample_scene(tmp_path / "d", size=32)
    assert not (tmp_path / "d" / "optical.tif").exists()


def test_cli(tmp_path, capsys):
    rc = cli.main(["-q", "make-sample-scene", str(tmp_path / "e"), "--size", "64", "--seed", "2", "--no-clouds"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert os.path.isfile(printed["optical"]) and os.path.isfile(printed["reference"])
