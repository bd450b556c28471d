"""Paired bootstrap over test sentences for corpus BLEU (Koehn 2004), and the De-En verdict
of Table 2 (Sun et al. 2021) that rests on it.

A corpus BLEU is not a mean of per-sentence scores, so its noise cannot be read off a
standard error. The paired bootstrap resamples the *sentences*: draw ``n`` indices with
replacement, recompute corpus BLEU of both systems on that same resample (from the
sentences' n-gram statistics), take the difference; ``resamples`` times. The spread of
those differences is how much the gain moves with the choice of test sentences.

sacreBLEU 2.x has this test (``sacrebleu.significance.PairedTest``, ``test_type="bs"``,
the Moses script's ``paired_bs``). Its API does not fit the verdict: it reports a
*two-sided* p-value of ``|difference|`` and a confidence interval of each system's own
score, not of the difference, and it takes its seed from the ``SACREBLEU_SEED``
environment variable. :func:`paired_bootstrap_bleu` draws **the same resamples** as
sacreBLEU's ``paired_bs`` for the same seed (``numpy.random.default_rng(seed).choice(n,
(resamples, n))``) and scores them with sacreBLEU's own statistics
(``BLEU.sentence_score`` counts, ``BLEU.compute_bleu``), so its BLEU is sacreBLEU's and its
two-sided p-value equals ``PairedTest``'s (tests/test_bootstrap.py checks both); it adds
the percentile interval of the difference and the one-sided p-value in the claimed
direction. With several seeds per system the gain of a resample is the mean over the
seeds of each seed's gain on that resample (the seeds are held fixed; the sentences vary).

:func:`translation_significance` decodes the baseline and the resistant De-En models
clean and at each ε of the claim (:func:`paramstress.translation.corrupted_translations`)
and runs the test per ε; :func:`text_claim_verdicts` writes the page's verdicts.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import stats as ST

__all__ = [
    "bleu_statistics",
    "bleu_from_statistics",
    "PairedBootstrap",
    "paired_bootstrap_bleu",
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


@dataclasses.dataclass(frozen=True)
class PairedBootstrap:
    """One paired bootstrap of ``system − baseline`` corpus BLEU.

    ``n``: sentences; ``resamples``, ``seed``, ``alpha`` as given; ``seeds``: training seeds
    averaged; ``baseline`` / ``system``: corpus BLEU on all ``n`` sentences (mean over
    seeds); ``gain = system − baseline``; ``gain_mean``: mean over the resamples;
    ``ci_low``/``ci_high``: the percentile ``1 − alpha`` interval of the resampled gains;
    ``p_value``: one-sided, ``(1 + #{resampled gain ≤ 0}) / (resamples + 1)`` (no gain);
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


def paired_bootstrap_bleu(baseline: Sequence[str] | Sequence[Sequence[str]],
                          system: Sequence[str] | Sequence[Sequence[str]], references: Sequence[str], *,
                          resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> PairedBootstrap:
    """Paired bootstrap of ``BLEU(system) − BLEU(baseline)`` over the test sentences
    (see the module docstring). ``baseline`` / ``system``: one translation per reference,
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
    n = len(refs)
    base_stats = np.stack([bleu_statistics(h, refs) for h in base_sets])  # (seeds, n, 10)
    sys_stats = np.stack([bleu_statistics(h, refs) for h in sys_sets])
    # the indices of sacreBLEU's paired_bs (significance._paired_bs_test) for this seed
    idxs = np.random.default_rng(seed).choice(n, size=(resamples, n), replace=True)

    def scores(stats: np.ndarray) -> tuple[float, np.ndarray]:
        full = float(np.mean([bleu_from_statistics(s) for s in stats]))
        per = np.array([[bleu_from_statistics(s[i].sum(0)) for i in idxs] for s in stats])  # (seeds, resamples)
        return full, per.mean(0)

    base_full, base_b = scores(base_stats)
    sys_full, sys_b = scores(sys_stats)
    diffs = sys_b - base_b
    low, high = (float(v) for v in np.quantile(diffs, [alpha / 2, 1 - alpha / 2]))
    gain = sys_full - base_full
    p_one = (1 + int(np.sum(diffs <= 0))) / (resamples + 1)
    absolute = np.abs(diffs)
    p_two = (int(np.sum(absolute - absolute.mean() > abs(gain))) + 1) / (resamples + 1)
    return PairedBootstrap(n=n, resamples=resamples, seed=seed, alpha=alpha, seeds=len(base_sets),
                           baseline=base_full, system=sys_full, gain=gain, gain_mean=float(diffs.mean()),
                           ci_low=low, ci_high=high, p_value=p_one, p_two_sided=p_two, holds=bool(low > 0),
                           baseline_resampled=base_b, system_resampled=sys_b)


def translation_significance(task: Any, models: Mapping[tuple[str, int], Any], eps_values: Sequence[float], *,
                             seeds: Sequence[int] = (0,), baseline: str = "baseline", system: str = "resistant",
                             p: float = 2.0, samples: int | None | str = "task", resamples: int = 1000, seed: int = 0,
                             alpha: float = 0.05) -> pd.DataFrame:
    """The De-En claim's paired bootstrap: ``models[(trainer, seed)]`` (as
    :attr:`paramstress.resistant.TaskTable2.models`) translate ``task``'s evaluation split
    (``samples``: ``"task"`` its own evaluated pairs, ``None`` the whole split, ``n`` the
    first ``n`` pairs) clean and under the ``L_p``, ``n = k`` gradient-based corruption at
    each of ``eps_values`` (:func:`paramstress.translation.corrupted_translations`, each
    model's own gradient), and :func:`paired_bootstrap_bleu` compares ``system`` with
    ``baseline`` on the same sentences at each ε. One row per ε, clean first (``eps`` NaN):
    the fields of :class:`PairedBootstrap`. Everything is checked before the first translation."""
    from .translation import DeEnTranslationTask, corrupted_translations

    if not isinstance(task, DeEnTranslationTask):
        raise ValueError(f"task must be the De-En task (DeEnTranslationTask), got {type(task).__name__}: "
                         "the bootstrap needs its per-sentence translations")
    if samples != "task":
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
    eps_list = [float(e) for e in eps_values]
    if any(not math.isfinite(e) or e <= 0 for e in eps_list):
        raise ValueError(f"eps_values must be positive corruption sizes, got {list(eps_values)}")
    _check_int("resamples", resamples, 100)
    _check_int("seed", seed, 0)
    ST.check_alpha(alpha)
    if not eps_list:  # the baseline never lost enough: nothing to test
        return pd.DataFrame()
    decoded = {(t, s): corrupted_translations(task, models[(t, s)], eps_values=eps_list, p=p)
               for t in (baseline, system) for s in seeds}
    rows = []
    for k, eps in enumerate([math.nan, *eps_list]):
        result = paired_bootstrap_bleu([decoded[(baseline, s)][k]["hypotheses"] for s in seeds],
                                       [decoded[(system, s)][k]["hypotheses"] for s in seeds],
                                       task.eval_references, resamples=resamples, seed=seed, alpha=alpha)
        rows.append({"eps": eps, **result.as_dict()})
    return pd.DataFrame(rows)


def claim_significance(claims: pd.DataFrame, tasks: Mapping[str, Any], tables: Mapping[str, Any], *,
                       seeds: Sequence[int] = (0,), p: float = 2.0, samples: int | None | str = "task",
                       resamples: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict[str, pd.DataFrame]:
    """The paired bootstraps of the text page: for every task whose per-sentence outputs
    are exposed (De-En: its translations), :func:`translation_significance` at the ε of its
    claim rows (``claims``: :func:`paramstress.resistant.resistance_claim` with a ``task``
    column of labels), with the models of ``tables[key]``
    (:class:`paramstress.resistant.TaskTable2`). PTB-LM and PTB-Parsing are left out: their
    tasks return corpus-level scores only. ``{key: frame}``; a task whose claim has no
    row gets no frame."""
    from .translation import DeEnTranslationTask

    out = {}
    for key, task in tasks.items():
        if not isinstance(task, DeEnTranslationTask):
            continue
        if key not in tables:
            raise ValueError(f"no TaskTable2 for {key!r}: pass the task_table2 result of every task")
        eps = [float(e) for e in claims.loc[claims["task"] == task.label, "eps"]] if len(claims) else []
        if eps:
            out[key] = translation_significance(task, tables[key].models, eps, seeds=seeds, p=p, samples=samples,
                                                resamples=resamples, seed=seed, alpha=alpha)
    return out


def text_claim_verdicts(claims: pd.DataFrame, tasks: Mapping[str, Any], claim: Mapping[str, Sequence[float]],
                        significance: Mapping[str, pd.DataFrame] | None = None) -> tuple[str, dict[str, str]]:
    """The verdicts of the text page's claim (Table 2: at an ε where the baseline loses at
    least ``claim[key][0]``, the resistant model is better, at a clean cost of at most
    ``claim[key][1]``), one Markdown bullet per task, and ``{key: "h of m"}``.

    ``claims``: :func:`paramstress.resistant.resistance_claim` rows with a ``task`` column
    (the task's label); ``tasks``: ``{key: Task}``; ``significance``: ``{key: frame of
    :func:`translation_significance`}``. Where a task has one, its verdict per ε is the
    bootstrap's: the one-sided p-value, Holm-adjusted over the task's claim ε
    (:func:`paramstress.stats.holm`, as resistant_training adjusts its t-tests), below the
    bootstrap's ``alpha`` and the clean cost within the limit, stated with n, resamples, the
    gain, the interval and both p-values; otherwise the point
    comparison of ``resistance_claim`` is stated as what it is (one seed: no test)."""
    significance = dict(significance or {})
    unknown = sorted(set(significance) - set(tasks))
    if unknown:
        raise ValueError(f"significance for unknown tasks {unknown}; tasks: {list(tasks)}")
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
        by_eps = sig.assign(_eps=sig["eps"].fillna(-1.0)).set_index("_eps")
        missing = [float(e) for e in part["eps"] if float(e) not in by_eps.index]
        if missing:
            raise ValueError(f"{task.label}: no bootstrap at ε {missing}; pass those ε to translation_significance")
        clean = by_eps.loc[-1.0]
        alpha = float(sig.iloc[0]["alpha"])
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
            pieces.append(f"ε = {row['eps']:g}: {b['gain']:+.2f} {unit} [{b['ci_low']:+.2f}, {b['ci_high']:+.2f}], "
                          f"p = {b['p_value']:.3g}, Holm {p_adj:.3g} ({outcome})")
        held_of[key] = f"{held} of {len(part)}"
        first = sig.iloc[0]
        level = round(100 * (1 - float(first["alpha"])))
        lines.append(
            f"- **{task.label}**: the claim holds at {held} of {len(part)} ε where the baseline loses at least "
            f"{min_drop} {unit}, by a paired bootstrap over the {int(first['n'])} test sentences "
            f"({int(first['resamples'])} resamples, {int(first['seeds'])} seed{'s' if first['seeds'] > 1 else ''}; "
            f"gain of corpus BLEU, its {level} % interval and one-sided p; it holds where the p-value, Holm-adjusted "
            f"over the {len(part)} ε, is below α = {alpha:g} and the clean cost is at most {max_cost}): "
            + "; ".join(pieces) +
            f". Clean: {clean['gain']:+.2f} {unit} [{clean['ci_low']:+.2f}, {clean['ci_high']:+.2f}].")
    return "\n".join(lines), held_of
