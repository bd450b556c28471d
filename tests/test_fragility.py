"""Scores of Pravin et al. (2023): baseline (Eq. 10), combined response (Eq. 13),
φ_clean / φ_adv / Δφ (Eqs. 14-16) by Simpson's rule, normalisation and labels, on
hand-computed curves."""
import numpy as np
import pandas as pd
import pytest

from paramstress import fragility as FR

T = 5
LAM = np.linspace(0, 1, T)


def curve(filter, clean, adv, removed, *, n=100, clean_ref=80.0, adv_ref=40.0, layer="conv1", **tags):
    """A filter-sweep frame for one curve, with accuracies given as functions of λ."""
    rows = []
    for t, lam in enumerate(LAM):
        rows.append({**tags, "layer": layer, "filter": filter, "t": t, "T": T, "lam": lam, "alpha": 0.0,
                     "lower": 0.0, "upper": 0.0, "range": "layer", "removed": removed(lam), "nonzero": n,
                     "total": n, "fraction_removed": removed(lam) / n, "baseline": 1 - removed(lam) / n,
                     "clean_accuracy": clean(lam), "adv_accuracy": adv(lam), "clean_reference": clean_ref,
                     "adv_reference": adv_ref, "eps": 0.1, "adversarial": "fixed"})
    return pd.DataFrame(rows)


def test_baseline_eq10():
    assert FR.baseline([0, 25, 100], 100).tolist() == [1.0, 0.75, 0.0]
    with pytest.raises(ValueError):
        FR.baseline([101], 100)
    with pytest.raises(ValueError):
        FR.baseline([0], 0)


def test_simpson_is_exact_on_cubics_and_checks_its_input():
    assert FR.area(LAM ** 3 - 2 * LAM ** 2 + LAM) == pytest.approx(1 / 12, abs=1e-15)
    assert FR.area(np.full(T, 0.3)) == pytest.approx(0.3)
    assert FR.area(LAM, LAM) == pytest.approx(0.5)
    x = np.linspace(0, 1, 9)
    assert FR.area(4 * x ** 3, x) == pytest.approx(1.0, abs=1e-15)
    with pytest.raises(ValueError, match="at least 3"):
        FR.area([1.0, 2.0])
    with pytest.raises(ValueError, match="increasing"):
        FR.area([1.0, 2.0, 3.0], [0, 0.5, 0.5])


def test_scores_on_a_hand_computed_curve():
    # baseline 1 − λ; S_clean = 1 − λ²; S_adv = 1 − λ:
    # φ_clean = ∫ λ − λ² = 1/6, φ_adv = 0, Δφ = ∫ (λ² − λ) = −1/6
    frame = curve("h_a", clean=lambda l: 80 * (1 - l ** 2), adv=lambda l: 40 * (1 - l), removed=lambda l: 100 * l)
    resp = FR.responses(frame, combine=False)
    assert resp["S_clean"].tolist() == pytest.approx((1 - LAM ** 2).tolist())
    assert resp["S_adv"].tolist() == pytest.approx((1 - LAM).tolist())
    s = FR.scores(resp).iloc[0]
    assert s["phi_clean"] == pytest.approx(1 / 6)
    assert s["phi_adv"] == pytest.approx(0.0, abs=1e-15)
    assert s["delta_phi"] == pytest.approx(-1 / 6)
    # scores() also accepts the sweep frame itself
    assert FR.scores(frame)["phi_clean"].tolist() == pytest.approx([1 / 6])


def test_reference_first_divides_by_the_first_threshold():
    frame = curve("h_a", clean=lambda l: 60 * (1 - l), adv=lambda l: 30 + 0 * l, removed=lambda l: 100 * l)
    unperturbed = FR.responses(frame, combine=False)
    first = FR.responses(frame, reference="first", combine=False)
    assert unperturbed["S_clean"].iloc[0] == pytest.approx(60 / 80)
    assert first["S_clean"].tolist() == pytest.approx((1 - LAM).tolist())
    assert first["S_adv"].tolist() == pytest.approx([1.0] * T)
    with pytest.raises(ValueError, match="reference"):
        FR.responses(frame, reference="last")


def test_combined_response_is_the_mean_of_the_three_filters_eq13():
    parts = [
        curve("h_a", clean=lambda l: 80 * (1 - l), adv=lambda l: 40 * (1 - l), removed=lambda l: 100 * l),
        curve("h_b", clean=lambda l: 80 * (1 - l ** 2), adv=lambda l: 40 * (1 - l ** 3), removed=lambda l: 100 * l),
        curve("h_c", clean=lambda l: 80 + 0 * l, adv=lambda l: 20 + 0 * l, removed=lambda l: 10 + 0 * l),
    ]
    resp = FR.responses(pd.concat(parts, ignore_index=True))
    comb = resp[resp["filter"] == "combined"].sort_values("t")
    expected = ((1 - LAM) + (1 - LAM ** 2) + 1) / 3
    assert comb["S_clean"].tolist() == pytest.approx(expected.tolist())
    assert comb["baseline"].tolist() == pytest.approx((((1 - LAM) * 2 + 0.9) / 3).tolist())
    assert FR.combined_response(1 - LAM, 1 - LAM ** 2, np.ones(T)).tolist() == pytest.approx(expected.tolist())
    s = FR.scores(resp).set_index("filter")
    for col in FR.SCORES:  # the areas are linear: the combined score is the mean score
        assert s.loc["combined", col] == pytest.approx(s.loc[["h_a", "h_b", "h_c"], col].mean())
    # no combined row when a filter is missing
    assert "combined" not in set(FR.responses(pd.concat(parts[:2]))["filter"])


def test_curves_are_kept_apart_by_tags_and_layers():
    a = curve("h_a", clean=lambda l: 80 * (1 - l), adv=lambda l: 40 * (1 - l), removed=lambda l: 100 * l, epoch=1)
    b = curve("h_a", clean=lambda l: 80 + 0 * l, adv=lambda l: 40 + 0 * l, removed=lambda l: 100 * l, epoch=2)
    s = FR.scores(pd.concat([a, b], ignore_index=True)).set_index("epoch")
    assert s.loc[1, "phi_clean"] == pytest.approx(0.0, abs=1e-15)
    assert s.loc[2, "phi_clean"] == pytest.approx(0.5)
    assert FR.tag_columns(a) == ["epoch", "range", "eps", "adversarial"]


def test_incomplete_curves_fail_with_the_fix_and_zero_references_give_nan():
    frame = curve("h_a", clean=lambda l: 80 * (1 - l), adv=lambda l: 40 * (1 - l), removed=lambda l: 100 * l)
    with pytest.raises(ValueError, match="re-run its sweep"):
        FR.responses(frame.drop(index=2))
    broken = FR.scores(frame.assign(adv_reference=0.0, adv_accuracy=0.0)).iloc[0]  # the attack broke the model
    assert np.isnan(broken["phi_adv"]) and np.isnan(broken["delta_phi"]) and broken["phi_clean"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="filter_sweep"):
        FR.responses(frame.drop(columns=["baseline"]))


def test_normalise_maxabs_keeps_zero_and_sign_minmax_spans_the_interval():
    table = pd.DataFrame({"model": ["a", "a", "a", "b"], "phi_clean": [-0.2, 0.1, 0.0, 3.0],
                          "phi_adv": [0.4, 0.0, -0.1, 1.0], "delta_phi": [0.6, -0.2, 0.0, 0.0]})
    out = FR.normalise(table, by=["model"])
    a = out[out.model == "a"]
    assert a["phi_clean_norm"].tolist() == pytest.approx([-0.25, 0.125, 0.0])  # scale 2·0.4, shared with φ_adv
    assert a["phi_adv_norm"].tolist() == pytest.approx([0.5, 0.0, -0.125])
    assert a["delta_phi_norm"].tolist() == pytest.approx([0.5, -1 / 6, 0.0])  # on its own
    assert out[out.model == "b"]["phi_clean_norm"].iloc[0] == pytest.approx(0.5)
    assert out[out.model == "b"]["delta_phi_norm"].iloc[0] == 0.0  # all-zero group stays 0
    mm = FR.normalise(table[table.model == "a"], method="minmax", together=[("delta_phi",)])
    assert mm["delta_phi_norm"].min() == -0.5 and mm["delta_phi_norm"].max() == 0.5
    with pytest.raises(ValueError, match="maxabs"):
        FR.normalise(table, method="zscore")


def test_labels_with_tolerance():
    v = [-0.1, -0.05, 0.0, 0.02, 0.2, np.nan]
    assert FR.classify(v, 0.05).tolist() == ["fragile", "robust", "robust", "robust", "antifragile", ""]
    assert FR.classify(v, 0.0).tolist() == ["fragile", "fragile", "robust", "antifragile", "antifragile", ""]
    with pytest.raises(ValueError, match="tolerance"):
        FR.classify(v, -1)
    labelled = FR.label_scores(pd.DataFrame({"phi_clean": [-1.0], "phi_adv": [0.0], "delta_phi": [1.0]}), 0.1)
    assert labelled[["phi_clean_mark", "phi_adv_mark", "delta_phi_mark"]].iloc[0].tolist() == ["Fr", "Ro", "Af"]


def test_two_adversarial_modes_of_one_layer_are_two_curves():
    fixed = curve("h_a", clean=lambda l: 80 * (1 - l), adv=lambda l: 40 * (1 - l), removed=lambda l: 100 * l)
    regen = fixed.assign(adversarial="regenerate", adv_accuracy=fixed["adv_accuracy"] / 2)
    s = FR.scores(pd.concat([fixed, regen], ignore_index=True)).set_index("adversarial")
    assert s.loc["fixed", "phi_adv"] == pytest.approx(0.0, abs=1e-15)
    assert s.loc["regenerate", "phi_adv"] == pytest.approx(FR.area(0.5 * (1 - LAM) - (1 - LAM)))


def test_references_own_clean_and_chance_on_hand_computed_curves():
    # clean 80 → 80(1 − λ); adv 40 → 40(1 − λ) + 10λ (a floor of 10 = chance at full removal)
    frame = curve("h_a", clean=lambda l: 80 * (1 - l), adv=lambda l: 40 * (1 - l) + 10 * l,
                  removed=lambda l: 100 * l)
    own = FR.responses(frame, reference="own", combine=False)
    assert own["S_adv"].tolist() == pytest.approx(((40 * (1 - LAM) + 10 * LAM) / 40).tolist())
    alias = FR.responses(frame, reference="unperturbed", combine=False)
    assert alias["S_adv"].tolist() == own["S_adv"].tolist()
    clean = FR.responses(frame, reference="clean", combine=False)
    assert clean["S_clean"].tolist() == pytest.approx((1 - LAM).tolist())
    assert clean["S_adv"].tolist() == pytest.approx(((40 * (1 - LAM) + 10 * LAM) / 80).tolist())
    chance = FR.responses(frame, reference="chance", chance=10.0, combine=False)
    # (80(1 − λ) − 10)/70 and (40(1 − λ) + 10λ − 10)/30 = 1 − λ
    assert chance["S_clean"].tolist() == pytest.approx(((80 * (1 - LAM) - 10) / 70).tolist())
    assert chance["S_adv"].tolist() == pytest.approx((1 - LAM).tolist())
    # Δφ: own ∫ (1 − 3λ/4) − (1 − λ) = +1/8; clean ∫ (1/2 − 3λ/8) − (1 − λ) = −1/2 + 5/16 = −3/16;
    # chance ∫ (1 − λ) − (70 − 80λ)/70 = ∫ λ/7 = +1/14
    got = {r: FR.scores(frame, reference=r, chance=10.0 if r == "chance" else None)["delta_phi"].iloc[0]
           for r in ("own", "clean", "chance")}
    assert got["own"] == pytest.approx(1 / 8)
    assert got["clean"] == pytest.approx(-3 / 16)
    assert got["chance"] == pytest.approx(1 / 14)


def test_reference_arguments_are_checked_first():
    frame = curve("h_a", clean=lambda l: 80 + 0 * l, adv=lambda l: 40 + 0 * l, removed=lambda l: 100 * l)
    with pytest.raises(ValueError, match="needs chance="):
        FR.responses(frame, reference="chance")
    with pytest.raises(ValueError, match="needs chance="):
        FR.responses(frame, reference="chance", chance=100.0)
    with pytest.raises(ValueError, match="only used with reference='chance'"):
        FR.responses(frame, reference="own", chance=10.0)
    with pytest.raises(ValueError, match="reference must be one of"):
        FR.reference_grid(frame, references=["own", "oops"])


def test_chance_reference_at_or_below_chance_is_undefined():
    frame = curve("h_a", clean=lambda l: 80 + 0 * l, adv=lambda l: 10 + 0 * l, removed=lambda l: 100 * l,
                  adv_ref=10.0)
    resp = FR.responses(frame, reference="chance", chance=10.0, combine=False)
    assert resp["S_adv"].isna().all() and resp["S_clean"].notna().all()


def test_removable_layers_from_the_full_removal_rows():
    keep = curve("h_a", clean=lambda l: 80 - 0.5 * l, adv=lambda l: 40 + 0 * l, removed=lambda l: 100 * l,
                 layer="block")
    kill = curve("h_a", clean=lambda l: 80 - 70 * l, adv=lambda l: 40 - 30 * l, removed=lambda l: 100 * l,
                 layer="conv1")
    partial = curve("h_a", clean=lambda l: 80 + 0 * l, adv=lambda l: 40 + 0 * l, removed=lambda l: 50 * l,
                    layer="never_all")
    glob = curve("h_a", clean=lambda l: 80 + 0 * l, adv=lambda l: 40 + 0 * l, removed=lambda l: 100 * l,
                 layer="global")
    table = FR.removable_layers(pd.concat([keep, kill, partial, glob], ignore_index=True), tolerance=1.0)
    got = table.set_index("layer")
    assert got.loc["block", "removable"] and got.loc["block", "cost"] == pytest.approx(0.5)
    assert got.loc["block", "full_removal_clean"] == pytest.approx(79.5)
    assert not got.loc["conv1", "removable"] and got.loc["conv1", "cost"] == pytest.approx(70.0)
    assert not got.loc["never_all", "removable"] and np.isnan(got.loc["never_all", "cost"])
    assert not got.loc["global", "removable"]
    assert not FR.removable_layers(keep, tolerance=0.4)["removable"].iloc[0]
    with pytest.raises(ValueError, match="tolerance"):
        FR.removable_layers(keep, tolerance=-1)


def _three_filters(layer, clean, adv, removed, **tags):
    return pd.concat([curve(f, clean=clean, adv=adv, removed=removed, layer=layer, **tags)
                      for f in ("h_a", "h_b", "h_c")], ignore_index=True)


def test_reference_grid_label_counts_and_sign_pattern():
    frames = []
    for d, ref_adv in (("mnist", 40.0), ("cifar10-jpeg", 40.0)):
        for e in (1, 2):
            # global: clean 80(1 − λ), adv 40(1 − λ) + 10λ: Δφ own +1/8, clean −3/16, chance +1/14 (above)
            frames.append(_three_filters("global", lambda l: 80 * (1 - l), lambda l: 40 * (1 - l) + 10 * l,
                                         lambda l: 100 * l, dataset=d, epoch=e, seed=0))
            frames.append(_three_filters("block", lambda l: 80 + 0 * l, lambda l: 40 + 0 * l, lambda l: 100 * l,
                                         dataset=d, epoch=e, seed=0))
    sweeps = pd.concat(frames, ignore_index=True)
    grid = FR.reference_grid(sweeps, chance={"mnist": 10.0, "cifar10-jpeg": 10.0}, tolerance=0.05)
    assert set(grid["reference"]) == {"own", "clean", "chance"} and set(grid["filter"]) == {"combined"}
    glob = grid[grid.layer == "global"].groupby("reference")["delta_phi"].first()
    assert glob["own"] == pytest.approx(1 / 8) and glob["clean"] == pytest.approx(-3 / 16)
    assert glob["chance"] == pytest.approx(1 / 14)
    assert grid[grid.layer == "block"]["removable"].all() and not grid[grid.layer == "global"]["removable"].any()
    counts = FR.label_counts(grid[grid.reference == "own"], by=["dataset"], columns=["phi_clean"])
    row = counts.set_index("dataset").loc["mnist"]
    # the block's φ_clean = ∫ λ = 1/2 would be "antifragile": it is counted as removable instead
    assert (row["antifragile"], row["removable"], row["fragile"], row["n"]) == (0, 2, 0, 4)
    pattern = FR.sign_pattern(grid).set_index("reference")
    assert pattern.loc["clean", "mnist_negative"] == 2 and pattern.loc["clean", "mnist_n"] == 2
    assert pattern.loc["own", "mnist_negative"] == 0 and not pattern.loc["own", "reproduces"]
    # equal |Δφ| on both data sets: CIFAR-10 is not closer to 0, so not even "clean" reproduces
    assert pattern.loc["clean", "cifar_closer"] is False or not pattern.loc["clean", "cifar_closer"]
    assert not pattern.loc["clean", "reproduces"]
    with pytest.raises(ValueError, match="no value for data sets"):
        FR.reference_grid(sweeps, chance={"mnist": 10.0})


def test_fig6_frame_averages_seeds_and_stacks_references():
    parts = [_three_filters("conv1", lambda l, s=s: 80 * (1 - l) + s, lambda l: 40 * (1 - l) + 10 * l,
                            lambda l: 100 * l, dataset="cifar10-jpeg", epoch=2, seed=s) for s in (0, 2)]
    frame = pd.concat(parts, ignore_index=True)
    long = FR.fig6_frame(frame, dataset="cifar10-jpeg", layer="conv1", references=["own", "chance"], chance=10.0)
    assert set(long["panel"]) == {"clean, own", "adversarial, own", "clean, chance", "adversarial, chance"}
    assert set(long["filter"]) == set(FR.FILTER_NAMES.values())
    # seeds 0 and 2: clean 80(1 − λ) and 80(1 − λ) + 2 over the same reference 80 → mean (80(1 − λ) + 1)/80
    own = long[(long.panel == "clean, own") & (long["filter"] == "h_a high-pass")].sort_values("lam")
    assert own["response"].tolist() == pytest.approx(((80 * (1 - LAM) + 1) / 80).tolist())
    adv = long[(long.panel == "adversarial, chance") & (long["filter"] == "h_a high-pass")].sort_values("lam")
    assert adv["response"].tolist() == pytest.approx((1 - LAM).tolist())
    with pytest.raises(ValueError, match="no rows for data set"):
        FR.fig6_frame(frame, dataset="mnist", layer="conv1")
