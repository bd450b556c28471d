"""Tests of paramstress.theory (Theorem 1 of Sun et al. 2021, Eqs. 8-9)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from paramstress import theory as T

K_VALUES = [2, 3, 4, 5, 10, 57, 100, 1000, 100_000]


def _integrate_density(k: int, lo: float, hi: float) -> float:
    # the mass sits within a few 1/√k of 0; tell quad where
    width = 1 / math.sqrt(k)
    points = [x for x in (width, 3 * width, 10 * width) if lo < x < hi]
    if k == 2 and hi == 1.0:  # integrable singularity at 1: use quad's algebraic weight (1-x)^(-1/2)
        val, _ = integrate.quad(lambda x: T.density(x, 2) * math.sqrt(1 - x) if x < 1 else
                                2 / math.pi / math.sqrt(1 + x), lo, hi, weight="alg", wvar=(0, -0.5))
        return val
    val, _ = integrate.quad(lambda x: float(T.density(x, k)), lo, hi, points=points or None, limit=200,
                            epsabs=1e-13, epsrel=1e-11)
    return val


@pytest.mark.parametrize("k", K_VALUES)
def test_density_integrates_to_one(k: int) -> None:
    assert _integrate_density(k, 0.0, 1.0) == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("k", K_VALUES)
def test_cdf_is_the_integral_of_the_density(k: int) -> None:
    for x in (0.001, 0.01, 0.1, 0.3, 0.5, 0.9, 0.999):
        assert float(T.cdf(x, k)) == pytest.approx(_integrate_density(k, 0.0, x), rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4, 5, 10, 20, 57])
def test_cdf_agrees_with_the_papers_hypergeometric_form(k: int) -> None:
    x = np.linspace(0, 1, 41)
    np.testing.assert_allclose(T.cdf_hypergeometric(x, k), T.cdf(x, k), rtol=1e-9, atol=1e-12)


def test_closed_forms_for_small_k() -> None:
    x = np.linspace(0, 1, 11)
    np.testing.assert_allclose(T.cdf(x, 3), x, atol=1e-14)  # k = 3: η is uniform (Archimedes)
    np.testing.assert_allclose(T.cdf(x, 2), 2 / np.pi * np.arcsin(x), atol=1e-14)  # k = 2: |cos θ|
    np.testing.assert_allclose(T.density(x[:-1], 2), 2 / np.pi / np.sqrt(1 - x[:-1] ** 2), rtol=1e-13)
    assert T.density(1.0, 2) == math.inf
    np.testing.assert_allclose(T.density(x, 3), np.ones_like(x), rtol=1e-13)


def test_density_and_cdf_outside_the_support() -> None:
    assert T.density(-0.1, 10) == 0.0 and T.density(1.1, 10) == 0.0
    assert T.cdf(-0.5, 10) == 0.0 and T.cdf(1.5, 10) == 1.0
    assert T.cdf(0.0, 10) == 0.0 and T.cdf(1.0, 10) == 1.0
    assert T.density(1.0, 10) == 0.0


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=2, max_value=10**7), st.floats(min_value=0.0, max_value=1.0))
def test_quantile_inverts_cdf_and_cdf_is_monotone(k: int, q: float) -> None:
    x = float(T.quantile(q, k))
    assert 0.0 <= x <= 1.0
    assert float(T.cdf(x, k)) == pytest.approx(q, abs=1e-9)
    xs = np.linspace(0, 1, 201)
    assert np.all(np.diff(T.cdf(xs, k)) >= 0)


@pytest.mark.parametrize("k", [2, 3, 10, 1000])
def test_expected_eta(k: int) -> None:
    mean, _ = integrate.quad(lambda x: x * float(T.density(x, k)), 0, 1, limit=200)
    assert T.expected_eta(k) == pytest.approx(mean, rel=1e-7)
    assert T.expected_eta(2) == pytest.approx(2 / math.pi)
    assert T.expected_eta(10**8) == pytest.approx(math.sqrt(2 / (math.pi * 10**8)), rel=1e-6)


def test_bad_k_raises() -> None:
    with pytest.raises(ValueError, match="k >= 2"):
        T.density(0.5, 1)
    with pytest.raises(TypeError):
        T.cdf(0.5, 2.5)
    with pytest.raises(ValueError, match="q must"):
        T.quantile(1.5, 10)


# --------------------------------------------------------------------------------------
# Empirical check: random corruption (p = 2, n = k) is uniform on the sphere
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", [3, 20, 500])
def test_random_corruption_matches_theorem_1(k: int) -> None:
    res = T.ks_test(k, trials=1500, seed=2021)
    assert res.samples.shape == (1500,)
    assert np.all((res.samples >= 0) & (res.samples <= 1))
    assert res.pvalue > 1e-3, res
    assert abs(res.samples.mean() - T.expected_eta(k)) < 5 * res.samples.std() / math.sqrt(1500)


def test_ks_test_detects_a_non_uniform_direction() -> None:
    """The same test rejects corruptions that are not uniform on the L2 sphere: L∞
    sign vectors (a discrete distribution) for k = 3, and a fixed direction."""
    assert T.ks_test(3, trials=1500, seed=2021, p=math.inf).pvalue < 1e-6
    k = 20
    g = torch.randn(k, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    biased = np.abs(np.full(500, float(g[0]) / float(g.norm())))  # a = e_1 every time
    assert stats.kstest(biased, lambda x: T.cdf(x, k)).pvalue < 1e-6


def test_eta_samples_is_reproducible_and_accepts_g() -> None:
    a = T.eta_samples(10, 50, seed=3)
    b = T.eta_samples(10, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    g = torch.zeros(10, dtype=torch.float64)
    g[0] = 5.0
    c = T.eta_samples(10, 50, seed=3, g=g)
    assert c.shape == (50,) and np.all(c <= 1)
    with pytest.raises(ValueError, match="k = 10"):
        T.eta_samples(10, 5, g=torch.ones(11))
    with pytest.raises(ValueError, match="trials"):
        T.eta_samples(10, 0)


def test_eta_samples_device_cpu_is_the_default_draw() -> None:
    a = T.eta_samples(50, 40, seed=5)
    np.testing.assert_array_equal(a, T.eta_samples(50, 40, seed=5, device="cpu"))
    np.testing.assert_array_equal(a, T.eta_samples(50, 40, seed=5, device=torch.device("cpu")))
    assert T.ks_test(50, 40, seed=5, device="cpu").samples.tolist() == a.tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_eta_samples_on_cuda_follow_theorem_1() -> None:
    g = torch.randn(1000, dtype=torch.float64)
    samples = T.eta_samples(1000, 1500, seed=1, g=g, device="cuda")
    assert samples.shape == (1500,) and np.all((samples >= 0) & (samples <= 1))
    assert stats.kstest(samples, lambda x: T.cdf(x, 1000)).pvalue > 1e-3
