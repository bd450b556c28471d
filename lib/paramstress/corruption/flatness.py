"""Flatness of the loss in weight space (Stutz, Hein and Schiele, ICCV 2021).

Stutz et al., "Relating Adversarially Robust Generalization to Flat Minima", define
their average- and worst-case flatness measures through weight perturbations ``ν`` in
a *layer-wise relative* ball, scale-invariant by construction:

    B_ξ(w) = {ν : ‖ν_l‖₂ ≤ ξ ‖w_l‖₂ for every layer l},

where a "layer" is one parameter tensor (a convolution's weight, its bias, ...)
and normalisation layers are excluded (their affine parameters are not
perturbed). Both measures are *loss increases* over a fixed evaluation set:

- **average-case flatness** (without their input attack):
  ``E_ν[L(w + ν)] − L(w)`` with ``ν`` drawn uniformly on the sphere of each layer's
  relative radius, ``ξ = 0.5``, 10 samples (:func:`average_case_flatness`);
- **worst-case flatness** (without their input attack):
  ``max_{ν ∈ B_ξ(w)} L(w + ν) − L(w)``, ``ξ = 0.003``, approximated by 20 steps of
  projected gradient ascent with learning rate 0.01 and the gradient normalised per
  layer to ``‖w_l‖`` (``∇_l ← ∇_l/‖∇_l‖ · ‖w_l‖``), started uniformly inside the ball
  (:func:`worst_case_flatness`).

The defaults are theirs (REFERENCE §C; their public code: uniform directions on the
relative sphere for the average case; a random start in the relative ball, per-layer
gradient normalisation to ``‖w_l‖`` and projection for the worst case; batch-norm
layers excluded). Ours draws the worst case's start uniformly in the ball's volume. What is ours, and stated wherever results are
shown: the paper measures flatness of the *robust* (adversarial-input) loss; this
book has no input attack here and measures the clean cross-entropy, so the numbers
are flatness of the clean loss landscape. The loss is the mean cross-entropy over the
whole evaluation set, with the model in eval mode (batch-norm running statistics);
the worst case is the largest loss seen over the ascent iterates (start included),
each step using the gradient over the whole evaluation set (one perturbation for the
set, where the official code attacks batch by batch). Random draws come from a
seeded CPU generator, so a seed gives the same ``ν`` on every device. Weights are
restored bit-identically after every evaluation
(:func:`paramstress.corruption.corrupted`).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from paramstress.corruption import operators as C
from paramstress.engine.sweep import evaluate, iter_batches

__all__ = [
    "AVERAGE_XI",
    "AVERAGE_SAMPLES",
    "WORST_XI",
    "WORST_STEPS",
    "WORST_LR",
    "NORM_TYPES",
    "flatness_parameters",
    "relative_sphere",
    "relative_ball",
    "project_relative",
    "average_case_flatness",
    "worst_case_flatness",
    "flatness",
]

#: Stutz et al.'s defaults (REFERENCE §C).
AVERAGE_XI = 0.5
AVERAGE_SAMPLES = 10
WORST_XI = 0.003
WORST_STEPS = 20
WORST_LR = 0.01

#: Module types whose parameters are excluded ("normalisation layers").
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)

Transform = Callable[[torch.Tensor], torch.Tensor]


def flatness_parameters(model: nn.Module) -> C.NamedParameters:
    """The layers that flatness perturbs: every trainable parameter tensor except those
    held by normalisation modules (:data:`NORM_TYPES`), in model order."""
    excluded = set()
    for module in model.modules():
        if isinstance(module, NORM_TYPES):
            excluded |= {id(prm) for prm in module.parameters(recurse=False)}
    named = [(name, prm) for name, prm in model.named_parameters()
             if prm.requires_grad and id(prm) not in excluded]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters outside normalisation layers")
    return named


def check_xi(xi: float, what: str = "xi") -> float:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not math.isfinite(xi) or xi <= 0:
        raise ValueError(f"{what} must be a positive finite number (the relative radius ‖ν_l‖ ≤ ξ‖w_l‖), got {xi!r}")
    return float(xi)


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int >= {minimum}, got {value!r}")
    return value


def relative_sphere(named: C.NamedParameters, xi: float, generator: torch.Generator) -> torch.Tensor:
    """A flat ``ν`` with each layer uniform on the sphere ``‖ν_l‖ = ξ‖w_l‖`` (float64, CPU)."""
    xi = check_xi(xi)
    parts = []
    for _, prm in named:
        r = torch.randn(prm.numel(), generator=generator, dtype=torch.float64)
        w_norm = float(torch.linalg.vector_norm(prm.detach().to(torch.float64)))
        r_norm = float(torch.linalg.vector_norm(r))
        parts.append(r * (xi * w_norm / r_norm) if r_norm > 0 else torch.zeros_like(r))
    return torch.cat(parts)


def relative_ball(named: C.NamedParameters, xi: float, generator: torch.Generator) -> torch.Tensor:
    """A flat ``ν`` with each layer uniform in the ball ``‖ν_l‖ ≤ ξ‖w_l‖`` (float64, CPU):
    a uniform direction times the radius ``ξ‖w_l‖ · U^{1/d_l}``."""
    sphere = relative_sphere(named, xi, generator)
    out, offset = [], 0
    for _, prm in named:
        d = prm.numel()
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        out.append(sphere[offset:offset + d] * u ** (1.0 / d))
        offset += d
    return torch.cat(out)


def project_relative(nu: torch.Tensor, named: C.NamedParameters, xi: float) -> torch.Tensor:
    """Project a flat ``ν`` onto ``B_ξ(w)``: each layer scaled down to ``ξ‖w_l‖`` if longer."""
    out, offset = [], 0
    for _, prm in named:
        d = prm.numel()
        part = nu[offset:offset + d]
        radius = xi * float(torch.linalg.vector_norm(prm.detach().to(torch.float64)))
        norm = float(torch.linalg.vector_norm(part))
        out.append(part * (radius / norm) if norm > radius else part)
        offset += d
    return torch.cat(out)


def _base_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, transform: Transform | None,
               base_loss: float | None) -> float:
    """The unperturbed model's loss on ``(x, y)``: ``base_loss`` when the caller already has
    it (the same evaluation, e.g. once for every layer of a per-layer flatness), else evaluated."""
    if base_loss is None:
        return evaluate(model, x, y, batch_size=batch_size, transform=transform, metrics=["loss"])["loss"]
    if isinstance(base_loss, bool) or not isinstance(base_loss, (int, float)):
        raise ValueError(f"base_loss must be the unperturbed model's loss (a float) or None, got {base_loss!r}")
    return float(base_loss)


def _check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")


def average_case_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    xi: float = AVERAGE_XI,
    samples: int = AVERAGE_SAMPLES,
    seed: int = 0,
    batch_size: int = 1024,
    transform: Transform | None = None,
    params: C.ParamsLike | None = None,
    base_loss: float | None = None,
) -> dict[str, Any]:
    """Stutz et al.'s average-case flatness of the clean loss: ``mean_s L(w + ν_s) − L(w)``
    with ``ν_s`` uniform on each layer's relative sphere of radius ``ξ‖w_l‖``.

    ``params`` defaults to :func:`flatness_parameters` (normalisation layers excluded).
    Returns ``{"flatness", "loss", "perturbed_losses", "xi", "samples"}``; the weights
    are bit-identical afterwards. ``base_loss``: the unperturbed loss, when the caller has it
    (one evaluation fewer; the same number).
    """
    xi = check_xi(xi)
    samples = check_count(samples, "samples")
    _check_data(x, y)
    named = C.as_named_parameters(params) if params is not None else flatness_parameters(model)
    base = _base_loss(model, x, y, batch_size, transform, base_loss)
    generator = torch.Generator().manual_seed(int(seed))
    device = named[0][1].device
    losses = []
    for _ in range(samples):
        nu = relative_sphere(named, xi, generator).to(device)
        with C.corrupted(named, nu):
            losses.append(evaluate(model, x, y, batch_size=batch_size, transform=transform, metrics=["loss"])["loss"])
    return {"flatness": float(sum(losses) / len(losses)) - base, "loss": base,
            "perturbed_losses": losses, "xi": xi, "samples": samples}


def _loss_and_gradient(model: nn.Module, named: C.NamedParameters, x: torch.Tensor, y: torch.Tensor,
                       batch_size: int, transform: Transform | None) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy over ``(x, y)`` and its flat gradient (float64), eval mode."""
    tensors = [prm for _, prm in named]
    modes = [(mod, mod.training) for mod in model.modules()]
    accs = [torch.zeros(prm.shape, dtype=torch.float64, device=prm.device) for prm in tensors]
    total = 0.0
    model.eval()
    try:
        with torch.enable_grad():
            for xb, yb in iter_batches(x, y, batch_size):
                out = model(transform(xb) if transform is not None else xb)
                loss = F.cross_entropy(out.float(), yb, reduction="sum")
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                for acc, grad in zip(accs, grads):
                    if grad is not None:
                        acc.add_(grad.to(torch.float64))
                total += float(loss.detach())
    finally:
        for mod, training in modes:
            mod.train(training)
    n = len(y)
    return total / n, torch.cat([acc.reshape(-1) for acc in accs]) / n


def worst_case_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    xi: float = WORST_XI,
    steps: int = WORST_STEPS,
    lr: float = WORST_LR,
    seed: int = 0,
    batch_size: int = 1024,
    transform: Transform | None = None,
    params: C.ParamsLike | None = None,
    base_loss: float | None = None,
) -> dict[str, Any]:
    """Stutz et al.'s worst-case flatness of the clean loss: ``max_{ν∈B_ξ(w)} L(w+ν) − L(w)``.

    Projected gradient ascent on ``ν``: start uniformly in the layer-relative ball,
    then ``steps`` times ``ν_l ← Π(ν_l + lr · ‖w_l‖ · ∇_l/‖∇_l‖)`` (``∇_l`` the gradient
    of the evaluation-set loss at ``w + ν`` for layer ``l``, left alone where zero;
    ``Π`` the projection onto ``‖ν_l‖ ≤ ξ‖w_l‖``). The result is the largest loss over
    the ``steps + 1`` iterates. Returns ``{"flatness", "loss", "worst_loss",
    "trajectory", "xi", "steps", "lr"}``; the weights are bit-identical afterwards.
    ``base_loss`` as in :func:`average_case_flatness`.
    """
    xi = check_xi(xi)
    steps = check_count(steps, "steps", minimum=0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number (the relative step size), got {lr!r}")
    _check_data(x, y)
    named = C.as_named_parameters(params) if params is not None else flatness_parameters(model)
    base = _base_loss(model, x, y, batch_size, transform, base_loss)
    device = named[0][1].device
    generator = torch.Generator().manual_seed(int(seed))
    nu = relative_ball(named, xi, generator).to(device)
    w_norms = [float(torch.linalg.vector_norm(prm.detach().to(torch.float64))) for _, prm in named]
    trajectory: list[float] = []
    for step in range(steps + 1):
        with C.corrupted(named, nu):
            if step == steps:
                loss = evaluate(model, x, y, batch_size=batch_size, transform=transform, metrics=["loss"])["loss"]
                trajectory.append(loss)
                break
            loss, grad = _loss_and_gradient(model, named, x, y, batch_size, transform)
        trajectory.append(loss)
        parts, offset = [], 0
        for (_, prm), w_norm in zip(named, w_norms):
            d = prm.numel()
            g = grad[offset:offset + d]
            g_norm = float(torch.linalg.vector_norm(g))
            parts.append(g * (w_norm / g_norm) if g_norm > 0 else torch.zeros_like(g))
            offset += d
        nu = project_relative(nu.to(torch.float64) + lr * torch.cat(parts).to(nu.device), named, xi)
    finite = [v for v in trajectory if math.isfinite(v)]
    worst = max(finite) if len(finite) == len(trajectory) else math.inf
    return {"flatness": worst - base, "loss": base, "worst_loss": worst, "trajectory": trajectory,
            "xi": xi, "steps": steps, "lr": float(lr)}


def flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    average_xi: float = AVERAGE_XI,
    average_samples: int = AVERAGE_SAMPLES,
    worst_xi: float = WORST_XI,
    worst_steps: int = WORST_STEPS,
    worst_lr: float = WORST_LR,
    seed: int = 0,
    batch_size: int = 1024,
    transform: Transform | None = None,
) -> dict[str, float]:
    """Both measures for one model, as one tidy row: ``loss`` (clean), ``average_flatness``,
    ``worst_flatness`` and the settings used. Everything is validated first."""
    check_xi(average_xi, "average_xi")
    check_xi(worst_xi, "worst_xi")
    check_count(average_samples, "average_samples")
    check_count(worst_steps, "worst_steps", minimum=0)
    avg = average_case_flatness(model, x, y, xi=average_xi, samples=average_samples, seed=seed,
                                batch_size=batch_size, transform=transform)
    worst = worst_case_flatness(model, x, y, xi=worst_xi, steps=worst_steps, lr=worst_lr, seed=seed,
                                batch_size=batch_size, transform=transform, base_loss=avg["loss"])
    return {"loss": avg["loss"], "average_flatness": avg["flatness"], "worst_flatness": worst["flatness"],
            "average_xi": average_xi, "average_samples": average_samples, "worst_xi": worst_xi,
            "worst_steps": worst_steps, "worst_lr": float(worst_lr),
            "evaluation_images": int(len(y))}
