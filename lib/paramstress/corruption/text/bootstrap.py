"""Paired bootstrap over test units (Koehn 2004) for scores that are functions of summed
per-unit statistics — corpus BLEU, log perplexity, UAS — and the text page's Table 2 verdicts
(Sun et al. 2021) that rest on it.

A corpus score is not a mean of per-unit scores, so its noise cannot be read off a standard
error. The paired bootstrap resamples the *units*: draw ``n`` indices with replacement,
recompute the score of both systems on that same resample from the units' sufficient
statistics, take the difference; ``resamples`` times. The spread of those differences is how
much the gain moves with the choice of test units. :func:`paired_bootstrap` does this for
any ``(n, k)`` statistics and a ``combine`` function (the task's
:meth:`paramstress.tasks.Task.combine`), in the metric's direction (``higher_is_better``;
for a lower-is-better score such as log perplexity the gain is ``baseline − system``):

* De-En (BLEU): per test sentence, sacreBLEU's n-gram statistics (:func:`bleu_statistics`,
  :func:`bleu_from_statistics`); :func:`paired_bootstrap_bleu` is this case, from the
  translations;
* PTB-Parsing (UAS): per test sentence, ``(correct heads, scored tokens)``,
  ``UAS = 100·Σcorrect/Σtokens`` (:func:`ratio_of_sums`);
* PTB-LM (log perplexity): per test sentence (the corpus keeps the boundaries: every
  sentence ends with ``<eos>``), ``(summed NLL, predicted tokens)`` from the task's own
  evaluation pass (the hidden state carried across sentences and windows, as the task scores
  them), ``log PPL = ΣNLL/Σtokens``. The units are sentences, not contiguous blocks: a
  sentence's NLL depends on the sentences before it through the carried state, so units are
  not independent draws; the same holds for blocks.

sacreBLEU 2.x has the BLEU test (``sacrebleu.significance.PairedTest``, ``test_type="bs"``,
the Moses script's ``paired_bs``). Its API does not fit the verdict: it reports a
*two-sided* p-value of ``|difference|`` and a confidence interval of each system's own
score, not of the difference, and it takes its seed from the ``SACREBLEU_SEED``
environment variable. :func:`paired_bootstrap` draws **the same resamples** as
sacreBLEU's ``paired_bs`` for the same seed (``numpy.random.default_rng(seed).choice(n,
(resamples, n))``), and :func:`paired_bootstrap_bleu` scores them with sacreBLEU's own
statistics (``BLEU.sentence_score`` counts, ``BLEU.compute_bleu``), so its BLEU is
sacreBLEU's and its two-sided p-value equals ``PairedTest``'s (tests/test_bootstrap.py
checks both); it adds the percentile interval of the difference and the one-sided p-value
in the claimed direction. With several seeds per system the gain of a resample is the mean
over the seeds of each seed's gain on that resample (the seeds are held fixed; the units
vary).

:func:`task_significance` scores the baseline and the resistant model of any task with
per-unit statistics clean and at each ε of the claim
(:func:`paramstress.tasks.task_corrupted_units`, the corruption of Table 2) and runs the
test per ε; :func:`claim_significance` does so for every task of the page and
:func:`text_claim_verdicts` writes the page's verdicts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from paramstress.engine import stats as ST

__all__ = [
    "bleu_statistics",
    "bleu_from_statistics",
    "ratio_of_sums",
    "PairedBootstrap",
    "paired_bootstrap",
    "paired_bootstrap_bleu",
    "task_significance",
    "translation_significance",
    "claim_significance",
    "text_claim_verdicts",
]

#: Columns of the per-sentence statistics: hypothesis length, reference length, matched
#: n-grams (n = 1..4), hypothesis n-grams (n = 1..4).
STAT_COLUMNS = ("sys_len", "ref_len", "correct_1", "correct_2", "correct_3", "correct_4",
                "total_1", "total_2", "total_3", "total_4")


def _bleu(effective_order: bool = True) -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=effective_order)


def bleu_statistics(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """sacreBLEU's sufficient statistics of every sentence (13a tokenisation, cased, as
    :func:`paramstress.translation.corpus_bleu`): an ``(n, 10)`` array, columns
    :data:`STAT_COLUMNS`. Their column sums give the corpus BLEU (:func:`bleu_from_statistics`)."""
    hyps, refs = list(hypotheses), list(references)
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references: give one translation per reference")
    if not hyps:
        raise ValueError("no sentences: give at least one hypothesis and its reference")
    bad = [i for i, h in enumerate(hyps) if not isinstance(h, str)] + [i for i, r in enumerate(refs)
                                                                       if not isinstance(r, str)]
    if bad:
        raise ValueError(f"hypotheses and references must be strings (an empty translation is ''), "
                         f"not at positions {bad[:5]}")
    bleu = _bleu()
    rows = []
    for h, r in zip(hyps, refs):
        s = bleu.sentence_score(h, [r])
        rows.append([s.sys_len, s.ref_len, *s.counts, *s.totals])
    return np.asarray(rows, dtype=np.float64)


def bleu_from_statistics(stats: np.ndarray) -> float:
    """Corpus BLEU (sacreBLEU's defaults: exponential smoothing, 4-grams) of the summed
    per-sentence statistics ``stats`` (``(n, 10)``, or already summed ``(10,)``)."""
    from sacrebleu.metrics import BLEU

    total = np.asarray(stats, dtype=np.float64)
    if total.ndim == 2:
        total = total.sum(0)
    if total.shape != (10,):
        raise ValueError(f"stats must have the 10 columns {STAT_COLUMNS}, got shape {np.shape(stats)}")
    t = [int(round(v)) for v in total]
    return float(BLEU.compute_bleu(t[2:6], t[6:10], t[0], t[1], smooth_method="exp").score)


def ratio_of_sums(stats: np.ndarray, scale: float = 1.0) -> float:
    """``scale · Σ stats[:, 0] / Σ stats[:, 1]`` of per-unit statistics ``(n, 2)`` (or their
    column sums ``(2,)``): log perplexity from ``(summed NLL, tokens)`` (``scale`` 1), UAS from
    ``(correct heads, scored tokens)`` (``scale`` 100, as ``100.0 * correct / tokens``)."""
    total = np.asarray(stats, dtype=np.float64)
    if total.ndim == 2:
        total = total.sum(0)
    if total.shape != (2,):
        raise ValueError(f"stats must have 2 columns (numerator, denominator), got shape {np.shape(stats)}")
    return float(scale * total[0] / total[1])


@dataclasses.dataclass(frozen=True)
class PairedBootstrap:
    """One paired bootstrap of the gain of ``system`` over ``baseline``.

    ``n``: units; ``resamples``, ``seed``, ``alpha`` as given; ``seeds``: training seeds
    averaged; ``higher_is_better``: the metric's direction; ``baseline`` / ``system``: the
    score on all ``n`` units (mean over seeds); ``gain``: ``system − baseline`` when higher
    is better, ``baseline − system`` when lower is (positive: the system is better);
    ``gain_mean``: mean over the resamples;
    ``ci_low``/``ci_high``: the percentile ``1 − alpha`` interval of the resampled gains;
    ``p_value``: one-sided, ``(1 + #{resampled gain not > 0}) / (resamples + 1)`` (no gain;
    a resample on which both scores are infinite has gain NaN and counts as no gain, and
    makes the interval NaN);
    ``p_two_sided``: sacreBLEU ``paired_bs``'s p-value of ``|gain|`` (kept for the cross-check
    with sacreBLEU, not in :meth:`as_dict`: by sacreBLEU's convention two identical systems get
    ``1 / (resamples + 1)``); ``holds``: the
    interval lies above 0. ``baseline_resampled`` / ``system_resampled``: the scores of
    every resample (mean over seeds).
    """

    n: int
    resamples: int
    seed: int
    alpha: float
    seeds: int
    higher_is_better: bool
    baseline: float
    system: float
    gain: float
    gain_mean: float
    ci_low: float
    ci_high: float
    p_value: float
    p_two_sided: float
    holds: bool
    baseline_resampled: np.ndarray = dataclasses.field(repr=False, compare=False)
    system_resampled: np.ndarray = dataclasses.field(repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The scalar fields (one table row)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("baseline_resampled", "system_resampled", "p_two_sided")}


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)



def _per_seed(hypotheses: Sequence[str] | Sequence[Sequence[str]], what: str) -> list[list[str]]:
    """One list of strings per seed: a flat list of strings is one seed."""
    if isinstance(hypotheses, str):
        raise ValueError(f"{what} must be a list of translations (or one list per seed), got one string")
    items = list(hypotheses)
    if items and all(isinstance(h, str) for h in items):
        return [items]
    if items and all(isinstance(h, (list, tuple)) for h in items):
        return [list(h) for h in items]
    raise ValueError(f"{what} must be a list of strings (one seed) or a list of such lists (one per seed)")


def _per_seed_units(units: Any, what: str) -> np.ndarray:
    """``(seeds, n, k)`` float64 statistics: one ``(n, k)`` array is one seed."""
    if isinstance(units, np.ndarray) and units.ndim in (2, 3):
        arr = units.astype(np.float64)
    else:
        try:
            items = [np.asarray(u, dtype=np.float64) for u in units]
        except (TypeError, ValueError):
            raise ValueError(f"{what} must be per-unit statistics: an (n, k) array, or one per seed") from None
        if not items or any(u.ndim != 2 for u in items):
            raise ValueError(f"{what} must be per-unit statistics: an (n, k) array (one row per unit), "
                             "or a list of such arrays (one per seed)")
        if len({u.shape for u in items}) > 1:
            raise ValueError(f"{what}: the seeds' statistics have shapes {[u.shape for u in items]}; "
                             "score every seed on the same units")
        arr = np.stack(items)
    if arr.ndim == 2:
        arr = arr[None]
    if np.isnan(arr).any():
        raise ValueError(f"{what} has NaN statistics: a unit's statistics must be numbers (an infinite NLL is inf)")
    return arr


def paired_bootstrap(baseline: Any, system: Any, combine: Callable[[np.ndarray], float], *,
                     higher_is_better: bool = True, resamples: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> PairedBootstrap:
    """Paired bootstrap of the gain of ``system`` over ``baseline`` over their units (see the
    module docstring). ``baseline`` / ``system``: per-unit statistics, an ``(n, k)`` array
    (row ``i``: unit ``i``), or one such array per training seed (the same number of seeds
    for both, seed ``i`` of one paired with seed ``i`` of the other; the same ``n`` units).
    ``combine(stats)``: the score of the summed statistics of a sample (given the ``(k,)``
    column sums; on all units the ``(n, k)`` array). ``higher_is_better``: the gain is
    ``system − baseline`` when true, ``baseline − system`` when false. The resamples are
    sacreBLEU ``paired_bs``'s for ``seed``. All input is checked before any scoring."""
    resamples = _check_int("resamples", resamples, 100)
    seed = _check_int("seed", seed, 0)
    alpha = ST.check_alpha(alpha)
    if not isinstance(higher_is_better, (bool, np.bool_)):
        raise ValueError(f"higher_is_better must be True or False (the metric's direction), got {higher_is_better!r}")
    if not callable(combine):
        raise ValueError(f"combine must be a function of summed statistics -> score (the task's combine), "
                         f"got {type(combine).__name__}")
    base_stats, sys_stats = _per_seed_units(baseline, "baseline"), _per_seed_units(system, "system")
    if len(base_stats) != len(sys_stats):
        raise ValueError(f"{len(base_stats)} baseline seeds but {len(sys_stats)} system seeds: pair every seed")
    if base_stats.shape[1:] != sys_stats.shape[1:]:
        raise ValueError(f"baseline statistics {base_stats.shape[1:]} and system {sys_stats.shape[1:]} differ: "
                         "score both systems on the same units, with the same statistics")
    n = base_stats.shape[1]
    if n < 2:
        raise ValueError(f"a bootstrap over units needs at least 2 units, got {n}")
    # the indices of sacreBLEU's paired_bs (significance._paired_bs_test) for this seed
    idxs = np.random.default_rng(seed).choice(n, size=(resamples, n), replace=True)

    def scores(stats: np.ndarray) -> tuple[float, np.ndarray]:
        full = float(np.mean([combine(s) for s in stats]))
        per = np.array([[combine(s[i].sum(0)) for i in idxs] for s in stats])  # (seeds, resamples)
        return full, per.mean(0)

    base_full, base_b = scores(base_stats)
    sys_full, sys_b = scores(sys_stats)
    with np.errstate(invalid="ignore"):  # inf − inf: both systems infinite on a resample (gain NaN)
        diffs = sys_b - base_b if higher_is_better else base_b - sys_b
        gain = sys_full - base_full if higher_is_better else base_full - sys_full
        low, high = (float(v) for v in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
        p_one = (1 + int(np.sum(~(diffs > 0)))) / (resamples + 1)
        absolute = np.abs(diffs)
        p_two = (int(np.sum(absolute - absolute.mean() > abs(gain))) + 1) / (resamples + 1)
    return PairedBootstrap(n=n, resamples=resamples, seed=seed, alpha=alpha, seeds=len(base_stats),
                           higher_is_better=bool(higher_is_better), baseline=base_full, system=sys_full, gain=gain,
                           gain_mean=float(diffs.mean()), ci_low=low, ci_high=high, p_value=p_one, p_two_sided=p_two,
                           holds=bool(low > 0), baseline_resampled=base_b, system_resampled=sys_b)


def paired_bootstrap_bleu(baseline: Sequence[str] | Sequence[Sequence[str]],
                          system: Sequence[str] | Sequence[Sequence[str]], references: Sequence[str], *,
                          resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> PairedBootstrap:
    """Paired bootstrap of ``BLEU(system) − BLEU(baseline)`` over the test sentences:
    :func:`paired_bootstrap` of the sentences' :func:`bleu_statistics` with
    :func:`bleu_from_statistics`. ``baseline`` / ``system``: one translation per reference,
    or one such list per training seed (the same number of seeds for both, seed ``i`` of one
    paired with seed ``i`` of the other). All input is checked before any scoring."""
    resamples = _check_int("resamples", resamples, 100)
    seed = _check_int("seed", seed, 0)
    alpha = ST.check_alpha(alpha)
    base_sets, sys_sets = _per_seed(baseline, "baseline"), _per_seed(system, "system")
    refs = list(references)
    if len(base_sets) != len(sys_sets):
        raise ValueError(f"{len(base_sets)} baseline seeds but {len(sys_sets)} system seeds: pair every seed")
    for what, sets in (("baseline", base_sets), ("system", sys_sets)):
        for i, hyps in enumerate(sets):
            if len(hyps) != len(refs):
                raise ValueError(f"{what} seed {i}: {len(hyps)} translations for {len(refs)} references; "
                                 "translate every evaluated sentence (a failed one is '')")
    if len(refs) < 2:
        raise ValueError(f"a bootstrap over sentences needs at least 2 sentences, got {len(refs)}")
    base_stats = np.stack([bleu_statistics(h, refs) for h in base_sets])  # (seeds, n, 10)
    sys_stats = np.stack([bleu_statistics(h, refs) for h in sys_sets])
    return paired_bootstrap(base_stats, sys_stats, bleu_from_statistics, higher_is_better=True,
                            resamples=resamples, seed=seed, alpha=alpha)


def check_eps(eps_values: Sequence[float]) -> list[float]:
    eps_list = [float(e) for e in eps_values]
    if any(not math.isfinite(e) or e <= 0 for e in eps_list):
        raise ValueError(f"eps_values must be positive corruption sizes, got {list(eps_values)}")
    return eps_list


def task_significance(task: Any, models: Mapping[tuple[str, int], Any], eps_values: Sequence[float], *,
                      seeds: Sequence[int] = (0,), baseline: str = "baseline", system: str = "resistant",
                      p: float = 2.0, samples: int | None | str = "task", resamples: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> pd.DataFrame:
    """A Table 2 claim's paired bootstrap for any task with per-unit statistics
    (:func:`paramstress.tasks.has_unit_statistics`: De-En's sentences, PTB-Parsing's
    sentences, PTB-LM's sentences): ``models[(trainer, seed)]`` (as
    :attr:`paramstress.resistant.TaskTable2.models`) are scored on ``task``'s evaluation
    split clean and under the ``L_p``, ``n = k`` gradient-based corruption at each of
    ``eps_values`` (:func:`paramstress.tasks.task_corrupted_units`, each model's own
    gradient), and :func:`paired_bootstrap` with the task's ``combine`` and direction
    compares ``system`` with ``baseline`` on the same units at each ε.

    ``samples``: ``"task"`` the task's own evaluated units; for a task that can re-cut its
    evaluation split (``with_eval_samples``, De-En) ``None`` the whole split or ``n`` the first
    ``n`` pairs; any other task takes only ``"task"``. One row per ε, clean first (``eps``
    NaN): the fields of :class:`PairedBootstrap` and ``units`` (what was resampled, e.g.
    ``"test sentences"``). Everything is checked before the first evaluation."""
    from paramstress.corruption.text.tasks import has_unit_statistics, task_corrupted_units

    if not has_unit_statistics(task):
        raise ValueError(f"{type(task).__name__} has no per-unit statistics (Task.evaluate_units, combine, units): "
                         "a paired bootstrap needs them")
    if samples != "task":
        if not hasattr(task, "with_eval_samples"):
            raise ValueError(f"{task.label} always evaluates its task's split: pass samples='task' "
                             f"(got {samples!r}; only a task with with_eval_samples, De-En, takes another)")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 2):
            raise ValueError(f"samples must be 'task', None (the whole split) or an int >= 2, got {samples!r}")
        if samples != task.eval_samples:
            task = task.with_eval_samples(samples)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give the training seeds whose models are compared")
    missing = [(t, s) for t in (baseline, system) for s in seeds if (t, s) not in models]
    if missing:
        raise ValueError(f"no model for {missing}; models has {sorted(models)} (TaskTable2.models)")
    eps_list = check_eps(eps_values)
    _check_int("resamples", resamples, 100)
    _check_int("seed", seed, 0)
    ST.check_alpha(alpha)
    if not eps_list:  # the baseline never lost enough: nothing to test
        return pd.DataFrame()
    scored = {(t, s): task_corrupted_units(task, models[(t, s)], eps_values=eps_list, p=p)
              for t in (baseline, system) for s in seeds}
    units = f"{getattr(task, 'eval_split', 'evaluation')} {task.units}"
    rows = []
    for k, eps in enumerate([math.nan, *eps_list]):
        result = paired_bootstrap([scored[(baseline, s)][k]["units"] for s in seeds],
                                  [scored[(system, s)][k]["units"] for s in seeds], task.combine,
                                  higher_is_better=bool(task.higher_is_better), resamples=resamples, seed=seed,
                                  alpha=alpha)
        rows.append({"eps": eps, **result.as_dict(), "units": units})
    return pd.DataFrame(rows)


def translation_significance(task: Any, models: Mapping[tuple[str, int], Any], eps_values: Sequence[float], *,
                             seeds: Sequence[int] = (0,), baseline: str = "baseline", system: str = "resistant",
                             p: float = 2.0, samples: int | None | str = "task", resamples: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> pd.DataFrame:
    """The De-En claim's paired bootstrap: :func:`task_significance` for the De-En task
    (``samples``: ``"task"`` its own evaluated pairs, ``None`` the whole split, ``n`` the
    first ``n`` pairs), BLEU from the sentences' sacreBLEU statistics of the translations
    decoded clean and at each ε, as :func:`paired_bootstrap_bleu` scores them."""
    from paramstress.corruption.text.translation import DeEnTranslationTask

    if not isinstance(task, DeEnTranslationTask):
        raise ValueError(f"task must be the De-En task (DeEnTranslationTask), got {type(task).__name__}: "
                         "the bootstrap needs its per-sentence translations")
    return task_significance(task, models, eps_values, seeds=seeds, baseline=baseline, system=system, p=p,
                             samples=samples, resamples=resamples, seed=seed, alpha=alpha)


def claim_significance(claims: pd.DataFrame, tasks: Mapping[str, Any], tables: Mapping[str, Any], *,
                       seeds: Sequence[int] = (0,), p: float = 2.0, samples: int | None | str = "task",
                       resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """The paired bootstraps of the text page: for every task with per-unit statistics
    (:func:`paramstress.tasks.has_unit_statistics`: PTB-LM, PTB-Parsing and De-En),
    :func:`task_significance` at the ε of its claim rows (``claims``:
    :func:`paramstress.resistant.resistance_claim` with a ``task`` column of labels), with
    the models of ``tables[key]`` (:class:`paramstress.resistant.TaskTable2`). ``samples``
    re-cuts the evaluation split of the tasks that can (``with_eval_samples``: De-En); the
    others are tested on their task's evaluation split as it is. ``{key: frame}``; a task
    whose claim has no row gets no frame; a task without per-unit statistics is left out
    (its verdict stays a point comparison). Every task's arguments are checked before the
    first evaluation."""
    from paramstress.corruption.text.tasks import has_unit_statistics

    if samples != "task" and samples is not None and (isinstance(samples, bool) or not isinstance(samples, int)
                                                      or samples < 2):
        raise ValueError(f"samples must be 'task', None (the whole split) or an int >= 2, got {samples!r}")
    plan = {}
    for key, task in tasks.items():
        if not has_unit_statistics(task):
            continue
        if key not in tables:
            raise ValueError(f"no TaskTable2 for {key!r}: pass the task_table2 result of every task")
        eps = [float(e) for e in claims.loc[claims["task"] == task.label, "eps"]] if len(claims) else []
        if eps:
            missing = [(t, s) for t in ("baseline", "resistant") for s in seeds if (t, s) not in tables[key].models]
            if missing:
                raise ValueError(f"{task.label}: no model for {missing}; its TaskTable2 has "
                                 f"{sorted(tables[key].models)}")
            plan[key] = (task, eps, samples if hasattr(task, "with_eval_samples") else "task")
    _check_int("resamples", resamples, 100)
    _check_int("seed", seed, 0)
    ST.check_alpha(alpha)
    return {key: task_significance(task, tables[key].models, eps, seeds=seeds, p=p, samples=task_samples,
                                   resamples=resamples, seed=seed, alpha=alpha)
            for key, (task, eps, task_samples) in plan.items()}


def text_claim_verdicts(claims: pd.DataFrame, tasks: Mapping[str, Any], claim: Mapping[str, Sequence[float]],
                        significance: Mapping[str, pd.DataFrame] | None = None) -> tuple[str, dict[str, str]]:
    """The verdicts of the text page's claim (Table 2: at an ε where the baseline loses at
    least ``claim[key][0]``, the resistant model is better, at a clean cost of at most
    ``claim[key][1]``), one Markdown bullet per task, and ``{key: "h of m"}``.

    ``claims``: :func:`paramstress.resistant.resistance_claim` rows with a ``task`` column
    (the task's label); ``tasks``: ``{key: Task}``; ``significance``: ``{key: frame of
    :func:`task_significance`}``. Where a task has one, its verdict per ε is the
    bootstrap's: the one-sided p-value of the gain (in the metric's direction: for log
    perplexity baseline − proposed), Holm-adjusted over the task's claim ε
    (:func:`paramstress.stats.holm`, as resistant_training adjusts its t-tests), below the
    bootstrap's ``alpha`` and the clean cost within the limit, stated with the test (paired
    bootstrap over which units), n, resamples, seeds, the gain, its interval and both
    p-values; otherwise the point comparison of ``resistance_claim`` is stated as what it is
    (one seed: no test)."""
    significance = dict(significance or {})
    unknown = sorted(set(significance) - set(tasks))
    if unknown:
        raise ValueError(f"significance for unknown tasks {unknown}; tasks: {list(tasks)}")
    for key, sig in significance.items():
        lacking = [c for c in ("units", "higher_is_better") if c not in sig.columns]
        if lacking and len(sig):
            raise ValueError(f"{key}: the significance frame lacks {lacking}; pass the frames of task_significance")
    lines, held_of = [], {}
    for key, task in tasks.items():
        if key not in claim:
            raise ValueError(f"claim has no entry for {key!r}: give [min_drop, max_clean_cost]")
        min_drop, max_cost = claim[key]
        part = claims[claims["task"] == task.label] if len(claims) else claims
        unit = task.metric_label
        if part.empty:
            lines.append(f"- **{task.label}**: the baseline never loses {min_drop} {unit} on this grid; "
                         "the claim cannot be checked here.")
            continue
        sig = significance.get(key)
        if sig is None:
            held = int(part["holds"].sum())
            held_of[key] = f"{held} of {len(part)}"
            best = part.loc[part["gain"].idxmax()]
            if "gain_se" in part.columns:  # resistance_claim on seed means
                seeds_note = ("one seed, no test: a point comparison, not a finding"
                              if part["gain_se"].isna().all() else "gain beyond 2 standard errors over the seeds")
            else:  # resistance_claim on per-seed rows
                seeds_note = "paired t-test over the seeds, Holm-adjusted over the ε"
            lines.append(f"- **{task.label}**: the claim holds at {held} of {len(part)} ε where the baseline loses "
                         f"at least {min_drop} ({seeds_note}); the largest gain is {best['gain']:.3g} {unit} at "
                         f"ε = {best['eps']:g} (baseline {best['baseline']:.3g}, proposed "
                         f"{best['score'] if 'score' in best else best[task.metric]:.3g}); clean cost "
                         f"{best['clean_cost']:.3g}.")
            continue
        higher = bool(sig.iloc[0]["higher_is_better"])
        if hasattr(task, "higher_is_better") and bool(task.higher_is_better) != higher:
            raise ValueError(f"{task.label}: the bootstrap's direction (higher_is_better={higher}) is not the "
                             f"task's; pass the frame task_significance made for this task")
        by_eps = sig.assign(_eps=sig["eps"].fillna(-1.0)).set_index("_eps")
        missing = [float(e) for e in part["eps"] if float(e) not in by_eps.index]
        if missing:
            raise ValueError(f"{task.label}: no bootstrap at ε {missing}; pass those ε to task_significance")
        clean = by_eps.loc[-1.0]
        alpha = float(sig.iloc[0]["alpha"])
        d = int(getattr(task, "decimals", 2))
        adjusted = ST.holm([float(by_eps.loc[float(e), "p_value"]) for e in part["eps"]])
        held, pieces = 0, []
        for (_, row), p_adj in zip(part.iterrows(), adjusted):
            b = by_eps.loc[float(row["eps"])]
            cost = -float(clean["gain"])
            significant = bool(p_adj < alpha)
            ok = significant and cost <= max_cost
            held += ok
            if ok:
                outcome = "holds"
            elif significant:
                outcome = "a gain, but the clean cost is above the limit"
            elif b["ci_high"] < 0:
                outcome = "the baseline is better"
            else:
                outcome = "within the noise"
            pieces.append(f"ε = {row['eps']:g}: {b['gain']:+.{d}f} {unit} [{b['ci_low']:+.{d}f}, "
                          f"{b['ci_high']:+.{d}f}], p = {b['p_value']:.3g}, Holm {p_adj:.3g} ({outcome})")
        held_of[key] = f"{held} of {len(part)}"
        first = sig.iloc[0]
        level = round(100 * (1 - float(first["alpha"])))
        direction = "" if higher else ", baseline − proposed (lower is better)"
        lines.append(
            f"- **{task.label}**: the claim holds at {held} of {len(part)} ε where the baseline loses at least "
            f"{min_drop} {unit}, by a paired bootstrap over the {int(first['n'])} {first['units']} "
            f"({int(first['resamples'])} resamples, {int(first['seeds'])} seed{'s' if first['seeds'] > 1 else ''}; "
            f"gain of corpus {unit}{direction}, its {level} % interval and one-sided p; it holds where the p-value, "
            f"Holm-adjusted over the {len(part)} ε, is below α = {alpha:g} and the clean cost is at most "
            f"{max_cost}): "
            + "; ".join(pieces) +
            f". Clean: {clean['gain']:+.{d}f} {unit} [{clean['ci_low']:+.{d}f}, {clean['ci_high']:+.{d}f}].")
    return "\n".join(lines), held_of
