"""Segmentation losses shared by the models.

* :func:`cross_entropy` - pixel-wise CE with an ignore index (mean over valid pixels).
* :func:`focal_loss` / :class:`FocalLoss` - the alpha-balanced focal loss of
  Lin et al. (ICCV 2017) in its multi-class (softmax) form, as used by
  SpecSAR-Former, Eq. (9)-(10): ``FL(p_t) = -alpha_t (1 - p_t)^gamma log(p_t)``.
* :func:`inverse_frequency_alpha` - per-class alpha from class pixel counts
  (SpecSAR-Former: "alpha_t ... typically set based on the inverse frequency
  of the classes").

All losses take logits ``(B, K, H, W)`` and an integer target ``(B, H, W)`` of
class indices; pixels equal to ``ignore_index`` contribute nothing. They are
computed in float32 whatever the logits' dtype (safe under autocast). When every
pixel is ignored the result is a zero that still carries a graph (so a training
step on such a tile is a no-op rather than a NaN).
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

AlphaLike = Optional[Union[float, Sequence[float], torch.Tensor]]


def _check_shapes(logits: torch.Tensor, target: torch.Tensor) -> None:
    if logits.dim() < 2:
        raise ValueError(f"logits must be (B, K, ...), got shape {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)} "
            "(expected (B, H, W) for logits (B, K, H, W))"
        )


def _alpha_tensor(alpha: AlphaLike, num_classes: int, device, dtype=torch.float32) -> Optional[torch.Tensor]:
    if alpha is None:
        return None
    a = torch.as_tensor(alpha, dtype=dtype, device=device)
    if a.dim() == 0:
        return a.expand(num_classes)
    if a.shape != (num_classes,):
        raise ValueError(f"alpha must be a scalar or have one value per class ({num_classes}), got {tuple(a.shape)}")
    return a


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = 255,
    weight: AlphaLike = None,
) -> torch.Tensor:
    """Pixel-wise cross entropy, mean over the pixels whose target != ``ignore_index``.

    With ``weight`` (one value per class) each pixel's term is multiplied by its
    class weight and the sum is divided by the number of valid pixels (not by
    the sum of weights as ``F.cross_entropy`` does), so that the scale does not
    depend on the class mix of the batch.
    """
    return focal_loss(logits, target, gamma=0.0, alpha=weight, ignore_index=ignore_index)


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: AlphaLike = None,
    ignore_index: int = 255,
    reduction: str = "mean",
) -> torch.Tensor:
    """alpha-balanced multi-class focal loss, SpecSAR-Former Eq. (9)-(10).

    ``p_t`` is the softmax probability of the true class; the loss per pixel is
    ``-alpha[y] * (1 - p_t)**gamma * log(p_t)``. ``alpha`` is ``None`` (all 1),
    a scalar, or one weight per class. ``reduction``: ``"mean"`` (over valid
    pixels), ``"sum"``, or ``"none"`` (per-pixel map, 0 on ignored pixels).
    With ``gamma=0`` and ``alpha=None`` the mean equals
    ``F.cross_entropy(logits, target, ignore_index=ignore_index)``.
    """
    _check_shapes(logits, target)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    num_classes = logits.shape[1]
    logits = logits.float()
    target = target.long()
    valid = target != ignore_index
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    if bool(((safe_target < 0) | (safe_target >= num_classes)).any()):
        bad = torch.unique(safe_target[(safe_target < 0) | (safe_target >= num_classes)]).tolist()
        raise ValueError(
            f"target holds class indices {bad[:10]} outside 0..{num_classes - 1} (and not the ignore index {ignore_index})"
        )
    logp_t = F.log_softmax(logits, dim=1).gather(1, safe_target.unsqueeze(1)).squeeze(1)
    loss = -logp_t
    if gamma != 0:
        p_t = logp_t.exp()
        loss = loss * (1.0 - p_t).clamp(min=0.0).pow(gamma)
    a = _alpha_tensor(alpha, num_classes, logits.device)
    if a is not None:
        loss = loss * a[safe_target]
    loss = loss * valid
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    if reduction != "mean":
        raise ValueError(f"unknown reduction '{reduction}'")
    return loss.sum() / valid.sum().clamp(min=1)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss` with fixed ``gamma`` and ``alpha`` (a buffer)."""

    def __init__(self, gamma: float = 2.0, alpha: AlphaLike = None, ignore_index: int = 255):
        super().__init__()
        self.gamma = float(gamma)
        self.ignore_index = int(ignore_index)
        self.register_buffer(
            "alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32), persistent=False
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None) -> torch.Tensor:
        idx = self.ignore_index if ignore_index is None else int(ignore_index)
        return focal_loss(logits, target, gamma=self.gamma, alpha=self.alpha, ignore_index=idx)


def inverse_frequency_alpha(class_counts: Sequence[float], normalise: str = "mean", power: float = 1.0) -> list:
    """Per-class alpha proportional to ``(1 / frequency) ** power`` from pixel counts.

    Classes with no pixels get the largest weight among the present classes
    (they cannot contribute to the loss anyway, and an infinite weight would be
    meaningless in a saved configuration). ``normalise="mean"`` scales the
    weights to mean 1 over the classes (the loss keeps the scale of the
    unweighted one for a balanced batch); ``"sum"`` scales them to sum 1;
    ``"none"`` leaves ``1 / frequency``. Returns a plain list (JSON-serialisable,
    suitable for ``model.config``). ``power=0.5`` gives the softer
    inverse-square-root weighting.
    """
    counts = [float(c) for c in class_counts]
    if not counts or any(c < 0 for c in counts):
        raise ValueError("class_counts must be a non-empty sequence of non-negative numbers")
    total = sum(counts)
    if total <= 0:
        raise ValueError("class_counts are all zero")
    inv = [(total / c) ** power if c > 0 else None for c in counts]
    top = max(v for v in inv if v is not None)
    inv = [top if v is None else v for v in inv]
    if normalise == "mean":
        m = sum(inv) / len(inv)
        return [v / m for v in inv]
    if normalise == "sum":
        s = sum(inv)
        return [v / s for v in inv]
    if normalise == "none":
        return inv
    raise ValueError(f"unknown normalise '{normalise}'")
