"""Synaptic filters (Pravin et al. 2023, Eqs. 7-9), scopes, exact removal counts, in-place
masking with bit-identical restore, and the filter sweep (dedup and activation reuse
must not change a single number)."""
import math

import pandas as pd
import pytest
import torch
from torch import nn

from paramstress import filtering as FL

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class TinyResNet(nn.Module):
    """conv-bn-relu stem, one residual block, pooling, linear head (traceable by fx)."""

    def __init__(self, c=4, classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.block = Block(c)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.block(x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def tiny(seed=0):
    torch.manual_seed(seed)
    model = TinyResNet()
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            model(torch.randn(16, 1, 6, 6))
    return model.eval()


def data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def bits(t):
    return t.detach().clone().contiguous().view(torch.int32)


def state_bits(model):
    return {k: (bits(v) if v.is_floating_point() else v.clone()) for k, v in model.state_dict().items()}


def same_state(model, saved):
    now = state_bits(model)
    return all(torch.equal(now[k], saved[k]) for k in saved)


def linear_with(weight):
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=True)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.fill_(0.5)
    return nn.Sequential(lin)


W = torch.tensor([[-1.0, -0.5, 0.0], [0.25, 0.5, 1.0]])


# ------------------------------------------------------------------ windows, by hand

def test_stress_axis_and_T_validation():
    assert FL.stress_axis(5).tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (2, 0, 2.5, "25"):
        with pytest.raises(ValueError, match="T"):
            FL.stress_axis(bad)


@pytest.mark.parametrize("filter,expected", [
    # T = 5 over [-1, 1]: λ = 0, .25, .5, .75, 1
    ("h_a", [  # zero w ≤ α, α = -1, -0.5, 0, 0.5, 1
        [[0, -0.5, 0], [0.25, 0.5, 1]],
        [[0, 0, 0], [0.25, 0.5, 1]],
        [[0, 0, 0], [0.25, 0.5, 1]],
        [[0, 0, 0], [0, 0, 1]],
        [[0, 0, 0], [0, 0, 0]],
    ]),
    ("h_b", [  # zero w ≥ α, α = 1, 0.5, 0, -0.5, -1
        [[-1, -0.5, 0], [0.25, 0.5, 0]],
        [[-1, -0.5, 0], [0.25, 0, 0]],
        [[-1, -0.5, 0], [0, 0, 0]],
        [[-1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0]],
    ]),
    ("h_c", [  # zero |w − α| ≤ δ/2 with δ = 2/5, α = -1, -0.5, 0, 0.5, 1
        [[0, -0.5, 0], [0.25, 0.5, 1]],
        [[-1, 0, 0], [0.25, 0.5, 1]],
        [[-1, -0.5, 0], [0.25, 0.5, 1]],
        [[-1, -0.5, 0], [0.25, 0, 1]],
        [[-1, -0.5, 0], [0.25, 0.5, 0]],
    ]),
])
def test_each_filter_on_a_hand_computed_tensor(filter, expected):
    model = linear_with(W)
    scope = FL.make_scope(model, "0")
    assert (scope.lo, scope.hi, scope.total, scope.nonzero) == (-1.0, 1.0, 6, 5)
    for t, want in enumerate(expected):
        win = FL.window(filter, t, 5, scope.lo, scope.hi)
        with FL.filtered(scope, win):
            assert model[0].weight.tolist() == want, (filter, t, win)
            assert model[0].bias.tolist() == [0.5, 0.5]  # biases are never filtered
        assert torch.equal(model[0].weight, W)


def test_removed_counts_exclude_weights_that_were_already_zero():
    model = linear_with(W)  # one weight is 0 already
    scope = FL.make_scope(model, "0")
    # h_a at α = 0 zeroes -1, -0.5 and the 0: only two nonzero weights are removed
    info = FL.removal(scope, FL.window("h_a", 2, 5, scope.lo, scope.hi))
    assert (info.removed, info.nonzero, info.total) == (2, 5, 6)
    assert info.fraction_removed == pytest.approx(2 / 5)
    assert info.baseline == pytest.approx(1 - 2 / 5)  # Eq. 10
    # the pulse at α = 0 covers only the zero weight: nothing removed, the unperturbed network
    info = FL.removal(scope, FL.window("h_c", 2, 5, scope.lo, scope.hi))
    assert info.removed == 0 and info.key is None and info.baseline == 1.0
    # everything removed
    info = FL.removal(scope, FL.window("h_b", 4, 5, scope.lo, scope.hi))
    assert info.removed == 5 and info.baseline == 0.0


def test_removal_count_matches_the_mask_on_random_weights():
    torch.manual_seed(3)
    w = torch.randn(7, 11)
    w[w.abs() < 0.3] = 0.0
    model = linear_with(w)
    scope = FL.make_scope(model, "0")
    for f in FL.FILTERS:
        for t in range(9):
            win = FL.window(f, t, 9, scope.lo, scope.hi)
            mask = (w >= win.lower) & (w <= win.upper)
            assert FL.removal(scope, win).removed == int((mask & (w != 0)).sum())


def test_ties_and_endpoints():
    model = linear_with(torch.tensor([[0.5, 0.5, -0.5, 1.0]]))
    scope = FL.make_scope(model, "0")
    # λ = 0 of h_a removes every weight equal to the minimum; λ = 1 removes all
    assert FL.removal(scope, FL.window("h_a", 0, 3, scope.lo, scope.hi)).removed == 1
    assert FL.removal(scope, FL.window("h_a", 2, 3, scope.lo, scope.hi)).removed == 4
    assert FL.removal(scope, FL.window("h_b", 2, 3, scope.lo, scope.hi)).removed == 4


# ------------------------------------------------------------------ scopes

def test_local_scope_uses_the_layers_own_range_and_only_conv_linear_weights():
    model = tiny()
    assert FL.filterable_layers(model) == ["conv1", "block.conv1", "block.conv2", "fc"]
    scope = FL.make_scope(model, "block.conv2")
    w = model.block.conv2.weight
    assert (scope.lo, scope.hi) == (float(w.detach().min()), float(w.detach().max()))
    assert [n for n, _ in scope.params] == ["block.conv2.weight"]
    with pytest.raises(ValueError, match="unknown layer 'bn1'"):
        FL.make_scope(model, "bn1")


def test_global_range_true_fixed_and_pair():
    model = tiny()
    every = torch.cat([model.get_parameter(f"{n}.weight").detach().reshape(-1) for n in FL.filterable_layers(model)])
    true = FL.make_scope(model, "global")
    assert (true.lo, true.hi) == (float(every.min()), float(every.max()))
    assert true.total == every.numel()
    fixed = FL.make_scope(model, "global", global_range="fixed")
    assert (fixed.lo, fixed.hi) == (-1.0, 1.0)
    assert FL.make_scope(model, "global", global_range=(-2, 3)).hi == 3.0
    for bad in ("network", (1, 1), (0, float("nan"))):
        with pytest.raises(ValueError, match="global_range"):
            FL.make_scope(model, "global", global_range=bad)


@pytest.mark.parametrize("filter", FL.FILTERS)
def test_global_filter_really_changes_every_layer(filter):
    """The official code writes back only the last layer and its global pulse removes nothing."""
    model = tiny()
    scope = FL.make_scope(model, "global")
    layers = FL.filterable_layers(model)
    before = {n: model.get_parameter(f"{n}.weight").detach().clone() for n in layers}
    T = 9
    changed = {n: False for n in layers}
    for t in range(T):
        with FL.filtered(scope, FL.window(filter, t, T, scope.lo, scope.hi)) as info:
            for n in layers:
                changed[n] |= not torch.equal(model.get_parameter(f"{n}.weight"), before[n])
            assert info.removed == sum(int(((before[n] >= FL.window(filter, t, T, scope.lo, scope.hi).lower)
                                            & (before[n] <= FL.window(filter, t, T, scope.lo, scope.hi).upper)
                                            & (before[n] != 0)).sum()) for n in layers)
    assert all(changed.values()), changed
    # at the middle threshold the pulse removes weights of several layers at once
    with FL.filtered(scope, FL.window(filter, T // 2, T, scope.lo, scope.hi)) as info:
        hit = [n for n in layers if not torch.equal(model.get_parameter(f"{n}.weight"), before[n])]
        assert info.removed > 0 and len(hit) == len(layers)


def test_all_zero_scope_and_nonfinite_weights_are_refused():
    with pytest.raises(ValueError, match="trained network"):
        FL.make_scope(linear_with(torch.zeros(2, 3)), "0")
    with pytest.raises(ValueError, match="non-finite"):
        FL.make_scope(linear_with(torch.tensor([[1.0, float("nan")]])), "0")


# ------------------------------------------------------------------ restore

def test_restore_is_bit_identical_including_negative_zero_and_on_exceptions():
    w = torch.tensor([[-0.0, 0.3, -0.7], [0.0, 1e-30, -2.0]])
    model = linear_with(w)
    saved = state_bits(model)
    scope = FL.make_scope(model, "0")
    with FL.filtered(scope, FL.window("h_a", 2, 3, scope.lo, scope.hi)):  # covers -0.0
        assert not same_state(model, saved)
    assert same_state(model, saved)
    with pytest.raises(RuntimeError, match="boom"):
        with FL.filtered(scope, FL.window("h_b", 1, 3, scope.lo, scope.hi)):
            raise RuntimeError("boom")
    assert same_state(model, saved)
    big = tiny()
    saved = state_bits(big)
    scope = FL.make_scope(big, "global")
    with pytest.raises(KeyError):
        with FL.filtered(scope, FL.window("h_c", 4, 9, scope.lo, scope.hi)):
            raise KeyError("inside")
    assert same_state(big, saved)


def test_batch_norm_and_biases_are_untouched():
    model = tiny()
    saved = state_bits(model)
    scope = FL.make_scope(model, "global")
    with FL.filtered(scope, FL.window("h_a", 8, 9, scope.lo, scope.hi)):  # everything removed
        now = state_bits(model)
        for k in saved:
            if k.endswith(".weight") and k.split(".weight")[0] in FL.filterable_layers(model):
                assert not torch.equal(now[k], saved[k])
            else:
                assert torch.equal(now[k], saved[k]), k


# ------------------------------------------------------------------ graph split

def test_graph_split_reproduces_the_model_and_shares_its_weights():
    model = tiny()
    x, _ = data()
    for layer in FL.filterable_layers(model):
        split = FL.split_at(model, [model.get_submodule(layer).weight])
        with torch.inference_mode():
            front = split.head(x)
            assert torch.equal(split.tail(*front), model(x))
        scope = FL.make_scope(model, layer)
        with FL.filtered(scope, FL.window("h_a", 3, 5, scope.lo, scope.hi)), torch.inference_mode():
            assert torch.equal(split.tail(*split.head(x)), model(x))
    # inside the block, the frontier holds the block's input (the skip) and conv2's input
    split = FL.split_at(model, [model.block.conv2.weight])
    assert len(split.frontier_names) == 2
    assert FL.split_at(model, [model.fc.weight]).frontier_names == ["flatten"]


# ------------------------------------------------------------------ the sweep

def sweep(model, **kw):
    x, y = data()
    args = dict(scopes=["conv1", "block.conv2", "fc", "global"], T=5, eps=0.3, batch_size=16,
                tags={"model": "tiny", "epoch": 1})
    args.update(kw)
    return FL.filter_sweep(model, x, y, **args)


def test_sweep_rows_restore_and_flags():
    model = tiny()
    model.train()
    model.fc.weight.requires_grad_(False)
    saved = state_bits(model)
    table = sweep(model)
    assert same_state(model, saved)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.conv1.weight.requires_grad
    assert len(table) == 4 * 3 * 5
    assert list(table.columns[:5]) == ["model", "epoch", "layer", "filter", "t"]
    full = table[(table.t == 4) & (table["filter"] != "h_c")]
    assert (full["removed"] == full["nonzero"]).all() and (full["baseline"] == 0).all()
    # the filtered weights of the last threshold leave the network's output constant for
    # the fc layer: every input gets the class of the bias
    assert table["clean_reference"].nunique() == 1 and table["adv_reference"].nunique() == 1
    assert table.attrs["stats"]["split_layers"] == 3 and table.attrs["stats"]["full_layers"] == 1


def test_dedup_and_activation_reuse_change_no_number():
    model = tiny()
    fast = sweep(model)
    slow = sweep(model, dedup=False, reuse_activations=False)
    pd.testing.assert_frame_equal(fast, slow)
    assert fast.attrs["stats"]["evaluations"] < slow.attrs["stats"]["evaluations"]
    regen_fast = sweep(model, adversarial="regenerate", scopes=["block.conv1", "global"])
    regen_slow = sweep(model, adversarial="regenerate", scopes=["block.conv1", "global"], dedup=False,
                       reuse_activations=False)
    pd.testing.assert_frame_equal(regen_fast, regen_slow)


def test_regenerate_attacks_through_the_kept_head_exactly():
    """Regenerate mode on local scopes: the clean score and FGSM come from one gradient pass of
    the tail over the kept head graph, in several batches; every number equals the whole-model
    path (full passes, fgsm on the whole network), and the model is restored."""
    model = tiny()
    model.train()
    saved = state_bits(model)
    scopes = ["conv1", "block.conv1", "block.conv2", "fc"]
    fast = sweep(model, adversarial="regenerate", scopes=scopes, batch_size=7)
    slow = sweep(model, adversarial="regenerate", scopes=scopes, batch_size=7, dedup=False, reuse_activations=False)
    assert fast.attrs["stats"]["attack_split_layers"] == 4 and slow.attrs["stats"]["attack_split_layers"] == 0
    pd.testing.assert_frame_equal(fast, slow)
    assert same_state(model, saved) and model.training
    assert all(p.requires_grad for p in model.parameters())
    fixed = sweep(model, scopes=scopes)  # other modes keep the inference head
    assert fixed.attrs["stats"]["attack_split_layers"] == 0 and fixed.attrs["stats"]["split_layers"] == 4


def test_fixed_and_regenerated_adversarial_sets_differ_only_in_adv_accuracy():
    model = tiny()
    fixed = sweep(model, scopes=["block.conv1"])
    regen = sweep(model, scopes=["block.conv1"], adversarial="regenerate")
    assert (fixed["adversarial"] == "fixed").all() and (regen["adversarial"] == "regenerate").all()
    pd.testing.assert_series_equal(fixed["clean_accuracy"], regen["clean_accuracy"])
    assert fixed["adv_reference"].iloc[0] == regen["adv_reference"].iloc[0]  # same unfiltered attack
    assert not fixed["adv_accuracy"].equals(regen["adv_accuracy"])


def test_clean_only_sweep_has_no_adversarial_columns_filled():
    table = sweep(tiny(), eps=None, scopes=["fc"])
    assert table["adv_accuracy"].isna().all() and (table["adversarial"] == "none").all()


def test_sweep_csv_resumes_to_the_same_frame(tmp_path):
    model = tiny()
    path = tmp_path / "f.csv"
    whole = sweep(model, csv_path=path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:20]) + lines[20][:7])  # interrupted mid-line
    resumed = sweep(model, csv_path=path)
    assert resumed.attrs["stats"]["evaluations"] < whole.attrs["stats"]["evaluations"]
    pd.testing.assert_frame_equal(resumed, whole, check_dtype=False)


@pytest.mark.parametrize("kw,match", [
    (dict(scopes=["bn1"]), "unknown scopes"),
    (dict(T=2), "T must be >= 3"),
    (dict(filters=["h_d"]), "unknown filter"),
    (dict(eps=-0.1), "eps must be"),
    (dict(adversarial="both"), "adversarial must be"),
    (dict(global_range="wide"), "global_range"),
    (dict(tags={"layer": 1}), "clash"),
    (dict(batch_size=0), "batch_size"),
])
def test_bad_arguments_fail_before_compute(kw, match):
    with pytest.raises(ValueError, match=match):
        sweep(tiny(), **kw)


def test_uint8_images_need_a_transform():
    x = torch.randint(0, 256, (8, 1, 6, 6), dtype=torch.uint8)
    y = torch.zeros(8, dtype=torch.int64)
    with pytest.raises(ValueError, match="transform"):
        FL.filter_sweep(tiny(), x, y, T=3)
    table = FL.filter_sweep(tiny(), x, y, T=3, scopes=["fc"], transform=lambda b: b.float() / 255, eps=None)
    assert len(table) == 9


def test_window_bounds_are_rounded_once_and_reported():
    win = FL.window("h_c", 1, 7, -0.3, 0.7)
    assert win.alpha == float(torch.tensor(-0.3 + 1 / 6, dtype=torch.float64).float())
    assert math.isclose(win.upper - win.lower, 1 / 7, rel_tol=1e-6)


def test_mode_cost_counts_the_fgsm_sets_and_leaves_the_model_as_it_was():
    model = tiny()
    saved = state_bits(model)
    x, y = data()
    cost = FL.mode_cost(model, x, y, scopes=["block.conv1"], eps=0.3, T=5, batch_size=16)
    assert same_state(model, saved)
    assert list(cost["adversarial"]) == ["fixed", "regenerate"]
    fixed, regen = cost.set_index("adversarial").loc["fixed"], cost.set_index("adversarial").loc["regenerate"]
    # the same filtered networks are evaluated in both modes; regenerating crafts one set per
    # evaluated network plus the unfiltered network's, the fixed mode one in all
    assert fixed["points"] == regen["points"] == 15 and fixed["evaluations"] == regen["evaluations"]
    assert fixed["fgsm_sets"] == 1 and regen["fgsm_sets"] == regen["evaluations"] + 1
    assert fixed["relative"] == 1.0 and (cost["seconds"] > 0).all()
    with pytest.raises(ValueError, match="eps must be a positive"):
        FL.mode_cost(model, x, y, scopes=["block.conv1"], eps=0.0)


def test_a_sweep_holds_conv_weights_channels_last_and_gives_them_back_as_they_were():
    model = tiny()
    x, y = data()
    saved = state_bits(model)
    convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[-1] > 1]  # layouts that differ
    assert convs and all(p.is_contiguous() for p in convs)
    seen = []
    with FL.channels_last_on_cpu(model):
        seen = [p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs]
        with pytest.raises(RuntimeError, match="boom"):
            with FL.channels_last_on_cpu(model):  # nested: already moved, left alone, nothing raised twice
                raise RuntimeError("boom")
    assert all(seen)
    assert all(p.is_contiguous() for p in convs) and same_state(model, saved)
    # the same sweep on a model held contiguous (the layout the context gives back) and on one
    # that starts channels-last (left in that layout afterwards): the same numbers
    table = FL.filter_sweep(model, x, y, T=4, eps=0.2, adversarial="regenerate", batch_size=16)
    assert all(p.is_contiguous() for p in convs) and same_state(model, saved)
    other = tiny().to(memory_format=torch.channels_last)
    again = FL.filter_sweep(other, x, y, T=4, eps=0.2, adversarial="regenerate", batch_size=16)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in other.parameters() if p.dim() == 4)
    cols = ["clean_accuracy", "adv_accuracy", "removed"]
    assert (table[cols].to_numpy() == again[cols].to_numpy()).all()
