"""The inference engine: tiling, blending, streaming, nodata, clouds, OOM back-off, outputs, errors.

Most tests inject a deterministic predictor into :func:`run_inference` so that they
test the engine, not a network; the tests at the end run :func:`classify` with a
real (tiny, fixed-seed) CloudLULC-Net checkpoint and the command line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from optsar_plugin import inference
from optsar_plugin.classes import NODATA
from optsar_plugin.errors import Cancelled, OptsarError
from optsar_plugin.inference import StreamingBlender, blend_weights, run_inference, windows
from optsar_plugin.progress import NullFeedback
from tests.helpers import RES, UTM, X0, Y0
from tests.helpers import write_raster as write

ROOT = Path(__file__).resolve().parent.parent
CLASSES = [
    {"code": 0, "name": "water", "color": "#419BDF"},
    {"code": 4, "name": "crops", "color": "#E49635"},
    {"code": 6, "name": "built", "color": "#C4281B"},
]


def metadata(optical=("B2", "B3", "B4"), sar=("VV", "VH"), model="mosfnet"):
    return {
        "format_version": 1,
        "model": {"name": model, "config": {"optical_bands": len(optical), "sar_bands": len(sar), "num_classes": 3}},
        "bands": {"optical": list(optical), "sar": list(sar)},
        "normalisation": {
            "optical": {"center": [1000.0] * len(optical), "scale": [500.0] * len(optical), "to_db": False},
            "sar": {"center": [0.0] * len(sar), "scale": [1.0] * len(sar), "to_db": False},
        },
        "classes": CLASSES,
        "content_hash": "f" * 64,
        "created": "2024-05-01T00:00:00+00:00",
        "tile_size": 512,
    }


def scene(tmp_path, h=150, w=170, seed=0):
    """Smooth random optical (3 bands, uint16, nodata 0) and SAR (2 bands, float32) on the same grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 20.0
    opt = np.stack([1000 + 600 * np.sin(xx + k) * np.cos(yy * (k + 1) / 2) + 50 * rng.standard_normal((h, w))
                    for k in range(3)])
    sar = np.stack([np.sin(yy + 0.5 * k) + 0.1 * rng.standard_normal((h, w)) for k in range(2)]).astype(np.float32)
    o = write(tmp_path / "optical.tif", np.clip(opt, 1, 4000).astype(np.uint16), nodata=0)
    s = write(tmp_path / "sar.tif", sar)
    return o, s


def linear_predictor(optical, sar):
    """Pointwise and deterministic: softmax of a fixed linear map of the input channels."""
    z = np.stack([optical[:, 0] - sar[:, 0], optical[:, 1] + sar[:, 1], optical[:, 2] - optical[:, 0]], axis=1)
    z = 3 * (z - z.max(axis=1, keepdims=True))
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def constant_predictor(index, num_classes=3):
    def predict(optical, sar):
        p = np.full((optical.shape[0], num_classes) + optical.shape[2:], 0.1, np.float32)
        p[:, index] = 0.8
        return p

    return predict


class Recorder(NullFeedback):
    def __init__(self, cancel_after=None):
        self.warnings, self.infos, self.fractions = [], [], []
        self.cancel_after = cancel_after

    def warning(self, message):
        self.warnings.append(message)

    def info(self, message):
        self.infos.append(message)

    def progress(self, fraction, message=None):
        self.fractions.append(fraction)

    def is_canceled(self):
        return self.cancel_after is not None and len(self.fractions) >= self.cancel_after


def read(path, band=1):
    with rasterio.open(path) as ds:
        return ds.read(band)


def files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


# -- blending --------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [1, 2, 9, 20])
def test_blender_argmax_is_numpys_argmax_also_on_ties_and_strided_blocks(classes):
    """The blender's argmax (a maximum, then class planes last to first) keeps the first class on
    ties, as np.argmax does, also on the strided (C, h, w) views of its accumulator it is given."""
    rng = np.random.default_rng(classes)
    b = StreamingBlender(64, 64, classes, 64, 64, [0], [0], list(range(classes)), sink=None)
    for h, w in ((64, 64), (37, 64), (64, 5), (1, 1)):
        acc = rng.integers(0, 3, (classes + 1, 64, 64)).astype(np.float32)  # many ties
        acc[:, rng.random((64, 64)) < 0.2] = 0.5  # every class tied
        stack = acc[:classes, :h, :w]
        np.testing.assert_array_equal(b._argmax(stack), np.argmax(stack, axis=0).astype(np.uint8))


def _stream_to_tiles(H, W, stripe, folder, block=32, tile=64, overlap=20, C=3):
    """Blend random windows visited in ``stripe``-window stripes into a TileWriter whose writes land in arrays
    (stride 44 px: stripe edges cut the 32-px tiles)."""
    from optsar_plugin.inference.windows import Grid
    from optsar_plugin.inference.writer import TileWriter
    from optsar_plugin.raster_io import window_starts

    th, rows = window_starts(H, tile, overlap)
    tw, cols = window_starts(W, tile, overlap)
    grid = Grid(th, tw, rows, cols, stripe)
    out = {"codes": np.zeros((1, H, W), np.uint8), "probs": np.zeros((C, H, W), np.float32),
           "times": np.zeros((H, W), np.int64)}

    class Writes:
        def write(self, ds, array, window):
            r, c, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
            assert h % block == 0 or r + h == H  # whole tile rows only
            out[ds][:, r:r + h, c:c + w] = array
            if ds == "codes":
                out["times"][r:r + h, c:c + w] += 1

    sink = TileWriter(W, H, "codes", None, "probs", block=block, writes=Writes(), spill_dir=str(folder),
                      spill_rows=th + block)
    spills = [sink.outputs[0].spill, sink.probabilities.spill]
    b = StreamingBlender(H, W, C, th, tw, rows, cols, list(range(C)), sink, probabilities=True,
                         stripes=grid.stripes(), spill_dir=str(folder))
    held = 0
    for i, j in (ij for batch in grid.batches(4) for ij in batch):
        rng = np.random.default_rng([3, i, j])  # the same window whatever the order of visit
        b.add(i, j, rng.dirichlet(np.ones(C), size=(th, tw)).transpose(2, 0, 1).astype(np.float32),
              np.ones((th, tw), bool))
        held = max(held, sum(a.nbytes for col in (sink.outputs[0], sink.probabilities) for pieces in col.pending
                             for _, _, a in pieces if isinstance(a, np.ndarray)))
    assert files(folder) == []  # the spill files have no name
    used = all(sp.used for sp in spills)
    slots = [sp.slots for sp in spills]
    b.close()
    sink.close()
    assert not any(sp.used for sp in spills)  # closed
    assert (out["times"] == 1).all()  # every tile written, exactly once
    return out, held, used, len(grid.stripes()), slots


def test_tiles_cut_by_a_stripe_edge_wait_in_a_file_so_memory_does_not_grow_with_the_height(tmp_path):
    whole, _, used, n, _ = _stream_to_tiles(400, 300, 0, tmp_path)
    assert n == 1 and not used
    striped, held, used, n, _ = _stream_to_tiles(400, 300, 2, tmp_path)
    assert n > 1 and used
    np.testing.assert_array_equal(striped["codes"], whole["codes"])  # the same map, bit for bit
    np.testing.assert_array_equal(striped["probs"], whole["probs"])
    _, held_tall, _, n_tall, slots = _stream_to_tiles(1600, 300, 2, tmp_path)
    assert held_tall == held  # what waits in memory does not depend on the height
    _, _, _, n_wide, slots_wide = _stream_to_tiles(1600, 900, 2, tmp_path)
    assert n_wide > 2 * n_tall and slots_wide == slots  # the file's slots are reused, stripe after stripe
    assert max(slots) <= 2 * 1600 // 44 + 2  # about one tile column of the height (a piece per window row)


def test_blend_weights_taper_with_floor():
    w = blend_weights(64, 96)
    assert w.shape == (64, 96)
    assert w.min() >= inference.WEIGHT_FLOOR * inference.WEIGHT_FLOOR - 1e-7 and w.min() > 0
    assert w[32, 48] > 0.99 and w[0, 0] < 0.01
    np.testing.assert_allclose(w, w[::-1, ::-1], rtol=1e-6)  # symmetric


@pytest.mark.parametrize("H,W,tile,overlap,stripe", [
    (150, 170, 64, 16, 0), (64, 300, 64, 24, 0), (200, 61, 96, 32, 0), (40, 40, 64, 0, 0),
    (150, 300, 64, 16, 2), (130, 400, 64, 24, 3), (100, 300, 64, 0, 2), (150, 170, 64, 16, 3)])
def test_streaming_blender_equals_full_array_blend(H, W, tile, overlap, stripe, tmp_path):
    """The rolling accumulators give exactly what blending on whole arrays gives, also visited in stripes
    (the columns one stripe leaves to the next going through a temporary file without a name)."""
    from optsar_plugin.inference.windows import Grid
    from optsar_plugin.raster_io import window_starts

    C = 3
    th, rows = window_starts(H, tile, overlap)
    tw, cols = window_starts(W, tile, overlap)
    grid = Grid(th, tw, rows, cols, stripe)
    rng = np.random.default_rng(1)
    probs = {(i, j): rng.dirichlet(np.ones(C), size=(th, tw)).transpose(2, 0, 1).astype(np.float32)
             for i in range(len(rows)) for j in range(len(cols))}
    valid = np.ones((th + rows[-1], tw + cols[-1]), bool)
    valid[5:9, 7:30] = False

    class Sink:
        def __init__(self):
            self.codes = np.full((H, W), 77, np.uint8)
            self.conf = np.full((H, W), -1, np.float32)
            self.rows = []

        def put(self, r0, c0, codes, conf=None, probs=None):
            assert (self.codes[r0:r0 + codes.shape[0], c0:c0 + codes.shape[1]] == 77).all()  # each pixel once
            self.codes[r0:r0 + codes.shape[0], c0:c0 + codes.shape[1]] = codes
            self.conf[r0:r0 + codes.shape[0], c0:c0 + codes.shape[1]] = conf

        def done(self, row_end, col_from, col_to):
            assert (self.codes[:row_end, col_from:col_to] != 77).all()  # everything declared final was emitted
            if col_to == W:
                self.rows.append(row_end)

    sink = Sink()
    codes = [c["code"] for c in CLASSES]
    b = StreamingBlender(H, W, C, th, tw, rows, cols, codes, sink, confidence=True, stripes=grid.stripes(),
                         spill_dir=str(tmp_path))
    for i, j in (ij for batch in grid.batches(5) for ij in batch):
        b.add(i, j, probs[i, j], valid[rows[i]:rows[i] + th, cols[j]:cols[j] + tw])
    spilled = b.edge._file is not None
    assert spilled == (len(grid.stripes()) > 1 and overlap > 0)
    assert files(tmp_path) == []  # the spill file has no name
    b.close()
    assert b.edge._file is None
    # reference: whole-array blend
    acc = np.zeros((C, rows[-1] + th, cols[-1] + tw))
    wsum = np.zeros(acc.shape[1:])
    w = blend_weights(th, tw)
    for (i, j), p in probs.items():
        acc[:, rows[i]:rows[i] + th, cols[j]:cols[j] + tw] += p * w
        wsum[rows[i]:rows[i] + th, cols[j]:cols[j] + tw] += w
    ref = (acc / wsum)[:, :H, :W]
    expected = np.asarray(codes, np.uint8)[ref.argmax(0)]
    expected[~valid[:H, :W]] = NODATA
    np.testing.assert_array_equal(sink.codes, expected)
    ok = valid[:H, :W]
    np.testing.assert_allclose(sink.conf[ok], ref.max(0)[ok], rtol=1e-5)
    assert np.isnan(sink.conf[~ok]).all()
    assert sink.rows == [rows[k + 1] for k in range(len(rows) - 1)] + [H]
    assert not b.edge  # every stripe's shared columns were taken by the next stripe
    # the band of shared rows spans a stripe, not the scene
    widest = max((cols[j1] if j1 < len(cols) else W) - cols[j0] for j0, j1 in grid.stripes())
    assert b.carry.shape == (C + 1, th - (rows[1] - rows[0]) if len(rows) > 1 else 0, widest)
    assert (widest < W) == (len(grid.stripes()) > 1)


def test_wide_scenes_are_visited_in_stripes_of_window_columns():
    from optsar_plugin.inference import windows
    from optsar_plugin.raster_io import Region

    grid = windows.plan_windows(Region(0, 0, 3000, 8000), 512, 64, 64, stripe_px=2304)  # stride 448: 18 columns
    assert grid.stripe == 5 and grid.stripes() == [(0, 5), (5, 10), (10, 15), (15, 18)]
    order = [ij for batch in grid.batches(4) for ij in batch]
    assert len(order) == len(set(order)) == grid.n_windows
    assert order[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]  # row by row within the first stripe
    assert order[5 * len(grid.rows)] == (0, 5)
    assert grid.stripe_width(8000) == 4 * 448 + 512 == 2304
    whole = windows.plan_windows(Region(0, 0, 3000, 8000), 512, 64, 64)
    assert whole.stripes() == [(0, 18)] and whole.stripe_width(8000) == 8000


def test_stripes_are_as_wide_as_gdals_cache_holds_a_window_row_of_blocks():
    import rasterio

    from optsar_plugin.inference import windows

    def source(width, bands=8):  # what the cache rule reads of a dataset: float32 bands
        return type("Source", (), dict(block_shapes=[(256, 256)], dtypes=("float32",) * bands, width=width))()

    wide, narrow = source(30000), source(1000)  # a 1000-px window row of blocks: 29 MiB
    with rasterio.Env(GDAL_CACHEMAX=4000):  # GDAL's own cache size (MB) does not clip the figures
        assert windows.gdal_cache_bytes(rasterio, (wide,), 512) == int(1.25 * (512 + 256) * 30000 * 32)
        assert windows.gdal_cache_bytes(rasterio, (wide,), 512, share=0.1) == int(1.25 * 768 * (3000 + 256) * 32)
        assert windows.stripe_px(rasterio, (narrow,), 512, 1000, 1000) is None  # a window row fits: whole rows
        region = type("R", (), dict(width=30000, height=2000))()
        quad = source(30000, bands=4)  # 4 float32 bands: a stripe of 4 windows fits the budget
        grid = windows.plan_windows(region, 512, 64, 64, windows.stripe_px(rasterio, (quad,), 512, 30000, 30000))
        need = windows.gdal_cache_bytes(rasterio, (quad,), 512, grid.stripe_width(30000) / 30000)
        assert grid.stripe == 4 and len(grid.stripes()) == 17
        assert need <= windows.STRIPE_CACHE_BYTES < need + 1.25 * 768 * 448 * 16  # one window column more would not fit
        # 8 float32 bands: not even 2 windows fit; a stripe never has fewer, and the cache holds their row of blocks
        px = windows.stripe_px(rasterio, (wide,), 512, 30000, 30000)
        grid = windows.plan_windows(region, 512, 64, 64, px)
        assert grid.stripe == 2 and grid.stripe_width(30000) == 512 + 448
        assert windows.gdal_cache_bytes(rasterio, (wide,), 512, 960 / 30000) == int(1.25 * 768 * (960 + 256) * 32) \
            > windows.STRIPE_CACHE_BYTES
    with rasterio.Env(GDAL_CACHEMAX=4000):
        px = windows.stripe_px(rasterio, (quad,), 512, 30000, 30000)
    for limit in (12, 12 * 2**20):  # a smaller GDAL cache (the user's GDAL_CACHEMAX, in MB or bytes): stripes fit it
        with rasterio.Env(GDAL_CACHEMAX=limit):
            assert windows.cache_limit(rasterio) == 12 * 2**20
            px12 = windows.stripe_px(rasterio, (quad,), 512, 30000, 30000)
        assert px12 < px / 3
        assert windows.row_blocks_bytes((quad,), 512, px12 / 30000) <= 12 * 2**20


def test_a_users_gdal_cachemax_sets_the_stripe_budget_larger_or_smaller(monkeypatch):
    import rasterio

    from optsar_plugin.inference import windows

    quad = type("Source", (), dict(block_shapes=[(256, 256)], dtypes=("float32",) * 4, width=30000))()
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    with rasterio.Env(GDAL_CACHEMAX=4000):  # GDAL's cache larger than the budget: the budget decides
        default = windows.stripe_px(rasterio, (quad,), 512, 30000, 30000)
    widths = {}
    for mb in (12, 128):
        monkeypatch.setenv("GDAL_CACHEMAX", f"{mb}MB")  # GDAL reads it once, at start: Env sets what it read
        with rasterio.Env(GDAL_CACHEMAX=mb):
            widths[mb] = windows.stripe_px(rasterio, (quad,), 512, 30000, 30000)
            assert windows.row_blocks_bytes((quad,), 512, widths[mb] / 30000) <= mb * 2**20
    assert widths[12] < default / 3 and widths[128] > 3 * default


# -- end to end with injected predictors ------------------------------------------------------------


def test_outputs_have_codes_colour_table_names_tags_and_style(tmp_path):
    from optsar_plugin.styles import read_qml_classes

    o, s = scene(tmp_path)
    out = tmp_path / "out" / "classes.tif"
    out.parent.mkdir()
    res = run_inference(o, s, out, metadata(), linear_predictor, tile_size=64, overlap=16, batch_size=3,
                        output_confidence=tmp_path / "out" / "conf.tif",
                        output_probabilities=tmp_path / "out" / "probs.tif", checkpoint_name="model.safetensors")
    assert files(out.parent) == ["classes.qml", "classes.tif", "classes.tif.aux.xml", "conf.qml", "conf.tif", "probs.tif"]
    assert res["output"] == str(out) and res["qml"] == str(out.parent / "classes.qml")
    assert (out.parent / "classes.qml").stat().st_mode == out.stat().st_mode  # as readable as the raster
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("uint8",) and ds.nodata == 255 and (ds.width, ds.height) == (170, 150)
        assert ds.profile["tiled"] and ds.block_shapes == [(256, 256)]
        assert ds.compression.name.lower() == "deflate"
        assert ds.crs.to_epsg() == 32633 and ds.transform == from_origin(X0, Y0, RES, RES)
        cmap = ds.colormap(1)
        assert cmap[4][:3] == (0xE4, 0x96, 0x35) and cmap[0][:3] == (0x41, 0x9B, 0xDF)
        tags = ds.tags()
        data = ds.read(1)
    assert tags["OPTSAR_MODEL"] == "mosfnet"
    assert tags["OPTSAR_CHECKPOINT_HASH"] == "f" * 64 and tags["OPTSAR_CHECKPOINT"] == "model.safetensors"
    assert tags["OPTSAR_DATE"].startswith("20") and "T" in tags["OPTSAR_DATE"]
    assert set(np.unique(data)) <= {0, 4, 6} and len(np.unique(data)) == 3
    from optsar_plugin.styles import read_raster_classes

    # category names (GDAL PAM side-car) and colours, as GDAL reads them back
    assert [(c.code, c.name, c.color) for c in read_raster_classes(out)] == [
        (c["code"], c["name"], c["color"]) for c in CLASSES]
    assert [(c.code, c.name) for c in read_qml_classes(out.parent / "classes.qml")] == [(0, "water"), (4, "crops"), (6, "built")]
    with rasterio.open(tmp_path / "out" / "probs.tif") as ds:
        assert ds.descriptions == ("water", "crops", "built") and ds.dtypes[0] == "float32"
        probs = ds.read()
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    conf = read(tmp_path / "out" / "conf.tif")
    np.testing.assert_allclose(conf, probs.max(0), atol=1e-6)
    # the class map is the argmax of the probabilities, mapped to the checkpoint's codes
    np.testing.assert_array_equal(data, np.array([0, 4, 6], np.uint8)[probs.argmax(0)])
    assert res["class_pixels"][0] + res["class_pixels"][4] + res["class_pixels"][6] == 150 * 170


def test_every_output_tile_is_written_once(tmp_path, monkeypatch):
    """Compressed tiles rewritten after a partial write would leave dead space: the files are as
    small as a one-shot copy of the same pixels with the same creation options.  (A tiny GDAL
    cache makes GDAL flush any partially written tile at once, as on a large scene.)"""
    monkeypatch.setattr(windows, "GDAL_CACHE_BYTES", 256 * 1024)
    o, s = scene(tmp_path, 600, 700)
    run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=96, overlap=24, batch_size=3,
                  output_confidence=tmp_path / "conf.tif")
    for name in ("out.tif", "conf.tif"):
        with rasterio.open(tmp_path / name) as ds:
            data, profile = ds.read(), ds.profile
        with rasterio.open(tmp_path / f"copy_{name}", "w", **profile) as ds:
            ds.write(data)
        assert (tmp_path / name).stat().st_size <= 1.01 * (tmp_path / f"copy_{name}").stat().st_size + 4096


def test_tiled_equals_single_pass_for_a_pointwise_predictor(tmp_path):
    o, s = scene(tmp_path, 130, 200)
    a = run_inference(o, s, tmp_path / "tiled.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                      output_probabilities=tmp_path / "tp.tif")
    b = run_inference(o, s, tmp_path / "single.tif", metadata(), linear_predictor, tile_size=256, overlap=0,
                      output_probabilities=tmp_path / "sp.tif")
    assert a["windows"] > 1 and b["windows"] == 1
    np.testing.assert_allclose(read(tmp_path / "tp.tif", 2), read(tmp_path / "sp.tif", 2), atol=1e-5)
    assert (read(tmp_path / "tiled.tif") == read(tmp_path / "single.tif")).mean() > 0.9999


def _conv_predictor(seed=0):
    """A fixed-seed random CNN (receptive field 11 px, zero padding): window edges change its output.

    Its logits are a 5x5 box blur of the first three input channels plus the random
    network's output, so that all three classes occur.
    """
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(5, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=2, dilation=2), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 3, 3, padding=1),
    ).eval()
    blur = torch.nn.Conv2d(3, 3, 5, padding=2, bias=False, groups=3)
    torch.nn.init.constant_(blur.weight, 1 / 25)

    def predict(optical, sar):
        with torch.inference_mode():
            x = torch.from_numpy(np.concatenate([optical, sar], axis=1))
            logits = 2 * blur(x[:, :3]) + net(x)
            return torch.softmax(4 * logits, dim=1).numpy()

    return predict


def test_tiled_and_single_pass_maps_agree_with_a_cnn(tmp_path):
    """Seams would show where windows meet; blending keeps >= 99.5 % agreement with one pass."""
    o, s = scene(tmp_path, 200, 200, seed=3)
    predict = _conv_predictor()
    run_inference(o, s, tmp_path / "single.tif", metadata(), predict, tile_size=256, overlap=0)
    run_inference(o, s, tmp_path / "tiled.tif", metadata(), predict, tile_size=64, overlap=24, batch_size=2)
    single, tiled = read(tmp_path / "single.tif"), read(tmp_path / "tiled.tif")
    assert len(np.unique(single)) == 3  # the map is not trivially one class
    agreement = (single == tiled).mean()
    assert agreement >= 0.995, agreement
    # without overlap (hard window edges) the same network disagrees more: the test can fail
    run_inference(o, s, tmp_path / "hard.tif", metadata(), predict, tile_size=64, overlap=0)
    assert (read(tmp_path / "hard.tif") == single).mean() < agreement


def test_nodata_propagates_and_class_zero_is_kept(tmp_path):
    o, s = scene(tmp_path, 96, 128)
    with rasterio.open(o, "r+") as ds:
        opt = ds.read()
        opt[:, 10:20, 10:30] = 0  # all optical bands nodata -> output nodata
        opt[1, 40:50, 40:60] = 0  # one band only -> still classified
        ds.write(opt)
    with rasterio.open(s, "r+") as ds:
        sar = ds.read()
        sar[:, 60:70, 0:128] = np.nan  # SAR missing -> output nodata
        sar[0, 80:90, 0:50] = np.nan  # one SAR band only -> still classified
        ds.write(sar)
    res = run_inference(o, s, tmp_path / "out.tif", metadata(), constant_predictor(0), tile_size=64, overlap=16,
                        output_confidence=tmp_path / "conf.tif")
    out = read(tmp_path / "out.tif")
    expected = np.zeros((96, 128), np.uint8)  # class index 0 has code 0, a valid class
    expected[10:20, 10:30] = NODATA
    expected[60:70] = NODATA
    np.testing.assert_array_equal(out, expected)
    assert res["valid_pixels"] == int((expected == 0).sum())
    conf = read(tmp_path / "conf.tif")
    assert np.isnan(conf[expected == NODATA]).all() and np.allclose(conf[expected == 0], 0.8)


def test_sar_nodata_value_and_footprint_propagate(tmp_path):
    o, _ = scene(tmp_path, 64, 96)
    sar = np.ones((2, 64, 48), np.float32)
    sar[:, :8, :] = -9999.0
    # covers only the left half of the optical raster (pixel size 20 m wide)
    s = write(tmp_path / "half.tif", sar, transform=from_origin(X0, Y0, 10, 10), nodata=-9999.0)
    run_inference(o, s, tmp_path / "out.tif", metadata(), constant_predictor(1), tile_size=64, overlap=16)
    out = read(tmp_path / "out.tif")
    assert (out[8:, :48] == 4).all()
    assert (out[:8] == NODATA).all() and (out[:, 48:] == NODATA).all()


def test_all_nodata_is_an_error_and_writes_nothing(tmp_path):
    o = write(tmp_path / "o.tif", np.zeros((3, 80, 80), np.uint16), nodata=0)
    s = write(tmp_path / "s.tif", np.ones((2, 80, 80), np.float32))
    before = files(tmp_path)
    with pytest.raises(OptsarError, match="No valid pixel"):
        run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                      output_confidence=tmp_path / "conf.tif")
    assert files(tmp_path) == before


def test_sar_in_epsg4326_over_utm_optical_works(tmp_path):
    """The SAR (lon/lat) is warped per window; a SAR-driven predictor draws its boundary at the right place."""
    o, _ = scene(tmp_path, 120, 120)
    w, s_, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - 1200, X0 + 1200, Y0)
    pad = 0.003
    cols, rows = 160, 140
    dx, dy = (e - w + 2 * pad) / cols, (n - s_ + 2 * pad) / rows
    lon = (w - pad) + (np.arange(cols) + 0.5) * dx
    mid = (w + e) / 2
    vv = np.broadcast_to((lon - mid) * 1000, (rows, cols)).astype(np.float32)  # > 0 east of mid
    sar = write(tmp_path / "sar4326.tif", np.stack([vv, vv]), crs="EPSG:4326",
                transform=from_origin(w - pad, n + pad, dx, dy))

    def by_sar(optical, sar):
        p = np.zeros((sar.shape[0], 3) + sar.shape[2:], np.float32)
        p[:, 0] = sar[:, 0] <= 0
        p[:, 2] = sar[:, 0] > 0
        return p

    run_inference(o, sar, tmp_path / "out.tif", metadata(), by_sar, tile_size=64, overlap=16)
    out = read(tmp_path / "out.tif")
    xs = X0 + (np.arange(120) + 0.5) * RES
    ys = Y0 - (np.arange(120) + 0.5) * RES
    gx, gy = np.meshgrid(xs, ys)
    plon, _ = warp_transform(UTM, "EPSG:4326", gx.ravel(), gy.ravel())
    expected = np.where(np.asarray(plon).reshape(120, 120) > mid, 6, 0)
    assert (out == expected).mean() > 0.98
    assert set(np.unique(out)) == {0, 6}


def test_each_input_is_read_by_one_thread_and_the_sar_by_its_own(tmp_path, monkeypatch):
    """GDAL datasets are not thread-safe: every input is read by one thread only, always the same one;
    the warped SAR by a thread that reads nothing else (it runs ahead of the others), over many batches."""
    import threading

    from optsar_plugin import raster_io

    o, s = scene(tmp_path, 200, 230)
    readers = {}
    real = raster_io.read_window

    def spy(ds, *args, **kwargs):
        readers.setdefault(raster_io.dataset_path(ds), set()).add(threading.get_ident())
        return real(ds, *args, **kwargs)

    monkeypatch.setattr(raster_io, "read_window", spy)
    res = run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                        batch_size=2)
    assert res["windows"] >= 16
    assert set(readers) == {o, s}
    assert all(len(threads) == 1 for threads in readers.values()), readers
    assert readers[o] != readers[s] and threading.get_ident() not in readers[o] | readers[s]


def test_extent_is_snapped_to_the_optical_grid(tmp_path):
    o, s = scene(tmp_path, 100, 100)
    run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                  extent=(X0 + 105, Y0 - 555, X0 + 401, Y0 - 201))
    full = run_inference(o, s, tmp_path / "full.tif", metadata(), linear_predictor, tile_size=64, overlap=16)
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert (ds.width, ds.height) == (31, 36)  # columns 10.5..40.1 -> 10..40, rows 20.1..55.5 -> 20..55
        assert ds.transform == from_origin(X0 + 100, Y0 - 200, RES, RES)
        part = ds.read(1)
    assert full["width"] == 100
    # pixels away from the extent's edge match the full-scene map (real data, not padding, around the extent)
    np.testing.assert_array_equal(part[4:-4, 4:-4], read(tmp_path / "full.tif")[24:52, 14:37])


def test_cloud_mask_modes_and_metadata(tmp_path):
    o, s = scene(tmp_path, 96, 96)
    cloud = np.zeros((48, 48), np.uint8)  # a coarser grid: warped with nearest neighbour
    cloud[:24, :24] = 1
    c = write(tmp_path / "cloud.tif", cloud, transform=from_origin(X0, Y0, 2 * RES, 2 * RES))

    seen = {}

    def spy(optical, sar):
        seen.setdefault("zeros", 0)
        seen["zeros"] += int((optical == 0).all(axis=1).sum())
        return linear_predictor(optical, sar)

    clear = run_inference(o, s, tmp_path / "clear.tif", metadata(), linear_predictor, tile_size=64, overlap=16)
    assert clear["cloud_fraction"] is None
    run_inference(o, s, tmp_path / "keep.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                  cloud_mask=c, cloud_mode="keep")
    np.testing.assert_array_equal(read(tmp_path / "keep.tif"), read(tmp_path / "clear.tif"))
    res = run_inference(o, s, tmp_path / "zero.tif", metadata(), spy, tile_size=64, overlap=16, cloud_mask=c)
    assert res["cloud_handling"] == "zero"  # auto: mosfnet was not trained on clouds
    assert seen["zeros"] >= 48 * 48  # the model saw the cloudy quarter as zeros
    zero = read(tmp_path / "zero.tif")
    assert (zero[:48, :48] != NODATA).all()  # cloudy pixels keep a prediction
    np.testing.assert_array_equal(zero[56:, 56:], read(tmp_path / "clear.tif")[56:, 56:])
    assert abs(res["cloud_fraction"] - 0.25) < 1e-6
    with rasterio.open(tmp_path / "zero.tif") as ds:
        tags = ds.tags()
    assert tags["OPTSAR_CLOUD_MASK"] == "cloud.tif" and tags["OPTSAR_CLOUD_HANDLING"] == "zero"
    assert float(tags["OPTSAR_CLOUD_FRACTION"]) == pytest.approx(0.25)
    auto = run_inference(o, s, tmp_path / "auto.tif", metadata(model="cloudlulc_net"), linear_predictor,
                         tile_size=64, overlap=16, cloud_mask=c)
    assert auto["cloud_handling"] == "keep"  # CloudLULC-Net copes with clouds itself


def test_cancellation_leaves_no_file(tmp_path):
    o, s = scene(tmp_path, 150, 150)
    before = files(tmp_path)
    fb = Recorder(cancel_after=3)
    with pytest.raises(Cancelled):
        run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                      batch_size=1, output_confidence=tmp_path / "conf.tif", feedback=fb)
    assert files(tmp_path) == before
    assert len(fb.fractions) == 3  # stopped within one window of the request


def test_progress_is_reported_per_window(tmp_path):
    o, s = scene(tmp_path, 100, 100)
    fb = Recorder()
    res = run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                        feedback=fb)
    assert len(fb.fractions) == res["windows"] == 4 and fb.fractions[-1] == 1.0
    assert fb.fractions == sorted(fb.fractions)


def _oom_predictor(limit, calls):
    import torch

    def predict(optical, sar):
        calls.append(optical.shape)
        if optical.shape[0] * optical.shape[2] * optical.shape[3] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return linear_predictor(optical, sar)

    return predict


def test_oom_halves_batch_then_tile_and_gives_the_same_map(tmp_path):
    o, s = scene(tmp_path, 200, 200)
    ref = run_inference(o, s, tmp_path / "ref.tif", metadata(), linear_predictor, tile_size=128, overlap=32,
                        batch_size=4)
    calls = []
    fb = Recorder()
    res = run_inference(o, s, tmp_path / "oom.tif", metadata(), _oom_predictor(2 * 128 * 128, calls),
                        tile_size=128, overlap=32, batch_size=4, feedback=fb)
    assert res["batch_size"] == 2 and res["max_model_edge"] is None
    assert any("retrying with batch 2" in w for w in fb.warnings)
    np.testing.assert_array_equal(read(tmp_path / "oom.tif"), read(tmp_path / "ref.tif"))
    # only 64 x 64 fits: batch 4 -> 2 -> 1, then 128-px windows as 64-px sub-tiles
    calls.clear()
    fb = Recorder()
    res = run_inference(o, s, tmp_path / "oom2.tif", metadata(), _oom_predictor(64 * 64, calls),
                        tile_size=128, overlap=32, batch_size=4, feedback=fb)
    assert res["batch_size"] == 1 and res["max_model_edge"] == 64
    assert any("sub-tiles" in w for w in fb.warnings)
    assert calls[-1][2:] == (64, 64)
    assert (read(tmp_path / "oom2.tif") == read(tmp_path / "ref.tif")).mean() > 0.999
    assert ref["windows"] == res["windows"]


def test_oom_at_the_smallest_setting_is_a_clear_error(tmp_path):
    o, s = scene(tmp_path, 64, 64)
    with pytest.raises(OptsarError, match="ran out of memory even with one 64 x 64"):
        run_inference(o, s, tmp_path / "out.tif", metadata(), _oom_predictor(100, []), tile_size=128, overlap=32)
    assert not (tmp_path / "out.tif").exists()


def test_memory_does_not_grow_with_scene_height(tmp_path):
    """numpy allocations peak at the same size for a 4x taller scene (streaming, no whole-scene arrays).

    Any per-pixel storage of the whole scene - even one byte per pixel for the codes -
    would add at least a byte per extra pixel; the allowance is three quarters of that, the
    rest of the margin absorbs which per-window temporaries of the reader thread happen to
    be alive at the peak."""
    peaks = []
    heights, width = (768, 3072), 384
    for h in heights:
        folder = tmp_path / str(h)
        folder.mkdir()
        o, s = scene(folder, h, width)
        tracemalloc.start()
        run_inference(o, s, folder / "out.tif", metadata(), linear_predictor, tile_size=64, overlap=16,
                      batch_size=2, output_confidence=folder / "conf.tif")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    extra_pixels = (heights[1] - heights[0]) * width
    assert peaks[1] - peaks[0] < 0.75 * extra_pixels, peaks


def test_stripes_change_no_pixel_and_bound_memory_by_the_stripe_not_the_width(tmp_path, monkeypatch):
    """A scene visited in stripes gives the same map, confidence and probabilities, bit for bit, as one
    visited in whole rows; in stripes, the blender's and writer's memory does not grow with the width."""

    from optsar_plugin.inference import engine

    o, s = scene(tmp_path, 150, 700)
    kw = dict(tile_size=64, overlap=16, batch_size=3)
    outs = {}
    for name, px in (("rows", None), ("stripes", 112)):  # stride 48: whole rows, or stripes of 2 window columns
        monkeypatch.setattr(engine, "stripe_px", lambda *args, px=px: px)
        folder = tmp_path / name
        folder.mkdir()
        res = run_inference(o, s, folder / "c.tif", metadata(), linear_predictor, output_confidence=folder / "f.tif",
                            output_probabilities=folder / "p.tif", **kw)
        outs[name] = [read(folder / f) for f in ("c.tif", "f.tif")] + [rasterio.open(folder / "p.tif").read()]
        assert res["windows"] == 3 * 15
    for a, b in zip(outs["rows"], outs["stripes"]):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(outs["rows"][0])) == 3
    peaks = []
    monkeypatch.setattr(engine, "stripe_px", lambda *args: 256)
    for width in (768, 3072):
        folder = tmp_path / f"w{width}"
        folder.mkdir()
        o, s = scene(folder, 192, width)
        tracemalloc.start()
        run_inference(o, s, folder / "out.tif", metadata(), linear_predictor, output_confidence=folder / "conf.tif", **kw)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    extra_pixels = 192 * (3072 - 768)
    assert peaks[1] - peaks[0] < 0.75 * extra_pixels, peaks


def test_a_tall_scene_in_stripes_writes_the_same_tiles_and_leaves_no_file(tmp_path, monkeypatch):
    """Taller than a window and a tile: the tiles a stripe's edge cuts wait in the writer's file."""
    from optsar_plugin.inference import engine, writer

    o, s = scene(tmp_path, 700, 200)
    used = []
    close = writer.TileWriter.close

    def spy(self):
        used.append([w.spill.used for w in (self.outputs[0], self.confidence, self.probabilities)])
        close(self)

    monkeypatch.setattr(writer.TileWriter, "close", spy)
    outs = {}
    for name, px in (("rows", None), ("stripes", 112)):  # stride 48: whole rows, or stripes of 2 window columns
        monkeypatch.setattr(engine, "stripe_px", lambda *args, px=px: px)
        folder = tmp_path / name
        folder.mkdir()
        run_inference(o, s, folder / "c.tif", metadata(), linear_predictor, output_confidence=folder / "f.tif",
                      output_probabilities=folder / "p.tif", tile_size=64, overlap=16, batch_size=3)
        outs[name] = [rasterio.open(folder / f).read() for f in ("c.tif", "f.tif", "p.tif")]
        assert sorted(p.name for p in folder.iterdir() if p.suffix == ".tif") == ["c.tif", "f.tif", "p.tif"]
        assert not [p for p in folder.iterdir() if "optsar" in p.name]  # no temporary file left
    assert used == [[False] * 3, [True] * 3]
    for a, b in zip(outs["rows"], outs["stripes"]):
        np.testing.assert_array_equal(a, b)


def test_gdal_cache_is_capped_for_the_run_and_restored(tmp_path):
    from osgeo import gdal

    o, s = scene(tmp_path, 64, 64)
    seen = []

    def spy(optical, sar):
        seen.append(gdal.GetCacheMax())
        return linear_predictor(optical, sar)

    before = gdal.GetCacheMax()
    run_inference(o, s, tmp_path / "out.tif", metadata(), spy, tile_size=64)
    assert seen and max(seen) <= inference.GDAL_CACHE_BYTES < before
    assert gdal.GetCacheMax() == before  # process-wide settings are left as they were


def test_the_cache_holds_a_window_row_of_every_inputs_blocks(tmp_path):
    """Striped or tiled, a wide input gets a cache that keeps one row of windows' blocks (the next row of
    windows needs its bottom blocks again); the rows of all inputs add up; a small scene gets the floor."""
    striped = write(tmp_path / "striped.tif", np.ones((3, 64, 20000), np.uint16))
    tiled = write(tmp_path / "tiled.tif", np.ones((3, 512, 512), np.uint16), tiled=True)
    wide = write(tmp_path / "wide.tif", np.ones((2, 256, 12000), np.float32), tiled=True)
    with rasterio.open(striped) as a, rasterio.open(tiled) as b, rasterio.open(wide) as c:
        assert windows.gdal_cache_bytes(rasterio, (b, None), 512) == inference.GDAL_CACHE_BYTES
        need_a = windows.gdal_cache_bytes(rasterio, (b, a), 512)
        need_c = windows.gdal_cache_bytes(rasterio, (b, c), 512)
        need_ac = windows.gdal_cache_bytes(rasterio, (a, c), 512)
    assert need_a > inference.GDAL_CACHE_BYTES and need_a >= 512 * 20000 * 3 * 2  # a 512-row strip fits
    assert need_c >= (512 + 256) * 12000 * 2 * 4  # a window row plus a row of tiles
    assert need_ac >= need_a + need_c - inference.GDAL_CACHE_BYTES


def test_real_sentinel_pair_with_partial_sar_footprint(realdata, tmp_path):
    """SEN12MS-CR: Sentinel-2 patch p30 with the Sentinel-1 patch p31 (shifted 1280 m east): only the shared
    half is classified, the rest is nodata; the output keeps the S2 grid."""
    s2 = realdata / "sen12ms_cr" / "s2_cloudfree" / "ROIs1158_spring_101_p30_s2.tif"
    s1 = realdata / "sen12ms_cr" / "s1" / "ROIs1158_spring_101_p31_s1.tif"
    meta = metadata(optical=[f"B{i}" for i in range(1, 14)], sar=("VV", "VH"))
    meta["normalisation"]["sar"] = {"center": [-25.0, -27.0], "scale": [2.0, 2.0], "to_db": False}
    meta["normalisation"]["optical"] = {"center": [1500.0] * 13, "scale": [700.0] * 13, "to_db": False}
    res = run_inference(s2, s1, tmp_path / "out.tif", meta, linear_predictor, tile_size=128, overlap=32)
    with rasterio.open(s2) as ref, rasterio.open(tmp_path / "out.tif") as out:
        assert out.crs == ref.crs and out.transform == ref.transform and out.shape == ref.shape
        data = out.read(1)
    assert (data[:, :128] == NODATA).all()
    assert (data[:, 128:] != NODATA).all() and len(np.unique(data[:, 128:])) > 1
    assert res["valid_pixels"] == 256 * 128


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("tile,overlap,match", [(100, 16, "multiple of 32"), (32, 0, "multiple of 32"),
                                                (128, 64, "less than half"), (128, 128, "less than half"),
                                                (128, -1, "at least 0")])
def test_bad_tiling_is_rejected(tmp_path, tile, overlap, match):
    o, s = scene(tmp_path, 64, 64)
    with pytest.raises(OptsarError, match=match):
        run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=tile, overlap=overlap)
    assert not (tmp_path / "out.tif").exists()


def test_band_mismatch_lists_expected_and_given(tmp_path):
    o, s = scene(tmp_path, 64, 64)
    with pytest.raises(OptsarError) as exc:
        run_inference(o, s, tmp_path / "out.tif", metadata(optical=("B2", "B3", "B4", "B8")), linear_predictor,
                      optical_bands=[3, 2, 1], tile_size=64)
    msg = str(exc.value)
    assert "4 optical band(s)" in msg and "B2, B3, B4, B8" in msg and "3 band(s)" in msg and "(3, 2, 1)" in msg
    assert not (tmp_path / "out.tif").exists()


def test_band_names_in_another_order_are_refused(tmp_path):
    o, s = scene(tmp_path, 64, 64)
    with rasterio.open(o, "r+") as ds:
        for k, name in enumerate(("B2", "B3", "B4"), start=1):
            ds.set_band_description(k, name)
    with pytest.raises(OptsarError, match="order"):
        run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, optical_bands=[3, 2, 1], tile_size=64)
    run_inference(o, s, tmp_path / "ok.tif", metadata(), linear_predictor, optical_bands=[1, 2, 3], tile_size=64)


def test_no_overlap_and_missing_crs_stop_before_output(tmp_path):
    o, _ = scene(tmp_path, 64, 64)
    far = write(tmp_path / "far.tif", np.ones((2, 64, 64), np.float32), transform=from_origin(X0 + 1e5, Y0, 10, 10))
    with pytest.raises(OptsarError, match="does not overlap") as exc:
        run_inference(o, far, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64)
    assert "far.tif" in str(exc.value) and "optical.tif" in str(exc.value)
    nocrs = write(tmp_path / "nocrs.tif", np.ones((2, 64, 64), np.float32), crs=None)
    with pytest.raises(OptsarError, match="no coordinate reference system"):
        run_inference(o, nocrs, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64)
    assert not (tmp_path / "out.tif").exists()


def test_unwritable_output_is_a_clear_error(tmp_path):
    o, s = scene(tmp_path, 64, 64)
    with pytest.raises(OptsarError, match="does not exist"):
        run_inference(o, s, tmp_path / "nope" / "out.tif", metadata(), linear_predictor, tile_size=64)
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = ro / "out.tif"
    else:  # root writes anywhere permissions allow; /proc refuses new files even to root
        target = Path("/proc/optsar-out.tif")
    with pytest.raises(OptsarError, match="Cannot write|not writable"):
        run_inference(o, s, target, metadata(), linear_predictor, tile_size=64)
    assert not target.exists()
    with pytest.raises(OptsarError, match="must differ"):
        run_inference(o, s, o, metadata(), linear_predictor, tile_size=64)


# -- a real network from a checkpoint, and the command line ---------------------------------------------


TINY = dict(channels=8, num_blocks=1, order=2, embed_dim=16, depth=1, heads=2)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The synthetic sample scene (SAR in EPSG:4326 over a UTM optical raster) and a tiny CloudLULC-Net checkpoint.

    The network keeps its fixed-seed random weights except the last 1x1 layer, which
    is fitted by ridge regression to three class groups of the scene's truth (a
    linear probe, well under a second) so that the map is not one class everywhere.
    """
    import torch

    from optsar_plugin import normalisation
    from optsar_plugin.checkpoints import save_checkpoint
    from optsar_plugin.models import build_model
    from optsar_plugin.normalisation import compute_stats
    from optsar_plugin.raster_io import aligned, read_window
    from optsar_plugin.sample_scene import make_sample_scene

    folder = tmp_path_factory.mktemp("demo")
    paths = make_sample_scene(folder / "scene", size=160, seed=2)
    with rasterio.open(paths["optical"]) as o, rasterio.open(paths["sar"]) as s, rasterio.open(paths["truth"]) as t:
        opt = read_window(o, list(range(1, o.count + 1)), 0, 0, 160, 160)
        names = [d or f"b{i + 1}" for i, d in enumerate(o.descriptions)]
        with aligned(s, o) as v:
            sar = read_window(v, [1, 2], 0, 0, 160, 160)
        truth = t.read(1)
    stats = {"optical": compute_stats(opt.reshape(opt.shape[0], -1)[:, ::7], "optical"),
             "sar": compute_stats(sar.reshape(2, -1)[:, ::7], "sar")}
    torch.manual_seed(0)
    # the 1/4-resolution head (decoder="quarter", as checkpoints before the full-resolution decoder): its
    # last 1x1 convolution is fitted to the truth below
    model = build_model("cloudlulc_net", optical_bands=opt.shape[0], sar_bands=2, num_classes=3, decoder="quarter",
                        **TINY).eval()
    feats = []
    hook = model.decoder[1].register_forward_hook(lambda m, i, o: feats.append(i[0]))
    with torch.no_grad():
        model(torch.from_numpy(normalisation.apply(opt, stats["optical"])[None, :, :128, :128]),
              torch.from_numpy(normalisation.apply(sar, stats["sar"])[None, :, :128, :128]))
    hook.remove()
    f = feats[0][0].numpy()  # (channels, 32, 32): the decoder works at 1/4 resolution
    group = np.array([0, 1, 1, 0, 1, 1, 2, 2] + [0] * 248)  # water | vegetation | built & bare
    x = np.concatenate([f.reshape(f.shape[0], -1), np.ones((1, f[0].size))]).T
    y = np.eye(3)[group[truth[:128:4, :128:4]].ravel()] - 1 / 3
    wb = 10 * np.linalg.solve(x.T @ x + 1e-3 * np.eye(x.shape[1]), x.T @ y)
    with torch.no_grad():
        model.decoder[1].weight.copy_(torch.from_numpy(wb[:-1].T).float()[:, :, None, None])
        model.decoder[1].bias.copy_(torch.from_numpy(wb[-1]).float())
    meta = {
        "model": {"name": "cloudlulc_net", "config": model.config},
        "bands": {"optical": names, "sar": ["VV", "VH"]},
        "normalisation": stats,
        "classes": CLASSES,
        "tile_size": 128,
        "training": {"note": "fixed-seed weights with a ridge-fitted last layer (test)"},
    }
    ck = folder / "tiny.safetensors"
    save_checkpoint(ck, model, meta)
    return {**paths, "checkpoint": str(ck), "folder": folder}


def test_classify_with_a_checkpoint_end_to_end(demo, tmp_path):
    out = tmp_path / "lc.tif"
    fb = Recorder()
    res = inference.classify(demo["optical"], demo["sar"], demo["checkpoint"], out, cloud_mask=demo["cloud_mask"],
                             model="cloudlulc_net", device="auto", tile_size=64, overlap=16, batch_size=2,
                             precision="bf16", output_confidence=tmp_path / "conf.tif", feedback=fb)
    assert res["device"] == "cpu" and res["precision"] == "fp32"
    assert any("CPU" in w for w in fb.warnings)  # auto without a GPU warns loudly
    assert any("bf16" in w for w in fb.warnings)  # bf16 on the CPU falls back to fp32 with a warning
    assert res["cloud_handling"] == "keep" and 0 < res["cloud_fraction"] < 1
    with rasterio.open(out) as ds:
        data = ds.read(1)
        tags = ds.tags()
        assert (ds.width, ds.height) == (160, 160)
    from optsar_plugin.checkpoints import read_metadata

    assert tags["OPTSAR_MODEL"] == "cloudlulc_net"
    assert tags["OPTSAR_CHECKPOINT_HASH"] == read_metadata(demo["checkpoint"])["content_hash"]
    assert tags["OPTSAR_DEVICE"] == "cpu" and tags["OPTSAR_PRECISION"] == "fp32"
    assert set(np.unique(data)) <= {0, 4, 6, 255}
    assert (out.parent / "lc.qml").is_file()


def test_real_network_result_does_not_depend_on_batching(demo, tmp_path):
    """Windows are independent: CloudLULC-Net gives the same map with batch 1 and batch 3.

    (Tiled vs single-pass agreement is tested with a local CNN above: CloudLULC-Net's
    FFT interaction and global attention see the whole window, so its output depends
    on the window size for any tiling engine - a property of the network, not a seam.)
    """
    maps = []
    for batch in (1, 3):
        out = tmp_path / f"b{batch}.tif"
        res = inference.classify(demo["optical"], demo["sar"], demo["checkpoint"], out, tile_size=64, overlap=16,
                                 batch_size=batch, device="cpu")
        assert res["windows"] == 9
        maps.append(read(out))
    assert len(np.unique(maps[0])) >= 2  # not trivially one class
    assert (maps[0] == maps[1]).mean() >= 0.999


def test_checkpoint_errors(demo, tmp_path):
    o, s, ck = demo["optical"], demo["sar"], demo["checkpoint"]
    with pytest.raises(OptsarError, match="holds a cloudlulc_net network, but model is mosfnet"):
        inference.classify(o, s, ck, tmp_path / "a.tif", model="mosfnet", device="cpu")
    with pytest.raises(OptsarError, match="does not exist"):
        inference.classify(o, s, tmp_path / "missing.safetensors", tmp_path / "a.tif", device="cpu")
    with pytest.raises(OptsarError, match=r"10 optical band\(s\).*2 band\(s\) of .* were chosen"):
        inference.classify(o, s, ck, tmp_path / "a.tif", optical_bands=[1, 2], device="cpu")
    broken = tmp_path / "broken.safetensors"
    data = Path(ck).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(OptsarError, match="truncated|corrupted"):
        inference.classify(o, s, broken, tmp_path / "a.tif", device="cpu")
    flipped = bytearray(data)
    flipped[-100] ^= 0xFF  # weights changed, header intact: the content hash catches it
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(OptsarError, match="corrupted or was modified"):
        inference.classify(o, s, tmp_path / "flipped.safetensors", tmp_path / "a.tif", device="cpu")
    assert files(tmp_path) == ["broken.safetensors", "flipped.safetensors"]


def test_command_line(demo, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "cli.tif"
    cmd = [sys.executable, "-m", "optsar_plugin", "classify", "--optical", demo["optical"], "--sar", demo["sar"],
           "--checkpoint", demo["checkpoint"], "--output", str(out), "--tile-size", "64", "--overlap", "16",
           "--device", "cpu", "--probabilities", str(tmp_path / "p.tif")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Mpix/s" in proc.stderr and out.is_file() and (tmp_path / "p.tif").is_file()
    bad = subprocess.run(cmd[:-2] + ["--tile-size", "100"], env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "multiple of 32" in bad.stderr and "Traceback" not in bad.stderr


def test_no_input_is_replaced_whatever_the_output_path_looks_like(tmp_path):
    """``//x``, ``a/../x``, a symlinked folder, the style file of an input: refused before any work."""
    import hashlib

    o, s = scene(tmp_path, 64, 64)
    (tmp_path / "link").symlink_to(tmp_path)
    before = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (o, s)}
    for out in (f"/{o}", tmp_path / "x" / ".." / "sar.tif", tmp_path / "link" / "optical.tif"):
        (tmp_path / "x").mkdir(exist_ok=True)
        with pytest.raises(OptsarError, match="same file as the (optical|SAR) raster.*must differ"):
            run_inference(o, s, out, metadata(), linear_predictor, tile_size=64)
    with pytest.raises(OptsarError, match="style file of the output classification.*are the same file"):
        run_inference(o, s, tmp_path / "out.tif", metadata(), linear_predictor, tile_size=64,
                      output_confidence=tmp_path / "out.qml")
    assert before == {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (o, s)}
    assert files(tmp_path) == ["link", "optical.tif", "sar.tif", "x"]


# ------------------------------------------------------------------------------------------
# test-time augmentation
# ------------------------------------------------------------------------------------------
def test_tta_undoes_every_transform_and_averages(tmp_path):
    from optsar_plugin.inference import TTAPredictor

    rng = np.random.default_rng(0)
    o, s = rng.normal(size=(2, 3, 64, 96)).astype(np.float32), rng.normal(size=(2, 2, 64, 96)).astype(np.float32)
    for mode in ("flips", "d4"):  # a pointwise predictor is unchanged by every symmetry: averaging changes nothing
        np.testing.assert_allclose(TTAPredictor(linear_predictor, mode)(o, s), linear_predictor(o, s), atol=1e-6)

    def left_biased(optical, sar):  # class 0 likelier towards the left edge, whatever the input
        ramp = np.linspace(1, 0, optical.shape[-1], dtype=np.float32)
        p0 = np.broadcast_to(ramp, (optical.shape[0],) + optical.shape[2:])
        return np.stack([p0, 1 - p0, np.zeros_like(p0)], axis=1)

    flat = TTAPredictor(left_biased, "flips")(o, s)
    np.testing.assert_allclose(flat[:, 0], 0.5, atol=1e-6)  # the left-right flip cancels the bias
    assert TTAPredictor(left_biased, "d4")(o, s).shape == (2, 3, 64, 96)  # rotations of a non-square window


def test_classify_with_tta_records_it(tmp_path):
    o, s = scene(tmp_path)
    plain = run_inference(o, s, str(tmp_path / "a.tif"), metadata(), linear_predictor, tile_size=64, overlap=16)
    aug = run_inference(o, s, str(tmp_path / "b.tif"), metadata(), linear_predictor, tile_size=64, overlap=16,
                        tta="d4")
    assert aug["tta"] == "d4" and plain["tta"] == "off"
    with rasterio.open(plain["output"]) as a, rasterio.open(aug["output"]) as b:
        assert (a.read(1) == b.read(1)).all()  # pointwise predictor: identical maps
        assert b.tags()["OPTSAR_TTA"] == "d4" and "OPTSAR_TTA" not in a.tags()
    with pytest.raises(OptsarError, match="test-time augmentation"):
        run_inference(o, s, str(tmp_path / "c.tif"), metadata(), linear_predictor, tta="yes")
