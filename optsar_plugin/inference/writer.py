"""Writing the outputs: whole GeoTIFF tiles as soon as they are final, and the run's tags.

The classification is a tiled (:data:`BLOCK` px), DEFLATE-compressed uint8 GeoTIFF (nodata
255) with the checkpoint's class codes; confidence (max class probability) and per-class
probabilities are float32 with NaN nodata.  Finished pixels arrive from the blender; each
column of tiles keeps them until a whole tile row is final, then writes it once, so GDAL
compresses every tile exactly once and what waits in memory is at most one unfinished
tile row across the width; the tile column cut by a column stripe's edge, which waits for the
next stripe, waits in an unnamed temporary file (:class:`PieceSpill`).  The writes (and so the compression) happen in a background
thread (:class:`BackgroundWrites`), alongside reading, the network and blending.  Tags (:data:`TAG_PREFIX` ``MODEL``, ``CHECKPOINT``,
``CHECKPOINT_HASH``, ``DATE``, ...) record what made the map.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import deque
from typing import Dict, Optional

import numpy as np

from ..classes import NODATA, ClassScheme
from ..deps import require
from ..fileio import SlotFile
from ..raster_io import close_written, gdal_failures, write_checked

BLOCK = 256  # GeoTIFF tile edge of the outputs
TAG_PREFIX = "OPTSAR_"


def output_profile(transform, crs, width: int, height: int, count: int, dtype: str, nodata, predictor=None) -> Dict:
    """Creation options of an output GeoTIFF: tiled, DEFLATE, BigTIFF when needed, compressed on all cores."""
    prof = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=crs, transform=transform,
        nodata=nodata, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="deflate", BIGTIFF="IF_SAFER",
        NUM_THREADS="ALL_CPUS",  # GDAL compresses tiles in parallel
    )
    if predictor:
        prof["predictor"] = predictor
    return prof


class BackgroundWrites:
    """Every ``dataset.write`` of the outputs, in one background thread, in the order asked.

    GDAL compresses a tile when it is written; done here, compression runs alongside the
    reading, the network and the blending instead of between them.  Only this thread
    writes to the output datasets while the run streams (a dataset must not be used by
    two threads at once); :meth:`flush` waits for every write (and raises the first
    error) before the datasets are tagged and closed.  At most ``depth`` writes wait, so
    memory stays bounded when the disk is slower than the rest.
    """

    def __init__(self, stack, depth: int = 8):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = stack.enter_context(ThreadPoolExecutor(1, thread_name_prefix="optsar-write"))
        self._pending = deque()
        self._depth = depth

    def write(self, ds, array: np.ndarray, window) -> None:
        self._pending.append(self._pool.submit(write_checked, ds, array, window))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def flush(self) -> None:
        while self._pending:
            self._pending.popleft().result()


def _write_now(ds, array, window) -> None:
    write_checked(ds, array, window)


class PieceSpill:
    """Pieces of one output's tiles that wait for the next stripe, in an unnamed temporary file.

    A column stripe's right edge cuts a column of output tiles, whose left part is final
    long before the next stripe brings its right part: held in memory, those pieces would
    grow with the scene's height (9 classes' probabilities: 9 KB a row).  They wait in a
    :class:`~optsar_plugin.fileio.SlotFile` made in ``folder`` (the output's) on the first
    :meth:`put`, which has no name, so nothing survives a kill (as the blender's
    :class:`~optsar_plugin.inference.blender.EdgeSpill`).  Its slots hold one piece's largest
    size (``slot_rows`` x ``block`` px of the output's bands); :meth:`get` reads a piece back and
    frees its slot for the next, so the file holds about one tile column of the scene's height
    (the edge being read and the one being written), however many stripes.
    """

    def __init__(self, folder: Optional[str], slot_rows: int, block: int = BLOCK):
        self.slot_rows, self.block = slot_rows, block
        self._file = SlotFile(folder, ".optsar-tile-edges-")
        self.slots = 0  # slots in the file
        self._free: list = []

    def put(self, array: np.ndarray) -> Spilled:
        array = np.ascontiguousarray(array)
        if not self._file.used:
            self._file.slot_bytes = array.shape[0] * self.slot_rows * self.block * array.itemsize
        slot = self._free.pop() if self._free else self.slots
        self._file.write(slot, array)
        self.slots = max(self.slots, slot + 1)
        return Spilled(slot, array.shape, array.dtype)

    def get(self, piece: Spilled) -> np.ndarray:
        """The piece, read back; its slot is free again."""
        out = np.empty(piece.shape, piece.dtype)
        self._file.read_into(piece.slot, out)
        self._free.append(piece.slot)
        return out

    @property
    def used(self) -> bool:
        return self._file.used

    def close(self) -> None:
        self._file.close()


class Spilled:
    """Where :class:`PieceSpill` put a piece: its slot, shape and dtype."""

    __slots__ = ("slot", "shape", "dtype")

    def __init__(self, slot: int, shape, dtype):
        self.slot, self.shape, self.dtype = slot, tuple(shape), np.dtype(dtype)


class _TileColumns:
    """One output raster written in whole GeoTIFF tiles as soon as they are final.

    Finished pixels arrive as blocks (``put``); they are kept per column of tiles
    ("chunk", ``block`` px wide) until ``done(row_end, col_from, col_to)`` says that
    every pixel of the columns ``[col_from, col_to)`` above ``row_end`` is final; then
    each chunk among those columns whose every column is final further down writes its
    complete tile rows in one call.  GDAL thus compresses every tile exactly once, and
    what waits in memory is at most the unfinished tile row (< ``block`` rows) across a
    stripe of windows and the current window row in the chunks still being blended.  A
    chunk cut by a stripe's right edge waits for the next stripe: once it lags more than
    ``spill_rows`` rows (a window's height and a tile's) behind the rows declared final, its
    pieces go to a :class:`PieceSpill` in ``spill_dir``, so that wait does not grow memory with
    the height (None: they stay in memory).  :meth:`close` deletes the file.
    """

    def __init__(self, ds, width: int, height: int, block: int = BLOCK, on_write=None, writes=None,
                 spill_dir: Optional[str] = None, spill_rows: Optional[int] = None):
        self.ds, self.width, self.height, self.block = ds, width, height, block
        self.write = writes.write if writes is not None else _write_now
        self.nchunks = -(-width // block)
        self.pending = [[] for _ in range(self.nchunks)]  # (row0, col offset in chunk, array or Spilled (bands, h, w))
        self.start = [0] * self.nchunks  # first unwritten row of each chunk (a multiple of block)
        self.final = np.zeros(width, np.int64)  # per column: the rows above are final
        self.on_write = on_write
        self.spill_rows = spill_rows
        self.spill = PieceSpill(spill_dir, spill_rows, block) if spill_rows else None

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()

    def put(self, r0: int, c0: int, values: np.ndarray) -> None:
        h, w = values.shape[-2:]
        B = self.block
        for k in range(c0 // B, (c0 + w - 1) // B + 1):
            a, b = max(c0, k * B), min(c0 + w, (k + 1) * B)
            self.pending[k].append((r0, a - k * B, values[:, :, a - c0 : b - c0].copy()))

    def done(self, row_end: int, col_from: int, col_to: int) -> None:
        B = self.block
        self.final[col_from:col_to] = row_end
        for k in range(col_from // B, (col_to - 1) // B + 1):
            c_lo, c_hi = k * B, min((k + 1) * B, self.width)
            final = int(self.final[c_lo:c_hi].min())
            n = final - self.start[k]
            full = n if final >= self.height else (n // B) * B
            if full > 0:
                self._write_rows(k, c_lo, c_hi, full)
            elif self.spill is not None and row_end - final > self.spill_rows:
                self.pending[k] = [(r0, co, self.spill.put(a) if isinstance(a, np.ndarray) else a)
                                   for r0, co, a in self.pending[k]]

    def _write_rows(self, k: int, c_lo: int, c_hi: int, full: int) -> None:
        """Write chunk ``k``'s next ``full`` rows from its pieces; keep what lies below them."""
        from rasterio.windows import Window

        top, pieces = self.start[k], self.pending[k]
        out = np.empty((pieces[0][2].shape[0], full, c_hi - c_lo), pieces[0][2].dtype)
        keep = []
        for r0, co, arr in pieces:
            h = arr.shape[1]
            lo, hi = max(r0, top), min(r0 + h, top + full)
            if hi > lo and not isinstance(arr, np.ndarray):
                arr = self.spill.get(arr)
            if hi > lo:
                out[:, lo - top : hi - top, co : co + arr.shape[2]] = arr[:, lo - r0 : hi - r0]
            if r0 + h > top + full:
                cut = max(0, top + full - r0)
                keep.append((r0 + cut, co, arr[:, cut:] if cut else arr))
        self.pending[k] = keep
        self.write(self.ds, out, Window(c_lo, top, c_hi - c_lo, full))
        if self.on_write is not None:
            self.on_write(out)
        self.start[k] = top + full


class TileWriter:
    """The blender's sink: class codes (uint8), and optionally confidence and probabilities (float32)."""

    def __init__(self, width: int, height: int, classes_ds, confidence_ds=None, probabilities_ds=None,
                 block: int = BLOCK, writes: Optional[BackgroundWrites] = None, spill_dir: Optional[str] = None,
                 spill_rows: Optional[int] = None):
        self.class_counts = np.zeros(256, np.int64)
        self.writes = writes

        def count(codes):
            self.class_counts += np.bincount(codes.ravel(), minlength=256)

        def columns(ds, on_write=None):
            if ds is None:
                return None
            return _TileColumns(ds, width, height, block, on_write=on_write, writes=writes, spill_dir=spill_dir,
                                spill_rows=spill_rows)

        self.outputs = [columns(classes_ds, count)]
        self.confidence = columns(confidence_ds)
        self.probabilities = columns(probabilities_ds)

    def put(self, r0, c0, codes, conf=None, probs=None):
        self.outputs[0].put(r0, c0, codes[None])
        if self.confidence is not None:
            self.confidence.put(r0, c0, conf[None])
        if self.probabilities is not None:
            self.probabilities.put(r0, c0, probs)

    def done(self, row_end: int, col_from: int, col_to: int):
        for w in (self.outputs[0], self.confidence, self.probabilities):
            if w is not None:
                w.done(row_end, col_from, col_to)

    def close(self) -> None:
        """Delete the temporary files of the tiles that waited for a stripe, if any."""
        for w in (self.outputs[0], self.confidence, self.probabilities):
            if w is not None:
                w.close()

    def flush(self) -> None:
        """Wait until every tile handed over has been written (see :class:`BackgroundWrites`)."""
        if self.writes is not None:
            self.writes.flush()


def _closer(ds):
    """An exit callback closing an output dataset: a failed flush (a full disk) is an error unless one is unwinding."""

    def close(exc_type, exc, tb) -> bool:
        if exc_type is None:
            close_written(ds)
        else:
            with gdal_failures():  # the error being raised says what went wrong; GDAL's echo of it is noise
                ds.close()
        return False

    return close


class OutputRasters:
    """The run's output rasters, open for writing on their temporary paths, and the blender's sink.

    ``temps``: ``{"output": path, "confidence": path?, "probabilities": path?}``; ``window_rows``:
    the windows' height.  A tile column that waits longer than a window and a tile for the next
    stripe waits in a :class:`PieceSpill` in the output's folder, deleted by ``stack``.
    """

    def __init__(self, stack, temps: Dict[str, str], crs, transform, width: int, height: int, scheme: ClassScheme,
                 window_rows: int):
        rasterio = require("rasterio", "writing rasters")

        def create(key, count, dtype, nodata, predictor=None):
            if key not in temps:
                return None
            profile = output_profile(transform, crs, width, height, count, dtype, nodata, predictor)
            ds = rasterio.open(temps[key], "w", **profile)
            stack.push(_closer(ds))
            return ds

        self.classes = create("output", 1, "uint8", NODATA)
        self.confidence = create("confidence", 1, "float32", float("nan"), 3)
        self.probabilities = create("probabilities", len(scheme), "float32", float("nan"), 3)
        if self.confidence is not None:
            self.confidence.set_band_description(1, "confidence (max class probability)")
        if self.probabilities is not None:
            for k, c in enumerate(scheme.classes, start=1):
                self.probabilities.set_band_description(k, c.name)
        # the writer thread is shut down (by ``stack``) before the datasets it writes are closed
        self.sink = TileWriter(width, height, self.classes, self.confidence, self.probabilities,
                               writes=BackgroundWrites(stack), spill_dir=os.path.dirname(temps["output"]),
                               spill_rows=window_rows + BLOCK)
        stack.callback(self.sink.close)

    def tag(self, tags: Dict[str, str], description: str) -> None:
        """The same tags on every output; ``description`` names the classification's band."""
        self.sink.flush()
        self.classes.set_band_description(1, description)
        for ds in (self.classes, self.confidence, self.probabilities):
            if ds is not None:
                ds.update_tags(**tags)


def output_tags(meta, inputs: Dict[str, Optional[str]], bands: Dict[str, list], run: Dict, extra=None) -> Dict[str, str]:
    """Tags recording the model, the checkpoint, the inputs (file names and bands) and the run's settings.

    ``inputs``: ``optical``, ``sar``, ``cloud_mask``, ``checkpoint`` paths; ``run``: ``tile``,
    ``overlap``, ``cloud_handling``, ``cloud_fraction`` and optionally ``class_pixels`` ({code: pixels},
    written as ``CLASS_PIXELS`` "code:pixels,..." and ``VALID_PIXELS``); ``extra`` tags are added as given.
    """
    from .. import __version__

    def name(path) -> str:
        return os.path.basename(os.fspath(path)) if path else ""

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    tags = {
        "MODEL": meta.model, "CHECKPOINT": name(inputs.get("checkpoint")), "CHECKPOINT_HASH": meta.content_hash,
        "CHECKPOINT_CREATED": meta.created, "DATE": now.isoformat(), "OPTICAL": name(inputs["optical"]),
        "OPTICAL_BANDS": ",".join(map(str, bands["optical"])), "SAR": name(inputs["sar"]),
        "SAR_BANDS": ",".join(map(str, bands["sar"])), "TILE_SIZE": str(run["tile"]), "OVERLAP": str(run["overlap"]),
        "VERSION": __version__,
    }
    if run.get("tta", "off") != "off":
        tags["TTA"] = run["tta"]
    if run.get("class_pixels") is not None:  # what the map holds, for area tables without reading it again
        tags.update(VALID_PIXELS=str(sum(run["class_pixels"].values())),
                    CLASS_PIXELS=",".join(f"{c}:{n}" for c, n in run["class_pixels"].items()))
    if inputs.get("cloud_mask"):
        tags.update(CLOUD_MASK=name(inputs["cloud_mask"]), CLOUD_HANDLING=run["cloud_handling"],
                    CLOUD_FRACTION=f"{run['cloud_fraction']:.4f}")
    out = {TAG_PREFIX + k: str(v) for k, v in tags.items()}
    out.update(TIFFTAG_SOFTWARE=f"OptSAR Fusion {__version__}", TIFFTAG_DATETIME=now.strftime("%Y:%m:%d %H:%M:%S"))
    out.update({str(k): str(v) for k, v in (extra or {}).items()})
    return out
