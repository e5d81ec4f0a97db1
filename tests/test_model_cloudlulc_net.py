"""CloudLULC-Net: the model contract, the training-only anchor, ORM gating and options.

Fast CPU tests on 64-128 pixel tiles with the paper's default architecture.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from optsar_plugin.errors import OptsarError  # noqa: E402
from optsar_plugin.models import build_model  # noqa: E402
from optsar_plugin.models.cloudlulc_net import CHOI, HIAA, ORM, SHOI, USMT  # noqa: E402
from tests.helpers import model_inputs as _inputs  # noqa: E402


def _model(optical_bands=12, sar_bands=2, num_classes=6, **options):
    torch.manual_seed(0)
    return build_model("cloudlulc_net", optical_bands=optical_bands, sar_bands=sar_bands, num_classes=num_classes, **options)


@pytest.mark.parametrize("optical_bands,sar_bands", [(12, 2), (4, 1), (1, 4), (16, 2)])
def test_output_shape_for_band_counts(optical_bands, sar_bands):
    # band counts only touch the stems: a narrow network keeps this fast
    model = _model(optical_bands, sar_bands, num_classes=6, channels=32, embed_dim=64, depth=2, heads=4).eval()
    opt, sar = _inputs(optical_bands, sar_bands, 64, 64, batch=2)
    with torch.no_grad():
        out = model(opt, sar)
    assert out.shape == (2, 6, 64, 64)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("h,w", [(64, 64), (96, 96), (64, 128), (128, 64)])
def test_output_shape_for_tile_sizes(h, w):
    model = _model(num_classes=9).eval()
    opt, sar = _inputs(12, 2, h, w)
    with torch.no_grad():
        out = model(opt, sar)
    assert out.shape == (1, 9, h, w)
    assert torch.isfinite(out).all()


def test_module_classes_named_as_in_paper():
    model = _model()
    assert isinstance(model.orm, ORM)
    assert isinstance(model.usmt, USMT)
    assert len(model.hiaa) == 3 and all(isinstance(b, HIAA) for b in model.hiaa)
    assert isinstance(model.hiaa[0].shoi, SHOI) and isinstance(model.hiaa[0].choi, CHOI)


def test_one_training_step_gives_finite_loss_and_gradients_everywhere():
    model = _model().train()
    opt, sar = _inputs(12, 2, 64, 64, batch=2)
    target = torch.randint(0, 6, (2, 64, 64), generator=torch.Generator().manual_seed(3))
    target[0, :20] = 255  # some ignored pixels
    target[1, :, :16] = 255  # a whole token column unlabelled
    outputs = model.forward_train(opt, sar)
    assert {"logits", "latent"} <= set(outputs)
    assert outputs["latent"].shape == (2, 256, 4, 4)
    loss = model.loss(outputs, target, ignore_index=255)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradient for {bad}"
    # the training-only anchor parameters really learn (non-zero gradient through the loss)
    assert any(p.grad.abs().sum() > 0 for p in model.anchor.parameters())


def test_loss_adds_the_anchor_term_and_survives_fully_ignored_tiles():
    model = _model().train()
    opt, sar = _inputs(12, 2, 64, 64)
    target = torch.randint(0, 6, (1, 64, 64), generator=torch.Generator().manual_seed(4))
    outputs = model.forward_train(opt, sar)
    total = model.loss(outputs, target)
    ce = torch.nn.functional.cross_entropy(outputs["logits"], target)
    assert total.item() > ce.item() + 1e-4  # anchor alignment + reconstruction are added
    ce_only = _model(anchor_weight=0.0).train()
    ce_only.load_state_dict(model.state_dict())
    out0 = ce_only.forward_train(opt, sar)
    assert torch.allclose(ce_only.loss(out0, target), torch.nn.functional.cross_entropy(out0["logits"], target), atol=1e-5)
    all_ignored = torch.full((1, 64, 64), 255)
    loss = model.loss(outputs, all_ignored, ignore_index=255)
    assert torch.isfinite(loss) and loss.item() == 0.0


def test_plain_forward_skips_anchor_branch_and_matches_forward_train_in_eval():
    model = _model().eval()
    calls = []
    model.anchor.register_forward_hook(lambda *a: calls.append("anchor"))
    model.anchor.encoder.register_forward_hook(lambda *a: calls.append("encoder"))
    opt, sar = _inputs(12, 2, 64, 96)
    with torch.no_grad():
        plain = model(opt, sar)
        train_out = model.forward_train(opt, sar)
    assert calls == []
    assert torch.equal(plain, train_out["logits"])
    # the loss is where the anchor runs (sanity check that the hook would fire)
    model.loss(train_out, torch.zeros(1, 64, 96, dtype=torch.long))
    assert "anchor" in calls


def test_eval_is_deterministic():
    model = _model().eval()
    opt, sar = _inputs(12, 2, 64, 64)
    with torch.no_grad():
        a = model(opt, sar)
        b = model(opt, sar)
    assert torch.equal(a, b)


def test_num_blocks_and_order_change_the_parameter_count():
    def count(**kw):
        return sum(p.numel() for p in _model(**kw).parameters())

    base = count()
    assert count(num_blocks=2) < base < count(num_blocks=4)
    assert count(order=2) < base < count(order=5)
    assert count(order=1) < count(order=2)


def test_config_is_json_and_rebuilds_the_same_network():
    model = _model(4, 1, 7, num_blocks=2, order=3, channels=32, embed_dim=64, depth=2, heads=4).eval()
    cfg = json.loads(json.dumps(model.config))
    assert cfg["num_blocks"] == 2 and cfg["order"] == 3 and cfg["optical_bands"] == 4
    rebuilt = build_model("cloudlulc_net", **cfg).eval()
    rebuilt.load_state_dict(model.state_dict())
    opt, sar = _inputs(4, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(opt, sar), rebuilt(opt, sar))


def test_reliability_map_is_input_sized_and_bounded():
    model = _model().eval()
    opt, sar = _inputs(12, 2, 64, 128, batch=2)
    r = model.reliability(opt, sar)
    assert r.shape == (2, 1, 64, 128)
    assert r.min() >= 0 and r.max() <= 1
    assert model.reliability(opt, sar, reduce=None).shape == (2, 64, 64, 128)


def test_orm_gates_the_optical_stream():
    """With the ORM forced to 'unreliable everywhere' the prediction ignores the optical input."""
    model = _model().eval()
    last = model.orm.estimator[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-40.0)
    opt, sar = _inputs(12, 2, 64, 64)
    other_opt = torch.randn_like(opt) * 5
    with torch.no_grad():
        a, b = model(opt, sar), model(other_opt, sar)
        assert model.reliability(opt, sar).max() < 1e-12
    assert torch.allclose(a, b, atol=1e-4)
    # whereas a normally initialised ORM lets the optical input through
    fresh = _model().eval()
    with torch.no_grad():
        assert not torch.allclose(fresh(opt, sar), fresh(other_opt, sar), atol=1e-3)


def test_bf16_autocast_keeps_the_fft_in_fp32():
    model = _model().eval()
    opt, sar = _inputs(12, 2, 96, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(opt, sar)
    assert out.shape == (1, 6, 96, 64)
    assert torch.isfinite(out.float()).all()


def test_bad_inputs_and_options_raise_optsar_errors():
    model = _model().eval()
    opt, sar = _inputs(12, 2, 64, 64)
    with pytest.raises(OptsarError, match="optical"):
        model(opt[:, :5], sar)
    with pytest.raises(OptsarError, match="multiples"):
        model(opt[..., :40], sar[..., :40])
    outputs = model.forward_train(opt, sar)
    with pytest.raises(OptsarError, match="class indices"):
        model.loss(outputs, torch.full((1, 64, 64), 7))
    with pytest.raises(OptsarError, match="Unknown CloudLULC-Net option"):
        _model(blocks=3)
    with pytest.raises(OptsarError, match="heads"):
        _model(embed_dim=100, heads=8)


def _fit_one_pixel_stripes(decoder: str, steps: int = 150) -> float:
    """Train on 1-px stripes (class = sign of optical band 0 at each pixel); return the training accuracy."""
    model = _model(2, 1, 2, channels=16, num_blocks=1, order=1, embed_dim=32, depth=1, heads=2,
                   anchor_weight=0.0, decoder=decoder)
    gen = torch.Generator().manual_seed(0)
    opt_in = torch.randn(4, 2, 32, 32, generator=gen)
    opt_in[:, 0] = torch.where(torch.arange(32) % 2 == 0, 1.0, -1.0).view(1, 1, 32)  # alternating columns
    sar = torch.randn(4, 1, 32, 32, generator=gen)
    target = (opt_in[:, 0] > 0).long()
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model.loss(model.forward_train(opt_in, sar), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return float((model.eval()(opt_in, sar).argmax(1) == target).float().mean())


def test_the_full_resolution_decoder_draws_what_a_quarter_resolution_head_cannot():
    """One-pixel-wide classes: the default decoder fits them, the 1/4 head stays near chance."""
    assert _fit_one_pixel_stripes("full") > 0.98
    assert _fit_one_pixel_stripes("quarter") < 0.75


def test_decoder_option_and_configurations_written_before_it():
    from optsar_plugin.models import complete_config

    model = _model(channels=32, embed_dim=64, depth=1, heads=4)
    assert model.config["decoder"] == "full"
    old = {k: v for k, v in model.config.items() if k != "decoder"}
    assert complete_config("cloudlulc_net", old)["decoder"] == "quarter"  # older checkpoints had the 1/4 head
    quarter = build_model("cloudlulc_net", **complete_config("cloudlulc_net", old)).eval()
    opt, sar = _inputs(12, 2, 64, 64)
    with torch.no_grad():
        assert quarter(opt, sar).shape == (1, 6, 64, 64)
    assert sum(p.numel() for p in quarter.parameters()) < sum(p.numel() for p in model.parameters())
    with pytest.raises(OptsarError, match="decoder"):
        _model(decoder="eighth")


def test_context_dropout_spares_cloudy_pixels_and_evaluation():
    """Training zeroes the context of clear pixels (high ORM reliability) with probability p, never of cloudy ones."""
    from optsar_plugin.models import complete_config
    from optsar_plugin.models.cloudlulc_net import CLEAR_SKY

    small = dict(channels=32, embed_dim=64, depth=1, heads=4)
    model = _model(**small)
    assert model.config["context_dropout"] == 0.5  # on by default (see the module docstring)
    old = {k: v for k, v in model.config.items() if k != "context_dropout"}
    assert complete_config("cloudlulc_net", old)["context_dropout"] == 0.0  # older checkpoints trained without
    decoder = model.decoder.train()
    context = torch.rand(4, 8, 64, 64) + 1.0  # never zero by itself
    reliability = torch.full((4, 1, 64, 64), 0.6)
    reliability[:, :, :, :24] = 0.6 * CLEAR_SKY * 0.9  # a cloud: reliability below the clear-sky gate
    torch.manual_seed(1)
    out = decoder.drop_context(context, reliability)
    assert torch.equal(out[..., :24], context[..., :24])  # cloudy pixels always keep their context
    clear_out, clear_in = out[..., 24:], context[..., 24:]
    dropped = (clear_out == 0).all(dim=1, keepdim=True)  # per pixel, all channels together
    assert 0.4 < dropped.float().mean() < 0.6  # p = 0.5 of the clear pixels
    assert torch.allclose(clear_out * ~dropped, 2 * clear_in * ~dropped)  # kept ones scaled by 1/(1-p)
    assert torch.equal(decoder.eval().drop_context(context, reliability), context)  # evaluation keeps everything
    plain = _model(**small, context_dropout=0.0)
    plain.load_state_dict(model.state_dict())
    opt, sar = _inputs(12, 2, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(opt, sar), plain.eval()(opt, sar))
        torch.manual_seed(1)
        assert not torch.allclose(model.train()(opt, sar), plain.train()(opt, sar))
    with pytest.raises(OptsarError, match="context_dropout"):
        _model(context_dropout=1.0)
