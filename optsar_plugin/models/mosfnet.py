"""MOSFNet (Zhao et al., "Land cover classification of optical-SAR imagery via cross-modal
interaction and feature alignment"): two ConvNeXtV2-tiny encoders, a Feature Interaction
Module (FIM, Eq. 1-2) and a Feature Fusion Module (FFM, Eq. 3-5) at each of the four
stages, and a UPerNet decoder.  ``encoder`` selects a smaller ConvNeXtV2 of the same
family (nano, pico, femto, atto: stage widths 80-640 ... 40-320) with the same wiring -
the ``small`` training size uses atto, so that MOSFNet trains on a CPU.

Data flow for optical ``(B, Co, H, W)`` and SAR ``(B, Cs, H, W)`` (H, W multiples of 32)::

    stage i (C = 96, 192, 384, 768 at strides 4, 8, 16, 32):
        F_opt, F_sar   = LayerNorm2d(encoder_opt_i), LayerNorm2d(encoder_sar_i)
        F~opt, F~sar   = FIM_i(F_opt, F_sar)                  (Eq. 1-2)
        F~fusion_i     = FFM_i(F~opt, F~sar)                  (Eq. 3-5)
    logits = resize(UPerHead(F~fusion_1..4), (H, W))

What the paper fixes is implemented as written (Eq. numbers are in the code).  Where it is
silent, these choices were made:

* Encoders: timm ``convnextv2_tiny`` (``features_only``, ``in_chans`` = band count), one
  per modality, no weight sharing ("two independent ConvNeXtV2-tiny networks").  Each
  stage output gets a channel LayerNorm (eps 1e-6): the paper does not mention them, but
  they belong to ConvNeXt used as a segmentation backbone with UPerNet, which is what the
  paper uses (the official ConvNeXt / ConvNeXt-V2 segmentation backbones and mmseg's add
  ``norm0..3`` on the outputs, because ConvNeXt's residual stream is not normalised at the
  stage outputs); the two modalities are multiplied and added downstream, which needs
  them on a common scale.
  FIM/FFM outputs do not re-enter the encoders: the paper places the FIM "immediately
  after the backbone outputs" and feeds its result to the FFM, and nothing in the text
  routes it back.  Stochastic depth ``drop_path_rate`` (paper silent) defaults to 0.1:
  mmseg's ConvNeXt-T UPerNet recipe, which the paper's optimiser settings match, uses 0.4
  for 160 k iterations of 16 images from ImageNet weights; this plugin trains shorter, on
  fewer tiles and by default from random initialisation, where a milder value is the safer
  default.  Pass 0.4 to follow mmseg.
* FIM: every "Conv" is conv + BatchNorm + ReLU (mmseg's ConvModule; without a
  non-linearity the expand-interleave-integrate chain would collapse into one linear map);
  kernel ``fim_kernel`` (default 1x1: the module is described as a channel-level
  operation, spatial context comes from the coordinate attention; 3 is available).
  Weights are separate per modality (each modality keeps its own projection,
  "maintaining modality-specific independence").
* FFM: Norm = LayerNorm over channels, one per modality (shared by P and L, as Eq. 3
  applies both to the same Norm(F~)).  P = Linear (C -> d_inner, no bias) -> depthwise
  3x3 conv -> SiLU -> SS2D -> LayerNorm(d_inner); L = Linear (C -> d_inner, no bias) ->
  SiLU.  SS2D is VMamba's v0 (four scan directions) with its defaults: d_inner = 2C
  (``ssm_ratio``), d_state 16, dt_rank ceil(C/16).  In Eq. 4 "Linear" maps d_inner -> C
  (no bias, like VMamba's out_proj) and "Conv" is a regular (not depthwise) convolution
  with bias, ``ffm_kernel`` x ``ffm_kernel`` (default 3): the paper names depthwise
  convolutions explicitly ("DW-Conv") in the same paragraph, so this one is a regular
  convolution, and with a 1x1 kernel right after the Linear the pair would be one linear
  map (the Conv would add parameters and nothing else).  The price: the eight 3x3 convs
  hold 14.1 M of the paper configuration's 119.9 M parameters (12 %, 4 + 1 bands, 7 classes); ``ffm_kernel=1``
  gives 1.6 M.  No norm or activation before the sigmoid.  The two branches (SAR
  modulating optical, optical modulating SAR) have their own weights.
* FFM residual connections (``ffm_residual``, default on): the text says twice that the
  projected features are "fused with the original features through residual
  connections" (Section 1 and Section 2.2), which Eq. (4) alone (C = F~ * sigmoid(B), a
  pure gate) does not show; each branch is C = F~ + F~ * sigmoid(B) before the sum of
  Eq. (5).  ``ffm_residual=False`` is Eq. (4) as printed (and how checkpoints written
  before this option were built).
* Decoder: mmseg ``UPerHead`` with 512 channels (``decoder_channels``; mmseg's default and
  its ConvNeXt UPerNet configuration), pool scales 1, 2, 3, 6; logits at stride 4,
  bilinearly resized to the input.
* Loss: the paper names no loss; pixel cross entropy (mmseg's default) is used.  The
  "feature alignment" of the title is what the FFM does in the hidden state space -- the
  paper defines no alignment loss term.  The auxiliary FCN head of mmseg's UPerNet configs
  is not mentioned by the paper, so it is off by default; ``aux_head=True`` adds it on the
  stage-3 fused map (384 -> 256 -> classes) with loss weight 0.4, training only.

Ablation switches (paper Table 2): ``use_fim=False`` passes the encoder features to the
FFM unchanged (F~ = F); ``use_ffm=False`` fuses by pixel-wise addition
(F~fusion = F~opt + F~sar).  Both off is the paper's baseline ("only adopted pixel-wise
addition for feature fusion").

Pretrained weights: ``pretrained_path`` names a timm (or official ConvNeXt-V2) ImageNet
state dict for the ``encoder`` (default ``convnextv2_tiny``) (``.safetensors``, or a torch file read with
``weights_only=True``); both encoders start from it.  The 3-channel stem is adapted to the
band count: the optical stem keeps the R, G, B kernels for its first three bands and gives
every further band the mean of the three; the SAR stem gives every band the mean kernel;
the whole stem is then scaled by 3 / bands so the response to bands of similar scale stays
as in pretraining (1 band: the sum of the RGB kernels, as timm does).  Note the ImageNet
ConvNeXt-V2 weights are licensed CC-BY-NC-4.0.  The path is initialisation, not
architecture: it is kept as ``model.pretrained_path`` but not in ``model.config``.
"""

from __future__ import annotations

import math
import os
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import OptsarError
from .coord_attention import CoordAtt
from .losses import cross_entropy
from .ss2d import SS2D
from .uper_head import ConvModule, FCNHead, UPerHead

__all__ = ["MOSFNet", "FIM", "FFM", "build", "adapt_stem_weight", "load_convnextv2_state_dict"]

ENCODER = "convnextv2_tiny"  # the paper's encoder
ENCODERS = ("convnextv2_tiny", "convnextv2_nano", "convnextv2_pico", "convnextv2_femto", "convnextv2_atto")
STAGE_CHANNELS = (96, 192, 384, 768)  # ConvNeXtV2-tiny's
AUX_WEIGHT = 0.4


# --------------------------------------------------------------------------------------
# modules


class FIM(nn.Module):
    """Feature Interaction Module, Eq. (1)-(2): returns (F~opt, F~sar), each (B, C, H, W)."""

    def __init__(self, channels: int, kernel_size: int = 1):
        super().__init__()
        c = channels
        if c % 2:
            raise ValueError(f"FIM splits 2C channels into four blocks of C/2; C={c} is odd")
        self.expand_opt = ConvModule(c, 2 * c, kernel_size)
        self.expand_sar = ConvModule(c, 2 * c, kernel_size)
        self.integrate_opt = ConvModule(2 * c, c, kernel_size)
        self.integrate_sar = ConvModule(2 * c, c, kernel_size)
        self.ca_opt = CoordAtt(c)
        self.ca_sar = CoordAtt(c)

    def forward(self, f_opt: Tensor, f_sar: Tensor):
        o1, o2, o3, o4 = self.expand_opt(f_opt).chunk(4, dim=1)  # Eq. (1): Split(Conv(F_opt))
        s1, s2, s3, s4 = self.expand_sar(f_sar).chunk(4, dim=1)
        opt_int = torch.cat([o1, s2, o3, s4], dim=1)  # Eq. (1): interleaved concat
        sar_int = torch.cat([s1, o2, s3, o4], dim=1)
        return self.ca_opt(self.integrate_opt(opt_int)), self.ca_sar(self.integrate_sar(sar_int))  # Eq. (2)


class _HiddenStateProjection(nn.Module):
    """P of Eq. (3): Linear -> DW-Conv 3x3 -> SiLU -> SS2D -> LayerNorm; (B,H,W,C) -> (B,H,W,d_inner)."""

    def __init__(self, channels: int, d_inner: int, d_state: int, dt_rank: int):
        super().__init__()
        self.linear = nn.Linear(channels, d_inner, bias=False)
        self.dwconv = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        self.ss2d = SS2D(d_inner, d_state=d_state, dt_rank=dt_rank)
        self.norm = nn.LayerNorm(d_inner)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x).permute(0, 3, 1, 2).contiguous()
        x = self.ss2d(F.silu(self.dwconv(x)))
        return self.norm(x.permute(0, 2, 3, 1))


class FFM(nn.Module):
    """Feature Fusion Module, Eq. (3)-(5): bidirectional SS2D gating; returns F~fusion (B, C, H, W).

    ``residual`` (default): each branch's gated features are "fused with the original features
    through residual connections" (the text, twice): C = F~ + F~ * sigmoid(B); False is Eq. (4)
    alone, C = F~ * sigmoid(B).
    """

    def __init__(self, channels: int, d_state: int = 16, ssm_ratio: float = 2.0, residual: bool = True,
                 kernel: int = 3):
        super().__init__()
        c = channels
        self.residual = bool(residual)
        d_inner = int(ssm_ratio * c)
        dt_rank = math.ceil(c / 16)
        self.norm_opt = nn.LayerNorm(c)
        self.norm_sar = nn.LayerNorm(c)
        self.proj_opt = _HiddenStateProjection(c, d_inner, d_state, dt_rank)  # P^1
        self.proj_sar = _HiddenStateProjection(c, d_inner, d_state, dt_rank)  # P^2
        self.map_opt = nn.Linear(c, d_inner, bias=False)  # L^1 (+ SiLU)
        self.map_sar = nn.Linear(c, d_inner, bias=False)  # L^2 (+ SiLU)
        self.out_linear_opt = nn.Linear(d_inner, c, bias=False)
        self.out_linear_sar = nn.Linear(d_inner, c, bias=False)
        self.out_conv_opt = nn.Conv2d(c, c, kernel, padding=kernel // 2)
        self.out_conv_sar = nn.Conv2d(c, c, kernel, padding=kernel // 2)

    def forward(self, f_opt: Tensor, f_sar: Tensor) -> Tensor:
        x_opt = self.norm_opt(f_opt.permute(0, 2, 3, 1))  # channel-last
        x_sar = self.norm_sar(f_sar.permute(0, 2, 3, 1))
        y_opt, y_sar = self.proj_opt(x_opt), self.proj_sar(x_sar)  # Eq. (3)
        z_opt, z_sar = F.silu(self.map_opt(x_opt)), F.silu(self.map_sar(x_sar))  # Eq. (3)
        a_opt = y_opt * torch.sigmoid(y_sar * z_opt)  # Eq. (4)
        a_sar = y_sar * torch.sigmoid(y_opt * z_sar)
        b_opt = self.out_conv_opt(self.out_linear_opt(a_opt * z_sar).permute(0, 3, 1, 2))  # Eq. (4)
        b_sar = self.out_conv_sar(self.out_linear_sar(a_sar * z_opt).permute(0, 3, 1, 2))
        c_opt = f_opt * torch.sigmoid(b_opt)  # Eq. (4)
        c_sar = f_sar * torch.sigmoid(b_sar)
        if self.residual:  # "fused with the original features through residual connections"
            c_opt, c_sar = c_opt + f_opt, c_sar + f_sar
        return c_opt + c_sar  # Eq. (5)


# --------------------------------------------------------------------------------------
# encoders and pretrained weights


def adapt_stem_weight(weight: Tensor, in_chans: int, keep_rgb: bool) -> Tensor:
    """Adapt a 3-channel stem kernel ``(O, 3, k, k)`` to ``in_chans`` bands (see module docstring)."""
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected a 3-channel stem kernel (O, 3, k, k), got {tuple(weight.shape)}")
    w = weight.float()
    mean = w.mean(dim=1, keepdim=True)
    if keep_rgb and in_chans >= 3:
        new = torch.cat([w, mean.expand(-1, in_chans - 3, -1, -1)], dim=1)
    else:
        new = mean.expand(-1, in_chans, -1, -1)
    return (new * (3.0 / in_chans)).to(weight.dtype).contiguous()


def load_convnextv2_state_dict(path: str, encoder: str = ENCODER) -> Dict[str, Tensor]:
    """Read an ImageNet ConvNeXt-V2 (``encoder``) state dict (timm or official key names) as timm names."""
    if not os.path.isfile(path):
        raise OptsarError(f"Pretrained weights file not found: {path}")
    try:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import load_file

            sd = load_file(path, device="cpu")
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle with objects, wrong format
        raise OptsarError(f"Cannot read pretrained weights '{path}': {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not all(isinstance(v, Tensor) for v in sd.values()):
        raise OptsarError(f"Pretrained weights '{path}' do not hold a state dict of tensors.")
    if "stem.0.weight" not in sd:
        import timm
        from timm.models.convnext import checkpoint_filter_fn

        try:  # official ConvNeXt-V2 names -> timm names
            sd = checkpoint_filter_fn(sd, timm.create_model(encoder, pretrained=False))
        except Exception as exc:
            raise OptsarError(f"Pretrained weights '{path}' are not a ConvNeXt-V2 state dict ({exc}).") from exc
    return sd


def _features_key(key: str) -> str:
    """timm ConvNeXt name -> name inside its ``features_only`` wrapper (stem.0 -> stem_0, stages.1 -> stages_1)."""
    head, _, rest = key.partition(".")
    index, _, tail = rest.partition(".")
    return f"{head}_{index}.{tail}"


def _make_encoder(in_chans: int, drop_path_rate: float, state_dict: Optional[Dict[str, Tensor]],
                  keep_rgb: bool, source: str = "", encoder: str = ENCODER) -> nn.Module:
    import timm

    enc = timm.create_model(encoder, pretrained=False, features_only=True, in_chans=in_chans,
                            drop_path_rate=drop_path_rate)
    if state_dict is None:
        return enc
    sd = {_features_key(k): v for k, v in state_dict.items() if k.startswith(("stem.", "stages."))}
    stem = sd.get("stem_0.weight")
    if stem is not None and stem.shape[1] == 3:
        sd["stem_0.weight"] = adapt_stem_weight(stem, in_chans, keep_rgb)
    try:
        enc.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise OptsarError(f"Pretrained weights '{source}' do not fit {encoder}: {' '.join(first)}") from exc
    return enc


# --------------------------------------------------------------------------------------
# network


class MOSFNet(nn.Module):
    """MOSFNet; see the module docstring for the architecture and every choice made.

    ``model(optical, sar)`` -> logits ``(B, num_classes, H, W)``;
    ``model.forward_train(optical, sar)`` -> ``{"logits", ["aux_logits"]}``;
    ``model.loss(outputs, target, ignore_index=255)``; ``model.config`` (constructor kwargs
    without ``pretrained_path``).
    """

    def __init__(self, optical_bands: int, sar_bands: int, num_classes: int, *,
                 decoder_channels: int = 512, fim_kernel: int = 1, use_fim: bool = True, use_ffm: bool = True,
                 d_state: int = 16, ssm_ratio: float = 2.0, drop_path_rate: float = 0.1, aux_head: bool = False,
                 encoder: str = ENCODER, ffm_residual: bool = True, ffm_kernel: int = 3,
                 pretrained_path: Optional[str] = None):
        super().__init__()
        if encoder not in ENCODERS:
            raise OptsarError(f"MOSFNet encoder '{encoder}' is not known; use one of {', '.join(ENCODERS)}.")
        for key, k in (("fim_kernel", fim_kernel), ("ffm_kernel", ffm_kernel)):
            if int(k) < 1 or int(k) % 2 == 0:
                raise OptsarError(f"MOSFNet {key} must be an odd size >= 1, got {k}.")
        if int(d_state) < 1 or float(ssm_ratio) <= 0 or int(decoder_channels) < 1:
            raise OptsarError("MOSFNet needs d_state >= 1, ssm_ratio > 0 and decoder_channels >= 1.")
        if not 0.0 <= float(drop_path_rate) < 1.0:
            raise OptsarError(f"MOSFNet drop_path_rate must be in [0, 1), got {drop_path_rate}.")
        self.optical_bands, self.sar_bands, self.num_classes = int(optical_bands), int(sar_bands), int(num_classes)
        self.use_fim, self.use_ffm, self.aux = bool(use_fim), bool(use_ffm), bool(aux_head)
        self.config = {
            "optical_bands": self.optical_bands, "sar_bands": self.sar_bands, "num_classes": self.num_classes,
            "decoder_channels": int(decoder_channels), "fim_kernel": int(fim_kernel),
            "use_fim": self.use_fim, "use_ffm": self.use_ffm, "d_state": int(d_state),
            "ssm_ratio": float(ssm_ratio), "drop_path_rate": float(drop_path_rate), "aux_head": self.aux,
            "encoder": encoder, "ffm_residual": bool(ffm_residual), "ffm_kernel": int(ffm_kernel),
        }
        self.pretrained_path = pretrained_path
        sd = load_convnextv2_state_dict(pretrained_path, encoder) if pretrained_path else None
        self.encoder_opt = _make_encoder(self.optical_bands, float(drop_path_rate), sd, True, pretrained_path or "", encoder)
        self.encoder_sar = _make_encoder(self.sar_bands, float(drop_path_rate), sd, False, pretrained_path or "", encoder)
        chans = tuple(self.encoder_opt.feature_info.channels())
        self.stage_channels = chans
        from timm.layers import LayerNorm2d

        self.out_norm_opt = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in chans)
        self.out_norm_sar = nn.ModuleList(LayerNorm2d(c, eps=1e-6) for c in chans)
        self.fim = nn.ModuleList(FIM(c, int(fim_kernel)) for c in chans) if self.use_fim else None
        self.ffm = (nn.ModuleList(FFM(c, int(d_state), float(ssm_ratio), bool(ffm_residual), int(ffm_kernel))
                                  for c in chans)
                    if self.use_ffm else None)
        self.decode_head = UPerHead(chans, int(decoder_channels), self.num_classes)
        self.aux_head = FCNHead(chans[2], 256, self.num_classes) if self.aux else None

    def _check_inputs(self, optical: Tensor, sar: Tensor) -> None:
        if optical.dim() != 4 or optical.shape[1] != self.optical_bands:
            raise OptsarError(f"MOSFNet expects optical input (B, {self.optical_bands}, H, W), got {tuple(optical.shape)}.")
        if sar.dim() != 4 or sar.shape[1] != self.sar_bands:
            raise OptsarError(f"MOSFNet expects SAR input (B, {self.sar_bands}, H, W), got {tuple(sar.shape)}.")
        if optical.shape[0] != sar.shape[0] or optical.shape[2:] != sar.shape[2:]:
            raise OptsarError(f"Optical {tuple(optical.shape)} and SAR {tuple(sar.shape)} batches differ in size.")
        h, w = optical.shape[2:]
        if h % 32 or w % 32 or h < 32 or w < 32:
            raise OptsarError(f"MOSFNet needs tile sides that are multiples of 32; got {h} x {w}.")

    def fused_features(self, optical: Tensor, sar: Tensor) -> List[Tensor]:
        """F~fusion_i for the four stages (strides 4, 8, 16, 32)."""
        self._check_inputs(optical, sar)
        feats_opt, feats_sar = self.encoder_opt(optical), self.encoder_sar(sar)
        fused = []
        for i in range(len(self.stage_channels)):
            f_opt, f_sar = self.out_norm_opt[i](feats_opt[i]), self.out_norm_sar[i](feats_sar[i])
            if self.use_fim:
                f_opt, f_sar = self.fim[i](f_opt, f_sar)  # Eq. (1)-(2)
            fused.append(self.ffm[i](f_opt, f_sar) if self.use_ffm else f_opt + f_sar)  # Eq. (3)-(5) / addition
        return fused

    def _logits(self, fused: List[Tensor], size) -> Tensor:
        return F.interpolate(self.decode_head(fused), size=size, mode="bilinear", align_corners=False)

    def forward(self, optical: Tensor, sar: Tensor) -> Tensor:
        return self._logits(self.fused_features(optical, sar), optical.shape[2:])

    def forward_train(self, optical: Tensor, sar: Tensor) -> Dict[str, Tensor]:
        fused = self.fused_features(optical, sar)
        out = {"logits": self._logits(fused, optical.shape[2:])}
        if self.aux_head is not None:
            aux = self.aux_head(fused[2])
            out["aux_logits"] = F.interpolate(aux, size=optical.shape[2:], mode="bilinear", align_corners=False)
        return out

    def loss(self, outputs, target: Tensor, ignore_index: int = 255, class_weights=None) -> Tensor:
        """Pixel cross entropy (+ 0.4 x auxiliary cross entropy when ``aux_head``); ``class_weights``: one
        weight per class (training's class balancing; the paper names no loss)."""
        if isinstance(outputs, Tensor):
            outputs = {"logits": outputs}
        total = cross_entropy(outputs["logits"], target, ignore_index=ignore_index, weight=class_weights)
        if "aux_logits" in outputs:
            total = total + AUX_WEIGHT * cross_entropy(outputs["aux_logits"], target, ignore_index=ignore_index,
                                                       weight=class_weights)
        return total


def build(optical_bands: int, sar_bands: int, num_classes: int, **options) -> MOSFNet:
    """Registry entry point.  Options: decoder_channels (512), fim_kernel (1), use_fim, use_ffm,
    d_state (16), ssm_ratio (2.0), drop_path_rate (0.1), aux_head (False), encoder (convnextv2_tiny),
    ffm_residual (True), ffm_kernel (3), pretrained_path (None)."""
    known = {"decoder_channels", "fim_kernel", "use_fim", "use_ffm", "d_state", "ssm_ratio",
             "drop_path_rate", "aux_head", "encoder", "ffm_residual", "ffm_kernel", "pretrained_path"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise OptsarError(f"Unknown MOSFNet option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
    return MOSFNet(optical_bands, sar_bands, num_classes, **options)
