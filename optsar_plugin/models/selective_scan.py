"""Selective scan (the S6 recurrence of Mamba), with the ``mamba_ssm`` argument layout.

For batch ``b``, channel ``d`` (in group ``g = d // (D / G)``), state ``n`` and step
``t = 0 .. L-1``::

    dt[d, t]   = softplus(delta[d, t] + delta_bias[d])          (softplus threshold 20)
    h[d, n, t] = exp(dt[d, t] * A[d, n]) * h[d, n, t-1] + dt[d, t] * B[g, n, t] * u[d, t]
    y[d, t]    = sum_n C[g, n, t] * h[d, n, t] + D[d] * u[d, t]

with ``h[., ., -1] = 0`` for every sequence, all arithmetic in float32 (float64 when the
inputs are float64) and the result cast back to ``u``'s dtype.  Shapes: ``u``, ``delta``
``(batch, D, L)``; ``A`` ``(D, N)`` (real); ``B``, ``C`` ``(batch, N, L)`` or
``(batch, G, N, L)`` (``G`` divides ``D``; SS2D uses ``G = 4``, one group per scan
direction); ``D`` and ``delta_bias`` ``(D,)`` or ``None``.  The optional ``z`` gate of
``mamba_ssm`` is not supported (SS2D gates after its output norm, not in the scan).

Which implementation runs
-------------------------
* :func:`selective_scan` uses ``mamba_ssm``'s CUDA ``selective_scan_fn`` when ``u`` is on
  a CUDA device and ``mamba_ssm`` imports; otherwise :func:`selective_scan_torch`.
* :func:`selective_scan_torch` is pure PyTorch and differentiable (a custom autograd
  function whose backward is the reverse-time recurrence, recomputing the states from
  checkpoints instead of storing them).  It is a step loop vectorised over
  (batch, channels, states): the decays ``exp(dt*A)`` and inputs ``dt*u*B`` are computed for a
  block of steps at once into preallocated buffers, then the recurrence runs in place
  (one fused ``addcmul_`` per step) and the output contraction with ``C`` is one batched
  matmul per block, so nothing of size ``(batch, D, L, N)`` is ever materialised.
  ``lanes > 1`` turns it into a chunked parallel scan: the sequence is cut into
  ``lanes`` chunks that are scanned side by side (the chunks become extra batch
  entries), the chunk-boundary states are then chained through the chunk decays
  ``exp(A * sum(dt))``, and the chunks are scanned again from their true initial states.
  That does twice the arithmetic in ``~2 L / lanes`` sequential steps; it is the default
  on GPUs without ``mamba_ssm`` (where a 16 k-step loop would be launch-bound) and
  ``lanes = 1`` is the default on CPU, where the extra arithmetic costs more than the
  per-step overhead it saves.  Measured on one CPU thread at MOSFNet's first stage
  (L = 128 x 128, 4 x 192 channels, N = 16, forward only): this step loop 0.85-1.0 s
  (about the same for blocks of 32-256 steps, 1.3 s without block precomputation); the
  chunked form 1.3 s (4 lanes) to 2.0 s (64-128 lanes); the intra-chunk ``T x T`` decay
  form (SSD style, ``exp(A (S_t - S_s))`` per channel and state) 4.8 s (T = 8) to 26 s
  (T = 32), since its work grows with T; a per-step loop that allocates its tensors 10.9 s.
* :func:`selective_scan_reference` is the straightforward per-step recurrence (for tests).

Timing: every call of :func:`selective_scan` runs inside
``torch.profiler.record_function("selective_scan")``, so its share of a forward pass is
read from a profiler table, e.g.::

    with torch.profiler.profile() as prof:
        model(optical, sar)
    scan = [e for e in prof.key_averages() if e.key == "selective_scan"]

No counters or other module state are kept.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan", "selective_scan_torch", "selective_scan_reference", "mamba_ssm_available"]

# Elements per work buffer (block x batch*lanes x D x N).  On CPU ~1 M floats (4 MB) keeps
# the per-block buffers cache-friendly while still batching the exp/mul/matmul work.
_CPU_BLOCK_ELEMENTS = 1 << 20
_GPU_BLOCK_ELEMENTS = 1 << 25


@functools.lru_cache(maxsize=1)
def _mamba_selective_scan_fn():
    """mamba_ssm's CUDA selective_scan_fn, or None when it cannot be imported."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # ImportError, or a broken CUDA extension raising OSError/RuntimeError
        return None
    return selective_scan_fn


def mamba_ssm_available() -> bool:
    """True when ``mamba_ssm``'s CUDA selective scan can be imported."""
    return _mamba_selective_scan_fn() is not None


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = True,
) -> Tensor:
    """Selective scan ``y`` of shape ``(batch, D, L)`` (see the module docstring).

    On CUDA with ``mamba_ssm`` importable this calls its ``selective_scan_fn``; everywhere
    else the pure-PyTorch :func:`selective_scan_torch`.
    """
    with torch.profiler.record_function("selective_scan"):
        if u.is_cuda:
            fn = _mamba_selective_scan_fn()
            if fn is not None:
                return fn(u, delta, A, B, C, D=D, z=None, delta_bias=delta_bias,
                          delta_softplus=delta_softplus, return_last_state=False)
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)


# --------------------------------------------------------------------------------------
# reference


def selective_scan_reference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = True,
) -> Tensor:
    """The recurrence written out step by step (slow; for tests and small inputs)."""
    dtype_in = u.dtype
    ct = torch.promote_types(u.dtype, torch.float32)
    nb, nd, length = u.shape
    u, delta, A = u.to(ct), delta.to(ct), A.to(ct)
    if delta_bias is not None:
        delta = delta + delta_bias.to(ct)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    Bg = B.to(ct) if B.dim() == 4 else B.to(ct).unsqueeze(1)
    Cg = C.to(ct) if C.dim() == 4 else C.to(ct).unsqueeze(1)
    Bd = Bg.repeat_interleave(nd // Bg.shape[1], dim=1)  # (nb, nd, N, L)
    Cd = Cg.repeat_interleave(nd // Cg.shape[1], dim=1)
    h = u.new_zeros(nb, nd, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bd[..., t]
        ys.append((h * Cd[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + u * D.to(ct)[:, None]
    return y.to(dtype_in)


# --------------------------------------------------------------------------------------
# pure-PyTorch scan


def _check(u, delta, A, B, C, D, delta_bias) -> Tuple[int, int, int, int, int]:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, D, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    nb, nd, length = u.shape
    if A.dim() != 2 or A.shape[0] != nd:
        raise ValueError(f"A must be (D, N) = ({nd}, N); got {tuple(A.shape)}")
    if A.is_complex():
        raise ValueError("complex A is not supported by the PyTorch selective scan")
    n = A.shape[1]
    groups = []
    for name, t in (("B", B), ("C", C)):
        if t.dim() == 3:
            t = t.unsqueeze(1)
        if t.dim() != 4 or t.shape[0] != nb or t.shape[2] != n or t.shape[3] != length or nd % t.shape[1]:
            raise ValueError(f"{name} must be (batch, N, L) or (batch, G, N, L) with G dividing D; got "
                             f"{tuple(t.shape)} for u {tuple(u.shape)}, N={n}")
        groups.append(t.shape[1])
    if groups[0] != groups[1]:
        raise ValueError(f"B and C must have the same number of groups; got {groups[0]} and {groups[1]}")
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and t.shape != (nd,):
            raise ValueError(f"{name} must be ({nd},); got {tuple(t.shape)}")
    return nb, nd, length, n, groups[0]


class _Prepared:
    """Time-major, lane-split views of the scan inputs (float32/64).

    With ``lanes`` chunks of ``T = ceil(L / lanes)`` steps, a sequence (padded at the end
    with dt = 0, which leaves the state unchanged) becomes ``lanes`` independent rows of
    an extended batch ``nb * lanes``.  Arrays: ``dt``, ``dtu`` ``(T, nb*lanes, D)``,
    ``B``, ``C`` ``(T, nb*lanes, G, N)``.
    """

    def __init__(self, u, delta, A, B, C, delta_bias, delta_softplus, lanes):
        ct = torch.promote_types(u.dtype, torch.float32)
        nb, nd, length = u.shape
        self.ct, self.nb, self.nd, self.length, self.lanes = ct, nb, nd, length, lanes
        self.steps = -(-length // lanes)
        self.pad = self.steps * lanes - length
        x = delta.to(ct)
        if delta_bias is not None:
            x = x + delta_bias.to(ct)[:, None]
        self.x = x  # pre-softplus, kept for the backward
        dt = F.softplus(x) if delta_softplus else x
        uc = u.to(ct)
        self.A = A.to(ct)
        self.dt = self._lanes3(dt)
        self.dtu = self._lanes3(dt * uc)
        self.B = self._lanes4(B.to(ct) if B.dim() == 4 else B.to(ct).unsqueeze(1))
        self.C = self._lanes4(C.to(ct) if C.dim() == 4 else C.to(ct).unsqueeze(1))
        self.groups = self.B.shape[2]

    def _lanes3(self, t: Tensor) -> Tensor:  # (nb, X, L) -> (T, nb*lanes, X)
        if self.pad:
            t = F.pad(t, (0, self.pad))
        nb, x = t.shape[:2]
        return t.reshape(nb, x, self.lanes, self.steps).permute(3, 0, 2, 1).reshape(self.steps, nb * self.lanes, x)

    def _lanes4(self, t: Tensor) -> Tensor:  # (nb, G, N, L) -> (T, nb*lanes, G, N)
        if self.pad:
            t = F.pad(t, (0, self.pad))
        nb, g, n = t.shape[:3]
        return (t.reshape(nb, g, n, self.lanes, self.steps).permute(4, 0, 3, 1, 2)
                .reshape(self.steps, nb * self.lanes, g, n))

    def unlanes3(self, t: Tensor) -> Tensor:  # (T, nb*lanes, X) -> (nb, X, L)
        x = t.shape[-1]
        t = t.reshape(self.steps, self.nb, self.lanes, x).permute(1, 3, 2, 0).reshape(self.nb, x, -1)
        return t[..., : self.length]

    def unlanes4(self, t: Tensor) -> Tensor:  # (T, nb*lanes, G, N) -> (nb, G, N, L)
        g, n = t.shape[-2:]
        t = t.reshape(self.steps, self.nb, self.lanes, g, n).permute(1, 3, 4, 2, 0).reshape(self.nb, g, n, -1)
        return t[..., : self.length]

    def lane_decay(self) -> Tensor:
        """exp(A * sum of dt over each lane): (nb, lanes, D, N)."""
        s = self.dt.sum(0).reshape(self.nb, self.lanes, self.nd)
        return torch.exp(s[..., None] * self.A)


def _block_len(p: _Prepared, device: torch.device) -> int:
    budget = _CPU_BLOCK_ELEMENTS if device.type == "cpu" else _GPU_BLOCK_ELEMENTS
    per_step = p.nb * p.lanes * p.nd * p.A.shape[1]
    return max(1, min(p.steps, budget // max(per_step, 1)))


def _forward_core(p: _Prepared, h0: Optional[Tensor], block: int, want_y: bool, save_states: bool):
    """Scan the lanes from ``h0`` (zeros if None).

    Returns ``(y (T, nb*lanes, D) or None, final state (nb*lanes, D, N), block start
    states (n_blocks, nb*lanes, D, N) or None)``.
    """
    steps, rows, nd = p.dt.shape
    g, n = p.groups, p.A.shape[1]
    dg = nd // g
    h = p.dt.new_zeros(rows, nd, n) if h0 is None else h0.clone()
    buf_a = p.dt.new_empty(block, rows, nd, n)
    buf_h = p.dt.new_empty(block, rows, nd, n)
    y = p.dt.new_empty(steps, rows, nd) if want_y else None
    n_blocks = -(-steps // block)
    states = p.dt.new_empty(n_blocks, rows, nd, n) if save_states else None
    for bi in range(n_blocks):
        s = bi * block
        e = min(s + block, steps)
        k = e - s
        a, hb = buf_a[:k], buf_h[:k]
        if save_states:
            states[bi].copy_(h)
        torch.mul(p.dt[s:e].unsqueeze(-1), p.A, out=a)
        a.exp_()
        torch.mul(p.dtu[s:e].view(k, rows, g, dg, 1), p.B[s:e].view(k, rows, g, 1, n), out=hb.view(k, rows, g, dg, n))
        ar, hr = a.unbind(0), hb.unbind(0)
        hr[0].addcmul_(ar[0], h)
        for t in range(1, k):
            hr[t].addcmul_(ar[t], hr[t - 1])
        h.copy_(hr[k - 1])
        if want_y:
            torch.matmul(hb.view(k, rows, g, dg, n), p.C[s:e].view(k, rows, g, n, 1), out=y[s:e].view(k, rows, g, dg, 1))
    return y, h, states


def _backward_core(p: _Prepared, gy: Tensor, states: Optional[Tensor], carry: Optional[Tensor], block: int, full: bool):
    """Reverse-time pass.

    ``gy`` is ``(T, nb*lanes, D)``; ``carry`` (``(nb*lanes, D, N)``, zeros if None) is
    ``exp(dt*A)`` at the step after each lane times the state gradient there.  With
    ``full=False`` only the carry leaving each lane at its first step is returned.  With
    ``full=True`` (``states`` = the forward block start states) returns
    ``(g_dt, g_dtu, g_B, g_C, g_A, carry)`` with the lane layouts of :class:`_Prepared`.
    """
    steps, rows, nd = p.dt.shape
    g, n = p.groups, p.A.shape[1]
    dg = nd // g
    carry = p.dt.new_zeros(rows, nd, n) if carry is None else carry.clone()
    buf_a = p.dt.new_empty(block, rows, nd, n)
    buf_g = p.dt.new_empty(block, rows, nd, n)
    if full:
        buf_h = p.dt.new_empty(block, rows, nd, n)
        g_dt = p.dt.new_empty(steps, rows, nd)
        g_dtu = p.dt.new_empty(steps, rows, nd)
        g_b = p.dt.new_empty(steps, rows, g, n)
        g_c = p.dt.new_empty(steps, rows, g, n)
        g_a = p.dt.new_zeros(nd, n)
    n_blocks = -(-steps // block)
    for bi in range(n_blocks - 1, -1, -1):
        s = bi * block
        e = min(s + block, steps)
        k = e - s
        a, gh = buf_a[:k], buf_g[:k]
        torch.mul(p.dt[s:e].unsqueeze(-1), p.A, out=a)
        a.exp_()
        ar = a.unbind(0)
        # direct contribution of y to the states: gy (x) C
        torch.mul(gy[s:e].view(k, rows, g, dg, 1), p.C[s:e].view(k, rows, g, 1, n), out=gh.view(k, rows, g, dg, n))
        gr = gh.unbind(0)
        gr[k - 1].add_(carry)
        for t in range(k - 2, -1, -1):
            gr[t].addcmul_(ar[t + 1], gr[t + 1])
        torch.mul(ar[0], gr[0], out=carry)
        if not full:
            continue
        # recompute the forward states of this block from its checkpoint
        hb = buf_h[:k]
        h0 = states[bi]
        torch.mul(p.dtu[s:e].view(k, rows, g, dg, 1), p.B[s:e].view(k, rows, g, 1, n), out=hb.view(k, rows, g, dg, n))
        hr = hb.unbind(0)
        hr[0].addcmul_(ar[0], h0)
        for t in range(1, k):
            hr[t].addcmul_(ar[t], hr[t - 1])
        gh5, hb5 = gh.view(k, rows, g, dg, n), hb.view(k, rows, g, dg, n)
        torch.matmul(gy[s:e].view(k, rows, g, 1, dg), hb5, out=g_c[s:e].view(k, rows, g, 1, n))
        torch.matmul(gh5, p.B[s:e].view(k, rows, g, n, 1), out=g_dtu[s:e].view(k, rows, g, dg, 1))
        torch.matmul(p.dtu[s:e].view(k, rows, g, 1, dg), gh5, out=g_b[s:e].view(k, rows, g, 1, n))
        # x = gh * exp(dt A) * h_prev is the gradient w.r.t. (dt * A) of the decay term
        x = a.mul_(gh)
        if k > 1:
            x[1:].mul_(hb[:-1])
        x[0].mul_(h0)
        g_a.add_(torch.einsum("kdn,kd->dn", x.view(k * rows, nd, n), p.dt[s:e].reshape(k * rows, nd)))
        torch.sum(x.mul_(p.A), dim=-1, out=g_dt[s:e])
    if not full:
        return carry
    return g_dt, g_dtu, g_b, g_c, g_a, carry


def _scan_forward(p: _Prepared, block: int, save_states: bool):
    h0 = None
    if p.lanes > 1:
        # chunked form: scan every lane from zero, chain the boundary states, rescan
        _, ends, _ = _forward_core(p, None, block, want_y=False, save_states=False)
        ends = ends.view(p.nb, p.lanes, p.nd, -1)
        decay = p.lane_decay()
        h_in = torch.zeros_like(ends)
        for m in range(1, p.lanes):
            torch.addcmul(ends[:, m - 1], decay[:, m - 1], h_in[:, m - 1], out=h_in[:, m])
        h0 = h_in.view(p.nb * p.lanes, p.nd, -1)
    y, _, states = _forward_core(p, h0, block, want_y=True, save_states=save_states)
    return y, states


def _finish(p: _Prepared, y_lanes: Tensor, u: Tensor, D: Optional[Tensor]) -> Tensor:
    y = p.unlanes3(y_lanes)
    if D is not None:
        y = torch.addcmul(y, u.to(p.ct), D.to(p.ct)[:, None])
    return y.to(u.dtype).contiguous()


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus, lanes):
        p = _Prepared(u, delta, A, B, C, delta_bias, delta_softplus, lanes)
        block = _block_len(p, u.device)
        y_lanes, states = _scan_forward(p, block, save_states=True)
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, states)
        ctx.delta_softplus, ctx.lanes, ctx.block = delta_softplus, lanes, block
        return _finish(p, y_lanes, u, D)

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, D, delta_bias, states = ctx.saved_tensors
        p = _Prepared(u, delta, A, B, C, delta_bias, ctx.delta_softplus, ctx.lanes)
        gy = gy.to(p.ct)
        gyl = p._lanes3(gy)
        carry = None
        if p.lanes > 1:
            local = _backward_core(p, gyl, None, None, ctx.block, full=False).view(p.nb, p.lanes, p.nd, -1)
            decay = p.lane_decay()
            c_in = torch.zeros_like(local)
            for m in range(p.lanes - 1, 0, -1):
                torch.addcmul(local[:, m], decay[:, m], c_in[:, m], out=c_in[:, m - 1])
            carry = c_in.view(p.nb * p.lanes, p.nd, -1)
        g_dt, g_dtu, g_b, g_c, g_a, _ = _backward_core(p, gyl, states, carry, ctx.block, full=True)
        uc = u.to(p.ct)
        dt = F.softplus(p.x) if ctx.delta_softplus else p.x
        g_dtu = p.unlanes3(g_dtu)
        g_dt = p.unlanes3(g_dt) + g_dtu * uc
        g_u = g_dtu * dt
        g_D = None
        if D is not None:
            g_u = g_u + gy * D.to(p.ct)[:, None]
            g_D = (gy * uc).sum((0, 2)).to(D.dtype) if ctx.needs_input_grad[5] else None
        if ctx.delta_softplus:  # d softplus / dx with torch's threshold 20
            g_x = torch.where(p.x > 20, g_dt, g_dt * torch.sigmoid(p.x))
        else:
            g_x = g_dt
        g_bias = g_x.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None and ctx.needs_input_grad[6] else None
        g_b = p.unlanes4(g_b)
        g_c = p.unlanes4(g_c)
        if B.dim() == 3:
            g_b = g_b.squeeze(1)
        if C.dim() == 3:
            g_c = g_c.squeeze(1)
        return (g_u.to(u.dtype), g_x.to(delta.dtype), g_a.to(A.dtype), g_b.to(B.dtype), g_c.to(C.dtype),
                g_D, g_bias, None, None)


def default_lanes(length: int, device: torch.device) -> int:
    """1 on CPU (plain step loop); about sqrt(L) chunks elsewhere (chunked form)."""
    if device.type == "cpu" or length < 64:
        return 1
    return max(1, int(round(math.sqrt(length))))


def selective_scan_torch(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Optional[Tensor] = None,
    delta_bias: Optional[Tensor] = None,
    delta_softplus: bool = True,
    lanes: Optional[int] = None,
) -> Tensor:
    """Pure-PyTorch selective scan (any device, differentiable); see the module docstring.

    ``lanes`` = number of chunks scanned side by side (``None``: :func:`default_lanes`).
    """
    _check(u, delta, A, B, C, D, delta_bias)
    lanes = default_lanes(u.shape[-1], u.device) if lanes is None else max(1, min(int(lanes), u.shape[-1]))
    tensors = (u, delta, A, B, C, D, delta_bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _SelectiveScanFn.apply(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), lanes)
    with torch.no_grad():
        p = _Prepared(u, delta, A, B, C, delta_bias, delta_softplus, lanes)
        y_lanes, _ = _scan_forward(p, _block_len(p, u.device), save_states=False)
        return _finish(p, y_lanes, u, D)
