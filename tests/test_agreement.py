"""Rank agreement between per-layer measures: correlations of known relations, confidence
intervals that contain the truth at their nominal rate, top-k overlap and set agreement
by hand, and the per-layer corruption / flatness measures on a tiny model."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from torch import nn

from paramstress import agreement as G

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


# ----------------------------------------------------------------------------- correlations
@pytest.mark.parametrize("method", ["spearman", "kendall"])
@pytest.mark.parametrize("ci", ["bootstrap", "fisher"])
def test_monotone_relation_has_correlation_one(method, ci):
    a = np.linspace(-3, 5, 25)
    res = G.rank_correlation(a, np.exp(a) + 7, method=method, ci=ci, n_resamples=500)
    assert res["statistic"] == pytest.approx(1.0)
    assert res["low"] == pytest.approx(1.0) and res["high"] == pytest.approx(1.0)
    down = G.rank_correlation(a, -a ** 3, method=method, ci=ci, n_resamples=500)
    assert down["statistic"] == pytest.approx(-1.0) and down["high"] == pytest.approx(-1.0)
    assert res["pvalue"] < 1e-6


@pytest.mark.parametrize("method", ["spearman", "kendall"])
def test_statistic_matches_scipy_with_ties(method):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, 40).astype(float)
    b = a + rng.integers(0, 4, 40)
    ours = G.rank_correlation(a, b, method=method, ci="fisher")
    ref = stats.spearmanr(a, b) if method == "spearman" else stats.kendalltau(a, b)
    assert ours["statistic"] == pytest.approx(ref.statistic, abs=1e-12)
    assert ours["pvalue"] == pytest.approx(ref.pvalue)


def _population(method, rho):
    """Spearman's and Kendall's population values for a bivariate normal with correlation rho."""
    return 6 / math.pi * math.asin(rho / 2) if method == "spearman" else 2 / math.pi * math.asin(rho)


@pytest.mark.parametrize("method,ci,reps,resamples", [
    ("spearman", "fisher", 400, 100),
    ("kendall", "fisher", 400, 100),
    ("spearman", "bootstrap", 150, 400),
    ("kendall", "bootstrap", 60, 300),
])
def test_confidence_intervals_contain_the_truth_at_their_rate(method, ci, reps, resamples):
    rho, n = 0.6, 40
    truth = _population(method, rho)
    rng = np.random.default_rng(7)
    cov = [[1, rho], [rho, 1]]
    hits, widths = 0, []
    for rep in range(reps):
        xy = rng.multivariate_normal([0, 0], cov, size=n)
        res = G.rank_correlation(xy[:, 0], xy[:, 1], method=method, ci=ci, n_resamples=resamples, seed=rep)
        hits += res["low"] <= truth <= res["high"]
        widths.append(res["high"] - res["low"])
    coverage = hits / reps
    assert 0.85 <= coverage <= 0.99, f"95% intervals contained the truth {coverage:.0%} of the time"
    assert 0.1 < np.mean(widths) < 0.8


def test_one_large_sample_interval_contains_the_truth():
    rng = np.random.default_rng(3)
    xy = rng.multivariate_normal([0, 0], [[1, 0.5], [0.5, 1]], size=2000)
    for method in ("spearman", "kendall"):
        res = G.rank_correlation(xy[:, 0], xy[:, 1], method=method, ci="fisher")
        assert res["low"] < _population(method, 0.5) < res["high"]
        assert res["high"] - res["low"] < 0.1


def test_degenerate_and_bad_input():
    flat = G.rank_correlation([1, 1, 1, 1, 1], [1, 2, 3, 4, 5])
    assert math.isnan(flat["statistic"]) and math.isnan(flat["low"])
    assert math.isnan(G.rank_correlation([1, 2, 3], [3, 2, 1])["statistic"])  # fewer than 4 layers
    with pytest.raises(ValueError, match="one value per layer"):
        G.rank_correlation([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="non-finite"):
        G.rank_correlation([1, 2, 3, np.nan], [1, 2, 3, 4])
    with pytest.raises(ValueError, match="method"):
        G.rank_correlation([1, 2, 3, 4], [1, 2, 3, 4], method="pearson")
    with pytest.raises(ValueError, match="confidence"):
        G.rank_correlation([1, 2, 3, 4], [1, 2, 3, 4], confidence=95)


def test_orientation_makes_agreement_positive():
    # a layer with a large indicator and a very negative Δφ is fragile under both: agreement
    table = pd.DataFrame({"layer": list("abcdef"), "indicator": [1, 2, 3, 4, 5, 6],
                          "delta_phi": [0.3, 0.2, 0.1, 0.0, -0.1, -0.2], "phi_clean": [0.0] * 6})
    out = G.orient(table)
    assert out["delta_phi_vuln"].tolist() == pytest.approx([-0.3, -0.2, -0.1, 0.0, 0.1, 0.2])
    res = G.correlations(table.assign(epoch=1), [("indicator", "delta_phi")], by=["epoch"], ci="fisher")
    assert res.loc[0, "statistic"] == pytest.approx(1.0) and res.loc[0, "epoch"] == 1
    with pytest.raises(ValueError, match="unknown measure"):
        G.orient(table.assign(foo=1.0), ["foo"])


# ----------------------------------------------------------------------------- overlaps
def test_top_k_overlap_by_hand():
    a = {"l1": 5.0, "l2": 4.0, "l3": 3.0, "l4": 2.0, "l5": 1.0}
    b = {"l1": 1.0, "l2": 9.0, "l3": 8.0, "l4": 0.0, "l5": 2.0}
    res = G.top_k_overlap(a, b, 2)
    assert res["a_top"] == ["l1", "l2"] and res["b_top"] == ["l2", "l3"]
    assert res["overlap"] == 1 and res["fraction"] == 0.5 and res["expected"] == pytest.approx(0.8)
    # P(X >= 1) for X ~ Hypergeom(N=5, K=2, n=2) = 1 − C(3,2)/C(5,2) = 0.7
    assert res["pvalue"] == pytest.approx(0.7)
    full = G.top_k_overlap(a, a, 3)
    assert full["overlap"] == 3 and full["pvalue"] == pytest.approx(1 / math.comb(5, 3))
    with pytest.raises(ValueError, match="same"):
        G.top_k_overlap(a, {"l1": 1.0}, 1)
    with pytest.raises(ValueError, match="k must be"):
        G.top_k_overlap(a, b, 6)


def test_set_agreement_by_hand():
    scores = {"a": 0.9, "b": 0.8, "c": 0.1, "d": 0.0}
    top = G.set_agreement(["a", "b"], scores)
    assert top["auc"] == 1.0 and top["overlap"] == 2 and top["expected"] == pytest.approx(1.0)
    bottom = G.set_agreement(["c", "d"], scores)
    assert bottom["auc"] == 0.0 and bottom["overlap"] == 0
    mixed = G.set_agreement(["a", "d"], scores)
    assert mixed["auc"] == 0.5  # a beats both, d beats none
    assert math.isnan(G.set_agreement([], scores)["auc"])
    with pytest.raises(ValueError, match="not scored"):
        G.set_agreement(["z"], scores)


# ----------------------------------------------------------------------------- per-layer measures
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()


def tiny_data(n: int = 48):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_layer_corruption_is_the_per_layer_indicator():
    model, (x, y) = tiny_model(), tiny_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = G.layer_corruption(model, x, y, eps=0.05, n=10, batch_size=16)
    assert frame["layer"].tolist() == ["0", "4"] and frame["position"].tolist() == [0, 1]
    assert frame["k"].tolist() == [36, 432] and frame["n"].tolist() == [10, 10]
    # Eq. 11 under L∞: ε times the L1 norm of the 10 largest |g| of the layer's weight
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    for name, param in (("0", model[0].weight), ("4", model[4].weight)):
        g = param.grad.reshape(-1).abs().sort(descending=True).values[:10]
        assert frame.set_index("layer").loc[name, "indicator"] == pytest.approx(0.05 * float(g.sum()), rel=1e-5)
    model.zero_grad(set_to_none=True)
    assert (frame["loss_change"] > 0).all()  # the first-order worst case raises the loss
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="unknown layers"):
        G.layer_corruption(model, x, y, eps=0.05, n=10, layers=["1"])
    grid = G.layer_corruption(model, x, y, eps=[0.05, 0.5], n=10, batch_size=16)  # one gradient, two sizes
    assert grid["eps"].tolist() == [0.05, 0.05, 0.5, 0.5]
    small, large = grid[grid.eps == 0.05], grid[grid.eps == 0.5]
    assert large["indicator"].to_numpy() == pytest.approx(10 * small["indicator"].to_numpy())
    assert small["indicator"].to_numpy() == pytest.approx(frame["indicator"].to_numpy())


def test_choose_corruption_eps_takes_the_most_spread_out_size():
    frame = pd.DataFrame({"dataset": "d", "layer": ["a", "b", "c"] * 3,
                          "eps": [0.1] * 3 + [1.0] * 3 + [10.0] * 3,
                          "drop": [0.0, 0.0, 0.5, 2.0, 30.0, 60.0, 80.0, 80.0, 79.0]})
    res = G.choose_corruption_eps(frame, by=["dataset"])
    assert res.loc[0, "eps"] == 1.0 and res.loc[0, "most"] == "c" and res.loc[0, "least"] == "a"
    assert res.loc[0, "spread"] == pytest.approx(np.std([2.0, 30.0, 60.0]))
    with pytest.raises(ValueError, match="lacks"):
        G.choose_corruption_eps(frame.drop(columns="drop"))


def test_layer_flatness_moves_one_layer_at_a_time():
    model, (x, y) = tiny_model(), tiny_data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = G.layer_flatness(model, x, y, average_samples=3, worst_steps=3, batch_size=16)
    assert frame["layer"].tolist() == ["0", "4"]
    assert np.isfinite(frame[["average_flatness", "worst_flatness"]].to_numpy()).all()
    from paramstress import flatness as FT

    direct = FT.average_case_flatness(model, x, y, samples=3, batch_size=16, params=[("4.weight", model[4].weight)])
    assert frame.loc[1, "average_flatness"] == direct["flatness"]  # exactly: the shared base loss is the same number
    worst = FT.worst_case_flatness(model, x, y, steps=3, batch_size=16, params=[("4.weight", model[4].weight)])
    assert frame.loc[1, "worst_flatness"] == worst["flatness"]
    # the unperturbed loss is evaluated once for all layers and both measures
    import paramstress.corruption.flatness as FTmod
    calls = []
    real = FTmod.evaluate
    try:
        FTmod.evaluate = lambda *a, **k: calls.append(k.get("params")) or real(*a, **k)
        G.layer_flatness(model, x, y, average_samples=3, worst_steps=3, batch_size=16)
    finally:
        FTmod.evaluate = real
    assert len(calls) == 1 + 2 * 3 + 2 * 1  # base once; per layer 3 samples and the worst walk's last point
    with pytest.raises(ValueError, match="base_loss"):
        FT.average_case_flatness(model, x, y, samples=3, params=[("4.weight", model[4].weight)], base_loss="0.1")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with pytest.raises(ValueError, match="measures"):
        G.layer_flatness(model, x, y, measures=("best",))


def test_join_layers_keeps_every_layer():
    scores = pd.DataFrame({"epoch": [1, 1, 1, 1], "layer": ["0", "4", "0", "4"],
                           "filter": ["combined", "combined", "h_a", "h_a"], "T": 5,
                           "phi_clean": [0.1, -0.2, 0.0, 0.0], "phi_adv": [0.0] * 4, "delta_phi": [-0.1, 0.3, 0, 0]})
    corr = pd.DataFrame({"epoch": [1, 1], "layer": ["4", "0"], "indicator": [2.0, 1.0]})
    table = G.join_layers(scores, corr, keys=["epoch"])
    assert table.set_index("layer").loc["4", "indicator"] == 2.0 and len(table) == 2
    with pytest.raises(ValueError, match="lost 1"):
        G.join_layers(scores, corr.iloc[:1], keys=["epoch"])
    with pytest.raises(ValueError, match="lacks"):
        G.join_layers(scores.drop(columns="delta_phi"), corr, keys=["epoch"])
