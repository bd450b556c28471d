"""External stress (Pravin et al. 2023, Def. 3 and §4.1.1): the FGSM attack, the choice
of its size ε by Definitions 7-9, and the parameters the adversary targets (§4.1.2,
"Targeted parameters", Fig. 5).

- FGSM (Goodfellow et al. 2015, the paper's only attack): ``x_adv = x + ε·sign(∇ₓ CE(f(x), y))``
  on the *normalised* inputs, with no clamp to the image range, the model in eval mode
  (batch-norm running statistics), as in the official code (:func:`fgsm`). ``ε`` is in
  normalised units (divide by the per-channel std to get pixel units).
- ε selection (:func:`select_epsilon`): Def. 7 (minimum attack bound: the attack must
  misclassify inputs the model classifies correctly), Def. 8 (maximum bound: accuracy
  stays above chance, ``100/C`` %), Def. 9 (relative attack: ε is chosen *per model and
  dataset* so that the attack reduces every model to the same accuracy). The paper does
  this "with a line search"; here: a coarse grid on ``(0, eps_max]`` brackets the first
  ε whose adversarial accuracy falls to the shared ``target_accuracy``, then bisection
  narrows the bracket until the accuracy is within ``tol`` points of the target. The
  whole curve of evaluated (ε, accuracy) pairs is returned.
- Targeted parameters (:func:`targeted_parameters`): the paper compares the filtering
  responses on clean and adversarial data (its matrices of Eqs. 11-12) point by point;
  where the adversarial response falls below the clean one the removed parameters are
  those the adversary relies on ("negatively affecting"); where it rises above, removing
  them helps against the adversary ("positively"); within a tolerance, "invariant".
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "attack_loss",
    "attack_mode",
    "fgsm",
    "gradient_sign",
    "adversarial_accuracy",
    "adversarial_accuracies",
    "EpsilonChoice",
    "TargetUnreachable",
    "chance_level",
    "check_above_chance",
    "select_epsilon",
    "TARGET_LABELS",
    "targeted_parameters",
]


@contextlib.contextmanager
def attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients for the body; both restored afterwards."""
    modes = [(mod, mod.training) for mod in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for mod, training in modes:
            mod.train(training)


def attack_loss(outputs: torch.Tensor, y: torch.Tensor,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The scalar loss whose input gradient's sign FGSM follows: the summed cross-entropy of
    the logits, or ``loss_fn(outputs, y)`` (checked to be a scalar tensor)."""
    if loss_fn is None:
        return F.cross_entropy(outputs, y, reduction="sum")
    loss = loss_fn(outputs, y)
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ValueError("loss_fn must return a scalar tensor (the batch's mean or summed loss), got "
                         f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}")
    return loss


def check_eps(eps: Any) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0 (FGSM size in normalised input units), got {eps!r}")
    return float(eps)


def check_xy(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of normalised inputs (apply ImageData.normalize first)")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, batch_size: int = 1000,
         loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """FGSM (Goodfellow et al. 2015; Pravin et al. §4.1.1): ``x + eps·sign(∇ₓ CE)``.

    ``x``: normalised float inputs on the model's device; the result is a new tensor of
    the same shape (no clamp, as in the official code). The model runs in eval mode;
    its parameters' ``requires_grad`` flags and train/eval flags are restored. The
    gradient of each example depends only on that example (eval mode), so the batch
    size does not change the result. Must be called outside ``torch.inference_mode``.

    ``loss_fn(outputs, y)``: the loss whose input gradient's sign is followed, for a model
    that is not a classifier (e.g. ``torch.nn.functional.mse_loss``); it must return a
    scalar (a batch mean or sum: the sign does not depend on the scale). Default: the
    summed cross-entropy of the logits, as before.
    """
    eps = check_eps(eps)
    return x.detach() + eps * gradient_sign(model, x, y, batch_size=batch_size, loss_fn=loss_fn)


def gradient_sign(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000,
                  loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """``sign(∇ₓ loss)`` per example, the direction of :func:`fgsm` (which is
    ``x + eps·gradient_sign(...)``): one gradient serves every ε of a curve. Same
    conventions and checks as :func:`fgsm` (all before any pass)."""
    check_xy(x, y, batch_size)
    if loss_fn is not None and not callable(loss_fn):
        raise ValueError(f"loss_fn must be a callable (outputs, targets) -> scalar loss, got {loss_fn!r}")
    if torch.is_inference_mode_enabled():
        raise ValueError("fgsm needs gradients: call it outside torch.inference_mode()")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    with attack_mode(model), torch.enable_grad():
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].detach().clone().requires_grad_(True)
            loss = attack_loss(model(xb), y[start:start + batch_size], loss_fn)
            (grad,) = torch.autograd.grad(loss, xb)
            out[start:start + batch_size] = grad.sign()
    return out


def _predictions(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted classes; -1 where the logits are not all finite (counted as wrong)."""
    preds = []
    with attack_mode(model), torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size])
            p = logits.argmax(dim=1)
            p[~torch.isfinite(logits).all(dim=1)] = -1
            preds.append(p)
    return torch.cat(preds)


def adversarial_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
                         batch_size: int = 1000) -> float:
    """Accuracy (%) of ``model`` on ``fgsm(model, x, y, eps)`` (``eps = 0``: clean)."""
    return adversarial_accuracies(model, x, y, [eps], batch_size=batch_size)[0]


def adversarial_accuracies(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float], *,
                           batch_size: int = 1000) -> list[float]:
    """:func:`adversarial_accuracy` at each ε of ``eps_values``, from one gradient
    (:func:`gradient_sign`, computed only if some ε > 0); the same numbers."""
    values = [check_eps(e) for e in eps_values]
    check_xy(x, y, batch_size)
    sign = gradient_sign(model, x, y, batch_size=batch_size) if any(e > 0 for e in values) else None
    return [100.0 * float((_predictions(model, x.detach() + e * sign if e > 0 else x, batch_size) == y)
                          .double().mean()) for e in values]


@dataclasses.dataclass
class EpsilonChoice:
    """The ε of Defs. 7-9 for one model and dataset.

    ``accuracy``: adversarial accuracy (%) at ``eps``; ``target``: the shared target
    (Def. 9); ``clean_accuracy``; ``chance`` = 100/C (Def. 8); ``flipped``: inputs the
    model classifies correctly that the attack at ``eps`` misclassifies (Def. 7 needs
    ``flipped > 0``); ``curve``: every evaluated (eps, accuracy), sorted by eps.
    """

    eps: float
    accuracy: float
    target: float
    clean_accuracy: float
    chance: float
    flipped: int
    correct_clean: int
    curve: pd.DataFrame

    @property
    def def7(self) -> bool:
        """Def. 7: the attack misclassifies some correctly classified inputs."""
        return self.flipped > 0

    @property
    def def8(self) -> bool:
        """Def. 8: the adversarial accuracy stays above chance."""
        return self.accuracy > self.chance

    def summary(self) -> dict[str, Any]:
        return {"eps": self.eps, "adv_accuracy": self.accuracy, "target": self.target,
                "clean_accuracy": self.clean_accuracy, "chance": self.chance, "flipped": self.flipped,
                "def7": self.def7, "def8": self.def8, "evaluations": len(self.curve) - 1}


class TargetUnreachable(ValueError):
    """This model cannot be brought to the shared target accuracy (Defs. 7 and 9): either
    its clean accuracy is not above ``target`` (%), so no attack can bring it *down* to
    the target (Def. 7 cannot hold), or FGSM up to ``eps_max`` leaves it above the target.

    Raised by :func:`select_epsilon`. Unlike a target at or below chance (a plain
    ``ValueError``: the settings alone are wrong), it is a property of the trained model:
    a network that collapsed onto a few classes (e.g. SqueezeNet 1.1 with class logits
    whose ReLU never fires) sits far below the others, and a weak or gradient-masked one
    may resist FGSM. Callers that study many models may record it and go on without this
    model's adversarial response (:func:`paramstress.landscape.study_pair`). Carries
    ``clean_accuracy``, ``target``, ``chance``, ``classes_predicted`` (distinct classes the
    model predicts on the evaluated inputs), ``why`` (a short reason) and ``curve``: the
    evaluated (eps, accuracy, flipped) rows as in :class:`EpsilonChoice` (only ε = 0 when
    the clean accuracy alone rules the target out).
    """

    FIELDS = ("clean_accuracy", "target", "chance", "classes_predicted", "why", "curve")

    def __init__(self, message: str, *, clean_accuracy: float, target: float, chance: float,
                 classes_predicted: int, why: str, curve: pd.DataFrame | None = None) -> None:
        super().__init__(message)
        self.clean_accuracy = clean_accuracy
        self.target = target
        self.chance = chance
        self.classes_predicted = classes_predicted
        self.why = why
        self.curve = pd.DataFrame([{"eps": 0.0, "accuracy": clean_accuracy, "flipped": 0}]) if curve is None else curve

    def summary(self) -> dict[str, Any]:
        """:meth:`EpsilonChoice.summary`'s keys for a model left unattacked (``eps`` and
        ``adv_accuracy`` ``None``, no flipped inputs; ``def7`` ``False`` when the clean
        accuracy rules the target out, else ``None``: not tested; ``def8`` ``None``), plus
        ``classes_predicted`` and the reason under ``excluded``."""
        return {"eps": None, "adv_accuracy": None, "target": self.target, "clean_accuracy": self.clean_accuracy,
                "chance": self.chance, "flipped": 0, "def7": False if self.clean_accuracy <= self.target else None,
                "def8": None, "evaluations": len(self.curve) - 1, "classes_predicted": self.classes_predicted,
                "excluded": self.why}

    def __reduce__(self):  # picklable across worker processes, fields and notes (in __dict__) included
        fields = {k: getattr(self, k) for k in self.FIELDS}
        return functools.partial(type(self), self.args[0], **fields), (), self.__dict__


def chance_level(num_classes: int) -> float:
    """Def. 8's chance accuracy: ``100/C`` % for ``C`` classes."""
    return 100.0 / num_classes


def check_above_chance(target: float, classes: Mapping[str, int], *, name: str = "target_accuracy") -> None:
    """Def. 8 on the settings alone: ``target`` (%) must lie above chance
    (:func:`chance_level`) for every entry of ``classes`` (a label, e.g. a data set, to its
    number of classes); otherwise a ``ValueError`` names each offender and the fix."""
    low = {k: (c, chance_level(c)) for k, c in classes.items() if not target > chance_level(c)}
    if low:
        raise ValueError(f"{name} {target} % is not above chance for "
                         f"{', '.join(f'{k} ({p:.1f} %, {c} classes)' for k, (c, p) in low.items())}: "
                         f"Def. 8 keeps the attacked model above chance; raise {name}")


def select_epsilon(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    target_accuracy: float,
    eps_max: float = 1.0,
    grid: int = 8,
    tol: float = 0.5,
    max_iter: int = 20,
    batch_size: int = 1000,
) -> EpsilonChoice:
    """The FGSM size at which ``model``'s accuracy on ``(x, y)`` (normalised inputs)
    falls to ``target_accuracy`` (%), Defs. 7-9 (see the module docstring).

    ``target_accuracy`` must lie above chance (Def. 8; otherwise ``ValueError``) and
    below the clean accuracy (Def. 7; otherwise :class:`TargetUnreachable`, a
    ``ValueError``), each naming the fix. The grid ``eps_max·k/grid``,
    ``k = 1…grid``, is scanned until the accuracy is at or below the target; if it never
    is, :class:`TargetUnreachable` (raise ``eps_max``). Bisection then stops when the accuracy is
    within ``tol`` points of the target or after ``max_iter`` steps; the evaluated ε
    closest to the target is returned.
    """
    check_xy(x, y, batch_size)
    eps_max = check_eps(eps_max)
    if eps_max == 0:
        raise ValueError("eps_max must be > 0")
    for name, value in (("grid", grid), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be > 0 (accuracy points), got {tol!r}")
    with attack_mode(model), torch.inference_mode():
        num_classes = int(model(x[:1]).shape[1])
    chance = chance_level(num_classes)
    clean_pred = _predictions(model, x, batch_size)
    correct = clean_pred == y
    clean = 100.0 * float(correct.double().mean())
    target = float(target_accuracy)
    check_above_chance(target, {"this model": num_classes})
    classes = int(clean_pred[clean_pred >= 0].unique().numel())
    if not target < clean:
        raise TargetUnreachable(
            f"target_accuracy {target} % is not below the clean accuracy {clean:.2f} % (the model predicts "
            f"{classes} of {num_classes} classes): Def. 7 needs the attack to misclassify correct inputs; choose a "
            "lower target (or train the model)",
            clean_accuracy=clean, target=target, chance=chance, classes_predicted=classes,
            why=f"clean accuracy {clean:.1f} % is not above {target:g} %; predicts {classes} of {num_classes} classes")

    evaluated: dict[float, tuple[float, int]] = {0.0: (clean, 0)}

    def acc(eps: float) -> float:
        if eps not in evaluated:
            pred = _predictions(model, fgsm(model, x, y, eps, batch_size=batch_size), batch_size)
            evaluated[eps] = (100.0 * float((pred == y).double().mean()), int((correct & (pred != y)).sum()))
        return evaluated[eps][0]

    def curve() -> pd.DataFrame:
        return pd.DataFrame([{"eps": e, "accuracy": a, "flipped": f} for e, (a, f) in sorted(evaluated.items())])

    lo, hi = 0.0, None
    for k in range(1, grid + 1):
        e = eps_max * k / grid
        if acc(e) <= target:
            hi = e
            break
        lo = e
    if hi is None:
        left = acc(eps_max)
        raise TargetUnreachable(f"FGSM at eps_max = {eps_max} leaves {left:.2f} % accuracy, above the target "
                                f"{target} %: raise eps_max", clean_accuracy=clean, target=target, chance=chance,
                                classes_predicted=classes, curve=curve(),
                                why=f"FGSM up to ε = {eps_max:g} leaves {left:.1f} % (clean {clean:.1f} %), above {target:g} %")
    for _ in range(max_iter):
        if abs(acc(hi) - target) <= tol or (lo > 0 and abs(acc(lo) - target) <= tol) or hi - lo <= 1e-6 * eps_max:
            break
        mid = 0.5 * (lo + hi)
        if acc(mid) > target:
            lo = mid
        else:
            hi = mid
    candidates = [e for e in evaluated if e > 0]
    best = min(candidates, key=lambda e: (abs(evaluated[e][0] - target), e))
    return EpsilonChoice(eps=best, accuracy=evaluated[best][0], target=target, clean_accuracy=clean, chance=chance,
                         flipped=evaluated[best][1], correct_clean=int(correct.sum()), curve=curve())


#: Labels of :func:`targeted_parameters`.
TARGET_LABELS = ("negative", "invariant", "positive")


def targeted_parameters(responses: pd.DataFrame, tolerance: float = 0.05) -> pd.DataFrame:
    """Fig. 5: the parameters targeted by the adversary, from the filtering responses of
    :func:`paramstress.fragility.responses` (columns ``S_clean``, ``S_adv``: accuracy
    relative to the unfiltered model, per point).

    Adds ``difference = S_adv − S_clean`` and ``effect``: ``"negative"`` where removing
    those parameters hurts the adversarial response more than the clean one by more than
    ``tolerance`` (the adversary's accuracy depends on them: targeted), ``"positive"``
    where it helps the adversarial response more, ``"invariant"`` otherwise. For the
    pulse filter each row is a window of weight values ``[lower, upper]``, so the rows
    say which weight values the adversary targets.
    """
    need = {"S_clean", "S_adv"}
    if not need <= set(responses.columns):
        raise ValueError(f"responses lacks {sorted(need - set(responses.columns))}: "
                         "pass the frame of paramstress.fragility.responses")
    if not (isinstance(tolerance, (int, float)) and tolerance >= 0):
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if responses["S_adv"].isna().all():
        raise ValueError("the responses have no adversarial accuracy: run filter_sweep with eps")
    out = responses.copy()
    out["difference"] = out["S_adv"] - out["S_clean"]
    out["effect"] = np.select([out["difference"] < -tolerance, out["difference"] > tolerance],
                              ["negative", "positive"], default="invariant")
    return out
