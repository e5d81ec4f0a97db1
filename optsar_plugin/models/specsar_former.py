"""SpecSAR-Former (Yu, Li, Liu, Zhu, Dong, Li; arXiv 2410.03962; journal version "LULC-Former").

Reconstruction from the paper text (``shared/papers/SpecSAR-Former.md``); the
authors' code was not available. Equation numbers refer to the paper.

Architecture (paper section IV, "split-fusion"):

* Stage 1: each modality gets its own overlapped patch embedding, a 7x7
  stride-4 convolution (+ LayerNorm), to ``3/4 C_1`` (multispectral) and
  ``1/4 C_1`` (SAR) channels (IV-B-1).
* Each stage runs ``depths[i]`` :class:`DMEM` blocks on the two token
  sequences: efficient self-attention with sequence reduction per branch
  (Eq. (1)-(2)), then SAR-to-Spectral and Spectral-to-SAR cross attention
  (Eq. (3)), then a Mix-FFN per branch (Eq. (4)).
* At the end of a stage an :class:`MMAM` fuses the two branches into one
  ``C_i``-channel map (Eq. (5)-(7)). That fused map is (a) the stage's feature
  for the decoder ("the fused multi-level features are fed into the decoder")
  and (b) the input of the next stage's overlapped patch merging (3x3 stride-2
  convolution ``C_i -> C_{i+1}`` + LayerNorm), whose output is split 3/4 : 1/4
  into the two branches of the next stage (IV-A: "fused using an MMAM,
  followed by an overlapped patch merging module. Subsequently, the features
  processed are split according to a 3/4 and 1/4 ratio").
* :class:`AllMLPDecoder` (Eq. (8)) on the four fused maps; logits at 1/4 are
  bilinearly resized to the input size.
* Loss: alpha-balanced focal loss (Eq. (9)-(10)), :mod:`.losses`.

Widths, depths, heads and reduction ratios are MiT-B2's (the paper's Table III
labels the model "Proposed (MiT-B2)"): ``C = 64, 128, 320, 512``, depths
``3, 4, 6, 3``, heads ``1, 2, 5, 8``, sr ratios ``8, 4, 2, 1``, MLP ratio 4,
drop-path 0.1. The 3/4 : 1/4 split is a split of the channels (the MMAM text
gives the inputs as ``3/4 C`` and ``1/4 C`` channels): multispectral
``48, 96, 240, 384``, SAR ``16, 32, 80, 128``.

Choices where the paper is silent (all can be changed through options):

* Head counts: both branches and both cross attentions keep MiT-B2's head
  counts (1, 2, 5, 8), so every width divides evenly (head dim 48 / 16); keeping
  head dim 64 would need fractional head counts for the 3/4 and 1/4 widths.
* Cross attention (Eq. (3), Fig. 5 text): ``MLP(F_Cf)`` is one Linear layer
  ``C_aux -> C_prim`` (the paper calls single Linear layers "MLP" elsewhere,
  e.g. Eq. (8)); it is applied to the auxiliary branch's residual stream as
  written (no LayerNorm before it); then the strided convolution ``k = s = sr``
  at the primary width, LayerNorm (kept even where sr = 1, because the text
  lists the LayerNorm as a step of the module), ``kv = Linear(C, 2C)``,
  ``q = Linear(C, C)`` on ``norm(F_Enc)``, scaled dot-product attention with
  the primary branch's head count, output ``Linear(C, C)``.
  The two directions are computed from the same pre-update pair (Eq. (3) is
  written per block with both features of block i), i.e. in parallel.
* Each residual branch of a DMEM gets stochastic depth (linear schedule over
  the 16 blocks, as MiT).
* Stage ends: a LayerNorm per branch (MiT's stage-end norm) before the MMAM.
* MMAM ``MLP_1``/``MLP_2`` of Eq. (6)-(7): "two parallel sequences of FC layers" -
  a *sequence* of fully connected layers each, read as the squeeze-excitation form
  ``Linear(C, C / r) -> ReLU -> Linear(C / r, C_branch)`` (one Linear would not be a
  sequence, and two Linears without a non-linearity would collapse into one).  The text
  gives no hidden width; ``mmam_reduction = 2`` is the width whose size agrees with the
  paper's reported total (the only evidence there is).  Parameter counts of the paper
  configuration (10 + 2 bands, 9 classes): r = 2: 26,659,209 (26.66 M, -0.15 % from the
  reported 26.70 M); r = 1: 27.24 M (+2.0 %); r = 4: 26.37 M (-1.2 %); r = 16 (SE-Net's
  default): 26.15 M (-2.1 %); a single Linear each (``mmam_reduction=None``, the reading
  of versions up to 0.1.0, kept for their checkpoints): 26.47 M (-0.9 %).
* Decoder: embedding ``decoder_dim = 768`` (SegFormer-B2's head); the
  ``Linear(4C, C)`` of Eq. (8) is SegFormer's 1x1 conv + BatchNorm + ReLU, with
  Dropout2d(0.1) before the classifier; concatenation order c4, c3, c2, c1;
  bilinear resizing with ``align_corners=False``.
* Focal loss: the paper gives no gamma; ``focal_gamma = 2`` (Lin et al.'s
  recommended value). alpha "typically set based on the inverse frequency of
  the classes": the per-class values depend on the training data, so the
  constructor's default is ``focal_alpha = None`` (all 1) and training passes
  ``focal_alpha=inverse_frequency_alpha(counts)`` of the training labels
  (:func:`optsar_plugin.training.recipes.class_balance`), which the checkpoint's
  configuration records.
  The mean is taken over the non-ignored pixels.
* Initialisation: SegFormer's (truncated normal 0.02 for Linear, He-normal for
  conv); the paper trains every model from scratch, so no pretrained weights.

Any input size works (the convolution arithmetic gives grids
``ceil(H/4), ceil(H/8), ...`` for the paper's 510x510 tiles: 128, 64, 32, 16);
logits are returned at the input size.

Size and compute of the paper configuration (10 + 2 bands, 9 classes),
measured with ``torch.utils.flop_counter.FlopCounterMode`` (MAC = FLOP / 2):
26,659,209 parameters (paper 26.70 M); 62.41 GMAC per 510x510 or 512x512 tile
(encoder 22.09, decoder 40.33), of which 7.78 GMAC are the attention products
(QK^T, AV). The paper's Table II lists 109.59 "GFLOPs" for this model and
114.53 for SegFormer(-B2, 27.38 M). A SegFormer-B2 with 12 input bands and 9
classes built from :mod:`.mix_transformer` has exactly 27,381,769 parameters
and 61.03 GMAC (57.13 without the attention products); the paper's FLOP column
is therefore consistent with ``2 x MACs without the attention products``: by
that convention this reconstruction gives 109.26 G (paper 109.59) and the
SegFormer reference 114.27 G (paper 114.53). A reading with one all-MLP
decoder per modality (two 1/4-resolution fuse layers) would be about 1.6x
larger in compute and is not what the text describes ("the fused multi-level
features are fed into the decoder").
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from ..errors import OptsarError
from .losses import focal_loss
from .mix_transformer import (
    MIT_LN_EPS,
    EfficientSelfAttention,
    MixFFN,
    OverlapPatchEmbed,
    init_mit_weights,
    map_to_tokens,
    tokens_to_map,
)

#: The paper's configuration (MiT-B2 widths, 3/4 : 1/4 split).
PAPER_DEFAULTS = dict(
    embed_dims=(64, 128, 320, 512),
    depths=(3, 4, 6, 3),
    num_heads=(1, 2, 5, 8),
    sr_ratios=(8, 4, 2, 1),
    mlp_ratio=4.0,
    split=0.75,
    decoder_dim=768,
    drop_path_rate=0.1,
    drop_rate=0.0,
    decoder_dropout=0.1,
    mmam_reduction=2,
    focal_gamma=2.0,
    focal_alpha=None,
)


class ModalCrossAttention(nn.Module):
    """SAR-to-Spectral / Spectral-to-SAR cross attention (Eq. (3), Fig. 5).

    ``F~ = Attention(norm(F_Enc), MLP(F_Cf))``; the caller adds the residual.
    ``MLP`` adjusts the auxiliary width to the primary width; keys/values are
    taken from the adjusted auxiliary tokens after sequence reduction
    (strided conv) and LayerNorm.
    """

    def __init__(
        self, dim: int, aux_dim: int, num_heads: int, sr_ratio: int, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=MIT_LN_EPS)  # norm(F_Enc)
        self.adjust = nn.Linear(aux_dim, dim)  # MLP(F_Cf): dimension adjustment
        self.attn = EfficientSelfAttention(
            dim, num_heads, sr_ratio, attn_drop=attn_drop, proj_drop=proj_drop, norm_context_always=True
        )

    def forward(self, x: torch.Tensor, aux: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return self.attn(self.norm(x), height, width, context=self.adjust(aux))


class DMEM(nn.Module):
    """Dual Modal Enhancement Module: one encoder block of the two branches.

    Efficient self-attention per branch (Eq. (1)-(2)) -> SAR-to-Spectral and
    Spectral-to-SAR cross attention (Eq. (3)) -> Mix-FFN per branch (Eq. (4)),
    each as a pre-norm residual with stochastic depth.
    """

    def __init__(
        self,
        spec_dim: int,
        sar_dim: int,
        num_heads: int,
        sr_ratio: int,
        mlp_ratio: float = 4.0,
        drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        ln = lambda d: nn.LayerNorm(d, eps=MIT_LN_EPS)  # noqa: E731
        self.spec_norm1, self.sar_norm1 = ln(spec_dim), ln(sar_dim)
        self.spec_attn = EfficientSelfAttention(spec_dim, num_heads, sr_ratio, proj_drop=drop)
        self.sar_attn = EfficientSelfAttention(sar_dim, num_heads, sr_ratio, proj_drop=drop)
        self.sar_to_spec = ModalCrossAttention(spec_dim, sar_dim, num_heads, sr_ratio, proj_drop=drop)
        self.spec_to_sar = ModalCrossAttention(sar_dim, spec_dim, num_heads, sr_ratio, proj_drop=drop)
        self.spec_norm2, self.sar_norm2 = ln(spec_dim), ln(sar_dim)
        self.spec_ffn = MixFFN(spec_dim, int(spec_dim * mlp_ratio), drop)
        self.sar_ffn = MixFFN(sar_dim, int(sar_dim * mlp_ratio), drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, spec: torch.Tensor, sar: torch.Tensor, height: int, width: int):
        dp = self.drop_path
        # Efficient self-attention, Eq. (1)-(2)
        spec = spec + dp(self.spec_attn(self.spec_norm1(spec), height, width))
        sar = sar + dp(self.sar_attn(self.sar_norm1(sar), height, width))
        # Cross attention, Eq. (3): both directions from the same pair
        spec, sar = (
            spec + dp(self.sar_to_spec(spec, sar, height, width)),
            sar + dp(self.spec_to_sar(sar, spec, height, width)),
        )
        # Mix-FFN, Eq. (4)
        spec = spec + dp(self.spec_ffn(self.spec_norm2(spec), height, width))
        sar = sar + dp(self.sar_ffn(self.sar_norm2(sar), height, width))
        return spec, sar


class MMAM(nn.Module):
    """Mutual Modal Aggregation Module (Eq. (5)-(7), Fig. 6).

    ``g = GAP(Concat(F_spec, F_sar))``; ``M1 = Sigmoid(MLP_1(g))`` (multispectral
    channels), ``M2 = Sigmoid(MLP_2(g))`` (SAR channels);
    output ``Concat(M1 * F_spec, M2 * F_sar)``. Each MLP is one
    ``Linear(C, C_branch)`` when ``reduction`` is None (default), otherwise
    ``Linear(C, C // reduction) -> ReLU -> Linear(C // reduction, C_branch)``.
    """

    def __init__(self, spec_dim: int, sar_dim: int, reduction: Optional[int] = None):
        super().__init__()
        dim = spec_dim + sar_dim

        def mlp(out_dim: int) -> nn.Module:
            if reduction is None:
                return nn.Linear(dim, out_dim)
            hidden = max(1, dim // int(reduction))
            return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim))

        self.mlp1 = mlp(spec_dim)
        self.mlp2 = mlp(sar_dim)

    def forward(self, spec: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        g = torch.cat([spec, sar], dim=1).mean(dim=(2, 3))  # GAP(Concat(.)), Eq. (6)-(7)
        m1 = torch.sigmoid(self.mlp1(g))[:, :, None, None]  # Eq. (6)
        m2 = torch.sigmoid(self.mlp2(g))[:, :, None, None]  # Eq. (7)
        return torch.cat([spec * m1, sar * m2], dim=1)  # Eq. (5)


class AllMLPDecoder(nn.Module):
    """All-MLP decoder (Eq. (8)): per-stage Linear(C_i, C) -> upsample to 1/4 ->
    concat -> Linear(4C, C) (1x1 conv + BN + ReLU) -> Dropout2d -> Linear(C, N_cls)."""

    def __init__(self, in_dims: Sequence[int], dim: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.linears = nn.ModuleList(nn.Linear(c, dim) for c in in_dims)
        self.fuse = nn.Sequential(
            nn.Conv2d(dim * len(in_dims), dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(inplace=True)
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(dim, num_classes, 1)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        outs = []
        for f, lin in zip(feats, self.linears):
            h, w = f.shape[-2:]
            x = tokens_to_map(lin(map_to_tokens(f)), h, w)
            if (h, w) != tuple(size):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            outs.append(x)
        x = self.fuse(torch.cat(outs[::-1], dim=1))  # SegFormer order c4, c3, c2, c1
        return self.classifier(self.dropout(x))


def _split_widths(embed_dims: Sequence[int], split: float) -> List[tuple]:
    out = []
    for c in embed_dims:
        s = int(round(c * split))
        out.append((s, c - s))
    return out


def _check_stages(embed_dims, depths, num_heads, sr_ratios, split: float) -> List[tuple]:
    """The (spectral, SAR) widths per stage; a configuration the network cannot have is one line."""
    n = len(embed_dims)
    if not (n >= 1 and len(depths) == n and len(num_heads) == n and len(sr_ratios) == n):
        raise OptsarError(
            "SpecSAR-Former: embed_dims, depths, num_heads and sr_ratios must have the same (non-zero) length."
        )
    if not 0.0 < split < 1.0:
        raise OptsarError(f"SpecSAR-Former: split must be between 0 and 1 (the paper's is 0.75), got {split}.")
    widths = _split_widths(embed_dims, split)
    for i, ((cs, cr), h) in enumerate(zip(widths, num_heads)):
        if cs < 1 or cr < 1 or h < 1 or cs % h or cr % h:
            raise OptsarError(
                f"SpecSAR-Former stage {i + 1}: width {embed_dims[i]} split {split} gives {cs} spectral + "
                f"{cr} SAR channels, which must both be positive multiples of num_heads ({h})."
            )
    if min(depths) < 1 or min(sr_ratios) < 1:
        raise OptsarError("SpecSAR-Former: depths and sr_ratios must be >= 1.")
    return widths


def _check_alpha(focal_alpha, num_classes: int) -> Optional[List[float]]:
    if focal_alpha is None:
        return None
    focal_alpha = [float(a) for a in focal_alpha]
    if len(focal_alpha) != num_classes or min(focal_alpha) < 0:
        raise OptsarError(
            f"SpecSAR-Former: focal_alpha needs {num_classes} non-negative values (one per class), "
            f"got {len(focal_alpha)}."
        )
    return focal_alpha


class SpecSARFormer(nn.Module):
    """SpecSAR-Former; see the module docstring. ``model(optical, sar) -> logits``."""

    def __init__(
        self,
        optical_bands: int,
        sar_bands: int,
        num_classes: int,
        embed_dims: Sequence[int] = PAPER_DEFAULTS["embed_dims"],
        depths: Sequence[int] = PAPER_DEFAULTS["depths"],
        num_heads: Sequence[int] = PAPER_DEFAULTS["num_heads"],
        sr_ratios: Sequence[int] = PAPER_DEFAULTS["sr_ratios"],
        mlp_ratio: float = PAPER_DEFAULTS["mlp_ratio"],
        split: float = PAPER_DEFAULTS["split"],
        decoder_dim: int = PAPER_DEFAULTS["decoder_dim"],
        drop_path_rate: float = PAPER_DEFAULTS["drop_path_rate"],
        drop_rate: float = PAPER_DEFAULTS["drop_rate"],
        decoder_dropout: float = PAPER_DEFAULTS["decoder_dropout"],
        mmam_reduction: Optional[int] = PAPER_DEFAULTS["mmam_reduction"],
        focal_gamma: float = PAPER_DEFAULTS["focal_gamma"],
        focal_alpha: Optional[Sequence[float]] = PAPER_DEFAULTS["focal_alpha"],
    ):
        super().__init__()
        embed_dims, depths = [int(v) for v in embed_dims], [int(v) for v in depths]
        num_heads, sr_ratios = [int(v) for v in num_heads], [int(v) for v in sr_ratios]
        widths = _check_stages(embed_dims, depths, num_heads, sr_ratios, float(split))
        focal_alpha = _check_alpha(focal_alpha, int(num_classes))
        self.config: Dict = dict(
            optical_bands=int(optical_bands),
            sar_bands=int(sar_bands),
            num_classes=int(num_classes),
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            sr_ratios=sr_ratios,
            mlp_ratio=float(mlp_ratio),
            split=float(split),
            decoder_dim=int(decoder_dim),
            drop_path_rate=float(drop_path_rate),
            drop_rate=float(drop_rate),
            decoder_dropout=float(decoder_dropout),
            mmam_reduction=None if mmam_reduction is None else int(mmam_reduction),
            focal_gamma=float(focal_gamma),
            focal_alpha=focal_alpha,
        )
        self.num_classes = int(num_classes)
        self.widths = widths
        self.focal_gamma = float(focal_gamma)
        self.register_buffer(
            "focal_alpha", None if focal_alpha is None else torch.tensor(focal_alpha), persistent=False
        )

        cs1, cr1 = widths[0]
        # IV-B-1: separate 7x7 stride-4 overlapped patch embeddings for the two inputs
        self.spec_embed = OverlapPatchEmbed(int(optical_bands), cs1, patch_size=7, stride=4)
        self.sar_embed = OverlapPatchEmbed(int(sar_bands), cr1, patch_size=7, stride=4)
        # Overlapped patch merging of the fused map between stages (3x3 stride 2)
        self.merges = nn.ModuleList(
            OverlapPatchEmbed(embed_dims[i - 1], embed_dims[i], patch_size=3, stride=2) for i in range(1, len(embed_dims))
        )
        self._build_stages(widths, depths, num_heads, sr_ratios, float(mlp_ratio), float(drop_rate),
                           float(drop_path_rate))
        self.decoder = AllMLPDecoder(embed_dims, int(decoder_dim), int(num_classes), float(decoder_dropout))
        self.apply(init_mit_weights)

    def _build_stages(self, widths, depths, num_heads, sr_ratios, mlp_ratio, drop_rate, drop_path_rate) -> None:
        """Per stage: ``depth`` DMEM blocks, the branch LayerNorms and the MMAM; drop-path rising
        linearly over all blocks (SegFormer's rule)."""
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()  # numbers, also on "meta"
        self.stages = nn.ModuleList()
        self.spec_norms = nn.ModuleList()
        self.sar_norms = nn.ModuleList()
        self.mmams = nn.ModuleList()
        k = 0
        for i, ((cs, cr), d) in enumerate(zip(widths, depths)):
            self.stages.append(
                nn.ModuleList(DMEM(cs, cr, num_heads[i], sr_ratios[i], mlp_ratio, drop_rate, dpr[k + j]) for j in range(d))
            )
            k += d
            self.spec_norms.append(nn.LayerNorm(cs, eps=MIT_LN_EPS))
            self.sar_norms.append(nn.LayerNorm(cr, eps=MIT_LN_EPS))
            self.mmams.append(MMAM(cs, cr, self.config["mmam_reduction"]))

    # -- encoder -------------------------------------------------------------------------
    def encode(self, optical: torch.Tensor, sar: torch.Tensor) -> List[torch.Tensor]:
        """The four fused (MMAM) feature maps ``(B, C_i, H_i, W_i)``."""
        spec, h, w = self.spec_embed(optical)
        sar_t, h2, w2 = self.sar_embed(sar)
        assert (h, w) == (h2, w2)
        feats = []
        for i, blocks in enumerate(self.stages):
            if i > 0:
                x, h, w = self.merges[i - 1](feats[-1])
                cs, cr = self.widths[i]
                spec, sar_t = x[..., :cs].contiguous(), x[..., cs:].contiguous()  # 3/4 : 1/4 split
            for blk in blocks:
                spec, sar_t = blk(spec, sar_t, h, w)
            spec = tokens_to_map(self.spec_norms[i](spec), h, w)
            sar_m = tokens_to_map(self.sar_norms[i](sar_t), h, w)
            feats.append(self.mmams[i](spec, sar_m))
        return feats

    def _check_inputs(self, optical: torch.Tensor, sar: torch.Tensor) -> None:
        c = self.config
        if optical.dim() != 4 or optical.shape[1] != c["optical_bands"]:
            raise OptsarError(
                f"SpecSAR-Former expects optical input (B, {c['optical_bands']}, H, W), got {tuple(optical.shape)}."
            )
        if sar.dim() != 4 or sar.shape[1] != c["sar_bands"]:
            raise OptsarError(f"SpecSAR-Former expects SAR input (B, {c['sar_bands']}, H, W), got {tuple(sar.shape)}.")
        if optical.shape[0] != sar.shape[0] or optical.shape[-2:] != sar.shape[-2:]:
            raise OptsarError(
                f"SpecSAR-Former: optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} inputs differ in batch or size."
            )

    def forward(self, optical: torch.Tensor, sar: torch.Tensor) -> torch.Tensor:
        self._check_inputs(optical, sar)
        logits = self.decoder(self.encode(optical, sar))
        return F.interpolate(logits, size=optical.shape[-2:], mode="bilinear", align_corners=False)

    def forward_train(self, optical: torch.Tensor, sar: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{"logits": (B, K, H, W)}``; the paper has no auxiliary outputs."""
        return {"logits": self.forward(optical, sar)}

    def loss(self, outputs, target: torch.Tensor, ignore_index: int = 255, class_weights=None) -> torch.Tensor:
        """alpha-balanced focal loss, Eq. (9)-(10), mean over pixels whose target != ``ignore_index``;
        ``class_weights`` (one per class) replaces the configured ``focal_alpha`` for this call."""
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        alpha = self.focal_alpha if class_weights is None else class_weights
        return focal_loss(logits, target, gamma=self.focal_gamma, alpha=alpha, ignore_index=ignore_index)


def build(optical_bands: int, sar_bands: int, num_classes: int, **options) -> SpecSARFormer:
    """Build SpecSAR-Former; ``options`` are :class:`SpecSARFormer` keyword arguments.

    Unknown options raise :class:`OptsarError` naming them.
    """
    import inspect

    known = set(inspect.signature(SpecSARFormer.__init__).parameters) - {
        "self",
        "optical_bands",
        "sar_bands",
        "num_classes",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptsarError(
            f"SpecSAR-Former does not know the option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    return SpecSARFormer(optical_bands, sar_bands, num_classes, **options)
