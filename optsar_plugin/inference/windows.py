"""The windows of a scene: where they are, reading and normalising them in a background thread, memory bounds.

* **Windows** of ``tile_size`` pixels (a multiple of 32, >= 64) every ``tile_size -
  overlap`` pixels (:func:`optsar_plugin.raster_io.window_starts`); the last window in a
  row or column is padded by reflection beyond the raster (never shrunk or shifted), so
  neighbouring windows always overlap by exactly ``overlap`` pixels.  A scene smaller
  than the tile is one window of its size rounded up to a multiple of 32.
* **Reading**: the next batch is read and normalised in the background while the
  current one is in the network and being blended; the SAR raster (whose warping is the
  dearest part) is warped by a thread of its own that runs a batch ahead and does nothing
  else (GDAL splits each warped block among the cores:
  :func:`optsar_plugin.raster_io.parallel_warp`), while another thread reads the optical
  raster and normalises both (GDAL's decoding and warping, numpy and torch release the
  GIL), so reading costs little wall time on a GPU and uses two cores on a CPU.  Each input is touched by one thread only.  Two sets of
  batch arrays are used in turn.
* **Nodata**: a pixel is nodata when all selected optical bands, or all selected SAR
  bands, are nodata/NaN there (after warping: SAR outside its footprint counts as
  nodata).  A single missing band is set to 0 after normalisation (the training median).
  Windows without any valid pixel skip the model.
* **Process-level memory**: the GDAL block cache is capped during the run at one window row
  of every input's blocks, at least :data:`GDAL_CACHE_BYTES` (see :func:`gdal_cache_bytes`;
  the GDAL_CACHEMAX environment variable wins); a scene whose window row of blocks exceeds
  :data:`STRIPE_CACHE_BYTES` (32 MB: about 1000 px of 4 optical + 2 SAR bands) or GDAL's cache
  is visited in column stripes that fit it (:class:`Grid`, :func:`stripe_px`), so memory stops
  growing with the width; freed heap pages are returned to the OS after every batch (glibc
  ``malloc_trim``, :func:`trim_heap`), so heap fragmentation does not creep up with the number
  of windows.
"""

from __future__ import annotations

import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from .. import normalisation, raster_io
from ..deps import require
from ..progress import check_cancel

GDAL_CACHE_BYTES = 32 * 2**20
"""The block cache budget of a run.  It is a fixed amount, so a large scene and a small one peak at
nearly the same memory; its size trades memory for the blocks decoded twice at stripe edges.
Measured alone, four interleaved runs (bench_classify, 8000 x 8000, near-free predictor, 2 cores,
2026-12-06): 32 MB (9 stripes of 2 windows) 6.6-7.0 s, 255-261 MiB; 40 MB 6.3-7.1 s; 48 MB
6.0-6.5 s; 64 MB (3 stripes of 6) 5.8-6.1 s, 288-295 MiB.  The cheap predictor's peak from 1000 x 1000 to
8000 x 8000 rises by 1.14 at 32 MB (1.19 at 48 MB, 1.29 at 64 MB), and the plain read-warp-write loop
took 7.7-8.4 s: 32 MB keeps memory flat and the engine still faster than that loop.  A user with
memory to spare sets ``GDAL_CACHEMAX`` (e.g. ``64MB``) for wider stripes."""


STRIPE_CACHE_BYTES = GDAL_CACHE_BYTES  # a window row of blocks above this (or GDAL's cache): stripes (:class:`Grid`)


@dataclass(frozen=True)
class Grid:
    """Window size (``th`` x ``tw``), the window start offsets (rows, cols) within the region, and the stripes.

    A scene whose window row of input blocks would not fit GDAL's cache budget
    (:func:`stripe_px`) is visited in vertical **stripes** of ``stripe`` window columns, each
    from top to bottom, row by row within the stripe (``stripe`` 0: whole rows, one stripe).
    What must stay in memory between two rows of windows - GDAL's input blocks and the
    blender's band of overlapping rows - then spans a stripe, not the scene's width, so the
    memory of a run stops growing with the width.  A window column on a stripe boundary is
    read and predicted once; only its overlap with the next stripe's first window column
    (``overlap`` px, kept by the blender) waits for that stripe, but the input blocks under
    that overlap are decoded (and SAR blocks warped) once per stripe - which is why the warped
    SAR has narrow blocks (:class:`optsar_plugin.raster_io.WarpedView`).  Measured alone on 8000 x
    8000 (bench_classify, near-free predictor, 2 cores, 2026-12-02): whole rows with their 190 MB
    window-row cache peak at 405-413 MiB in 5.4-5.8 s; stripes of 6 windows (2752 px) in a 64 MB
    cache at 305-311 MiB in 5.5-5.7 s (with GDAL's 512 x 128 warped blocks: 5.9-6.2 s; on an
    earlier, slower machine 10-15 % over whole rows).  So stripes are the rule as soon as a window
    row of blocks passes the budget (:data:`STRIPE_CACHE_BYTES`, 32 MB since 2026-12-06: narrower
    stripes cost 6-12 % of that time, see :data:`GDAL_CACHE_BYTES`).
    """

    th: int
    tw: int
    rows: List[int]
    cols: List[int]
    stripe: int = 0  # window columns per stripe (0: all of them, one stripe)

    @property
    def n_windows(self) -> int:
        return len(self.rows) * len(self.cols)

    def stripes(self) -> List[Tuple[int, int]]:
        """Window column ranges ``[j0, j1)`` of the stripes, left to right."""
        n = len(self.cols)
        step = self.stripe or n
        return [(j, min(n, j + step)) for j in range(0, n, step)]

    def stripe_width(self, width: int) -> int:
        """The widest stripe's pixels, its last window included (``width``: the region's)."""
        spans = [min(width, self.cols[j1 - 1] + self.tw) - self.cols[j0] for j0, j1 in self.stripes()]
        return max(spans)

    def batches(self, batch_size: int) -> List[List[Tuple[int, int]]]:
        """Window indices (i, j) stripe by stripe, row-major within a stripe, ``batch_size`` at a time."""
        order = [(i, j) for j0, j1 in self.stripes() for i in range(len(self.rows)) for j in range(j0, j1)]
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def plan_windows(region, tile: int, overlap: int, min_tile: int, stripe_px: Optional[int] = None) -> Grid:
    """The windows of ``region``, in stripes of about ``stripe_px`` pixels when given (None: whole rows)."""
    th, rows = raster_io.window_starts(region.height, tile, overlap, min_tile)
    tw, cols = raster_io.window_starts(region.width, tile, overlap, min_tile)
    if not stripe_px or len(cols) < 2:
        return Grid(th, tw, rows, cols)
    per_stripe = max(2, (stripe_px - tw) // (cols[1] - cols[0]) + 1)
    return Grid(th, tw, rows, cols, per_stripe if per_stripe < len(cols) else 0)


def stripe_px(rasterio, sources, tile: int, region_width: int, raster_width: int) -> Optional[int]:
    """Stripe width (px) for the run: None while a window row of every input's blocks fits the budget.

    The budget is :data:`STRIPE_CACHE_BYTES`, or less when GDAL's cache is smaller (5 % of the
    RAM on a small machine); a ``GDAL_CACHEMAX`` environment variable set by the user is the
    budget, larger or smaller (:func:`cap_gdal_cache` then leaves GDAL's cache alone).  The stripe
    is as wide as the budget holds (``region_width``: the pixels to classify; ``raster_width``:
    the optical raster's).
    """
    limit = cache_limit(rasterio)
    budget = limit if limit and "GDAL_CACHEMAX" in os.environ else min(STRIPE_CACHE_BYTES, limit or STRIPE_CACHE_BYTES)
    if row_blocks_bytes(sources, tile, region_width / raster_width) <= budget:
        return None
    per_px = edges = 0.0  # a stripe's need: edges + per_px x its width (optical pixels)
    for ds in sources:
        if ds is not None:
            row = _column_bytes(ds, tile)
            per_px, edges = per_px + row * ds.width / raster_width, edges + row * ds.block_shapes[0][1]
    return max(tile, int((budget - edges) / per_px))


# -- memory ------------------------------------------------------------------------------------


def gdal_cache_bytes(rasterio, sources, rows: int, share: float = 1.0) -> int:
    """GDAL block cache for the run: one window row of a stripe of every input's blocks, at least :data:`GDAL_CACHE_BYTES`.

    ``sources``: the datasets the windows are read from - the inputs as opened and the warped
    views of them (a warped SAR block is costly to make again) - None for an absent input.
    Windows overlap and are not aligned with the blocks, so the next row of windows needs blocks
    the current row used: the bottom blocks of every input across the scene's width.  GDAL's
    cache is least-recently-used, so it keeps them only if it holds a whole row of windows'
    blocks (``(rows + block height) x width`` per input); a smaller cache evicts each block
    before its second use, and then blocks are decompressed, and SAR blocks warped, two or
    three times.  Measured alone (bench_classify, 8000 x 8000, SAR warped from EPSG:4326,
    near-free predictor, against 9.6 s for a plain read-warp-write loop): a 16 MB cap took
    25.6 s, 64 MB 13.0 s, a window row (about 180 MB here) 10 s.  A cache too small for a window
    row is why a scene is then visited in stripes (:class:`Grid`, :func:`stripe_px`).

    So the cache holds a window row of a *stripe* (:class:`Grid`; ``share``: the widest
    stripe's share of the optical raster's width, taken of every input's width, plus one block
    for the blocks a stripe's edge cuts): 1.25 x that, at least :data:`GDAL_CACHE_BYTES`, at
    most 1 GiB and never more than GDAL's current cache size (5 % of the RAM by default;
    ``GDAL_CACHEMAX`` set by the user overrides the whole rule).  GDAL's default would
    otherwise let input blocks and output blocks waiting for compression grow with the scene.
    """
    need = min(max(row_blocks_bytes(sources, rows, share), GDAL_CACHE_BYTES), 2**30)
    current = cache_limit(rasterio)
    return min(need, current) if current else need


def row_blocks_bytes(sources, rows: int, share: float = 1.0) -> int:
    """1.25 x the bytes of one window row's blocks of every source, ``share`` of their width (see above)."""
    need = 0
    for ds in sources:
        if ds is not None:
            width = min(ds.width, math.ceil(share * ds.width) + ds.block_shapes[0][1])
            need += int(_column_bytes(ds, rows) * width)
    return need


def _column_bytes(ds, rows: int) -> float:
    """1.25 x the bytes of one pixel column of ``ds``'s blocks under a window row of ``rows`` px."""
    return 1.25 * (rows + ds.block_shapes[0][0]) * sum(np.dtype(t).itemsize for t in ds.dtypes)


def cache_limit(rasterio) -> Optional[int]:
    """GDAL's block cache size in bytes (rasterio reads GDAL's own setting: the user's ``GDAL_CACHEMAX``, or 5 %
    of the RAM), None when unknown."""
    try:
        value = int(rasterio.env.get_gdal_config("GDAL_CACHEMAX"))
    except (TypeError, ValueError):
        return None
    if 0 < value < 100_000:  # GDAL reads values below 100000 as megabytes
        value *= 2**20
    return value if value > 0 else None


def cap_gdal_cache(stack, sources, rows: int, share: float = 1.0) -> None:
    """Cap GDAL's block cache for the rest of ``stack`` (unless the user set GDAL_CACHEMAX)."""
    if "GDAL_CACHEMAX" in os.environ:  # an explicit user setting wins
        return
    rasterio = require("rasterio", "reading rasters")
    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(rasterio, sources, rows, share)))


def _libc_trim():
    """glibc's ``malloc_trim`` (None elsewhere)."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl, or no C library found: nothing to do
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_TRIM = _libc_trim()


def trim_heap() -> None:
    """Give freed heap pages back to the OS (called once per batch of windows read, and blended).

    Each window allocates and frees tens of MB of numpy arrays; glibc raises its
    mmap threshold after the first such free, so later arrays come from the heap
    whose free pages it keeps.  Without trimming, the resident size creeps up with
    the number of windows (measured: +25 % from a 1000 px to a 2000 px scene);
    with it, the peak stays nearly flat.  Cost: about a millisecond per window.
    """
    if _TRIM is not None:
        _TRIM(0)


# -- reading -----------------------------------------------------------------------------------


class BatchReader:
    """Reads and normalises one batch of windows into one of two reusable pairs of arrays.

    ``read(b)`` returns ``(items, live, stacked)``: per window ``(i, j, valid, cloud)``,
    the positions of the windows that have a valid pixel, and their normalised optical and
    SAR arrays (None when no window of the batch has one).  Batch ``b + 2`` may only be
    read after batch ``b`` has been predicted and blended (its arrays are reused).

    The SAR raster, whose warping is the dearest part of reading, has a thread of its own that
    does nothing else: it warps batch ``b + 1`` while batch ``b``'s SAR windows are being
    normalised, so it never waits for the rest of the pipeline.  The optical raster (with the
    cloud mask) is read, and both inputs are normalised, by the thread that calls ``read``
    (decoding and warping release the GIL).  Each input is touched by its own thread only - a
    dataset must not be shared between threads - and always by the same one, so GDAL's block
    cache of that input serves neighbouring windows.  ``stack`` shuts the thread down.
    """

    def __init__(self, stack, scene, grid: Grid, stats, handling: str, batch_size: int, feedback):
        self.scene, self.grid, self.stats, self.handling, self.feedback = scene, grid, stats, handling, feedback
        self.batches = grid.batches(batch_size)
        ob, sb = len(scene.optical_bands), len(scene.sar_bands)
        self.buffers = [(np.empty((batch_size, ob, grid.th, grid.tw), np.float32),
                         np.empty((batch_size, sb, grid.th, grid.tw), np.float32))
                        for _ in range(min(2, len(self.batches)))]
        self.sar_pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="optsar-read-sar"))
        self._sar = {}  # batch -> future of its raw SAR windows (at most two batches ahead)

    def units(self, kind: str):
        """This scene's encoding of ``kind`` (None: the training data's, see :mod:`optsar_plugin.normalisation`)."""
        units = getattr(self.scene, "units", None)
        return units[kind] if units else None

    def _windows(self, b: int):
        s, g = self.scene, self.grid
        for k, (i, j) in enumerate(self.batches[b]):
            check_cancel(self.feedback)
            yield k, s.region.row_off + g.rows[i], s.region.col_off + g.cols[j]

    def _warp_sar(self, b: int) -> list:
        """Batch ``b``'s SAR windows as read (warped), in the SAR thread."""
        s, g = self.scene, self.grid
        return [raster_io.read_window(s.sar, s.sar_bands, r, c, g.th, g.tw) for _, r, c in self._windows(b)]

    def _sar_future(self, b: int):
        if b not in self._sar and b < len(self.batches):
            self._sar[b] = self.sar_pool.submit(self._warp_sar, b)
        return self._sar.get(b)

    def _read_optical(self, b: int) -> list:
        """Batch ``b``'s optical windows normalised into their buffer; per window (all-invalid mask, cloud or None)."""
        s, g = self.scene, self.grid
        buf = self.buffers[b % 2][0]
        out = []
        for k, r, c in self._windows(b):
            data = raster_io.read_window(s.optical, s.optical_bands, r, c, g.th, g.tw)
            cloud = raster_io.read_cloud(s.cloud, r, c, g.th, g.tw) if s.cloud is not None else None
            normalisation.apply(data, self.stats["optical"], units=self.units("optical"), out=buf[k])
            if cloud is not None and self.handling == "zero":
                buf[k][:, cloud] = 0.0
            out.append((raster_io.all_invalid(data), cloud))
            del data
        return out

    def _normalise_sar(self, b: int, windows: list) -> list:
        buf = self.buffers[b % 2][1]
        out = []
        for k, data in enumerate(windows):
            normalisation.apply(data, self.stats["sar"], units=self.units("sar"), out=buf[k])
            out.append((raster_io.all_invalid(data), None))
        windows.clear()
        return out

    def read(self, b: int):
        opt_b, sar_b = self.buffers[b % 2]  # normalised windows go straight in (no second copy by stacking)
        sar_future = self._sar_future(b)
        self._sar_future(b + 1)  # the SAR thread goes straight on to the next batch
        try:
            optical = self._read_optical(b)
        finally:
            raw = sar_future.result()
            del self._sar[b]
        sar = self._normalise_sar(b, raw)
        trim_heap()
        items, live = [], []
        for k, ((i, j), (o_invalid, cloud), (s_invalid, _)) in enumerate(zip(self.batches[b], optical, sar)):
            valid = ~(o_invalid | s_invalid)
            items.append((i, j, valid, cloud))
            if valid.any():  # the network is not run for windows without a valid pixel
                if len(live) != k:  # close the gap a window without data left
                    opt_b[len(live)], sar_b[len(live)] = opt_b[k], sar_b[k]
                live.append(k)
        n = len(live)
        return items, live, ((opt_b[:n], sar_b[:n]) if n else None)


def stream_windows(reader: BatchReader, runner, blender, feedback) -> None:
    """Read (in a background thread), predict and blend every window, a batch at a time, in the grid's order."""
    total = reader.grid.n_windows
    done, last_pct = 0, -1
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="optsar-read") as pool:
        future = pool.submit(reader.read, 0)
        for b in range(len(reader.batches)):
            items, live, stacked = future.result()
            future = pool.submit(reader.read, b + 1) if b + 1 < len(reader.batches) else None
            try:
                probs = runner(*stacked) if stacked is not None else None
                del stacked
                check_cancel(feedback)
            except BaseException:
                if future is not None:
                    future.cancel()
                raise
            where = {k: n for n, k in enumerate(live)}
            for k, (i, j, valid, cloud) in enumerate(items):
                blender.add(i, j, probs[where[k]] if k in where else None, valid, cloud)
                done += 1
                pct = int(100 * done / total)
                feedback.progress(done / total, f"Window {done} of {total}" if pct != last_pct else None)
                last_pct = pct
            del probs
            trim_heap()
