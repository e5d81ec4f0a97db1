"""assess_accuracy end to end: synthetic maps and reference layers against independent computations."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from optsar_plugin.accuracy.assess import assess_accuracy
from optsar_plugin.accuracy.report import read_csv_sections
from optsar_plugin.errors import Cancelled, OptsarError
from tests.helpers import EPSG, PX, X0, Y0, centre, rect, three_class_map, write_map, write_vector


def strict():
    """Context: any Python warning or numpy floating-point problem is an error."""
    cm = warnings.catch_warnings()

    class _Ctx:
        def __enter__(self):
            cm.__enter__()
            warnings.simplefilter("error")
            self._err = np.errstate(all="raise")
            self._err.__enter__()

        def __exit__(self, *exc):
            self._err.__exit__(*exc)
            return cm.__exit__(*exc)

    return _Ctx()


# --------------------------------------------------------------------------------------
# random maps with random polygons, against an independent burn and sklearn
# --------------------------------------------------------------------------------------
def _independent_reference(wkts, codes, shape, transform, all_touched):
    """Burn each polygon on its own and resolve overlaps by hand (not through StripBurner)."""
    from osgeo import ogr
    from rasterio.features import rasterize

    per_class = {}
    for wkt, code in zip(wkts, codes):
        geom = json.loads(ogr.CreateGeometryFromWkt(wkt).ExportToJson())
        m = rasterize([(geom, 1)], out_shape=shape, transform=transform, all_touched=all_touched, dtype="uint8") > 0
        per_class[code] = per_class.get(code, np.zeros(shape, bool)) | m
    n_classes_here = sum(m.astype(int) for m in per_class.values())
    ref = np.full(shape, -1)
    for code, m in per_class.items():
        ref[m & (n_classes_here == 1)] = code
    return ref, int((n_classes_here > 1).sum())


def test_may_conflict_finds_every_pair_of_classes_whose_envelopes_meet():
    """Against all pairs: each shape whose grown envelope meets one of another class is flagged; with no
    fallback (few pairs) exactly those; the fallback (huge shapes) flags every shape, which is safe."""
    from optsar_plugin.accuracy.rasterize import may_conflict

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 50))
        xy = rng.uniform(0, 100, (n, 2))
        wh = rng.exponential(rng.uniform(0.5, 15), (n, 2))
        if trial % 4 == 0:
            wh[: n // 8] *= 40  # a few huge shapes
        env = np.column_stack([xy, xy + wh])
        classes = rng.integers(0, int(rng.integers(1, 4)), n)
        pad = float(rng.choice([0.0, 1.0]))
        box = env + np.array([-pad, -pad, pad, pad])
        meet = (box[:, None, 0] <= box[None, :, 2]) & (box[None, :, 0] <= box[:, None, 2]) \
            & (box[:, None, 1] <= box[None, :, 3]) & (box[None, :, 1] <= box[:, None, 3])
        expected = (meet & (classes[:, None] != classes[None, :])).any(axis=1)
        got = may_conflict(env, classes, pad, max_pairs=400)
        assert not (expected & ~got).any(), trial
        assert got.all() or (got == expected).all(), trial
    assert not may_conflict(np.array([[0.0, 0, 1, 1], [1.0, 0, 2, 1]]), np.array([3, 3]), 0.0).any()  # one class
    assert may_conflict(np.array([[0.0, 0, 1, 1], [1.0, 0, 2, 1]]), np.array([3, 4]), 0.0).all()  # edges touch
    assert not may_conflict(np.array([[0.0, 0, 1, 1], [1.5, 0, 2, 1]]), np.array([3, 4]), 0.2).any()


@pytest.mark.parametrize("seed,all_touched,radius", [(0, False, 200), (1, True, 200), (2, False, 200),
                                                     (3, False, 40), (4, True, 60), (5, True, 80)])
def test_random_map_and_polygons_match_sklearn(tmp_path, seed, all_touched, radius):
    """``radius`` 200 m: most polygons overlap others; 40-80 m: most do not, and only the few that do
    (or come within a pixel, with all_touched) are burnt a second time (:func:`may_conflict`)."""
    from rasterio.transform import from_origin
    from sklearn import metrics

    rng = np.random.default_rng(seed)
    h, w, k = 150, 220, 5
    arr = rng.integers(0, k, (h, w)).astype("uint8")
    arr[rng.random((h, w)) < 0.03] = 255  # scattered nodata
    mp = write_map(tmp_path / "map.tif", arr)
    wkts, codes = [], []
    for _ in range(40):
        cx, cy = X0 + rng.uniform(0, w * PX), Y0 - rng.uniform(0, h * PX)
        r = rng.uniform(15, radius)
        n = int(rng.integers(3, 8))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in ang]
        pts.append(pts[0])
        wkts.append("POLYGON((" + ",".join(f"{x} {y}" for x, y in pts) + "))")
        codes.append(int(rng.integers(0, k)))
    ref_path = write_vector(tmp_path / "ref.gpkg", list(zip(wkts, codes)))
    with strict():
        res = assess_accuracy(mp, ref_path, "cls", all_touched=all_touched, strip_rows=37)

    ref, n_conflict = _independent_reference(wkts, codes, (h, w), from_origin(X0, Y0, PX, PX), all_touched)
    use = (ref >= 0) & (arr != 255)
    labels = list(range(k))
    expected = metrics.confusion_matrix(ref[use], arr[use], labels=labels).T
    assert res.classes.codes == labels
    np.testing.assert_array_equal(res.matrix, expected)
    ex = res.metrics["exclusions"]
    assert ex["conflict_pixels"] == n_conflict
    assert ex["nodata_pixels"] == int(((ref >= 0) & (arr == 255)).sum())
    s = res.metrics["summary"]
    assert s["overall_accuracy"] == pytest.approx(metrics.accuracy_score(ref[use], arr[use]))
    assert s["kappa"] == pytest.approx(metrics.cohen_kappa_score(ref[use], arr[use]))
    assert s["macro_f1"] == pytest.approx(metrics.f1_score(ref[use], arr[use], labels=labels, average="macro"))
    assert s["miou"] == pytest.approx(metrics.jaccard_score(ref[use], arr[use], labels=labels, average="macro"))
    f1 = metrics.f1_score(ref[use], arr[use], labels=labels, average=None)
    iou = metrics.jaccard_score(ref[use], arr[use], labels=labels, average=None)
    for i, row in enumerate(res.metrics["per_class"]):
        assert row["f1"] == pytest.approx(f1[i])
        assert row["iou"] == pytest.approx(iou[i])
    # stratum weights from the whole map, not from the reference pixels
    valid = arr[arr != 255]
    weights = [c["weight"] for c in res.metrics["area_adjusted"]["classes"]]
    np.testing.assert_allclose(weights, np.bincount(valid, minlength=k) / valid.size)
    # the matrix in area: 10 m pixels = 100 m²
    np.testing.assert_allclose(res.metrics["confusion_matrix"]["area"], expected * 100.0)


# --------------------------------------------------------------------------------------
# one small scene for the behaviours
# --------------------------------------------------------------------------------------
@pytest.fixture
def scene(tmp_path):
    """A 40 x 60 map: class 0 left, 1 middle, 2 right; a nodata block at the top-left corner."""
    return (tmp_path, *three_class_map(tmp_path))


def test_class_zero_is_a_class_and_nodata_is_excluded(scene):
    tmp, arr, mp = scene
    ref = write_vector(tmp / "r.gpkg", [(rect(0, 0, 10, 10), 0), (rect(22, 0, 30, 10), 1)])
    res = assess_accuracy(mp, ref, "cls")
    codes = res.classes.codes
    assert codes == [0, 1, 2]
    # the 10 x 10 polygon of class 0 covers 25 nodata pixels: 75 counted
    assert res.matrix[0, 0] == 75
    assert res.matrix[1, 1] == 80
    assert res.metrics["exclusions"]["nodata_pixels"] == 25
    assert any("nodata" in w for w in res.warnings)


def test_overlapping_polygons_disagreeing_are_excluded_and_counted(scene):
    tmp, arr, mp = scene
    feats = [
        (rect(20, 10, 30, 20), 1),  # 100 px
        (rect(25, 15, 35, 25), 2),  # overlaps the first on 5 x 5 = 25 px, other class
        (rect(22, 12, 27, 17), 1),  # overlaps the first, same class: merges
    ]
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls")
    assert res.metrics["exclusions"]["conflict_pixels"] == 25
    assert res.matrix[:, 1].sum() == 75  # class 1 reference: 100 - 25 (the same-class overlap is not a conflict)
    assert res.matrix[:, 2].sum() == 75
    assert any("overlapping" in w for w in res.warnings)


def test_invalid_geometry_is_repaired_and_unrepairable_is_reported(scene):
    tmp, arr, mp = scene
    x0, y0 = X0 + 42 * PX, Y0 - 10 * PX
    bowtie = f"POLYGON(({x0} {y0},{x0 + 100} {y0 - 100},{x0 + 100} {y0},{x0} {y0 - 100},{x0} {y0}))"
    flat = f"POLYGON(({x0} {y0},{x0 + 50} {y0},{x0 + 100} {y0},{x0} {y0}))"  # no area
    feats = [(rect(0, 20, 10, 30), 0), (bowtie, 2), (flat, 2)]
    with strict():
        res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls")
    ex = res.metrics["exclusions"]
    assert ex["invalid_repaired_ids"] == [2]
    assert ex["invalid_dropped_ids"] == [3]
    assert res.matrix[2, 2] > 0  # the repaired bow-tie was used
    assert any("repaired" in w and "2" in w for w in res.warnings)
    assert any("could not be repaired" in w for w in res.warnings)


def test_features_outside_are_counted_and_reported(scene):
    tmp, arr, mp = scene
    feats = [(rect(0, 20, 10, 30), 0), (rect(100, 100, 110, 110), 1), (centre(-50, 3), 2)]
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls")
    ex = res.metrics["exclusions"]
    assert ex["features_outside"] == 2 and ex["features_outside_ids"] == [2, 3]
    assert any("outside the classification" in w and "2, 3" in w for w in res.warnings)


def test_all_outside_is_a_clear_error(scene):
    tmp, arr, mp = scene
    with pytest.raises(OptsarError, match="outside the classification"):
        assess_accuracy(mp, write_vector(tmp / "r.gpkg", [(rect(100, 100, 110, 110), 1)]), "cls")


def test_crs_mismatch_is_reprojected(scene):
    """The same points and pixel-aligned rectangles in EPSG:4326 give the same matrix as in the map's CRS."""
    from osgeo import ogr, osr

    tmp, arr, mp = scene
    feats = [(rect(0, 10, 10, 20), 0), (rect(30, 10, 45, 20), 1)] + [(centre(c, 30), int(c // 20)) for c in range(5, 60, 7)]
    same = assess_accuracy(mp, write_vector(tmp / "utm.gpkg", feats), "cls")
    src, dst = osr.SpatialReference(), osr.SpatialReference()
    src.ImportFromEPSG(EPSG)
    dst.ImportFromEPSG(4326)
    for s in (src, dst):
        s.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)
    ct = osr.CoordinateTransformation(src, dst)
    geo = []
    for wkt, v in feats:
        g = ogr.CreateGeometryFromWkt(wkt)
        g.Transform(ct)
        geo.append((g.ExportToWkt(), v))
    res = assess_accuracy(mp, write_vector(tmp / "wgs84.gpkg", geo, epsg=4326), "cls")
    assert res.metrics["inputs"]["reference_reprojected"] is True
    np.testing.assert_array_equal(res.matrix, same.matrix)
    assert same.matrix.sum() == 100 + 150 + len(range(5, 60, 7))


def test_points_are_the_pixels_they_fall_in(scene):
    tmp, arr, mp = scene
    rng = np.random.default_rng(3)
    cols, rows = rng.integers(0, 60, 80), rng.integers(0, 40, 80)
    labels = rng.integers(0, 3, 80)
    feats = [(f"POINT({X0 + (c + rng.uniform(0.01, 0.99)) * PX} {Y0 - (r + rng.uniform(0.01, 0.99)) * PX})", int(v))
             for c, r, v in zip(cols, rows, labels)]
    feats.append((f"MULTIPOINT(({X0 + 45 * PX} {Y0 - 35 * PX}),({X0 + 25 * PX} {Y0 - 35 * PX}))", 1))
    with strict():
        res = assess_accuracy(mp, write_vector(tmp / "p.gpkg", feats), "cls")
    mapped = np.concatenate([arr[rows, cols], [2, 1]])
    truth = np.concatenate([labels, [1, 1]])
    ok = mapped != 255
    expected = np.zeros((3, 3), int)
    np.add.at(expected, (mapped[ok], truth[ok]), 1)
    np.testing.assert_array_equal(res.matrix, expected)
    assert res.metrics["exclusions"]["points_on_nodata"] == int((~ok).sum())
    assert res.metrics["inputs"]["reference_geometry"] == ["point"]
    assert "reference points" in res.metrics["area_adjusted"]["assumption"]


def test_missing_classes_give_na_everywhere(scene):
    tmp, arr, mp = scene
    # reference has classes 0 and 7 (7 never mapped); map class 2 never in the reference
    feats = [(rect(5, 10, 15, 20), 0), (rect(25, 10, 30, 20), 7)]
    with strict():
        res = assess_accuracy(
            mp, write_vector(tmp / "r.gpkg", feats), "cls",
            output_metrics=tmp / "m.json", output_matrix=tmp / "m.csv", output_report=tmp / "r.html",
        )
    codes = res.classes.codes
    assert codes == [0, 1, 2, 7]
    pc = {row["code"]: row for row in res.metrics["per_class"]}
    assert pc[2]["producers_accuracy"] is None and pc[2]["users_accuracy"] is None
    assert pc[7]["users_accuracy"] is None and pc[7]["producers_accuracy"] == 0.0
    assert pc[1]["users_accuracy"] == 0.0 and pc[1]["producers_accuracy"] is None
    data = json.loads((tmp / "m.json").read_text())
    assert data["per_class"][2]["producers_accuracy"] is None
    sec = read_csv_sections((tmp / "m.csv").read_text())
    per_class = sec["per-class accuracy (sample counts)"]
    row2 = next(r for r in per_class[1:] if r[0] == "2")
    assert row2[per_class[0].index("producers_accuracy")] == "n/a"
    assert "n/a" in (tmp / "r.html").read_text()
    assert any("absent from the reference" in w for w in res.warnings)
    assert any("absent from the map" in w for w in res.warnings)


def test_ignore_values_leave_map_and_reference(scene):
    tmp, arr, mp = scene
    feats = [(rect(10, 10, 30, 20), 0), (rect(40, 10, 50, 20), 2)]
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls", ignore_values="1")
    assert res.classes.codes == [0, 2]
    # the first rectangle spans 10 px of class 0 and 10 px of class 1 per row: the class-1 half is ignored
    np.testing.assert_array_equal(res.matrix, [[100, 0], [0, 100]])
    assert res.metrics["exclusions"]["ignored_pixels"] == 100
    mapped = [c["mapped_pixels"] for c in res.metrics["area_adjusted"]["classes"]]
    assert mapped == [int((arr == 0).sum()), int((arr == 2).sum())]


def test_names_match_the_qml_classes_and_codes_give_the_same_matrix(scene):
    from optsar_plugin.classes import ClassScheme
    from optsar_plugin.styles import write_qml

    tmp, arr, mp = scene
    write_qml(mp, ClassScheme.from_list([
        {"code": 0, "name": "Water", "color": "#0000FF"},
        {"code": 1, "name": "Tree cover", "color": "#00FF00"},
        {"code": 2, "name": "built_up", "color": "#FF0000"},
    ]))
    geoms = [rect(0, 10, 25, 20), rect(25, 10, 45, 20), rect(45, 10, 60, 20)]
    by_code = assess_accuracy(mp, write_vector(tmp / "c.gpkg", list(zip(geoms, [0, 1, 2]))), "cls")
    names = ["water", "TREE_COVER", "Built-up"]
    by_name = assess_accuracy(mp, write_vector(tmp / "n.gpkg", list(zip(geoms, names)), field_type="str"), "cls")
    np.testing.assert_array_equal(by_name.matrix, by_code.matrix)
    assert by_name.classes.names == ["Water", "Tree cover", "built_up"]
    assert "style" in by_name.metrics["inputs"]["class_source"]
    # codes written as text also work
    as_text = assess_accuracy(mp, write_vector(tmp / "t.gpkg", list(zip(geoms, ["0", "1", "2"])), field_type="str"), "cls")
    np.testing.assert_array_equal(as_text.matrix, by_code.matrix)


def test_unknown_name_lists_the_known_names(scene):
    from optsar_plugin.classes import ClassScheme
    from optsar_plugin.styles import apply_class_metadata

    tmp, arr, mp = scene
    apply_class_metadata(mp, ClassScheme.from_names_and_codes([(0, "water"), (1, "forest"), (2, "urban")]))
    feats = [(rect(0, 10, 10, 20), "water"), (rect(20, 10, 30, 20), "wetland")]
    with pytest.raises(OptsarError) as exc:
        assess_accuracy(mp, write_vector(tmp / "n.gpkg", feats, field_type="str"), "cls")
    msg = str(exc.value)
    assert "'wetland'" in msg and "0 'water'" in msg and "2 'urban'" in msg and "category names" in msg


def test_names_without_any_class_list_is_a_clear_error(scene):
    tmp, arr, mp = scene
    with pytest.raises(OptsarError, match="names no classes"):
        assess_accuracy(mp, write_vector(tmp / "n.gpkg", [(rect(0, 10, 10, 20), "water")], field_type="str"), "cls")


def test_checkpoint_names_the_classes(scene, monkeypatch):
    """Class names from a checkpoint's metadata (load_metadata is the checkpoint module's reader)."""
    import types

    import optsar_plugin.checkpoints as ck
    from optsar_plugin.classes import ClassScheme

    tmp, arr, mp = scene
    classes = ClassScheme.from_list([{"code": 0, "name": "water", "color": "#0000FF"},
                                     {"code": 1, "name": "crops", "color": "#FFFF00"},
                                     {"code": 2, "name": "bare", "color": "#AAAAAA"}])
    meta = types.SimpleNamespace(classes=classes)
    monkeypatch.setattr(ck, "load_metadata", lambda path: meta if str(path).endswith("m.safetensors") else None)
    res = assess_accuracy(mp, write_vector(tmp / "n.gpkg", [(rect(40, 10, 50, 20), "Bare")], field_type="str"), "cls",
                          checkpoint=str(tmp / "m.safetensors"))
    assert res.matrix[2, 2] == 100
    assert res.metrics["inputs"]["class_source"].startswith("checkpoint")


def test_null_class_values_are_skipped_and_reported(scene):
    tmp, arr, mp = scene
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", [(rect(0, 10, 10, 20), 0), (rect(20, 10, 30, 20), None)]), "cls")
    assert res.metrics["exclusions"]["null_class_ids"] == [2]
    assert res.matrix.sum() == 100


def test_missing_field_and_layer_are_clear_errors(scene):
    tmp, arr, mp = scene
    ref = write_vector(tmp / "r.gpkg", [(rect(0, 10, 10, 20), 0)])
    with pytest.raises(OptsarError, match="no field 'klass'.*cls"):
        assess_accuracy(mp, ref, "klass")
    with pytest.raises(OptsarError, match="no layer 'nope'"):
        assess_accuracy(mp, ref, "cls", reference_layer="nope")
    with pytest.raises(OptsarError, match="band 2 does not exist"):
        assess_accuracy(mp, ref, "cls", band=2)


def test_float_and_int16_maps(tmp_path):
    arr = np.zeros((20, 20), dtype="float32")
    arr[:, 10:] = 3
    mp = write_map(tmp_path / "f.tif", arr, nodata=-1)
    ref = write_vector(tmp_path / "r.gpkg", [(rect(0, 0, 20, 5), 3)])
    res = assess_accuracy(mp, ref, "cls")
    np.testing.assert_array_equal(res.matrix, [[0, 50], [0, 50]])
    mp16 = write_map(tmp_path / "i.tif", arr.astype("int16") - 1, nodata=-9999, dtype="int16")
    res16 = assess_accuracy(mp16, ref, "cls")  # codes -1 and 2
    assert res16.classes.codes == [-1, 2, 3]
    arr[0, 0] = 0.5
    with pytest.raises(OptsarError, match="non-integer"):
        assess_accuracy(write_map(tmp_path / "g.tif", arr, nodata=-1), ref, "cls")


def test_outputs_carry_the_same_numbers_and_the_report_is_self_contained(scene):
    tmp, arr, mp = scene
    feats = [(rect(10, 10, 30, 20), 0), (rect(35, 10, 50, 30), 2), (centre(3, 35), 1)]
    out = tmp / "out"
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls", output_report=out / "r.html",
                          output_matrix=out / "m.csv", output_metrics=out / "m.json")
    assert sorted(os.listdir(out)) == ["m.csv", "m.json", "r.html"]  # no temporary files left
    data = json.loads((out / "m.json").read_text())
    assert data["summary"]["overall_accuracy"] == pytest.approx(res.overall_accuracy)
    sec = read_csv_sections((out / "m.csv").read_text())
    matrix_rows = sec["confusion matrix (pixel counts; rows = map, columns = reference)"]
    csv_cm = np.array([[int(v) for v in r[1:-1]] for r in matrix_rows[1:-1]])
    np.testing.assert_array_equal(csv_cm, data["confusion_matrix"]["counts"])
    summary = dict(sec["summary"][1:])
    assert float(summary["kappa"]) == pytest.approx(data["summary"]["kappa"], rel=1e-10)
    area_rows = sec["area-adjusted estimates (Olofsson et al. 2014; areas in m²)"]
    header = area_rows[0]
    for row, cls in zip(area_rows[1:], data["area_adjusted"]["classes"]):
        assert float(row[header.index("area")]) == pytest.approx(cls["area"], rel=1e-10)
        assert float(row[header.index("area_ci_low")]) == pytest.approx(cls["area_ci"][0], rel=1e-10)
    page = (out / "r.html").read_text()
    assert "<svg" in page and "<style>" in page
    assert "src=" not in page and "href=" not in page and "<script" not in page  # nothing to fetch
    assert "not such a sample" in page  # the polygon caveat
    from html.parser import HTMLParser

    HTMLParser().feed(page)


def test_cancel_leaves_nothing(scene):
    tmp, arr, mp = scene

    class Cancelling:
        def progress(self, fraction, message=None):
            pass

        def info(self, message):
            pass

        def warning(self, message):
            pass

        def is_canceled(self):
            return True

    with pytest.raises(Cancelled):
        assess_accuracy(mp, write_vector(tmp / "r.gpkg", [(rect(0, 10, 10, 20), 0)]), "cls",
                        output_report=tmp / "o" / "r.html", feedback=Cancelling())
    assert not (tmp / "o").exists() or not os.listdir(tmp / "o")


def test_cli_assess(scene, capsys):
    from optsar_plugin.cli import main

    tmp, arr, mp = scene
    ref = write_vector(tmp / "r.gpkg", [(rect(10, 10, 30, 20), 0)])
    rc = main(["-q", "assess", mp, ref, "--class-field", "cls", "--metrics", str(tmp / "m.json"), "--ignore", "1"])
    assert rc == 0
    assert "overall accuracy: 1.0000" in capsys.readouterr().out
    assert json.loads((tmp / "m.json").read_text())["inputs"]["ignore_values"] == [1]
    rc = main(["assess", mp, ref, "--class-field", "nope"])
    assert rc == 2
    assert "error: " in capsys.readouterr().err


def test_geographic_map_warns_about_area_units(tmp_path):
    import rasterio
    from rasterio.transform import from_origin

    arr = np.ones((10, 10), "uint8")
    path = tmp_path / "geo.tif"
    with rasterio.open(path, "w", driver="GTiff", width=10, height=10, count=1, dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(10.0, 50.0, 0.001, 0.001), nodata=255) as ds:
        ds.write(arr, 1)
    ref = write_vector(tmp_path / "r.gpkg", [("POINT(10.0005 49.9995)", 1)], epsg=4326)
    res = assess_accuracy(str(path), ref, "cls")
    assert res.metrics["inputs"]["area_unit"] == "degree²"
    assert any("square degrees" in w for w in res.warnings)


def test_single_reference_point_per_class_gives_na_intervals(scene):
    tmp, arr, mp = scene
    res = assess_accuracy(mp, write_vector(tmp / "p.gpkg", [(centre(5, 30), 0), (centre(25, 30), 1), (centre(45, 30), 2)]), "cls")
    a = res.metrics["area_adjusted"]
    assert a["overall_accuracy"] == 1.0 and a["overall_accuracy_se"] is None and a["overall_accuracy_ci"] is None
    assert any("single reference unit" in w for w in res.warnings)


def test_module_has_no_qgis_import():
    import ast

    root = Path(__file__).resolve().parent.parent / "optsar_plugin" / "accuracy"
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in ("qgis", "torch", "PyQt5", "PyQt6") for n in names), path


def test_report_says_loudly_what_goes_wrong_and_its_heatmap_is_legible(scene):
    """A reference class the map never shows, and PA or UA below 0.5, are alerts at the top of the report."""
    import re

    tmp, arr, mp = scene
    out = tmp / "out"
    feats = [(rect(0, 0, 10, 10), 0), (rect(20, 0, 30, 10), 1), (rect(20, 20, 30, 30), 7)]
    res = assess_accuracy(mp, write_vector(tmp / "r.gpkg", feats), "cls", output_report=out / "r.html",
                          output_metrics=out / "m.json")
    assert any("'class 7' (7) is in the reference (100 pixels) but never mapped" in a for a in res.alerts)
    assert all("\n" not in a for a in res.alerts)
    assert json.loads((out / "m.json").read_text())["alerts"] == res.alerts
    page = (out / "r.html").read_text()
    assert page.index("Attention") < page.index("<h2>Inputs</h2>")
    svg = page[page.index("<svg"):page.index("</svg>")]
    sizes = [int(v) for v in re.findall(r'font-size="(\d+)"', svg)]
    assert sizes and min(sizes) >= 12
    assert "reference →" in svg and "map ↓" in svg
    good = assess_accuracy(mp, write_vector(tmp / "g.gpkg", [(rect(0, 0, 10, 10), 0)]), "cls")
    assert good.alerts == []
