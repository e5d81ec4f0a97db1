"""Stratified random sampling: sample size (Olofsson et al. 2014, eq. 13), allocation, drawing, round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest

from optsar_plugin.accuracy.sampling import (
    allocate,
    anticipated_oa_se,
    cochran_sample_size,
    parse_expected_ua,
    stratified_sample,
)
from optsar_plugin.errors import OptsarError
from tests.helpers import write_raster

# Olofsson et al. (2014), Remote Sensing of Environment 148:42-57, section 5.1.1: mapped proportions
# of the four classes, expected user's accuracies and target SE(O) = 0.01 give n = 641; Table 5
# lists the proportional (13, 10, 205, 413) and equal (160 each) allocations of that sample.
W = [0.020, 0.015, 0.320, 0.645]
PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
UA = [0.70, 0.60, 0.90, 0.95]


def test_cochran_sample_size_of_the_paper():
    assert cochran_sample_size(W, UA, 0.01) == 641
    assert cochran_sample_size(W, UA, 0.02) == 161  # a quarter (rounded up) for twice the SE


def test_proportional_and_equal_allocations_of_table5():
    np.testing.assert_array_equal(allocate(PIXELS, 641, "proportional", 0), [13, 10, 205, 413])
    eq = allocate(PIXELS, 641, "equal", 0)
    assert eq.sum() == 641 and set(eq.tolist()) == {160, 161}


def test_olofsson_allocation_fixes_rare_classes_and_keeps_the_total():
    a75 = allocate(PIXELS, 641, "olofsson", 75)
    np.testing.assert_array_equal(a75, [75, 75, 163, 328])
    a100 = allocate(PIXELS, 641, "olofsson", 100)
    # the rest (441) shared in proportion 0.320 : 0.645
    np.testing.assert_array_equal(a100, [100, 100, 146, 295])
    assert a100.sum() == 641
    # every class rare: all at the minimum, the total grows
    np.testing.assert_array_equal(allocate(PIXELS, 100, "olofsson", 50), [50, 50, 50, 50])
    # class 1 gets 21 in the first pass but only 17 of the remaining 80: fixed at the minimum too
    np.testing.assert_array_equal(allocate([20, 210, 770], 100, "olofsson", 20), [20, 20, 60])
    # a class smaller than its allocation is taken whole; the shortfall is not redistributed
    np.testing.assert_array_equal(allocate([10, 60, 930], 100, "olofsson", 20), [10, 20, 60])


def test_minimum_raises_proportional_and_caps_at_the_class_size():
    np.testing.assert_array_equal(allocate(PIXELS, 641, "proportional", 50), [50, 50, 205, 413])
    np.testing.assert_array_equal(allocate([5, 0, 1000], 100, "proportional", 20), [5, 0, 100])
    with pytest.raises(OptsarError, match="Unknown allocation"):
        allocate(PIXELS, 10, "random")


def test_anticipated_se_and_expected_ua_parsing():
    assert anticipated_oa_se(W, UA, [75, 75, 165, 325]) == pytest.approx(0.0109, abs=1e-4)
    assert anticipated_oa_se(W, UA, [1, 75, 165, 325]) is None
    assert parse_expected_ua("0.9", [0, 1]) == [0.9, 0.9]
    assert parse_expected_ua("1:0.7, 0.95", [0, 1, 2]) == [0.95, 0.7, 0.95]
    assert parse_expected_ua({2: 0.6}, [1, 2]) == [0.8, 0.6]
    with pytest.raises(OptsarError, match="between 0 and 1"):
        parse_expected_ua("1.2", [0])
    with pytest.raises(OptsarError, match="Cannot read"):
        parse_expected_ua("a:b", [0])


@pytest.fixture
def classified(tmp_path):
    rng = np.random.default_rng(0)
    arr = rng.choice([0, 1, 2, 3], size=(300, 250), p=[0.6, 0.3, 0.08, 0.02]).astype("uint8")
    arr[:30, :] = 255  # nodata strip
    path = write_raster(tmp_path / "map.tif", arr, nodata=255, origin=(600_000, 4_000_000), res=20)
    return tmp_path, arr, path


def _read_points(path):
    from osgeo import ogr

    ds = ogr.Open(str(path))
    lyr = ds.GetLayer(0)
    rows = []
    for f in lyr:
        g = f.GetGeometryRef()
        rows.append((f.GetField("sample_id"), f.GetField("map_code"), f.GetField("map_class"), f.GetField("reference"),
                     g.GetX(), g.GetY()))
    meta = lyr.GetMetadataItem("OPTSAR_STRATA")
    return rows, (json.loads(meta) if meta else None)


def test_sample_draws_the_allocation_on_the_right_pixels(classified):
    tmp, arr, mp = classified
    res = stratified_sample(mp, tmp / "s.gpkg", allocation="olofsson", total=300, min_per_class=40, seed=5, strip_rows=64)
    counts = np.bincount(arr[arr != 255], minlength=4)
    assert res.codes == [0, 1, 2, 3] and res.mapped_pixels == counts.tolist()
    np.testing.assert_array_equal(res.sizes, allocate(counts, 300, "olofsson", 40))
    pts, meta = _read_points(tmp / "s.gpkg")
    assert len(pts) == res.total == 300
    cols = ((np.array([p[4] for p in pts]) - 600_000) / 20 - 0.5)
    rows = ((4_000_000 - np.array([p[5] for p in pts])) / 20 - 0.5)
    assert np.allclose(cols, np.round(cols)) and np.allclose(rows, np.round(rows))  # pixel centres
    cols, rows = np.round(cols).astype(int), np.round(rows).astype(int)
    np.testing.assert_array_equal(arr[rows, cols], [p[1] for p in pts])  # the mapped class of that pixel
    assert (rows >= 30).all()  # never nodata
    assert len(set(zip(rows.tolist(), cols.tolist()))) == 300  # without replacement
    np.testing.assert_array_equal(np.bincount([p[1] for p in pts], minlength=4), res.sizes)
    assert all(p[2] == f"class {p[1]}" and p[3] is None for p in pts)
    assert meta["allocation"] == "olofsson" and [s["n"] for s in meta["strata"]] == res.sizes


def test_seed_reproduces_and_changes_the_sample(classified):
    tmp, arr, mp = classified
    a = stratified_sample(mp, tmp / "a.gpkg", total=100, min_per_class=5, seed=1)
    b = stratified_sample(mp, tmp / "b.gpkg", total=100, min_per_class=5, seed=1)
    c = stratified_sample(mp, tmp / "c.gpkg", total=100, min_per_class=5, seed=2)
    pa, pb, pc = (_read_points(p)[0] for p in (a.path, b.path, c.path))
    assert pa == pb
    assert {(p[4], p[5]) for p in pa} != {(p[4], p[5]) for p in pc}


def test_total_zero_uses_the_target_se(classified):
    tmp, arr, mp = classified
    res = stratified_sample(mp, tmp / "s.gpkg", allocation="proportional", total=0, target_se=0.02,
                            expected_ua="0.85", min_per_class=0)
    w = np.asarray(res.weights)
    assert res.requested_total == cochran_sample_size(w, [0.85] * 4, 0.02)
    assert res.total == res.requested_total
    assert res.anticipated_oa_se == pytest.approx(0.02, rel=0.05)


def test_class_names_from_the_qml_and_round_trip_through_assess(classified):
    """Label the sample from a known 'truth' and assess: the area-adjusted estimates use the whole map."""
    from osgeo import ogr

    from optsar_plugin.accuracy.assess import assess_accuracy
    from optsar_plugin.classes import ClassScheme
    from optsar_plugin.styles import write_qml

    tmp, arr, mp = classified
    write_qml(mp, ClassScheme.from_names_and_codes([(0, "grass"), (1, "forest"), (2, "water"), (3, "urban")]))
    res = stratified_sample(mp, tmp / "s.gpkg", allocation="equal", total=200, min_per_class=0, seed=3)
    ds = ogr.Open(str(tmp / "s.gpkg"), 1)
    lyr = ds.GetLayer(0)
    names = {0: "grass", 1: "forest", 2: "water", 3: "urban"}
    for f in lyr:
        assert f.GetField("map_class") == names[f.GetField("map_code")]
        # the interpreter disagrees with the map on every 4th point: says 'forest'
        f.SetField("reference", "Forest" if f.GetField("sample_id") % 4 == 0 else names[f.GetField("map_code")])
        lyr.SetFeature(f)
    ds = None
    out = assess_accuracy(mp, tmp / "s.gpkg", "reference", output_metrics=tmp / "m.json")
    assert out.matrix.sum() == res.total == 200
    a = out.metrics["area_adjusted"]
    counts = np.bincount(arr[arr != 255], minlength=4)
    np.testing.assert_allclose([c["weight"] for c in a["classes"]], counts / counts.sum())
    assert a["population_fraction"] == 1.0
    # estimated areas add up to the mapped area (400 m² pixels)
    assert sum(c["area"] for c in a["classes"]) == pytest.approx(counts.sum() * 400.0)
    assert "reference points" in a["assumption"]


def test_output_format_and_errors(classified):
    tmp, arr, mp = classified
    with pytest.raises(OptsarError, match="GeoPackage"):
        stratified_sample(mp, tmp / "s.shp", total=10)
    with pytest.raises(OptsarError, match="does not exist"):
        stratified_sample(tmp / "nope.tif", tmp / "s.gpkg", total=10)
    res = stratified_sample(mp, tmp / "s.geojson", total=20, min_per_class=0, ignore_values="0")
    assert 0 not in res.codes and res.total == 20
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_cli_sample(classified, capsys):
    from optsar_plugin.cli import main

    tmp, arr, mp = classified
    rc = main(["-q", "sample", mp, str(tmp / "cli.gpkg"), "--allocation", "olofsson", "--total", "120",
               "--min-per-class", "25", "--seed", "9"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "120 points written" in out
    assert len(_read_points(tmp / "cli.gpkg")[0]) == 120
