"""The pure-PyTorch selective scan against the step-by-step reference, its gradients, and SS2D's scan orders."""

import pytest

torch = pytest.importorskip("torch")

from optsar_plugin.models.selective_scan import (  # noqa: E402
    selective_scan,
    selective_scan_reference,
    selective_scan_torch,
)
from optsar_plugin.models.ss2d import SS2D, cross_merge, cross_scan  # noqa: E402


def _inputs(nb, nd, length, n, groups, dtype=torch.float32, positive_delta=False, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    u = r(nb, nd, length)
    delta = r(nb, nd, length)
    if positive_delta:  # without softplus the step must stay positive or exp(dt*A) grows
        delta = delta.abs() * 0.3
    A = -(torch.rand(nd, n, generator=g, dtype=dtype) * 4 + 0.1)
    shape = (nb, n, length) if groups is None else (nb, groups, n, length)
    return u, delta, A, r(*shape), r(*shape), r(nd), r(nd)


CASES = [
    # nb, nd, L, N, groups (None: B/C shaped (batch, N, L))
    (2, 8, 37, 4, 4),
    (1, 6, 50, 3, None),
    (2, 12, 64, 5, 2),
    (1, 4, 1, 2, 1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("lanes", [1, 3, 8])
def test_forward_matches_reference_with_bias_and_softplus(case, lanes):
    u, delta, A, B, C, D, bias = _inputs(*case)
    ref = selective_scan_reference(u, delta, A, B, C, D, bias, delta_softplus=True)
    out = selective_scan_torch(u, delta, A, B, C, D, bias, delta_softplus=True, lanes=lanes)
    assert out.shape == u.shape and out.dtype == u.dtype
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lanes", [1, 5])
def test_forward_without_softplus_bias_or_skip(lanes):
    u, delta, A, B, C, _, _ = _inputs(2, 8, 41, 4, 2, positive_delta=True, seed=1)
    ref = selective_scan_reference(u, delta, A, B, C, None, None, delta_softplus=False)
    out = selective_scan_torch(u, delta, A, B, C, None, None, delta_softplus=False, lanes=lanes)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_reference_is_the_written_out_recurrence():
    # one channel, one state, no groups: h_t = exp(dt*a) h_{t-1} + dt*b_t*u_t, y_t = c_t h_t + d u_t
    u = torch.tensor([[[1.0, -2.0, 0.5]]])
    delta = torch.tensor([[[0.3, 25.0, -1.0]]])  # 25 > softplus threshold: used as is
    A = torch.tensor([[-0.7]])
    B = torch.tensor([[[0.2, 1.0, -0.4]]])
    C = torch.tensor([[[1.5, -0.3, 2.0]]])
    D, bias = torch.tensor([0.25]), torch.tensor([0.1])
    h, ys = 0.0, []
    for t in range(3):
        x = float(delta[0, 0, t] + bias[0])
        dt = x if x > 20 else float(torch.log1p(torch.exp(torch.tensor(x))))
        h = float(torch.exp(torch.tensor(dt * A[0, 0].item()))) * h + dt * float(B[0, 0, t]) * float(u[0, 0, t])
        ys.append(float(C[0, 0, t]) * h + float(D[0]) * float(u[0, 0, t]))
    for fn in (selective_scan_reference, selective_scan_torch):
        out = fn(u, delta, A, B, C, D, bias, delta_softplus=True)
        torch.testing.assert_close(out, torch.tensor([[ys]]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lanes", [1, 3])
def test_gradients_pass_gradcheck_in_float64(lanes):
    args = [t.requires_grad_() for t in _inputs(2, 4, 13, 3, 2, dtype=torch.float64, seed=2)]

    def fn(*a):
        return selective_scan_torch(*a, delta_softplus=True, lanes=lanes)

    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("lanes", [1, 4])
def test_gradients_match_reference_autograd(lanes):
    base = _inputs(2, 8, 30, 4, 4, seed=3)
    a1 = [t.clone().requires_grad_() for t in base]
    a2 = [t.clone().requires_grad_() for t in base]
    w = torch.randn(2, 8, 30, generator=torch.Generator().manual_seed(4))
    (selective_scan_reference(*a1, delta_softplus=True) * w).sum().backward()
    (selective_scan_torch(*a2, delta_softplus=True, lanes=lanes) * w).sum().backward()
    for name, r, o in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], a1, a2):
        assert o.grad is not None, name
        torch.testing.assert_close(o.grad, r.grad, rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


def test_ungrouped_bc_gradient_shapes():
    u, delta, A, B, C, D, bias = (t.requires_grad_() for t in _inputs(1, 6, 20, 3, None, seed=5))
    selective_scan_torch(u, delta, A, B, C, D, bias).sum().backward()
    assert B.grad.shape == B.shape and C.grad.shape == C.shape
    assert torch.isfinite(B.grad).all() and torch.isfinite(C.grad).all()


def test_half_precision_inputs_are_computed_in_float32():
    u, delta, A, B, C, D, bias = _inputs(1, 8, 24, 4, 2, seed=6)
    ref = selective_scan_reference(u, delta, A, B, C, D, bias)
    out = selective_scan_torch(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16(), D, bias)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=5e-2, atol=5e-2)


def test_dispatch_on_cpu_uses_the_torch_scan_and_is_labelled_for_profiling():
    args = _inputs(1, 8, 16, 4, 4, seed=7)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = selective_scan(*args)
    torch.testing.assert_close(out, selective_scan_torch(*args), rtol=0, atol=0)
    assert any(e.key == "selective_scan" for e in prof.key_averages())


def test_bad_shapes_are_rejected():
    u, delta, A, B, C, D, bias = _inputs(1, 6, 10, 3, 2)
    with pytest.raises(ValueError):
        selective_scan_torch(u, delta, A, B[:, :, :2], C, D, bias)  # N mismatch
    with pytest.raises(ValueError):
        selective_scan_torch(u, delta, A, torch.randn(1, 4, 3, 10), torch.randn(1, 4, 3, 10), D, bias)  # 4 !| 6


def test_cross_scan_orders_and_merge_on_a_non_square_map():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, 20)
    torch.testing.assert_close(xs[:, 0], x.reshape(2, 3, 20))  # row-major
    torch.testing.assert_close(xs[:, 1, :, 1], x[:, :, 1, 0])  # column-major: second token is (h=1, w=0)
    torch.testing.assert_close(xs[:, 2], xs[:, 0].flip(-1))
    torch.testing.assert_close(xs[:, 3], xs[:, 1].flip(-1))
    torch.testing.assert_close(cross_merge(xs, 4, 5), 4 * x)  # every order maps back to its pixel


def test_ss2d_shapes_parameters_and_gradients():
    m = SS2D(d_inner=12, d_state=4, dt_rank=2)
    assert m.A_logs.shape == (48, 4) and m.Ds.shape == (48,) and m.x_proj_weight.shape == (4, 10, 12)
    torch.testing.assert_close(-torch.exp(m.A_logs[0]), -torch.arange(1.0, 5.0))  # S4D-real init
    dt = torch.nn.functional.softplus(m.dt_projs_bias.detach())
    assert float(dt.min()) >= 1e-4 - 1e-7 and float(dt.max()) <= 0.1 + 1e-6
    x = torch.randn(2, 12, 4, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("lanes", [1, 4])
def test_scan_is_causal_and_starts_from_a_zero_state(lanes):
    u, delta, A, B, C, D, bias = _inputs(1, 4, 24, 3, 2, seed=8)
    y = selective_scan_torch(u, delta, A, B, C, D, bias, lanes=lanes)
    u2 = u.clone()
    u2[..., 10] += 1.0
    y2 = selective_scan_torch(u2, delta, A, B, C, D, bias, lanes=lanes)
    assert torch.equal(y[..., :10], y2[..., :10])
    assert (y[..., 10] != y2[..., 10]).all()  # the D skip and the new state
    assert (y[..., 11:] != y2[..., 11:]).any()  # carried forward by the state
    # batch items and sequences are independent: scanning the second item alone gives the same result
    u, delta, A, B, C, D, bias = _inputs(2, 4, 24, 3, 2, seed=9)
    both = selective_scan_torch(u, delta, A, B, C, D, bias, lanes=lanes)
    one = selective_scan_torch(u[1:], delta[1:], A, B[1:], C[1:], D, bias, lanes=lanes)
    torch.testing.assert_close(both[1:], one, rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (mamba_ssm kernel or the chunked PyTorch scan)")
def test_cuda_scan_matches_the_reference():
    args = _inputs(2, 16, 300, 8, 4, seed=10)
    ref = selective_scan_reference(*args)
    cuda_args = [t.cuda().requires_grad_() for t in args]
    out = selective_scan(*cuda_args)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    out.sum().backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in cuda_args)
    # the pure-PyTorch chunked form on the GPU as well, whether or not mamba_ssm is installed
    torch.testing.assert_close(selective_scan_torch(*[t.detach() for t in cuda_args]).cpu(), ref, rtol=1e-4, atol=1e-4)
