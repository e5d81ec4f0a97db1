"""UPerNet decoder (Xiao et al., ECCV 2018) as mmsegmentation's ``UPerHead``, and its auxiliary ``FCNHead``.

``UPerHead(in_channels, channels, num_classes)`` on four maps at strides 4, 8, 16, 32:

* PPM on the last map: for each pool scale (1, 2, 3, 6) adaptive average pool -> 1x1
  ConvModule -> bilinear resize back; concat with the map -> 3x3 ConvModule ("bottleneck").
* FPN: 1x1 lateral ConvModules on the first three maps, top-down addition of the
  bilinearly upsampled coarser level, 3x3 ConvModule on each of the first three levels.
* All four levels resized to stride 4, concatenated, 3x3 ConvModule ("fpn_bottleneck"),
  Dropout2d(0.1), 1x1 conv to the classes.  Output at stride 4 (the caller resizes).

ConvModule = conv (no bias) + BatchNorm + ReLU, kaiming-normal (fan_out) init as mmcv's;
the classifier conv is N(0, 0.01) with zero bias as mmseg's ``BaseDecodeHead``;
``align_corners=False`` throughout.  mmseg's default width is 512 channels.

One deliberate difference from mmseg: a pool-scale-1 branch sees one value per channel
when the batch has a single image, where BatchNorm has no batch statistics and PyTorch
raises; in that case (training mode, batch of one) the branch normalises with its running
statistics instead, so training with a batch (or a last batch) of one works.
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvModule", "UPerHead", "FCNHead"]


class ConvModule(nn.Sequential):
    """conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 1):
        conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        super().__init__(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _PoolBranch(nn.Module):
    def __init__(self, scale: int, cin: int, cout: int):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv(F.adaptive_avg_pool2d(x, self.scale))
        if self.training and y.shape[0] * y.shape[2] * y.shape[3] == 1:
            bn = self.bn  # one value per channel: no batch statistics, use the running ones
            y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            y = self.bn(y)
        return F.relu(y, inplace=True)


def _resize(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        in_channels = list(in_channels)
        self.psp_modules = nn.ModuleList(_PoolBranch(s, in_channels[-1], channels) for s in pool_scales)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def psp_forward(self, x: Tensor) -> Tensor:
        outs = [x] + [_resize(m(x), x.shape[2:]) for m in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))

    def forward(self, feats: List[Tensor]) -> Tensor:
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)] + [laterals[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [_resize(o, size) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, dim=1))))


class FCNHead(nn.Module):
    """mmseg's auxiliary FCN head as used with UPerNet: one 3x3 ConvModule, Dropout2d(0.1), 1x1 conv."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.conv = ConvModule(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_seg(self.dropout(self.conv(x)))
