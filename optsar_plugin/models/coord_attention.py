"""Coordinate attention (Hou, Zhou & Feng, CVPR 2021), as in the authors' ``coordatt.py``.

The map is average-pooled along each axis (``(C, H, 1)`` and ``(C, W, 1)``); both strips go
through one shared 1x1 conv ``C -> mip`` (bias) + BatchNorm + h-swish, are split again, and a
1x1 conv per axis with a sigmoid gives attention along H and along W:
``out = x * a_h * a_w`` with ``mip = max(8, C // reduction)`` and ``reduction = 32``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["CoordAtt"]


class CoordAtt(nn.Module):
    """Coordinate attention over ``channels`` (input and output widths are equal, as the
    output is the input re-weighted)."""

    def __init__(self, channels: int, reduction: int = 32):
        super().__init__()
        mip = max(8, channels // reduction)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.conv_h = nn.Conv2d(mip, channels, kernel_size=1)
        self.conv_w = nn.Conv2d(mip, channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        _, _, h, w = x.shape
        x_h = x.mean(dim=3, keepdim=True)  # (n, c, h, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)  # (n, c, w, 1)
        y = self.act(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = torch.sigmoid(self.conv_h(y_h))  # (n, c, h, 1)
        a_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # (n, c, 1, w)
        return x * a_w * a_h
