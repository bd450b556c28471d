"""Training objectives against parameter corruption, on the one shared training loop.

Importing this module registers four objectives with
:func:`paramstress.training.register_objective`; select one with
``TrainConfig(objective=<name>, objective_params={...})``. Each is one training
step's forward and backward passes (the :class:`~paramstress.training.Objective`
protocol): the loop zeroes the gradients before the call and runs
``optimizer.step()`` after it, so the trainers share the optimiser, schedule,
batch order, augmentation, precision policy and checkpointing, and differ *only*
in what the step computes.

==========================  ===========================================================
``corruption_resistant``    Sun et al. (AAAI 2021), Eq. 16: ``L_a = L(w; B) + λ‖g‖_{p*}``
                            with ``g = ∇_w L(w; B)``, ``p* = p/(p−1)`` and ``λ = α·ε``
                            (Eq. 15 → 16); a double backward
                            (:class:`CorruptionResistant`)
``corruption_direct``       Sun et al., Eq. 13: ``L* = (1−α) L(w; B) + α L(w + â; B)``
                            with ``â`` the gradient-based corruption (Eq. 10) of size ε
                            under ``L_p``, ``n = k`` by default, computed from the batch
                            gradient; a two-pass step (:class:`CorruptionDirect`)
``awp``                     Wu, Xia and Wang (NeurIPS 2020), Adversarial Weight
                            Perturbation on clean data: per layer (convolution and
                            linear *weights* only) ``v_l = ‖w_l‖ · d_l/‖d_l‖`` from one
                            ascent step ``d = ∇L``, train at ``w + γv`` (:class:`AWP`)
``sam``                     Foret et al. (ICLR 2021), Sharpness-Aware Minimisation:
                            ``e = ρ g/‖g‖₂`` over all parameters; ``adaptive=True`` is
                            ASAM (Kwon et al., ICML 2021): ``e = ρ w²⊙g/‖|w|⊙g‖₂``,
                            ρ = 2 by default (:class:`SAM`)
==========================  ===========================================================

Rules shared by the two-pass objectives (``corruption_direct``, ``awp``, ``sam``):

- The perturbation is computed from the first pass's gradient under
  ``torch.no_grad()`` and treated as a constant (no gradient flows through it, as
  in SAM and AWP and as Eq. 13's ``â`` is a fixed "virtual" corruption).
- It is applied with :func:`paramstress.corruption.corrupted`, which rounds
  ``w + δ`` once and **restores the weights bit-identically** (by copying saved
  exact copies back, never by subtracting) when the second pass is done, also when
  it raises. The loop's ``optimizer.step()`` then uses the second pass's gradients
  at the restored weights.
- Batch-norm running statistics are updated exactly once per step, by the pass at
  the unperturbed weights ``w``; the pass at the perturbed weights runs in train
  mode (batch statistics, as SAM's "momentum 0" second pass) and leaves the running
  statistics and batch counters untouched (:func:`frozen_running_stats` restores
  them bit-identically). For AWP this differs from the official code, whose ascent
  step runs on a proxy copy and whose perturbed pass updates the statistics; here
  every trainer's statistics estimate the network that is evaluated.
- A zero first-pass gradient (a batch fitted exactly) has no direction: the step
  then trains at ``w`` (no perturbation).

Every objective returns the value of the objective it minimises (what the loop
logs as ``train_loss``): ``L + λ‖g‖``, ``(1−α)L(w) + αL(w+â)``, ``L(w + γv)`` and
``L(w + e)``. Parameters come from ``TrainConfig.objective_params`` (JSON: ``p``
is a number ≥ 1 or the string ``"inf"``) and are validated when the config is
built, with messages that name the fix.

Why hand-written: the loop (its checkpointing, its bf16 policy on CUDA and its
deterministic CPU path) must stay one; optimiser-wrapping packages such as
``pytorch-optimizer`` (SAM/ASAM/GSAM) or the adversarial-robustness-toolbox (AWP)
own the optimiser step and the parameter update, which would duplicate the loop.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from paramstress.corruption import operators as C
from paramstress.engine.training import LossFn, register_objective

__all__ = [
    "AWP",
    "SAM",
    "CorruptionDirect",
    "CorruptionResistant",
    "OBJECTIVE_LABELS",
    "awp_weights",
    "frozen_running_stats",
    "parse_p",
    "trainable_parameters",
]

#: Display names of the registered objectives (and of the baseline), for tables.
OBJECTIVE_LABELS: dict[str, str] = {
    "cross_entropy": "Baseline",
    "corruption_resistant": "Resistant (Eq. 16)",
    "corruption_direct": "Direct (Eq. 13)",
    "awp": "AWP",
    "sam": "SAM",
}

_CONV_LINEAR = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


# --------------------------------------------------------------------------- helpers
def parse_p(p: Any, what: str = "p") -> float:
    """A norm exponent from JSON: a number ≥ 1, or ``"inf"``/``math.inf`` for L∞."""
    if isinstance(p, str):
        if p.strip().lower() in ("inf", "infinity"):
            return math.inf
        try:
            p = float(p)
        except ValueError:
            raise ValueError(f"{what} must be a number >= 1 or the string 'inf', got {p!r}") from None
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or p < 1:
        raise ValueError(f"{what} must be a number >= 1 or the string 'inf' (L-infinity), got {p!r}; e.g. p=2")
    return float(p)


def _positive(value: Any, what: str, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive finite number, got {value!r}; {fix}")
    return float(value)


def _unit_interval(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (the weight of the corrupted loss), got {value!r}; e.g. alpha=0.5")
    return float(value)


def trainable_parameters(model: nn.Module) -> C.NamedParameters:
    """``(name, parameter)`` for every parameter with ``requires_grad``, in model order."""
    named = [(name, prm) for name, prm in model.named_parameters() if prm.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return named


def awp_weights(model: nn.Module) -> C.NamedParameters:
    """The parameters AWP perturbs: the ``weight`` of every convolution and linear layer
    (Wu et al. 2020; their code perturbs parameters named ``weight`` with more than one
    dimension), in model order. Biases and normalisation layers are not perturbed."""
    named = []
    for mod_name, module in model.named_modules():
        if isinstance(module, _CONV_LINEAR) and getattr(module, "weight", None) is not None:
            if module.weight.requires_grad:
                named.append((f"{mod_name}.weight" if mod_name else "weight", module.weight))
    if not named:
        raise ValueError(
            f"awp perturbs convolution and linear weights, and {type(model).__name__} has none that "
            "are trainable; use objective='sam' for other models"
        )
    return named


@contextlib.contextmanager
def frozen_running_stats(model: nn.Module) -> Iterator[None]:
    """Leave batch-norm running statistics untouched by forward passes in the body.

    The running mean, variance and batch counter of every ``_BatchNorm`` module are
    copied on entry and copied back on exit (also on error), so the body's train-mode
    passes use batch statistics (as SAM's "momentum 0" second pass) without moving the
    estimates the evaluated network uses. Bit-identical.
    """
    saved = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            buffers = {name: getattr(module, name) for name in ("running_mean", "running_var", "num_batches_tracked")}
            saved.append({name: (buf, buf.detach().clone()) for name, buf in buffers.items() if buf is not None})
    try:
        yield
    finally:
        with torch.no_grad():
            for entry in saved:
                for buf, copy in entry.values():
                    buf.copy_(copy)


def _flat(tensors: list[torch.Tensor | None], named: C.NamedParameters) -> torch.Tensor:
    """Concatenate per-parameter tensors (``None`` → zeros) into one flat vector."""
    return torch.cat([
        (t if t is not None else torch.zeros_like(prm)).detach().reshape(-1)
        for t, (_, prm) in zip(tensors, named)
    ])


def _second_pass(model: nn.Module, named: C.NamedParameters, delta: torch.Tensor | None,
                 x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """Forward and backward at ``w + delta`` (gradients into ``.grad``), running
    statistics frozen, weights restored bit-identically afterwards."""
    with frozen_running_stats(model):
        if delta is None:
            loss = loss_fn(model, x, y)
            loss.backward()
            return loss.detach()
        with C.corrupted(named, delta):
            loss = loss_fn(model, x, y)
            loss.backward()  # inside: the graph holds the perturbed weights
        return loss.detach()


def _first_pass(model: nn.Module, named: C.NamedParameters, x: torch.Tensor, y: torch.Tensor,
                loss_fn: LossFn) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Loss and gradients at ``w`` without touching ``.grad`` (running statistics update here)."""
    loss = loss_fn(model, x, y)
    grads = torch.autograd.grad(loss, [prm for _, prm in named], allow_unused=True)
    return loss.detach(), list(grads)


# --------------------------------------------------------------------------- Eq. 16
@register_objective("corruption_resistant")
@dataclasses.dataclass
class CorruptionResistant:
    """Sun et al. (2021), Eq. 16: ``L_a(w; B) = L(w; B) + λ‖g‖_{p*}``, ``λ = α·ε``.

    ``g = ∇_w L(w; B)`` over all trainable parameters of the batch, ``p* = p/(p−1)``
    (``p = 2 → ‖g‖₂``, ``p = ∞ → ‖g‖₁``, ``p = 1 → ‖g‖_∞``). Eq. 15 shows that
    ``L + α f(â)`` with ``f(â) = ε‖g‖_{p*}`` (Eq. 11) is the first-order expansion
    of Eq. 13, hence ``λ = αε``. The gradient of ``‖g‖`` needs a double backward:
    ``g`` is computed with ``create_graph=True`` and ``(L + λ‖g‖).backward()``
    differentiates through it (a Hessian-vector product).
    """

    name: ClassVar[str] = "corruption_resistant"
    alpha: float
    eps: float
    p: Any = 2

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) \
                or not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0 (λ = alpha·eps), got {self.alpha!r}")
        _positive(self.eps, "eps", "set objective_params eps to the size of the virtual corruption, e.g. 0.1")
        self._p = parse_p(self.p)
        self._q = C.dual_exponent(self._p)

    @property
    def lam(self) -> float:
        """``λ = α·ε`` (Eq. 16 equals Eq. 15 for this λ)."""
        return float(self.alpha) * float(self.eps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        named = trainable_parameters(model)
        tensors = [prm for _, prm in named]
        loss = loss_fn(model, x, y)
        grads = torch.autograd.grad(loss, tensors, create_graph=True, allow_unused=True)
        flat = torch.cat([(g if g is not None else torch.zeros_like(t)).reshape(-1) for g, t in zip(grads, tensors)])
        norm = torch.linalg.vector_norm(flat, ord=self._q)
        total = loss + self.lam * norm
        total.backward()
        return total.detach()


# --------------------------------------------------------------------------- Eq. 13
@register_objective("corruption_direct")
@dataclasses.dataclass
class CorruptionDirect:
    """Sun et al. (2021), Eq. 13: ``L*(w; B) = (1−α) L(w; B) + α L(w + â; B)``.

    ``â`` is the gradient-based corruption of Eq. 10 for the batch gradient
    ``g = ∇_w L(w; B)`` over all trainable parameters: ``‖â‖_p = ε``,
    ``‖â‖_0 ≤ n`` (``n = None``: ``n = k``, Table 2's setting), computed by
    :func:`paramstress.corruption.gradient_corruption` and held fixed. Two passes:
    ``g₁`` at ``w``, ``g₂`` at ``w + â``; the gradient left for the optimiser is
    ``(1−α) g₁ + α g₂``.
    """

    name: ClassVar[str] = "corruption_direct"
    alpha: float
    eps: float
    p: Any = 2
    n: int | None = None

    def __post_init__(self) -> None:
        _unit_interval(self.alpha, "alpha")
        _positive(self.eps, "eps", "set objective_params eps to the size of the virtual corruption, e.g. 0.1")
        self._p = parse_p(self.p)
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1):
            raise ValueError(f"n must be a positive int (coordinates allowed to change) or None for n = k, got {self.n!r}")

    def corruption(self, grad_vec: torch.Tensor) -> torch.Tensor | None:
        """``â`` for the flat batch gradient (Eq. 10), or ``None`` for a zero gradient."""
        n = grad_vec.numel() if self.n is None else min(int(self.n), grad_vec.numel())
        try:
            return C.gradient_corruption(grad_vec, float(self.eps), self._p, n)
        except C.ZeroDirectionError:
            return None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        named = trainable_parameters(model)
        alpha = float(self.alpha)
        loss1, g1 = _first_pass(model, named, x, y, loss_fn)
        with torch.no_grad():
            delta = self.corruption(_flat(g1, named))
        loss2 = _second_pass(model, named, delta, x, y, loss_fn)
        with torch.no_grad():
            for (_, prm), g in zip(named, g1):
                if prm.grad is None:
                    prm.grad = torch.zeros_like(prm)
                prm.grad.mul_(alpha)
                if g is not None:
                    prm.grad.add_(g, alpha=1.0 - alpha)
        return (1.0 - alpha) * loss1 + alpha * loss2


# --------------------------------------------------------------------------- AWP
@register_objective("awp")
@dataclasses.dataclass
class AWP:
    """Adversarial Weight Perturbation (Wu, Xia and Wang, NeurIPS 2020), on clean inputs.

    One ascent step ``d_l = ∇_{w_l} L(w; B)`` for every convolution/linear weight
    ``w_l`` (:func:`awp_weights`; biases and normalisation layers are not perturbed),
    the layer-relative direction ``v_l = ‖w_l‖ · d_l/‖d_l‖`` (a layer with
    ``d_l = 0`` is not perturbed), then the training pass at ``w + γv``; ``γv`` is
    removed (bit-identically) before the optimiser step. ``gamma`` defaults to 0.01,
    the paper's value with PGD adversarial training (0.005 with TRADES). Official code:
    csdongxian/AWP; there the ascent is an SGD step on a proxy copy of the model, whose
    normalised direction is ``d`` here.
    """

    name: ClassVar[str] = "awp"
    gamma: float = 0.01

    def __post_init__(self) -> None:
        _positive(self.gamma, "gamma", "set objective_params gamma to the relative perturbation size, e.g. 0.01")

    def perturbation(self, named: C.NamedParameters, grads: list[torch.Tensor | None]) -> torch.Tensor | None:
        """The flat ``γv`` over ``named`` (``None`` when every ``d_l`` is zero)."""
        parts, any_direction = [], False
        for (_, w), d in zip(named, grads):
            d_norm = torch.linalg.vector_norm(d) if d is not None else None
            if d is None or float(d_norm) == 0.0:
                parts.append(torch.zeros(w.numel(), dtype=w.dtype, device=w.device))
                continue
            any_direction = True
            w_norm = torch.linalg.vector_norm(w.detach())
            parts.append((float(self.gamma) * w_norm / d_norm * d).reshape(-1))
        return torch.cat(parts) if any_direction else None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        named = awp_weights(model)
        _, grads = _first_pass(model, named, x, y, loss_fn)
        with torch.no_grad():
            delta = self.perturbation(named, grads)
        return _second_pass(model, named, delta, x, y, loss_fn)


# --------------------------------------------------------------------------- SAM / ASAM
@register_objective("sam")
@dataclasses.dataclass
class SAM:
    """Sharpness-Aware Minimisation (Foret, Kleiner, Mobahi and Neyshabur, ICLR 2021)
    and, with ``adaptive=True``, ASAM (Kwon, Kim, Park and Choi, ICML 2021).

    ``g = ∇_w L(w; B)`` over all trainable parameters; SAM: ``e = ρ g/‖g‖₂``
    (``ρ = 0.05`` by default); ASAM: ``e = ρ w²⊙g / ‖|w|⊙g‖₂`` (``ρ = 2.0`` by
    default), as in davda54/sam. The training pass runs at ``w + e`` and ``e`` is
    removed (bit-identically) before the optimiser step.
    """

    name: ClassVar[str] = "sam"
    rho: float | None = None
    adaptive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.adaptive, bool):
            raise ValueError(f"adaptive must be true (ASAM) or false (SAM), got {self.adaptive!r}")
        if self.rho is not None:
            _positive(self.rho, "rho", "set objective_params rho to the neighbourhood size, e.g. 0.05 (SAM) or 2.0 (ASAM)")

    @property
    def radius(self) -> float:
        """``ρ``: as given, else 0.05 (SAM) or 2.0 (ASAM)."""
        if self.rho is not None:
            return float(self.rho)
        return 2.0 if self.adaptive else 0.05

    def perturbation(self, named: C.NamedParameters, grads: list[torch.Tensor | None]) -> torch.Tensor | None:
        """The flat ``e`` over ``named`` (``None`` for a zero gradient)."""
        g = _flat(grads, named)
        if self.adaptive:
            w = torch.cat([prm.detach().reshape(-1) for _, prm in named])
            scaled = w.abs() * g
            norm = torch.linalg.vector_norm(scaled)
            if float(norm) == 0.0:
                return None
            return self.radius * w * w * g / norm
        norm = torch.linalg.vector_norm(g)
        if float(norm) == 0.0:
            return None
        return self.radius * g / norm

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
        named = trainable_parameters(model)
        _, grads = _first_pass(model, named, x, y, loss_fn)
        with torch.no_grad():
            delta = self.perturbation(named, grads)
        return _second_pass(model, named, delta, x, y, loss_fn)
