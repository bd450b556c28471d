"""Table 2 helpers (paramstress.resistant): the hold-out split, the trainers, one model's
corrupted accuracy, the search rule, the layout with the paper's numbers, and the claim."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from paramstress import corruption as C
from paramstress import models, training
from paramstress import resistant as R
from paramstress.data import ImageData

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def synthetic(n_train: int = 50, n_test: int = 20) -> ImageData:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(n_train, dtype=torch.int64).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 8, 8).clone()
    y = torch.randint(0, 3, (n_train,), generator=g)
    tx = torch.randint(0, 255, (n_test, 1, 8, 8), generator=g, dtype=torch.uint8)
    ty = torch.randint(0, 3, (n_test,), generator=g)
    return ImageData("synthetic", x, y, tx, ty, ["a", "b", "c"], (0.5,), (0.25,))


def test_holdout_split_is_disjoint_and_from_the_training_split() -> None:
    data = synthetic()
    split = R.holdout_split(data, 30, 10, seed=1)
    train_ids = set(split.train_x[:, 0, 0, 0].tolist())
    val_ids = set(split.test_x[:, 0, 0, 0].tolist())
    assert len(train_ids) == 30 and len(val_ids) == 10 and not train_ids & val_ids
    assert train_ids | val_ids <= set(range(50))
    assert split.name == "synthetic+holdout"
    everything = R.holdout_split(data, None, 10, seed=1)
    assert len(everything.train_y) == 40
    assert torch.equal(everything.test_x, split.test_x)  # the same validation set
    with pytest.raises(ValueError, match="lower train_samples or val_samples"):
        R.holdout_split(data, 45, 10)
    with pytest.raises(ValueError, match="validation must be a positive int"):
        R.holdout_split(data, 10, 0)


def test_trainer_specs_build_valid_configs_that_differ_only_in_the_objective() -> None:
    specs = R.trainer_specs(alpha=0.5, eps=0.1, p=math.inf)
    assert list(specs) == list(R.TRAINER_LABELS)
    assert specs["resistant"] == ("corruption_resistant", {"alpha": 0.5, "eps": 0.1, "p": "inf"})
    assert specs["direct"][1] == specs["resistant"][1]
    assert specs["asam"] == ("sam", {"rho": 2.0, "adaptive": True})
    configs = [training.TrainConfig(model="small_cnn", epochs=1, objective=o, objective_params=p)
               for o, p in specs.values()]
    hashes = {training.TrainConfig.__hash__(c) for c in configs}
    assert len(hashes) == len(configs)
    with pytest.raises(ValueError, match="unknown trainers"):
        R.trainer_specs(alpha=0.5, eps=0.1, include=["baseline", "swa"])


def test_corrupted_accuracy_is_the_l2_gradient_corruption_over_all_parameters() -> None:
    data = synthetic(n_train=60, n_test=40)
    model = models.build_model("small_cnn", 3, 1, 8, seed=0, width=2).eval()
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    frame = R.corrupted_accuracy(model, data.train_x, data.train_y, data.test_x, data.test_y,
                                 eps_values=[0.5, 2.0], transform=data.normalize, batch_size=16)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k])
    assert math.isnan(frame.loc[0, "eps"]) and list(frame["eps"][1:]) == [0.5, 2.0]
    named = list(model.named_parameters())
    import torch.nn.functional as F
    from paramstress.sweep import evaluate, iter_batches
    g = C.subspace_gradient(model, named, F.cross_entropy, iter_batches(data.train_x, data.train_y, 16),
                            transform=data.normalize)
    with C.corrupted(named, 2.0 * g / g.norm()):
        expected = evaluate(model, data.test_x, data.test_y, transform=data.normalize)
    assert frame.loc[2, "accuracy"] == pytest.approx(expected["accuracy"])
    assert frame.loc[2, "loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert frame.loc[2, "indicator"] == pytest.approx(2.0 * float(g.double().norm()), rel=1e-5)


def fake_results(values: dict[str, list[list[float]]], eps=(0.1, 0.5)) -> pd.DataFrame:
    rows = []
    for trainer, seeds in values.items():
        for seed, accs in enumerate(seeds):
            for e, acc in zip([math.nan, *eps], accs):
                rows.append({"trainer": trainer, "seed": seed, "eps": e, "accuracy": acc})
    return pd.DataFrame(rows)


def test_select_virtual_prefers_robustness_within_the_clean_tolerance() -> None:
    baseline = pd.DataFrame({"eps": [math.nan, 0.1, 0.5], "accuracy": [90.0, 85.0, 60.0]})
    search = pd.DataFrame({
        "virtual_eps": [0.05] * 3 + [0.1] * 3 + [0.5] * 3,
        "eps": [math.nan, 0.1, 0.5] * 3,
        "accuracy": [89.8, 87.0, 70.0, 89.1, 88.0, 75.0, 85.0, 84.0, 83.0],
    })
    chosen, table = R.select_virtual(search, baseline, clean_tolerance=1.0)
    assert chosen == 0.1  # 0.5 is the most robust but costs 5 clean points
    assert table.loc[table.selected, "virtual_eps"].tolist() == [0.1]
    assert table["eligible"].tolist() == [True, True, False]
    assert table.loc[1, "corrupted_gain"] == pytest.approx(81.5 - 72.5)
    chosen, _ = R.select_virtual(search, baseline, clean_tolerance=0.1)
    assert chosen == 0.05  # none within 0.1: the best clean one


def test_summary_and_table2_layout() -> None:
    results = fake_results({"baseline": [[90.0, 80.0, 60.0], [92.0, 82.0, 62.0]],
                            "resistant": [[91.0, 85.0, 70.0], [91.0, 87.0, 72.0]]}, eps=(0.1, 0.2))
    summary = R.summarize(results)
    assert summary["trainer"].tolist() == ["baseline"] * 3 + ["resistant"] * 3
    base_clean = summary.iloc[0]
    assert math.isnan(base_clean["eps"]) and base_clean["mean"] == 91.0 and base_clean["seeds"] == 2
    assert base_clean["std"] == pytest.approx(math.sqrt(2.0))
    table = R.table2(summary)
    assert list(table.index) == [R.CLEAN_ROW, "ε=0.1", "ε=0.2"]
    assert table.loc[R.CLEAN_ROW, "Baseline"] == "91.00 ± 1.41"
    assert table.loc[R.CLEAN_ROW, R.TRAINER_LABELS["resistant"]] == "91.00 ± 0.00 (+0.00)"
    assert table.loc["ε=0.2", R.TRAINER_LABELS["resistant"]] == "71.00 ± 1.41"
    assert table.loc[R.CLEAN_ROW, "CIFAR-10 Proposed (paper)"] == "96.12 (+1.86)"
    assert table.loc["ε=0.2", "CIFAR-10 Baseline (paper)"] == "71.44"
    one_seed = R.table2(R.summarize(results[results.seed == 0]), paper=False)
    assert one_seed.loc["ε=0.1", "Baseline"] == "80.00"
    assert "CIFAR-10 Baseline (paper)" not in one_seed.columns


def test_paper_table2_is_the_transcription() -> None:
    paper = R.paper_table2()
    assert paper["eps"].isna().sum() == 1
    row = paper[np.isclose(paper["eps"], 0.1)].iloc[0]
    assert (row["baseline"], row["proposed"]) == (89.84, 94.59)
    clean = paper[paper["eps"].isna()].iloc[0]
    assert clean["change"] == pytest.approx(1.86)


def claim_results() -> pd.DataFrame:
    # three seeds; the baseline loses 5 points at ε = 0.1 (< 10: not checked), 30 at 0.5 and 50 at 1.
    # "good" - baseline per seed: clean 89.5 − 90, 90.5 − 91, 89 − 89 → clean cost [0.5, 0.5, 0], mean 1/3;
    # ε = 0.5: d = [2, 3, 3.5]; ε = 1: d = [4, 5, 7]. "noisy": ε = 0.5 d = [−5, 7, 1], ε = 1 d = [0, 1, −1].
    return fake_results({
        "baseline": [[90.0, 85.0, 60.0, 40.0], [91.0, 86.0, 62.0, 41.0], [89.0, 84.0, 58.0, 39.0]],
        "good": [[89.5, 86.0, 62.0, 44.0], [90.5, 86.0, 65.0, 46.0], [89.0, 86.0, 61.5, 46.0]],
        "noisy": [[90.0, 85.0, 55.0, 40.0], [91.0, 86.0, 69.0, 42.0], [89.0, 84.0, 59.0, 38.0]],
    }, eps=(0.1, 0.5, 1.0))


def p_df2(t: float) -> float:
    """One-sided p of Student's t with 2 degrees of freedom: 1 − F(t), F(t) = 1/2 + t/(2√(2 + t²))."""
    return 0.5 - t / (2 * math.sqrt(2 + t * t))


def test_resistance_claim_is_a_paired_test_across_seeds() -> None:
    results = claim_results()
    good = R.resistance_claim(results, "good")
    assert good["eps"].tolist() == [0.5, 1.0]  # the baseline loses 5 points at 0.1 (< 10)
    assert list(good.columns) == R.CLAIM_COLUMNS
    a, b = good.iloc[0], good.iloc[1]
    assert a["n"] == 3 and a["test"] == "paired t-test (one-sided, H1: mean difference > 0)"
    assert a["baseline_drop"] == pytest.approx(30.0) and b["baseline_drop"] == pytest.approx(50.0)
    assert a["baseline"] == pytest.approx(60.0) and a["accuracy"] == pytest.approx(62.833333, abs=1e-6)
    # ε = 0.5: d = [2, 3, 3.5], mean 17/6, sd² = 7/12, se = √7/6, t = 17/√7 on 2 df
    assert a["gain"] == pytest.approx(17 / 6)
    assert a["p_value"] == pytest.approx(p_df2(17 / math.sqrt(7)), rel=1e-9)  # ≈ 0.011688
    t95 = 0.9 / math.sqrt(0.095)  # t quantile 0.95 on 2 df: (2q − 1)/√(2q(1 − q))
    assert a["ci_low"] == pytest.approx(17 / 6 - t95 * math.sqrt(7) / 6, rel=1e-9) and a["ci_high"] == math.inf
    # ε = 1: d = [4, 5, 7], mean 16/3, Σ(d − mean)² = 14/3, sd² = 7/3, se = √7/3, t = 16/√7 (p ≈ 0.013135)
    assert b["gain"] == pytest.approx(16 / 3)
    assert b["p_value"] == pytest.approx(p_df2(16 / math.sqrt(7)), rel=1e-9)
    # Holm over the two ε: 2 × 0.011688 = 0.023376, then max(0.023376, 1 × 0.013135)
    assert a["p_adjusted"] == pytest.approx(2 * a["p_value"]) and b["p_adjusted"] == pytest.approx(2 * a["p_value"])
    assert good["clean_cost"].tolist() == pytest.approx([1 / 3, 1 / 3])
    assert good["holds"].tolist() == [True, True] and good["verdict"].tolist() == ["holds", "holds"]
    # α = 0.02: each p alone is below it, Holm's are not
    strict = R.resistance_claim(results, "good", alpha_test=0.02)
    assert strict["holds"].tolist() == [False, False] and strict["verdict"].tolist() == ["does not hold"] * 2
    assert R.resistance_claim(results, "good", alpha_test=0.02, adjust=None)["holds"].tolist() == [True, True]
    # the clean cost 1/3 is above 0.3
    assert not R.resistance_claim(results, "good", max_clean_cost=0.3)["holds"].any()
    # noisy at ε = 0.5: d = [−5, 7, 1], mean 1, sd = 6, t = 1/(6/√3) = 1/√12,
    # p = 1/2 − t/(2√(2 + 1/12)) = 0.4
    noisy = R.resistance_claim(results, "noisy").iloc[0]
    assert noisy["gain"] == pytest.approx(1.0) and noisy["p_value"] == pytest.approx(0.4)
    assert not noisy["holds"] and noisy["verdict"] == "does not hold"
    assert R.resistance_claim(results, "good", min_drop=60).empty
    with pytest.raises(ValueError, match="no rows for trainer"):
        R.resistance_claim(results, "nope")


def test_resistance_claim_with_one_seed_is_not_tested() -> None:
    results = claim_results()
    one = R.resistance_claim(results[results.seed == 0], "good")
    assert one["n"].tolist() == [1, 1] and one["verdict"].tolist() == ["not tested"] * 2
    assert not one["holds"].any() and one["p_value"].isna().all() and one["ci_low"].isna().all()
    assert one["gain"].tolist() == pytest.approx([2.0, 4.0])  # observed, not tested
    assert R.claim_outcome(one, "good") == "not tested"


def test_resistance_claim_rejects_unpaired_seeds() -> None:
    results = claim_results()
    unpaired = results[~((results.trainer == "good") & (results.seed == 2))]
    with pytest.raises(ValueError, match="pairs them by seed; run both with the same seeds"):
        R.resistance_claim(unpaired, "good")
    with pytest.raises(ValueError, match="more than one row for seed 0"):
        R.resistance_claim(pd.concat([results, results[results.seed == 0]]), "good")
    with pytest.raises(ValueError, match="alpha_test must lie"):
        R.resistance_claim(results, "good", alpha_test=5)


def test_resistance_claim_lower_is_better_per_seed() -> None:
    # log perplexity, two seeds: the baseline rises 2.0 and 2.2 at ε = 5 (mean 2.1 ≥ 1); the trainer is
    # 1.6 and 1.8 lower there: d = [1.6, 1.8], mean 1.7, sd = 0.1·√2, se = 0.1, t = 17 on 1 df (Cauchy):
    # p = 1/2 − arctan(17)/π ≈ 0.018717. Clean cost: −(5.0 − 4.98), −(5.1 − 5.12) → mean 0.
    rows = [{"trainer": t, "seed": s, "eps": e, "log_ppl": v}
            for t, seeds in {"baseline": [[5.0, 7.0], [5.1, 7.3]], "resistant": [[4.98, 5.4], [5.12, 5.5]]}.items()
            for s, vals in enumerate(seeds) for e, v in zip([math.nan, 5.0], vals)]
    claim = R.resistance_claim(pd.DataFrame(rows), "resistant", min_drop=1.0, higher_is_better=False,
                               metric="log_ppl")
    row = claim.iloc[0]
    assert row["baseline_drop"] == pytest.approx(2.1) and row["gain"] == pytest.approx(1.7)
    assert row["log_ppl"] == pytest.approx(5.45) and row["clean_cost"] == pytest.approx(0.0, abs=1e-12)
    assert row["p_value"] == pytest.approx(0.5 - math.atan(17) / math.pi, rel=1e-6)
    assert row["holds"] and row["p_adjusted"] == row["p_value"]  # one ε: nothing to adjust


def test_claim_table_and_verdict_sentences() -> None:
    results = claim_results()
    claims = R.resistance_claims(results, ["good", "noisy"], alpha_test=0.05)
    table = R.claim_table(claims, labels={"good": "Good", "noisy": "Noisy"})
    assert list(table.index) == [("Good", "0.5"), ("Good", "1"), ("Noisy", "0.5"), ("Noisy", "1")]
    assert list(table.columns) == ["n", "test", "baseline drop", "baseline mean", "trainer mean", "mean gain",
                                   "CI low", "CI high", "p", "p (Holm)", "clean cost", "verdict"]
    assert table.loc[("Good", "1"), "mean gain"] == 5.33 and table.loc[("Good", "1"), "p (Holm)"] == 0.0234
    assert math.isinf(table.loc[("Good", "1"), "CI high"]) and table.loc[("Good", "1"), "CI low"] == 2.76
    # the table rounds as the sentences print: 34.275 is 34.27 in both (numpy's round would give 34.28)
    half = R.claim_table(claims.assign(baseline=34.275))
    assert half["baseline mean"].tolist() == [float(f"{34.275:.2f}")] * 4 == [34.27] * 4
    good = R.claim_verdict(claims, "good", label="Good")
    # where it holds, the ε of the largest gain (1: +5.33); its interval 16/3 − 2.92·√7/3 ≈ 2.76
    assert good == ("- **Good**: where the baseline loses ≥ 10 points (ε ∈ {0.5, 1}), the claim **holds** at "
                    "ε = 1: 40.00% → 45.33%; paired t-test (one-sided, H1: mean gain > 0), n = 3 seeds, "
                    "mean +5.33 points, 95 % CI [+2.76, ∞), p = 0.013, Holm 0.023 < α = 0.05; clean cost "
                    "+0.33 points ≤ 1.")
    noisy = R.claim_verdict(claims, "noisy")
    assert "**does not hold** at any ε; closest (smallest p) at ε = 0.5" in noisy
    assert noisy.endswith("≥ α = 0.05; clean cost +0.00 points ≤ 1. It fails on the test.")
    # Holm gives both ε of "swapped" 0.8 (raw p 0.5 at ε = 0.5, 0.4 at ε = 1): the raw p breaks the tie
    swapped = fake_results({"baseline": [[90.0, 85.0, 60.0, 40.0], [91.0, 86.0, 62.0, 41.0], [89.0, 84.0, 58.0, 39.0]],
                            "swapped": [[90.0, 85.0, 60.0, 35.0], [91.0, 86.0, 63.0, 48.0], [89.0, 84.0, 57.0, 40.0]]},
                           eps=(0.1, 0.5, 1.0))
    swapped_claim = R.resistance_claim(swapped, "swapped")
    assert swapped_claim["p_value"].tolist() == pytest.approx([0.5, 0.4])
    assert swapped_claim["p_adjusted"].tolist() == pytest.approx([0.8, 0.8])
    assert "closest (smallest p) at ε = 1:" in R.claim_verdict(swapped_claim, "swapped")
    # the thresholds travel with the rows: a stricter clean cost is a new set of rows
    costly = R.claim_verdict(R.resistance_claim(results, "good", max_clean_cost=0.3), "good")
    assert "**does not hold**" in costly
    assert costly.endswith("clean cost +0.33 points > 0.3. It fails on the clean cost.")
    both = R.claim_verdict(R.resistance_claim(results, "good", max_clean_cost=0.3, alpha_test=0.01), "good")
    assert both.endswith("It fails on the test and on the clean cost.")
    assert claims.attrs["claim"]["alpha_test"] == 0.05 and claims[claims.trainer == "good"].attrs == claims.attrs
    with pytest.raises(ValueError, match="carry no thresholds"):
        R.claim_verdict(pd.DataFrame(claims.to_dict("list")), "good")  # rebuilt: the thresholds are lost
    one = R.resistance_claims(results[results.seed == 0], ["good"])
    assert R.claim_verdict(one, "good").startswith(
        "- **good**: **not tested (1 seed: a paired test needs at least 2; set seeds: [...] with ≥ 2 entries)**.")
    empty = R.resistance_claims(results, ["good"], min_drop=60)
    assert empty.empty and "never loses ≥ 60 points" in R.claim_verdict(empty, "good")
    text = R.claim_verdicts(claims, results, main=("good",))
    assert text.splitlines()[0] == good.replace("**Good**", "**good**")
    assert "the same test for the other trainers: noisy does not hold." in text
    assert "No trainer beats the baseline's clean accuracy" in text


def test_paper_claim_verdict_is_an_observation() -> None:
    text = R.paper_claim_verdict(min_drop=10, max_clean_cost=1)
    # CIFAR-10: the baseline loses 94.26 − 71.44 = 22.82 at ε = 0.2, more at 0.5 and 1; the largest gain
    # is 87.92 − 71.44 = 16.48 at 0.2; the clean cost 94.26 − 96.12 = −1.86
    assert "ε ∈ {0.2, 0.5, 1}" in text and "+16.48 points at ε = 0.2" in text and "-1.86" in text
    assert "no test is possible" in text and "untested" in text


def test_resistance_claim_from_seed_means_keeps_the_old_rule() -> None:
    # a frame of means (summarize's output) cannot be paired: the rule before the paired test
    results = fake_results({"baseline": [[90.0, 85.0, 60.0], [90.0, 85.0, 62.0]],
                            "good": [[89.5, 86.0, 70.0], [89.5, 86.0, 72.0]],
                            "costly": [[85.0, 84.0, 80.0], [85.0, 84.0, 80.0]]})
    summary = R.summarize(results)
    good = R.resistance_claim(summary, "good")
    assert good["eps"].tolist() == [0.5]  # the baseline loses 5 points at 0.1 (< 10) and 29 at 0.5
    row = good.iloc[0]
    assert row["baseline_drop"] == pytest.approx(29.0) and row["gain"] == pytest.approx(10.0)
    assert row["clean_cost"] == pytest.approx(0.5) and row["holds"]
    assert row["gain_se"] == pytest.approx(math.sqrt(2 / 2 + 2 / 2))
    assert row["resolved"]
    noisy = fake_results({"baseline": [[90.0, 85.0, 60.0], [90.0, 85.0, 62.0]],
                          "noisy": [[90.0, 85.0, 55.0], [90.0, 85.0, 69.0]]})
    unresolved = R.resistance_claim(R.summarize(noisy), "noisy").iloc[0]
    assert unresolved["gain"] == pytest.approx(1.0) and not unresolved["resolved"] and not unresolved["holds"]
    assert R.resistance_claim(R.summarize(noisy), "noisy", min_se=0.1).iloc[0]["holds"]
    costly = R.resistance_claim(summary, "costly").iloc[0]
    assert not costly["holds"] and costly["clean_cost"] == pytest.approx(5.0)
    assert R.resistance_claim(summary, "good", min_drop=50).empty
    with pytest.raises(ValueError, match="no rows for trainer"):
        R.resistance_claim(summary, "nope")


def test_select_virtual_lower_is_better_reads_cost_and_gain_the_other_way() -> None:
    # log perplexity: the baseline is 5.0 clean and 6.0 / 8.0 corrupted
    baseline = pd.DataFrame({"eps": [math.nan, 2.0, 5.0], "log_ppl": [5.0, 6.0, 8.0]})
    search = pd.DataFrame({
        "virtual_eps": [1.0] * 3 + [2.0] * 3 + [5.0] * 3,
        "eps": [math.nan, 2.0, 5.0] * 3,
        "log_ppl": [4.95, 5.8, 7.0, 5.05, 5.5, 6.0, 5.5, 5.6, 5.7],
    })
    chosen, table = R.select_virtual(search, baseline, clean_tolerance=0.1, metric="log_ppl", higher_is_better=False)
    assert chosen == 2.0  # 5.0 is the most robust but 0.5 worse clean
    assert table["clean_cost"].tolist() == pytest.approx([-0.05, 0.05, 0.5])
    assert table.loc[1, "corrupted_gain"] == pytest.approx(7.0 - 5.75)
    chosen, _ = R.select_virtual(search, baseline, clean_tolerance=-1.0, metric="log_ppl", higher_is_better=False)
    assert chosen == 1.0  # none eligible: the best (lowest) clean one
    with pytest.raises(ValueError, match="metric="):
        R.select_virtual(search, baseline)


def test_resistance_claim_from_seed_means_lower_is_better() -> None:
    rows = []
    for trainer, values in {"baseline": [5.0, 5.5, 7.0], "resistant": [4.98, 5.2, 5.4],
                            "worse": [5.0, 5.6, 7.5]}.items():
        for e, v in zip([math.nan, 2.0, 5.0], values):
            rows.append({"trainer": trainer, "seed": 0, "eps": e, "log_ppl": v})
    summary = R.summarize(pd.DataFrame(rows), metric="log_ppl")
    claim = R.resistance_claim(summary, "resistant", min_drop=1.0, higher_is_better=False, metric="log_ppl")
    assert claim["eps"].tolist() == [5.0]  # the baseline rises 0.5 at 2 (< 1) and 2.0 at 5
    row = claim.iloc[0]
    assert row["baseline_drop"] == pytest.approx(2.0) and row["gain"] == pytest.approx(1.6)
    assert row["log_ppl"] == pytest.approx(5.4) and row["clean_cost"] == pytest.approx(-0.02) and row["holds"]
    assert not R.resistance_claim(summary, "worse", min_drop=1.0, higher_is_better=False,
                                  metric="log_ppl").iloc[0]["holds"]


def test_table2_with_a_text_task_joins_the_papers_rows_in_eps_order() -> None:
    results = pd.DataFrame([{"trainer": t, "seed": 0, "eps": e, "bleu": v}
                            for t, vals in {"baseline": [20.0, 10.0], "resistant": [21.0, 15.0]}.items()
                            for e, v in zip([math.nan, 0.6], vals)])
    table = R.table2(R.summarize(results, metric="bleu"), paper="De-En")
    assert list(table.index) == [R.CLEAN_ROW, "ε=0.5", "ε=0.6", "ε=0.75", "ε=1", "ε=1.25", "ε=1.5"]
    assert table.loc["ε=0.6", "Baseline"] == "10.00" and table.loc["ε=0.6", "De-En Baseline (paper)"] == "—"
    assert table.loc["ε=0.5", "Baseline"] == "—" and table.loc["ε=0.5", "De-En Proposed (paper)"] == "34.84"
    assert table.loc[R.CLEAN_ROW, "De-En Proposed (paper)"] == "35.69 (+0.36)"
    assert table.loc[R.CLEAN_ROW, R.TRAINER_LABELS["resistant"]] == "21.00 (+1.00)"


def test_paper_table2_text_columns() -> None:
    lm = R.paper_table2("PTB-LM")
    clean = lm[lm["eps"].isna()].iloc[0]
    assert clean["baseline"] == pytest.approx(math.log(70.09), abs=1e-4)
    assert lm.loc[np.isclose(lm["eps"], 50.0), "baseline"].item() == 12.11
    parse = R.paper_table2("PTB-Parsing")
    assert parse.loc[np.isclose(parse["eps"], 0.05), "proposed"].item() == 82.06
    assert R.paper_table2("Tiny-ImageNet").loc[0, "proposed"] == 67.06
    with pytest.raises(ValueError, match="its tasks"):
        R.paper_table2("ImageNet")


def test_search_findings_names_the_shape_by_hand():
    import pandas as pd
    base = pd.DataFrame({"eps": [float("nan"), 0.1, 0.5], "accuracy": [90.0, 50.0, 30.0]})
    table = pd.DataFrame({"virtual_eps": [0.05, 0.1, 0.2], "clean": [89.0, 91.0, 88.0],
                          "corrupted_mean": [45.0, 50.0, 55.0]})
    text = R.search_findings(table, base, chosen_eps=0.1, alpha=0.5)
    assert "rises and then falls (unimodal, with its peak inside the grid)" in text
    assert "1 of the 3 sizes beat the baseline's clean accuracy" in text and "(baseline 40.00%)" in text
    assert "**ε = 0.1**" in text and "λ = αε = 0.05" in text
    mono = table.assign(clean=[92.0, 91.0, 88.0])
    assert "is highest at the smallest searched ε" in R.search_findings(mono, base, chosen_eps=0.05, alpha=0.5)


def test_flatness_findings_by_hand():
    import pandas as pd
    flat = pd.DataFrame({"trainer": ["baseline", "baseline", "resistant", "resistant"], "seed": [0, 1, 0, 1],
                         "loss": [0.1] * 4, "average_flatness": [0.4, 0.3, 0.2, 0.1],
                         "worst_flatness": [0.1, 0.2, 0.3, 0.4]})
    results = pd.DataFrame({"trainer": ["baseline"] * 4 + ["resistant"] * 4, "seed": [0, 0, 1, 1] * 2,
                            "eps": [float("nan"), 0.5] * 4, "accuracy": [90, 10, 91, 20, 89, 30, 88, 40]})
    table = R.flatness_table(flat, results, eps=0.5)
    assert list(table["accuracy"]) == [10, 20, 30, 40] and list(table["clean"]) == [90, 91, 89, 88]
    text, numbers = R.flatness_findings(table, ["baseline", "resistant"], eps=0.5)
    assert numbers["spearman_average"] == pytest.approx(-1.0) and numbers["spearman_worst"] == pytest.approx(1.0)
    label = R.TRAINER_LABELS["resistant"]
    assert f"average case {label}; worst case none" in text
