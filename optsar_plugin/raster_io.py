"""Raster input for inference: open, pick bands, validity, CRS/overlap checks, windows.

Everything here works on *windows of the optical raster's pixel grid*, which is
the output grid.  The SAR raster and the optional cloud mask may have any CRS,
resolution and extent: :func:`aligned` wraps them in a rasterio
:class:`~rasterio.vrt.WarpedVRT` defined on the optical grid (reopened with narrower
blocks, :class:`WarpedView`), so every window read from it is warped on the fly (GDAL
warps only the blocks under the requested window; nothing is warped or held in memory
for the whole scene).  SAR uses bilinear
resampling (a continuous backscatter field), the cloud mask nearest neighbour
(a categorical mask).  When a raster already lies on the optical grid it is
read directly, without a warper.

Validity conventions (the engine relies on them):

* :func:`read_window` returns float32 data with every invalid value as NaN:
  the band's nodata value, NaN itself, and pixels that GDAL's mask (internal
  mask band or alpha band) marks as invalid.
* A pixel is *invalid* for a source when all of its selected bands are NaN
  (:func:`all_invalid`); a single missing band is normalised to 0 (the
  training median) instead.
* Parts of a window outside the optical raster are filled by reflecting the
  data inside it (``numpy.pad(mode="reflect")``) so that the model sees a
  plausible continuation instead of a hard edge; those pixels are never
  written.  Parts of a window outside the *requested extent* but inside the
  raster are real data (context for the model).

No QGIS, no torch: this module imports rasterio and numpy (and GDAL's Python bindings, where present, to
hear of write failures GDAL only reports to its error handler: :func:`gdal_failures`).
"""

from __future__ import annotations

import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .errors import InputError
from .fileio import (
    check_writable,  # noqa: F401  (kept here for callers; it lives in fileio)
    refuse_special_file,
)

# Roles used in messages.
OPTICAL = "optical raster"
SAR = "SAR raster"
CLOUD = "cloud mask"

MIN_TILE = 64  # the models' contract: inputs are multiples of 32, at least 64


def _rasterio():
    from .deps import require

    return require("rasterio", "reading rasters")


# -- opening and describing -------------------------------------------------------------------


def open_raster(path, role: str):
    """Open ``path`` for reading; a missing or unreadable file is an :class:`InputError` naming the role."""
    rasterio = _rasterio()
    path = os.fspath(path)
    if not path:
        raise InputError(f"No {role} was given.")
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise InputError(f"The {role} '{path}' does not exist.")
    refuse_special_file(path, role)
    try:
        with gdal_failures():  # the exception says it; GDAL's echo of it would be another line
            ds = rasterio.open(path)
    except (rasterio.errors.RasterioError, OSError) as exc:  # Debian's RasterioIOError is an OSError
        raise InputError(f"The {role} '{path}' cannot be opened as a raster: {exc}") from None
    if ds.count < 1:
        ds.close()
        raise InputError(f"The {role} '{path}' has no band.")
    complex_bands = [i + 1 for i, t in enumerate(ds.dtypes) if str(t).startswith("complex")]
    if complex_bands:
        kind = ds.dtypes[complex_bands[0] - 1]
        ds.close()
        hint = " (calibrated backscatter intensity or amplitude, not a complex SLC image)" if role == SAR else ""
        raise InputError(f"The {role} '{path}' holds complex numbers ({kind}, band(s) {_numbers(complex_bands)}); "
                         f"give real values{hint}.")
    return ds


def _numbers(values: Sequence[int], limit: int = 8) -> str:
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f" ... ({len(values)} in all)" if len(values) > limit else "")


def dataset_path(ds) -> str:
    """The file behind a dataset, also through a WarpedVRT (whose ``name`` is ``WarpedVRT(path)``)."""
    src = getattr(ds, "src_dataset", None)
    return str(src.name if src is not None else ds.name)


def read(ds, indexes, window=None, masks: bool = False, **kwargs) -> np.ndarray:
    """``ds.read`` (or ``ds.read_masks``) where GDAL's read errors become one line naming the file.

    A raster whose header is fine may still fail half-way: a truncated or partly copied file,
    a corrupted block.  rasterio raises ``RasterioIOError``, which Debian's rasterio 1.3 derives
    from ``OSError`` (not ``RasterioError``); both are turned into an :class:`InputError`.
    """
    rasterio = _rasterio()
    try:
        with gdal_failures():  # GDAL's own echo of the failure ("ERROR 1: ...") would add lines to the one
            return ds.read_masks(indexes, window=window) if masks else ds.read(indexes, window=window, **kwargs)
    except (rasterio.errors.RasterioError, OSError) as exc:
        where = ""
        if window is not None:
            r0, c0 = int(window.row_off), int(window.col_off)
            where = f" (rows {r0}-{r0 + int(window.height)}, columns {c0}-{c0 + int(window.width)})"
        detail = " ".join(str(exc).split())[:300].rstrip(".")
        raise InputError(
            f"The raster '{dataset_path(ds)}' cannot be read{where}: {detail}. Is the file complete (not truncated "
            "or still being copied) and not corrupted?"
        ) from None


def crs_label(crs) -> str:
    if crs is None:
        return "no CRS"
    try:
        epsg = crs.to_epsg()
    except Exception:  # pyproj/GDAL may fail on exotic definitions; the WKT name is good enough
        epsg = None
    if epsg:
        return f"EPSG:{epsg}"
    try:
        return crs.to_string() or crs.to_wkt()[:80]
    except Exception:
        return "an unnamed CRS"


def describe(ds, role: str) -> str:
    """"optical raster 'x.tif' (EPSG:32633, extent 500000, 4000000 : 509600, 4009600, 960 x 960 px)"."""
    b = ds.bounds
    return (
        f"{role} '{ds.name}' ({crs_label(ds.crs)}, extent {b.left:.6g}, {b.bottom:.6g} : "
        f"{b.right:.6g}, {b.top:.6g}, {ds.width} x {ds.height} px)"
    )


def require_crs(ds, role: str, other=None, other_role: str = "") -> None:
    """A raster without a CRS cannot be aligned to another: stop with both layers named."""
    if ds.crs is None:
        extra = f" It is to be combined with the {describe(other, other_role)}." if other is not None else ""
        raise InputError(
            f"The {describe(ds, role)} has no coordinate reference system, so it cannot be aligned "
            f"with the other inputs.{extra} Assign or warp it to a CRS first (e.g. Raster > Projections > "
            "Assign Projection / Warp)."
        )


def select_bands(ds, bands: Optional[Sequence[int]], role: str) -> List[int]:
    """1-based band list, in the given order; ``None``/empty means all bands."""
    if not bands:
        return list(range(1, ds.count + 1))
    out = []
    for b in bands:
        try:
            i = int(b)
        except (TypeError, ValueError):
            raise InputError(f"Band '{b}' of the {role} '{ds.name}' is not a band number.") from None
        if not 1 <= i <= ds.count:
            raise InputError(
                f"The {role} '{ds.name}' has {ds.count} band(s); band {i} does not exist (bands are numbered from 1)."
            )
        out.append(i)
    if len(set(out)) != len(out):
        raise InputError(f"The band list {out} for the {role} '{ds.name}' names a band twice.")
    return out


def band_descriptions(ds, bands: Sequence[int]) -> List[Optional[str]]:
    return [ds.descriptions[b - 1] for b in bands]


# -- extent, region and overlap ---------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """A block of the optical raster's pixel grid: the output grid."""

    row_off: int
    col_off: int
    height: int
    width: int

    def window(self):
        from rasterio.windows import Window

        return Window(self.col_off, self.row_off, self.width, self.height)


def region_for_extent(ds, extent: Optional[Sequence[float]] = None, extent_crs=None) -> Region:
    """The optical grid's pixels covering ``extent`` (xmin, ymin, xmax, ymax), snapped outwards.

    ``extent`` is in ``extent_crs`` (default: the optical raster's CRS).  Without an
    extent the whole raster is the region.  An extent outside the raster is an error.
    """
    if extent is None:
        return Region(0, 0, ds.height, ds.width)
    _rasterio()
    from rasterio.warp import transform_bounds
    from rasterio.windows import from_bounds

    try:
        xmin, ymin, xmax, ymax = (float(v) for v in extent)
    except (TypeError, ValueError):
        raise InputError(f"The extent must be four numbers xmin, ymin, xmax, ymax; got {extent!r}.") from None
    if not (xmax > xmin and ymax > ymin):
        raise InputError(f"The extent {xmin}, {ymin} : {xmax}, {ymax} is empty (xmax <= xmin or ymax <= ymin).")
    if extent_crs is not None and ds.crs is not None:
        src_crs = parse_crs(extent_crs, "extent CRS")
        if src_crs != ds.crs:
            xmin, ymin, xmax, ymax = transform_bounds(src_crs, ds.crs, xmin, ymin, xmax, ymax, densify_pts=21)
    if not ds.transform.is_rectilinear:
        raise InputError(f"The optical raster '{ds.name}' has a rotated grid; an extent cannot be applied to it.")
    w = from_bounds(xmin, ymin, xmax, ymax, ds.transform)
    eps = 1e-6
    c0 = max(0, math.floor(w.col_off + eps))
    r0 = max(0, math.floor(w.row_off + eps))
    c1 = min(ds.width, math.ceil(w.col_off + w.width - eps))
    r1 = min(ds.height, math.ceil(w.row_off + w.height - eps))
    if c1 <= c0 or r1 <= r0:
        b = ds.bounds
        raise InputError(
            f"The extent {xmin:.6g}, {ymin:.6g} : {xmax:.6g}, {ymax:.6g} ({crs_label(ds.crs)}) does not overlap the "
            f"optical raster '{ds.name}' (extent {b.left:.6g}, {b.bottom:.6g} : {b.right:.6g}, {b.top:.6g})."
        )
    return Region(r0, c0, r1 - r0, c1 - c0)


@contextmanager
def gdal_failures() -> Iterator[List[str]]:
    """The messages of the GDAL errors (failures and worse) reported in this thread while the block runs.

    GDAL reports some failures only through its error handler: a GeoTIFF whose blocks could
    not be written (a full disk, a file-size limit) is closed by rasterio 1.3 without an
    exception, leaving a corrupt file.  Writers check the list (see
    :func:`close_written`).  Where the GDAL Python bindings are absent (a pip-only engine)
    the list stays empty.
    """
    try:
        from osgeo import gdal
    except ImportError:
        yield []
        return
    errors: List[str] = []

    def handler(err_class, err_no, message):
        if err_class >= gdal.CE_Failure:
            errors.append(" ".join(str(message).split()))

    gdal.PushErrorHandler(handler)
    try:
        yield errors
    finally:
        gdal.PopErrorHandler()


def write_failure(what: str, path: str, detail: str) -> InputError:
    """The one-line error of an output that could not be written (a full disk, a quota, a size limit)."""
    return InputError(f"Cannot write the {what} in the folder '{os.path.dirname(os.path.abspath(path))}': "
                      f"{detail[:300].rstrip('.')}. Nothing was written (is the disk full?).")


def write_checked(ds, array, window=None, what: str = "output raster") -> None:
    """``ds.write`` where every failure - raised, or only reported to GDAL's error handler - is an :class:`InputError`."""
    rasterio = _rasterio()
    with gdal_failures() as errors:
        try:
            ds.write(array, window=window)
        except (rasterio.errors.RasterioError, OSError) as exc:
            errors.append(" ".join(str(exc).split()))
    if errors:
        raise write_failure(what, ds.name, errors[0])


def close_written(ds, what: str = "output raster") -> None:
    """Close a dataset open for writing; GDAL's failures while flushing it are an :class:`InputError`."""
    with gdal_failures() as errors:
        ds.close()
    if errors:
        raise write_failure(what, ds.name, errors[0])


def parse_crs(value, what: str = "CRS"):
    """A rasterio CRS from ``EPSG:32633``, a PROJ string, WKT or a CRS; an unknown one is an :class:`InputError`."""
    rasterio = _rasterio()
    with gdal_failures() as errors:  # PROJ's reason goes to GDAL's error handler, not into the exception
        try:
            return rasterio.crs.CRS.from_user_input(value)
        except Exception as exc:  # CRSError, and whatever PROJ raises for malformed text
            detail = " ".join((errors[-1] if errors else str(exc)).split())[:160]
        raise InputError(f"The {what} {str(value)[:80]!r} is not a coordinate reference system GDAL/PROJ knows "
                         f"({detail}); give e.g. EPSG:4326.") from None


def area_unit(crs) -> str:
    """The unit of pixel areas in ``crs``: 'm²' for metric CRSs, 'degree²' for geographic ones, else '<unit>²'."""
    if crs is None:
        return "map units²"
    if crs.is_geographic:
        return "degree²"
    unit = (crs.linear_units or "").lower()
    return "m²" if unit in ("metre", "meter", "m", "metres", "meters") else f"{unit or 'map unit'}²"


def region_bounds(ds, region: Region) -> Tuple[float, float, float, float]:
    from rasterio.windows import bounds

    return bounds(region.window(), ds.transform)


def check_overlap(optical_ds, other_ds, region: Region, other_role: str = SAR) -> None:
    """Stop when ``other_ds`` does not overlap the output region of the optical raster."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = region_bounds(optical_ds, region)
    try:
        ob = transform_bounds(other_ds.crs, optical_ds.crs, *other_ds.bounds, densify_pts=21)
        ok = all(math.isfinite(v) for v in ob)
    except Exception:  # the other extent cannot be expressed in the optical CRS at all
        ok = False
    if ok:
        ix = min(right, ob[2]) - max(left, ob[0])
        iy = min(top, ob[3]) - max(bottom, ob[1])
        ok = ix > 0 and iy > 0
    if not ok:
        what = "the requested extent of the " if (region.height, region.width) != (optical_ds.height, optical_ds.width) else "the "
        raise InputError(
            f"The {describe(other_ds, other_role)} does not overlap {what}{describe(optical_ds, OPTICAL)}"
            + (f" (output extent {left:.6g}, {bottom:.6g} : {right:.6g}, {top:.6g})" if what != "the " else "")
            + ". Check that both layers cover the same area and have correct CRSs."
        )


def same_grid(a, b) -> bool:
    return a.crs == b.crs and a.transform.almost_equals(b.transform) and (a.width, a.height) == (b.width, b.height)


@contextmanager
def aligned(src, ref, resampling: str = "bilinear") -> Iterator:
    """``src`` seen on ``ref``'s pixel grid: ``src`` itself when the grids match, else a WarpedVRT.

    The VRT has float32 data, and pixels outside ``src``'s footprint (or where every source
    pixel under the kernel is nodata) read as NaN.  The source's nodata value is honoured by
    the warper (GDAL excludes nodata pixels from the bilinear kernel instead of blending them in)
    band by band (``UNIFIED_SRC_NODATA=NO``), as :func:`read_window` reads a raster on the optical
    grid: a pixel that is nodata in one band only is NaN in that band only.  (rasterio's default,
    YES, counts a pixel as nodata only where every band is, and blended a value like -9999 of a
    single band into its neighbours.)

    The NaN comes from the destination's initial value (``INIT_DEST=NaN``): a pixel the warper
    writes nothing to keeps it.  The VRT declares no nodata value of its own, because a
    destination nodata value sends GDAL's warper down its general path: warping 8000 x 8000 px of
    2 bands from EPSG:4326 on one thread took 5.0 s with NaN declared as the destination's nodata
    and 2.8 s without (the same NaN pixels, values within 1e-6; tested).
    """
    if same_grid(src, ref):
        yield src
        return
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    kwargs = dict(
        crs=ref.crs,
        transform=ref.transform,
        width=ref.width,
        height=ref.height,
        resampling=getattr(Resampling, resampling),
        dtype="float32",
        nodata=None,  # no destination nodata value: GDAL's fast warp kernels (see above)
        init_dest_nodata=False,
        INIT_DEST="NaN",  # what the warper writes nothing to stays NaN: outside the footprint, all-nodata kernels
        NUM_THREADS=WARP_THREADS,  # a warp option: GDAL splits each block's warp among threads (see parallel_warp)
    )
    if src.nodata is not None:
        kwargs["src_nodata"] = src.nodata
        kwargs["UNIFIED_SRC_NODATA"] = "NO"  # each band's own nodata pixels (rasterio's YES: only where all bands are)
    try:
        vrt = WarpedVRT(src, **kwargs)
    except Exception as exc:  # GDAL cannot build a transformer between the two CRSs
        raise InputError(
            f"The raster '{src.name}' ({crs_label(src.crs)}) cannot be warped onto the optical grid "
            f"({crs_label(ref.crs)}): {exc}"
        ) from None
    view = _narrow_blocks(vrt, src)
    try:
        yield view
    finally:
        view.close()


WARP_BLOCK = (128, 256)  # rows x columns of a warped view's blocks (GDAL's own warped VRT: 128 x 512)
WARP_THREADS = "ALL_CPUS"  # threads GDAL may split one block's warp among
WARP_CHUNK_PX = 8192  # ... each warping at least this many pixels (GDAL's default, 65536, is two of our blocks)


@contextmanager
def parallel_warp() -> Iterator[None]:
    """In this context GDAL splits the warp of every block of an :func:`aligned` view among up to
    :data:`WARP_THREADS` threads, each warping rows of :data:`WARP_CHUNK_PX` pixels or more (up to 4 per block).

    GDAL warps a warped VRT block by block, and a block with fewer than two chunks of its
    ``WARP_THREAD_CHUNK_SIZE`` configuration option (65536 px by default) is warped by one thread,
    whatever the view's ``NUM_THREADS`` warp option says: our 128 x 256 blocks (32768 px) always
    were.  Warping is the dearest part of reading a scene (bilinear, with the source's nodata).
    Measured alone on 2 cores (bench_classify, 8000 x 8000 px of 2 SAR bands from EPSG:4326, rows of
    512 px, 2026-12-02): 3.1-3.5 s on one thread per block, 2.6-3.1 s in this context; the whole engine
    with its near-free predictor 5.0-5.4 s against 4.9-5.2 s, because there both cores are already
    busy (with a destination nodata value, before :func:`aligned` dropped it: 6.7-7.4 s against
    5.9-6.4 s).  On a machine whose cores the network leaves idle (a GPU's) the SAR's warp is what holds
    the pipeline up.  Each pixel is warped as before (every thread runs the same per-row transformer
    and kernel): same values.  A value the user set in the environment wins.
    """
    if "WARP_THREAD_CHUNK_SIZE" in os.environ:
        yield
        return
    with _rasterio().Env(WARP_THREAD_CHUNK_SIZE=str(WARP_CHUNK_PX)):
        yield


class WarpedView:
    """A warped VRT reopened with :data:`WARP_BLOCK` blocks; everything else is the VRT's (``src_dataset``: the source).

    Its warp options let GDAL split a block's warp among threads (:func:`parallel_warp`).

    GDAL warps a warped VRT block by block and keeps the blocks in its cache.  A scene visited
    in column stripes (:class:`optsar_plugin.inference.windows.Grid`) reads the ``overlap``
    columns at a stripe's edge in two stripes, long apart, so the warped block column under
    them is warped twice: a 512-px column with GDAL's default blocks, a 256-px one here.
    Measured alone, three runs each (bench_classify, 8000 x 8000, SAR in EPSG:4326, 2 cores):
    stripes of 6 windows (a 64 MB budget, the default until 2026-12-06) 5.9-6.2 s with 512-px blocks, 5.5-5.7 s with
    256-px blocks (128-px: 5.7-6.0 s); stripes of 2 windows (``GDAL_CACHEMAX=32MB``) 7.5-8.0 s
    against 6.6-6.9 s; whole rows take the same time with either (5.4-5.8 s).
    """

    def __init__(self, ds, src):
        self._ds, self.src_dataset = ds, src

    def __getattr__(self, name):
        return getattr(self._ds, name)

    def close(self) -> None:
        self._ds.close()

    @property
    def name(self) -> str:
        return f"WarpedVRT({self.src_dataset.name})"


def _narrow_blocks(vrt, src):
    """``vrt`` with :data:`WARP_BLOCK` blocks (:class:`WarpedView`), rewritten in its XML; ``vrt`` itself where
    GDAL gives no XML or cannot open it (the warp is the same, only the blocks differ)."""
    rasterio = _rasterio()
    rows, cols = WARP_BLOCK
    try:
        xml = vrt.tags(ns="xml:VRT")["xml:VRT"]
        xml = re.sub(r"<BlockXSize>\d+</BlockXSize>", f"<BlockXSize>{min(cols, vrt.width)}</BlockXSize>", xml, count=1)
        xml = re.sub(r"<BlockYSize>\d+</BlockYSize>", f"<BlockYSize>{min(rows, vrt.height)}</BlockYSize>", xml, count=1)
        view = WarpedView(rasterio.open(xml), src)
    except Exception:  # noqa: BLE001 - any failure keeps GDAL's own blocks
        return vrt
    vrt.close()
    return view


# -- windows ---------------------------------------------------------------------------------


def ceil_to(n: int, multiple: int) -> int:
    return int(math.ceil(n / multiple) * multiple)


def window_starts(length: int, tile: int, overlap: int, min_tile: int = MIN_TILE) -> Tuple[int, List[int]]:
    """Tile edge and window start offsets covering ``length`` pixels along one axis.

    * ``length <= tile``: a single window whose edge is ``length`` rounded up to a
      multiple of 32 (at least ``min_tile``, at most ``tile``); the rest is padding.
    * otherwise windows of ``tile`` pixels every ``tile - overlap`` pixels; the last
      one is the first that reaches the end and is padded beyond it.  The windows
      are never shifted or shrunk, so the overlap between neighbours is exactly
      ``overlap`` everywhere - the streaming blender relies on that.
    """
    if length <= tile:
        return min(tile, max(min_tile, ceil_to(length, 32))), [0]
    stride = tile - overlap
    starts = [0]
    while starts[-1] + tile < length:
        starts.append(starts[-1] + stride)
    return tile, starts


# -- reading ---------------------------------------------------------------------------------


def _mask_is_external(ds, band: int) -> bool:
    """True when GDAL's mask for ``band`` is not simply 'all valid' or 'equals nodata'."""
    from rasterio.enums import MaskFlags

    flags = ds.mask_flag_enums[band - 1]
    return MaskFlags.all_valid not in flags and MaskFlags.nodata not in flags


def read_window(ds, bands: Sequence[int], row: int, col: int, height: int, width: int) -> np.ndarray:
    """Bands ``bands`` of ``ds`` in the window (row, col, height, width) as float32 with NaN for invalid.

    The window may reach beyond the raster; that part is filled by reflection of
    the part inside (a window entirely outside is an error of the caller).
    """
    from rasterio.windows import Window

    r0, c0 = max(0, row), max(0, col)
    r1, c1 = min(ds.height, row + height), min(ds.width, col + width)
    if r1 <= r0 or c1 <= c0:
        raise ValueError(f"window ({row}, {col}, {height}, {width}) lies outside the raster {ds.name}")
    win = Window(c0, r0, c1 - c0, r1 - r0)
    data = read(ds, list(bands), window=win, out_dtype="float32")
    nodata = ds.nodatavals
    for k, b in enumerate(bands):
        nd = nodata[b - 1]
        if nd is not None and not math.isnan(nd):
            data[k][data[k] == np.float32(nd)] = np.nan
    external = [b for b in bands if _mask_is_external(ds, b)]
    if external:
        masks = read(ds, list(bands), window=win, masks=True)
        data[masks == 0] = np.nan
    pad = ((0, 0), (r0 - row, row + height - r1), (c0 - col, col + width - c1))
    if any(p for pair in pad[1:] for p in pair):
        data = pad_reflect(data, pad)
    return data


def sample_values(ds, bands: Sequence[int], region: Optional[Region] = None, max_pixels: int = 1 << 16) -> np.ndarray:
    """(bands, N) float32 values of a decimated read of ``region`` (default: the whole raster), NaN for invalid.

    For statistics of a whole scene (the encoding of its values) without reading it all:
    GDAL reads overviews where the raster has them, else decimates (nearest).
    """
    from rasterio.windows import Window

    win = Window(0, 0, ds.width, ds.height) if region is None else region.window()
    h, w = int(win.height), int(win.width)
    f = max(1.0, math.sqrt(h * w / float(max_pixels)))
    shape = (len(bands), max(1, int(h / f)), max(1, int(w / f)))
    data = read(ds, list(bands), window=win, out_shape=shape, out_dtype="float32", masked=True)
    out = np.asarray(data.filled(np.nan), np.float32)
    for k, b in enumerate(bands):
        nd = ds.nodatavals[b - 1]
        if nd is not None and not math.isnan(nd):
            out[k][out[k] == np.float32(nd)] = np.nan
    return out.reshape(len(bands), -1)


def pad_reflect(data: np.ndarray, pad) -> np.ndarray:
    """``numpy.pad`` reflect, falling back to edge replication on axes of length 1."""
    mode = "reflect" if min(data.shape[-2:]) > 1 else "edge"
    return np.pad(data, pad, mode=mode)


def all_invalid(data: np.ndarray) -> np.ndarray:
    """(bands, H, W) with NaN for invalid -> (H, W) bool, True where every band is invalid."""
    return np.isnan(data).all(axis=0)


def read_cloud(ds, row: int, col: int, height: int, width: int) -> np.ndarray:
    """The cloud mask's first band in the window: True where cloud (non-zero, not nodata)."""
    data = read_window(ds, [1], row, col, height, width)[0]
    return np.nan_to_num(data, nan=0.0) != 0


# -- classifications ---------------------------------------------------------------------------


def open_classification(path, band: int = 1, role: str = "classification raster"):
    """``(dataset, band)``: a classification raster opened for reading, its band checked (1-based)."""
    ds = open_raster(path, role)
    try:
        b = int(band)
    except (TypeError, ValueError):
        b = 0
    if not 1 <= b <= ds.count:
        ds.close()
        raise InputError(f"The {role} '{path}' has {ds.count} band(s); band {band} does not exist.")
    return ds, b


def valid_mask(ds, band: int, values: np.ndarray, window=None) -> np.ndarray:
    """Where ``values`` (read from ``band`` in ``window``) are valid: finite, not nodata, not masked by GDAL."""
    from rasterio.enums import MaskFlags

    flags = ds.mask_flag_enums[band - 1]
    valid = np.isfinite(values) if values.dtype.kind == "f" else np.ones(values.shape, dtype=bool)
    if MaskFlags.all_valid in flags:
        return valid
    nd = ds.nodatavals[band - 1]
    if MaskFlags.nodata in flags and nd is not None:
        if values.dtype.kind == "f" and np.isnan(nd):
            return valid
        return valid & (values != nd)
    return valid & (read(ds, band, window=window, masks=True) > 0)


def parse_ignore_values(ignore_values, parameter: str = "Ignore values") -> List[int]:
    """Class codes to leave out, from ``"0, 9"``, ``"0;9"`` or a sequence; sorted and unique."""
    if ignore_values is None:
        return []
    if isinstance(ignore_values, str):
        parts = [p for p in re.split(r"[,;\s]+", ignore_values.strip()) if p]
    else:
        parts = list(ignore_values)
    out = []
    for p in parts:
        try:
            f = float(p)
        except (TypeError, ValueError):
            f = math.nan
        if not math.isfinite(f) or f != int(f):
            raise InputError(f"{parameter} must be integer class codes, got {p!r}.")
        out.append(int(f))
    return sorted(set(out))
