"""Selective backpropagation (Pravin et al. 2023, §5): the fragile layers are exactly the
negative-Δφ ones, the driver freezes exactly those (bit-identical across the segment,
everything else moves), the control is the same chain with nothing frozen, bad input
fails before training. Tiny synthetic data and small_cnn on the CPU."""
from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from paramstress import filtering as FL
from paramstress import fragility as FR
from paramstress import selective as S
from paramstress.filtering import adversarial as A
from paramstress import training
from paramstress.data import ImageData
from paramstress.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

SIZE, CLASSES = 12, 4


def make_data(n_train: int = 192, n_test: int = 96, seed: int = 0) -> ImageData:
    """Noisy 1×12×12 images; class k brightens the k-th band of 3 rows."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, CLASSES, (n,), generator=g)
        x = torch.randint(0, 140, (n, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
        for k in range(CLASSES):
            x[y == k, :, 3 * k:3 * k + 3, :] += 60
        return x, y

    tx, ty = split(n_train)
    vx, vy = split(n_test)
    return ImageData(name="synthetic-selective", train_x=tx, train_y=ty, test_x=vx, test_y=vy,
                     classes=[str(k) for k in range(CLASSES)], mean=(0.35,), std=(0.25,))


@pytest.fixture(scope="module")
def data() -> ImageData:
    return make_data()


def parent_config(**overrides) -> TrainConfig:
    # Adam with L2 weight decay: a zeroed gradient alone would still move a "frozen" weight
    values = dict(model="small_cnn", optimizer="adam", lr=1e-2, schedule="constant", weight_decay=0.1,
                  batch_size=32, epochs=1, keep_epochs=(1,), augment=False, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


class FakeScorer:
    """Returns fixed Δφ per epoch and records the weights of every model it was given."""

    def __init__(self, by_epoch):
        self.by_epoch = by_epoch
        self.seen: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, model, epoch):
        assert not model.training
        self.seen[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return self.by_epoch[epoch]


def params_of(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


# ----------------------------------------------------------------------------- marking
def test_fragile_layers_are_exactly_the_negative_scores():
    scores = {"a": -0.2, "b": 0.0, "c": 0.3, "d": -1e-4, "e": -0.0}
    assert S.fragile_layers(scores) == ("a", "d")
    assert S.fragile_layers(scores, tolerance=1e-3) == ("a",)
    assert S.fragile_layers({"x": 0.1}) == ()
    with pytest.raises(ValueError, match="finite"):
        S.fragile_layers({"a": math.nan})
    with pytest.raises(ValueError, match="tolerance"):
        S.fragile_layers(scores, tolerance=-0.1)


# ----------------------------------------------------------------------------- the driver
def test_driver_freezes_exactly_the_marked_layers(data: ImageData, tmp_path: Path):
    # small_cnn's conv/linear layers are "0", "4" and "9"; batch-norms "1" and "5" always train
    scorer = FakeScorer({1: {"0": -0.5, "4": 0.1, "9": 0.2},
                         2: {"0": 0.1, "4": 0.3, "9": -0.2},
                         3: {"0": 0.0, "4": 0.0, "9": 0.0}})
    result = S.selective_backprop(data, parent_config(), (1, 2, 3), scorer, checkpoint_dir=tmp_path, device="cpu")
    assert [s.fragile for s in result.stages] == [("0",), ("9",), ()]
    assert result.configs["selective"][2].frozen == ("0",) and result.configs["selective"][3].frozen == ("9",)
    assert result.configs["control"][2].frozen == () and result.configs["control"][3].frozen == ()
    assert result.layers == ("0", "4", "9")

    sel = {e: params_of(result.model("selective", e)) for e in (1, 2, 3)}
    ctl = {e: params_of(result.model("control", e)) for e in (1, 2, 3)}
    for a, b, frozen in ((1, 2, "0"), (2, 3, "9")):
        for name in sel[a]:
            if name.split(".")[0] == frozen:
                assert torch.equal(sel[b][name], sel[a][name]), f"frozen {name} moved from epoch {a} to {b}"
            else:
                assert not torch.equal(sel[b][name], sel[a][name]), f"{name} did not train from epoch {a} to {b}"
            assert not torch.equal(ctl[b][name], ctl[a][name]), f"control {name} did not train"
    # both chains start from the parent, and the scorer saw the selective chain's models
    assert all(torch.equal(sel[1][k], ctl[1][k]) for k in sel[1])
    for e in (1, 2, 3):
        state = result.model("selective", e).state_dict()
        assert all(torch.equal(scorer.seen[e][k], state[k]) for k in state)
    choices = result.choices()
    assert choices[choices.fragile][["epoch", "layer"]].values.tolist() == [[1, "0"], [2, "9"]]
    summary = result.summary()
    assert set(summary.arm) == {"selective", "control"}
    assert summary.set_index(["arm", "epoch"]).loc[("selective", 2), "frozen_layers"] == 1


def test_nothing_fragile_makes_selective_the_control(data: ImageData, tmp_path: Path):
    """Same seeds, data order and optimizer resets: with no frozen layer the two arms are one run."""
    scorer = FakeScorer({1: {"0": 0.1, "4": 0.0, "9": 0.2}})
    result = S.selective_backprop(data, parent_config(), (1, 2), scorer, checkpoint_dir=tmp_path, device="cpu",
                                  score_last=False)
    assert result.config_hash("selective", 2) == result.config_hash("control", 2)
    a, b = result.model("selective", 2).state_dict(), result.model("control", 2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(result.stages) == 1 and 2 not in scorer.seen  # score_last=False: the last model is not scored


def test_tolerance_and_the_regular_arm(data: ImageData, tmp_path: Path):
    scorer = FakeScorer({1: {"0": -0.05, "4": -0.5, "9": 0.2}, 2: {"0": 0.0, "4": 0.0, "9": 0.0}})
    cfg = parent_config(epochs=2, keep_epochs=(1, 2))
    result = S.selective_backprop(data, cfg, (1, 2), scorer, tolerance=0.1, checkpoint_dir=tmp_path, device="cpu")
    assert result.stages[0].fragile == ("4",)
    assert result.arms() == ["selective", "control", "regular"]
    # the uninterrupted parent (no optimizer reset at epoch 1) differs from the control chain
    reg, ctl = result.model("regular", 2).state_dict(), result.model("control", 2).state_dict()
    assert not all(torch.equal(reg[k], ctl[k]) for k in reg)


def test_bad_input_fails_before_training(data: ImageData, tmp_path: Path):
    never = FakeScorer({})
    cases = [
        (parent_config(keep_epochs=()), (1, 2), "keep a snapshot"),
        (parent_config(), (1,), "at least two"),
        (parent_config(epochs=2, keep_epochs=(1, 2)), (2, 1), "increasing"),
        (parent_config(frozen=("0",)), (1, 2), "regular run"),
    ]
    for cfg, epochs, match in cases:
        with pytest.raises(ValueError, match=match):
            S.selective_backprop(data, cfg, epochs, never, checkpoint_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="tolerance"):
        S.selective_backprop(data, parent_config(), (1, 2), never, tolerance=-1.0, checkpoint_dir=tmp_path)
    assert os.listdir(tmp_path) == [] and never.seen == {}


def test_scorer_must_score_every_layer(data: ImageData, tmp_path: Path):
    with pytest.raises(ValueError, match="every conv/linear layer"):
        S.selective_backprop(data, parent_config(), (1, 2), FakeScorer({1: {"0": -1.0, "4": 0.0}}),
                             checkpoint_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="every conv/linear layer"):
        S.selective_backprop(data, parent_config(), (1, 2),
                             FakeScorer({1: {"0": -1.0, "4": 0.0, "9": 0.0, "fc": 0.0}}),
                             checkpoint_dir=tmp_path, device="cpu")
    with pytest.raises(ValueError, match="finite"):
        S.selective_backprop(data, parent_config(), (1, 2), FakeScorer({1: {"0": math.nan, "4": 0.0, "9": 0.0}}),
                             checkpoint_dir=tmp_path, device="cpu")


# ----------------------------------------------------------------------------- the paper's scorer
def test_delta_phi_scorer_is_the_combined_delta_phi(data: ImageData, tmp_path: Path):
    model = training.train(None, data, parent_config(keep_epochs=()), device="cpu", progress=False).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scorer = S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.2, T=3, transform=data.normalize, batch_size=64,
                              tags={"dataset": "synthetic"}, csv_path=tmp_path / "sweep.csv")
    scores = scorer(model, 1)
    assert list(scores) == FL.filterable_layers(model)
    frame = FL.filter_sweep(model, data.test_x, data.test_y, scopes=list(scores), T=3, eps=0.2,
                            transform=data.normalize, batch_size=64)
    expected = FR.scores(frame).query("filter == 'combined'").set_index("layer")["delta_phi"]
    assert scores == pytest.approx(expected.to_dict(), abs=1e-12)
    table = scorer.scores()
    assert set(table["filter"]) == {"h_a", "h_b", "h_c", "combined"}
    assert (table["epoch"] == 1).all() and (table["dataset"] == "synthetic").all()
    assert len(pd.read_csv(tmp_path / "sweep.csv")) == 3 * 3 * 3  # layers × filters × T
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_delta_phi_scorer_cache_reuses_the_sweep_of_the_same_weights(data: ImageData, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    model = training.train(None, data, parent_config(keep_epochs=()), device="cpu", progress=False).model
    make = lambda: S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.2, T=3, transform=data.normalize,  # noqa: E731
                                    batch_size=64, tags={"dataset": "synthetic"}, cache=True)
    first, second = make(), make()
    a = first(model, 1)
    b = second(model, 1)
    assert a == b
    assert first.sweeps[0].attrs["stats"]["evaluations"] > 0
    assert second.sweeps[0].attrs["stats"]["evaluations"] == 0  # read from the cache
    with torch.no_grad():
        model.get_parameter("9.weight").mul_(0.5)  # other weights: another key, computed anew
    third = make()
    third(model, 1)
    assert third.sweeps[0].attrs["stats"]["evaluations"] > 0
    with pytest.raises(ValueError, match="not both"):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.2, transform=data.normalize, csv_path=tmp_path / "x.csv",
                         cache=True)


def test_delta_phi_scorer_checks_its_settings(data: ImageData):
    with pytest.raises(ValueError, match="positive FGSM"):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.0)
    with pytest.raises(ValueError, match="three filters"):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.1, filters=("h_a",))
    with pytest.raises(ValueError, match="T must be"):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.1, T=2)
    with pytest.raises(ValueError, match="epoch"):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.1, tags={"epoch": 3})
    with pytest.raises(ValueError, match="needs chance="):
        S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.1, reference="chance")


def test_delta_phi_scorer_chance_reference_and_regenerated_examples(data: ImageData):
    model = training.train(None, data, parent_config(keep_epochs=()), device="cpu", progress=False).model
    chance = 100.0 / data.num_classes
    scorer = S.DeltaPhiScorer(data.test_x, data.test_y, eps=0.2, T=3, transform=data.normalize, batch_size=64,
                              adversarial="regenerate", reference="chance", chance=chance)
    scores = scorer(model, 1)
    frame = FL.filter_sweep(model, data.test_x, data.test_y, scopes=list(scores), T=3, eps=0.2,
                            adversarial="regenerate", transform=data.normalize, batch_size=64)
    expected = FR.scores(frame, reference="chance", chance=chance).query("filter == 'combined'")
    assert scores == pytest.approx(expected.set_index("layer")["delta_phi"].to_dict(), abs=1e-12, nan_ok=True)
    own = FR.scores(frame).query("filter == 'combined'").set_index("layer")["delta_phi"].to_dict()
    assert scores != pytest.approx(own, abs=1e-12, nan_ok=True)


# ----------------------------------------------------------------------------- Fig. 12 curves
def test_fgsm_curve_and_grid(data: ImageData):
    assert S.eps_grid(0.3, 4) == pytest.approx([0.0, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="eps_max"):
        S.eps_grid(0.0, 4)
    with pytest.raises(ValueError, match="points"):
        S.eps_grid(0.3, 1)
    model = training.train(None, data, parent_config(keep_epochs=()), device="cpu", progress=False).model
    x = data.normalize(data.test_x)
    curve = S.fgsm_curve(model, x, data.test_y, [0.0, 0.5, 2.0], batch_size=50)
    clean = 100.0 * training.evaluate_accuracy(model, data.test_x, data.test_y, data.normalize)
    assert curve["eps"].tolist() == [0.0, 0.5, 2.0]
    assert curve["accuracy"].iloc[0] == pytest.approx(clean)
    assert curve["accuracy"].iloc[-1] < curve["accuracy"].iloc[0]  # FGSM at a large ε hurts
    with pytest.raises(ValueError, match="eps"):
        S.fgsm_curve(model, x, data.test_y, [-0.1])
    # one gradient for the whole curve: each point equals its own attack
    for e, acc in zip(curve["eps"], curve["accuracy"]):
        assert acc == A.adversarial_accuracy(model, x, data.test_y, e, batch_size=50)
        xa = A.fgsm(model, x, data.test_y, e, batch_size=50)
        assert torch.equal(xa, x + e * A.gradient_sign(model, x, data.test_y, batch_size=50))
    calls = []
    real = A.gradient_sign
    try:
        A.gradient_sign = lambda *a, **k: calls.append(1) or real(*a, **k)
        S.fgsm_curve(model, x, data.test_y, [0.0, 0.5, 1.0, 2.0], batch_size=50)
    finally:
        A.gradient_sign = real
    assert len(calls) == 1


# ----------------------------------------------------------------------------- the seeds' rule
def test_fragile_by_seeds_is_a_one_sided_t_test_by_hand():
    scores = {0: {"a": -0.3, "b": -0.05, "c": 0.1, "d": -0.1},
              1: {"a": -0.2, "b": 0.01, "c": 0.1, "d": -0.1},
              2: {"a": -0.1, "b": -0.02, "c": 0.1, "d": -0.1}}
    fragile, table = S.fragile_by_seeds(scores, alpha=0.05)
    assert fragile == ("a", "d")
    t = table.set_index("layer")
    # a: mean -0.2, sd 0.1, t = -0.2 / (0.1 / √3) = -3.4641; with 2 degrees of freedom
    # F(t) = 1/2 + t / (2 √(2 + t²)) = 0.5 - 3.4641 / (2 √14) = 0.037090
    assert t.loc["a", "mean"] == pytest.approx(-0.2) and t.loc["a", "sd"] == pytest.approx(0.1)
    assert t.loc["a", "t"] == pytest.approx(-3.464102, abs=1e-6)
    assert t.loc["a", "p_value"] == pytest.approx(0.5 - 3.464102 / (2 * math.sqrt(14)), abs=1e-6)
    # upper bound: mean + t_{0.95, 2} sd / √3 = -0.2 + 2.919986 · 0.1 / 1.732051 = -0.031414
    assert t.loc["a", "upper"] == pytest.approx(-0.031414, abs=1e-6)
    # b: two of three seeds negative (tolerance 0 freezes it in two seeds); mean -0.02, sd 0.03,
    # t = -1.154701, p = 0.5 - 1.154701 / (2 √(2 + 4/3)) = 0.183772: not fragile
    assert t.loc["b", "p_value"] == pytest.approx(0.5 - 1.154701 / (2 * math.sqrt(2 + 4 / 3)), abs=1e-6)
    assert not t.loc["b", "fragile"] and t.loc["b", "upper"] > 0
    assert [S.fragile_layers(s) for s in scores.values()] == [("a", "b", "d"), ("a", "d"), ("a", "b", "d")]
    # equal values in every seed (sd = 0): negative is fragile, positive is not
    assert t.loc["d", "p_value"] == 0.0 and t.loc["c", "p_value"] == 1.0
    # a stricter level keeps a (p 0.037) unfrozen
    assert S.fragile_by_seeds(scores, alpha=0.01)[0] == ("d",)


def test_fragile_by_seeds_rejects_bad_input():
    two = {0: {"a": -1.0}, 1: {"a": -1.0}}
    with pytest.raises(ValueError, match="at least 3 seeds.*freeze_rule='tolerance'"):
        S.fragile_by_seeds(two)
    with pytest.raises(ValueError, match="same conv/linear layers"):
        S.fragile_by_seeds({**two, 2: {"b": -1.0}})
    with pytest.raises(ValueError, match="finite"):
        S.fragile_by_seeds({**two, 2: {"a": math.nan}})
    with pytest.raises(ValueError, match="alpha"):
        S.fragile_by_seeds({**two, 2: {"a": -1.0}}, alpha=0.0)


def test_seeds_rule_freezes_one_set_in_every_seed(data: ImageData, tmp_path: Path):
    by_seed = {0: {"0": -0.5, "4": -0.01, "9": 0.2}, 1: {"0": -0.4, "4": 0.02, "9": 0.1},
               2: {"0": -0.6, "4": -0.03, "9": 0.3}}
    cfgs = {s: parent_config(seed=s) for s in by_seed}
    scorers = {s: FakeScorer({1: by_seed[s]}) for s in by_seed}
    results = S.selective_backprop_seeds(data, cfgs, (1, 2), scorers, freeze_rule="seeds", alpha=0.05,
                                         checkpoint_dir=tmp_path, device="cpu", score_last=False)
    assert set(results) == {0, 1, 2}
    for seed, result in results.items():
        assert result.stages[0].fragile == ("0",)  # "4" is negative in two seeds, within their noise
        assert result.configs["selective"][2].frozen == ("0",) and result.freeze_rule == "seeds"
        assert result.stages[0].scores == by_seed[seed]
        choices = result.choices()
        assert choices.set_index("layer").loc["0", "p_value"] < 0.05
        assert choices.set_index("layer").loc["4", "mean_delta_phi"] == pytest.approx(-0.02 / 3)
    # the per-seed rule with tolerance 0 freezes "4" in seeds 0 and 2 (same cached parents)
    scorers = {s: FakeScorer({1: by_seed[s]}) for s in by_seed}
    per_seed = S.selective_backprop_seeds(data, cfgs, (1, 2), scorers, freeze_rule="tolerance",
                                          checkpoint_dir=tmp_path, device="cpu", score_last=False)
    assert [per_seed[s].stages[0].fragile for s in (0, 1, 2)] == [("0", "4"), ("0",), ("0", "4")]
    assert per_seed[0].stages[0].test is None and "p_value" not in per_seed[0].choices()


def test_seeds_rule_fails_before_training(data: ImageData, tmp_path: Path):
    never = {s: FakeScorer({}) for s in (0, 1)}
    cfgs = {s: parent_config(seed=s) for s in (0, 1)}
    with pytest.raises(ValueError, match="at least 3 seeds"):
        S.selective_backprop_seeds(data, cfgs, (1, 2), never, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="freeze_rule must be one of"):
        S.selective_backprop_seeds(data, cfgs, (1, 2), never, freeze_rule="t-test", checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="same seeds"):
        S.selective_backprop_seeds(data, cfgs, (1, 2), {0: never[0]}, freeze_rule="tolerance",
                                   checkpoint_dir=tmp_path)
    assert os.listdir(tmp_path) == [] and all(s.seen == {} for s in never.values())


# ----------------------------------------------------------------------------- Fig. 12's verdict
def test_paired_difference_by_hand():
    r = S.paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    # d = 1, 2, 3: mean 2, sd 1, t = 2 √3 = 3.464102, two-sided p = 2 (0.5 - 3.464102 / (2 √14)) = 0.074180
    assert (r.n, r.mean, r.sd) == (3, pytest.approx(2.0), pytest.approx(1.0))
    assert r.t == pytest.approx(3.464102, abs=1e-6)
    assert r.p_value == pytest.approx(2 * (0.5 - 3.464102 / (2 * math.sqrt(14))), abs=1e-6)
    # interval: 2 ± t_{0.975, 2} / √3 = 2 ± 4.302653 / 1.732051 = 2 ± 2.484138
    assert (r.ci_low, r.ci_high) == (pytest.approx(-0.484138, abs=1e-6), pytest.approx(4.484138, abs=1e-6))
    assert r.direction() == "includes 0"
    assert S.paired_difference([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]).direction() == "above"
    assert S.paired_difference([0.0, 0.1, 0.0], [1.0, 1.0, 1.2]).direction() == "below"
    with pytest.raises(ValueError, match="at least 2 pairs"):
        S.paired_difference([1.0], [0.0])
    with pytest.raises(ValueError, match="equally long"):
        S.paired_difference([1.0, 2.0], [0.0])


def _fig12(sel_at, ctl_at, sel_clean=(90.0, 90.0, 90.0), ctl_clean=(90.0, 90.0, 90.0)):
    rows = []
    for seed in range(3):
        for arm, clean, at in (("selective", sel_clean[seed], sel_at[seed]), ("control", ctl_clean[seed], ctl_at[seed])):
            for epoch in (1, 2):
                c, a = (80.0, 40.0) if epoch == 1 else (clean, at)
                rows += [{"dataset": "mnist", "seed": seed, "arm": arm, "epoch": epoch, "eps": 0.0,
                          "eps_fraction": 0.0, "accuracy": c},
                         {"dataset": "mnist", "seed": seed, "arm": arm, "epoch": epoch, "eps": 0.3,
                          "eps_fraction": 1.0, "accuracy": a}]
    return pd.DataFrame(rows)


def test_fig12_verdicts_state_the_paired_test():
    choices = pd.DataFrame([{"dataset": "mnist", "seed": s, "epoch": 1, "next_epoch": 2, "layer": layer,
                             "fragile": layer == "0"} for s in range(3) for layer in ("0", "4", "9")])
    text, table = S.fig12_verdicts(_fig12([31.0, 32.0, 33.0], [30.0, 30.0, 30.0]), choices, {"mnist": 0.3}, [1, 2],
                                   names={"mnist": "MNIST"})
    row = table.iloc[0]
    assert row["gain"] == pytest.approx(2.0) and row["gain_low"] == pytest.approx(-0.484138, abs=1e-6)
    assert row["verdict"] == "includes 0" and row["seeds"] == 3 and row["frozen"] == 1.0 and row["layers"] == 3
    assert "selective − regular: +2.0 points, 95 % interval [-0.5, +4.5], paired t-test over 3 seeds, p = 0.074" in text
    assert "within the seeds' noise" in text and "1.0 of 3 layers frozen" in text
    _, table = S.fig12_verdicts(_fig12([29.0, 29.5, 29.0], [30.0, 31.0, 31.0]), choices, {"mnist": 0.3}, [1, 2])
    assert table.iloc[0]["verdict"] == "below"
    text, table = S.fig12_verdicts(_fig12([32.0, 32.1, 32.0], [30.0, 30.0, 30.0], sel_clean=(93.0, 93.0, 93.0)),
                                   choices, {"mnist": 0.3}, [1, 2])
    assert table.iloc[0]["verdict"] == "above" and "not specific to the attack" in text
    with pytest.raises(ValueError, match="eps has no ε"):
        S.fig12_verdicts(_fig12([31.0] * 3, [30.0] * 3), choices, {}, [1, 2])


def test_first_last_summary_counts_by_hand():
    import pandas as pd
    rows = []
    for seed, frozen in ((0, {"conv1", "fc"}), (1, {"conv1"})):
        for layer in ("conv1", "mid", "fc"):
            rows.append({"dataset": "mnist", "seed": seed, "epoch": 2, "layer": layer, "fragile": layer in frozen})
    text = S.first_last_summary(pd.DataFrame(rows), ["conv1", "mid", "fc"])
    assert text == ("Over the 2 scorings of this run, the first convolution (`conv1`) is fragile in 2 and the last "
                    "linear layer (`fc`) in 1; on average 1.5 of 3 layers are frozen per segment.")
    with pytest.raises(ValueError, match="lacks"):
        S.first_last_summary(pd.DataFrame(rows).drop(columns="seed"), ["conv1"])


def test_the_chains_on_two_ray_workers_equal_the_serial_chains(data: ImageData, tmp_path: Path):
    """Parents and every stage's selective and control segments as jobs on a local 2-CPU Ray
    instance (the data rebuilt by the workers): the same frozen sets and the same weights."""
    import functools

    by_seed = {0: {"0": -0.5, "4": -0.01, "9": 0.2}, 1: {"0": -0.4, "4": 0.02, "9": 0.1},
               2: {"0": -0.6, "4": -0.03, "9": 0.3}}
    cfgs = {s: parent_config(seed=s) for s in by_seed}
    runs = {}
    for where, extra in (("serial", {}), ("ray", dict(workers=2, threads=1, rebuild=functools.partial(make_data)))):
        scorers = {s: FakeScorer({1: by_seed[s]}) for s in by_seed}
        runs[where] = S.selective_backprop_seeds(data, cfgs, (1, 2), scorers, freeze_rule="seeds", alpha=0.05,
                                                 checkpoint_dir=tmp_path / where, device="cpu", score_last=False,
                                                 **extra)
    for seed in by_seed:
        a, b = runs["serial"][seed], runs["ray"][seed]
        assert a.stages[0].fragile == b.stages[0].fragile == ("0",)
        for arm in ("selective", "control"):
            wa, wb = a.runs[arm][2].model.state_dict(), b.runs[arm][2].model.state_dict()
            assert all(torch.equal(wa[k], wb[k]) for k in wa)
            assert not b.runs[arm][2].from_cache  # trained in a worker, not here
