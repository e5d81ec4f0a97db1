"""MOSFNet: shapes for any band count and tile size, a training step, eval determinism, the FIM/FFM
switches, config round trip and the adaptation of pretrained timm weights to the band counts."""

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from optsar_plugin.errors import OptsarError  # noqa: E402
from optsar_plugin.models import build_model  # noqa: E402
from optsar_plugin.models.mosfnet import FIM, adapt_stem_weight  # noqa: E402
from tests.helpers import model_inputs as _inputs  # noqa: E402

SMALL = {"decoder_channels": 32}  # a narrow UPerNet keeps the tests fast; the rest is the paper's network


def _build(opt=4, sar=1, classes=7, **options):
    torch.manual_seed(0)
    return build_model("mosfnet", optical_bands=opt, sar_bands=sar, num_classes=classes, **options)


@pytest.fixture(scope="module")
def small_model():
    """Optical 4 / SAR 1 / 7 classes with a narrow decoder, in eval mode (shared by read-only tests)."""
    return _build(**SMALL).eval()


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "opt,sar,classes,sizes",
    [(4, 1, 7, [(64, 64), (96, 64)]), (13, 2, 9, [(64, 96)]), (1, 4, 3, [(96, 96)])],
)
def test_logits_at_input_resolution_for_band_counts_and_tile_sizes(opt, sar, classes, sizes, request):
    if (opt, sar, classes) == (4, 1, 7):
        model = request.getfixturevalue("small_model")
    else:
        model = _build(opt, sar, classes, **SMALL).eval()
    for h, w in sizes:
        o, s = _inputs(opt, sar, h, w)
        with torch.no_grad():
            y = model(o, s)
        assert isinstance(y, torch.Tensor)  # the plain forward gives logits only
        assert y.shape == (1, classes, h, w)
        assert torch.isfinite(y).all()


def test_paper_configuration_defaults_and_config_round_trip():
    model = _build()
    cfg = model.config
    assert json.loads(json.dumps(cfg)) == cfg
    assert cfg["decoder_channels"] == 512 and cfg["use_fim"] and cfg["use_ffm"] and cfg["d_state"] == 16
    assert "pretrained_path" not in cfg
    again = build_model("mosfnet", **cfg)
    assert again.config == cfg
    assert [(k, v.shape) for k, v in again.state_dict().items()] == [(k, v.shape) for k, v in model.state_dict().items()]
    again.load_state_dict(model.state_dict())
    o, s = _inputs(4, 1, 64, 64)
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(o, s), model(o, s))


def test_training_step_gives_finite_loss_and_gradients_for_every_parameter():
    model = _build(aux_head=True, **SMALL).train()
    o, s = _inputs(4, 1, 64, 96, batch=2)
    target = torch.randint(0, 7, (2, 64, 96), generator=torch.Generator().manual_seed(2))
    target[0, :10] = 255  # ignored pixels
    out = model.forward_train(o, s)
    assert set(out) == {"logits", "aux_logits"}
    assert out["logits"].shape == out["aux_logits"].shape == (2, 7, 64, 96)
    loss = model.loss(out, target, ignore_index=255)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not missing and not bad, (missing[:5], bad[:5])
    # the auxiliary term is weighted 0.4 on top of the main cross entropy
    main_only = model.loss({"logits": out["logits"]}, target)
    assert loss.item() > main_only.item()
    # a tile with every pixel ignored contributes a zero, not a NaN
    zero = model.loss(out, torch.full_like(target, 255))
    assert zero.item() == 0.0


def test_batch_of_one_trains_despite_the_global_pooling_branch():
    model = _build(**SMALL).train()
    o, s = _inputs(4, 1, 64, 64)
    loss = model.loss(model.forward_train(o, s), torch.zeros(1, 64, 64, dtype=torch.long))
    loss.backward()
    assert torch.isfinite(loss)


def test_eval_mode_is_deterministic(small_model):
    model = small_model
    o, s = _inputs(4, 1, 64, 64)
    with torch.no_grad():
        a, b = model(o, s), model(o, s)
    assert torch.equal(a, b)


def test_fim_ffm_switches_change_the_architecture_and_still_run():
    full, no_fim, no_ffm, base = (
        _build(use_fim=f, use_ffm=m, **SMALL) for f, m in [(True, True), (False, True), (True, False), (False, False)]
    )
    counts = [_n_params(m) for m in (full, no_fim, no_ffm, base)]
    assert counts[0] > counts[1] > counts[3] and counts[0] > counts[2] > counts[3]
    assert no_fim.fim is None and no_ffm.ffm is None and base.fim is None and base.ffm is None
    o, s = _inputs(4, 1, 64, 64)
    for m in (no_fim, no_ffm, base):
        with torch.no_grad():
            assert m.eval()(o, s).shape == (1, 7, 64, 64)
    # the paper's baseline: the two encoders' (normalised) stage outputs added pixel by pixel
    with torch.no_grad():
        fused = base.fused_features(o, s)
        fo, fs = base.encoder_opt(o), base.encoder_sar(s)
        for i, f in enumerate(fused):
            torch.testing.assert_close(f, base.out_norm_opt[i](fo[i]) + base.out_norm_sar[i](fs[i]))


def test_fim_interleaves_the_split_blocks_as_eq1():
    torch.manual_seed(0)
    fim = FIM(8).eval()
    seen = {}
    for name in ("expand_opt", "expand_sar", "integrate_opt", "integrate_sar"):
        getattr(fim, name).register_forward_hook(
            lambda mod, args, out, name=name: seen.__setitem__(name, (args[0].detach(), out.detach()))
        )
    f_opt, f_sar = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    with torch.no_grad():
        out_opt, out_sar = fim(f_opt, f_sar)
    o = seen["expand_opt"][1].chunk(4, 1)
    s = seen["expand_sar"][1].chunk(4, 1)
    assert o[0].shape[1] == 4  # 2C split into four blocks of C/2
    torch.testing.assert_close(seen["integrate_opt"][0], torch.cat([o[0], s[1], o[2], s[3]], 1))
    torch.testing.assert_close(seen["integrate_sar"][0], torch.cat([s[0], o[1], s[2], o[3]], 1))
    assert out_opt.shape == out_sar.shape == f_opt.shape


def test_bad_inputs_and_options_raise_optsar_errors(small_model):
    model = small_model
    o, s = _inputs(4, 1, 64, 64)
    with pytest.raises(OptsarError, match="optical"):
        model(o[:, :3], s)
    with pytest.raises(OptsarError, match="multiples of 32"):
        model(o[..., :48], s[..., :48])
    with pytest.raises(OptsarError, match="Unknown MOSFNet option"):
        _build(decoder_width=64)
    with pytest.raises(OptsarError, match="not found"):
        _build(pretrained_path="/nonexistent/convnextv2.safetensors", **SMALL)


def test_stem_adaptation_rule():
    w = torch.randn(96, 3, 4, 4)
    torch.testing.assert_close(adapt_stem_weight(w, 3, True), w)
    four = adapt_stem_weight(w, 4, True)
    torch.testing.assert_close(four[:, :3], w * 0.75)
    torch.testing.assert_close(four[:, 3], w.mean(1) * 0.75)
    torch.testing.assert_close(adapt_stem_weight(w, 1, False)[:, 0], w.sum(1))
    two = adapt_stem_weight(w, 2, False)
    torch.testing.assert_close(two[:, 0], two[:, 1])
    torch.testing.assert_close(two[:, 0], w.mean(1) * 1.5)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_pretrained_timm_weights_are_loaded_and_the_stems_adapted(tmp_path, fmt):
    import timm

    torch.manual_seed(3)
    ref = timm.create_model("convnextv2_tiny", pretrained=False)  # 3-channel ImageNet layout, random values
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "convnextv2_tiny.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "convnextv2_tiny.pth"
        torch.save(sd, str(path))
    model = _build(4, 1, 7, pretrained_path=str(path), **SMALL)
    stem = sd["stem.0.weight"]
    w_opt = model.encoder_opt.stem_0.weight.detach()
    w_sar = model.encoder_sar.stem_0.weight.detach()
    assert w_opt.shape == (96, 4, 4, 4) and w_sar.shape == (96, 1, 4, 4)
    torch.testing.assert_close(w_opt[:, :3], stem * 0.75)  # RGB kept, rescaled by 3/4
    torch.testing.assert_close(w_opt[:, 3], stem.mean(1) * 0.75)  # extra band from the RGB mean
    torch.testing.assert_close(w_sar[:, 0], stem.sum(1))  # one band: the mean rescaled by 3
    # every other encoder weight is the file's
    for enc in (model.encoder_opt, model.encoder_sar):
        torch.testing.assert_close(enc.stages_2.blocks[4].mlp.fc1.weight.detach(), sd["stages.2.blocks.4.mlp.fc1.weight"])
        torch.testing.assert_close(enc.stem_1.weight.detach(), sd["stem.1.weight"])
    assert model.pretrained_path == str(path) and "pretrained_path" not in model.config
    with torch.no_grad():
        assert model.eval()(*_inputs(4, 1, 64, 64)).shape == (1, 7, 64, 64)


def test_pretrained_file_of_another_network_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"stem.0.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, str(path))
    with pytest.raises(OptsarError, match="do not fit"):
        _build(pretrained_path=str(path), **SMALL)


def test_ffm_residual_connections_with_the_original_features():
    """C = F~ + F~ * sigmoid(B) per branch (the text's residual connections); ffm_residual=False is Eq. (4) alone."""
    from optsar_plugin.models.mosfnet import FFM

    torch.manual_seed(0)
    gate = FFM(8, d_state=2, ssm_ratio=1.0, residual=False).eval()
    res = FFM(8, d_state=2, ssm_ratio=1.0, residual=True).eval()
    res.load_state_dict(gate.state_dict())
    f_opt, f_sar = torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4)
    with torch.no_grad():
        assert torch.allclose(res(f_opt, f_sar), gate(f_opt, f_sar) + f_opt + f_sar, atol=1e-6)
    assert FFM(8, residual=True, kernel=1).out_conv_opt.kernel_size == (1, 1)


def test_smaller_convnextv2_encoders_keep_the_wiring():
    tiny, atto = _build(**SMALL), _build(encoder="convnextv2_atto", **SMALL)
    assert atto.stage_channels == (40, 80, 160, 320) and tiny.stage_channels == (96, 192, 384, 768)
    assert _n_params(atto) < 0.2 * _n_params(tiny)
    assert [type(m).__name__ for m in atto.children()] == [type(m).__name__ for m in tiny.children()]
    with torch.no_grad():
        assert atto.eval()(*_inputs(4, 1, 64, 64)).shape == (1, 7, 64, 64)
    with pytest.raises(OptsarError, match="encoder"):
        _build(encoder="resnet50")


def test_configurations_written_before_the_new_options_rebuild_the_network_they_were_trained_as():
    from optsar_plugin.models import complete_config

    old = {k: v for k, v in _build(**SMALL).config.items() if k not in ("encoder", "ffm_residual", "ffm_kernel")}
    cfg = complete_config("mosfnet", old)
    assert cfg["ffm_residual"] is False and cfg["encoder"] == "convnextv2_tiny" and cfg["ffm_kernel"] == 3
    assert complete_config("mosfnet", {**old, "ffm_residual": True})["ffm_residual"] is True
