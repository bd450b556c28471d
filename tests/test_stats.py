"""paramstress.stats: the paired t-test across seeds, Holm's adjustment and how verdicts are written.

The expected values are computed by hand in each test. Student's t has closed-form CDFs for
small degrees of freedom, used here so that the p-values are checked independently of SciPy:

- df = 1 (Cauchy):  F(t) = 1/2 + arctan(t)/π
- df = 2:           F(t) = 1/2 + t / (2·√(2 + t²)),  F⁻¹(q) = (2q − 1) / √(2q(1 − q))
- df = 4:           F(t) = 1/2 + (3/8)·u·(1 − u²/12),  u = t / √(1 + t²/4)
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats as st

from paramstress import stats as S


def cdf_df2(t: float) -> float:
    return 0.5 + t / (2 * math.sqrt(2 + t * t))


def quantile_df2(q: float) -> float:
    return (2 * q - 1) / math.sqrt(2 * q * (1 - q))


def cdf_df4(t: float) -> float:
    u = t / math.sqrt(1 + t * t / 4)
    return 0.5 + 3 / 8 * u * (1 - u * u / 12)


def test_closed_form_cdfs_are_students_t() -> None:
    # the hand formulas above, checked once against SciPy's t distribution
    for t in (-1.3, 0.29, 6.4):
        assert cdf_df2(t) == pytest.approx(st.t.cdf(t, 2), abs=1e-12)
        assert cdf_df4(t) == pytest.approx(st.t.cdf(t, 4), abs=1e-12)
    assert quantile_df2(0.95) == pytest.approx(st.t.ppf(0.95, 2), abs=1e-12)


def test_one_sided_paired_test_by_hand() -> None:
    # a − b = d = [2, 3, 3.5]: mean 17/6, Σ(d − mean)² = 7/6, sd² = 7/12, se = sd/√3 = √7/6,
    # t = (17/6)/(√7/6) = 17/√7 ≈ 6.4254 on df = 2; p = P(T > t) = 1 − F₂(t) ≈ 0.011688;
    # the one-sided 95 % interval is [mean − t₀.₉₅,₂·se, ∞), t₀.₉₅,₂ = 0.9/√0.095 ≈ 2.92
    # → low ≈ 1.5457.
    r = S.paired_test([3.0, 4.0, 5.5], [1.0, 1.0, 2.0])
    se = math.sqrt(7) / 6
    assert r.n == 3 and r.df == 2 and r.alternative == "greater" and r.confidence == 0.95
    assert r.mean_difference == pytest.approx(17 / 6)
    assert r.sd == pytest.approx(math.sqrt(7 / 12))
    assert r.t == pytest.approx(17 / math.sqrt(7))
    assert r.p_value == pytest.approx(1 - cdf_df2(17 / math.sqrt(7)), rel=1e-9)
    assert r.p_value == pytest.approx(0.0116878, abs=1e-7)
    assert r.ci_low == pytest.approx(17 / 6 - quantile_df2(0.95) * se, rel=1e-9)
    assert r.ci_low == pytest.approx(1.54574, abs=1e-5)
    assert r.ci_high == math.inf
    assert r.test == "paired t-test (one-sided, H1: mean difference > 0)"
    assert r.significant(0.05) and not r.significant(0.01)
    # the interval excludes 0 exactly when p < 1 − confidence: at 99 % the bound is below 0
    strict = S.paired_test([3.0, 4.0, 5.5], [1.0, 1.0, 2.0], confidence=0.99)
    assert strict.ci_low == pytest.approx(17 / 6 - quantile_df2(0.99) * se, rel=1e-9) and strict.ci_low < 0
    # the other side: H1 mean < 0 has p = F₂(t)
    less = S.paired_test([3.0, 4.0, 5.5], [1.0, 1.0, 2.0], alternative="less")
    assert less.p_value == pytest.approx(cdf_df2(17 / math.sqrt(7)), rel=1e-9)
    assert less.ci_low == -math.inf and less.ci_high == pytest.approx(17 / 6 + quantile_df2(0.95) * se, rel=1e-9)
    with pytest.raises(dataclasses_frozen_error()):
        r.p_value = 0.5  # type: ignore[misc]


def dataclasses_frozen_error() -> type[Exception]:
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_two_sided_paired_test_on_five_seeds_by_hand() -> None:
    # d = [1, 2, 0, −1, 3]: mean 1, Σ(d − 1)² = 0 + 1 + 1 + 4 + 4 = 10, sd² = 10/4, se = √(2.5/5) = √0.5,
    # t = 1/√0.5 = √2 on df = 4; two-sided p = 2·(1 − F₄(√2)) ≈ 0.2302;
    # 95 % interval 1 ± t₀.₉₇₅,₄·√0.5 with t₀.₉₇₅,₄ = 2.776445 (tables) → [−0.9632, 2.9632].
    a, b = [10, 12, 9, 11, 13], [9, 10, 9, 12, 10]
    r = S.paired_test(a, b, alternative="two-sided")
    assert r.n == 5 and r.df == 4 and r.mean_difference == pytest.approx(1.0)
    assert r.sd == pytest.approx(math.sqrt(2.5)) and r.t == pytest.approx(math.sqrt(2))
    assert r.p_value == pytest.approx(2 * (1 - cdf_df4(math.sqrt(2))), rel=1e-9)
    assert r.p_value == pytest.approx(2 * st.t.sf(math.sqrt(2), 4), rel=1e-9)  # t computed by hand above
    assert r.p_value == pytest.approx(0.23019, abs=1e-5)
    half = 2.776445 * math.sqrt(0.5)
    assert (r.ci_low, r.ci_high) == (pytest.approx(1 - half, abs=1e-5), pytest.approx(1 + half, abs=1e-5))
    assert r.test == "paired t-test (two-sided, H1: mean difference ≠ 0)"
    # one-sided "greater" on the same data: half the two-sided p (t > 0)
    assert S.paired_test(a, b).p_value == pytest.approx(r.p_value / 2, rel=1e-9)
    # the order matters: a − b, not b − a
    assert S.paired_test(b, a).p_value == pytest.approx(1 - r.p_value / 2, rel=1e-9)


def test_equal_differences_are_decided_explicitly() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no SciPy precision or division warnings either
        up = S.paired_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
        assert (up.p_value, up.sd, up.t) == (0.0, 0.0, math.inf)
        assert (up.ci_low, up.ci_high) == (1.0, math.inf)
        # rounding of 4.1 − 3 etc. does not make the spread non-zero (SciPy would give p ≈ 1e-32)
        rounded = S.paired_test([2.1, 3.1, 4.1], [1.0, 2.0, 3.0])
        assert rounded.p_value == 0.0 and rounded.sd == 0.0 and rounded.ci_low == pytest.approx(1.1)
        zero = S.paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
        assert zero.p_value == 1.0 and math.isnan(zero.t) and (zero.ci_low, zero.ci_high) == (0.0, math.inf)
        down = S.paired_test([0.0, 1.0], [1.0, 2.0])
        assert down.p_value == 1.0 and down.t == -math.inf and down.ci_low == -1.0
        assert S.paired_test([0.0, 1.0], [1.0, 2.0], alternative="less").p_value == 0.0
        assert S.paired_test([0.0, 1.0], [1.0, 2.0], alternative="less").ci_high == -1.0
        two = S.paired_test([0.0, 1.0], [1.0, 2.0], alternative="two-sided")
        assert two.p_value == 0.0 and (two.ci_low, two.ci_high) == (-1.0, -1.0)
        assert S.paired_test([1.0, 1.0], [1.0, 1.0], alternative="two-sided").p_value == 1.0


def test_bad_input_is_rejected_before_computing() -> None:
    with pytest.raises(ValueError, match="must be paired: got 3 and 2 values"):
        S.paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"needs at least 2 seeds \(got 1\); set seeds: \[...\] with ≥ 2 entries"):
        S.paired_test([1.0], [0.0])
    with pytest.raises(ValueError, match="needs at least 2 seeds"):
        S.paired_test([], [])
    with pytest.raises(ValueError, match="at least 2 sentences"):
        S.paired_test([1.0], [0.0], unit="sentence")
    with pytest.raises(ValueError, match=r"a must be finite: a\[1\] is nan"):
        S.paired_test([1.0, math.nan, 2.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"b must be finite: b\[0\] is inf"):
        S.paired_test([1.0, 2.0], [math.inf, 0.0])
    with pytest.raises(ValueError, match="alternative must be one of"):
        S.paired_test([1.0, 2.0], [0.0, 0.0], alternative="bigger")
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1"):
        S.paired_test([1.0, 2.0], [0.0, 0.0], confidence=95)
    with pytest.raises(ValueError, match="one-dimensional"):
        S.paired_test([[1.0, 2.0]], [[0.0, 0.0]])
    with pytest.raises(ValueError, match="must be numbers"):
        S.paired_test(["a", "b"], [0.0, 0.0])


def test_holm_by_hand() -> None:
    # sorted 0.01, 0.03, 0.04 → ×3, ×2, ×1 = 0.03, 0.06, 0.04 → running maximum 0.03, 0.06, 0.06
    assert S.holm([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    # NaN (not tested) stays NaN and does not count: m = 2 → 0.02·2 = 0.04, max(0.04, 0.04·1)
    out = S.holm([0.02, math.nan, 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    assert S.holm([0.6, 0.7]).tolist() == [1.0, 1.0]  # capped at 1, then the running maximum
    assert S.holm([0.2]).tolist() == [0.2]
    assert np.isnan(S.holm([math.nan])).all() and S.holm([]).size == 0
    with pytest.raises(ValueError, match="lie in"):
        S.holm([0.5, 1.5])


def test_formatting_and_verdicts() -> None:
    assert S.format_p(0.0116878) == "0.012" and S.format_p(0.00042) == "4.2e-04"
    assert S.format_p(0.0) == "0" and S.format_p(math.nan) == "n/a"
    assert S.format_interval(1.54574, math.inf) == "[+1.55, ∞)"
    assert S.format_interval(-math.inf, -0.5, decimals=1) == "(−∞, -0.5]"
    assert S.format_interval(0.25, 3.0, sign=False) == "[0.25, 3.00]"
    r = S.paired_test([3.0, 4.0, 5.5], [1.0, 1.0, 2.0])
    described = ("paired t-test (one-sided, H1: mean difference > 0), n = 3 seeds, mean +2.83 points, "
                 "95 % CI [+1.55, ∞), p = 0.012")
    assert S.describe(r) == described
    assert S.describe(r, p_adjusted=0.0234) == described + ", Holm 0.023"
    assert S.verdict(r, alpha=0.05) == f"holds ({described} < α = 0.05)"
    assert S.verdict(r, alpha=0.01) == f"does not hold ({described} ≥ α = 0.01)"
    assert S.verdict(r, alpha=0.05, holds=False).startswith("does not hold (")  # another condition failed
    assert S.verdict(r, alpha=0.05, p_adjusted=0.06).endswith("Holm 0.060 ≥ α = 0.05)")
    assert S.not_tested(1) == "not tested (1 seed: a paired test needs at least 2; set seeds: [...] with ≥ 2 entries)"


# --------------------------------------------------------------------------- exact McNemar
def _pairs(a_only: int, b_only: int, both: int = 0, neither: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-example correctness of two classifiers with the given cells of the 2×2 table."""
    a = [True] * a_only + [False] * b_only + [True] * both + [False] * neither
    b = [False] * a_only + [True] * b_only + [True] * both + [False] * neither
    return np.array(a), np.array(b)


def test_mcnemar_exact_by_hand() -> None:
    # 7 discordant pairs favour a, 1 favours b, 92 concordant: under H0 a_only ~ Bin(8, 1/2);
    # P(X ≥ 7) = (C(8,7) + C(8,8)) / 2^8 = 9/256; two-sided doubles it; P(X ≤ 7) = 1 − 1/256
    a, b = _pairs(7, 1, both=60, neither=32)
    r = S.mcnemar_exact(a, b)
    assert (r.n, r.a_only, r.b_only, r.discordant) == (100, 7, 1, 8)
    assert r.p_value == pytest.approx(9 / 256, rel=1e-12) and r.difference == pytest.approx(6.0)
    assert r.alternative == "greater" and r.test == "exact McNemar test (one-sided, H1: a more accurate than b)"
    assert r.significant(0.05) and not r.significant(0.03)
    assert S.mcnemar_exact(a, b, alternative="two-sided").p_value == pytest.approx(18 / 256, rel=1e-12)
    assert S.mcnemar_exact(a, b, alternative="less").p_value == pytest.approx(255 / 256, rel=1e-12)
    assert S.mcnemar_exact(b, a).p_value == pytest.approx(255 / 256, rel=1e-12)  # the other direction
    # concordant pairs carry no information: the same p with none of them, the difference scales with n
    bare = S.mcnemar_exact(*_pairs(7, 1))
    assert bare.p_value == r.p_value and bare.difference == pytest.approx(75.0)
    # all 5 discordant pairs favour a: p = 2^-5; the one-sided exact bound on π solves π^5 = 0.05,
    # so the difference's lower bound is (2·0.05^(1/5) − 1)·5/10, in points
    r = S.mcnemar_exact(*_pairs(5, 0, both=5))
    assert r.p_value == pytest.approx(1 / 32, rel=1e-12)
    assert r.ci_low == pytest.approx(100 * (2 * 0.05 ** (1 / 5) - 1) * 5 / 10, rel=1e-6) and r.ci_high == math.inf
    low = S.mcnemar_exact(*_pairs(0, 5, both=5), alternative="less")
    assert low.ci_low == -math.inf and low.ci_high == pytest.approx(-r.ci_low, rel=1e-6)


def test_mcnemar_interval_matches_the_test() -> None:
    for a_only in range(0, 13):
        for b_only in range(0, 13):
            if a_only + b_only == 0:
                continue
            for alternative in ("greater", "less", "two-sided"):
                r = S.mcnemar_exact(*_pairs(a_only, b_only, both=10), alternative=alternative)
                excludes = r.ci_low > 0 or r.ci_high < 0
                assert excludes == (r.p_value < 0.05), (a_only, b_only, alternative, r)
                assert r.ci_low <= r.difference <= r.ci_high


def test_mcnemar_without_discordant_pairs_is_p_one() -> None:
    r = S.mcnemar_exact([True, False, True], [True, False, True])
    assert r.p_value == 1.0 and r.discordant == 0 and r.difference == 0.0
    assert (r.ci_low, r.ci_high) == (0.0, math.inf)
    assert S.mcnemar_exact([1, 0], [1, 0], alternative="two-sided").ci_high == 0.0


def test_mcnemar_rejects_bad_input_before_computing() -> None:
    with pytest.raises(ValueError, match="must be paired: got 3 and 2 entries; score both on the same images"):
        S.mcnemar_exact([True, True, False], [True, False])
    with pytest.raises(ValueError, match="needs at least one image"):
        S.mcnemar_exact([], [])
    with pytest.raises(ValueError, match="a_correct must hold per-example correctness"):
        S.mcnemar_exact([1, 2], [1, 0])
    with pytest.raises(ValueError, match="b_correct must be one-dimensional"):
        S.mcnemar_exact([True], [[True]])
    with pytest.raises(ValueError, match="alternative must be one of"):
        S.mcnemar_exact([True], [False], alternative="bigger")
    with pytest.raises(ValueError, match="confidence must be a number strictly between 0 and 1"):
        S.mcnemar_exact([True], [False], confidence=95)


def test_mcnemar_description_and_a_p_value_below_the_smallest_float() -> None:
    r = S.mcnemar_exact(*_pairs(7, 1, both=92))
    assert S.describe_mcnemar(r, a="FC", b="Conv") == (
        "exact McNemar test (one-sided, H1: FC more accurate than Conv), n = 100 images, FC alone right on 7, "
        "Conv alone right on 1, difference +6.00 points, 95 % CI [+0.47, ∞), p = 0.035")
    huge = S.mcnemar_exact(*_pairs(1200, 0))
    assert huge.p_value == 0.0 and S.format_tiny_p(huge.p_value) == "< 1e-300"
    assert S.format_tiny_p(9 / 256) == "= 0.035"
