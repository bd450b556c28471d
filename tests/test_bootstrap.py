"""Paired bootstrap of corpus BLEU over sentences (paramstress.bootstrap): sacreBLEU's
statistics and resamples, hand-computed cases, the verdict text, bad input."""
from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest
import sacrebleu

from paramstress import bootstrap as B

REFS = ["a man in an orange hat is staring at something .", "a boston terrier runs on green grass .",
        "a girl in a karate uniform breaks a stick .", "two dogs are playing in the snow .",
        "a woman reads a book in the park .", "the child plays with a red ball ."]
WEAK = ["a man in a hat looks at something .", "a dog runs on the grass .", "a girl breaks a stick .",
        "two dogs play in snow .", "a woman reads in a park .", "a kid plays with a ball ."]


def test_statistics_by_hand_and_corpus_bleu_is_sacrebleus():
    stats = B.bleu_statistics(["a b c d"], ["a b c d"])
    assert stats.tolist() == [[4, 4, 4, 3, 2, 1, 4, 3, 2, 1]]
    stats = B.bleu_statistics(["a b x", ""], ["a b c d", "e f"])
    assert stats.tolist() == [[3, 4, 2, 1, 0, 0, 3, 2, 1, 0], [0, 2, 0, 0, 0, 0, 0, 0, 0, 0]]
    full = B.bleu_statistics(WEAK, REFS)
    assert B.bleu_from_statistics(full) == pytest.approx(sacrebleu.corpus_bleu(WEAK, [REFS]).score, abs=1e-12)
    assert B.bleu_from_statistics(full[[0, 0, 3]]) == pytest.approx(
        sacrebleu.corpus_bleu([WEAK[0], WEAK[0], WEAK[3]], [[REFS[0], REFS[0], REFS[3]]]).score, abs=1e-12)


def test_identical_systems_have_no_gain():
    r = B.paired_bootstrap_bleu(WEAK, WEAK, REFS, resamples=200, seed=3)
    assert r.gain == 0.0 and r.ci_low == r.ci_high == 0.0
    assert r.p_value == 1.0 and not r.holds  # every resampled gain is <= 0
    assert "p_two_sided" not in r.as_dict() and r.as_dict()["p_value"] == 1.0
    assert r.n == 6 and r.resamples == 200 and r.seeds == 1


def test_better_on_every_sentence_holds_with_the_smallest_p():
    r = B.paired_bootstrap_bleu(WEAK, REFS, REFS, resamples=500, seed=0)
    assert r.system == pytest.approx(100.0) and r.gain == pytest.approx(100.0 - r.baseline)
    assert r.p_value == pytest.approx(1 / 501)  # no resample without a gain
    assert r.holds and r.ci_low > 0
    # the claimed direction matters: the weak system against the references fails
    worse = B.paired_bootstrap_bleu(REFS, WEAK, REFS, resamples=500, seed=0)
    assert worse.gain < 0 and worse.p_value == 1.0 and not worse.holds and worse.ci_high < 0


def test_two_sentences_gain_is_zero_in_a_quarter_of_resamples():
    # the system is perfect on sentence 0 and equal to the baseline on sentence 1: a resample
    # of two draws has no gain exactly when it draws sentence 1 twice, probability 1/4
    refs = ["the cat sits on the mat today", "a dog runs in the park"]
    base = ["the cat sat on a mat", "a dog is running"]
    system = [refs[0], base[1]]
    r = B.paired_bootstrap_bleu(base, system, refs, resamples=8000, seed=1)
    assert r.p_value == pytest.approx(0.25, abs=0.015)
    assert r.ci_low == 0.0 and not r.holds  # 2.5 % quantile falls on the no-gain resamples


def test_resamples_and_two_sided_p_are_sacrebleus_paired_bs(monkeypatch):
    system = [REFS[0], WEAK[1], REFS[2], WEAK[3], WEAK[4], REFS[5]]
    ours = B.paired_bootstrap_bleu(WEAK, system, REFS, resamples=300, seed=7)
    monkeypatch.setenv("SACREBLEU_SEED", "7")
    from sacrebleu.metrics import BLEU
    from sacrebleu.significance import PairedTest

    test = PairedTest([("baseline", WEAK), ("system", system)], {"BLEU": BLEU()}, references=[REFS],
                      test_type="bs", n_samples=300)
    _, scores = test()
    result = scores["BLEU"][1]
    assert result.score == pytest.approx(ours.system, abs=1e-9)
    assert result.p_value == pytest.approx(ours.p_two_sided, abs=1e-12)
    assert result.mean == pytest.approx(float(np.mean(ours.system_resampled)), abs=1e-4)  # float32 sums there


def test_seeds_average_their_gains():
    one = B.paired_bootstrap_bleu(WEAK, REFS, REFS, resamples=100, seed=0)
    two = B.paired_bootstrap_bleu([WEAK, WEAK], [REFS, WEAK], REFS, resamples=100, seed=0)
    assert two.seeds == 2 and two.gain == pytest.approx(one.gain / 2)
    assert np.allclose(two.system_resampled - two.baseline_resampled,
                       (one.system_resampled - one.baseline_resampled) / 2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(baseline=WEAK[:5]), "5 translations for 6 references"),
    (dict(resamples=10), "resamples must be an int >= 100"),
    (dict(alpha=1.5), "alpha must be a number in"),
    (dict(seed=-1), "seed must be an int"),
    (dict(baseline=[WEAK, WEAK]), "2 baseline seeds but 1 system seeds"),
    (dict(baseline="a b"), "got one string"),
    (dict(baseline=[None] * 6), "list of strings"),
])
def test_bad_input_is_rejected_with_the_fix(kwargs, match):
    args = dict(baseline=WEAK, system=REFS, references=REFS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        B.paired_bootstrap_bleu(args.pop("baseline"), args.pop("system"), args.pop("references"), **args)


def _fake(label, metric, metric_label):
    return types.SimpleNamespace(label=label, metric=metric, metric_label=metric_label)


def test_verdicts_use_the_bootstrap_where_given():
    tasks = {"ptb-lm": _fake("PTB-LM", "log_ppl", "Log PPL"), "de-en": _fake("De-En", "bleu", "BLEU")}
    claims = pd.DataFrame([
        {"task": "PTB-LM", "eps": 20.0, "baseline": 6.9, "score": 6.8, "gain": 0.1, "gain_se": math.nan,
         "clean_cost": 0.04, "holds": True},
        {"task": "De-En", "eps": 0.5, "baseline": 2.2, "score": 2.7, "gain": 0.5, "gain_se": math.nan,
         "clean_cost": -0.4, "holds": True},
        {"task": "De-En", "eps": 1.0, "baseline": 1.0, "score": 1.1, "gain": 0.1, "gain_se": math.nan,
         "clean_cost": -0.4, "holds": True}])
    sig = pd.DataFrame([
        {"eps": math.nan, "n": 100, "resamples": 1000, "seeds": 1, "alpha": 0.05, "gain": 0.4, "ci_low": -0.5,
         "ci_high": 1.2, "p_value": 0.2, "holds": False},
        {"eps": 0.5, "n": 100, "resamples": 1000, "seeds": 1, "alpha": 0.05, "gain": 0.5, "ci_low": 0.1,
         "ci_high": 0.9, "p_value": 0.01, "holds": True},
        {"eps": 1.0, "n": 100, "resamples": 1000, "seeds": 1, "alpha": 0.05, "gain": 0.1, "ci_low": -0.2,
         "ci_high": 0.4, "p_value": 0.3, "holds": False}]).assign(higher_is_better=True, units="test sentences")
    text, held = B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]}, {"de-en": sig})
    assert held == {"ptb-lm": "1 of 1", "de-en": "1 of 2"}
    assert "one seed, no test" in text and "100 test sentences" in text and "1000 resamples" in text
    # Holm over the two ε: sorted 0.01 × 2 = 0.02, then max(0.02, 0.3 × 1) = 0.3
    assert "ε = 0.5: +0.50 BLEU [+0.10, +0.90], p = 0.01, Holm 0.02 (holds)" in text
    assert "ε = 1: +0.10 BLEU [-0.20, +0.40], p = 0.3, Holm 0.3 (within the noise)" in text
    assert "Holm-adjusted over the 2 ε, is below α = 0.05" in text
    # two one-sided p of 0.03 and 0.04: each below 0.05 alone, Holm 0.06 and 0.06: neither holds
    close = sig.assign(p_value=[0.2, 0.03, 0.04], ci_low=[-0.5, 0.01, 0.01], holds=[False, True, True])
    text, held = B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]}, {"de-en": close})
    assert held["de-en"] == "0 of 2" and "p = 0.03, Holm 0.06 (within the noise)" in text
    # a clean cost above the limit fails an ε whose interval is above 0
    costly = sig.assign(gain=[-6.0, 0.5, 0.1])
    text, held = B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]}, {"de-en": costly})
    assert held["de-en"] == "0 of 2" and "clean cost is above the limit" in text
    reversed_ = sig.assign(ci_high=[1.2, 0.9, -0.05], p_value=[0.2, 0.01, 0.99], holds=[False, True, False])
    text, _ = B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]}, {"de-en": reversed_})
    assert "(the baseline is better)" in text
    with pytest.raises(ValueError, match="no bootstrap at ε"):
        B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]},
                              {"de-en": sig[sig.eps != 1.0]})
    with pytest.raises(ValueError, match="unknown tasks"):
        B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.1, 1.0], "de-en": [1.0, 5.0]}, {"fr-en": sig})


# ------------------------------------------------------------------ the generic bootstrap over units
def test_de_en_results_are_the_pre_refactor_ones():
    """paired_bootstrap_bleu became a case of paired_bootstrap: the same seed gives the numbers
    the BLEU-only code gave (pinned from paramstress.bootstrap at 338ec6d, before the refactor)."""
    mixed = [REFS[0], WEAK[1], REFS[2], WEAK[3], WEAK[4], REFS[5]]
    r = B.paired_bootstrap_bleu(WEAK, mixed, REFS, resamples=300, seed=7)
    assert {k: v for k, v in r.as_dict().items() if k != "higher_is_better"} == {
        'n': 6, 'resamples': 300, 'seed': 7, 'alpha': 0.05, 'seeds': 1, 'baseline': 18.241802120647208,
        'system': 66.91222945143235, 'gain': 48.670427330785145, 'gain_mean': 46.636853742722195,
        'ci_low': 19.56491622727316, 'ci_high': 73.3280973232893, 'p_value': 0.023255813953488372, 'holds': True}
    assert r.higher_is_better is True
    two = B.paired_bootstrap_bleu([WEAK, mixed], [mixed, REFS], REFS, resamples=250, seed=11, alpha=0.1)
    assert (two.gain, two.gain_mean, two.ci_low, two.ci_high, two.p_value) == (
        40.87909893967641, 41.03023145077768, 37.73450688882351, 43.43365832751357, 0.00398406374501992)
    # and the generic call on the same statistics is the same computation
    stats = [B.bleu_statistics(h, REFS) for h in (WEAK, mixed)]
    generic = B.paired_bootstrap(stats[0], stats[1], B.bleu_from_statistics, resamples=300, seed=7)
    assert generic.as_dict() == r.as_dict() and generic.p_two_sided == r.p_two_sided
    assert np.array_equal(generic.system_resampled, r.system_resampled)


def test_ratio_of_sums_by_hand():
    assert B.ratio_of_sums(np.array([[3.0, 4.0], [1.0, 4.0]])) == 0.5
    assert B.ratio_of_sums(np.array([[3, 4], [2, 4]]), scale=100.0) == 100.0 * 5 / 8 == 62.5
    assert B.ratio_of_sums(np.array([7.0, 2.0])) == 3.5  # already summed
    with pytest.raises(ValueError, match="2 columns"):
        B.ratio_of_sums(np.ones((3, 10)))


def _uas(stats):
    return B.ratio_of_sums(stats, scale=100.0)


def test_ratio_bootstrap_gain_is_25_per_draw_of_the_better_sentence():
    # UAS statistics (correct, tokens): the system gets both tokens of sentence 0 right (the
    # baseline one), and is equal on sentence 1. A resample with c copies of sentence 0 has
    # baseline 100·2/4 = 50 and system 100·(2 + c)/4: gain exactly 25·c
    base = np.array([[1.0, 2.0], [1.0, 2.0]])
    system = np.array([[2.0, 2.0], [1.0, 2.0]])
    r = B.paired_bootstrap(base, system, _uas, resamples=400, seed=5)
    assert (r.baseline, r.system, r.gain, r.n) == (50.0, 75.0, 25.0, 2)
    idxs = np.random.default_rng(5).choice(2, size=(400, 2), replace=True)
    draws = (idxs == 0).sum(1)
    assert np.array_equal(r.system_resampled - r.baseline_resampled, 25.0 * draws)
    assert r.p_value == (1 + int((draws == 0).sum())) / 401  # no gain exactly when sentence 0 is not drawn
    assert (r.ci_low, r.ci_high) == tuple(np.quantile(25.0 * draws, [0.025, 0.975]))
    assert r.ci_low == 0.0 and not r.holds  # a quarter of the draws has no gain


def test_lower_is_better_turns_the_gain_around():
    # log perplexity statistics (summed NLL, tokens): the baseline has NLL 4 on sentence 0, the
    # system 2; both 2 on sentence 1. Resample with c copies of sentence 0: baseline (4 + 2c)/4,
    # system 1, so baseline − system = c/2
    base = np.array([[4.0, 2.0], [2.0, 2.0]])
    system = np.array([[2.0, 2.0], [2.0, 2.0]])
    lower = B.paired_bootstrap(base, system, B.ratio_of_sums, higher_is_better=False, resamples=300, seed=2)
    draws = (np.random.default_rng(2).choice(2, size=(300, 2), replace=True) == 0).sum(1)
    assert (lower.baseline, lower.system, lower.gain) == (1.5, 1.0, 0.5)
    assert np.array_equal(lower.baseline_resampled - lower.system_resampled, draws / 2)
    assert lower.p_value == (1 + int((draws == 0).sum())) / 301 and not lower.higher_is_better
    # read as higher-is-better the same numbers are a loss: every resample counts as no gain
    higher = B.paired_bootstrap(base, system, B.ratio_of_sums, higher_is_better=True, resamples=300, seed=2)
    assert higher.gain == -0.5 and higher.p_value == 1.0 and higher.ci_high <= 0


def test_seeds_average_the_unit_gains():
    base = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]])
    better = np.array([[2.0, 2.0], [1.0, 2.0], [1.0, 1.0]])
    one = B.paired_bootstrap(base, better, _uas, resamples=200, seed=0)
    two = B.paired_bootstrap([base, base], [better, base], _uas, resamples=200, seed=0)
    assert two.seeds == 2 and two.gain == pytest.approx(one.gain / 2)
    assert np.allclose(two.system_resampled - two.baseline_resampled,
                       (one.system_resampled - one.baseline_resampled) / 2)
    stacked = B.paired_bootstrap(np.stack([base, base]), np.stack([better, base]), _uas, resamples=200, seed=0)
    assert stacked.as_dict() == two.as_dict()


def test_infinite_scores_on_both_sides_count_as_no_gain():
    inf = math.inf
    both = B.paired_bootstrap(np.array([[inf, 2.0], [1.0, 2.0]]), np.array([[inf, 2.0], [1.0, 2.0]]),
                              B.ratio_of_sums, higher_is_better=False, resamples=200, seed=0)
    assert math.isnan(both.gain) and both.p_value == 1.0 and not both.holds
    # a finite system against an infinite baseline is a gain wherever the baseline is infinite
    one = B.paired_bootstrap(np.array([[inf, 2.0], [1.0, 2.0]]), np.array([[1.0, 2.0], [1.0, 2.0]]),
                             B.ratio_of_sums, higher_is_better=False, resamples=200, seed=0)
    draws = (np.random.default_rng(0).choice(2, size=(200, 2), replace=True) == 0).sum(1)
    assert one.gain == inf and one.p_value == (1 + int((draws == 0).sum())) / 201


@pytest.mark.parametrize("kwargs, match", [
    (dict(baseline=np.ones((3, 2))), r"baseline statistics \(3, 2\) and system \(4, 2\) differ"),
    (dict(baseline=[np.ones((4, 2))] * 2), "2 baseline seeds but 1 system seeds"),
    (dict(baseline=[np.ones((4, 2)), np.ones((3, 2))]), "score every seed on the same units"),
    (dict(baseline=np.ones(4)), r"an \(n, k\) array"),
    (dict(baseline=np.full((4, 2), math.nan)), "NaN statistics"),
    (dict(baseline=np.ones((1, 2)), system=np.ones((1, 2))), "at least 2 units"),
    (dict(combine="uas"), "combine must be a function"),
    (dict(higher_is_better="lower"), "higher_is_better must be True or False"),
    (dict(resamples=99), "resamples must be an int >= 100"),
    (dict(alpha=0.0), "alpha must be a number in"),
])
def test_bad_unit_input_is_rejected_before_scoring(kwargs, match):
    calls = []

    def combine(stats):
        calls.append(1)
        return B.ratio_of_sums(stats)

    args = dict(baseline=np.ones((4, 2)), system=np.ones((4, 2)), combine=combine)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        B.paired_bootstrap(args.pop("baseline"), args.pop("system"), args.pop("combine"), **args)
    assert not calls  # nothing was scored


def test_verdicts_for_a_lower_is_better_task_state_the_direction():
    tasks = {"ptb-lm": types.SimpleNamespace(label="PTB-LM", metric="log_ppl", metric_label="Log PPL",
                                             higher_is_better=False, decimals=3)}
    claims = pd.DataFrame([
        {"task": "PTB-LM", "eps": 10.0, "baseline": 5.7, "score": 5.6, "gain": 0.08, "gain_se": math.nan,
         "clean_cost": 0.04, "holds": True},
        {"task": "PTB-LM", "eps": 20.0, "baseline": 6.2, "score": 6.1, "gain": 0.12, "gain_se": math.nan,
         "clean_cost": 0.04, "holds": True}])
    base = {"n": 400, "resamples": 1000, "seed": 0, "seeds": 1, "alpha": 0.05, "higher_is_better": False,
            "units": "test sentences"}
    sig = pd.DataFrame([
        {**base, "eps": math.nan, "gain": -0.039, "ci_low": -0.051, "ci_high": -0.027, "p_value": 1.0},
        {**base, "eps": 10.0, "gain": 0.0803, "ci_low": 0.061, "ci_high": 0.1, "p_value": 0.001},
        {**base, "eps": 20.0, "gain": 0.1234, "ci_low": -0.01, "ci_high": 0.25, "p_value": 0.04}])
    text, held = B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.5, 0.05]}, {"ptb-lm": sig})
    assert held == {"ptb-lm": "2 of 2"}
    assert "paired bootstrap over the 400 test sentences (1000 resamples, 1 seed;" in text
    assert "gain of corpus Log PPL, baseline − proposed (lower is better)" in text
    # Holm: 0.001 × 2 = 0.002; max(0.002, 0.04 × 1) = 0.04 < 0.05; clean cost 0.039 <= 0.05: both hold
    assert "ε = 10: +0.080 Log PPL [+0.061, +0.100], p = 0.001, Holm 0.002 (holds)" in text
    assert "ε = 20: +0.123 Log PPL [-0.010, +0.250], p = 0.04, Holm 0.04 (holds)" in text
    assert "Clean: -0.039 Log PPL [-0.051, -0.027]." in text
    costly = {"ptb-lm": [0.5, 0.03]}  # the clean cost 0.039 is above 0.03
    text, held = B.text_claim_verdicts(claims, tasks, costly, {"ptb-lm": sig})
    assert held == {"ptb-lm": "0 of 2"} and text.count("clean cost is above the limit") == 2
    with pytest.raises(ValueError, match="direction"):  # a frame made for a higher-is-better metric
        B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.5, 0.05]}, {"ptb-lm": sig.assign(higher_is_better=True)})
    with pytest.raises(ValueError, match="lacks"):
        B.text_claim_verdicts(claims, tasks, {"ptb-lm": [0.5, 0.05]}, {"ptb-lm": sig.drop(columns="units")})
