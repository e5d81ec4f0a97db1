"""The windows of a scene: where they are, reading and normalising them in a background thread, memory bounds.

* **Windows** of ``tile_size`` pixels (a multiple of 32, >= 64) every ``tile_size -
  overlap`` pixels (:func:`optsar_plugin.raster_io.window_starts`); the last window in a
  row or column is padded by reflection beyond the raster (never shrunk or shifted), so
  neighbouring windows always overlap by exactly ``overlap`` pixels.  A scene smaller
  than the tile is one window of its size rounded up to a multiple of 32.
* **Reading**: the next batch is read and normalised in the background while the
  current one is in the network and being blended; the optical raster and the SAR raster
  (whose warping is the dearest part) are read by two threads at once (GDAL's decoding and
  warping, numpy and torch release the GIL), so reading costs little wall time on a GPU
  and uses two cores on a CPU.  Each input is touched by one thread only.  Two sets of
  batch arrays are used in turn.
* **Nodata**: a pixel is nodata when all selected optical bands, or all selected SAR
  bands, are nodata/NaN there (after warping: SAR outside its footprint counts as
  nodata).  A single missing band is set to 0 after normalisation (the training median).
  Windows without any valid pixel skip the model.
* **Process-level memory**: the GDAL block cache is capped at :data:`GDAL_CACHE_BYTES`
  during the run (more only for striped inputs, see :func:`gdal_cache_bytes`; the
  GDAL_CACHEMAX environment variable wins), and freed heap pages are returned to the OS
  after every window (glibc ``malloc_trim``, :func:`trim_heap`), so heap fragmentation
  does not creep up with the number of windows.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from .. import normalisation, raster_io
from ..deps import require
from ..progress import check_cancel

GDAL_CACHE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class Grid:
    """Window size (``th`` x ``tw``) and the window start offsets (rows, cols) within the region."""

    th: int
    tw: int
    rows: List[int]
    cols: List[int]

    @property
    def n_windows(self) -> int:
        return len(self.rows) * len(self.cols)

    def batches(self, batch_size: int) -> List[List[Tuple[int, int]]]:
        """Window indices (i, j) in row-major order, ``batch_size`` at a time."""
        order = [(i, j) for i in range(len(self.rows)) for j in range(len(self.cols))]
        return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def plan_windows(region, tile: int, overlap: int, min_tile: int) -> Grid:
    th, rows = raster_io.window_starts(region.height, tile, overlap, min_tile)
    tw, cols = raster_io.window_starts(region.width, tile, overlap, min_tile)
    return Grid(th, tw, rows, cols)


# -- memory ------------------------------------------------------------------------------------


def gdal_cache_bytes(rasterio, sources, rows: int) -> int:
    """GDAL block cache for the run: :data:`GDAL_CACHE_BYTES`, more only for striped inputs.

    GDAL's default cache is 5 % of the RAM; input blocks and output blocks waiting
    for compression would fill it and make the process grow with the scene, so it
    is capped for the run (rasterio restores it afterwards) at a constant, so that
    memory does not grow with the scene.  Windows overlap and are not aligned with the
    blocks, so a block is decompressed, and a warped SAR block warped, two or three times
    when the cache cannot keep it for the neighbours.  Measured alone (bench_classify,
    8000 x 8000, SAR warped from EPSG:4326, near-free predictor): a 16 MB cap took 25.6 s
    against 10.2 s for a plain read-warp-write loop, 64 MB 15.5 s; the peak memory of an
    8000 x 8000 scene went from 323 to 368 MiB (1.24 times that of a 1000 x 1000 scene,
    which does not fill the cache, instead of 1.13).  The I/O-bound case is the GPU one,
    where 45 MiB do not matter and 40 % of the time does.  ``GDAL_CACHEMAX`` set by the
    user overrides this cap.  A *striped*
    input (blocks as wide as the raster, GDAL's default layout) is read a full-width
    strip at a time, so the cache must
    hold one window row of its strips or every window would decompress them again;
    then the cap is that size (at most 1 GiB) - the one case where memory grows
    with the scene width.  Never more than the current cache size.
    """
    need = GDAL_CACHE_BYTES
    for ds in sources:
        if ds is None:
            continue
        bh, bw = ds.block_shapes[0]
        if bw >= ds.width:  # striped
            itemsize = sum(np.dtype(t).itemsize for t in ds.dtypes)
            need = max(need, int(1.25 * (rows + bh) * ds.width * itemsize))
    need = min(need, 2**30)
    current = rasterio.env.get_gdal_config("GDAL_CACHEMAX")
    try:
        current = int(current)
    except (TypeError, ValueError):
        return need
    if 0 < current < 100_000:  # GDAL reads values below 100000 as megabytes
        current *= 2**20
    return min(need, current) if current > 0 else need


def cap_gdal_cache(stack, sources, rows: int) -> None:
    """Cap GDAL's block cache for the rest of ``stack`` (unless the user set GDAL_CACHEMAX)."""
    if "GDAL_CACHEMAX" in os.environ:  # an explicit user setting wins
        return
    rasterio = require("rasterio", "reading rasters")
    stack.enter_context(rasterio.Env(GDAL_CACHEMAX=gdal_cache_bytes(rasterio, sources, rows)))


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
    """Give freed heap pages back to the OS (called once per window read and blended).

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

    The optical raster (with the cloud mask) and the SAR raster are read by two threads at
    once (decoding and warping release the GIL).  Each input is touched by its own thread
    only - a dataset must not be shared between threads - and always by the same one, so
    GDAL's block cache of that input serves neighbouring windows.  ``stack`` shuts the
    threads down.
    """

    def __init__(self, stack, scene, grid: Grid, stats, handling: str, batch_size: int, feedback):
        self.scene, self.grid, self.stats, self.handling, self.feedback = scene, grid, stats, handling, feedback
        self.batches = grid.batches(batch_size)
        ob, sb = len(scene.optical_bands), len(scene.sar_bands)
        self.buffers = [(np.empty((batch_size, ob, grid.th, grid.tw), np.float32),
                         np.empty((batch_size, sb, grid.th, grid.tw), np.float32))
                        for _ in range(min(2, len(self.batches)))]
        self.sar_pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="optsar-read-sar"))

    def units(self, kind: str):
        """This scene's encoding of ``kind`` (None: the training data's, see :mod:`optsar_plugin.normalisation`)."""
        units = getattr(self.scene, "units", None)
        return units[kind] if units else None

    def _windows(self, b: int):
        s, g = self.scene, self.grid
        for k, (i, j) in enumerate(self.batches[b]):
            check_cancel(self.feedback)
            yield k, s.region.row_off + g.rows[i], s.region.col_off + g.cols[j]

    def _read(self, b: int, which: str):
        """One input of batch ``b`` normalised into its buffer; per window (all-invalid mask, cloud mask or None)."""
        s, g = self.scene, self.grid
        ds, bands, buf = ((s.optical, s.optical_bands, self.buffers[b % 2][0]) if which == "optical"
                          else (s.sar, s.sar_bands, self.buffers[b % 2][1]))
        out = []
        for k, r, c in self._windows(b):
            data = raster_io.read_window(ds, bands, r, c, g.th, g.tw)
            cloud = None
            if which == "optical" and s.cloud is not None:
                cloud = raster_io.read_cloud(s.cloud, r, c, g.th, g.tw)
            buf[k] = normalisation.apply(data, self.stats[which], units=self.units(which))
            if cloud is not None and self.handling == "zero":
                buf[k][:, cloud] = 0.0
            out.append((raster_io.all_invalid(data), cloud))
            del data
            trim_heap()
        return out

    def read(self, b: int):
        opt_b, sar_b = self.buffers[b % 2]  # normalised windows go straight in (no second copy by stacking)
        sar_future = self.sar_pool.submit(self._read, b, "sar")
        try:
            optical = self._read(b, "optical")
        finally:
            sar = sar_future.result()
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
    """Read (in a background thread), predict and blend every window, a batch at a time, in row-major order."""
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
                trim_heap()
                done += 1
                pct = int(100 * done / total)
                feedback.progress(done / total, f"Window {done} of {total}" if pct != last_pct else None)
                last_pct = pct
