"""Tests of optsar_plugin.models.losses (focal loss, CE with ignore index, alpha helper)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from optsar_plugin.models.losses import (  # noqa: E402
    FocalLoss,
    cross_entropy,
    focal_loss,
    inverse_frequency_alpha,
)


def _batch(seed=0, b=2, k=5, h=6, w=7, ignore_frac=0.2):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, k, h, w, generator=g) * 3
    target = torch.randint(0, k, (b, h, w), generator=g)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def test_gamma0_uniform_alpha_equals_cross_entropy():
    logits, target = _batch()
    assert (target == 255).any()
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), ref, atol=1e-6)
    assert torch.allclose(focal_loss(logits, target, gamma=0.0, alpha=[1.0] * 5), ref, atol=1e-6)
    assert torch.allclose(cross_entropy(logits, target), ref, atol=1e-6)


def test_focal_down_weights_easy_pixels():
    # two pixels, class 0 true: one confidently right (easy), one wrong (hard)
    logits = torch.tensor([[4.0, 0.0, 0.0], [-1.0, 2.0, 0.0]]).T.reshape(1, 3, 1, 2)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    ce = focal_loss(logits, target, gamma=0.0, reduction="none")[0, 0]
    fl = focal_loss(logits, target, gamma=2.0, reduction="none")[0, 0]
    p = torch.softmax(logits, 1)[0, 0, 0]  # p_t per pixel
    assert p[0] > 0.9 and p[1] < 0.1
    # exactly (1 - p_t)^gamma times CE, Eq. (9)
    assert torch.allclose(fl, (1 - p) ** 2 * ce, rtol=1e-5)
    ratio = fl / ce
    assert ratio[0] < 0.01 and ratio[1] > 0.8  # easy pixel down-weighted far more
    assert focal_loss(logits, target, gamma=2.0) < focal_loss(logits, target, gamma=0.0)


def test_ignored_pixels_contribute_nothing():
    logits, target = _batch(seed=1)
    ignored = target == 255
    base = focal_loss(logits, target)
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 1e4 * torch.randn(int(ignored.sum()) * 5)
    assert torch.allclose(focal_loss(changed, target), base)
    # the mean is over valid pixels only: equals the mean of the per-pixel map on valid pixels
    per_pixel = focal_loss(logits, target, reduction="none")
    assert torch.all(per_pixel[ignored] == 0)
    assert torch.allclose(base, per_pixel[~ignored].mean())
    # other ignore values are honoured
    t2 = target.clone()
    t2[ignored] = 0
    t2[0, 0, 0] = 7
    assert torch.isfinite(focal_loss(torch.randn(2, 5, 6, 7), t2, ignore_index=7))


def test_all_ignored_gives_zero_with_graph():
    logits = torch.randn(1, 4, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), 255, dtype=torch.long)
    loss = focal_loss(logits, target, alpha=[1, 2, 3, 4])
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_alpha_per_class_matches_hand_computation():
    # one image, 3 pixels, 3 classes, plus one ignored pixel
    logit_rows = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0], [0.3, 0.2, 0.1], [9.0, -9.0, 0.0]]
    labels = [0, 1, 2, 255]
    alpha = [0.25, 1.0, 2.0]
    gamma = 2.0
    logits = torch.tensor(logit_rows).T.reshape(1, 3, 1, 4)
    target = torch.tensor(labels).reshape(1, 1, 4)
    total, n = 0.0, 0
    for row, y in zip(logit_rows, labels):
        if y == 255:
            continue
        z = sum(math.exp(v) for v in row)
        p = math.exp(row[y]) / z
        total += -alpha[y] * (1 - p) ** gamma * math.log(p)
        n += 1
    expected = total / n
    got = focal_loss(logits, target, gamma=gamma, alpha=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # alpha scales each class's term: doubling class 2's alpha changes the loss by that term only
    alpha2 = [0.25, 1.0, 4.0]
    row, y = logit_rows[2], 2
    p = math.exp(row[y]) / sum(math.exp(v) for v in row)
    term = -((1 - p) ** gamma) * math.log(p)
    got2 = focal_loss(logits, target, gamma=gamma, alpha=alpha2)
    assert (got2 - got).item() == pytest.approx(2.0 * term / n, rel=1e-5)
    # weighted CE helper: gamma 0 with weights, normalised by valid-pixel count
    ce_expected = (
        sum(
            -alpha[y] * math.log(math.exp(r[y]) / sum(math.exp(v) for v in r))
            for r, y in zip(logit_rows, labels)
            if y != 255
        )
        / n
    )
    assert cross_entropy(logits, target, weight=alpha).item() == pytest.approx(ce_expected, rel=1e-5)


def test_module_form_and_half_precision():
    logits, target = _batch(seed=2)
    mod = FocalLoss(gamma=2.0, alpha=[1, 2, 1, 0.5, 1])
    ref = focal_loss(logits, target, gamma=2.0, alpha=[1, 2, 1, 0.5, 1])
    assert torch.allclose(mod(logits, target), ref)
    half = focal_loss(logits.bfloat16(), target)
    assert half.dtype == torch.float32 and torch.isfinite(half)
    assert half.item() == pytest.approx(focal_loss(logits.bfloat16().float(), target).item(), rel=1e-5)


def test_bad_inputs_raise():
    logits, target = _batch(seed=3)
    bad = target.clone()
    bad[0, 0, 0] = 5  # class index out of range (K = 5) and not ignore_index
    with pytest.raises(ValueError, match="outside"):
        focal_loss(logits, bad)
    with pytest.raises(ValueError, match="does not match"):
        focal_loss(logits, target[:, :-1])
    with pytest.raises(ValueError, match="one value per class"):
        focal_loss(logits, target, alpha=[1.0, 2.0])


def test_inverse_frequency_alpha():
    a = inverse_frequency_alpha([100, 10, 890])
    assert sum(a) / 3 == pytest.approx(1.0)
    # proportional to 1/frequency
    assert a[1] / a[0] == pytest.approx(10.0)
    assert a[0] / a[2] == pytest.approx(8.9)
    # absent classes get the largest present weight
    b = inverse_frequency_alpha([100, 0, 300], normalise="none")
    assert b == pytest.approx([4.0, 4.0, 4.0 / 3])
    assert sum(inverse_frequency_alpha([1, 3], normalise="sum")) == pytest.approx(1.0)
    assert inverse_frequency_alpha([1, 4], normalise="none", power=0.5) == pytest.approx(
        [math.sqrt(5), math.sqrt(5 / 4)]
    )
    with pytest.raises(ValueError):
        inverse_frequency_alpha([0, 0])
