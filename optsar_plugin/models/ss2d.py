"""SS2D: VMamba's 2-D selective scan ("v0" form, the one fusion papers build on).

A channel-first map ``x`` of shape ``(B, D, H, W)`` (``D`` = d_inner) is read as four
token sequences of length ``L = H*W`` (cross-scan):

* k = 0: row-major (index ``h*W + w``), k = 1: column-major (``w*H + h``),
* k = 2, 3: the same two, reversed.

Each direction has its own projections (``x_proj_weight`` gives per-token ``dt`` (rank R),
``B`` and ``C`` (N each); ``dt_projs_weight`` lifts ``dt`` to D channels), its own ``A`` and
``D``; the four sequences go through one selective scan with B/C grouped per direction
(:func:`optsar_plugin.models.selective_scan.selective_scan`), and the outputs are
mapped back to row-major order and summed (cross-merge).

Parameter names, shapes and initialisation follow VMamba's ``SS2Dv0`` / ``mamba_init``
(``x_proj_weight (K, R+2N, D)``, ``dt_projs_weight (K, D, R)``, ``dt_projs_bias (K, D)``,
``A_logs (K*D, N)``, ``Ds (K*D)``): A = -exp(A_logs) with rows log(1..N) (S4D-real), D = 1,
dt bias = softplus^-1 of dt ~ logU(1e-3, 1e-1) floored at 1e-4, dt weight ~ U(+-R^-0.5 *
dt_scale), x_proj like ``nn.Linear``.  The input projection, depthwise conv, output norm
and gating around the scan are left to the caller (MOSFNet's FFM arranges them as its
Eq. (3)); ``SS2D`` is only the "SS2D operation" itself.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .selective_scan import selective_scan

__all__ = ["SS2D", "cross_scan", "cross_merge"]


def cross_scan(x: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed."""
    b, d, h, w = x.shape
    hw = torch.stack([x.reshape(b, d, h * w), x.transpose(2, 3).reshape(b, d, h * w)], dim=1)
    return torch.cat([hw, hw.flip(-1)], dim=1)


def cross_merge(ys: Tensor, h: int, w: int) -> Tensor:
    """(B, 4, D, H*W) in the four scan orders -> (B, D, H, W), summed in row-major order."""
    b, _, d, length = ys.shape
    inv = ys[:, 2:4].flip(-1)
    rows = ys[:, 0] + inv[:, 0]
    cols = ys[:, 1] + inv[:, 1]  # column-major order: index w*H + h
    cols = cols.reshape(b, d, w, h).transpose(2, 3)
    return rows.reshape(b, d, h, w) + cols


class SS2D(nn.Module):
    """Four-direction 2-D selective scan over a ``(B, d_inner, H, W)`` map (see module docstring).

    Args:
        d_inner: channels of the map (VMamba: ``ssm_ratio * d_model``).
        d_state: N, states per channel (VMamba v0 default 16).
        dt_rank: R, rank of the dt projection (VMamba "auto": ``ceil(d_model / 16)``).
    """

    K = 4

    def __init__(self, d_inner: int, d_state: int = 16, dt_rank: int = 8, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4, dt_scale: float = 1.0):
        super().__init__()
        k, d, n, r = self.K, d_inner, d_state, dt_rank
        self.d_inner, self.d_state, self.dt_rank = d, n, r
        bound = 1.0 / math.sqrt(d)  # nn.Linear(d, r + 2n) default init
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d).uniform_(-bound, bound))
        std = r ** -0.5 * dt_scale
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d, r).uniform_(-std, std))
        dt = torch.exp(torch.rand(k, d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        self.dt_projs_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        a = torch.arange(1, n + 1, dtype=torch.float32).repeat(k * d, 1)
        self.A_logs = nn.Parameter(torch.log(a))
        self.Ds = nn.Parameter(torch.ones(k * d))
        for p in (self.A_logs, self.Ds):
            p._no_weight_decay = True  # VMamba/Mamba convention, read by optimiser set-ups that honour it

    def forward(self, x: Tensor) -> Tensor:
        b, d, h, w = x.shape
        k, n, r = self.K, self.d_state, self.dt_rank
        length = h * w
        xs = cross_scan(x)  # (b, k, d, l)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, bs, cs = torch.split(x_dbl, [r, n, n], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        ys = selective_scan(
            xs.reshape(b, k * d, length),
            dts.reshape(b, k * d, length),
            -torch.exp(self.A_logs.float()),
            bs.contiguous(),
            cs.contiguous(),
            self.Ds.float(),
            self.dt_projs_bias.float().reshape(-1),
            True,
        )
        return cross_merge(ys.reshape(b, k, d, length), h, w)

    def extra_repr(self) -> str:
        return f"d_inner={self.d_inner}, d_state={self.d_state}, dt_rank={self.dt_rank}, directions={self.K}"
