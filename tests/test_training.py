"""The training engine: labels and classes, split and sampling, the loop, outputs, fine-tuning, bad input.

Everything runs on a 256 px synthetic scene with tiny network configurations and a
handful of steps, so the whole module takes well under a minute on two CPU cores.
"""

from __future__ import annotations

import csv
import json
import os
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from osgeo import ogr, osr

from optsar_plugin import cli
from optsar_plugin.checkpoints import load_checkpoint, read_metadata
from optsar_plugin.classes import NODATA
from optsar_plugin.errors import Cancelled, OptsarError
from optsar_plugin.progress import NullFeedback
from optsar_plugin.sample_scene import CLASSES, make_sample_scene
from optsar_plugin.training import confusion_metrics, train
from optsar_plugin.training.augment import dihedral, reflectance_unit, simulate_clouds
from optsar_plugin.training.reference import labels_from_raster, scheme_from_values, split_layer_uri
from optsar_plugin.training.sampler import (
    SceneSource,
    TileSampler,
    spatial_split,
    training_tiles_per_epoch,
    validation_cells,
)

TINY = {
    "specsar_former": dict(embed_dims=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], decoder_dim=32),
    "cloudlulc_net": dict(channels=16, num_blocks=1, order=2, embed_dim=32, depth=1, heads=2),
}
FAST = dict(tile_size=64, batch_size=2, device="cpu", seed=0)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return make_sample_scene(tmp_path_factory.mktemp("scene"), size=256, seed=0)


def _train(scene, out, **kw):
    args = dict(reference=scene["reference_train"], class_field="class_name", cloud_mask=scene["cloud_mask"],
                model="specsar_former", epochs=1, steps_per_epoch=2, **FAST)
    args.update(kw)
    if "model_options" not in args:
        args["model_options"] = TINY[args["model"]]
    return train(scene["optical"], scene["sar"], str(out), **args)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    d = tmp_path_factory.mktemp("trained")
    result = _train(scene, d / "model.safetensors", model="cloudlulc_net", epochs=3, steps_per_epoch=8, batch_size=4,
                    learning_rate=3e-3, output_log=str(d / "log.csv"), output_curve=str(d / "curve.html"))
    return result


def _leftovers(folder):
    return [n for n in os.listdir(folder) if ".tmp" in n]


# ------------------------------------------------------------------------------------------
# the loop and its outputs
# ------------------------------------------------------------------------------------------
def _fixed_batch_loss(model, meta, scene):
    """The model's own training loss on four fixed 64 px tiles of the scene (truth labels)."""
    import torch

    from optsar_plugin import normalisation

    norm = meta["normalisation"]
    with SceneSource(scene["optical"], scene["sar"]) as src, rasterio.open(scene["truth"]) as t:
        truth = t.read(1)
        lut = np.full(256, NODATA, np.uint8)
        for k, c in enumerate(meta["classes"]):
            lut[c["code"]] = k
        o, s, y = [], [], []
        for r, c in ((0, 0), (0, 128), (128, 64), (192, 192)):
            a, b, _ = src.read(r, c, 64, 64)
            o.append(normalisation.apply(a, norm["optical"]))
            s.append(normalisation.apply(b, norm["sar"]))
            y.append(lut[truth[r : r + 64, c : c + 64]])
    model.eval()
    with torch.no_grad():
        out = model.forward_train(torch.from_numpy(np.stack(o)), torch.from_numpy(np.stack(s)))
        return float(model.loss(out, torch.from_numpy(np.stack(y).astype(np.int64)), ignore_index=NODATA))


def test_training_lowers_the_loss_and_writes_a_usable_checkpoint(trained, scene, tmp_path):
    import torch

    from optsar_plugin.models import build_model

    h = trained["history"]
    assert [r["epoch"] for r in h] == [1, 2, 3]
    # The engine seeds torch right before building the network: rebuild the untrained one and compare losses.
    meta = read_metadata(trained["checkpoint"])
    torch.manual_seed(0)
    untrained = build_model("cloudlulc_net", optical_bands=10, sar_bands=2, num_classes=7, **TINY["cloudlulc_net"])
    model, _ = load_checkpoint(trained["checkpoint"])
    before, after = _fixed_batch_loss(untrained, meta, scene), _fixed_batch_loss(model, meta, scene)
    assert after < 0.9 * before, (before, after)
    assert trained["best_epoch"] == max(h, key=lambda r: r["val_miou"])["epoch"]
    assert meta["model"]["name"] == "cloudlulc_net"
    assert meta["bands"] == {"optical": ["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"],
                             "sar": ["VV", "VH"]}
    # Classes: names matched Dynamic World, so its codes and colours, in code order; class 0 is a class.
    assert [(c["code"], c["name"]) for c in meta["classes"]] == list(CLASSES)
    assert meta["classes"][0]["color"] == "#419BDF"
    assert meta["normalisation"]["sar"]["to_db"] is False  # the SAR is already in dB
    optical = meta["normalisation"]["optical"]
    assert 0.02 < optical["center"][0] < 0.15  # reflectance; clouds excluded from the statistics
    assert optical["units"]["source"] == "integer reflectance x 10000" and optical["units"]["scale"][0] == 1e-4
    t = meta["training"]
    assert t["best_epoch"] == trained["best_epoch"] and t["cloud_mode"] == "keep"
    assert t["cloud_simulation"]["reflectance_unit"] == 1.0  # simulated clouds on reflectance (CloudLULC-Net)
    assert t["validation"]["validation_pixels"] > 0 and t["validation"]["held_out_blocks"]
    assert meta["tile_size"] == 64 and meta["content_hash"] == trained["content_hash"]
    assert model.config["num_classes"] == len(CLASSES)
    # The checkpoint drives the classify engine.
    from optsar_plugin.inference import classify

    out = classify(scene["optical"], scene["sar"], trained["checkpoint"], str(tmp_path / "map.tif"),
                   cloud_mask=scene["cloud_mask"], device="cpu", tile_size=64, overlap=16)
    with rasterio.open(out["output"]) as ds:
        codes = set(np.unique(ds.read(1)).tolist())
    assert codes <= {c for c, _ in CLASSES} and len(codes) >= 2


def test_log_and_curve(trained):
    with open(trained["log"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_miou", "val_oa", "val_miou_cloudy", "iou_flooded_vegetation"} <= set(rows[0])
    assert [r["best"] for r in rows].count("1") == 1
    assert abs(float(rows[0]["val_miou"]) - trained["history"][0]["val_miou"]) < 1e-5
    text = open(trained["curve"], encoding="utf-8").read()
    svgs = re.findall(r"<svg.*?</svg>", text, flags=re.S)
    assert len(svgs) == 2 and "http" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    for s in svgs:
        root = ET.fromstring(s)
        assert root.tag.endswith("svg") and root.findall(".//{http://www.w3.org/2000/svg}path")


def test_same_seed_same_weights(scene, tmp_path):
    a = _train(scene, tmp_path / "a.safetensors")
    b = _train(scene, tmp_path / "b.safetensors")
    c = _train(scene, tmp_path / "c.safetensors", seed=1)
    assert a["content_hash"] == b["content_hash"] != c["content_hash"]
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]


def test_specsar_with_label_raster_zeroes_cloudy_optical(scene, tmp_path):
    r = _train(scene, tmp_path / "c.safetensors", labels=scene["truth"], reference=None, class_field=None)
    t = read_metadata(r["checkpoint"])["training"]
    assert t["cloud_simulation"] is None and t["cloud_mode"] == "zero"
    assert t["labels"] and not t["reference"]
    # Names from the label raster's category names.
    assert [(c["code"], c["name"]) for c in r["classes"]] == list(CLASSES)


class CancelAfter(NullFeedback):
    """Feedback that asks to cancel after ``n`` progress reports."""

    def __init__(self, n):
        self.n = n

    def progress(self, fraction, message=None):
        self.n -= 1

    def is_canceled(self):
        return self.n <= 0


def test_cancel_keeps_the_best_epoch_so_far(scene, tmp_path):
    r = _train(scene, tmp_path / "k.safetensors", epochs=3, steps_per_epoch=2, feedback=CancelAfter(3))
    assert r["cancelled"] and r["best_epoch"] == 1 and len(r["history"]) == 1
    assert read_metadata(r["checkpoint"])["training"]["cancelled"] is True
    with pytest.raises(Cancelled):
        _train(scene, tmp_path / "never.safetensors", epochs=2, steps_per_epoch=3, feedback=CancelAfter(1))
    assert not (tmp_path / "never.safetensors").exists() and not _leftovers(tmp_path)


def test_no_validation_keeps_the_last_epoch(scene, tmp_path):
    r = _train(scene, tmp_path / "n.safetensors", epochs=2, validation_fraction=0.0)
    assert r["best_epoch"] == 2 and r["history"][0]["val_miou"] is None
    assert any("VALIDATION_FRACTION is 0" in w for w in r["warnings"])


def test_labels_on_nodata_pixels_are_ignored(scene, tmp_path):
    with rasterio.open(scene["optical"]) as src:
        profile, data = src.profile, src.read()
    data[:, :, :40] = 0  # nodata strip on the left edge, where there are reference polygons
    holed = tmp_path / "holed.tif"
    with rasterio.open(holed, "w", **profile) as dst:
        dst.write(data)
    r = train(str(holed), scene["sar"], str(tmp_path / "h.safetensors"), reference=scene["reference_train"],
              class_field="class_name", model="specsar_former", model_options=TINY["specsar_former"], epochs=1,
              steps_per_epoch=1, **FAST)
    assert any("where the optical or SAR raster is nodata are ignored" in w for w in r["warnings"])
    full = read_metadata(r["checkpoint"])["training"]["labelled_pixels"]
    assert sum(full.values()) < sum(read_metadata_labelled(scene).values())


def read_metadata_labelled(scene):
    from optsar_plugin.training.reference import labels_from_vector

    with rasterio.open(scene["optical"]) as ds:
        lab = labels_from_vector(scene["reference_train"], "class_name", ds)
    return {c.name: int(n) for c, n in zip(lab.scheme, lab.counts)}


def _classify_codes(scene, checkpoint, out, zero_sar):
    """Whole-scene classification through the inference engine, SAR zeroed for an optical-only model."""
    from optsar_plugin.inference import TorchPredictor, run_inference

    net, meta = load_checkpoint(checkpoint)
    predict = TorchPredictor(net, next(net.parameters()).device)
    run_inference(scene["optical"], scene["sar"], str(out), meta,
                  lambda o, s: predict(o, np.zeros_like(s) if zero_sar else s), tile_size=64, overlap=16)
    with rasterio.open(out) as ds:
        return ds.read(1)


def test_under_clouds_fusion_beats_optical_only(scene, tmp_path):
    """The cheap version of the benchmark: same network, with and without SAR, on held-out pixels under thick cloud."""
    from optsar_plugin.training.reference import labels_from_vector

    with rasterio.open(scene["optical"]) as ds:
        test = labels_from_vector(scene["reference_test"], "class_name", ds)
    with rasterio.open(scene["cloud_mask"]) as ds:
        thick = ds.read(1) == 1
    codes = np.asarray(test.scheme.codes)
    sel = (test.index != NODATA) & thick
    assert sel.sum() > 1000
    miou = {}
    for variant in ("fused", "optical"):
        ck = tmp_path / f"{variant}.safetensors"
        _train(scene, ck, model="cloudlulc_net", epochs=3, steps_per_epoch=20, batch_size=4, learning_rate=3e-3,
               cloud_mask=None, ignore_sar=variant == "optical")
        pred = _classify_codes(scene, ck, tmp_path / f"pred_{variant}.tif", variant == "optical")
        k = len(codes)
        lut = np.full(256, k, np.int64)
        lut[codes] = np.arange(k)
        p, t = lut[pred[sel]], test.index[sel].astype(np.int64)
        cm = np.bincount(t[p < k] * k + p[p < k], minlength=k * k).reshape(k, k)
        miou[variant] = confusion_metrics(cm)["miou"]
    assert miou["fused"] > max(2 * miou["optical"], miou["optical"] + 0.07), miou


# ------------------------------------------------------------------------------------------
# fine-tuning
# ------------------------------------------------------------------------------------------
def test_fine_tune_same_classes(trained, scene, tmp_path):
    r = _train(scene, tmp_path / "f.safetensors", model="cloudlulc_net", init_checkpoint=trained["checkpoint"],
               model_options=None)
    meta = read_metadata(r["checkpoint"])
    init = read_metadata(trained["checkpoint"])
    assert meta["training"]["init_checkpoint"]["content_hash"] == init["content_hash"]
    assert meta["training"]["init_checkpoint"]["reinitialised"] == []
    assert meta["normalisation"] == init["normalisation"]  # the pretrained weights' input scaling is kept
    assert meta["model"]["config"] == init["model"]["config"]


def test_fine_tune_other_classes_reinitialises_the_classifier(trained, scene, tmp_path):
    r = _train(scene, tmp_path / "g.safetensors", model="cloudlulc_net", init_checkpoint=trained["checkpoint"],
               class_field="class_code", model_options=None)
    assert [c["name"] for c in r["classes"]] == [f"class {c}" for c, _ in CLASSES]
    reinit = read_metadata(r["checkpoint"])["training"]["init_checkpoint"]["reinitialised"]
    assert reinit and all("." in k for k in reinit)
    assert any("start from random weights" in w for w in r["warnings"])
    # Everything that does not depend on the classes came from the initial checkpoint (and was then fine-tuned
    # for two steps, so only compare a tensor AdamW barely moves: the first patch embedding's norm weight).
    init, _ = load_checkpoint(trained["checkpoint"])
    tuned, _ = load_checkpoint(r["checkpoint"])
    a, b = init.state_dict(), tuned.state_dict()
    shared = [k for k in a if k not in reinit and a[k].dtype.is_floating_point and a[k].numel() > 16]
    close = np.mean([float((a[k] - b[k]).abs().max()) < 0.05 for k in shared])
    assert close > 0.9


def test_fine_tune_refuses_another_model_or_other_bands(trained, scene, tmp_path):
    with pytest.raises(OptsarError, match="same network"):
        _train(scene, tmp_path / "x.safetensors", model="specsar_former", init_checkpoint=trained["checkpoint"])
    with pytest.raises(OptsarError, match="band"):
        _train(scene, tmp_path / "y.safetensors", model="cloudlulc_net", optical_bands=[1, 2, 3],
               init_checkpoint=trained["checkpoint"])
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "y.safetensors").exists()


# ------------------------------------------------------------------------------------------
# bad input: a clear error and no output
# ------------------------------------------------------------------------------------------
def _gpkg(path, polygons, epsg=32633, field="class_name"):
    """polygons: [(class value, (xmin, ymin, xmax, ymax))]."""
    ds = ogr.GetDriverByName("GPKG").CreateDataSource(str(path))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(epsg)
    layer = ds.CreateLayer("ref", srs, ogr.wkbPolygon)
    kind = ogr.OFTInteger if polygons and isinstance(polygons[0][0], int) else ogr.OFTString
    layer.CreateField(ogr.FieldDefn(field, kind))
    for value, (x0, y0, x1, y1) in polygons:
        f = ogr.Feature(layer.GetLayerDefn())
        f.SetField(field, value)
        f.SetGeometry(ogr.CreateGeometryFromWkt(f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"))
        layer.CreateFeature(f)
    ds = None
    return str(path)


def _bounds(scene):
    with rasterio.open(scene["optical"]) as ds:
        return ds.bounds


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_overlap", "overlaps the optical raster"),
        ("missing_field", "no field 'landcover'"),
        ("one_class", "one class only"),
        ("too_few_pixels", "fewer than one"),
        ("labels_outside", "does not overlap"),
        ("both_sources", "not both"),
        ("bad_tile", "multiple of 32"),
    ],
)
def test_bad_input(scene, tmp_path, case, match):
    b = _bounds(scene)
    kw = {}
    if case == "no_overlap":
        kw["reference"] = _gpkg(tmp_path / "r.gpkg", [("water", (0, 0, 1000, 1000)), ("trees", (2000, 0, 3000, 900))])
    elif case == "missing_field":
        kw["class_field"] = "landcover"
    elif case == "one_class":
        kw["reference"] = _gpkg(tmp_path / "r.gpkg", [("water", (b.left, b.bottom, b.left + 900, b.bottom + 900))])
    elif case == "too_few_pixels":
        kw["reference"] = _gpkg(tmp_path / "r.gpkg", [("water", (b.left, b.bottom, b.left + 300, b.bottom + 300)),
                                                      ("trees", (b.right - 300, b.top - 300, b.right, b.top))])
    elif case == "labels_outside":
        with rasterio.open(scene["truth"]) as src:
            profile, data = src.profile, src.read()
        profile["transform"] = rasterio.transform.from_origin(100000, 1000000, 10, 10)
        with rasterio.open(tmp_path / "lab.tif", "w", **profile) as dst:
            dst.write(data)
        kw.update(labels=str(tmp_path / "lab.tif"), reference=None, class_field=None)
    elif case == "both_sources":
        kw["labels"] = scene["truth"]
    elif case == "bad_tile":
        kw["tile_size"] = 100
    out = tmp_path / "out" / "m.safetensors"
    out.parent.mkdir()
    with pytest.raises(OptsarError, match=match):
        _train(scene, out, output_log=str(out.parent / "log.csv"), **kw)
    assert os.listdir(out.parent) == []


def test_cli_train_and_error(scene, tmp_path, capsys):
    args = ["-q", "train", "--optical", scene["optical"], "--sar", scene["sar"], "--reference", scene["reference_train"],
            "--class-field", "class_name", "--model", "specsar_former", "--model-options",
            json.dumps(TINY["specsar_former"]), "--epochs", "1", "--steps-per-epoch", "1", "--tile-size", "64",
            "--batch-size", "1", "--device", "cpu", "--output", str(tmp_path / "m.safetensors")]
    assert cli.main(args) == 0 and (tmp_path / "m.safetensors").is_file()
    bad = [a if a != "class_name" else "nope" for a in args]
    bad[-1] = str(tmp_path / "n.safetensors")
    assert cli.main(bad) == 2
    assert "no field 'nope'" in capsys.readouterr().err and not (tmp_path / "n.safetensors").exists()


# ------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------
def test_classes_from_field_values():
    s, m = scheme_from_values(["Water", "trees", "Built", "water"])  # Dynamic World names: its codes and colours
    assert [(c.code, c.name) for c in s] == [(0, "Water"), (1, "trees"), (6, "Built")]
    assert m["water"] == m["Water"] == 0 and s.by_code(6).color == "#C4281B"
    s, m = scheme_from_values(["zebra", "apple", "mango"])  # unknown names: 0..n-1 in sorted order
    assert [(c.code, c.name) for c in s] == [(0, "apple"), (1, "mango"), (2, "zebra")]
    assert len({c.color for c in s}) == 3
    s, m = scheme_from_values([5, 0, 12], {5: "forest", 0: "sea", 12: "town"})
    assert [(c.code, c.name) for c in s] == [(0, "sea"), (5, "forest"), (12, "town")]
    s, m = scheme_from_values(["3", "7"])  # codes written as text
    assert [c.code for c in s] == [3, 7] and m["7"] == 7
    with pytest.raises(OptsarError, match="not a whole-number"):
        scheme_from_values([1.5, 2.0])
    with pytest.raises(OptsarError, match="outside 0-254"):
        scheme_from_values([1, 255])
    assert split_layer_uri("/a/b.gpkg|layername=ref") == ("/a/b.gpkg", "ref")


def test_labels_from_raster_names_and_nodata(scene):
    with rasterio.open(scene["optical"]) as ds:
        lab = labels_from_raster(scene["truth"], ds)
    with rasterio.open(scene["truth"]) as t:
        truth = t.read(1)
    assert [c.name for c in lab.scheme] == [n for _, n in CLASSES]
    assert np.array_equal(np.asarray(lab.scheme.codes)[lab.index], truth)  # index -> code round trip
    assert lab.labelled == truth.size


def test_reference_in_another_crs_is_reprojected(scene, tmp_path):
    from osgeo import gdal

    from optsar_plugin.training.reference import labels_from_vector

    geo = str(tmp_path / "ref_4326.gpkg")
    gdal.VectorTranslate(geo, scene["reference_train"], dstSRS="EPSG:4326", format="GPKG")
    with rasterio.open(scene["optical"]) as ds:
        utm = labels_from_vector(scene["reference_train"], "class_name", ds)
        wgs = labels_from_vector(geo, "class_name", ds)
    a, b = utm.index != NODATA, wgs.index != NODATA
    assert (a & b).sum() > 0.97 * a.sum()  # the same pixels, up to edge effects of the reprojection
    assert (utm.index[a & b] == wgs.index[a & b]).mean() > 0.999


def test_reference_polygons_and_points_are_burnt_with_conflicts_left_unlabelled(tmp_path):
    from optsar_plugin.training.reference import labels_from_vector
    from tests.helpers import centre, rect, write_raster, write_vector

    optical = write_raster(tmp_path / "o.tif", np.ones((2, 20, 30), np.float32))
    ref = write_vector(tmp_path / "ref.gpkg", [(rect(0, 0, 10, 10), 0), (rect(5, 0, 15, 10), 7),
                                               (centre(25, 15), 3), (rect(0, 15, 4, 20), 3)])
    warnings = []

    class Collect(NullFeedback):
        def warning(self, message):
            warnings.append(message)

    with rasterio.open(optical) as ds:
        lab = labels_from_vector(ref, "cls", ds, feedback=Collect())
    assert lab.scheme.codes == [0, 3, 7]  # class 0 is a class, not nodata
    codes = np.full(lab.index.shape, -1)
    codes[lab.index != NODATA] = np.asarray(lab.scheme.codes)[lab.index[lab.index != NODATA]]
    assert (codes[:10, :5] == 0).all() and (codes[:10, 10:15] == 7).all()
    assert (codes[:10, 5:10] == -1).all()  # covered by classes 0 and 7: left unlabelled
    assert codes[15, 25] == 3 and (codes[15:, :4] == 3).all()
    assert lab.counts.tolist() == [50, 21, 50] and lab.labelled == 121
    assert any("50 pixel(s) covered by reference polygons of different classes" in w for w in warnings)


def test_spatial_split_holds_out_whole_blocks():
    rng = np.random.default_rng(0)
    index = rng.integers(0, 3, (512, 512)).astype(np.uint8)
    index[:, 448:] = NODATA
    s = spatial_split(index, 3, 64, 0.25, seed=5)
    assert s.block == 128 and s.val_blocks.shape == (4, 4)
    assert not s.val_blocks[:, 3].any() or s.labelled_blocks[:, 3].any()
    frac = s.val_counts.sum() / (s.val_counts.sum() + s.train_counts.sum())
    assert 0.2 <= frac <= 0.35 and (s.val_counts > 0).all()
    iv = s.is_val(0, 0, 512, 512)
    for br, bc in np.argwhere(s.val_blocks):
        assert iv[br * 128 : (br + 1) * 128, bc * 128 : (bc + 1) * 128].all()
    assert iv.sum() == s.n_val_blocks * 128 * 128
    again = spatial_split(index, 3, 64, 0.25, seed=5)
    assert np.array_equal(again.val_blocks, s.val_blocks)
    # Tiles always hold training labels, never validation ones; validation cells cover each held-out pixel once.
    sampler = TileSampler(index, s, 64, np.random.default_rng(1))
    for _ in range(50):
        r, c = sampler.sample()
        assert 0 <= r <= 512 - 64 and 0 <= c <= 512 - 64
        y = index[r : r + 64, c : c + 64].copy()
        y[s.is_val(r, c, 64, 64)] = NODATA
        assert (y != NODATA).any()
    cover = np.zeros(index.shape, int)
    for wr, wc, cr, cc, h, w in validation_cells(s, 512, 512, 64, index):
        assert wr <= cr and wc <= cc and cr + h <= wr + 64 and cc + w <= wc + 64
        cover[cr : cr + h, cc : cc + w] += 1
    assert cover.max() == 1 and (cover[iv & (index != NODATA)] == 1).all()
    assert training_tiles_per_epoch(s, 512, 512, 64) == s.n_train_blocks * 4
    one = np.full((256, 256), NODATA, np.uint8)
    one[10:60, 10:60] = 1
    with pytest.raises(OptsarError, match="one spatial block"):
        spatial_split(one, 2, 64, 0.2, seed=0)


def test_scene_source_memory_and_disk_agree(scene):
    with SceneSource(scene["optical"], scene["sar"], None, [2], scene["cloud_mask"]) as mem, \
            SceneSource(scene["optical"], scene["sar"], None, [2], scene["cloud_mask"], memory_limit=0) as disk:
        assert mem.in_memory and not disk.in_memory
        a, b = mem.read(70, 30, 64, 64), disk.read(70, 30, 64, 64)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
        assert mem.band_names() == (["B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B11", "B12"], ["VH"])
        assert a[0].shape == (10, 64, 64) and a[1].shape == (1, 64, 64) and a[2].dtype == bool


def test_augmentations():
    rng = np.random.default_rng(0)
    o = rng.uniform(200, 3000, (4, 64, 64)).astype(np.float32)
    o[:, 0, 0] = np.nan
    y = rng.integers(0, 3, (64, 64))
    a, b = dihedral([o, y], 1, True)
    assert np.array_equal(b, np.rot90(y)[:, ::-1])
    np.testing.assert_array_equal(a, np.rot90(o, 1, axes=(1, 2))[:, :, ::-1])  # same transform for image and labels
    assert np.isnan(a[:, 63, 63]).all() and a.flags["C_CONTIGUOUS"]
    out, alpha = simulate_clouds(o, rng, 10000.0, cover=0.5)
    assert np.isnan(out[:, 0, 0]).all()
    cloudy = alpha > 0.5
    assert 0.3 < (alpha > 0.05).mean() and cloudy.any()
    assert np.nanmean(out[:, cloudy]) > 1.3 * np.nanmean(o[:, cloudy])  # brighter under clouds
    # On a black surface what remains is the cloud itself: bright (0.35-0.85 reflectance) and spectrally flat.
    dark, alpha = simulate_clouds(np.zeros((6, 64, 64), np.float32), np.random.default_rng(3), 10000.0, cover=0.5)
    cloud = dark[:, alpha > 0.5] / alpha[alpha > 0.5]
    assert 3000 < np.median(cloud) < 9500
    spec = np.median(cloud, axis=1)
    assert spec.std() / spec.mean() < 0.15
    assert reflectance_unit({"center": [450.0, 700.0]}) == 10000.0 and reflectance_unit({"center": [0.05]}) == 1.0


def test_confusion_metrics():
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    m = confusion_metrics(cm)
    assert m["oa"] == pytest.approx(17 / 20)
    assert m["iou"][0] == pytest.approx(8 / 11) and m["iou"][2] is None
    assert m["miou"] == pytest.approx((8 / 11 + 9 / 12) / 2)


# ------------------------------------------------------------------------------------------
# the plan: budget, early stopping, automatic settings
# ------------------------------------------------------------------------------------------
def test_plan_resolves_the_automatic_settings():
    from optsar_plugin.training.options import TrainOptions
    from optsar_plugin.training.recipes import CPU_STEPS, make_plan, resolve_model_size

    assert resolve_model_size("auto", "cuda") == "paper" and resolve_model_size("auto", "cpu") == "small"
    p = make_plan(TrainOptions(model="specsar_former"), "small", "cpu", 512, 512)
    assert (p.tile, p.batch, p.max_steps) == (128, 4, CPU_STEPS["specsar_former"])
    assert p.epochs * p.steps_per_epoch >= p.max_steps and {"tile_size", "batch_size", "max_steps"} <= set(p.chosen)
    p = make_plan(TrainOptions(epochs=3, steps_per_epoch=7, tile_size=64, batch_size=2), "small", "cpu", 96, 300)
    assert (p.epochs, p.steps_per_epoch, p.max_steps, p.tile, p.batch) == (3, 7, 21, 64, 2) and not p.chosen.get("tile_size")
    assert make_plan(TrainOptions(), "small", "cpu", 96, 300).tile == 96  # the raster caps the tile
    p = make_plan(TrainOptions(model="mosfnet"), "paper", "cuda", 4000, 4000)
    assert (p.tile, p.lr) == (512, 1e-4)
    with pytest.raises(OptsarError, match="PATIENCE"):
        TrainOptions(patience=-1)
    with pytest.raises(OptsarError, match="MODEL_SIZE"):
        TrainOptions(model_size="huge")


def test_class_balance_weights_rare_classes_once_by_the_networks_default():
    from optsar_plugin.training.recipes import class_balance

    counts = [900, 90, 10]
    cln = class_balance("auto", "cloudlulc_net", counts)  # inverse by measurement (the notebook)
    w = cln["weights"]
    assert (cln["mode"], cln["focal_alpha"], cln["sampling_power"]) == ("inverse", None, 1.0)
    assert sum(w) / 3 == pytest.approx(1.0, abs=1e-5) and w[2] / w[0] == pytest.approx(90, rel=1e-3)
    ssf = class_balance("auto", "specsar_former", counts)  # the paper's focal alpha, not a second weighting
    assert ssf["weights"] is None and ssf["focal_alpha"] == w and ssf["sampling_power"] == 1.0
    for balance, model in (("auto", "mosfnet"), ("none", "cloudlulc_net")):  # balanced tiles instead
        b = class_balance(balance, model, counts)
        assert (b["mode"], b["weights"], b["focal_alpha"], b["sampling_power"]) == ("none", None, None, 0.5)
    sq = class_balance("sqrt", "mosfnet", counts)["weights"]
    assert sq[2] / sq[0] == pytest.approx(90 ** 0.5, rel=1e-3)


def test_one_labelled_chip_trains_with_the_defaults(scene, tmp_path):
    """Every pixel of the 256 px scene labelled: an automatic tile and validation blocks small enough to validate."""
    r = train(scene["optical"], scene["sar"], str(tmp_path / "c.safetensors"), labels=scene["truth"],
              model="cloudlulc_net", model_options=TINY["cloudlulc_net"], max_steps=3, device="cpu")
    assert (r["plan"]["tile"], r["plan"]["batch"], r["steps"]) == (128, 4, 3) and r["stopped"] == "budget"
    v = read_metadata(r["checkpoint"])["training"]["validation"]
    assert v["validation_pixels"] > 0.1 * 256 * 256 and v["block_px"] <= 128 and len(v["held_out_blocks"]) >= 2


def test_early_stopping_says_why(scene, tmp_path, monkeypatch):
    from optsar_plugin.training import loop

    def flat(run):  # a validation curve that never improves
        k = run.num_classes
        return {"oa": 0.5, "miou": 0.4, "macro_f1": 0.4, "iou": [0.4] * k, "loss": 1.0, "cm": np.eye(k, dtype=np.int64)}

    monkeypatch.setattr(loop, "validate", flat)
    r = _train(scene, tmp_path / "e.safetensors", epochs=None, steps_per_epoch=1, max_steps=50, patience=2,
               output_log=str(tmp_path / "e.csv"))
    # not before half the budget (step 25): the validation curve is too noisy to stop on while the lr is high
    assert r["stopped"] == "early_stopping" and r["steps"] == 25 and r["best_epoch"] == 1
    assert "did not improve for 2 validations" in r["stop_reason"]
    t = read_metadata(r["checkpoint"])["training"]
    assert t["stopped"] == "early_stopping" and t["plan"]["max_steps"] == 50 and t["plan"]["stop_after"] == 25
    with open(tmp_path / "e.csv", newline="") as fh:
        assert [int(row["step"]) for row in csv.DictReader(fh)] == list(range(1, 26))


def test_unknown_keyword_is_one_clear_line(scene, tmp_path):
    with pytest.raises(OptsarError, match="does not know the option.*epoch_count"):
        train(scene["optical"], scene["sar"], str(tmp_path / "x.safetensors"), labels=scene["truth"], epoch_count=3)


def test_report_page_names_the_model_and_classes_and_rounds_ticks(trained):
    from optsar_plugin.training.report import nice_ticks

    assert nice_ticks(0, 1500) == ([0, 500, 1000, 1500], 0)
    assert nice_ticks(0.0, 1.0) == ([0.0, 0.2, 0.4, 0.6, 0.8, 1.0], 1)
    assert nice_ticks(0.03, 0.61)[0][0] == 0.0 and nice_ticks(0.03, 0.61)[0][-1] >= 0.61
    text = open(trained["curve"], encoding="utf-8").read()
    assert "<h1>Training of CloudLULC-Net" in text and "Created " in text
    assert text.count("class='swatch'") == len(CLASSES) and "#419BDF" in text
    assert "stopped" in text and "the step budget (24 steps) was reached" in text


def test_an_interrupted_run_resumes_to_the_weights_of_an_uninterrupted_one(scene, tmp_path):
    from optsar_plugin.training.resume import SUFFIX

    full = _train(scene, tmp_path / "full.safetensors", epochs=3, steps_per_epoch=2)
    assert full["resumed_from_step"] is None and not os.path.exists(str(tmp_path / "full.safetensors") + SUFFIX)
    out = tmp_path / "part.safetensors"
    part = _train(scene, out, epochs=3, steps_per_epoch=2, feedback=CancelAfter(5))  # cancelled in epoch 3
    assert part["cancelled"] and os.path.isfile(str(out) + SUFFIX)
    with pytest.raises(OptsarError, match="belongs to a different run.*seed"):
        _train(scene, out, epochs=3, steps_per_epoch=2, seed=7, resume=True)
    done = _train(scene, out, epochs=3, steps_per_epoch=2, resume=True)
    assert done["resumed_from_step"] == 4 and len(done["history"]) == 3
    assert done["content_hash"] == full["content_hash"] and done["history"][-1] == full["history"][-1] | {
        "seconds": done["history"][-1]["seconds"]}
    assert not os.path.exists(str(out) + SUFFIX) and not _leftovers(tmp_path)
    again = _train(scene, tmp_path / "fresh.safetensors", epochs=1, steps_per_epoch=1, resume=True)
    assert any("no resumable state" in w for w in again["warnings"])


def test_classify_converts_another_encoding_of_the_same_scene_and_says_so(trained, scene, tmp_path):
    """Optical as float reflectance and SAR as linear power: the same map as the integer / dB inputs trained on."""
    from optsar_plugin.inference import classify

    with rasterio.open(scene["optical"]) as src:
        profile, dn, onames = src.profile, src.read().astype(np.float32), src.descriptions
    refl = np.where(dn == 0, np.nan, dn / 10000.0).astype(np.float32)
    profile.update(dtype="float32", nodata=float("nan"))
    with rasterio.open(tmp_path / "refl.tif", "w", **profile) as dst:
        dst.write(refl)
        dst.descriptions = onames
    with rasterio.open(scene["sar"]) as src:
        profile, db = src.profile, src.read()
        names = src.descriptions
    with rasterio.open(tmp_path / "linear.tif", "w", **profile) as dst:
        dst.write((10 ** (db / 10)).astype(profile["dtype"]))
        dst.descriptions = names
    warnings = []

    class Collect(NullFeedback):
        def warning(self, message):
            warnings.append(message)

    def run(optical, sar, name):
        out = classify(optical, sar, trained["checkpoint"], str(tmp_path / name), device="cpu", tile_size=64,
                       overlap=16, feedback=Collect())
        with rasterio.open(out["output"]) as ds:
            return ds.read(1)

    a = run(scene["optical"], scene["sar"], "a.tif")
    assert not warnings
    assert (run(str(tmp_path / "refl.tif"), scene["sar"], "b.tif") == a).mean() > 0.999
    assert any("optical band(s) B2, B3" in w and "reflectance (values 0-1)" in w for w in warnings), warnings
    # The SAR is warped bilinearly onto the optical grid: in linear power that averages differently than in dB,
    # so the maps agree closely rather than exactly.
    assert (run(scene["optical"], str(tmp_path / "linear.tif"), "c.tif") == a).mean() > 0.9
    assert any("sar band(s) VV, VH" in w for w in warnings), warnings


def test_the_training_report_escapes_class_names_and_colours():
    """Classes are data: a name or colour holding markup must not become markup in the report."""
    from optsar_plugin.training.report import curve_html

    evil = '#000000" onload="alert(1)'
    classes = [{"code": 0, "name": "<script>x</script>", "color": evil}, {"code": 1, "name": "b", "color": "#00FF00"}]
    history = [{"epoch": 1, "step": 10, "loss": 1.0, "val_loss": 0.9, "val_oa": 0.5, "val_miou": 0.4,
                "val_iou": [0.3, 0.5]}]
    page = curve_html(history, {"model": "cloudlulc_net", "summary": {"best epoch": 1}}, classes)
    assert "<script>x" not in page and 'onload="alert' not in page
    assert "&lt;script&gt;" in page and "&quot; onload=&quot;" in page


def test_the_automatic_cpu_budget_has_a_time_limit_and_explicit_budgets_do_not():
    from optsar_plugin.training.options import TrainOptions
    from optsar_plugin.training.recipes import AUTO_CPU_MINUTES, make_plan

    plan = make_plan(TrainOptions(model="mosfnet"), "small", "cpu", 512, 512)
    assert plan.max_minutes == AUTO_CPU_MINUTES and "max_minutes" in plan.chosen
    assert make_plan(TrainOptions(model="mosfnet", max_steps=100), "small", "cpu", 512, 512).max_minutes == 0
    assert make_plan(TrainOptions(epochs=2), "small", "cpu", 512, 512).max_minutes == 0
    assert make_plan(TrainOptions(), "paper", "cuda", 512, 512).max_minutes == 0
    assert make_plan(TrainOptions(max_minutes=0), "small", "cpu", 512, 512).max_minutes == 0
    assert make_plan(TrainOptions(max_steps=100, max_minutes=2.5), "small", "cpu", 512, 512).max_minutes == 2.5
    with pytest.raises(OptsarError, match="MAX_MINUTES must be 0"):
        TrainOptions(max_minutes=-1)


def test_fitting_the_budget_to_the_time_limit_lowers_steps_warm_up_and_early_stopping_together():
    from optsar_plugin.training.options import TrainOptions
    from optsar_plugin.training.recipes import fit_to_time, make_plan

    plan = make_plan(TrainOptions(max_steps=1000, steps_per_epoch=50, max_minutes=1), "small", "cpu", 512, 512)
    assert (plan.warmup, plan.epochs) == (50, 20)
    assert fit_to_time(plan, 1, 50, 2.0, 2.0) is None  # 20 periods of 2 s fit in a minute
    assert fit_to_time(plan, 1, 50, 10.0, 10.0) == 300  # 10 s a period: 5 more after the first
    assert (plan.max_steps, plan.epochs, plan.stop_after, plan.warmup) == (300, 6, 150, 15)
    assert fit_to_time(plan, 4, 200, 61.0, 10.0) == 200  # over time already: no step beyond those done


def test_a_run_slower_than_its_time_limit_is_fitted_to_it_and_says_so(scene, tmp_path, monkeypatch):
    import time

    from optsar_plugin.training import loop

    real_step = loop.train_step

    def slow_step(*args):  # a machine three times too slow for the budget
        time.sleep(0.1)
        return real_step(*args)

    monkeypatch.setattr(loop, "train_step", slow_step)
    messages = []
    feedback = NullFeedback()
    feedback.info = messages.append
    r = _train(scene, tmp_path / "t.safetensors", epochs=None, steps_per_epoch=4, max_steps=400, max_minutes=0.05,
               patience=0, feedback=feedback)
    assert r["stopped"] in ("budget", "time_limit") and 4 <= r["steps"] <= 40, r["stop_reason"]
    assert r["plan"]["max_steps"] < 400 and any("time limit (0.05 min) holds" in m for m in messages)
    if r["stopped"] == "budget":  # the schedule was fitted to the lowered budget: its learning rate ends near 0
        assert r["history"][-1]["lr"] < 0.5 * r["plan"]["lr"]
    else:
        assert "time limit (0.05 min) was reached" in r["stop_reason"]
