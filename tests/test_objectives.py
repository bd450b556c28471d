"""Objectives against parameter corruption (paramstress.objectives): Eq. 16's gradient
against finite differences, Eq. 13 against an explicit two-pass computation, the
perturbations of AWP and SAM/ASAM, exact restoration of the weights and batch-norm
statistics, validation, and that the trainers differ only in the objective."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from paramstress import corruption as C
from paramstress import models, objectives, training
from paramstress.data import ImageData
from paramstress.objectives import AWP, SAM, CorruptionDirect, CorruptionResistant

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def ce(model, x, y):
    """A loss_fn in the model's own precision (the loop's BatchLoss casts logits to float32)."""
    return F.cross_entropy(model(x), y)


def tiny_mlp(seed: int = 0, batchnorm: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 5)]
    if batchnorm:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    return nn.Sequential(*layers).double().train()


def tiny_batch(seed: int = 1, n: int = 6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def tiny_cnn(seed: int = 0) -> nn.Module:
    return models.build_model("small_cnn", 4, 1, 8, seed=seed, width=2).train()


def cnn_batch(seed: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(5, 1, 8, 8, generator=g), torch.randint(0, 4, (5,), generator=g)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


# --------------------------------------------------------------------------- Eq. 16
def penalised(model: nn.Module, x, y, lam: float, q: float) -> torch.Tensor:
    loss = ce(model, x, y)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    return loss + lam * torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]), ord=q)


@pytest.mark.parametrize("p, q", [(2, 2.0), ("inf", 1.0), (3, 1.5)])
@pytest.mark.parametrize("batchnorm", [False, True])
def test_resistant_gradient_matches_finite_differences(p, q, batchnorm) -> None:
    model = tiny_mlp(batchnorm=batchnorm)
    x, y = tiny_batch()
    objective = CorruptionResistant(alpha=0.6, eps=0.5, p=p)
    assert objective.lam == pytest.approx(0.3)
    value = objective(model, x, y, ce)
    analytic = torch.cat([prm.grad.reshape(-1) for prm in model.parameters()])

    params = list(model.parameters())
    h = 1e-6
    numeric = torch.zeros_like(analytic)
    index = 0
    for prm in params:
        flat = prm.data.view(-1)
        for i in range(flat.numel()):
            old = flat[i].item()
            flat[i] = old + h
            up = penalised(model, x, y, 0.3, q).item()
            flat[i] = old - h
            down = penalised(model, x, y, 0.3, q).item()
            flat[i] = old
            numeric[index] = (up - down) / (2 * h)
            index += 1
    assert value.item() == pytest.approx(penalised(model, x, y, 0.3, q).item(), rel=1e-12)
    torch.testing.assert_close(analytic, numeric, rtol=1e-6, atol=1e-8)
    # and the penalty matters: the gradient is not that of the plain loss
    plain = torch.autograd.grad(ce(model, x, y), params)
    assert not torch.allclose(analytic, torch.cat([g.reshape(-1) for g in plain]), atol=1e-6)


# --------------------------------------------------------------------------- Eq. 13
@pytest.mark.parametrize("p, n", [(2, None), ("inf", None), (2, 7)])
def test_direct_equals_explicit_two_pass(p, n) -> None:
    model = tiny_mlp()
    reference = copy.deepcopy(model)
    x, y = tiny_batch()
    alpha, eps = 0.3, 0.2
    objective = CorruptionDirect(alpha=alpha, eps=eps, p=p, n=n)
    value = objective(model, x, y, ce)

    # the explicit computation: g1 at w, â from Eq. 10, g2 at w + â, (1−α) g1 + α g2
    params = list(reference.parameters())
    loss1 = ce(reference, x, y)
    g1 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss1, params)])
    stats_after_first_pass = state(reference)
    k = g1.numel()
    a = C.gradient_corruption(g1, eps, math.inf if p == "inf" else p, k if n is None else n)
    assert C.lp_norm(a, math.inf if p == "inf" else p) == pytest.approx(eps)
    shifted = copy.deepcopy(reference)
    with torch.no_grad():
        offset = 0
        for prm in shifted.parameters():
            prm.add_(a[offset:offset + prm.numel()].view(prm.shape))
            offset += prm.numel()
    loss2 = ce(shifted, x, y)
    g2 = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss2, list(shifted.parameters()))])
    expected = (1 - alpha) * g1 + alpha * g2

    got = torch.cat([prm.grad.reshape(-1) for prm in model.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
    assert value.item() == pytest.approx(((1 - alpha) * loss1 + alpha * loss2).item(), rel=1e-12)
    # weights back exactly; running statistics moved once, by the pass at w
    after = state(model)
    for key, tensor in stats_after_first_pass.items():
        assert torch.equal(after[key], tensor), key
    assert not torch.allclose(g1, g2)


def test_direct_with_alpha_zero_is_plain_training() -> None:
    model, reference = tiny_mlp(), tiny_mlp()
    x, y = tiny_batch()
    CorruptionDirect(alpha=0.0, eps=0.5)(model, x, y, ce)
    ce(reference, x, y).backward()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-15)


# --------------------------------------------------------------------------- the perturbations
class Recorder:
    """A loss_fn that records the parameters each forward pass sees."""

    def __init__(self):
        self.seen: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, x, y):
        self.seen.append({k: v.detach().clone() for k, v in model.named_parameters()})
        return ce(model, x, y)


def plain_grads(model, x, y) -> dict[str, torch.Tensor]:
    probe = copy.deepcopy(model)
    named = list(probe.named_parameters())
    grads = torch.autograd.grad(ce(probe, x, y), [p for _, p in named])
    return {name: g for (name, _), g in zip(named, grads)}


def test_sam_trains_at_w_plus_rho_g_over_norm() -> None:
    model = tiny_mlp()
    x, y = tiny_batch()
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = plain_grads(model, x, y)
    norm = torch.linalg.vector_norm(torch.cat([t.reshape(-1) for t in g.values()]))
    rec = Recorder()
    SAM(rho=0.1)(model, x, y, rec)
    assert len(rec.seen) == 2
    for name in w:
        torch.testing.assert_close(rec.seen[0][name], w[name], rtol=0, atol=0)
        torch.testing.assert_close(rec.seen[1][name], w[name] + 0.1 * g[name] / norm, rtol=1e-12, atol=1e-15)


def test_asam_trains_at_w_plus_rho_w2g_over_norm() -> None:
    model = tiny_mlp()
    x, y = tiny_batch()
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = plain_grads(model, x, y)
    norm = torch.linalg.vector_norm(torch.cat([(w[k].abs() * g[k]).reshape(-1) for k in w]))
    rec = Recorder()
    objective = SAM(adaptive=True)
    assert objective.radius == 2.0 and SAM().radius == 0.05
    objective(model, x, y, rec)
    for name in w:
        expected = w[name] + 2.0 * w[name] ** 2 * g[name] / norm
        torch.testing.assert_close(rec.seen[1][name], expected, rtol=1e-12, atol=1e-15)


def test_awp_perturbs_conv_and_linear_weights_relative_to_their_norm() -> None:
    model = tiny_mlp()
    x, y = tiny_batch()
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    g = plain_grads(model, x, y)
    rec = Recorder()
    AWP(gamma=0.02)(model, x, y, rec)
    assert [name for name, _ in objectives.awp_weights(model)] == ["0.weight", "3.weight"]
    for name in w:
        if name in ("0.weight", "3.weight"):
            expected = w[name] + 0.02 * w[name].norm() * g[name] / g[name].norm()
            torch.testing.assert_close(rec.seen[1][name], expected, rtol=1e-12, atol=1e-15)
            assert not torch.equal(rec.seen[1][name], w[name])
        else:  # biases and batch norm are not perturbed
            assert torch.equal(rec.seen[1][name], w[name]), name


TWO_PASS = [
    pytest.param(lambda: CorruptionDirect(alpha=0.5, eps=0.5), id="direct"),
    pytest.param(lambda: AWP(gamma=0.05), id="awp"),
    pytest.param(lambda: SAM(rho=0.5), id="sam"),
    pytest.param(lambda: SAM(adaptive=True), id="asam"),
]


@pytest.mark.parametrize("make", TWO_PASS)
def test_two_pass_objectives_restore_weights_and_statistics_exactly(make) -> None:
    model = tiny_cnn()
    x, y = cnn_batch()
    reference = copy.deepcopy(model)
    reference(x)  # one train-mode pass at w: what the running statistics should become
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    rec = Recorder()
    make()(model, x, y, rec)
    assert len(rec.seen) == 2
    assert any(not torch.equal(rec.seen[1][k], before[k]) for k in before), "the second pass was not perturbed"
    for name, prm in model.named_parameters():
        assert torch.equal(prm, before[name]), name
        assert prm.grad is not None and torch.isfinite(prm.grad).all()
    for name, buf in model.named_buffers():
        assert torch.equal(buf, dict(reference.named_buffers())[name]), name


@pytest.mark.parametrize("make", TWO_PASS)
def test_two_pass_objectives_restore_weights_when_the_second_pass_raises(make) -> None:
    model = tiny_cnn()
    x, y = cnn_batch()
    calls = {"n": 0}

    def failing(m, xb, yb):
        calls["n"] += 1
        out = ce(m, xb, yb)
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return out

    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        make()(model, x, y, failing)
    after_first = copy.deepcopy(model)
    for name, prm in model.named_parameters():
        assert torch.equal(prm, params[name]), name
    # the statistics are those of the first pass only (the failed second pass left none)
    reference = tiny_cnn()
    reference(x)
    for name, buf in after_first.named_buffers():
        assert torch.equal(buf, dict(reference.named_buffers())[name]), name


def test_zero_gradient_trains_at_w() -> None:
    model = nn.Sequential(nn.Linear(2, 2, bias=False)).double()
    with torch.no_grad():
        model[0].weight.zero_()
    x = torch.zeros(3, 2, dtype=torch.float64)
    y = torch.tensor([0, 1, 0])
    for objective in (CorruptionDirect(alpha=0.5, eps=1.0), AWP(), SAM(), SAM(adaptive=True)):
        model.zero_grad(set_to_none=True)
        rec = Recorder()
        objective(model, x, y, rec)
        assert torch.equal(rec.seen[-1]["0.weight"], torch.zeros(2, 2, dtype=torch.float64))


# --------------------------------------------------------------------------- registry and validation
def test_objectives_are_registered_with_their_labels() -> None:
    names = training.objective_names()
    for name in ("corruption_resistant", "corruption_direct", "awp", "sam"):
        assert name in names
        assert name in objectives.OBJECTIVE_LABELS


@pytest.mark.parametrize("name, params, match", [
    ("corruption_resistant", {}, "do not fit"),
    ("corruption_resistant", {"alpha": 0.5, "eps": -1}, "eps must be a positive"),
    ("corruption_resistant", {"alpha": -0.5, "eps": 1}, "alpha must be"),
    ("corruption_resistant", {"alpha": 0.5, "eps": 1, "p": 0.5}, "p must be a number >= 1"),
    ("corruption_direct", {"alpha": 1.5, "eps": 1}, r"alpha must be in \[0, 1\]"),
    ("corruption_direct", {"alpha": 0.5, "eps": 1, "n": 0}, "n must be a positive int"),
    ("awp", {"gamma": 0}, "gamma must be a positive"),
    ("sam", {"rho": -0.1}, "rho must be a positive"),
    ("sam", {"adaptive": "yes"}, "adaptive must be"),
])
def test_bad_objective_params_fail_when_the_config_is_built(name, params, match) -> None:
    with pytest.raises(ValueError, match=match):
        training.TrainConfig(model="small_cnn", objective=name, objective_params=params)


def test_p_accepts_inf_string() -> None:
    assert objectives.parse_p("inf") == math.inf
    assert objectives.parse_p(2) == 2.0
    assert CorruptionResistant(alpha=1, eps=1, p="inf")._q == 1.0


def test_awp_needs_conv_or_linear_weights() -> None:
    model = nn.Sequential(nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="objective='sam'"):
        objectives.awp_weights(model)


# --------------------------------------------------------------------------- same loop, only the objective differs
SIZE, CLASSES = 8, 4


def synthetic() -> ImageData:
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, CLASSES, (64,), generator=g)
    x = torch.randint(0, 200, (64, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    ty = torch.randint(0, CLASSES, (16,), generator=g)
    tx = torch.randint(0, 200, (16, 1, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return ImageData("synthetic", x, y, tx, ty, [str(i) for i in range(CLASSES)], (0.4,), (0.3,))


class Spy:
    """Wraps an objective; records the initial weights and every batch it is given."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.initial = None
        self.batches = []

    def __call__(self, model, x, y, loss_fn):
        if self.initial is None:
            self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.batches.append((x.detach().clone(), y.detach().clone()))
        return self.inner(model, x, y, loss_fn)


def test_trainers_differ_only_in_the_objective() -> None:
    data = synthetic()
    base = dict(model="small_cnn", epochs=2, batch_size=16, lr=0.05, augment=True, crop_padding=1, hflip=True, seed=3)
    specs = {
        "cross_entropy": {},
        "corruption_resistant": {"alpha": 0.5, "eps": 0.1},
        "corruption_direct": {"alpha": 0.5, "eps": 0.1},
        "awp": {"gamma": 0.01},
        "sam": {"rho": 0.05},
    }
    spies, finals = {}, {}
    for name, params in specs.items():
        cfg = training.TrainConfig(**base, objective=name, objective_params=params)
        spy = Spy(training.make_objective(name, params))
        result = training.train(None, data, cfg, device="cpu", progress=False, objective=spy)
        spies[name], finals[name] = spy, flat_params(result.model)
        others = {k: v for k, v in cfg.to_dict().items() if k not in ("objective", "objective_params")}
        assert others == {k: v for k, v in training.TrainConfig(**base).to_dict().items()
                          if k not in ("objective", "objective_params")}
    reference = spies["cross_entropy"]
    assert len(reference.batches) == 2 * math.ceil(64 / 16)
    for name, spy in spies.items():
        assert spy.initial.keys() == reference.initial.keys()
        assert all(torch.equal(spy.initial[k], reference.initial[k]) for k in spy.initial), name
        assert len(spy.batches) == len(reference.batches)
        for (xa, ya), (xb, yb) in zip(spy.batches, reference.batches):
            assert torch.equal(xa, xb) and torch.equal(ya, yb), name
    # ... and the objective does make a difference
    for name in specs:
        if name != "cross_entropy":
            assert not torch.equal(finals[name], finals["cross_entropy"]), name
