"""Tests of the SpecSAR-Former model (optsar_plugin.models.specsar_former). CPU, small tiles."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from optsar_plugin.errors import OptsarError  # noqa: E402
from optsar_plugin.models import build_model  # noqa: E402
from optsar_plugin.models.specsar_former import MMAM, SpecSARFormer  # noqa: E402
from tests.helpers import model_inputs  # noqa: E402

# A small configuration with the paper's structure (4 stages, 3/4 : 1/4 split, sr 8/4/2/1).
TINY = dict(
    embed_dims=[16, 32, 64, 128],
    depths=[1, 1, 1, 1],
    num_heads=[1, 2, 4, 8],
    decoder_dim=32,
)
PAPER_PARAMS = 26.70e6


def _tiny(optical_bands=10, sar_bands=2, num_classes=9, **kw):
    torch.manual_seed(0)
    return build_model(
        "specsar_former", optical_bands=optical_bands, sar_bands=sar_bands, num_classes=num_classes, **{**TINY, **kw}
    )


def _inputs(model, b=1, h=64, w=64, seed=1):
    return model_inputs(model.config["optical_bands"], model.config["sar_bands"], h, w, batch=b, seed=seed)


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return build_model("specsar_former", optical_bands=10, sar_bands=2, num_classes=9)


def test_paper_configuration_parameter_count(paper_model):
    n = sum(p.numel() for p in paper_model.parameters())
    # the paper reports 26.70 M; this reading (two-layer MMAM MLPs, r = 2) gives 26,659,209 (-0.15 %)
    assert abs(n - PAPER_PARAMS) / PAPER_PARAMS < 0.01, n
    assert n == 26_659_209
    assert isinstance(paper_model.mmams[0].mlp1, torch.nn.Sequential)  # "sequences of FC layers"
    assert all(p.requires_grad for p in paper_model.parameters())
    # the 3/4 : 1/4 channel split of the MiT-B2 widths
    assert paper_model.widths == [(48, 16), (96, 32), (240, 80), (384, 128)]


def test_paper_configuration_forward_shape(paper_model):
    paper_model.eval()
    o, s = _inputs(paper_model, b=1, h=64, w=64)
    with torch.no_grad():
        out = paper_model(o, s)
    assert out.shape == (1, 9, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("optical_bands,sar_bands", [(10, 2), (4, 1), (13, 2), (1, 4)])
def test_output_shape_for_band_counts(optical_bands, sar_bands):
    model = _tiny(optical_bands, sar_bands, num_classes=7).eval()
    o, s = _inputs(model, b=2)
    with torch.no_grad():
        out = model(o, s)
    assert out.shape == (2, 7, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("h,w", [(64, 64), (96, 96), (64, 128), (128, 64)])
def test_output_shape_for_tile_sizes(h, w):
    model = _tiny().eval()
    o, s = _inputs(model, h=h, w=w)
    with torch.no_grad():
        assert model(o, s).shape == (1, 9, h, w)


def test_paper_tile_size_510():
    # The paper's Dynamic World+ tiles are 510 x 510 (not a multiple of 32): token grids 128/64/32/16.
    model = _tiny(embed_dims=[8, 16, 32, 64], num_heads=[1, 2, 4, 8], decoder_dim=16).eval()
    o, s = _inputs(model, h=510, w=510)
    with torch.no_grad():
        feats = model.encode(o, s)
        out = model(o, s)
    assert [f.shape[-1] for f in feats] == [128, 64, 32, 16]
    assert out.shape == (1, 9, 510, 510)


def test_training_step_gives_finite_loss_and_gradients():
    model = _tiny(num_classes=5).train()
    o, s = _inputs(model, b=2)
    target = torch.randint(0, 5, (2, 64, 64), generator=torch.Generator().manual_seed(3))
    target[:, :8] = 255  # ignored rows
    outputs = model.forward_train(o, s)
    assert set(outputs) == {"logits"} and outputs["logits"].shape == (2, 5, 64, 64)
    loss = model.loss(outputs, target, ignore_index=255)
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # every module receives signal: the gradient is non-zero in each top-level part
    for part in ("spec_embed", "sar_embed", "merges", "stages", "mmams", "decoder"):
        total = sum(p.grad.abs().sum().item() for n, p in model.named_parameters() if n.startswith(part))
        assert total > 0, part


def test_loss_uses_focal_gamma_and_alpha():
    model = _tiny(num_classes=3, focal_gamma=0.0)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(model.loss({"logits": logits}, target), ce, atol=1e-6)
    weighted = _tiny(num_classes=3, focal_gamma=0.0, focal_alpha=[2.0, 2.0, 2.0])
    assert torch.allclose(weighted.loss({"logits": logits}, target), 2 * ce, atol=1e-6)
    focal = _tiny(num_classes=3)
    assert focal.config["focal_gamma"] == 2.0
    assert focal.loss({"logits": logits}, target) < ce


def test_eval_is_deterministic():
    model = _tiny(drop_path_rate=0.3, decoder_dropout=0.5).eval()
    o, s = _inputs(model)
    with torch.no_grad():
        a = model(o, s)
        b = model(o, s)
    assert torch.equal(a, b)


def test_both_modalities_influence_the_output():
    model = _tiny().eval()
    o, s = _inputs(model)
    with torch.no_grad():
        base = model(o, s)
        assert not torch.allclose(model(o, s + 1.0), base)
        assert not torch.allclose(model(o + 1.0, s), base)


def test_config_is_json_and_rebuilds_same_model():
    model = _tiny(optical_bands=4, sar_bands=1, num_classes=6, focal_alpha=[1, 2, 1, 1, 0.5, 1], mmam_reduction=2)
    cfg = json.loads(json.dumps(model.config))
    assert cfg["optical_bands"] == 4 and cfg["sar_bands"] == 1 and cfg["num_classes"] == 6
    assert cfg["split"] == 0.75 and cfg["embed_dims"] == [16, 32, 64, 128]
    rebuilt = build_model("specsar_former", **cfg)
    assert rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval(), rebuilt.eval()
    o, s = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model(o, s), rebuilt(o, s))


def test_mmam_matches_equations_5_to_7():
    torch.manual_seed(0)
    mmam = MMAM(6, 2)
    spec, sar = torch.randn(2, 6, 3, 4), torch.randn(2, 2, 3, 4)
    g = torch.cat([spec, sar], 1).mean((2, 3))
    m1 = torch.sigmoid(g @ mmam.mlp1.weight.T + mmam.mlp1.bias)
    m2 = torch.sigmoid(g @ mmam.mlp2.weight.T + mmam.mlp2.bias)
    expected = torch.cat([spec * m1[:, :, None, None], sar * m2[:, :, None, None]], 1)
    assert torch.allclose(mmam(spec, sar), expected, atol=1e-6)
    two_layer = MMAM(6, 2, reduction=2)
    assert two_layer.mlp1[0].out_features == 4 and two_layer(spec, sar).shape == (2, 8, 3, 4)


def test_bad_inputs_and_options_raise_optsar_error():
    model = _tiny().eval()
    o, s = _inputs(model)
    with pytest.raises(OptsarError, match="optical"):
        model(o[:, :3], s)
    with pytest.raises(OptsarError, match="SAR"):
        model(o, torch.cat([s, s], 1))
    with pytest.raises(OptsarError, match="differ"):
        model(o, s[..., :32])
    with pytest.raises(OptsarError, match="option"):
        build_model("specsar_former", optical_bands=10, sar_bands=2, num_classes=9, bogus=1)
    with pytest.raises(OptsarError, match="multiples of num_heads"):
        _tiny(embed_dims=[16, 32, 64, 100])  # stage 4: 75 + 25 channels, 8 heads
    with pytest.raises(OptsarError, match="split"):
        _tiny(split=1.0)
    with pytest.raises(OptsarError, match="focal_alpha"):
        _tiny(num_classes=3, focal_alpha=[1.0, 1.0])
    assert isinstance(model, SpecSARFormer)
