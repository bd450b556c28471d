"""Tests of paramstress.corruption (Sun et al. 2021, Eqs. 1, 5, 10, 11; Algorithm 2)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import optimize
from torch import nn

from paramstress.corruption import operators as C

P_VALUES = [1.0, 1.5, 2.0, 3.0, math.inf]


def np_pnorm(a: np.ndarray, p: float) -> float:
    a = np.abs(np.asarray(a, dtype=np.float64))
    m = a.max()
    if m == 0:
        return 0.0
    if math.isinf(p):
        return float(m)
    return float(m * np.sum((a / m) ** p) ** (1 / p))


# --------------------------------------------------------------------------------------
# Brute force: max of aᵀg over S(ε, p, n), independent of the closed form
# --------------------------------------------------------------------------------------

def _support_max(g_s: np.ndarray, eps: float, p: float, rng: np.random.Generator) -> float:
    """max aᵀg_s over ‖a‖_p = ε on one support (all coordinates may be nonzero)."""
    m = len(g_s)
    if p == 1.0:  # linear objective on the cross-polytope: the max is at a vertex ±ε e_i
        return max(s * eps * gi for gi in g_s for s in (-1, 1))
    if math.isinf(p):  # on the cube: the max is at a vertex of {±ε}^m
        return max(eps * float(np.dot(signs, g_s)) for signs in itertools.product((-1, 1), repeat=m))

    def neg_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        # f(z) = ε zᵀg / ‖z‖_p is scale-invariant: maximising it over z ≠ 0 is maximising
        # aᵀg over the p-sphere of radius ε (a = ε z/‖z‖_p).
        norm = float(np.sum(np.abs(z) ** p) ** (1 / p))
        dot = float(z @ g_s)
        dnorm = np.sign(z) * np.abs(z) ** (p - 1) / norm ** (p - 1)
        grad = eps * (g_s / norm - dot * dnorm / norm**2)
        return -eps * dot / norm, -grad

    best = -math.inf
    for _ in range(8):
        res = optimize.minimize(neg_and_grad, rng.normal(size=m), jac=True, method="BFGS",
                                options={"gtol": 1e-12, "maxiter": 2000})
        best = max(best, -float(res.fun))
    return best


def brute_force_max(g: np.ndarray, eps: float, p: float, n: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    best = -math.inf
    for size in range(1, n + 1):
        for support in itertools.combinations(range(len(g)), size):
            best = max(best, _support_max(g[list(support)], eps, p, rng))
    return best


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("n", [1, 2, 4])
def test_closed_form_matches_brute_force(p: float, n: int) -> None:
    rng = np.random.default_rng(123)
    g = rng.normal(size=5)
    eps = 0.7
    a = C.solve_corruption(torch.tensor(g), eps, p, n)
    closed = float(a.numpy() @ g)
    brute = brute_force_max(g, eps, p, n)
    # feasibility of the closed form
    assert np_pnorm(a.numpy(), p) == pytest.approx(eps, rel=1e-12)
    assert int((a != 0).sum()) <= n
    # it is at least as good as anything the brute force found, and the brute force
    # (an approximation from below) comes within its own optimisation tolerance
    assert closed >= brute - 1e-9
    assert closed == pytest.approx(brute, rel=1e-6)


def test_closed_form_beats_random_feasible_points() -> None:
    """No random point of S(ε, p, n) does better than the closed form (k = 8, n = 3)."""
    rng = np.random.default_rng(7)
    g = rng.normal(size=8)
    for p in [1.0, 1.25, 1.5, 2.0, 4.0, math.inf]:
        closed = float(C.solve_corruption(torch.tensor(g), 1.0, p, 3).numpy() @ g)
        for _ in range(300):
            z = np.zeros(8)
            idx = rng.choice(8, size=3, replace=False)
            z[idx] = rng.normal(size=3)
            z /= np_pnorm(z, p)
            assert float(z @ g) <= closed + 1e-12


# --------------------------------------------------------------------------------------
# Properties (hypothesis)
# --------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)
p_strategy = st.one_of(st.sampled_from([1.0, 1.01, 1.5, 2.0, 3.0, 7.5, 50.0, math.inf]),
                       st.floats(min_value=1.0, max_value=30.0))


@st.composite
def problem(draw):
    v = draw(st.lists(finite, min_size=1, max_size=25))
    assume(any(x != 0 for x in v))
    n = draw(st.integers(min_value=1, max_value=len(v)))
    p = draw(p_strategy)
    eps = draw(st.floats(min_value=1e-6, max_value=1e3))
    return torch.tensor(v, dtype=torch.float64), n, p, eps


@settings(max_examples=300, deadline=None)
@given(problem())
def test_corruption_lies_in_S_and_attains_indicator(args) -> None:
    v, n, p, eps = args
    a = C.solve_corruption(v, eps, p, n)
    assert a.dtype == v.dtype and a.shape == v.shape
    assert np_pnorm(a.numpy(), p) == pytest.approx(eps, rel=1e-9)  # ‖a‖_p = ε
    assert int((a != 0).sum()) <= n  # ‖a‖_0 ≤ n
    # aᵀg = ε‖top_n(g)‖_{p*} (Eq. 11)
    h = C.top_n(v, n).numpy()
    expected = eps * np_pnorm(h, C.dual_exponent(p))
    assert float(a.numpy() @ v.numpy()) == pytest.approx(expected, rel=1e-9)
    assert C.indicator(v, eps, p, n) == pytest.approx(expected, rel=1e-12)
    # the corruption only touches the top-n support, with the signs of v
    assert bool(((a != 0) <= (torch.tensor(h) != 0)).all())
    assert bool((torch.sign(a) * torch.sign(v) >= 0).all())


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=30), st.data())
def test_top_n_keeps_the_largest(values, data) -> None:
    v = torch.tensor(values, dtype=torch.float64)
    n = data.draw(st.integers(min_value=1, max_value=len(values)))
    h = C.top_n(v, n)
    assert int((h != 0).sum()) <= n
    assert bool(((h == v) | (h == 0)).all())  # entries are kept as they are, or zeroed
    assert int((h != 0).sum()) == min(n, int((v != 0).sum()))  # exactly n survive (or all nonzeros)
    # every dropped magnitude is at most every kept one
    dropped = v[(h == 0) & (v != 0)].abs()
    if dropped.numel():
        assert float(dropped.max()) <= float(h[h != 0].abs().min())
    if n == len(values):
        assert torch.equal(h, v)


def test_top_n_ties_are_broken_by_position() -> None:
    v = torch.tensor([1.0, -1.0, 1.0, 0.5, -1.0])
    assert C.top_n(v, 2).tolist() == [1.0, -1.0, 0.0, 0.0, 0.0]
    assert C.top_n(v, 3).tolist() == [1.0, -1.0, 1.0, 0.0, 0.0]
    assert C.top_n(v, 5).tolist() == v.tolist()
    # p = 1 picks the first of the tied maxima too
    assert C.solve_corruption(v, 2.0, 1, 5).tolist() == [2.0, 0.0, 0.0, 0.0, 0.0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=40), st.data())
def test_top_indices_is_the_stable_sort_prefix(values, data) -> None:
    """The O(k) selection picks exactly the set of a stable descending argsort's first n
    (many ties: small integers), which is what top_n promised before it stopped sorting."""
    v = torch.tensor(values, dtype=torch.float64)
    n = data.draw(st.integers(min_value=1, max_value=len(values)))
    reference = torch.argsort(v.abs(), descending=True, stable=True)[:n]
    assert C._top_indices(v, n).tolist() == sorted(reference.tolist())


# --------------------------------------------------------------------------------------
# Special cases and numerics
# --------------------------------------------------------------------------------------

def test_special_cases() -> None:
    g = torch.tensor([0.3, -2.0, 0.1, 1.0], dtype=torch.float64)
    h = torch.tensor([0.3, -2.0, 0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(C.solve_corruption(g, 0.5, 2, 3), 0.5 * h / h.norm())
    torch.testing.assert_close(C.solve_corruption(g, 0.5, math.inf, 3), 0.5 * torch.sign(h))
    torch.testing.assert_close(C.solve_corruption(g, 0.5, 1, 3), torch.tensor([0.0, -0.5, 0.0, 0.0], dtype=torch.float64))
    # p = 3: a ∝ sgn(h)|h|^{1/2}
    u = torch.sign(h) * h.abs() ** 0.5
    torch.testing.assert_close(C.solve_corruption(g, 0.5, 3, 3), 0.5 * u / (u.abs() ** 3).sum() ** (1 / 3))


def test_limits_are_continuous() -> None:
    g = torch.tensor([0.3, -2.0, 0.1, 1.0, -1.5], dtype=torch.float64)
    torch.testing.assert_close(C.solve_corruption(g, 1.0, 1 + 1e-9, 4), C.solve_corruption(g, 1.0, 1, 4))
    torch.testing.assert_close(C.solve_corruption(g, 1.0, 1e9, 4), C.solve_corruption(g, 1.0, math.inf, 4),
                               atol=1e-8, rtol=0)


def test_numerically_stable_for_extreme_scales_and_p() -> None:
    for scale in (1e-300, 1e300):
        g = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64) * scale
        for p in (1.001, 1.5, 2.0, 1000.0):
            a = C.solve_corruption(g, 1.0, p, 3)
            assert bool(torch.isfinite(a).all())
            assert np_pnorm(a.numpy(), p) == pytest.approx(1.0, rel=1e-12)
            assert math.isfinite(C.indicator(g, 1.0, p, 3))


def test_float32_input_returns_float32_computed_in_float64() -> None:
    g = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    a = C.solve_corruption(g, 1e-3, 2, 1000)
    assert a.dtype == torch.float32
    assert float(a.double().norm()) == pytest.approx(1e-3, rel=1e-6)
    assert C.solve_corruption(g, 1e-3, 2, 1000, dtype=torch.float64).dtype == torch.float64


def test_zeros_in_the_support() -> None:
    g = torch.tensor([0.0, 3.0, 0.0, -1.0, 0.0], dtype=torch.float64)
    a = C.solve_corruption(g, 0.2, math.inf, 4)  # only 2 nonzeros for n = 4
    assert a.tolist() == [0.0, 0.2, 0.0, -0.2, 0.0]
    assert float(a.abs().max()) == 0.2  # ‖a‖_∞ = ε
    a2 = C.solve_corruption(g, 0.2, 2, 4)
    assert float(a2.norm()) == pytest.approx(0.2)
    with pytest.raises(C.ZeroDirectionError, match="zero"):
        C.gradient_corruption(torch.zeros(5), 0.1, 2, 3)
    assert C.indicator(torch.zeros(5), 0.1, 2, 3) == 0.0


def test_dual_exponent() -> None:
    assert C.dual_exponent(1) == math.inf
    assert C.dual_exponent(math.inf) == 1.0
    assert C.dual_exponent(2) == 2.0
    assert C.dual_exponent(3) == 1.5


# --------------------------------------------------------------------------------------
# Random corruption (Eq. 5)
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", P_VALUES)
def test_random_corruption_uses_the_same_normaliser(p: float) -> None:
    k, n, eps = 50, 20, 0.3
    a = C.random_corruption(k, eps, p, n, torch.Generator().manual_seed(5), dtype=torch.float64)
    r = torch.randn(k, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(a, C.solve_corruption(r, eps, p, n), rtol=0, atol=0)
    assert np_pnorm(a.numpy(), p) == pytest.approx(eps, rel=1e-12)  # not ε·N(0,1) unnormalised
    assert int((a != 0).sum()) == (1 if p == 1 else n)


def test_random_corruption_is_reproducible_and_seed_dependent() -> None:
    a = C.random_corruption(100, 1.0, 2, 100, torch.Generator().manual_seed(1))
    b = C.random_corruption(100, 1.0, 2, 100, torch.Generator().manual_seed(1))
    c = C.random_corruption(100, 1.0, 2, 100, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32


def test_random_corruption_draws_on_the_generator_and_solves_on_the_device(monkeypatch) -> None:
    """``device=``: r is drawn by the (CPU) generator, moved, and top_n/signs run on the
    target device, so a GPU sweep does not pay a CPU top_n of k entries per draw."""
    seen = []
    real = C.unit_corruption

    def spy(v, p, n):
        seen.append(v.device)
        # the meta device holds no values to select from; the CPU calls below compute for real
        return torch.zeros_like(v) if v.device.type == "meta" else real(v, p, n)

    monkeypatch.setattr(C, "unit_corruption", spy)
    a = C.random_corruption(60, 0.5, math.inf, 7, torch.Generator().manual_seed(3),
                            dtype=torch.float64, device="meta")
    assert seen == [torch.device("meta")] and a.device.type == "meta" and a.dtype == torch.float64
    b = C.random_corruption(60, 0.5, math.inf, 7, torch.Generator().manual_seed(3), device="cpu")
    c = C.random_corruption(60, 0.5, math.inf, 7, torch.Generator().manual_seed(3))
    assert torch.equal(b, c) and seen[1:] == [torch.device("cpu")] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("p,n", [(math.inf, 100), (math.inf, 5000), (1, 5000), (2, 5000)])
def test_random_corruption_on_cuda_matches_the_cpu(p: float, n: int) -> None:
    """Same seed, same a on either device: bit-identical for p in {1, inf} (selection and
    signs), to float64 rounding for finite p > 1 (the normaliser's summation order)."""
    k = 5000
    cpu = C.random_corruption(k, 0.3, p, n, torch.Generator().manual_seed(9), dtype=torch.float64)
    gpu = C.random_corruption(k, 0.3, p, n, torch.Generator().manual_seed(9), dtype=torch.float64,
                              device="cuda")
    assert gpu.device.type == "cuda"
    if math.isinf(p) or p == 1:
        assert torch.equal(gpu.cpu(), cpu)
    else:
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-14, atol=0)


def test_random_corruption_is_isotropic() -> None:
    """p = 2, n = k: mean 0 and covariance (ε²/k) I, as for the uniform sphere."""
    k, eps, trials = 4, 2.0, 6000
    gen = torch.Generator().manual_seed(11)
    a = torch.stack([C.random_corruption(k, eps, 2, k, gen, dtype=torch.float64) for _ in range(trials)])
    assert float(a.mean(0).abs().max()) < 4 * eps / math.sqrt(k * trials)
    cov = (a.T @ a / trials).numpy()
    np.testing.assert_allclose(cov, np.eye(k) * eps**2 / k, atol=0.05)


# --------------------------------------------------------------------------------------
# Validation: before any compute, naming the fix
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "eps,p,n,match",
    [
        (1.0, 0.5, 2, "p must be in"),
        (1.0, float("nan"), 2, "p must be in"),
        (0.0, 2, 2, "eps must be a positive"),
        (-1.0, 2, 2, "eps must be a positive"),
        (math.inf, 2, 2, "eps must be a positive"),
        (1.0, 2, 0, "n must be >= 1"),
        (1.0, 2, 6, "n = 6 exceeds the subspace size k = 5"),
    ],
)
def test_bad_arguments_raise_before_compute(eps, p, n, match, monkeypatch) -> None:
    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("computation started before validation")

    monkeypatch.setattr(C, "_top_n", boom)
    monkeypatch.setattr(C, "unit_corruption", boom)
    g = torch.ones(5)
    with pytest.raises(ValueError, match=match):
        C.solve_corruption(g, eps, p, n)
    with pytest.raises(ValueError, match=match):
        C.gradient_corruption(g, eps, p, n)
    with pytest.raises(ValueError, match=match):
        C.indicator(g, eps, p, n)
    monkeypatch.setattr(torch, "randn", boom)
    with pytest.raises(ValueError, match=match):
        C.random_corruption(5, eps, p, n)


def test_bad_vectors_raise() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        C.solve_corruption(torch.tensor([1.0, float("nan")]), 1.0, 2, 1)
    with pytest.raises(ValueError, match="non-finite"):
        C.top_n(torch.tensor([1.0, float("inf")]), 1)
    with pytest.raises(ValueError, match="1-D"):
        C.solve_corruption(torch.ones(2, 2), 1.0, 2, 1)
    with pytest.raises(TypeError, match="integer"):
        C.solve_corruption(torch.ones(3), 1.0, 2, 1.5)
    with pytest.raises(TypeError, match="number"):
        C.solve_corruption(torch.ones(3), 1.0, "inf", 1)


# --------------------------------------------------------------------------------------
# Subspace selection
# --------------------------------------------------------------------------------------

class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.block = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 3, bias=False))


def test_select_all_in_model_order() -> None:
    model = Tiny()
    sel = C.select_parameters(model)
    assert [name for name, _ in sel] == [name for name, _ in model.named_parameters()]
    assert C.subspace_size(sel) == sum(p.numel() for p in model.parameters())


def test_select_by_names_types_layers_bias() -> None:
    model = Tiny()
    names = lambda sel: [name for name, _ in sel]  # noqa: E731
    assert names(C.select_parameters(model, names="*.weight")) == [
        "embed.weight", "conv.weight", "bn.weight", "block.0.weight", "block.1.weight", "block.2.weight"]
    assert names(C.select_parameters(model, names=["bn.*", "embed.weight"])) == ["embed.weight", "bn.weight", "bn.bias"]
    assert names(C.select_parameters(model, names="re:block\\.[01]\\..*")) == [
        "block.0.weight", "block.0.bias", "block.1.weight", "block.1.bias"]
    assert names(C.select_parameters(model, module_types=nn.BatchNorm2d)) == ["bn.weight", "bn.bias"]
    assert names(C.select_parameters(model, module_types=(nn.LayerNorm, nn.Embedding))) == [
        "embed.weight", "block.1.weight", "block.1.bias"]
    assert names(C.select_parameters(model, module_types=nn.Linear, include_bias=False)) == [
        "block.0.weight", "block.2.weight"]
    assert names(C.select_parameters(model, layers="block")) == [
        "block.0.weight", "block.0.bias", "block.1.weight", "block.1.bias", "block.2.weight"]
    assert names(C.select_parameters(model, layers=["block.2", "conv"])) == [
        "conv.weight", "conv.bias", "block.2.weight"]
    assert names(C.select_parameters(model, layers="block", module_types=nn.Linear)) == [
        "block.0.weight", "block.0.bias", "block.2.weight"]
    sel = C.select_parameters(model, module_types=nn.BatchNorm2d)
    assert sel[0][1] is model.bn.weight


def test_select_errors_name_what_exists() -> None:
    model = Tiny()
    with pytest.raises(ValueError, match=r"no parameter name matches 'nope\*'.*'conv.weight'"):
        C.select_parameters(model, names="nope*")
    with pytest.raises(ValueError, match=r"BatchNorm1d.*BatchNorm2d"):
        C.select_parameters(model, module_types=nn.BatchNorm1d)
    with pytest.raises(ValueError, match=r"unknown layer 'layer9'.*'block'"):
        C.select_parameters(model, layers="layer9")
    with pytest.raises(ValueError, match="selection is empty"):
        C.select_parameters(model, names="conv.*", module_types=nn.Linear)
    with pytest.raises(ValueError, match="selection is empty"):
        C.select_parameters(model, names="*.bias", include_bias=False)
    with pytest.raises(ValueError, match="no parameters"):
        C.select_parameters(nn.ReLU())
    with pytest.raises(TypeError):
        C.select_parameters(model, module_types=int)
    with pytest.raises(ValueError, match="empty"):
        C.as_named_parameters([])
    with pytest.raises(ValueError, match="twice"):
        C.as_named_parameters([model.bn.weight, model.bn.weight])


# --------------------------------------------------------------------------------------
# The gradient over a dataset (Algorithm 2, step 1)
# --------------------------------------------------------------------------------------

def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))


def _data(n: int = 10, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def _batches(x, y, sizes):
    start = 0
    for s in sizes:
        yield x[start:start + s], y[start:start + s]
        start += s


@pytest.mark.parametrize("training", [True, False])
def test_subspace_gradient_is_the_dataset_mean_in_eval_mode(training: bool) -> None:
    model = _mlp()
    with torch.no_grad():  # non-trivial running statistics, so eval ≠ train mode
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train(training)
    x, y = _data(10)
    params = C.select_parameters(model, names=["0.weight", "1.*", "4.bias"])
    g = C.subspace_gradient(model, params, nn.functional.cross_entropy, _batches(x, y, [4, 4, 2]))
    assert g.dtype == torch.float32 and g.shape == (C.subspace_size(params),)
    assert model.training is training and model[1].training is training

    # reference: the whole dataset in one batch, eval mode
    ref_model = _mlp()
    ref_model.load_state_dict(model.state_dict())
    ref_model.eval()
    loss = nn.functional.cross_entropy(ref_model(x), y)
    ref_named = dict(ref_model.named_parameters())
    ref = torch.autograd.grad(loss, [ref_named[name] for name, _ in params])
    torch.testing.assert_close(g, torch.cat([t.reshape(-1) for t in ref]), rtol=1e-5, atol=1e-7)
    # .grad attributes untouched
    assert all(p.grad is None for p in model.parameters())


def test_subspace_gradient_weights_by_batch_size() -> None:
    model = _mlp()
    x, y = _data(10)
    params = C.select_parameters(model, names="4.*")
    g_uneven = C.subspace_gradient(model, params, nn.functional.cross_entropy, _batches(x, y, [9, 1]))
    g_whole = C.subspace_gradient(model, params, nn.functional.cross_entropy, _batches(x, y, [10]))
    torch.testing.assert_close(g_uneven, g_whole, rtol=1e-5, atol=1e-7)


def test_subspace_gradient_with_transform_and_mixed_mode_restored() -> None:
    model = _mlp()
    model.train()
    model[3].eval()  # a module in a different mode from its parent
    x, y = _data(6)
    calls = []

    def transform(t):
        calls.append(len(t))
        return t * 2

    params = C.select_parameters(model, names="0.weight")
    C.subspace_gradient(model, params, nn.functional.cross_entropy, _batches(x, y, [3, 3]), transform=transform)
    assert calls == [3, 3]
    assert model.training and model[1].training and not model[3].training


def test_subspace_gradient_refuses_frozen_parameters_before_compute() -> None:
    model = _mlp()
    model[4].bias.requires_grad_(False)
    touched = []

    def batches():
        touched.append(True)
        yield _data(4)

    def loss_fn(out, y):  # pragma: no cover - must not be reached
        touched.append(True)
        return nn.functional.cross_entropy(out, y)

    with pytest.raises(ValueError, match=r"'4.bias'.*requires_grad=False.*requires_grad_\(True\)"):
        C.subspace_gradient(model, C.select_parameters(model), loss_fn, batches())
    assert touched == []


def test_subspace_gradient_rejects_empty_data_and_unreduced_loss() -> None:
    model = _mlp()
    params = C.select_parameters(model, names="4.*")
    with pytest.raises(ValueError, match="no examples"):
        C.subspace_gradient(model, params, nn.functional.cross_entropy, [])
    with pytest.raises(ValueError, match="batch mean"):
        C.subspace_gradient(model, params, lambda o, t: nn.functional.cross_entropy(o, t, reduction="none"),
                            [_data(4)])


# --------------------------------------------------------------------------------------
# w ← w + a, restored bit-identically
# --------------------------------------------------------------------------------------

def _bits(params) -> list[torch.Tensor]:
    return [p.detach().clone().view(torch.int32) for _, p in params]


def test_corrupted_applies_and_restores_bit_identically() -> None:
    model = _mlp()
    params = C.select_parameters(model, names=["0.weight", "4.bias"])
    with torch.no_grad():  # values for which (w + a) − a ≠ w in float32
        model[0].weight.mul_(1e-7)
    before = _bits(params)
    w = C.parameter_vector(params)
    delta = torch.full((w.numel(),), 1.0, dtype=torch.float64)
    with C.corrupted(params, delta) as named:
        assert named[0][1] is model[0].weight
        inside = C.parameter_vector(params)
        torch.testing.assert_close(inside, (w.double() + delta).float(), rtol=0, atol=0)
        assert not torch.equal(((inside.double() - delta).float()), w)  # subtracting would not restore
    after = _bits(params)
    assert all(torch.equal(b, a) for b, a in zip(before, after))


def test_corrupted_restores_after_an_exception() -> None:
    model = _mlp()
    params = C.select_parameters(model)
    before = _bits(params)
    delta = C.random_corruption(C.subspace_size(params), 0.5, 2, C.subspace_size(params),
                                torch.Generator().manual_seed(0))
    with pytest.raises(RuntimeError, match="inside"):
        with C.corrupted(params, delta):
            assert not all(torch.equal(b, a) for b, a in zip(before, _bits(params)))
            raise RuntimeError("inside")
    assert all(torch.equal(b, a) for b, a in zip(before, _bits(params)))


def test_corrupted_validates_before_touching_weights() -> None:
    model = _mlp()
    params = C.select_parameters(model, names="4.*")
    before = _bits(params)
    k = C.subspace_size(params)
    with pytest.raises(ValueError, match=f"k = {k}"):
        with C.corrupted(params, torch.ones(k + 1)):
            pass  # pragma: no cover
    bad = torch.ones(k)
    bad[0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        with C.corrupted(params, bad):
            pass  # pragma: no cover
    assert all(torch.equal(b, a) for b, a in zip(before, _bits(params)))


def test_first_order_change() -> None:
    a = torch.tensor([1.0, 0.0, -2.0])
    g = torch.tensor([0.5, 3.0, 1.0])
    assert C.first_order_change(a, g) == pytest.approx(-1.5)
    with pytest.raises(ValueError, match="entries"):
        C.first_order_change(a, torch.ones(2))


# --------------------------------------------------------------------------------------
# Table 1's subspaces (issue 30, point 3): which parameters may top-n pick?
# --------------------------------------------------------------------------------------

class _Kinds(nn.Module):
    """conv (weight 2·1·1·1, bias 2) → BN (2 + 2) → linear (weight 3·2, bias 3)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean(dim=(2, 3)))


def test_table1_subspaces_select_what_their_names_say() -> None:
    model = _Kinds()
    assert C.parameter_kind(model) == {"conv.weight": "weight", "conv.bias": "bias", "bn.weight": "norm",
                                       "bn.bias": "norm", "fc.weight": "weight", "fc.bias": "bias"}
    names = {s: [n for n, _ in C.table1_subspace(model, s)] for s in C.SUBSPACES}
    assert names["all"] == ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "fc.weight", "fc.bias"]
    assert names["no-norm"] == ["conv.weight", "conv.bias", "fc.weight", "fc.bias"]
    assert names["weights"] == ["conv.weight", "fc.weight"]
    assert C.subspace_size(C.table1_subspace(model, "weights")) == 2 + 6
    model.conv.weight.requires_grad_(False)  # frozen parameters are not in any subspace
    assert [n for n, _ in C.table1_subspace(model, "weights")] == ["fc.weight"]


def test_table1_subspace_rejects_unknown_names_and_empty_subspaces() -> None:
    with pytest.raises(ValueError, match=r"unknown subspace 'weight'; choose one of \['all', 'no-norm', 'weights'\]"):
        C.table1_subspace(_Kinds(), "weight")
    with pytest.raises(ValueError, match="unknown subspace"):
        C.table1_subspace(_Kinds(), None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'weights' of BatchNorm1d is empty.*choose 'all'"):
        C.table1_subspace(nn.BatchNorm1d(3), "weights")


def test_support_share_counts_the_top_n_by_kind() -> None:
    model = _Kinds()
    kinds = C.coordinate_kinds(model, C.table1_subspace(model, "all"))
    assert kinds == [("weight", 2), ("bias", 2), ("norm", 2), ("norm", 2), ("weight", 6), ("bias", 3)]
    # coordinates: conv.w 0-1, conv.b 2-3, bn.w 4-5, bn.b 6-7, fc.w 8-13, fc.b 14-16
    v = torch.zeros(17)
    v[[4, 7]] = torch.tensor([9.0, -8.0])   # two norm coordinates (largest)
    v[15] = 7.0                               # one bias
    v[10] = -6.0                              # one weight
    v[0] = 0.5                                # the fifth largest: a weight
    assert C.support_share(kinds, v, 4) == {"weight": 25.0, "bias": 25.0, "norm": 50.0}
    assert C.support_share(kinds, v, 5) == {"weight": 40.0, "bias": 20.0, "norm": 40.0}
    assert C.support_share(kinds, v, 2) == {"weight": 0.0, "bias": 0.0, "norm": 100.0}
    ties = torch.ones(17)  # ties go to the lower index: conv.w 0-1, conv.b 2
    assert C.support_share(kinds, ties, 3) == pytest.approx({"weight": 200 / 3, "bias": 100 / 3, "norm": 0.0})
    assert C.support_share(kinds, ties, 17) == pytest.approx({"weight": 800 / 17, "bias": 500 / 17, "norm": 400 / 17})
    with pytest.raises(ValueError, match="v has 16 entries but the subspace's kinds cover 17"):
        C.support_share(kinds, v[:16], 2)
    with pytest.raises(ValueError, match="n = 18 exceeds"):
        C.support_share(kinds, v, 18)
    with pytest.raises(ValueError, match="not parameters of this _Kinds"):
        C.coordinate_kinds(model, [("other", nn.Parameter(torch.zeros(2)))])
