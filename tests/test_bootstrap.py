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
         "ci_high": 0.4, "p_value": 0.3, "holds": False}])
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
