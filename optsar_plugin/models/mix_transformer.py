"""Mix Transformer (MiT) building blocks of SegFormer (Xie et al., NeurIPS 2021).

Written from the SegFormer paper and the layer definitions summarised in
``ARCH_SPEC.md`` section 1.4 (NVlabs ``mix_transformer.py``); shared by the
SpecSAR-Former encoder and usable for any SegFormer-style model.

* :class:`OverlapPatchEmbed` - overlapped patch embedding / merging: ``Conv2d``
  with kernel 7 stride 4 (stage 1) or kernel 3 stride 2 (stages 2-4), padding
  ``kernel // 2``, followed by LayerNorm. For any input size the token grid is
  ``floor((H + 2p - k) / s) + 1``; 510 and 512 both give 128, 64, 32, 16.
* :class:`EfficientSelfAttention` - multi-head attention whose keys and values
  come from a sequence shortened by a strided convolution (sequence reduction,
  PVT/SegFormer; SpecSAR-Former Eq. (1)-(2)). ``context`` lets the same layer
  attend to another token sequence (cross attention).
* :class:`MixFFN` - Linear -> depth-wise 3x3 conv -> GELU -> Linear.
* :class:`MiTBlock` - the plain pre-norm MiT block (attention + Mix-FFN).
* :func:`init_mit_weights` - SegFormer's initialisation.

All modules work on tokens ``(B, N, C)`` with the grid size ``(H, W)`` passed
alongside, as in SegFormer.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import nn

#: LayerNorm epsilon of the MiT transformer blocks (``partial(nn.LayerNorm, eps=1e-6)`` in SegFormer).
MIT_LN_EPS = 1e-6


def tokens_to_map(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(B, H*W, C)`` tokens -> ``(B, C, H, W)`` feature map."""
    b, n, c = x.shape
    return x.transpose(1, 2).reshape(b, c, height, width)


def map_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` feature map -> ``(B, H*W, C)`` tokens."""
    return x.flatten(2).transpose(1, 2)


class OverlapPatchEmbed(nn.Module):
    """Overlapped patch embedding (stage 1: k7 s4) or merging (stages 2-4: k3 s2) + LayerNorm."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 7, stride: int = 4):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)  # SegFormer uses the default eps here

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        _, _, h, w = x.shape
        return self.norm(map_to_tokens(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention with sequence reduction (SpecSAR-Former Eq. (1)-(2), PVT/SegFormer).

    ``q = Linear(C, C)(x)``; keys/values come from ``context`` (``x`` itself for
    self-attention): when ``sr_ratio > 1`` the context grid is shortened by a
    ``Conv2d(C, C, k=sr, s=sr)`` (the paper's Reshape(N/R, C*R) + Linear(C*R, C)
    with R = sr^2) and layer-normalised, then ``kv = Linear(C, 2C)``. Scale is
    ``head_dim ** -0.5``, softmax over the keys, output ``Linear(C, C)``.

    ``norm_context_always`` adds the LayerNorm even when ``sr_ratio == 1``
    (MiT itself omits it; SpecSAR-Former's cross attention describes the
    LayerNorm as part of the module, see ``specsar_former.ModalCrossAttention``).

    The attention itself uses ``F.scaled_dot_product_attention`` (fused kernels
    on GPU, same result as the explicit softmax product). Note for FLOP
    counting: ``torch.utils.flop_counter`` does not count the CPU SDPA kernel
    unless given a mapping; see :func:`sdpa_cpu_flop_mapping`.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int = 1,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        norm_context_always: bool = False,
    ):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)  # Eq. (1)-(2)
        if sr_ratio > 1 or norm_context_always:
            self.norm = nn.LayerNorm(dim, eps=MIT_LN_EPS)

    def forward(self, x: torch.Tensor, height: int, width: int, context: Optional[torch.Tensor] = None) -> torch.Tensor:
        b, n, c = x.shape
        ctx = x if context is None else context
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        if self.sr_ratio > 1:
            ctx = map_to_tokens(self.sr(tokens_to_map(ctx, height, width)))
        if hasattr(self, "norm"):
            ctx = self.norm(ctx)
        kv = self.kv(ctx).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        out = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.attn_drop if self.training else 0.0, scale=self.scale
        )
        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class MixFFN(nn.Module):
    """Mix-FFN (SpecSAR-Former Eq. (4)): Linear -> depth-wise Conv 3x3 -> GELU -> Linear.

    The residual ``+ x_in`` of Eq. (4) is added by the enclosing block.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1, groups=hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.fc1(x)
        x = map_to_tokens(self.dwconv(tokens_to_map(x, height, width)))
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))


class MiTBlock(nn.Module):
    """Plain MiT block: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MixFFN(LN(x)))``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        sr_ratio: int = 1,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=MIT_LN_EPS)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, attn_drop=attn_drop, proj_drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=MIT_LN_EPS)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


def init_mit_weights(module: nn.Module) -> None:
    """SegFormer's initialisation (apply with ``model.apply``).

    Linear: truncated normal std 0.02, bias 0; LayerNorm: weight 1, bias 0;
    Conv2d: normal(0, sqrt(2 / fan_out)) with fan_out = k*k*out/groups, bias 0.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        module.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of one attention call: 2 * (QK^T + AV) multiply-accumulates."""
    b, h, s_q, d_q = query_shape
    _, _, s_k, _ = key_shape
    d_v = value_shape[-1]
    return 2 * b * h * s_q * s_k * d_q + 2 * b * h * s_q * s_k * d_v


def sdpa_cpu_flop_mapping() -> dict:
    """``custom_mapping`` for ``FlopCounterMode`` so that CPU SDPA calls are counted.

    ``FlopCounterMode`` knows the CUDA SDPA kernels but not
    ``aten._scaled_dot_product_flash_attention_for_cpu``; pass
    ``FlopCounterMode(custom_mapping=sdpa_cpu_flop_mapping())`` when counting on CPU.
    """
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}
