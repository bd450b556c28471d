"""Tests of paramstress.tables: Table 1 of Sun et al. (2021) in the paper's layout."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from paramstress import tables as T

K = 1000


def _rows(method, eps, accs, n=K, k=K, base=90.0, base_loss=0.5, losses=None, p=math.inf):
    """corruption_sweep-style rows: one per trial."""
    losses = losses if losses is not None else [base_loss] * len(accs)
    return [{"method": method, "p": p, "n": n, "eps": eps, "trial": t, "k": k, "accuracy": a,
             "loss": lo, "delta_loss": lo - base_loss, "base_accuracy": base, "base_loss": base_loss,
             "delta_accuracy": a - base} for t, (a, lo) in enumerate(zip(accs, losses))]


@pytest.fixture
def frame() -> pd.DataFrame:
    rows = []
    rows += _rows("random", 1e-3, [90.0, 89.96, 90.02])        # mean 89.993: Δ -0.007 → *
    rows += _rows("random", 1e-2, [80.0, 82.0, 84.0])          # mean 82, std 2: Δ -8
    rows += _rows("gradient", 1e-3, [60.0])                    # Δ -30
    rows += _rows("gradient", 1e-2, [10.0])                    # Δ -80
    rows += _rows("random", 1.0, [89.95, 89.99], n=100)        # Δ -0.03 → *
    rows += _rows("gradient", 1.0, [50.0], n=100)              # Δ -40
    return pd.DataFrame(rows)


def test_eps_labels():
    assert T.eps_label(1e-4) == "1e-4"
    assert T.eps_label(1.0) == "1"
    assert T.eps_label(100.0) == "1e2"
    assert T.eps_label(0.003) == "0.003"
    assert T.row_label("k", 1e-2) == "n=k, ε=1e-2"
    assert T.row_label(100, 10.0) == "n=100, ε=1e1"


def test_trial_summary_mean_std_delta(frame):
    s = T.trial_summary(frame)
    r = s[(s.method == "random") & (s.eps == 1e-2)].iloc[0]
    assert r.trials == 3 and r.n_label == "k"
    assert r["mean"] == pytest.approx(82.0) and r["std"] == pytest.approx(2.0)  # sample std, ddof=1
    assert r["delta"] == pytest.approx(-8.0) and not r["close"]
    g = s[(s.method == "gradient") & (s.eps == 1e-3)].iloc[0]
    assert g.trials == 1 and math.isnan(g["std"]) and g["delta"] == pytest.approx(-30.0)
    close = s[(s.method == "random") & (s.eps == 1e-3)].iloc[0]
    assert close["close"]  # |Δ| = 0.007 < 0.1
    # order: random before gradient; n = k before n = 100; ε ascending
    assert list(zip(s.method, s.n_label, s.eps)) == [
        ("random", "k", 1e-3), ("random", "k", 1e-2), ("random", "100", 1.0),
        ("gradient", "k", 1e-3), ("gradient", "k", 1e-2), ("gradient", "100", 1.0)]


def test_table1_layout_cells_and_stars(frame):
    t = T.table1({"toy": frame}, {"toy": 90.0}, rows=[("k", 1e-3), ("k", 1e-2), (100, 1.0)])
    assert list(t.index) == ["w/o corruption", "n=k, ε=1e-3", "n=k, ε=1e-2", "n=100, ε=1"]
    assert list(t.columns) == [("toy (Acc ↑)", "Random"), ("toy (Acc ↑)", "Proposed")]
    col_r, col_p = t.columns
    assert t.loc["w/o corruption", col_r] == "90.0" and t.loc["w/o corruption", col_p] == "90.0"
    assert t.loc["n=k, ε=1e-3", col_r] == "*"
    assert t.loc["n=k, ε=1e-3", col_p] == "60.0 (-30.0)"
    assert t.loc["n=k, ε=1e-2", col_r] == "82.0 ± 2.0 (-8.0)"
    assert t.loc["n=k, ε=1e-2", col_p] == "10.0 (-80.0)"
    assert t.loc["n=100, ε=1", col_r] == "*"
    assert t.loc["n=100, ε=1", col_p] == "50.0 (-40.0)"


def test_star_rule_uses_the_mean_change():
    rows = _rows("random", 0.1, [89.9, 90.0], base=90.0) + _rows("gradient", 0.1, [89.8], base=90.0)
    rows += _rows("random", 0.2, [89.0, 91.0], base=90.0) + _rows("gradient", 0.2, [90.05], base=90.0)
    t = T.table1(pd.DataFrame(rows), 90.0)
    r, p = t.columns
    assert t.loc["n=k, ε=1e-1", r] == "*"                     # mean 89.95: |Δ| = 0.05 < 0.1
    assert t.loc["n=k, ε=1e-1", p] == "89.8 (-0.2)"           # |Δ| = 0.2: shown
    assert t.loc["n=k, ε=0.2", r] == "*"                      # mean 90.0 although the trials spread ±1
    assert t.loc["n=k, ε=0.2", p] == "*"                      # +0.05
    t_nostar = T.table1(pd.DataFrame(rows), 90.0, star=False)
    assert t_nostar.loc["n=k, ε=0.2", r] == "90.0 ± 1.4 (+0.0)"
    t_nostd = T.table1(pd.DataFrame(rows), 90.0, star=False, show_std=False)
    assert t_nostd.loc["n=k, ε=0.2", r] == "90.0 (+0.0)"
    rows = _rows("random", 0.1, [89.5], base=90.0) + _rows("gradient", 0.1, [90.3], base=90.0)
    t = T.table1(pd.DataFrame(rows), 90.0)
    assert t.loc["n=k, ε=1e-1", r] == "89.5 (-0.5)"           # one trial: no ± std
    assert t.loc["n=k, ε=1e-1", p] == "90.3 (+0.3)"           # positive changes keep their sign


def test_clean_from_base_column_and_default_rows(frame):
    t = T.table1(frame)  # one task, clean from base_accuracy
    assert list(t.index) == ["w/o corruption", "n=k, ε=1e-3", "n=k, ε=1e-2", "n=100, ε=1"]
    assert t.iloc[0, 0] == "90.0"


def test_several_tasks_share_rows_by_n_relative_to_k(frame):
    other = pd.DataFrame(_rows("random", 1e-3, [70.0, 72.0], k=50, n=50, base=75.0)
                         + _rows("gradient", 1e-3, [20.0], k=50, n=50, base=75.0))
    t = T.table1({"a": frame, "b": other}, rows=[("k", 1e-3), (100, 1.0)],
                 task_labels={"a": "A", "b": "B"})
    assert [c[0] for c in t.columns] == ["A (Acc ↑)"] * 2 + ["B (Acc ↑)"] * 2
    assert t.loc["w/o corruption", ("B (Acc ↑)", "Random")] == "75.0"
    assert t.loc["n=k, ε=1e-3", ("B (Acc ↑)", "Random")] == "71.0 ± 1.4 (-4.0)"
    assert t.loc["n=k, ε=1e-3", ("B (Acc ↑)", "Proposed")] == "20.0 (-55.0)"
    assert t.loc["n=100, ε=1", ("B (Acc ↑)", "Proposed")] == "—"  # not run for task b


def test_lower_is_better_metric_and_direction_arrow():
    rows = _rows("random", 1e-2, [0.0, 0.0], base_loss=4.25, losses=[4.30, 4.42]) \
        + _rows("gradient", 1e-2, [0.0], base_loss=4.25, losses=[4.52])
    df = pd.DataFrame(rows).assign(task="PTB-LM")
    t = T.table1(df, {"PTB-LM": 4.25}, metric="loss", metric_label="Log PPL", higher_is_better=False,
                 decimals=2)
    assert t.columns[0] == ("PTB-LM (Log PPL ↓)", "Random")
    assert t.loc["w/o corruption"].iloc[0] == "4.25"
    assert t.loc["n=k, ε=1e-2"].iloc[0] == "4.36 ± 0.08 (+0.11)"
    assert t.loc["n=k, ε=1e-2"].iloc[1] == "4.52 (+0.27)"


def test_bad_inputs_are_named(frame):
    with pytest.raises(ValueError, match="mix the norms"):
        T.table1(pd.concat([frame, frame.assign(p=2.0)]))
    assert T.trial_summary(pd.concat([frame, frame.assign(p=2.0)]), p=2.0)["trials"].sum() == len(frame)
    with pytest.raises(ValueError, match="lack columns"):
        T.table1(frame.drop(columns=["k"]))
    with pytest.raises(ValueError, match="no score for tasks"):
        T.table1({"a": frame}, {"b": 1.0})
    with pytest.raises(ValueError, match="unknown methods"):
        T.table1(frame.assign(method="bitflip"))


def test_paper_table1_transcription_is_consistent():
    tidy = T.paper_table1()
    clean = T.paper_table1_clean()
    assert clean == {"ImageNet": 72.5, "CIFAR-10": 94.3, "PTB-LM": 4.25, "PTB-Parsing": 87.3, "De-En": 35.33}
    assert len(tidy) == 2 * 10 * 2  # tasks × rows × approaches
    everything = T.paper_table1(list(clean))
    assert len(everything) == 5 * 10 * 2
    shown_all = everything[~everything["close"]]
    assert np.allclose(shown_all["mean"] - shown_all["clean"], shown_all["delta"], atol=0.011)
    shown = tidy[~tidy["close"]]
    # every transcribed score agrees with its printed change
    assert np.allclose(shown["mean"] - shown["clean"], shown["delta"], atol=0.051)
    starred = tidy[tidy["close"]]
    assert starred["mean"].isna().all()

    def cell(task, method, n_label, eps):
        r = tidy[(tidy.task == task) & (tidy.method == method) & (tidy.n_label == n_label) & (tidy.eps == eps)]
        assert len(r) == 1
        return None if r["close"].iloc[0] else float(r["mean"].iloc[0])

    # REFERENCE.md §D, CIFAR-10 ResNet-34, L∞, n = k
    assert cell("CIFAR-10", "gradient", "k", 1e-4) == 93.3
    assert cell("CIFAR-10", "gradient", "k", 1e-3) == 36.1
    assert cell("CIFAR-10", "gradient", "k", 1e-2) == 10.0
    assert cell("CIFAR-10", "random", "k", 1e-2) == 75.1
    assert cell("CIFAR-10", "random", "k", 1e-1) == 10.0
    assert cell("CIFAR-10", "random", "k", 1e-3) is None
    assert cell("CIFAR-10", "gradient", "100", 10.0) == 44.8
    assert cell("ImageNet", "random", "k", 1e-2) == 30.3
    assert cell("ImageNet", "gradient", "100", 1e-1) == 67.5
    text = T.paper_table1(["PTB-LM", "PTB-Parsing", "De-En"])

    def text_cell(task, method, n_label, eps):
        r = text[(text.task == task) & (text.method == method) & (text.n_label == n_label) & (text.eps == eps)]
        return None if r["close"].iloc[0] else float(r["mean"].iloc[0])

    assert text_cell("PTB-LM", "gradient", "k", 1e-1) == 13.25  # log PPL rises: lower is better
    assert text_cell("PTB-LM", "random", "100", 100.0) == 16.90
    assert text_cell("PTB-Parsing", "gradient", "k", 1e-3) == 80.6
    assert text_cell("De-En", "gradient", "k", 1e-2) == 0.17
    assert text_cell("De-En", "random", "100", 10.0) == 11.58


def test_paper_table1_layout_matches_ours():
    t = T.paper_table1(["CIFAR-10"], layout=True)
    assert t.index[0] == "w/o corruption"
    assert list(t.index[1:6]) == [f"n=k, ε={e}" for e in ("1e-4", "1e-3", "1e-2", "1e-1", "1")]
    assert list(t.index[6:]) == [f"n=100, ε={e}" for e in ("1e-2", "1e-1", "1", "1e1", "1e2")]
    col_r, col_p = t.columns
    assert col_r == ("CIFAR-10 ResNet-34 (paper) (Acc ↑)", "Random")
    assert t.loc["w/o corruption", col_r] == "94.3"
    assert t.loc["n=k, ε=1e-3", col_r] == "*"
    assert t.loc["n=k, ε=1e-3", col_p] == "36.1 (-58.2)"
    assert t.loc["n=k, ε=1e-2", col_r] == "75.1 (-19.2)"
    assert t.loc["n=100, ε=1e2", col_p] == "9.6 (-84.7)"
    with pytest.raises(ValueError, match="transcribed here"):
        T.paper_table1(["WMT14"])
    text = T.paper_table1(["PTB-LM", "De-En"], layout=True)
    assert list(text.columns.get_level_values(0).unique()) == ["PTB-LM LSTM (paper) (Log PPL ↓)",
                                                               "De-En Transformer (paper) (BLEU ↑)"]
    assert text.loc["w/o corruption", ("PTB-LM LSTM (paper) (Log PPL ↓)", "Random")] == "4.25"
    assert text.loc["n=k, ε=1", ("PTB-LM LSTM (paper) (Log PPL ↓)", "Proposed")] == "48.92 (+44.67)"
    assert text.loc["n=k, ε=1e-4", ("De-En Transformer (paper) (BLEU ↑)", "Proposed")] == "35.21 (-0.12)"


def test_central_claim(frame):
    c = T.central_claim(frame)
    assert list(c.eps) == [1e-3, 1e-2]  # n = k rows only by default
    first = c.iloc[0]
    assert first.random_drop == pytest.approx(90.0 - np.mean([90.0, 89.96, 90.02]))
    assert first.random_worst_drop == pytest.approx(0.04)
    assert first.gradient_drop == pytest.approx(30.0)
    assert first.random_harmless and first.holds  # 30 ≥ 30
    second = c.iloc[1]
    assert not second.random_harmless and not second.holds  # random costs 8 points there
    c100 = T.central_claim(frame, n=100, gradient_threshold=45.0)
    assert list(c100.eps) == [1.0] and c100.random_harmless.all() and not c100.holds.any()


def test_loss_change_ratio():
    rows = _rows("random", 1e-3, [90, 90, 90], losses=[0.5015, 0.502, 0.5025]) \
        + _rows("gradient", 1e-3, [80], losses=[0.6]) \
        + _rows("random", 1e-2, [90, 90], losses=[0.49, 0.51]) \
        + _rows("gradient", 1e-2, [50], losses=[1.5])
    r = T.loss_change_ratio(pd.DataFrame(rows))
    a, b = r.iloc[0], r.iloc[1]
    assert a.eps == 1e-3 and a.random_delta_loss == pytest.approx(0.002)
    assert a.gradient_delta_loss == pytest.approx(0.1) and a.ratio == pytest.approx(0.02)
    assert a.ratio_se == pytest.approx(0.0005 / math.sqrt(3) / 0.1)
    assert a.resolved  # mean 0.002 > t(2) 4.30 × se 0.00029
    assert b.random_delta_loss == pytest.approx(0.0, abs=1e-12) and not b.resolved
    # 3 trials: 2 standard errors are not enough (t with 2 degrees of freedom: 4.30)
    rows = _rows("random", 1e-3, [90] * 3, losses=[0.501, 0.502, 0.503]) + _rows("gradient", 1e-3, [80], losses=[0.6])
    c = T.loss_change_ratio(pd.DataFrame(rows)).iloc[0]
    assert 2 < c.random_delta_loss / c.random_se < 4.30 and not c.resolved


def test_loss_scaling_recovers_theorem1_slopes():
    # synthetic model: ΔL_random = 12 ε² (+ noise ±1 %), ΔL_gradient = 3 ε; intact below ε = 1e-2
    rows = []
    for eps in (1e-4, 1e-3, 1e-2, 1e-1):
        broken = eps > 1e-2
        r = 12 * eps ** 2
        rows += _rows("random", eps, [50.0 if broken else 90.0] * 3, losses=[0.5 + r * f for f in (0.99, 1.0, 1.01)])
        rows += _rows("gradient", eps, [10.0 if broken else 89.5], losses=[0.5 + 3 * eps])
    s = T.loss_scaling(pd.DataFrame(rows)).iloc[0]
    assert s.random_eps == [1e-4, 1e-3, 1e-2] and s.random_slope == pytest.approx(2.0, abs=1e-3)
    assert s.random_c2 == pytest.approx(12.0, rel=1e-3)
    assert s.gradient_eps == [1e-4, 1e-3, 1e-2] and s.gradient_slope == pytest.approx(1.0, abs=1e-6)
    assert s.gradient_c1 == pytest.approx(3.0)
    assert s.ratio_slope == pytest.approx(1.0, abs=1e-3)
    assert s.predicted_ratio_per_eps == pytest.approx(4.0, rel=1e-3)


def test_loss_scaling_stops_at_the_first_unresolved_eps():
    rows = []
    # ε = 1e-3: unresolved (mean 0 ± spread); ε = 1e-4: a spurious "resolved" positive mean below it
    spec = {1e-4: [0.0010, 0.0011, 0.0012], 1e-3: [-0.01, 0.0, 0.01], 1e-2: [0.0011, 0.0012, 0.0013],
            1e-1: [0.11, 0.12, 0.13]}
    for eps, deltas in spec.items():
        rows += _rows("random", eps, [90.0] * 3, losses=[0.5 + d for d in deltas])
        rows += _rows("gradient", eps, [89.9], losses=[0.5 + eps])
    s = T.loss_scaling(pd.DataFrame(rows)).iloc[0]
    assert s.random_eps == [1e-2, 1e-1] and s.random_slope == pytest.approx(2.0, abs=1e-6)


def test_central_claim_for_a_lower_is_better_metric():
    rows = []
    for eps, rnd, grd in [(1e-3, 4.26, 6.0), (1e-1, 5.0, 20.0)]:
        rows += [{"method": "random", "n": 10, "k": 10, "eps": eps, "trial": t, "log_ppl": rnd + 0.001 * t,
                  "base_log_ppl": 4.25} for t in range(3)]
        rows.append({"method": "gradient", "n": 10, "k": 10, "eps": eps, "trial": 0, "log_ppl": grd,
                     "base_log_ppl": 4.25})
    c = T.central_claim({"PTB-LM": pd.DataFrame(rows)}, metric="log_ppl", higher_is_better=False,
                        random_tolerance=0.1, gradient_threshold=1.0)
    assert list(c["holds"]) == [True, False]  # at 1e-1 random already costs 0.75 > 0.1
    assert c["gradient_drop"].iloc[0] == pytest.approx(1.75)
    assert c["base_log_ppl"].iloc[0] == 4.25
    with pytest.raises(ValueError, match="base_uas"):
        T.central_claim({"x": pd.DataFrame(rows)}, metric="uas")


# --------------------------------------------------------------------------------------
# Non-finite outputs and the parameter subspace (issue 30, points 3 and 4)
# --------------------------------------------------------------------------------------

def _nf_rows():
    rows = pd.DataFrame(_rows("gradient", 1.0, [0.0]) + _rows("random", 1.0, [30.0, 12.5]) + _rows("random", 0.1, [88.0]))
    rows["nonfinite"] = [100.0, 40.0, 87.5, 0.0]
    rows["task"] = "toy"
    return rows


def test_nonfinite_as_uniform_by_hand() -> None:
    rows = _nf_rows()
    out = T.nonfinite_as_uniform(rows, 10)
    # accuracy + nonfinite / 10: 0 + 10, 30 + 4, 12.5 + 8.75, 88 + 0
    assert list(out["accuracy"]) == [10.0, 34.0, 21.25, 88.0]
    assert list(out["accuracy_wrong"]) == [0.0, 30.0, 12.5, 88.0]
    assert list(out["delta_accuracy"]) == [-80.0, -56.0, -68.75, -2.0]
    assert set(out["nonfinite_rule"]) == {"uniform"} and list(out["base_accuracy"]) == [90.0] * 4
    assert list(rows["accuracy"]) == [0.0, 30.0, 12.5, 88.0]  # the input is not modified
    assert list(T.nonfinite_as_uniform(rows, {"toy": 4})["accuracy"]) == [25.0, 40.0, 34.375, 88.0]


def test_nonfinite_as_uniform_rejects_bad_input() -> None:
    rows = _nf_rows()
    with pytest.raises(ValueError, match=r"lack columns \['nonfinite'\]"):
        T.nonfinite_as_uniform(rows.drop(columns="nonfinite"), 10)
    with pytest.raises(ValueError, match="integer >= 2"):
        T.nonfinite_as_uniform(rows, 1)
    with pytest.raises(ValueError, match="integer >= 2"):
        T.nonfinite_as_uniform(rows, 10.0)
    with pytest.raises(ValueError, match=r"no entry for tasks \['toy'\]"):
        T.nonfinite_as_uniform(rows, {"other": 10})
    with pytest.raises(ValueError, match="not computed under the rule 'wrong'"):
        T.nonfinite_as_uniform(rows.assign(accuracy=[10.0, 34.0, 21.25, 88.0]), 10)
    with pytest.raises(ValueError, match="percentage in"):
        T.nonfinite_as_uniform(rows.assign(nonfinite=[100.0, 40.0, 87.5, -1.0]), 10)
    with pytest.raises(ValueError, match="only rows computed under 'wrong'"):
        T.nonfinite_as_uniform(T.nonfinite_as_uniform(rows, 10), 10)


def test_nonfinite_as_uniform_equals_evaluate_under_uniform_bit_for_bit() -> None:
    import torch
    from torch import nn

    from paramstress import sweep as S

    class Some(nn.Module):  # 3 classes; examples with x < 4 have an infinite logit
        def forward(self, x):
            out = torch.stack([x[:, 0] % 3 == k for k in range(3)], dim=1).float()
            out[x[:, 0] < 4, 1] = float("inf")
            return out

    x = torch.arange(11, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor([0, 1, 2, 0, 2, 2, 1, 0, 1, 1, 0])
    wrong = S.evaluate(Some(), x, y, batch_size=4)
    uniform = S.evaluate(Some(), x, y, batch_size=4, nonfinite="uniform")
    rows = pd.DataFrame([{**wrong, "base_accuracy": 100.0}])
    assert T.nonfinite_as_uniform(rows, 3)["accuracy"].iloc[0] == uniform["accuracy"]
    # x = 0..3 non-finite; x = 4..10 predict x % 3 = 1, 2, 0, 1, 2, 0, 1 against y 2, 2, 1, 0, 1, 1, 0: one correct (x = 5)
    assert wrong["accuracy"] == 100.0 / 11 and wrong["nonfinite"] == 400.0 / 11
    assert uniform["accuracy"] == 100.0 / 11 + (400.0 / 11) / 3


def test_table1_shows_the_nonfinite_share_beside_the_accuracy() -> None:
    rows = _nf_rows().drop(columns="task")
    t = T.table1(rows, 90.0, show_nonfinite=True)
    rnd, grd = t.columns
    assert t.loc["n=k, ε=1", grd] == "0.0 (-90.0) [100.0 % non-finite]"
    assert t.loc["n=k, ε=1", rnd] == "21.2 ± 12.4 (-68.8) [63.8 % non-finite]"
    assert t.loc["n=k, ε=1e-1", rnd] == "88.0 (-2.0)"  # nothing non-finite: no bracket
    assert "non-finite" not in T.table1(rows, 90.0).loc["n=k, ε=1", grd]  # off by default
    s = T.trial_summary(rows, 90.0)
    assert list(s["nonfinite"]) == [0.0, 63.75, 100.0]
    assert "nonfinite" not in T.trial_summary(rows.drop(columns="nonfinite"), 90.0).columns
    with pytest.raises(ValueError, match="needs a 'nonfinite' column"):
        T.table1(rows.drop(columns="nonfinite"), 90.0, show_nonfinite=True)


def test_relative_damage_and_subspace_match_by_hand() -> None:
    assert T.relative_damage(50.0, 90.0, 10.0) == 0.5
    assert T.relative_damage(95.0, 90.0, 10.0) == 0.0 and T.relative_damage(5.0, 90.0, 10.0) == 1.0
    with pytest.raises(ValueError, match="above chance"):
        T.relative_damage(5.0, 10.0, 10.0)
    # the paper's CIFAR-10 n = 100 damage (clean 94.3, chance 10): gradient ε = 1e-2, 1e-1, 1: 0 (*);
    # ε = 10: 49.5/84.3; ε = 100: 1 (9.6 is below chance). Random ε = 10: 17.2/84.3; ε = 100: 84.2/84.3.
    cells = {("gradient", 1.0): (90.0, 90.0), ("gradient", 10.0): (50.0, 10.0),
             ("random", 10.0): (10.0, 90.0), ("random", 100.0): (10.0, 10.0)}
    rows = []
    for subspace, which in (("all", 1), ("weights", 0)):
        for (method, eps), accs in cells.items():
            rows += [{**r, "subspace": subspace} for r in _rows(method, eps, [accs[which]], n=100, k=K)]
    out = T.subspace_match(pd.DataFrame(rows), 10)
    paper = {("gradient", 1.0): 0.0, ("gradient", 10.0): 49.5 / 84.3, ("random", 10.0): 17.2 / 84.3,
             ("random", 100.0): 84.2 / 84.3}
    ours = {"weights": {("gradient", 1.0): 0.0, ("gradient", 10.0): 0.5, ("random", 10.0): 1.0, ("random", 100.0): 1.0},
            "all": {("gradient", 1.0): 0.0, ("gradient", 10.0): 1.0, ("random", 10.0): 0.0, ("random", 100.0): 1.0}}
    for subspace in ("all", "weights"):
        row = out[out.subspace == subspace].iloc[0]
        expect = np.mean([abs(ours[subspace][c] - paper[c]) for c in paper])
        assert row["cells"] == 4 and row["mean_abs_diff"] == pytest.approx(expect)
    assert list(out["subspace"]) == ["all", "weights"]
    assert list(out["best"]) == [True, False]  # 0.155 against 0.221
    # intact (damage < 0.05) on both sides or damaged on both: 'all' leaves random ε = 10 intact where
    # the paper's damage is 0.204
    assert list(out["agree"]) == [3, 4]
    assert list(out["decided"]) == [True, True]  # 0.066 apart
    assert not T.subspace_match(pd.DataFrame(rows), 10, tie_below=0.07)["decided"].any()
    assert not T.subspace_match(pd.DataFrame(rows)[lambda d: d.subspace == "all"], 10)["decided"].any()
    with pytest.raises(ValueError, match="no n = 100 rows"):
        T.subspace_match(pd.DataFrame(rows).assign(n=K), 10)
    with pytest.raises(ValueError, match="lack columns"):
        T.subspace_match(pd.DataFrame(rows).drop(columns="subspace"), 10)
    with pytest.raises(ValueError, match="'CIFAR-10' or 'ImageNet'"):
        T.subspace_match(pd.DataFrame(rows), 10, paper_task="MNIST")
