"""Stutz et al.'s flatness measures (paramstress.flatness): which layers are perturbed,
the layer-relative spheres and balls, the averages and the ascent, exact restoration,
and validation before compute."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paramstress import corruption as C
from paramstress import flatness as FL
from paramstress import models

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def trained_model_and_data(steps: int = 60):
    """A tiny small_cnn fitted for a few steps on separable synthetic images (eval mode)."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (96,), generator=g)
    x = torch.randn(96, 1, 8, 8, generator=g) * 0.3
    for k in range(3):
        x[y == k, :, k * 2:(k + 1) * 2, :] += 1.5
    model = models.build_model("small_cnn", 3, 1, 8, seed=0, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), x, y


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(model, saved):
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_normalisation_layers_are_excluded() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.LayerNorm(2), nn.Linear(2, 2))
    names = [name for name, _ in FL.flatness_parameters(model)]
    assert names == ["0.weight", "0.bias", "4.weight", "4.bias"]


def test_relative_sphere_and_ball_have_layer_relative_norms() -> None:
    model, _, _ = trained_model_and_data(steps=1)
    named = FL.flatness_parameters(model)
    nu = FL.relative_sphere(named, 0.5, torch.Generator().manual_seed(1))
    ball = FL.relative_ball(named, 0.5, torch.Generator().manual_seed(1))
    offset = 0
    for _, prm in named:
        d = prm.numel()
        w = prm.detach().double().norm().item()
        assert nu[offset:offset + d].norm().item() == pytest.approx(0.5 * w, rel=1e-12)
        assert ball[offset:offset + d].norm().item() <= 0.5 * w * (1 + 1e-12)
        offset += d
    assert offset == nu.numel() == ball.numel()


def test_projection_scales_down_only_the_layers_outside_the_ball() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))  # norm 5
        model[0].bias.copy_(torch.tensor([1.0, 0.0]))  # norm 1
    named = FL.flatness_parameters(model)
    nu = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.05, 0.0], dtype=torch.float64)
    out = FL.project_relative(nu, named, 0.1)
    torch.testing.assert_close(out[:4], torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out[4:], nu[4:])


def test_average_case_is_the_mean_loss_increase_over_the_same_draws() -> None:
    model, x, y = trained_model_and_data()
    saved = snapshot(model)
    out = FL.average_case_flatness(model, x, y, xi=0.3, samples=4, seed=7)
    assert_same(model, saved)
    # recompute by hand with the same draws
    named = FL.flatness_parameters(model)
    gen = torch.Generator().manual_seed(7)
    base = F.cross_entropy(model(x), y).item()
    losses = []
    for _ in range(4):
        nu = FL.relative_sphere(named, 0.3, gen)
        with torch.no_grad(), C.corrupted(named, nu):
            losses.append(F.cross_entropy(model(x), y).item())
    assert out["loss"] == pytest.approx(base, rel=1e-6)
    assert out["perturbed_losses"] == pytest.approx(losses, rel=1e-6)
    assert out["flatness"] == pytest.approx(sum(losses) / 4 - base, rel=1e-5)
    assert out["flatness"] > 0  # a fitted model sits in a basin
    assert_same(model, saved)


def test_average_case_grows_with_the_radius() -> None:
    model, x, y = trained_model_and_data()
    small = FL.average_case_flatness(model, x, y, xi=0.05, samples=3)["flatness"]
    large = FL.average_case_flatness(model, x, y, xi=0.5, samples=3)["flatness"]
    assert large > small


def test_worst_case_ascends_and_reports_the_largest_loss() -> None:
    model, x, y = trained_model_and_data()
    saved = snapshot(model)
    out = FL.worst_case_flatness(model, x, y, xi=0.05, steps=5, lr=0.02, seed=3)
    assert_same(model, saved)
    assert len(out["trajectory"]) == 6
    assert out["trajectory"][-1] > out["trajectory"][0]  # ascent, not descent
    assert out["worst_loss"] == max(out["trajectory"])
    assert out["flatness"] == pytest.approx(out["worst_loss"] - out["loss"])
    # with no steps it is the loss at the random start inside the ball
    start = FL.worst_case_flatness(model, x, y, xi=0.05, steps=0, seed=3)
    named = FL.flatness_parameters(model)
    nu = FL.relative_ball(named, 0.05, torch.Generator().manual_seed(3))
    with torch.no_grad(), C.corrupted(named, nu):
        expected = F.cross_entropy(model(x), y).item()
    assert start["trajectory"] == pytest.approx([expected], rel=1e-6)
    # the worst case over a ball is at least what the random start found
    assert out["worst_loss"] >= start["worst_loss"] - 1e-9


def test_worst_case_beats_random_directions_of_the_same_radius() -> None:
    model, x, y = trained_model_and_data()
    worst = FL.worst_case_flatness(model, x, y, xi=0.02, steps=10, lr=0.02)["flatness"]
    average = FL.average_case_flatness(model, x, y, xi=0.02, samples=5)["flatness"]
    assert worst > average


def test_weights_restored_when_the_forward_pass_raises() -> None:
    model, x, y = trained_model_and_data(steps=2)
    saved = snapshot(model)
    calls = {"n": 0}
    hook_target = model[0]

    def hook(module, inputs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")

    handle = hook_target.register_forward_pre_hook(hook)
    try:
        with pytest.raises(RuntimeError, match="boom"):
            FL.average_case_flatness(model, x, y, samples=5)
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom"):
            FL.worst_case_flatness(model, x, y, steps=5)
    finally:
        handle.remove()
    assert_same(model, saved)


@pytest.mark.parametrize("kwargs, match", [
    ({"average_xi": 0}, "relative radius"),
    ({"worst_xi": -1}, "relative radius"),
    ({"average_samples": 0}, "average_samples must be"),
    ({"worst_steps": -1}, "worst_steps must be"),
])
def test_bad_settings_fail_before_compute(kwargs, match) -> None:
    model = nn.Linear(2, 2)

    def forbidden(*args, **kw):
        raise AssertionError("computed before validating")

    model.forward = forbidden
    with pytest.raises(ValueError, match=match):
        FL.flatness(model, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), **kwargs)


def test_flatness_row_has_both_measures() -> None:
    model, x, y = trained_model_and_data()
    row = FL.flatness(model, x, y, average_samples=2, worst_steps=2)
    assert set(row) >= {"loss", "average_flatness", "worst_flatness", "average_xi", "worst_xi"}
    assert row["average_xi"] == FL.AVERAGE_XI and row["worst_xi"] == FL.WORST_XI
    assert math.isfinite(row["average_flatness"]) and math.isfinite(row["worst_flatness"])
