"""Statistics behind the book's verdicts: paired tests across seeds, and how they are written.

A verdict such as "corruption-resistant training raises the accuracy under corruption" compares
two trainers run with the *same* seeds (the same initialisation and batch order per seed). The
values are therefore paired by seed, and the question is whether the mean of the per-seed
differences ``a − b`` is larger than zero by more than the seeds' spread allows by chance.

- :func:`paired_test`: Student's paired t-test (:func:`scipy.stats.ttest_rel`) with the
  t interval of the mean difference that matches the test's alternative
  (``TtestResult.confidence_interval``); bad input is rejected before anything is computed.
- :func:`mcnemar_exact`: the exact McNemar test of two classifiers' per-example correctness on
  the *same* examples (paired by example): the exact binomial test of the discordant pairs
  (:func:`scipy.stats.binomtest`), with an interval of the accuracy difference that matches it;
  :func:`describe_mcnemar` writes it.
- :func:`holm`: Holm's step-down adjustment of several p-values (one claim checked at several ε
  holds "somewhere" only if the family of tests allows it).
- :func:`describe`, :func:`format_p`, :func:`format_interval`, :func:`verdict`: one way of
  writing a test's outcome, so that every page prints the test, ``n``, the mean, the interval
  and ``p`` the same way, e.g. ``holds (paired t-test (one-sided, H1: mean difference > 0),
  n = 5 seeds, mean +2.41 points, 95 % CI [0.87, ∞), p = 0.009 < α = 0.05)``.

Choices stated here:

- **The interval matches the test.** For the one-sided ``alternative="greater"`` it is the lower
  confidence bound ``[mean − t_{conf, n−1}·sd/√n, ∞)``; it excludes 0 exactly when
  ``p < 1 − confidence``. ``"two-sided"`` gives the usual ``mean ± t_{(1+conf)/2, n−1}·sd/√n``.
- **Equal differences** (every pair differs by the same amount, up to floating-point rounding:
  a spread of at most ``1e-9`` times the largest ``|difference|``, or exactly 0): the t statistic
  has no finite value and SciPy returns NaN (all differences 0) or a p-value driven by
  rounding. Here the outcome is decided explicitly: ``sd = 0``, ``t = ±∞`` (NaN when the mean
  difference is 0), ``p = 0`` when the mean difference lies on the side of the alternative
  (``> 0`` for ``"greater"``, ``< 0`` for ``"less"``, ``≠ 0`` for ``"two-sided"``) and ``p = 1``
  otherwise; the interval collapses onto the mean on its finite side(s).
- **McNemar, exact and conditional.** Of ``n`` examples, ``a_only`` are right under ``a`` and
  wrong under ``b``, ``b_only`` the reverse (the ``m = a_only + b_only`` discordant pairs);
  concordant pairs carry no information on the difference. Under H0 (equal accuracy)
  ``a_only ~ Binomial(m, 1/2)``; the p-value is that binomial test's, exact, for the
  alternative (``"greater"``: ``P(X ≥ a_only)``, H1: ``a`` is more accurate). With no
  discordant pair (``m = 0``) nothing tells the two apart: ``p = 1``. The interval of the
  accuracy difference ``(a_only − b_only)/n`` is the exact (Clopper–Pearson) interval of the
  share ``π`` of discordant pairs that favour ``a``, for the same alternative, mapped to the
  difference as ``(2π − 1)·m/n``: it is conditional on the ``m`` discordant pairs observed
  (it does not add the uncertainty of ``m`` itself, as Newcombe's unconditional interval does)
  and, being the inversion of the same binomial test, excludes 0 exactly when
  ``p < 1 − confidence``. A p-value below the smallest float (about 1e-308) is 0.0 and
  printed as ``< 1e-300``.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

__all__ = [
    "check_alpha",
    "ALTERNATIVES",
    "PairedTest",
    "paired_test",
    "McNemarTest",
    "MCNEMAR_ALTERNATIVES",
    "mcnemar_exact",
    "describe_mcnemar",
    "holm",
    "format_p",
    "format_tiny_p",
    "format_interval",
    "describe",
    "verdict",
    "not_tested",
]

#: The alternatives :func:`paired_test` accepts, with the hypothesis each names.
ALTERNATIVES: dict[str, str] = {
    "greater": "one-sided, H1: mean difference > 0",
    "less": "one-sided, H1: mean difference < 0",
    "two-sided": "two-sided, H1: mean difference ≠ 0",
}

def check_alpha(alpha: object) -> float:
    """``alpha`` (a test's level, ``1 −`` an interval's coverage) as a float in (0, 1), or
    ``ValueError`` naming the fix."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be a number in (0, 1) (0.05: a 95 % interval), got {alpha!r}")
    return float(alpha)


def _check_confidence(confidence: object) -> None:
    """``ValueError`` naming the fix unless ``confidence`` (an interval's level) is in (0, 1)."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


#: Relative spread under which paired differences count as all equal (see the module docstring).
EQUAL_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """The outcome of :func:`paired_test`.

    ``n``: pairs; ``mean_difference``: mean of ``a − b``; ``sd``: standard deviation of the
    differences (``ddof = 1``); ``t``: the t statistic ``mean / (sd/√n)``; ``df = n − 1``;
    ``p_value``: for ``alternative``; ``ci_low``, ``ci_high``: the ``confidence`` interval of the
    mean difference that matches the alternative (one bound infinite for a one-sided test);
    ``test``: the test's name as printed; ``unit``: what one pair is (``"seed"``).
    """

    n: int
    mean_difference: float
    sd: float
    t: float
    df: int
    p_value: float
    ci_low: float
    ci_high: float
    test: str
    confidence: float
    alternative: str = "greater"
    unit: str = "seed"

    def significant(self, alpha: float) -> bool:
        """``p_value < alpha``."""
        return bool(self.p_value < alpha)


def _as_values(name: str, values: Sequence[float] | np.ndarray) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be numbers (one per seed), got {values!r}") from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per seed), got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} must be finite: {name}[{bad[0]}] is {float(arr[bad[0]])}; "
                         "drop or repair the run that produced it before testing")
    return arr


def paired_test(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence: float = 0.95,
    alternative: str = "greater",
    unit: str = "seed",
) -> PairedTest:
    """Student's paired t-test of ``a − b`` (values paired by position, e.g. by seed).

    ``alternative``: ``"greater"`` (H1: the mean difference is > 0; the default, "a beats b"),
    ``"less"`` or ``"two-sided"``. ``confidence``: level of the interval, which matches the
    alternative (for ``"greater"``: ``[low, ∞)``, excluding 0 exactly when
    ``p < 1 − confidence``). Computed with :func:`scipy.stats.ttest_rel` and its
    ``confidence_interval``; all-equal differences are decided as the module docstring says.

    Raises :class:`ValueError` before computing when the lengths differ, there are fewer
    than 2 pairs, a value is not finite, or ``alternative`` / ``confidence`` is invalid.
    """
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(ALTERNATIVES)}, got {alternative!r}")
    _check_confidence(confidence)
    x, y = _as_values("a", a), _as_values("b", b)
    if len(x) != len(y):
        raise ValueError(f"a and b must be paired: got {len(x)} and {len(y)} values; give one value per {unit} "
                         "in each, in the same order")
    n = len(x)
    if n < 2:
        fix = ("set seeds: [...] with ≥ 2 entries" if unit == "seed" else f"give at least 2 paired {unit}s")
        raise ValueError(f"a paired test needs at least 2 {unit}s (got {n}); {fix}")
    d = x - y
    mean = float(d.mean())
    name = f"paired t-test ({ALTERNATIVES[alternative]})"
    if np.ptp(d) <= EQUAL_TOLERANCE * float(np.abs(d).max()):
        on_side = {"greater": mean > 0, "less": mean < 0, "two-sided": mean != 0}[alternative]
        t = math.copysign(math.inf, mean) if mean != 0 else math.nan
        low = mean if alternative in ("greater", "two-sided") else -math.inf
        high = mean if alternative in ("less", "two-sided") else math.inf
        return PairedTest(n=n, mean_difference=mean, sd=0.0, t=t, df=n - 1, p_value=0.0 if on_side else 1.0,
                          ci_low=low, ci_high=high, test=name, confidence=float(confidence),
                          alternative=alternative, unit=unit)
    res = _st.ttest_rel(x, y, alternative=alternative)
    ci = res.confidence_interval(confidence_level=confidence)
    return PairedTest(n=n, mean_difference=mean, sd=float(d.std(ddof=1)), t=float(res.statistic),
                      df=int(res.df), p_value=float(res.pvalue), ci_low=float(ci.low), ci_high=float(ci.high),
                      test=name, confidence=float(confidence), alternative=alternative, unit=unit)


@dataclasses.dataclass(frozen=True)
class McNemarTest:
    """The outcome of :func:`mcnemar_exact`.

    ``n``: paired examples; ``a_only``: examples right under ``a`` and wrong under ``b``;
    ``b_only``: the reverse (``a_only + b_only`` discordant pairs); ``difference``: accuracy of
    ``a`` − accuracy of ``b`` in points, ``100·(a_only − b_only)/n``; ``p_value``: the exact
    binomial test's for ``alternative``; ``ci_low``, ``ci_high``: the ``confidence`` interval of
    ``difference`` (points) that matches it (module docstring); ``test``: the name as printed;
    ``unit``: what one pair is (``"image"``).
    """

    n: int
    a_only: int
    b_only: int
    difference: float
    p_value: float
    ci_low: float
    ci_high: float
    test: str
    confidence: float
    alternative: str = "greater"
    unit: str = "image"

    @property
    def discordant(self) -> int:
        """``a_only + b_only``."""
        return self.a_only + self.b_only

    def significant(self, alpha: float) -> bool:
        """``p_value < alpha``."""
        return bool(self.p_value < alpha)


#: The alternatives of :func:`mcnemar_exact`, with the hypothesis each names.
MCNEMAR_ALTERNATIVES: dict[str, str] = {
    "greater": "one-sided, H1: a more accurate than b",
    "less": "one-sided, H1: a less accurate than b",
    "two-sided": "two-sided, H1: a and b differ in accuracy",
}


def _as_outcomes(name: str, values: Sequence[bool] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one entry per example), got shape {arr.shape}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "iuf" or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{name} must hold per-example correctness (True/False or 1/0), got dtype "
                             f"{arr.dtype} with values other than 0 and 1")
        arr = arr.astype(bool)
    return arr


def mcnemar_exact(
    a_correct: Sequence[bool] | np.ndarray,
    b_correct: Sequence[bool] | np.ndarray,
    *,
    alternative: str = "greater",
    confidence: float = 0.95,
    unit: str = "image",
) -> McNemarTest:
    """The exact McNemar test of two classifiers scored on the same examples.

    ``a_correct[i]`` / ``b_correct[i]``: whether ``a`` / ``b`` got example ``i`` right (booleans
    or 0/1, the same examples in the same order). ``alternative``: ``"greater"`` (H1: ``a`` is
    more accurate; the default), ``"less"`` or ``"two-sided"``. The p-value is the exact
    binomial test (:func:`scipy.stats.binomtest`, ``p = 1/2``) of ``a_only`` among the
    discordant pairs; the interval of the accuracy difference is the matching exact
    conditional one (module docstring). With no discordant pairs (``m = 0``): ``p = 1`` and the
    interval's finite bound(s) at 0.

    Raises :class:`ValueError` before computing when the lengths differ, there are no
    examples, an entry is not a correctness flag, or ``alternative`` / ``confidence`` is invalid.
    """
    if alternative not in MCNEMAR_ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(MCNEMAR_ALTERNATIVES)}, got {alternative!r}")
    _check_confidence(confidence)
    a, b = _as_outcomes("a_correct", a_correct), _as_outcomes("b_correct", b_correct)
    if len(a) != len(b):
        raise ValueError(f"a_correct and b_correct must be paired: got {len(a)} and {len(b)} entries; score both "
                         f"on the same {unit}s, in the same order")
    n = len(a)
    if n == 0:
        raise ValueError(f"a McNemar test needs at least one {unit}; got none")
    a_only = int(np.count_nonzero(a & ~b))
    b_only = int(np.count_nonzero(~a & b))
    m = a_only + b_only
    name = f"exact McNemar test ({MCNEMAR_ALTERNATIVES[alternative]})"
    difference = 100.0 * (a_only - b_only) / n
    if m == 0:  # nothing tells a and b apart
        p_value = 1.0
        ci_low = -math.inf if alternative == "less" else 0.0
        ci_high = math.inf if alternative == "greater" else 0.0
    else:
        res = _st.binomtest(a_only, m, 0.5, alternative=alternative)
        ci = res.proportion_ci(confidence_level=confidence, method="exact")  # one-sided for a one-sided test
        p_value = float(res.pvalue)
        scale = 100.0 * m / n  # share π of discordant pairs favouring a → difference (2π − 1)·m/n, in points
        ci_low = -math.inf if alternative == "less" else (2.0 * float(ci.low) - 1.0) * scale
        ci_high = math.inf if alternative == "greater" else (2.0 * float(ci.high) - 1.0) * scale
    return McNemarTest(n=n, a_only=a_only, b_only=b_only, difference=difference, p_value=p_value, ci_low=ci_low,
                       ci_high=ci_high, test=name, confidence=float(confidence), alternative=alternative, unit=unit)


def format_tiny_p(p: float) -> str:
    """:func:`format_p`, except that a p-value that underflowed to 0.0 reads ``< 1e-300``
    (an exact test's tail below the smallest float, not an exact 0)."""
    return "< 1e-300" if p == 0 else f"= {format_p(p)}"


def describe_mcnemar(result: McNemarTest, *, a: str = "a", b: str = "b", decimals: int = 2) -> str:
    """The test as one phrase: ``exact McNemar test (one-sided, H1: a more accurate than b),
    n = 2000 images, a alone right on 40, b alone right on 12, difference +1.40 points, 95 % CI
    [+0.75, ∞), p = 1.2e-04``; ``a`` and ``b`` name the two classifiers."""
    level = f"{100 * result.confidence:g} %"
    test = result.test.replace("a more accurate than b", f"{a} more accurate than {b}") \
        .replace("a less accurate than b", f"{a} less accurate than {b}") \
        .replace("a and b differ", f"{a} and {b} differ")
    return (f"{test}, n = {result.n:,} {result.unit}s, {a} alone right on {result.a_only:,}, {b} alone right on "
            f"{result.b_only:,}, difference {result.difference:+.{decimals}f} points, {level} CI "
            f"{format_interval(result.ci_low, result.ci_high, decimals=decimals)}, p {format_tiny_p(result.p_value)}")


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over the given tests).

    With the ``m`` finite p-values sorted ``p_(1) ≤ … ≤ p_(m)``, the adjusted value of the
    ``i``-th is ``max_{j ≤ i} min(1, (m − j + 1)·p_(j))``; a test is rejected at level α
    when its adjusted value is below α. NaN entries (tests not run) stay NaN and do not
    count in ``m``. Returned in the input's order.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values lie in [0, 1], got {p.tolist()}")
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    if not m:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(scaled)
    return out


def format_p(p: float) -> str:
    """``p`` as printed: three decimals from 0.001 up, two significant digits below, ``0``
    for an exact 0 (equal differences), ``n/a`` for NaN."""
    if math.isnan(p):
        return "n/a"
    if p == 0:
        return "0"
    if p >= 0.001:
        return f"{p:.3f}"
    return f"{p:.1e}"


def format_interval(low: float, high: float, *, decimals: int = 2, sign: bool = True) -> str:
    """``[low, high]`` with ``∞`` for an infinite bound and a round bracket on that side."""
    def bound(v: float) -> str:
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        return f"{v:+.{decimals}f}" if sign else f"{v:.{decimals}f}"

    return f"{'(' if math.isinf(low) else '['}{bound(low)}, {bound(high)}{')' if math.isinf(high) else ']'}"


def describe(result: PairedTest, *, units: str = "points", decimals: int = 2, p_adjusted: float | None = None,
             adjustment: str = "Holm") -> str:
    """The test as one phrase: ``paired t-test (one-sided, H1: mean difference > 0), n = 5
    seeds, mean +2.41 points, 95 % CI [+0.87, ∞), p = 0.009``; with ``p_adjusted``, the
    adjusted value follows (``p = 0.009, Holm 0.018``). ``units``: the mean's units."""
    level = f"{100 * result.confidence:g} %"
    text = (f"{result.test}, n = {result.n} {result.unit}s, mean {result.mean_difference:+.{decimals}f} {units}, "
            f"{level} CI {format_interval(result.ci_low, result.ci_high, decimals=decimals)}, "
            f"p = {format_p(result.p_value)}")
    if p_adjusted is not None:
        text += f", {adjustment} {format_p(p_adjusted)}"
    return text


def verdict(result: PairedTest, *, alpha: float, holds: bool | None = None, units: str = "points",
            decimals: int = 2, p_adjusted: float | None = None) -> str:
    """``holds (…)`` or ``does not hold (…)`` with :func:`describe` and the comparison with
    ``alpha`` (of ``p_adjusted`` when given, else of ``p``). ``holds``: the whole claim's
    outcome when it has conditions beyond the test (default: the test's own, ``p < alpha``)."""
    p = result.p_value if p_adjusted is None else p_adjusted
    passed = p < alpha
    outcome = passed if holds is None else holds
    phrase = describe(result, units=units, decimals=decimals, p_adjusted=p_adjusted)
    return f"{'holds' if outcome else 'does not hold'} ({phrase} {'<' if passed else '≥'} α = {alpha:g})"


def not_tested(n: int, *, unit: str = "seed") -> str:
    """Why a claim on ``n`` < 2 pairs is not tested, and the fix."""
    fix = "set seeds: [...] with ≥ 2 entries" if unit == "seed" else f"give at least 2 paired {unit}s"
    return f"not tested ({n} {unit}{'' if n == 1 else 's'}: a paired test needs at least 2; {fix})"
