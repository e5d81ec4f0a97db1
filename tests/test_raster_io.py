"""Raster input for inference: bands, validity, windows, extent snapping, CRS/overlap checks, warping."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from optsar_plugin import raster_io
from optsar_plugin.errors import OptsarError
from tests.helpers import RES, UTM, X0, Y0
from tests.helpers import write_raster as write

# -- windows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("length,tile,overlap", [(1000, 256, 64), (257, 256, 32), (5000, 512, 96), (96, 64, 0)])
def test_window_starts_cover_with_exact_overlap(length, tile, overlap):
    edge, starts = raster_io.window_starts(length, tile, overlap)
    assert edge == tile
    assert starts[0] == 0
    assert starts[-1] < length <= starts[-1] + edge  # the last window reaches the end, padded beyond it
    assert starts[-2] + edge < length  # ... and is the first that does
    assert all(b - a == tile - overlap for a, b in zip(starts, starts[1:]))


@pytest.mark.parametrize("length,expected", [(200, 224), (10, 64), (64, 64), (100, 128), (512, 512)])
def test_small_axis_is_one_window_rounded_to_32(length, expected):
    edge, starts = raster_io.window_starts(length, 512, 64)
    assert (edge, starts) == (expected, [0])
    assert edge % 32 == 0


# -- bands and nodata -------------------------------------------------------------------------------


def test_select_bands_keeps_order_and_rejects_bad_numbers(tmp_path):
    path = write(tmp_path / "o.tif", np.ones((4, 8, 8), np.uint16))
    with rasterio.open(path) as ds:
        assert raster_io.select_bands(ds, None, "optical raster") == [1, 2, 3, 4]
        assert raster_io.select_bands(ds, [4, 2, 1], "optical raster") == [4, 2, 1]
        with pytest.raises(OptsarError, match="has 4 band.*band 5 does not exist"):
            raster_io.select_bands(ds, [1, 5], "optical raster")
        with pytest.raises(OptsarError, match="twice"):
            raster_io.select_bands(ds, [1, 1], "optical raster")


def test_read_window_nodata_nan_and_reflect_padding(tmp_path):
    data = np.arange(2 * 6 * 5, dtype=np.uint16).reshape(2, 6, 5) + 1
    data[:, 0, 0] = 0  # nodata in both bands
    data[1, 1, 1] = 0  # nodata in one band only
    path = write(tmp_path / "o.tif", data, nodata=0)
    with rasterio.open(path) as ds:
        arr = raster_io.read_window(ds, [1, 2], 0, 0, 8, 8)
    assert arr.shape == (2, 8, 8) and arr.dtype == np.float32
    assert np.isnan(arr[:, 0, 0]).all()
    invalid = raster_io.all_invalid(arr)
    assert invalid[0, 0] and not invalid[1, 1]  # one missing band does not invalidate the pixel
    # rows 6, 7 reflect rows 4, 3; columns 5..7 reflect columns 3, 2, 1
    np.testing.assert_array_equal(arr[0, 6, :5], data[0, 4].astype(np.float32))
    np.testing.assert_array_equal(arr[0, 7, :5], data[0, 3].astype(np.float32))
    np.testing.assert_array_equal(arr[0, 2, 5:], data[0, 2, [3, 2, 1]].astype(np.float32))


def test_read_window_honours_internal_mask(tmp_path):
    path = str(tmp_path / "m.tif")
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", driver="GTiff", width=4, height=4, count=1, dtype="float32", crs=UTM,
                           transform=from_origin(X0, Y0, RES, RES)) as ds:
            ds.write(np.full((1, 4, 4), 5.0, np.float32))
            mask = np.full((4, 4), 255, np.uint8)
            mask[2:, 2:] = 0
            ds.write_mask(mask)
    with rasterio.open(path) as ds:
        arr = raster_io.read_window(ds, [1], 0, 0, 4, 4)
    assert np.isnan(arr[0, 2:, 2:]).all() and not np.isnan(arr[0, :2]).any()


def test_cloud_mask_nonzero_is_cloud(tmp_path):
    path = write(tmp_path / "c.tif", np.array([[0, 1, 2, 255]], np.uint8), nodata=255)
    with rasterio.open(path) as ds:
        cloud = raster_io.read_cloud(ds, 0, 0, 1, 4)
    assert cloud.tolist() == [[False, True, True, False]]  # nodata is not cloud


# -- extent, CRS and overlap -----------------------------------------------------------------------


def test_extent_snaps_outwards_to_optical_pixels(tmp_path):
    path = write(tmp_path / "o.tif", np.ones((1, 100, 100), np.uint8))
    with rasterio.open(path) as ds:
        region = raster_io.region_for_extent(ds, (X0 + 15, Y0 - 401, X0 + 301, Y0 - 95))
        assert region == raster_io.Region(row_off=9, col_off=1, height=32, width=30)
        # an extent reaching beyond the raster is clipped to it
        assert raster_io.region_for_extent(ds, (X0 - 50, Y0 - 2000, X0 + 50, Y0 + 50)) == raster_io.Region(0, 0, 100, 5)
        # in another CRS: the same box expressed in lon/lat covers (at least) the same pixels
        box = transform_bounds(UTM, "EPSG:4326", X0 + 100, Y0 - 500, X0 + 500, Y0 - 100)
        r = raster_io.region_for_extent(ds, box, "EPSG:4326")
        assert r.col_off <= 10 and r.row_off <= 10 and r.col_off + r.width >= 50 and r.row_off + r.height >= 50
        with pytest.raises(OptsarError, match="does not overlap the optical raster"):
            raster_io.region_for_extent(ds, (0, 0, 10, 10))


def test_missing_crs_names_both_layers(tmp_path):
    opt = write(tmp_path / "opt.tif", np.ones((1, 8, 8), np.uint8))
    sar = write(tmp_path / "sar.tif", np.ones((1, 8, 8), np.float32), crs=None)
    with rasterio.open(opt) as o, rasterio.open(sar) as s:
        with pytest.raises(OptsarError) as exc:
            raster_io.require_crs(s, raster_io.SAR, o, raster_io.OPTICAL)
    msg = str(exc.value)
    assert "sar.tif" in msg and "no coordinate reference system" in msg and "opt.tif" in msg and "EPSG:32633" in msg


def test_no_overlap_names_both_layers_and_extents(tmp_path):
    opt = write(tmp_path / "opt.tif", np.ones((1, 8, 8), np.uint8))
    sar = write(tmp_path / "sar.tif", np.ones((1, 8, 8), np.float32), transform=from_origin(X0 + 10000, Y0, RES, RES))
    with rasterio.open(opt) as o, rasterio.open(sar) as s:
        with pytest.raises(OptsarError) as exc:
            raster_io.check_overlap(o, s, raster_io.region_for_extent(o))
    msg = str(exc.value)
    assert "does not overlap" in msg and "opt.tif" in msg and "sar.tif" in msg
    assert "510000" in msg and "500000" in msg  # both extents are spelled out


def test_aligned_is_identity_on_the_same_grid(tmp_path):
    a = write(tmp_path / "a.tif", np.ones((1, 8, 8), np.uint8))
    b = write(tmp_path / "b.tif", np.ones((2, 8, 8), np.float32))
    with rasterio.open(a) as o, rasterio.open(b) as s:
        with raster_io.aligned(s, o) as v:
            assert v is s


def test_sar_in_epsg4326_is_warped_onto_the_utm_grid(tmp_path):
    """A lon/lat SAR raster whose value is its longitude reads, on the UTM grid, as each UTM pixel's longitude."""
    opt = write(tmp_path / "opt.tif", np.ones((1, 64, 64), np.uint16))
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - 640, X0 + 640, Y0)
    pad = 0.002
    cols, rows = 200, 150
    dx, dy = (e - w + 2 * pad) / cols, (n - s + 2 * pad) / rows
    lon = (w - pad) + (np.arange(cols) + 0.5) * dx
    sar_data = np.broadcast_to(lon, (rows, cols)).astype(np.float32)
    sar = write(tmp_path / "sar.tif", sar_data, crs="EPSG:4326", transform=from_origin(w - pad, n + pad, dx, dy),
                nodata=-9999.0)
    with rasterio.open(opt) as o, rasterio.open(sar) as sd:
        raster_io.check_overlap(o, sd, raster_io.region_for_extent(o))
        with raster_io.aligned(sd, o, "bilinear") as v:
            assert v is not sd and v.crs == CRS.from_string(UTM)
            arr = raster_io.read_window(v, [1], 0, 0, 64, 64)[0]
    xs = X0 + (np.arange(64) + 0.5) * RES
    ys = Y0 - (np.arange(64) + 0.5) * RES
    gx, gy = np.meshgrid(xs, ys)
    lon_expected, _ = warp_transform(UTM, "EPSG:4326", gx.ravel(), gy.ravel())
    assert not np.isnan(arr).any()
    np.testing.assert_allclose(arr.ravel(), lon_expected, atol=dx)


def _lonlat_sar(tmp_path, size=600):
    """A lon/lat SAR raster covering a ``size`` px UTM optical raster; returns (optical, sar) paths."""
    opt = write(tmp_path / "opt.tif", np.ones((1, size, size), np.uint16))
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - size * RES, X0 + size * RES, Y0)
    rng = np.random.default_rng(0)
    data = rng.normal(-12, 3, (2, size, size)).astype(np.float32)
    data[:, :5] = np.nan  # a nodata strip
    sar = write(tmp_path / "sar.tif", data, crs="EPSG:4326",
                transform=from_origin(w, n, (e - w) / size, (n - s) / size), nodata=float("nan"))
    return opt, sar


def test_warped_view_has_narrow_blocks_and_reads_as_gdals_warped_vrt(tmp_path):
    """The warped SAR has 128 x 256 blocks (less warped twice at a stripe's edge), reads as GDAL's own warped
    VRT within the approximate transformer's error, names its file, and closes."""
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    opt, sar = _lonlat_sar(tmp_path)
    with rasterio.open(opt) as o, rasterio.open(sar) as sd:
        with raster_io.aligned(sd, o, "bilinear") as v:
            assert isinstance(v, raster_io.WarpedView) and v.block_shapes == [raster_io.WARP_BLOCK] * 2
            assert raster_io.dataset_path(v) == str(sar) and str(sar) in v.name
            ours = raster_io.read_window(v, [1, 2], 0, 0, 600, 600)
            inner = v._ds
        assert inner.closed and not sd.closed
        with WarpedVRT(sd, crs=o.crs, transform=o.transform, width=600, height=600, dtype="float32",
                       resampling=Resampling.bilinear, nodata=float("nan"), src_nodata=sd.nodata,
                       UNIFIED_SRC_NODATA="NO") as g:
            assert g.block_shapes[0] == (128, 512)
            theirs = raster_io.read_window(g, [1, 2], 0, 0, 600, 600)
    # at the nodata strip's edge a kernel partly on nodata is renormalised (band by band), so there the
    # approximate transformer's 0.125 px (which differs with the block's width) can decide NaN or not
    assert (np.isnan(ours) != np.isnan(theirs)).mean() < 1e-4
    assert 0.7 < np.isnan(ours).mean() * 600 / 5 < 1.2  # the 5-row nodata strip, warped (~4 rows: see above)
    diff = np.abs(ours - theirs)[~np.isnan(ours) & ~np.isnan(theirs)]
    assert diff.max() < 1.0 and np.median(diff) < 0.05  # both warp with a 0.125-px approximate transformer


def test_warped_view_declares_no_nodata_and_reads_nan_where_a_nodata_declaring_vrt_does(tmp_path):
    """No destination nodata value (GDAL's faster warp kernels): outside the SAR's footprint and where only
    nodata lies under the kernel the view still reads NaN, exactly where a VRT declaring NaN as its nodata
    does, and the values agree; the source's numeric nodata is never blended in."""
    from rasterio.vrt import WarpedVRT

    size = 300
    opt = write(tmp_path / "opt.tif", np.ones((1, size, size), np.uint16))
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - size * RES, X0 + size * RES, Y0)
    data = np.random.default_rng(0).normal(-12, 3, (2, 200, 200)).astype(np.float32)
    data[:, :5] = -9999.0  # a nodata strip, a hole and a lone nodata pixel
    data[:, 100:104, 60:64] = -9999.0
    data[:, 150, 150] = -9999.0
    sar = write(tmp_path / "sar.tif", data, crs="EPSG:4326", nodata=-9999.0,  # covers part of the optical only
                transform=from_origin(w + 0.3 * (e - w), n, (e - w) / size, (n - s) / size))
    with rasterio.open(opt) as o, rasterio.open(sar) as sd:
        with raster_io.aligned(sd, o, "bilinear") as v:
            assert v.nodata is None and v.nodatavals == (None, None)
            ours = raster_io.read_window(v, [1, 2], 0, 0, size, size)
        declared = WarpedVRT(sd, crs=o.crs, transform=o.transform, width=size, height=size, dtype="float32",
                             resampling=1, nodata=float("nan"), src_nodata=-9999.0, UNIFIED_SRC_NODATA="NO")
        ref = raster_io._narrow_blocks(declared, sd)  # the same blocks, so the same transformer rows
        assert isinstance(ref, raster_io.WarpedView) and ref.nodata != ref.nodata  # NaN
        theirs = raster_io.read_window(ref, [1, 2], 0, 0, size, size)
        ref.close()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    assert 0.2 < np.isnan(ours).mean() < 0.8
    ok = ~np.isnan(ours)
    np.testing.assert_allclose(ours[ok], theirs[ok], atol=1e-5)
    assert ours[ok].min() > -30


def test_warped_sar_with_nodata_in_one_band_only_reads_nan_in_that_band_only(tmp_path):
    """As a SAR on the optical grid reads: a pixel that is nodata in VV but not in VH is NaN in VV (the engine then
    sets that band to the training median) and valid in VH; the nodata value itself is never blended in."""
    size = 300
    opt = write(tmp_path / "opt.tif", np.ones((1, size, size), np.uint16))
    w, s, e, n = transform_bounds(UTM, "EPSG:4326", X0, Y0 - size * RES, X0 + size * RES, Y0)
    data = np.random.default_rng(0).normal(-12, 3, (2, size, size)).astype(np.float32)
    data[0, 100:110, 100:110] = -9999.0
    sar = write(tmp_path / "sar.tif", data, crs="EPSG:4326", nodata=-9999.0,
                transform=from_origin(w, n, (e - w) / size, (n - s) / size))
    with rasterio.open(opt) as o, rasterio.open(sar) as sd:
        with raster_io.aligned(sd, o, "bilinear") as v:
            got = raster_io.read_window(v, [1, 2], 0, 0, size, size)
    assert 40 < np.isnan(got[0]).sum() < 200 and not np.isnan(got[1]).any()
    assert np.nanmin(got) > -40


def test_warped_view_warps_each_block_on_several_threads_to_the_same_values(tmp_path, monkeypatch):
    """The view lets GDAL split a block's warp among threads; parallel_warp() lowers GDAL's chunk size so that
    our 32768-px blocks are split (only within it; a user's own setting wins); the values do not change."""
    monkeypatch.delenv("WARP_THREAD_CHUNK_SIZE", raising=False)
    opt, sar = _lonlat_sar(tmp_path)
    get = rasterio.env.get_gdal_config
    with rasterio.open(opt) as o, rasterio.open(sar) as sd:
        with raster_io.aligned(sd, o, "bilinear") as v:
            assert '<Option name="NUM_THREADS">ALL_CPUS</Option>' in v.tags(ns="xml:VRT")["xml:VRT"]
            assert get("WARP_THREAD_CHUNK_SIZE") is None  # GDAL's default: a 128 x 256 block on one thread
            with raster_io.parallel_warp():
                assert int(get("WARP_THREAD_CHUNK_SIZE")) == raster_io.WARP_CHUNK_PX < 128 * 256 // 2
                threaded = raster_io.read_window(v, [1, 2], 0, 0, 600, 600)
            assert get("WARP_THREAD_CHUNK_SIZE") is None
        with raster_io.aligned(sd, o, "bilinear") as v:  # a new view: no block of the first one is reused
            single = raster_io.read_window(v, [1, 2], 0, 0, 600, 600)
    assert np.isnan(single).any() and not np.isnan(single).all()
    np.testing.assert_array_equal(threaded, single)
    monkeypatch.setenv("WARP_THREAD_CHUNK_SIZE", "100000")
    with raster_io.parallel_warp():
        assert int(get("WARP_THREAD_CHUNK_SIZE")) == 100000


def test_warped_view_falls_back_to_gdals_blocks_when_the_xml_cannot_be_opened(tmp_path, monkeypatch):
    opt, sar = _lonlat_sar(tmp_path, 64)
    real_open = rasterio.open
    monkeypatch.setattr(rasterio, "open", lambda path, *a, **k: (_ for _ in ()).throw(OSError("no")) if
                        str(path).lstrip().startswith("<VRTDataset") else real_open(path, *a, **k))
    with real_open(opt) as o, real_open(sar) as sd:
        with raster_io.aligned(sd, o, "bilinear") as v:
            assert not isinstance(v, raster_io.WarpedView) and v.block_shapes[0] == (64, 64)
            assert not np.isnan(raster_io.read_window(v, [1], 0, 0, 64, 64)[:, 8:]).all()
            assert raster_io.dataset_path(v) == str(sar)


def test_outside_sar_footprint_reads_as_nan(tmp_path):
    opt = write(tmp_path / "opt.tif", np.ones((1, 32, 32), np.uint16))
    sar = write(tmp_path / "sar.tif", np.ones((1, 16, 16), np.float32), transform=from_origin(X0, Y0, 2 * RES, RES))
    with rasterio.open(opt) as o, rasterio.open(sar) as s:
        with raster_io.aligned(s, o) as v:
            arr = raster_io.read_window(v, [1], 0, 0, 32, 32)[0]
    assert not np.isnan(arr[:16]).any() and np.isnan(arr[16:]).all()


def test_check_writable(tmp_path):
    assert raster_io.check_writable(tmp_path / "x.tif") == str(tmp_path / "x.tif")
    with pytest.raises(OptsarError, match="does not exist"):
        raster_io.check_writable(tmp_path / "missing" / "x.tif")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(OptsarError, match="does not exist"):
        raster_io.check_writable(tmp_path / "file.txt" / "x.tif")
    with pytest.raises(OptsarError, match="is a folder"):
        raster_io.check_writable(tmp_path)
