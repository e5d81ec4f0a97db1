"""Predictors: the network as ``predictor(optical, sar) -> probabilities``, and the adaptive OOM back-off.

A predictor takes float32 arrays (B, optical bands, h, w) and (B, SAR bands, h, w),
normalised with the checkpoint's statistics, and returns class probabilities
(B, classes, h, w) in the checkpoint's class order.  :class:`TorchPredictor` wraps a
network; tests and benchmarks inject plain functions.

:class:`AdaptivePredictor` runs any predictor over a stack of windows in batches.  On
CUDA out-of-memory the batch is halved, then (at batch 1) each window is predicted as
overlapping sub-tiles of half the size, blended the same way, down to 64 px; a warning
says so each time.  Precision bf16/fp16 runs the forward pass under CUDA autocast (on the
CPU only fp32, with a warning: :func:`resolve_precision`).
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import numpy as np

from .. import raster_io
from ..errors import OptsarError
from ..options import MIN_TILE, PRECISIONS, check_choice
from ..progress import NullFeedback
from .blender import blend_weights

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _oom_types():
    """Exception types meaning 'the GPU ran out of memory' - only if torch is already loaded."""
    torch = sys.modules.get("torch")
    if torch is None:
        return ()
    t = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return (t,) if t is not None else ()


def _free_cuda():
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # freeing is best effort
        pass


class AdaptivePredictor:
    """Runs a predictor over a stack of windows in batches, backing off on CUDA out-of-memory.

    On OOM the batch is halved; at batch 1 the largest input edge allowed is halved
    (to a multiple of 32, at least ``min_tile``) and windows larger than that are
    predicted as overlapping sub-tiles blended with :func:`blend_weights`.  The
    reduced settings are kept for the rest of the run.  ``seconds`` accumulates the
    time spent inside the wrapped predictor (the model forward pass).
    """

    def __init__(self, predictor: Predictor, batch_size: int, overlap: int, feedback=None, min_tile: int = MIN_TILE):
        self.predictor = predictor
        self.batch = max(1, int(batch_size))
        self.max_edge = None  # no limit until an OOM at batch 1
        self.overlap = int(overlap)
        self.min_tile = int(min_tile)
        self.feedback = feedback or NullFeedback()
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        n = optical.shape[0]
        out = None
        i = 0
        while i < n:
            k = min(self.batch, n - i)
            try:
                probs = self._forward(optical[i : i + k], sar[i : i + k])
            except _oom_types() as exc:  # noqa: B030 (an empty tuple catches nothing)
                _free_cuda()
                self._back_off(k, optical.shape[-2:], exc)
                continue
            if k == n:
                return probs
            if out is None:
                out = np.empty((n,) + probs.shape[1:], np.float32)
            out[i : i + k] = probs
            i += k
        return out

    def _back_off(self, k: int, shape, exc) -> None:
        h, w = int(shape[0]), int(shape[1])
        edge = max(h, w) if self.max_edge is None else min(self.max_edge, max(h, w))
        if k > 1:
            self.batch = max(1, k // 2)
            self.feedback.warning(
                f"The GPU ran out of memory with a batch of {k} windows of {h} x {w} px; retrying with batch {self.batch}."
            )
            return
        if edge > self.min_tile:
            self.max_edge = max(self.min_tile, (edge // 2) // 32 * 32)
            self.feedback.warning(
                f"The GPU ran out of memory with one {min(h, edge)} x {min(w, edge)} px window; retrying each window as "
                f"{self.max_edge} x {self.max_edge} px sub-tiles (use a smaller TILE_SIZE or precision bf16/fp16 to "
                "avoid this)."
            )
            return
        raise OptsarError(
            f"The GPU ran out of memory even with one {self.min_tile} x {self.min_tile} px window ({exc}). "
            "Close other programs using the GPU, or run on the CPU (DEVICE cpu)."
        )

    def _forward(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        h, w = optical.shape[-2:]
        if self.max_edge is None or (h <= self.max_edge and w <= self.max_edge):
            t0 = time.perf_counter()
            try:
                probs = self.predictor(optical, sar)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
            return np.asarray(probs, dtype=np.float32)
        return self._subtiled(optical, sar)

    def _subtiled(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        """Predict (N, b, H, W) windows as overlapping sub-tiles of at most ``max_edge`` px, blended."""
        n, _, h, w = optical.shape
        edge = self.max_edge
        ov = min(self.overlap, edge // 4)
        th, rows = raster_io.window_starts(h, edge, ov, self.min_tile)
        tw, cols = raster_io.window_starts(w, edge, ov, self.min_tile)
        ph, pw = rows[-1] + th - h, cols[-1] + tw - w
        pad = ((0, 0), (0, 0), (0, ph), (0, pw))
        o = raster_io.pad_reflect(optical, pad) if ph or pw else optical
        s = raster_io.pad_reflect(sar, pad) if ph or pw else sar
        subs_o = np.stack([o[:, :, r : r + th, c : c + tw] for r in rows for c in cols], axis=1)
        subs_s = np.stack([s[:, :, r : r + th, c : c + tw] for r in rows for c in cols], axis=1)
        m = subs_o.shape[1]
        probs = self(subs_o.reshape((n * m,) + subs_o.shape[2:]), subs_s.reshape((n * m,) + subs_s.shape[2:]))
        probs = probs.reshape((n, m) + probs.shape[1:])
        wgt = blend_weights(th, tw)
        acc = np.zeros((n, probs.shape[2], h + ph, w + pw), np.float32)
        wsum = np.zeros((h + ph, w + pw), np.float32)
        k = 0
        for r in rows:
            for c in cols:
                acc[:, :, r : r + th, c : c + tw] += probs[:, k] * wgt
                wsum[r : r + th, c : c + tw] += wgt
                k += 1
        return (acc / wsum)[:, :, :h, :w]


TTA_TRANSFORMS = {  # (quarter turns, then mirror left-right)
    "off": ((0, False),),
    "flips": ((0, False), (0, True), (2, False), (2, True)),  # identity, left-right, 180 degrees, up-down
    "d4": tuple((k, f) for k in range(4) for f in (False, True)),  # the 8 symmetries of the square
}


def _transform(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    a = np.rot90(a, k, axes=(-2, -1))
    return np.ascontiguousarray(a[..., ::-1] if flip else a)


def _undo(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    return np.rot90(a[..., ::-1] if flip else a, -k, axes=(-2, -1))


class TTAPredictor:
    """Test-time augmentation: ``predictor`` on flipped / rotated copies of the windows, probabilities
    mapped back and averaged (``mode``: flips = 4 passes, d4 = 8; the training augmentations are the
    same 8 symmetries).  Costs one forward pass per transform."""

    def __init__(self, predictor: Predictor, mode: str = "d4"):
        self.predictor = predictor
        self.transforms = TTA_TRANSFORMS[mode]

    def __call__(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        total = None
        for k, flip in self.transforms:
            probs = _undo(np.asarray(self.predictor(_transform(optical, k, flip), _transform(sar, k, flip)),
                                     np.float32), k, flip)
            total = probs.copy() if total is None else total + probs
        return total / len(self.transforms)


def with_tta(predictor: Predictor, mode: str) -> Predictor:
    """``predictor`` itself when ``mode`` is off, else wrapped in a :class:`TTAPredictor`."""
    return predictor if mode in (None, "", "off") else TTAPredictor(predictor, mode)


class TorchPredictor:
    """``model(optical, sar) -> logits`` as numpy probabilities (softmax), under inference mode.

    ``precision`` bf16/fp16 uses CUDA autocast; the softmax is computed in fp32.
    """

    def __init__(self, model, device, precision: str = "fp32"):
        import torch

        self.torch = torch
        self.model = model.to(device).eval()
        self.device = device
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]

    def __call__(self, optical: np.ndarray, sar: np.ndarray) -> np.ndarray:
        torch = self.torch
        o = torch.from_numpy(np.ascontiguousarray(optical)).to(self.device, non_blocking=True)
        s = torch.from_numpy(np.ascontiguousarray(sar)).to(self.device, non_blocking=True)
        with torch.inference_mode():
            if self.dtype is not None:
                with torch.autocast(device_type=self.device.type, dtype=self.dtype):
                    logits = self.model(o, s)
            else:
                logits = self.model(o, s)
            probs = torch.softmax(logits.float(), dim=1)
        return probs.cpu().numpy()


def resolve_precision(precision: str, device, feedback) -> str:
    precision = check_choice(precision, PRECISIONS, "precision", default="fp32")
    if precision != "fp32" and getattr(device, "type", str(device)) != "cuda":
        feedback.warning(f"Precision {precision} needs a CUDA GPU; using fp32 on the CPU.")
        return "fp32"
    if precision == "bf16":
        import torch

        if not torch.cuda.is_bf16_supported():
            feedback.warning("This GPU does not support bf16; using fp16 instead.")
            return "fp16"
    return precision
