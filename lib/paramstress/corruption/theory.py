"""Theorem 1 of Sun et al. (AAAI 2021): the distribution of random corruption (p = 2, n = k).

For ``S = {a : ‖a‖₂ = ε}`` the random corruption of Eq. 5 is uniform on the sphere of
radius ``ε``. With ``G = ‖g‖₂`` the ratio ``η = |aᵀg| / (εG) ∈ [0, 1]`` (how much of
the best first-order loss change ``εG``, Eq. 6, a random trial achieves) has

- density (Eq. 8)  ``p_k(x) = 2Γ(k/2) / (√π Γ((k−1)/2)) · (1 − x²)^{(k−3)/2}`` on [0, 1];
- CDF (Eq. 9)      ``P(η ≤ x) = 2x ₂F₁(1/2, (3−k)/2; 3/2; x²) / B((k−1)/2, 1/2)``,
  which equals the regularised incomplete beta function ``I_{x²}(1/2, (k−1)/2)``
  (substitute ``t = s²`` in ``∫₀ˣ (1−s²)^{(k−3)/2} ds``). :func:`cdf` uses the latter
  (stable for any ``k``); :func:`cdf_hypergeometric` is the paper's form, kept to
  check the two agree (scipy's ₂F₁ loses accuracy for large ``k`` near ``x = 1``).

``η²`` is Beta(1/2, (k−1)/2)-distributed, so ``E[η] = Γ(k/2) / (√π Γ((k+1)/2)) ≈
√(2/(πk))``: for a network with millions of parameters a random corruption reaches a
vanishing fraction of the worst case, the paper's argument for the gradient-based one.

:func:`eta_samples` and :func:`ks_test` check the theorem empirically, drawing ``a``
with :func:`paramstress.corruption.random_corruption` against a fixed random ``g``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import numpy.typing as npt
import torch
from scipy import special, stats

from paramstress.corruption.operators import random_corruption

__all__ = [
    "density",
    "cdf",
    "cdf_hypergeometric",
    "quantile",
    "expected_eta",
    "eta_samples",
    "EtaKSTest",
    "ks_test",
]

ArrayLike = npt.ArrayLike


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"k must be an integer (the number of corrupted parameters), got {k!r}")
    k = int(k)
    if k < 2:
        raise ValueError(f"Theorem 1 needs k >= 2 (for k = 1, η = 1 always), got k = {k}")
    return k


def _log_norm_const(k: int) -> float:
    # log of 2Γ(k/2) / (√π Γ((k−1)/2)), via log-gamma (finite for any k).
    return math.log(2.0) + math.lgamma(k / 2) - 0.5 * math.log(math.pi) - math.lgamma((k - 1) / 2)


def density(x: ArrayLike, k: int) -> np.ndarray:
    """``p_k(x)`` of Eq. 8 (zero outside [0, 1]; ``+inf`` at ``x = 1`` for ``k = 2``)."""
    k = check_k(k)
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros_like(x)
    inside = (x >= 0.0) & (x <= 1.0)
    xi = x[inside]
    with np.errstate(divide="ignore"):
        log_body = 0.5 * (k - 3) * np.log1p(-xi * xi) if k != 3 else np.zeros_like(xi)
    out[inside] = np.exp(_log_norm_const(k) + log_body)
    return out


def cdf(x: ArrayLike, k: int) -> np.ndarray:
    """``P(η ≤ x)`` of Eq. 9, as ``I_{x²}(1/2, (k−1)/2)`` (0 below 0, 1 above 1)."""
    k = check_k(k)
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return special.betainc(0.5, (k - 1) / 2, x * x)


def cdf_hypergeometric(x: ArrayLike, k: int) -> np.ndarray:
    """The paper's form of Eq. 9: ``2x ₂F₁(1/2, (3−k)/2; 3/2; x²) / B((k−1)/2, 1/2)``."""
    k = check_k(k)
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return 2.0 * x * special.hyp2f1(0.5, (3 - k) / 2, 1.5, x * x) / special.beta((k - 1) / 2, 0.5)


def quantile(q: ArrayLike, k: int) -> np.ndarray:
    """The inverse of :func:`cdf`: the ``x`` with ``P(η ≤ x) = q``."""
    k = check_k(k)
    q = np.asarray(q, dtype=np.float64)
    if np.any((q < 0) | (q > 1)):
        raise ValueError("quantile levels q must lie in [0, 1]")
    return np.sqrt(special.betaincinv(0.5, (k - 1) / 2, q))


def expected_eta(k: int) -> float:
    """``E[η] = Γ(k/2) / (√π Γ((k+1)/2))`` (≈ √(2/(πk)) for large ``k``)."""
    k = check_k(k)
    return math.exp(math.lgamma(k / 2) - 0.5 * math.log(math.pi) - math.lgamma((k + 1) / 2))


def eta_samples(
    k: int,
    trials: int,
    seed: int = 0,
    *,
    p: float = 2.0,
    g: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """``trials`` draws of ``η = |aᵀg| / (ε‖g‖₂)``, each ``a`` from
    :func:`~paramstress.corruption.random_corruption` with ``n = k`` (``ε = 1``; η does
    not depend on ε) against one fixed ``g`` (drawn from ``N(0, I_k)`` with ``seed``
    unless given). Theorem 1 covers ``p = 2``; other ``p`` are for comparison.

    The draws are made in float64 on ``device`` with a generator seeded there: the CPU
    default gives the same samples on every machine; a CUDA device gives other (equally
    distributed) samples, about a thousand times faster for ResNet-34's ``k ≈ 2·10⁷``."""
    device = torch.device(device)
    k = check_k(k)
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    if g is None:
        g = torch.randn(k, generator=gen, dtype=torch.float64, device=device)
    g = g.detach().to(device=device, dtype=torch.float64).reshape(-1)
    if g.numel() != k:
        raise ValueError(f"g has {g.numel()} entries, expected k = {k}")
    G = float(torch.linalg.vector_norm(g))
    if G == 0.0:
        raise ValueError("g must be nonzero")
    dots = torch.empty(int(trials), dtype=torch.float64, device=device)
    for t in range(int(trials)):  # one vector of k at a time: ResNet-34's k would not fit k × trials
        dots[t] = random_corruption(k, 1.0, p, k, gen, dtype=torch.float64) @ g
    return dots.abs().cpu().numpy() / G


@dataclasses.dataclass(frozen=True)
class EtaKSTest:
    """Result of :func:`ks_test`: the samples and the Kolmogorov–Smirnov statistic."""

    k: int
    trials: int
    seed: int
    p: float
    statistic: float
    pvalue: float
    samples: np.ndarray = dataclasses.field(repr=False)


def ks_test(k: int, trials: int = 2000, seed: int = 0, *, p: float = 2.0,
            device: str | torch.device = "cpu") -> EtaKSTest:
    """Draw :func:`eta_samples` (on ``device``) and test them against Theorem 1's CDF with
    ``scipy.stats.kstest`` (a large p-value: no evidence against uniformity on the
    sphere)."""
    samples = eta_samples(k, trials, seed, p=p, device=device)
    res = stats.kstest(samples, lambda x: cdf(x, k))
    return EtaKSTest(k=int(k), trials=int(trials), seed=int(seed), p=float(p),
                     statistic=float(res.statistic), pvalue=float(res.pvalue), samples=samples)
