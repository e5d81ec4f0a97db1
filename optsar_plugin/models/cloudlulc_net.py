"""CloudLULC-Net: cloud-robust heterogeneous SAR-optical fusion for LULC mapping.

Xu, Xue, Yu, Pan, Liang, Wang, "Heterogeneous SAR-optical fusion for near-real-time
land use and land cover mapping under cloud contamination: a novel framework and
global benchmark dataset" (arXiv 2606.17713; code announced at RSIIPAC/CloudLULC but
not released).

What the paper states (abstract, README, figure captions) and this module follows:

* ORM (optical reliability modulation) learns feature-level optical reliability from
  the cloud-contaminated *optical* representation and suppresses unreliable optical
  responses (cloud, shadow, haze) while keeping clear-sky cues.
* HIAA (heterogeneous information adaptive aggregation): ``num_blocks`` (N) stacked
  blocks, each a SHOI (spatial higher-order interaction, long-range cross-modal spatial
  dependencies) followed by a CHOI (channel higher-order interaction, recalibrating
  spectral/structural channel responses); ``order`` (O) is the maximum interaction
  order. N and O are the paper's sensitivity-analysis hyper-parameters (its Fig. 13).
* USMT (unified semantic mapping transformer) maps the fused SAR-optical tokens into a
  LULC-oriented semantic latent space (task-oriented, not cloud-free reconstruction).
* Semantic-anchor-guided optimisation: a label-derived anchor regularises the
  intermediate semantic latent during training only (zero inference cost).
* Paper data: Sentinel-2 L2A, 12 bands (B1-B9, B8A, B11, B12), Sentinel-1 VV+VH,
  6 classes, 512 x 512 tiles.

The paper's equations, layer widths, N/O values, token resolution and the exact anchor
loss are not available (no full text, no code), so the design below is a documented
reconstruction. Comments cite the source of each step: "[SHIP]" = the high-order
interaction template the SHOI/CHOI names and wording come from (Zheng et al., CVPR
2024, "Probing synergistic high-order interaction in infrared and visible image
fusion", which the paper cites), "[spec 4.3.k]" = step k of the project's architecture
reconstruction (ARCH_SPEC.md section 4.3). No paper equation numbers are quoted
because none are available; where the paper is silent the choice and the reason are
stated here:

1. Stems (per modality, separate weights): Conv3x3/2 -> BN -> GELU -> Conv3x3/2 ->
   BN -> GELU, giving ``channels`` (C) maps at 1/4 resolution. Chosen because the
   interaction blocks work at a single resolution (as in SHIP) and 1/4 keeps the FFT
   and 3x3 convolutions affordable at 512 x 512.
2. ORM: r = sigmoid(Conv1x1(GELU(DWConv3x3(GELU(Conv1x1(F_o)))))) in (0, 1)^(C x h x w)
   and F_o <- r * F_o. Computed from the optical features alone (the README says the
   reliability is learned "from the cloud-contaminated optical representations"); no
   cloud mask is input or supervised (none is mentioned). The reliability is per
   channel and pixel ("feature-level"); :meth:`CloudLULCNet.reliability` returns its
   channel mean upsampled to the input size as a one-band diagnostic.
3. HIAA x N, each = SHOI(O) then CHOI(O) [SHIP highOrderInteraction]:
   SHOI: a = LN(irfft2(rfft2(F_o) * rfft2(F_s))) (a global circular cross-modal
   interaction; FFT in fp32), f = a * F_s (1st order); for k = 2..O:
   f <- LN(Conv3x3-ReLU-Conv3x3(f)), g <- Conv3x3-ReLU-Conv3x3(g) (g starts at F_s),
   f <- f * g (k-th order); out F_o + f and the refreshed SAR stream g.
   CHOI: x = [F_o, F_s]; w = softmax_c(MLP(GAP(x))); f = x * 2C*w (1st order); for
   k = 2..O: f <- Conv3x3-ReLU-Conv3x3(f), w <- softmax_c(MLP_k(w)), f <- f * 2C*w;
   out F_o + Conv1x1(2C -> C)(f). Departure from SHIP: the softmax weights are
   multiplied by the channel count 2C so that the re-weighting keeps the mean feature
   magnitude; SHIP's plain softmax shrinks the features by 1/(2C) per order, i.e.
   ~4e-9 at O = 4 and 2C = 128, which underflows in half precision and starves the
   early refinement convolutions of gradient. SHIP's invertible post-block is replaced
   by the 1x1 projection (the paper gives no such block; it is a fusion-image detail).
   "Progressive" aggregation: the N block outputs are concatenated and projected by a
   1x1 conv N*C -> C (as SHIP does with its three blocks).
4. USMT: Conv4x4/4 patch embedding C -> ``embed_dim`` (D) on the 1/4 fused map, so one
   token per 16 x 16 input pixels (32 x 32 = 1024 tokens at 512 x 512), plus a learned
   absolute position embedding defined on the 512-tile grid and bicubically resampled
   for other tile sizes; ``depth`` pre-norm ViT blocks (``heads`` heads, MLP ratio
   ``mlp_ratio``, GELU; timm's ``Block``) and a final LayerNorm give the semantic latent
   Z (B, D, H/16, W/16). Token stride 16 keeps global self-attention affordable.
5. Decoder (``decoder="full"``, the default): Z bilinearly upsampled to 1/4,
   concatenated with the fused 1/4 map, Conv3x3 -> BN -> GELU (C); bilinear x2,
   concatenated with the first (1/2-resolution) layer of both stems, Conv3x3 -> BN ->
   GELU (C/2); bilinear x2 to the input size, concatenated with a per-pixel embedding of
   each modality's bands (two Conv1x1 -> BN -> GELU layers, C/2 each), Conv1x1 -> BN ->
   GELU (C) and Conv1x1 to the classes. The optical skips are multiplied by the ORM
   reliability (its channel mean, bilinearly upsampled), so unreliable optics are
   suppressed at every resolution, as at 1/4. Why: the paper is silent on the decoder;
   the stems of step 1 go to 1/4 only to keep the interaction blocks affordable (SHIP
   itself works at full resolution), and a head that predicts at 1/4 cannot draw what
   Sentinel-2 shows at 10 m (on the real Sen1Floods11 chip 38 % of the water pixels lie
   within 2 px of an edge; true labels seen at 1/4 score water IoU 0.865, a per-pixel
   classifier of the same bands 0.83). Measured with the small variant on that chip
   (docs/training_notebook.md): water IoU 0.528 / 0.688 -> 0.596 / 0.707 on the development
   splits, 0.773 -> 0.809 on the assessed half. ``decoder="quarter"`` is the earlier head:
   Conv3x3 -> BN -> GELU -> Conv1x1 at 1/4, bilinear x4 (checkpoints written before the
   option existed rebuild it).
   Context dropout (``context_dropout``, default 0.5; training only): the context that reaches
   the full-resolution layer (the 1/2-resolution features, upsampled) is zeroed, pixel by
   pixel with probability p (the kept ones scaled by 1/(1 - p)), **where the optics are
   clear**: where the ORM reliability is at least ``CLEAR_SKY`` (0.9) times its median over
   the batch; elsewhere (clouds, shadows) the context is always kept. The per-pixel
   embeddings thus learn to classify clear pixels on their own, while cloudy pixels keep
   relying on the context that fills them. Evaluation always uses the context everywhere.
   Why: on the real (cloud-free) chip the context learnt on one half of the scene misled the
   map of the other half; a whole-tile dropout (the first version of the option) fixed much
   of that (mean water IoU over four halves x two seeds 0.719 -> 0.738) but cost 0.15-0.18
   mIoU under the clouds of two synthetic scenes of three. The clear-sky gate keeps most of
   the gain (0.735) and, over five synthetic scenes, nothing is lost under clouds (mIoU
   under cloud 0.658 -> 0.665, overall 0.734 -> 0.752; docs/training_notebook.md). The
   gate is relative to the batch because the ORM's reliability has no fixed scale (it is
   learnt, without a cloud mask); 0.9 sits between the clear and the cloudy pixels'
   reliabilities measured on the synthetic scene (clear: 10 % below 0.48-0.53; cloudy:
   median 0.35-0.38). ``0`` turns the dropout off (checkpoints keep their value; models
   from before the option get 0).
6. Semantic anchor (training only, used by :meth:`CloudLULCNet.loss`, never by
   ``forward``/``forward_train``): the one-hot label (ignored pixels all-zero) is
   encoded with the same 16-pixel patchification (Conv4x4/4 K -> C, GELU, Conv4x4/4
   C -> D, LayerNorm) into anchors A (B, D, H/16, W/16). Loss (the paper gives no
   formula): L = CE(logits, y) + anchor_weight * (L_align + L_rec) with
   L_align = mean over tokens holding at least one labelled pixel of 1 - cos(Z, sg(A))
   (the latent is pulled towards the label anchor; the stop-gradient keeps the anchor a
   pure label code so the image branch cannot collapse it), and
   L_rec = CE(PixelShuffle16(Conv1x1(A)), y), a "label -> anchor -> label"
   reconstruction that keeps A discriminative and is the anchor encoder's only
   gradient source. anchor_weight defaults to 0.5 (middle of the usual 0.1-1 range for
   auxiliary terms; the paper's value is unknown).

Defaults C = 64, N = 3, O = 4 (SHIP's three 4th-order blocks), D = 256, depth 6,
8 heads. Inputs must have H and W multiples of 16 (the project guarantees multiples of
32); any band counts work.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import LayerNorm2d, resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block

from ..errors import OptsarError
from .losses import cross_entropy

TOKEN_STRIDE = 16  # input pixels per USMT token side: stem /4 then patch embedding /4
PAPER_TILE = 512  # CloudLULC-Set tile size; the position embedding is defined for it
DECODERS = ("full", "quarter")  # decoder resolution (module docstring, step 5)
CLEAR_SKY = 0.9  # context dropout's gate: reliability >= CLEAR_SKY x batch median (module docstring, step 5)
CONTEXT_DROPOUT = 0.5  # the default context dropout (module docstring, step 5)


def _conv_bn_gelu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.GELU(),
    )


def _refine(cin: int, cout: int) -> nn.Sequential:
    """Conv3x3-ReLU-Conv3x3, SHIP's per-order 'reflash' unit."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1))


class Stem(nn.Module):
    """Modality stem: two stride-2 Conv3x3-BN-GELU layers -> C maps at 1/4 resolution [spec 4.3.1]."""

    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn_gelu(in_channels, channels // 2, 2), _conv_bn_gelu(channels // 2, channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ORM(nn.Module):
    """Optical reliability modulation: F_o <- r * F_o with r learned from F_o [spec 4.3.2].

    Returns the modulated optical features and the reliability r in (0, 1), shaped
    like F_o (per channel and pixel).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.estimator = nn.Sequential(
            nn.Conv2d(channels, channels, 1),
            nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels),
            nn.GELU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, f_opt: torch.Tensor):
        r = torch.sigmoid(self.estimator(f_opt))  # reliability r in (0,1)
        return r * f_opt, r  # reliability-aware optical feature


def _spectral_interaction(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """irfft2(rfft2(x) * rfft2(y)) per channel, in fp32 whatever the autocast state.

    cuFFT half precision only supports power-of-two sizes and bf16 not at all, so the
    FFT leaves autocast; 'ortho' scaling keeps magnitudes independent of the tile size
    (the LayerNorm that follows removes the scale anyway).
    """
    h, w = x.shape[-2:]
    with torch.autocast(device_type=x.device.type, enabled=False):
        xf = torch.fft.rfft2(x.float(), norm="ortho")
        yf = torch.fft.rfft2(y.float(), norm="ortho")
        out = torch.fft.irfft2(xf * yf, s=(h, w), norm="ortho")
    return out.to(x.dtype)


class SHOI(nn.Module):
    """Spatial higher-order interaction up to order ``order`` [SHIP spatialInteraction, spec 4.3.3].

    order 1 is the global (Fourier) cross-modal product alone; each further order adds a
    refinement of the fused stream multiplied by a refreshed SAR stream.
    """

    def __init__(self, channels: int, order: int):
        super().__init__()
        self.order = order
        self.norm0 = LayerNorm2d(channels)
        self.fused_refine = nn.ModuleList(_refine(channels, channels) for _ in range(order - 1))
        self.fused_norm = nn.ModuleList(LayerNorm2d(channels) for _ in range(order - 1))
        self.sar_refine = nn.ModuleList(_refine(channels, channels) for _ in range(order - 1))

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor):
        a = self.norm0(_spectral_interaction(f_opt, f_sar))  # global cross-modal interaction
        f = a * f_sar  # 1st order
        g = f_sar
        for refine_f, norm, refine_g in zip(self.fused_refine, self.fused_norm, self.sar_refine):
            f = norm(refine_f(f))
            g = refine_g(g)
            f = f * g  # next order
        return f_opt + f, g


class CHOI(nn.Module):
    """Channel higher-order interaction up to order ``order`` [SHIP channelInteraction, spec 4.3.3].

    Channel weights are a softmax over the 2C concatenated channels scaled by 2C (mean
    weight 1; see the module docstring for why this departs from SHIP).
    """

    def __init__(self, channels: int, order: int):
        super().__init__()
        c2 = 2 * channels
        self.order = order
        self.scale = float(c2)

        def mlp():
            return nn.Sequential(nn.Conv2d(c2, channels, 1), nn.ReLU(), nn.Conv2d(channels, c2, 1))

        self.attn0 = mlp()
        self.attn_refine = nn.ModuleList(mlp() for _ in range(order - 1))
        self.fused_refine = nn.ModuleList(_refine(c2, c2) for _ in range(order - 1))
        self.proj = nn.Conv2d(c2, channels, 1)

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor):
        x = torch.cat([f_opt, f_sar], dim=1)
        w = self.attn0(F.adaptive_avg_pool2d(x, 1)).softmax(dim=1)  # channel statistics
        f = x * (w * self.scale)  # 1st order
        for refine_f, attn in zip(self.fused_refine, self.attn_refine):
            f = refine_f(f)
            w = attn(w).softmax(dim=1)
            f = f * (w * self.scale)  # next order
        return f_opt + self.proj(f), f_sar


class HIAA(nn.Module):
    """One heterogeneous information adaptive aggregation block: SHOI then CHOI."""

    def __init__(self, channels: int, order: int):
        super().__init__()
        self.shoi = SHOI(channels, order)
        self.choi = CHOI(channels, order)

    def forward(self, f_opt: torch.Tensor, f_sar: torch.Tensor):
        f_opt, f_sar = self.shoi(f_opt, f_sar)
        return self.choi(f_opt, f_sar)


class USMT(nn.Module):
    """Unified semantic mapping transformer: fused 1/4 map -> semantic latent Z at 1/16 [spec 4.3.4]."""

    def __init__(self, channels: int, embed_dim: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.patch_embed = nn.Conv2d(channels, embed_dim, kernel_size=4, stride=4)
        self.grid = PAPER_TILE // TOKEN_STRIDE
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid * self.grid, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(fused)
        b, d, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # tokens (B, h*w, D)
        pos = self.pos_embed
        if (h, w) != (self.grid, self.grid):
            pos = resample_abs_pos_embed(pos, [h, w], [self.grid, self.grid], num_prefix_tokens=0)
        x = x + pos
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(b, d, h, w)  # semantic latent Z


def _pointwise(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.GELU())


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class QuarterDecoder(nn.Sequential):
    """The earlier head (``decoder="quarter"``): Conv3x3-BN-GELU and Conv1x1 at 1/4, bilinear to the input size.

    A ``Sequential`` so that checkpoints written before the option load unchanged (``decoder.0``, ``decoder.1``).
    """

    def __init__(self, channels: int, embed_dim: int, num_classes: int):
        super().__init__(_conv_bn_gelu(embed_dim + channels, channels, 1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, context: torch.Tensor, stems, inputs, reliability: torch.Tensor) -> torch.Tensor:
        return _up(super().forward(context), inputs[0])


class FullResolutionDecoder(nn.Module):
    """Context at 1/4 -> 1/2 (+ both stems' first layer) -> full resolution (+ per-pixel band embeddings).

    The paper is silent on the decoder; see step 5 of the module docstring for the choice and the
    measurements behind it.  The optical skips are scaled by the ORM reliability ``r`` (channel mean).
    """

    def __init__(self, optical_bands: int, sar_bands: int, channels: int, embed_dim: int, num_classes: int,
                 context_dropout: float = 0.0):
        super().__init__()
        c, h = channels, channels // 2
        self.context_dropout = float(context_dropout)
        self.quarter = _conv_bn_gelu(embed_dim + c, c, 1)
        self.at_half = _conv_bn_gelu(c + 2 * h, h, 1)  # + optical and SAR stem layer 1 (C/2 each)
        self.optical_pixels = nn.Sequential(_pointwise(optical_bands, h), _pointwise(h, h))
        self.sar_pixels = nn.Sequential(_pointwise(sar_bands, h), _pointwise(h, h))
        self.full = _pointwise(3 * h, c)
        self.classifier = nn.Conv2d(c, num_classes, 1)

    def drop_context(self, context: torch.Tensor, reliability: torch.Tensor) -> torch.Tensor:
        """Training only: zero the context of clear-sky pixels with probability p; cloudy pixels keep it."""
        if not self.training or self.context_dropout == 0:
            return context
        r = reliability.detach()
        p = self.context_dropout * (r >= CLEAR_SKY * r.median()).to(context.dtype)  # clear optics only
        keep = torch.rand_like(r) >= p
        return torch.where(keep, context / (1 - p), torch.zeros_like(context))

    def forward(self, context: torch.Tensor, stems, inputs, reliability: torch.Tensor) -> torch.Tensor:
        (o_half, s_half), (optical, sar) = stems, inputs
        x = _up(self.quarter(context), o_half)
        x = self.at_half(torch.cat([x, o_half * _up(reliability, o_half), s_half], dim=1))
        r = _up(reliability, optical)
        x = self.drop_context(_up(x, optical), r)
        o_pix = self.optical_pixels(optical) * r
        return self.classifier(self.full(torch.cat([x, o_pix, self.sar_pixels(sar)], dim=1)))


class SemanticAnchor(nn.Module):
    """Label -> anchor encoder and anchor -> label reconstruction head (training only) [spec 4.3.6]."""

    def __init__(self, num_classes: int, channels: int, embed_dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.encoder = nn.Sequential(
            nn.Conv2d(num_classes, channels, 4, stride=4),
            nn.GELU(),
            nn.Conv2d(channels, embed_dim, 4, stride=4),
            LayerNorm2d(embed_dim),
        )
        self.reconstruct = nn.Sequential(
            nn.Conv2d(embed_dim, num_classes * TOKEN_STRIDE * TOKEN_STRIDE, 1),
            nn.PixelShuffle(TOKEN_STRIDE),
        )

    def forward(self, target: torch.Tensor, ignore_index: int):
        valid = target != ignore_index
        onehot = F.one_hot(torch.where(valid, target, 0), self.num_classes)
        onehot = (onehot * valid.unsqueeze(-1)).permute(0, 3, 1, 2).to(self.encoder[0].weight.dtype)
        anchor = self.encoder(onehot)  # A (B, D, H/16, W/16)
        return anchor, self.reconstruct(anchor)


def _masked_ce(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over labelled pixels; 0 (with a graph) when nothing is labelled."""
    n_valid = (target != ignore_index).sum()
    total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
    return total / n_valid.clamp(min=1)


class CloudLULCNet(nn.Module):
    """CloudLULC-Net (see the module docstring for the design and its sources)."""

    def __init__(
        self,
        optical_bands: int = 12,
        sar_bands: int = 2,
        num_classes: int = 6,
        channels: int = 64,
        num_blocks: int = 3,
        order: int = 4,
        embed_dim: int = 256,
        depth: int = 6,
        heads: int = 8,
        mlp_ratio: float = 4.0,
        anchor_weight: float = 0.5,
        decoder: str = "full",
        context_dropout: float = CONTEXT_DROPOUT,
    ):
        super().__init__()
        self._config = dict(
            optical_bands=int(optical_bands),
            sar_bands=int(sar_bands),
            num_classes=int(num_classes),
            channels=int(channels),
            num_blocks=int(num_blocks),
            order=int(order),
            embed_dim=int(embed_dim),
            depth=int(depth),
            heads=int(heads),
            mlp_ratio=float(mlp_ratio),
            anchor_weight=float(anchor_weight),
            decoder=str(decoder),
            context_dropout=float(context_dropout),
        )
        if self._config["decoder"] not in DECODERS:
            raise OptsarError(f"CloudLULC-Net 'decoder' must be one of {', '.join(DECODERS)}, got {decoder!r}.")
        c = self._config
        self.optical_bands, self.sar_bands, self.num_classes = c["optical_bands"], c["sar_bands"], c["num_classes"]
        self.anchor_weight = c["anchor_weight"]
        self.optical_stem = Stem(c["optical_bands"], c["channels"])
        self.sar_stem = Stem(c["sar_bands"], c["channels"])
        self.orm = ORM(c["channels"])
        self.hiaa = nn.ModuleList(HIAA(c["channels"], c["order"]) for _ in range(c["num_blocks"]))
        self.aggregate = nn.Conv2d(c["num_blocks"] * c["channels"], c["channels"], 1)  # progressive aggregation
        self.usmt = USMT(c["channels"], c["embed_dim"], c["depth"], c["heads"], c["mlp_ratio"])
        if c["decoder"] == "full":
            self.decoder = FullResolutionDecoder(c["optical_bands"], c["sar_bands"], c["channels"], c["embed_dim"],
                                                 c["num_classes"], c["context_dropout"])
        else:
            self.decoder = QuarterDecoder(c["channels"], c["embed_dim"], c["num_classes"])
        self.anchor = SemanticAnchor(c["num_classes"], c["channels"], c["embed_dim"])  # training only
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    @property
    def config(self) -> Dict:
        return dict(self._config)

    # -- pieces ------------------------------------------------------------------------
    def _check(self, optical: torch.Tensor, sar: torch.Tensor) -> None:
        if optical.ndim != 4 or sar.ndim != 4:
            raise OptsarError(f"CloudLULC-Net expects (B, bands, H, W) inputs, got {tuple(optical.shape)} and {tuple(sar.shape)}.")
        if optical.shape[1] != self.optical_bands or sar.shape[1] != self.sar_bands:
            raise OptsarError(
                f"CloudLULC-Net was built for {self.optical_bands} optical and {self.sar_bands} SAR bands, "
                f"got {optical.shape[1]} and {sar.shape[1]}."
            )
        if optical.shape[-2:] != sar.shape[-2:]:
            raise OptsarError(f"Optical and SAR tiles differ in size: {tuple(optical.shape[-2:])} vs {tuple(sar.shape[-2:])}.")
        h, w = optical.shape[-2:]
        if h % TOKEN_STRIDE or w % TOKEN_STRIDE or h < 2 * TOKEN_STRIDE or w < 2 * TOKEN_STRIDE:
            raise OptsarError(f"CloudLULC-Net needs tile sides that are multiples of {TOKEN_STRIDE} (>= 32), got {h} x {w}.")

    def _features(self, optical: torch.Tensor, sar: torch.Tensor):
        self._check(optical, sar)
        o_half, s_half = self.optical_stem.body[0](optical), self.sar_stem.body[0](sar)  # 1/2 resolution
        f_opt, r = self.orm(self.optical_stem.body[1](o_half))
        f_sar = self.sar_stem.body[1](s_half)
        outs = []
        for block in self.hiaa:
            f_opt, f_sar = block(f_opt, f_sar)
            outs.append(f_opt)
        fused = self.aggregate(torch.cat(outs, dim=1))
        z = self.usmt(fused)
        logits = self.decoder(torch.cat([_up(z, fused), fused], dim=1), (o_half, s_half), (optical, sar), r.mean(dim=1, keepdim=True))
        return logits, z, r

    # -- contract ----------------------------------------------------------------------
    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        return self._features(optical, sar)[0]

    def forward_train(self, optical: torch.Tensor, sar: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Logits plus the semantic latent Z and the ORM reliability (1/4 resolution)."""
        logits, z, r = self._features(optical, sar)
        return {"logits": logits, "latent": z, "reliability": r}

    def loss(self, outputs: Dict[str, torch.Tensor], target: torch.Tensor, ignore_index: int = 255,
             class_weights=None) -> torch.Tensor:
        """CE + anchor_weight * (alignment of Z with the label anchor + anchor reconstruction CE).

        ``class_weights`` (one per class, training's class balancing) weight the segmentation CE only.
        """
        logits, z = outputs["logits"], outputs["latent"]
        if target.shape != logits.shape[:1] + logits.shape[2:]:
            raise OptsarError(f"Label tile {tuple(target.shape)} does not match the prediction {tuple(logits.shape)}.")
        target = target.long()
        labelled = target != ignore_index
        if bool(((target < 0) | (target >= self.num_classes))[labelled].any()):
            raise OptsarError(
                f"Label values must be class indices 0-{self.num_classes - 1} or {ignore_index} (ignored); "
                f"found {sorted(set(target[labelled].unique().tolist()) - set(range(self.num_classes)))[:5]}."
            )
        if class_weights is None:
            ce = _masked_ce(logits, target, ignore_index)
        else:
            ce = cross_entropy(logits, target, ignore_index=ignore_index, weight=class_weights)
        if self.anchor_weight == 0:
            return ce
        anchor, recon = self.anchor(target, ignore_index)
        rec = _masked_ce(recon, target, ignore_index)
        labelled = F.avg_pool2d(labelled.float().unsqueeze(1), TOKEN_STRIDE).squeeze(1) > 0  # tokens with labels
        cos = F.cosine_similarity(z.float(), anchor.detach().float(), dim=1)  # (B, h, w)
        align = ((1.0 - cos) * labelled).sum() / labelled.sum().clamp(min=1)
        return ce + self.anchor_weight * (align + rec)

    @torch.no_grad()
    def reliability(self, optical: torch.Tensor, sar: Optional[torch.Tensor] = None, reduce: Optional[str] = "mean") -> torch.Tensor:
        """ORM reliability upsampled to the input size, values in (0, 1); low = unreliable optics.

        ``reduce="mean"`` (default) averages the per-channel reliability into one band
        (B, 1, H, W); ``reduce=None`` returns all C channels. ``sar`` is accepted for a
        uniform call signature; the ORM looks at the optical features only.
        """
        if sar is None:
            sar = optical.new_zeros((optical.shape[0], self.sar_bands) + tuple(optical.shape[-2:]))
        self._check(optical, sar)
        _, r = self.orm(self.optical_stem(optical))
        if reduce == "mean":
            r = r.mean(dim=1, keepdim=True)
        elif reduce is not None:
            raise ValueError(f"reduce must be 'mean' or None, got {reduce!r}")
        return F.interpolate(r.float(), size=optical.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


_OPTIONS = {
    "channels": int,
    "num_blocks": int,
    "order": int,
    "embed_dim": int,
    "depth": int,
    "heads": int,
    "mlp_ratio": float,
    "anchor_weight": float,
    "decoder": str,
    "context_dropout": float,
}


def build(optical_bands: int, sar_bands: int, num_classes: int, **options) -> CloudLULCNet:
    """Build CloudLULC-Net; ``options`` are the keys of ``_OPTIONS`` (see the module docstring)."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise OptsarError(f"Unknown CloudLULC-Net option(s) {', '.join(unknown)}; known: {', '.join(_OPTIONS)}.")
    kw = {}
    for key, value in options.items():
        try:
            kw[key] = _OPTIONS[key](value)
        except (TypeError, ValueError):
            raise OptsarError(f"CloudLULC-Net option '{key}' must be a number, got {value!r}.") from None
    ch = kw.get("channels", 64)
    d, heads = kw.get("embed_dim", 256), kw.get("heads", 8)
    if ch < 2 or ch % 2:
        raise OptsarError(f"CloudLULC-Net 'channels' must be an even number >= 2, got {ch}.")
    if kw.get("num_blocks", 3) < 1 or kw.get("order", 4) < 1 or kw.get("depth", 6) < 0:
        raise OptsarError("CloudLULC-Net needs num_blocks >= 1, order >= 1 and depth >= 0.")
    if heads < 1 or d % heads:
        raise OptsarError(f"CloudLULC-Net 'embed_dim' ({d}) must be a multiple of 'heads' ({heads}).")
    if kw.get("anchor_weight", 0.5) < 0:
        raise OptsarError("CloudLULC-Net 'anchor_weight' must be >= 0.")
    if not 0.0 <= kw.get("context_dropout", 0.0) < 1.0:
        raise OptsarError("CloudLULC-Net 'context_dropout' must be >= 0 and < 1.")
    return CloudLULCNet(optical_bands=optical_bands, sar_bands=sar_bands, num_classes=num_classes, **kw)
