"""The corruption-vs-filtering page's verdict rules (paramstress.agreement), on hand-made rows."""
import math

import numpy as np
import pandas as pd
import pytest

from paramstress import agreement as G


def rows(*intervals):
    return pd.DataFrame([{"statistic": s, "low": lo, "high": hi} for s, lo, hi in intervals])


def test_describe_rho_says_whether_the_interval_excludes_zero():
    assert G.describe_rho({"statistic": 0.5, "low": 0.1, "high": 0.8}) == "ρ = +0.50 [+0.10, +0.80] (excludes 0)"
    assert G.describe_rho({"statistic": -0.1, "low": -0.6, "high": 0.4}) == "ρ = -0.10 [-0.60, +0.40] (includes 0)"
    assert G.describe_rho({"statistic": math.nan, "low": math.nan, "high": math.nan}).startswith("undefined")


@pytest.mark.parametrize("intervals, start", [
    ([(0.5, 0.1, 0.8), (0.4, 0.2, 0.6)], "agree at every analysed snapshot (interval above 0 at all 2)"),
    ([(-0.5, -0.8, -0.1), (-0.4, -0.6, -0.2)], "disagree, naming opposite layers, at every"),
    ([(0.5, 0.1, 0.8), (-0.4, -0.6, -0.2), (0.0, -0.3, 0.3)], "agree significantly at 1 and disagree significantly at 1 of 3"),
    ([(0.5, 0.1, 0.8), (0.0, -0.3, 0.3)], "agree significantly at 1 of 2 snapshots"),
    ([(-0.5, -0.8, -0.1), (0.0, -0.3, 0.3)], "disagree significantly at 1 of 2 snapshots"),
    ([(0.1, -0.3, 0.5), (0.0, -0.3, 0.3)], "show no relation distinguishable from none at any of the 2"),
    ([(math.nan, math.nan, math.nan)], "cannot be judged"),
])
def test_stability_verdict_counts_the_intervals(intervals, start):
    assert G.stability_verdict(rows(*intervals)).startswith(start)


def test_span_prints_one_value_when_both_ends_agree():
    assert G.span([0.1, -0.2, math.nan]) == "from -0.20 to +0.10"
    assert G.span([0.301, 0.299]) == "+0.30"
    assert G.span([math.nan]) == "undefined"
    assert G.span([3, 5], "{:.0f}") == "from 3 to 5"


def _table():
    layers = ["l0", "l1", "l2", "l3"]
    base = pd.DataFrame({"layer": layers, "position": range(4), "indicator": [4.0, 3.0, 2.0, 1.0],
                         "loss_change": [1.0, 2.0, 3.0, 4.0], "phi_clean": [-0.4, -0.3, -0.2, -0.1],
                         "delta_phi": [0.1, 0.2, -0.3, -0.4], "fragile": [False, False, True, True]})
    return pd.concat([base.assign(dataset="mnist", seed=0, epoch=2)], ignore_index=True)


def test_top_k_overlaps_by_hand():
    out = G.top_k_overlaps(_table(), keys=["dataset", "seed", "epoch"], top_k=2)
    first = out[(out["most vulnerable by"] == "indicator") & (out["most fragile by"] == "−φ_clean")].iloc[0]
    # indicator's top 2: l0, l1; −φ_clean's top 2 (φ most negative): l0, l1
    assert (first["k"], first["layers"], first["overlap"], first["expected by chance"]) == (2, 4, 2, 1.0)
    second = out[out["most fragile by"] == "−Δφ"].iloc[0]
    assert second["overlap"] == 0 and second["fragile"] == "l3, l2"


def test_selection_agreement_by_hand():
    out = G.selection_agreement(_table(), keys=["dataset", "seed", "epoch"])
    ind = out[out["measure"] == "indicator"].iloc[0]
    # frozen l2, l3 have the two smallest indicators: AUC 0
    assert ind["auc"] == 0.0 and ind["frozen"] == "l2, l3" and ind["frozen layers"] == 2
    loss = out[out["measure"] == "ΔL (corruption)"].iloc[0]
    assert loss["auc"] == 1.0


def _spearman(ip, idp, di, dp, extra=()):
    data = []
    for task, (a, b, c, d) in zip(["mnist", "fashion-mnist"], zip(ip, idp, di, dp)):
        for (x, y), r in zip([("indicator", "phi_clean"), ("indicator", "delta_phi"), ("position", "indicator"),
                              ("position", "phi_clean"), ("loss_change", "phi_clean")], [a, b, c, d, a]):
            data.append({"dataset": task, "epoch": 2, "x": x, "y": y, "statistic": r[0], "low": r[1], "high": r[2]})
    return pd.DataFrame(data)


@pytest.mark.parametrize("ip, start", [
    ([(0.5, 0.1, 0.8), (0.4, 0.2, 0.6)], "yes, in part"),
    ([(0.5, 0.1, 0.8), (0.1, -0.2, 0.4)], "at most weakly"),
    ([(-0.5, -0.8, 0.1), (0.1, -0.2, 0.4)], "no: the rank correlation is not positive"),
])
def test_same_layers_answer_rule(ip, start):
    neutral = [(0.0, -0.3, 0.3)] * 2
    sp = _spearman(ip, neutral, [(-0.5, -0.8, -0.1)] * 2, [(-0.4, -0.7, -0.1)] * 2)
    tab = _table()
    ov = pd.concat([G.top_k_overlaps(tab.assign(dataset=d), keys=["dataset", "seed", "epoch"], top_k=2)
                    for d in ("mnist", "fashion-mnist")], ignore_index=True)
    sel = pd.concat([G.selection_agreement(tab.assign(dataset=d), keys=["dataset", "seed", "epoch"])
                     for d in ("mnist", "fashion-mnist")], ignore_index=True)
    text, numbers = G.same_layers_answer(sp, ov, sel, epoch=2, top_k=2)
    assert text.startswith(f"**Do the two papers name the same layers?** On this run, {start}")
    assert "both fall with depth" in text and "no clear relation" in text
    assert "does **not** freeze" in text and numbers["mean_auc"] == 0.0
    assert numbers["mean_rho_indicator_phi_clean"] == pytest.approx(np.mean([r[0] for r in ip]))
    line, nums = G.task_findings(sp, ov, sel, task="mnist", label="MNIST", epoch=2, seed=0, epochs=[2])
    assert line.startswith("- **MNIST** (epoch 2, seed 0): corruption indicator against −φ_clean ρ = ")
    assert nums["rho_indicator_phi_clean"] == ip[0][0]
