"""Training data: the scene reader, the spatial-block split, tile sampling and normalisation statistics.

* **Reading** reuses the classify engine's window reader
  (:func:`optsar_plugin.raster_io.read_window` on the optical raster and on the SAR /
  cloud mask wrapped in a :class:`~rasterio.vrt.WarpedVRT` on the optical grid), so
  training tiles are prepared exactly as inference windows are.  When the selected
  bands of the whole scene fit in ``memory_limit`` bytes they are read once and
  tiles are sliced from memory; otherwise every tile is read (and warped) from disk.
* **Split**: the optical grid is cut into square blocks of ``block_tiles`` x
  ``tile_size`` pixels (default 2 tiles, so a block holds 2 x 2 tiles).  Blocks
  holding labels are shuffled with the seed and taken one by one until the
  held-out blocks hold ``validation_fraction`` of the labelled pixels; of 64 such
  draws the one whose validation part holds the most classes (then the fraction
  closest to the target) wins.  Neighbouring pixels are strongly correlated, so a
  random-pixel split would report an inflated accuracy; whole blocks avoid that.
  A tile may cross a block edge (it then sees the neighbour's imagery), but it is
  only ever scored on the labels of its own split: the other split's labels are
  masked to 255 in it.
* **Sampling**: every training tile contains a labelled training pixel chosen by
  first drawing a class with probability proportional to its labelled pixel count
  raised to ``class_power`` (0.5 by default: rare classes are seen more often than
  their share, without the noise of full balancing; 1: every labelled pixel equally
  likely, when the loss weights the classes; 0: every class equally likely - see
  :func:`optsar_plugin.training.recipes.class_balance`) and then one of its pixels
  uniformly; the tile is placed at a uniformly random offset around that pixel,
  inside the raster.  At most :data:`MAX_POINTS_PER_CLASS` pixels per class are kept
  as candidates.
* **Validation tiles** cover each held-out block with non-overlapping tile cells;
  each cell is predicted in a tile-sized window around it (shifted inside the
  raster at the edges) and only the cell's pixels are scored, so every held-out
  pixel counts once.
* **Normalisation statistics** (:func:`optsar_plugin.normalisation.compute_stats`,
  robust median/IQR per band, SAR in dB) come from up to 200 000 valid pixels of up
  to 64 random training tiles (pixels in held-out blocks are excluded); optical
  pixels under the cloud mask are excluded from the optical statistics.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import normalisation, raster_io
from ..classes import NODATA
from ..errors import OptsarError

MAX_POINTS_PER_CLASS = 200_000
CLASS_POWER = 0.5  # a class is drawn with probability proportional to (its labelled pixels) ** CLASS_POWER
MIN_BLOCKS = 10  # labelled validation-split blocks wanted (choose_block)
MIN_BLOCK = 64
STATS_TILES = 64
STATS_PIXELS = 200_000
DEFAULT_MEMORY_LIMIT = 1 << 30


class SceneSource:
    """Optical, SAR (warped to the optical grid) and optional cloud mask, read as raw windows.

    ``read(row, col, h, w)`` -> ``(optical (bo, h, w), sar (bs, h, w), cloud (h, w) bool or None)``,
    float32 with NaN for invalid values (the :mod:`optsar_plugin.raster_io` conventions).
    Use as a context manager.
    """

    def __init__(self, optical: str, sar: str, optical_bands=None, sar_bands=None, cloud_mask: Optional[str] = None,
                 memory_limit: int = DEFAULT_MEMORY_LIMIT):
        self._stack = ExitStack()
        try:
            self.optical_ds = self._stack.enter_context(raster_io.open_raster(optical, raster_io.OPTICAL))
            self.sar_ds = self._stack.enter_context(raster_io.open_raster(sar, raster_io.SAR))
            raster_io.require_crs(self.optical_ds, raster_io.OPTICAL, self.sar_ds, raster_io.SAR)
            raster_io.require_crs(self.sar_ds, raster_io.SAR, self.optical_ds, raster_io.OPTICAL)
            self.obands = raster_io.select_bands(self.optical_ds, optical_bands, raster_io.OPTICAL)
            self.sbands = raster_io.select_bands(self.sar_ds, sar_bands, raster_io.SAR)
            self.height, self.width = self.optical_ds.height, self.optical_ds.width
            full = raster_io.Region(0, 0, self.height, self.width)
            raster_io.check_overlap(self.optical_ds, self.sar_ds, full, raster_io.SAR)
            self.sar_src = self._stack.enter_context(raster_io.aligned(self.sar_ds, self.optical_ds, "bilinear"))
            self.cloud_src = None
            if cloud_mask:
                cds = self._stack.enter_context(raster_io.open_raster(cloud_mask, raster_io.CLOUD))
                raster_io.require_crs(cds, raster_io.CLOUD, self.optical_ds, raster_io.OPTICAL)
                raster_io.check_overlap(self.optical_ds, cds, full, raster_io.CLOUD)
                self.cloud_src = self._stack.enter_context(raster_io.aligned(cds, self.optical_ds, "nearest"))
            need = 4 * (len(self.obands) + len(self.sbands)) * self.height * self.width
            self.in_memory = need <= int(memory_limit)
            self._o = self._s = self._c = None
            if self.in_memory:
                self._o, self._s, self._c = self._read_disk(0, 0, self.height, self.width)
        except BaseException:
            self._stack.close()
            raise

    @property
    def descriptions_complete(self) -> Tuple[bool, bool]:
        """Whether every selected optical / SAR band has a description (a real band name)."""
        return (all(raster_io.band_descriptions(self.optical_ds, self.obands)),
                all(raster_io.band_descriptions(self.sar_ds, self.sbands)))

    def band_names(self) -> Tuple[List[str], List[str]]:
        """Band descriptions where the rasters have them, else 'B<n>' / 'SAR<n>' (n = band number)."""
        od = raster_io.band_descriptions(self.optical_ds, self.obands)
        sd = raster_io.band_descriptions(self.sar_ds, self.sbands)
        return ([d or f"B{b}" for d, b in zip(od, self.obands)], [d or f"SAR{b}" for d, b in zip(sd, self.sbands)])

    def _read_disk(self, row, col, h, w):
        o = raster_io.read_window(self.optical_ds, self.obands, row, col, h, w)
        s = raster_io.read_window(self.sar_src, self.sbands, row, col, h, w)
        c = raster_io.read_cloud(self.cloud_src, row, col, h, w) if self.cloud_src is not None else None
        return o, s, c

    def read(self, row: int, col: int, h: int, w: int):
        if self.in_memory:
            sl = (slice(row, row + h), slice(col, col + w))
            return (self._o[(slice(None),) + sl].copy(), self._s[(slice(None),) + sl].copy(),
                    None if self._c is None else self._c[sl].copy())
        return self._read_disk(row, col, h, w)

    def invalid_mask(self) -> Optional[np.ndarray]:
        """(H, W) bool, True where all optical or all SAR bands are invalid; None unless in memory."""
        if not self.in_memory:
            return None
        return raster_io.all_invalid(self._o) | raster_io.all_invalid(self._s)

    @property
    def has_cloud_mask(self) -> bool:
        return self._c is not None or self.cloud_src is not None

    def close(self):
        self._stack.close()
        self._o = self._s = self._c = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------------------------------------
# the spatial-block split
# ------------------------------------------------------------------------------------------
@dataclass
class Split:
    block: int  # block edge in pixels
    val_blocks: np.ndarray  # (n_block_rows, n_block_cols) bool
    labelled_blocks: np.ndarray  # (n_block_rows, n_block_cols) bool
    train_counts: np.ndarray  # (K,) labelled training pixels per class
    val_counts: np.ndarray  # (K,)

    def is_val(self, row: int, col: int, h: int, w: int) -> np.ndarray:
        """(h, w) bool: which pixels of the window lie in held-out blocks."""
        rr = (np.arange(row, row + h) // self.block).clip(0, self.val_blocks.shape[0] - 1)
        cc = (np.arange(col, col + w) // self.block).clip(0, self.val_blocks.shape[1] - 1)
        return self.val_blocks[rr[:, None], cc[None, :]]

    @property
    def n_val_blocks(self) -> int:
        return int(self.val_blocks.sum())

    @property
    def n_train_blocks(self) -> int:
        return int((self.labelled_blocks & ~self.val_blocks).sum())


def _block_counts(index: np.ndarray, block: int, k: int) -> np.ndarray:
    """(n_br, n_bc, K) labelled pixels per block and class."""
    H, W = index.shape
    nbr, nbc = math.ceil(H / block), math.ceil(W / block)
    out = np.zeros((nbr, nbc, k), np.int64)
    for br in range(nbr):
        strip = index[br * block : (br + 1) * block]
        lab = strip != NODATA
        if not lab.any():
            continue
        rows, cols = np.nonzero(lab)
        key = (cols // block) * k + strip[rows, cols].astype(np.int64)
        out[br] = np.bincount(key, minlength=nbc * k).reshape(nbc, k)
    return out


def choose_block(index: np.ndarray, tile: int, min_blocks: int = MIN_BLOCKS) -> int:
    """Validation block edge: 2 tiles where that gives ``min_blocks`` labelled blocks, else smaller (>= 64 px).

    Candidates are 2 x tile, tile, then halving down to 64 px (multiples of 32); the first
    with at least ``min_blocks`` labelled blocks wins, else the one with the most.
    """
    sizes, b = [2 * int(tile)], int(tile)
    while b >= MIN_BLOCK:
        sizes.append(b)
        b = (b // 2) // 32 * 32
    one_class = np.where(index != NODATA, 0, NODATA).astype(np.uint8)
    best, best_n = sizes[0], -1
    for size in sizes:
        n = int((_block_counts(one_class, size, 1)[..., 0] > 0).sum())
        if n >= min_blocks:
            return size
        if n > best_n:
            best, best_n = size, n
    return best


def spatial_split(index: np.ndarray, num_classes: int, tile: int, fraction: float, seed: int,
                  block_tiles: int = 2, block: Optional[int] = None) -> Split:
    """Hold out whole blocks (``block`` px, default ``block_tiles * tile``) holding ~``fraction`` of the labels."""
    block = int(block) if block else int(block_tiles) * int(tile)
    counts = _block_counts(index, block, num_classes)
    per_block = counts.sum(-1)
    labelled = per_block > 0
    val = np.zeros_like(labelled)
    total = counts.sum(axis=(0, 1))
    if fraction <= 0:
        return Split(block, val, labelled, total, np.zeros_like(total))
    cand = np.argwhere(labelled)
    if len(cand) < 2:
        raise OptsarError(
            f"All labelled pixels lie in one spatial block of {block} x {block} px, so no spatially separate "
            "validation set can be held out. Add reference data elsewhere or set VALIDATION_FRACTION to 0."
        )
    rng = np.random.default_rng(seed)
    target = fraction * per_block.sum()
    best, best_key = None, None
    for _ in range(64):
        order = cand[rng.permutation(len(cand))]
        chosen, got = [], 0
        for r, c in order[:-1]:  # always leave at least one block for training
            chosen.append((r, c))
            got += per_block[r, c]
            if got >= target:
                break
        vc = sum(counts[r, c] for r, c in chosen)
        tc = total - vc
        key = (int(((vc > 0) & (tc > 0)).sum()), -abs(got / per_block.sum() - fraction))
        if best_key is None or key > best_key:
            best, best_key = chosen, key
    for r, c in best:
        val[r, c] = True
    vc = counts[val].sum(0)
    return Split(block, val, labelled, total - vc, vc)


# ------------------------------------------------------------------------------------------
# tiles
# ------------------------------------------------------------------------------------------
class TileSampler:
    """Training tile origins around labelled training pixels (see the module docstring)."""

    def __init__(self, index: np.ndarray, split: Split, tile: int, rng: np.random.Generator,
                 class_power: float = CLASS_POWER):
        self.H, self.W = index.shape
        self.tile = int(tile)
        self.rng = rng
        self.points: List[Tuple[np.ndarray, np.ndarray]] = []
        k = len(split.train_counts)
        rows_by_class = [[] for _ in range(k)]
        cols_by_class = [[] for _ in range(k)]
        step = 1024
        for r0 in range(0, self.H, step):
            strip = index[r0 : r0 + step]
            rr, cc = np.nonzero(strip != NODATA)
            if rr.size == 0:
                continue
            rr = rr + r0
            keep = ~split.val_blocks[(rr // split.block), (cc // split.block)]
            rr, cc = rr[keep], cc[keep]
            cls = index[rr, cc]
            for c in np.unique(cls):
                sel = cls == c
                rows_by_class[c].append(rr[sel].astype(np.int32))
                cols_by_class[c].append(cc[sel].astype(np.int32))
        weights = []
        for c in range(k):
            if rows_by_class[c]:
                r = np.concatenate(rows_by_class[c])
                cc_ = np.concatenate(cols_by_class[c])
                if r.size > MAX_POINTS_PER_CLASS:
                    pick = rng.choice(r.size, MAX_POINTS_PER_CLASS, replace=False)
                    r, cc_ = r[pick], cc_[pick]
                self.points.append((r, cc_))
                weights.append(float(r.size) ** class_power)
            else:
                self.points.append((np.zeros(0, np.int32), np.zeros(0, np.int32)))
                weights.append(0.0)
        w = np.asarray(weights, np.float64)
        if w.sum() <= 0:
            raise OptsarError("No labelled pixel is left for training after holding out the validation blocks.")
        self.class_p = w / w.sum()

    def origin_around(self, r: int, c: int) -> Tuple[int, int]:
        t = self.tile
        r0 = int(np.clip(r - self.rng.integers(0, t), 0, self.H - t))
        c0 = int(np.clip(c - self.rng.integers(0, t), 0, self.W - t))
        return r0, c0

    def sample(self) -> Tuple[int, int]:
        k = int(self.rng.choice(len(self.class_p), p=self.class_p))
        rows, cols = self.points[k]
        i = int(self.rng.integers(0, rows.size))
        return self.origin_around(int(rows[i]), int(cols[i]))


def validation_cells(split: Split, H: int, W: int, tile: int, index: np.ndarray) -> List[Tuple[int, int, int, int, int, int]]:
    """``(win_row, win_col, cell_row, cell_col, cell_h, cell_w)`` for every held-out cell holding labels.

    Cells tile each held-out block (at most ``tile`` px, never crossing the block edge);
    each is predicted in a tile-sized window centred on it where the raster allows.
    """
    out = []
    t, b = int(tile), split.block
    step = min(t, b)
    for br, bc in np.argwhere(split.val_blocks):
        r_end, c_end = min(H, (br + 1) * b), min(W, (bc + 1) * b)
        for r in range(br * b, r_end, step):
            for c in range(bc * b, c_end, step):
                h, w = min(step, r_end - r), min(step, c_end - c)
                if not (index[r : r + h, c : c + w] != NODATA).any():
                    continue
                wr = int(np.clip(r - (t - h) // 2, 0, max(0, H - t)))
                wc = int(np.clip(c - (t - w) // 2, 0, max(0, W - t)))
                out.append((wr, wc, r, c, h, w))
    return out


def training_tiles_per_epoch(split: Split, H: int, W: int, tile: int) -> int:
    """Tiles that would cover the labelled training blocks once (at least 1)."""
    area = 0
    b = split.block
    for br, bc in np.argwhere(split.labelled_blocks & ~split.val_blocks):
        area += (min(H, (br + 1) * b) - br * b) * (min(W, (bc + 1) * b) - bc * b)
    return max(1, int(round(area / float(tile * tile))))


# ------------------------------------------------------------------------------------------
# normalisation statistics
# ------------------------------------------------------------------------------------------
def compute_statistics(source: SceneSource, sampler: TileSampler, split: Split, rng: np.random.Generator,
                       n_tiles: int = STATS_TILES, feedback=None) -> Tuple[dict, dict]:
    """Robust per-band statistics of the training area for the optical and SAR inputs, in physical units
    (reflectance, dB) detected from the rasters (:func:`optsar_plugin.normalisation.raster_units`)."""
    t = sampler.tile
    opt, sar = [], []
    for _ in range(int(n_tiles)):
        r0, c0 = sampler.sample()
        o, s, cloud = source.read(r0, c0, t, t)
        train_px = ~split.is_val(r0, c0, t, t)
        ok_o = train_px & ~raster_io.all_invalid(o)
        if cloud is not None:
            ok_o &= ~cloud
        ok_s = train_px & ~raster_io.all_invalid(s)
        opt.append(o[:, ok_o])
        sar.append(s[:, ok_s])
    o = np.concatenate(opt, axis=1)
    s = np.concatenate(sar, axis=1)
    if o.shape[1] == 0:
        raise OptsarError("The optical raster has no valid (cloud-free) pixel in the training tiles.")
    if s.shape[1] == 0:
        raise OptsarError("The SAR raster has no valid pixel in the training tiles (check its nodata value and extent).")
    if o.shape[1] > STATS_PIXELS:
        o = o[:, rng.choice(o.shape[1], STATS_PIXELS, replace=False)]
    if s.shape[1] > STATS_PIXELS:
        s = s[:, rng.choice(s.shape[1], STATS_PIXELS, replace=False)]
    ou = normalisation.raster_units(source.optical_ds, source.obands, o, "optical")
    su = normalisation.raster_units(source.sar_ds, source.sbands, s, "sar")
    if ou.get("hint") and feedback is not None:
        feedback.warning(f"Optical raster '{source.optical_ds.name}': {ou['hint']}.")
    return normalisation.compute_stats(o, "optical", units=ou), normalisation.compute_stats(s, "sar", units=su)


def stats_shift(stats: dict, new: dict) -> float:
    """Largest |difference of centres| in units of the old scale (used to warn when fine-tuning)."""
    if ("units" in stats) != ("units" in new):  # raw values vs physical units: not comparable
        return 0.0
    a = np.asarray(stats["center"], float)
    b = np.asarray(new["center"], float)
    if a.shape != b.shape or bool(stats.get("to_db")) != bool(new.get("to_db")):
        return float("inf")
    return float(np.max(np.abs(a - b) / np.asarray(stats["scale"], float)))


def band_list(values: Optional[Sequence]) -> Optional[List[int]]:
    if values is None:
        return None
    out = [int(v) for v in values]
    return out or None
