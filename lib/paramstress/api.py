"""Stress your own model: both papers' stresses on any ``torch.nn.Module``, in a few lines.

Four functions, each a thin front over the engines the book uses (no second copy of any
algorithm):

- :func:`corruption_indicator`: the worst-case corruption of Sun et al. (AAAI 2021): the
  gradient-based corruption (Eq. 10) of size ``eps`` in the ``L_p`` norm with at most ``n``
  changed parameters, its first-order indicator ``ε‖top_n(g)‖_{p*}`` (Eq. 11) and what it
  does to the loss and the metric (:func:`paramstress.corruption.sweeps.corruption_sweep`);
- :func:`corruption_table`: their Table 1 for your model: gradient-based against random
  corruption over a grid of ``(n, ε)`` (:func:`paramstress.corruption.tables.table1`);
- :func:`vulnerability_probe`: their Fig. 4: the corruption restricted to each component type
  or each layer (:func:`paramstress.corruption.vulnerability.probe`);
- :func:`filter_scores`: the synaptic filtering of Pravin et al. (2023): φ_clean, φ_adv, Δφ
  and the fragile / robust / antifragile labels of every conv and linear layer and of the
  whole network (:func:`paramstress.filtering.filter_sweep`,
  :func:`paramstress.filtering.fragility.scores`).

What every function accepts:

- ``model``: any ``nn.Module`` whose forward takes one batch-first tensor and returns one
  tensor (``output=`` picks the tensor from anything else, e.g. ``lambda out: out.logits``;
  Hugging Face ``transformers`` models get ``.logits`` by default). Frozen parameters
  (``requires_grad=False``) are never corrupted; tied parameters count once. Synaptic filtering
  acts on conv and linear weights, frozen or not, as the paper does.
- ``data``: a pair of tensors ``(inputs, targets)``, a ``torch.utils.data.DataLoader``, a
  map-style ``Dataset`` of ``(input, target)`` pairs, or any iterable of ``(inputs, targets)``
  batches. It is read once and concatenated on ``device`` (the evaluation set must fit there).
- ``loss`` and ``metric``: by default the model is a classifier: the loss is the mean
  cross-entropy and the metric the accuracy in %. Any other model passes ``loss(outputs,
  targets)`` (a scalar batch mean, e.g. ``torch.nn.functional.mse_loss``) and a ``metric``:
  ``"loss"`` (the default when a loss is given: lower is better), ``"accuracy"``, or a callable
  ``(outputs, targets) -> tensor`` (one value per example, or the batch mean) with
  ``higher_is_better`` saying its direction.
- ``device``: where to compute (default: the model's own device). A model elsewhere is moved
  there for the call and moved back afterwards.

Guarantees (tested in ``tests/test_api*.py``): every argument is checked before any forward
pass, and a bad one raises ``ValueError`` naming the fix; the weights, buffers and train/eval
flags are bit-identical afterwards (the engines restore copies saved on entry, never by
subtracting).

Choices stated here:

- the evaluation runs in eval mode under ``torch.inference_mode``; the gradient ``g`` of
  Algorithm 2 is the gradient of the mean loss over *all* of ``data``, in eval mode;
- the classifier default counts an example whose logits are not all finite as wrong (the
  book's rule, :data:`paramstress.engine.sweep.NONFINITE_RULES`);
- :func:`filter_scores` with a metric where lower is better (a loss) takes the response of
  Pravin et al.'s Eq. 13 as ``reference / value`` (1 for the unfiltered model, falling towards
  0 as the error grows) where the paper divides an accuracy by its reference; with a metric
  where higher is better, ``value / reference`` as in the paper.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from paramstress.corruption import operators as C
from paramstress.corruption import sweeps as CS
from paramstress.corruption import tables as TB
from paramstress.corruption import vulnerability as V
from paramstress.engine import sweep as S
from paramstress.filtering import filters as FL
from paramstress.filtering import fragility as FR

__all__ = [
    "PAPER_TABLE1_GRID",
    "METRICS",
    "Indicator",
    "CorruptionTable",
    "Vulnerability",
    "FilterScores",
    "as_tensors",
    "corruption_indicator",
    "corruption_table",
    "vulnerability_probe",
    "filter_scores",
]

#: The ``(n, ε)`` grid of the paper's Table 1 (L∞): ``n = k`` (``None``: every parameter may
#: change) with ε = 1e-4 … 1, and ``n = 100`` with ε = 1e-2 … 1e2.
PAPER_TABLE1_GRID: dict[int | None, tuple[float, ...]] = {
    None: (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    100: (1e-2, 1e-1, 1.0, 10.0, 100.0),
}
#: The metrics named by a string; any callable ``(outputs, targets) -> tensor`` is accepted too.
METRICS: tuple[str, ...] = ("accuracy", "loss")
#: Paper defaults of Fig. 4: ``n = 10`` per component type, ``n = 100`` per layer.
_PROBE_N = {"component": 10, "layer": 100, "custom": 100}
_GROUP_KINDS = {"components": "component", "layers": "layer"}
ATTACKS = ("fgsm", None)


# --------------------------------------------------------------------------------------
# What the model is scored by
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Task:
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric: str  # the column name of the metric
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None  # None: the loss itself
    higher_is_better: bool
    classifier: bool  # the default: mean cross-entropy and accuracy, through the engine's evaluate
    output: Callable[[Any], torch.Tensor] | None


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per example: 100 if the argmax of its (all finite) logits is its target, else 0."""
    _check_logits(outputs, targets)
    return ((outputs.argmax(dim=1) == targets) & torch.isfinite(outputs).all(dim=1)).to(torch.float64) * 100.0


def _check_logits(outputs: torch.Tensor, targets: torch.Tensor) -> None:
    if outputs.ndim != 2 or outputs.shape[0] != targets.shape[0]:
        raise ValueError(f"metric 'accuracy' needs (batch, classes) logits, the model returned shape "
                         f"{tuple(outputs.shape)}: pass loss= and metric='loss' (or a callable metric) for a model "
                         "that is not a classifier, or output= to pick the logits")


def _default_output(model: nn.Module) -> Callable[[Any], torch.Tensor] | None:
    """Hugging Face ``transformers`` models return a ``ModelOutput``: take its ``logits``."""
    if type(model).__module__.split(".")[0] == "transformers":
        return lambda out: out.logits if hasattr(out, "logits") else out[0]
    return None


def _task(model: nn.Module, loss: Any, metric: Any, higher_is_better: Any, output: Any) -> _Task:
    if loss is not None and not callable(loss):
        raise ValueError(f"loss must be a callable (outputs, targets) -> scalar batch mean, e.g. "
                         f"torch.nn.functional.mse_loss, got {loss!r}")
    if output is not None and not callable(output):
        raise ValueError(f"output must be a callable picking the tensor from the model's output, e.g. "
                         f"lambda out: out.logits, got {output!r}")
    if higher_is_better is not None and not isinstance(higher_is_better, bool):
        raise ValueError(f"higher_is_better must be True, False or None, got {higher_is_better!r}")
    if metric is None:
        metric = "accuracy" if loss is None else "loss"
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}: choose one of {list(METRICS)} or pass a callable "
                             "(outputs, targets) -> per-example values, with higher_is_better=")
        direction = metric == "accuracy"
        if higher_is_better is not None and higher_is_better != direction:
            raise ValueError(f"metric {metric!r} is {'higher' if direction else 'lower'} is better; leave "
                             "higher_is_better unset")
        name, score = metric, (_accuracy if metric == "accuracy" else None)
    elif callable(metric):
        if higher_is_better is None:
            raise ValueError("a callable metric needs higher_is_better=True or False (its direction)")
        direction, score = higher_is_better, metric
        name = getattr(metric, "__name__", "metric")
        name = "metric" if not name.isidentifier() or name in ("loss", "drop") else name
    else:
        raise ValueError(f"metric must be one of {list(METRICS)} or a callable, got {metric!r}")
    if output is None:
        output = _default_output(model)
    classifier = loss is None and name == "accuracy" and output is None
    return _Task(loss=loss if loss is not None else F.cross_entropy, metric=name, score=score,
                 higher_is_better=direction, classifier=classifier, output=output)


# --------------------------------------------------------------------------------------
# Data, device and model checks
# --------------------------------------------------------------------------------------

def _check_model(model: Any) -> None:
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if next(model.parameters(), None) is None:
        raise ValueError(f"{type(model).__name__} has no parameters to stress")


def _device(model: nn.Module, device: Any) -> torch.device:
    own = next(model.parameters()).device
    if device is None:
        return own
    try:
        dev = torch.device(device)
    except (TypeError, RuntimeError) as exc:
        raise ValueError(f"device must be None (the model's own), 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") \
            from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but torch sees no CUDA device here; pass device='cpu' or None")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} but MPS is not available here; pass device='cpu' or None")
    return dev


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _check_data(data: Any) -> None:
    """What can be said about ``data`` without reading it."""
    if isinstance(data, torch.Tensor):
        raise ValueError("data is one tensor: pass (inputs, targets), a DataLoader or an iterable of "
                         "(inputs, targets) batches")
    if isinstance(data, (str, bytes, Mapping)) or not isinstance(data, Iterable) and \
            not isinstance(data, Dataset):
        raise ValueError(f"data must be (inputs, targets) tensors, a DataLoader or an iterable of "
                         f"(inputs, targets) batches, got {type(data).__name__}")


def as_tensors(data: Any, device: torch.device | str | None = None, *, batch_size: int = 256
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, targets)`` as two tensors on ``device``, from a pair of tensors, a
    ``DataLoader``, a map-style ``Dataset`` of ``(input, target)`` pairs (read in batches of
    ``batch_size``) or any iterable of ``(inputs, targets)`` batches (concatenated in order).
    ``ValueError`` naming the fix for anything else, for an empty set and for inputs and
    targets of different lengths."""
    _check_data(data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y = data
    else:
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
            data = DataLoader(data, batch_size=_check_batch_size(batch_size))
        xs, ys = [], []
        for i, batch in enumerate(data):
            if isinstance(batch, Mapping) or not isinstance(batch, (tuple, list)) or len(batch) != 2 \
                    or not all(isinstance(t, torch.Tensor) for t in batch):
                raise ValueError(f"batch {i} of data is not an (inputs, targets) pair of tensors "
                                 f"({type(batch).__name__}); a DataLoader must yield (inputs, targets): "
                                 "build it over a TensorDataset(inputs, targets), or pass the two tensors")
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ValueError("data yielded no batches: the evaluation set is empty")
        try:
            x, y = torch.cat(xs), torch.cat(ys)
        except RuntimeError as exc:
            raise ValueError(f"the batches of data do not concatenate ({exc}); every batch's inputs must "
                             "share one shape after the batch dimension") from exc
    if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
        raise ValueError(f"inputs and targets must have one entry per example, got shapes {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if len(y) == 0:
        raise ValueError("the evaluation set is empty")
    if device is not None:
        x, y = x.to(device), y.to(device)
    return x, y


def _check_targets(task: _Task, x: torch.Tensor, y: torch.Tensor) -> None:
    if (task.classifier or task.metric == "accuracy") and (y.is_floating_point() or y.ndim != 1):
        raise ValueError(f"targets of dtype {y.dtype} and shape {tuple(y.shape)} are not class indices: a "
                         "classifier needs integer targets of shape (examples,); for a regressor pass "
                         "loss=torch.nn.functional.mse_loss (the metric is then the loss)")


def _check_output(model: nn.Module, x: torch.Tensor) -> None:
    """One forward pass of the first examples: the model must return one tensor."""
    with S.eval_mode(model), torch.inference_mode():
        out = model(x[:2])
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned {type(out).__name__}, not a tensor: pass output= to pick the tensor "
                         "to score, e.g. output=lambda out: out[0] (or out.logits)")


@contextlib.contextmanager
def _session(model: nn.Module, task: _Task, device: torch.device, x: torch.Tensor) -> Iterator[None]:
    """The model on ``device`` and returning one tensor, for the body; both undone after.
    Checks first that the model's output is one tensor (one forward pass of two examples)."""
    own = next(model.parameters()).device
    moved = own != device
    handle = None
    try:
        if moved:
            model.to(device)
        if task.output is not None:
            pick = task.output
            handle = model.register_forward_hook(lambda _m, _i, out: pick(out))
        _check_output(model, x)
        yield
    finally:
        if handle is not None:
            handle.remove()
        if moved:
            model.to(own)


def _evaluator(model: nn.Module, task: _Task, x: torch.Tensor, y: torch.Tensor, batch_size: int
               ) -> Callable[[], dict[str, float]]:
    """The metrics of the model as it stands: the engine's :func:`~paramstress.engine.sweep.evaluate`
    for a classifier; the mean loss and the mean metric over every example otherwise."""
    if task.classifier:
        return lambda: S.evaluate(model, x, y, batch_size=batch_size)

    def run() -> dict[str, float]:
        loss_sum = metric_sum = 0.0
        with S.eval_mode(model), torch.inference_mode():
            for xb, yb in S.iter_batches(x, y, batch_size):
                out = model(xb)
                if not isinstance(out, torch.Tensor):
                    raise ValueError(f"the model returned {type(out).__name__}, not a tensor: pass output= to pick "
                                     "it, e.g. output=lambda out: out[0]")
                loss = task.loss(out, yb)
                if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
                    raise ValueError("loss must return the batch mean (a scalar tensor), e.g. "
                                     "torch.nn.functional.mse_loss with reduction='mean'")
                loss_sum += float(loss) * len(yb)
                if task.score is not None:
                    value = task.score(out, yb)
                    if not isinstance(value, torch.Tensor) or value.shape not in ((), (len(yb),)):
                        raise ValueError("metric must return one value per example or the batch mean (a scalar "
                                         f"tensor), got {type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
                    metric_sum += float(value.double().sum()) if value.ndim else float(value) * len(yb)
        out = {"loss": loss_sum / len(y)}
        if task.score is not None:
            out[task.metric] = metric_sum / len(y)
        return out

    return run


def _gradient(model: nn.Module, task: _Task, named: C.NamedParameters, x: torch.Tensor, y: torch.Tensor,
              batch_size: int) -> torch.Tensor:
    """Algorithm 2, step 1: ``g = ∂L/∂w`` of the mean loss over every example, in eval mode."""
    return C.subspace_gradient(model, named, task.loss, S.iter_batches(x, y, batch_size))


# --------------------------------------------------------------------------------------
# Parameter corruption (Sun et al. 2021)
# --------------------------------------------------------------------------------------

def _subspace(model: nn.Module, subspace: Any) -> C.NamedParameters:
    """The parameters to corrupt: a Table 1 subspace name, name patterns, or (name, parameter) pairs."""
    if subspace is None or isinstance(subspace, str):
        return C.table1_subspace(model, subspace or "all")
    items = list(subspace)
    if items and all(isinstance(s, str) for s in items):
        named = C.select_parameters(model, names=items)
    else:
        named = C.as_named_parameters(items)
        C.coordinate_kinds(model, named)  # every tensor must be a parameter of this model
    frozen = [name for name, prm in named if not prm.requires_grad]
    if frozen:
        raise ValueError(f"the subspace holds frozen parameters {frozen[:5]} (requires_grad=False): leave them "
                         "out, or call .requires_grad_(True) on them")
    return named


def _n(n: Any, k: int) -> int:
    return C.check_n(k if n is None or (isinstance(n, str) and n == "k") else n, k)


@dataclasses.dataclass(frozen=True)
class Indicator:
    """The worst-case corruption of one size (:func:`corruption_indicator`).

    ``indicator`` is Eq. 11's first-order loss change ``ε‖top_n(g)‖_{p*}``; ``loss`` /
    ``corrupted_loss`` the measured mean loss before and under the corruption; ``clean`` /
    ``corrupted`` the metric (``metric``, e.g. accuracy in %) before and under it; ``drop``
    the damage in the metric's direction (clean − corrupted, or corrupted − clean where lower
    is better). ``float(result)`` is the indicator."""

    eps: float
    p: float
    n: int
    k: int
    indicator: float
    loss: float
    corrupted_loss: float
    metric: str
    clean: float
    corrupted: float
    drop: float

    @property
    def loss_change(self) -> float:
        return self.corrupted_loss - self.loss

    def __float__(self) -> float:
        return float(self.indicator)

    def to_frame(self) -> pd.DataFrame:
        """One row: every field and ``loss_change``."""
        return pd.DataFrame([{**dataclasses.asdict(self), "loss_change": self.loss_change}])


def corruption_indicator(
    model: nn.Module,
    data: Any,
    *,
    eps: float,
    p: float = math.inf,
    n: int | None = None,
    subspace: str | Sequence[str] | Sequence[tuple[str, torch.Tensor]] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metric: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    higher_is_better: bool | None = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    device: Any = None,
    batch_size: int = 256,
) -> Indicator:
    """The worst-case corruption indicator of Sun et al. (2021) for ``model`` on ``data``.

    The gradient-based corruption ``â = argmax_{‖a‖_p = ε, ‖a‖_0 ≤ n} aᵀg`` (Eq. 10) of the
    parameters ``subspace`` (default: every trainable parameter; or ``"no-norm"``,
    ``"weights"``, name patterns such as ``["fc.*"]``, or ``(name, parameter)`` pairs), with
    ``g`` the gradient of the mean ``loss`` over ``data`` (Algorithm 2), is applied once and
    measured; the weights are restored bit-identically. ``n``: how many parameters may change
    (``None``: all of them, ``n = k``); ``p``: the norm (``math.inf``, the paper's L∞, or any
    ``p >= 1``). Returns an :class:`Indicator` (``float()`` of it is Eq. 11's ``ε‖top_n(g)‖_{p*}``).
    ``loss``, ``metric``, ``output``, ``device``: see :mod:`paramstress.api`.

    Example::

        import paramstress
        result = paramstress.corruption_indicator(net, (x_test, y_test), eps=1e-3)
        print(float(result), result.drop)   # Eq. 11, and the accuracy it costs (points)
    """
    _check_model(model)
    task = _task(model, loss, metric, higher_is_better, output)
    eps, p = C.check_eps(eps), C.check_p(p)
    named = _subspace(model, subspace)
    k = C.subspace_size(named)
    n = _n(n, k)
    batch_size = _check_batch_size(batch_size)
    _check_data(data)
    dev = _device(model, device)
    x, y = as_tensors(data, dev, batch_size=batch_size)
    _check_targets(task, x, y)
    with _session(model, task, dev, x):
        g = _gradient(model, task, named, x, y, batch_size)
        rows = CS.corruption_sweep(model, named, g, evaluator=_evaluator(model, task, x, y, batch_size),
                                   eps_values=[eps], n_values=[n], p=p, methods=("gradient",), trials=1)
    row = rows.iloc[0]
    m = task.metric
    clean, corrupted = float(row[f"base_{m}"]), float(row[m])
    return Indicator(eps=eps, p=p, n=n, k=k, indicator=float(row["indicator"]), loss=float(row["base_loss"]),
                     corrupted_loss=float(row["loss"]), metric=m, clean=clean, corrupted=corrupted,
                     drop=(clean - corrupted) if task.higher_is_better else (corrupted - clean))


@dataclasses.dataclass
class CorruptionTable:
    """Table 1 of Sun et al. for one model (:func:`corruption_table`): ``rows``, one tidy row
    per grid point (:func:`paramstress.corruption.sweeps.corruption_sweep`'s columns:
    method, p, n, eps, trial, k, seed, the metric, loss, indicator, base and delta columns),
    and ``table``, the paper's layout (:func:`paramstress.corruption.tables.table1`)."""

    rows: pd.DataFrame
    table: pd.DataFrame
    metric: str
    higher_is_better: bool

    def _repr_html_(self) -> str:
        return self.table._repr_html_()

    def plot(self, title: str | None = None) -> Any:
        """Fig. 3 of the paper for this model: the metric against ε (log axis), gradient-based
        (one line) against random corruption (mean ± sd over the trials), one panel per ``n``."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        rows = self.rows.assign(
            n_label=[("k" if int(n) == int(k) else f"{int(n)}") for n, k in zip(self.rows["n"], self.rows["k"])],
            corruption=self.rows["method"].map(TB.METHOD_LABELS).map(
                {"Random": "random (Eq. 5)", "Proposed": "gradient-based (Eq. 10)"}))
        panels = list(dict.fromkeys(rows["n_label"]))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.6), squeeze=False)
        for ax, label in zip(axes[0], panels):
            part = rows[rows["n_label"] == label]
            sns.lineplot(data=part, x="eps", y=self.metric, hue="corruption", style="corruption", markers=True,
                         dashes=False, errorbar="sd", ax=ax,
                         hue_order=["random (Eq. 5)", "gradient-based (Eq. 10)"])
            ax.axhline(float(part[f"base_{self.metric}"].iloc[0]), color="grey", ls=":", lw=1, label="clean")
            ax.set(xscale="log", xlabel=f"ε (L{_p_label(part['p'].iloc[0])}, n = {label})",
                   ylabel="accuracy (%)" if self.metric == "accuracy" else self.metric, title=f"n = {label}")
            ax.legend(fontsize=8)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def _p_label(p: Any) -> str:
    return "∞" if math.isinf(float(p)) else f"{float(p):g}"


def _table1_grid(eps: Any, n: Any, k: int) -> list[tuple[int, list[float]]]:
    """``[(n, [ε, ...]), ...]`` from the arguments of :func:`corruption_table`, checked."""
    if isinstance(eps, Mapping):
        if n is not None:
            raise ValueError("give the grid either as eps={n: [ε, ...]} or as eps=[...] and n=[...], not both")
        grid = [(key, values) for key, values in eps.items()]
    else:
        ns = list(n) if isinstance(n, (list, tuple)) else ([n] if n is not None else
                                                           (list(PAPER_TABLE1_GRID) if eps is None else [None]))
        grid = []
        for value in ns:
            if eps is None:
                key = None if value is None or value == "k" or value == k else value
                if key not in PAPER_TABLE1_GRID:
                    raise ValueError(f"n = {value} has no paper ε grid (the paper's are for n = k and n = 100): "
                                     "pass eps=[...]")
                grid.append((value, list(PAPER_TABLE1_GRID[key])))
            else:
                grid.append((value, eps))
    out = []
    for key, values in grid:
        if isinstance(values, (int, float)):
            values = [values]
        values = [C.check_eps(e) for e in values]
        if not values:
            raise ValueError(f"the ε list for n = {key} is empty")
        if key is not None and key != "k" and isinstance(key, int) and not isinstance(key, bool) and key > k:
            raise ValueError(f"n = {key} exceeds the subspace size k = {k} of this model; use n <= k (or n=None: "
                             "n = k), e.g. eps={None: [...], " + f"{min(10, k)}: [...]" + "}")
        out.append((_n(key, k), values))
    return out


def corruption_table(
    model: nn.Module,
    data: Any,
    *,
    eps: Sequence[float] | Mapping[int | None, Sequence[float]] | None = None,
    n: Sequence[int | None] | int | None = None,
    trials: int = 5,
    p: float = math.inf,
    seed: int = 0,
    subspace: str | Sequence[str] | Sequence[tuple[str, torch.Tensor]] | None = None,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metric: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    higher_is_better: bool | None = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    device: Any = None,
    batch_size: int = 256,
    decimals: int | None = None,
    label: str | None = None,
) -> CorruptionTable:
    """Table 1 of Sun et al. (2021) for ``model`` on ``data``: the metric under gradient-based
    corruption (Eq. 10, "Proposed") and under random corruption (Eq. 5, "Random": the mean ±
    sd of ``trials`` seeded draws) of the same size, over a grid of ``(n, ε)``.

    The grid: by default the paper's (:data:`PAPER_TABLE1_GRID`: ``n = k`` with ε = 1e-4…1
    and ``n = 100`` with ε = 1e-2…1e2); ``eps=[...]`` alone uses those sizes with ``n = k``;
    ``eps=[...], n=[...]`` every combination; ``eps={n: [...], ...}`` one list per ``n``
    (``None``: ``n = k``). One gradient over ``data`` serves every row; weights are restored
    after each. ``label``: the column header (default: the model's class name);
    ``decimals``: digits shown (1 for accuracy, 3 otherwise). Other arguments as in
    :func:`corruption_indicator`.
    """
    _check_model(model)
    task = _task(model, loss, metric, higher_is_better, output)
    p = C.check_p(p)
    named = _subspace(model, subspace)
    k = C.subspace_size(named)
    grid = _table1_grid(eps, n, k)
    for n_value, eps_values in grid:
        CS.corruption_grid(eps_values, [n_value], CS.CORRUPTION_METHODS, trials, p, k=k)  # checks trials too
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if decimals is not None and (isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0):
        raise ValueError(f"decimals must be an integer >= 0, got {decimals!r}")
    batch_size = _check_batch_size(batch_size)
    _check_data(data)
    dev = _device(model, device)
    x, y = as_tensors(data, dev, batch_size=batch_size)
    _check_targets(task, x, y)
    frames = []
    with _session(model, task, dev, x):
        g = _gradient(model, task, named, x, y, batch_size)
        evaluator = _evaluator(model, task, x, y, batch_size)
        for n_value, eps_values in grid:
            frames.append(CS.corruption_sweep(model, named, g, evaluator=evaluator, eps_values=eps_values,
                                              n_values=[n_value], p=p, trials=trials, seed=seed))
    rows = pd.concat(frames, ignore_index=True)
    label = label or type(model).__name__
    rows.insert(0, "task", label)
    short = {"accuracy": "Acc", "loss": "Loss"}.get(task.metric, task.metric)
    table = TB.table1(rows, metric=task.metric, metric_label=short, higher_is_better=task.higher_is_better,
                      decimals=decimals if decimals is not None else (1 if task.metric == "accuracy" else 3))
    return CorruptionTable(rows=rows, table=table, metric=task.metric, higher_is_better=task.higher_is_better)


@dataclasses.dataclass
class Vulnerability:
    """Fig. 4 of Sun et al. for one model (:func:`vulnerability_probe`): ``frame``, one row per
    (group kind, group, ε) with :func:`paramstress.corruption.vulnerability.probe`'s columns
    (``drop``: the damage in the metric's direction; ``indicator``: Eq. 11), and ``best_eps``,
    per group kind with two groups or more, the ε of the grid that separates the groups best
    (:func:`paramstress.corruption.vulnerability.choose_eps`)."""

    frame: pd.DataFrame
    best_eps: dict[str, float]
    metric: str

    def _repr_html_(self) -> str:
        return self.frame._repr_html_()

    def plot(self, title: str | None = None) -> Any:
        """Fig. 4 as heat maps: the drop of each group (columns, in order) at each ε (rows), one
        panel per group kind; the ε of :attr:`best_eps` boxed."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        kinds = list(dict.fromkeys(self.frame["group_kind"]))
        widths = [self.frame.loc[self.frame.group_kind == kd, "group"].nunique() for kd in kinds]
        fig, axes = plt.subplots(1, len(kinds), figsize=(0.9 * sum(widths) + 2.5 * len(kinds), 3.8), squeeze=False,
                                 gridspec_kw={"width_ratios": widths})
        unit = "points" if self.metric == "accuracy" else self.metric
        for ax, kind in zip(axes[0], kinds):
            part = self.frame[self.frame.group_kind == kind]
            order = list(dict.fromkeys(part.sort_values("position")["group"]))
            table = part.pivot_table(index="eps", columns="group", values="drop", sort=False).reindex(columns=order)
            table.index = [f"{e:g}" for e in table.index]
            sns.heatmap(table, annot=True, fmt=".2g", cmap="rocket_r", ax=ax, annot_kws={"size": 8},
                        cbar_kws={"label": f"drop ({unit})"})
            chosen = self.best_eps.get(kind)
            if chosen is not None and f"{chosen:g}" in list(table.index):
                ax.add_patch(plt.Rectangle((0, list(table.index).index(f"{chosen:g}")), len(order), 1, fill=False,
                                           lw=2, ec="C0"))
            ax.set(title=f"by {kind}", xlabel="", ylabel="ε")
            ax.tick_params(axis="x", labelrotation=90)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        return fig


def _probe_groups(model: nn.Module, groups: Any) -> dict[str, dict[str, C.NamedParameters]]:
    if isinstance(groups, str):
        groups = [groups]
    if isinstance(groups, Mapping):
        if not groups:
            raise ValueError("groups is empty: give {name: parameters, ...}, 'components' or 'layers'")
        trainable = {id(prm) for prm in model.parameters() if prm.requires_grad}
        custom: dict[str, C.NamedParameters] = {}
        for name, spec in groups.items():
            if isinstance(spec, nn.Module):
                inside = {id(prm) for prm in spec.parameters()}
                named = [(pn, prm) for pn, prm in model.named_parameters() if id(prm) in inside]
            elif isinstance(spec, str) or (isinstance(spec, Sequence) and spec and all(isinstance(s, str) for s in spec)):
                named = C.select_parameters(model, names=[spec] if isinstance(spec, str) else list(spec))
            else:
                named = C.as_named_parameters(list(spec))
            if not named:
                raise ValueError(f"group {name!r} selects no parameter of this model")
            frozen = [pn for pn, prm in named if id(prm) not in trainable]
            if frozen:
                raise ValueError(f"group {name!r} holds parameters {frozen[:5]} that are frozen or not this model's: "
                                 "probe trainable parameters of the model only")
            custom[str(name)] = named
        return {"custom": custom}
    kinds = list(groups) if isinstance(groups, (list, tuple)) else None
    if not kinds or any(kd not in _GROUP_KINDS for kd in kinds) or len(set(kinds)) != len(kinds):
        raise ValueError(f"groups must be 'components', 'layers', both as a list, or a mapping name → parameters "
                         f"(a module, name patterns or (name, parameter) pairs), got {groups!r}")
    build = {"component": V.component_groups, "layer": V.layer_groups}
    return {_GROUP_KINDS[kd]: build[_GROUP_KINDS[kd]](model) for kd in kinds}


def vulnerability_probe(
    model: nn.Module,
    data: Any,
    *,
    eps: float | Sequence[float],
    groups: str | Sequence[str] | Mapping[str, Any] = "components",
    n: int | Mapping[str, int] | None = None,
    p: float = math.inf,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metric: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    higher_is_better: bool | None = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    device: Any = None,
    batch_size: int = 256,
) -> Vulnerability:
    """Fig. 4 of Sun et al. (2021) for ``model``: the gradient-based corruption (Eq. 10)
    restricted to one group of parameters at a time, at each ε of ``eps``.

    ``groups``: ``"components"`` (one group per module type: conv, FC, batch norm, embedding,
    attention, layer norm, other; the paper's ``n = 10``), ``"layers"`` (one group per layer
    position, input to output; ``n = 100``), ``["components", "layers"]``, or your own
    ``{name: parameters}`` (a module, name patterns, or ``(name, parameter)`` pairs;
    ``n = 100``). ``n`` overrides those (one int, or per kind: ``{"component": 10, "layer":
    100}``); a group smaller than ``n`` changes whole. One gradient of the mean ``loss`` over
    ``data`` is sliced per group. Returns a :class:`Vulnerability`. Other arguments as in
    :func:`corruption_indicator`.
    """
    _check_model(model)
    task = _task(model, loss, metric, higher_is_better, output)
    eps_values = [eps] if isinstance(eps, (int, float)) and not isinstance(eps, bool) else list(eps)
    eps_values = [C.check_eps(e) for e in eps_values]
    if not eps_values:
        raise ValueError("eps is empty: give the corruption sizes to probe, e.g. eps=[0.1, 1.0]")
    p = C.check_p(p)
    group_map = _probe_groups(model, groups)
    if n is None:
        n_map: int | dict[str, int] = {kind: _PROBE_N[kind] for kind in group_map}
    elif isinstance(n, Mapping):
        n_map = dict(n)
    else:
        n_map = n
    for kind in group_map:  # the engine's own check, before any data is read
        value = n_map.get(kind) if isinstance(n_map, dict) else n_map
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"n for {kind!r} must be a positive int, got {value!r}")
    batch_size = _check_batch_size(batch_size)
    _check_data(data)
    dev = _device(model, device)
    x, y = as_tensors(data, dev, batch_size=batch_size)
    _check_targets(task, x, y)
    named = [(name, prm) for name, prm in model.named_parameters() if prm.requires_grad]
    if not named:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to probe")
    with _session(model, task, dev, x):
        gradient = V.gradient_by_name(_gradient(model, task, named, x, y, batch_size), named)
        frame = V.probe(model, group_map, gradient, eps_values=eps_values,
                        evaluator=_evaluator(model, task, x, y, batch_size), metric=task.metric,
                        higher_is_better=task.higher_is_better, n=n_map, p=p)
    frame = frame.loc[:, ~frame.columns.duplicated()]  # metric "loss": the loss columns once
    best = {}
    for kind in group_map:
        part = frame[frame.group_kind == kind]
        if part["group"].nunique() >= 2:
            best[kind] = float(V.choose_eps(part, kind, by=()).iloc[0]["eps"])
    return Vulnerability(frame=frame, best_eps=best, metric=task.metric)


# --------------------------------------------------------------------------------------
# Synaptic filtering (Pravin et al. 2023)
# --------------------------------------------------------------------------------------

@dataclasses.dataclass
class FilterScores:
    """Synaptic-filtering scores of one model (:func:`filter_scores`): ``scores``, one row per
    scope (each conv/linear layer, then ``global``) of the combined filter (Eq. 13): ``phi_clean``,
    ``phi_adv``, ``delta_phi`` (Eqs. 14-16; the adversarial two NaN without an attack), their
    ``_label`` (fragile / robust / antifragile, Defs. 4-6) and ``_norm`` (scaled to [−0.5, 0.5],
    φ_clean with φ_adv, Δφ alone); ``per_filter``: the same for each filter h_a, h_b, h_c;
    ``sweep``: every filtered network's row (:func:`paramstress.filtering.filter_sweep`; with a
    metric other than accuracy its ``*_accuracy`` columns hold that metric's mean)."""

    scores: pd.DataFrame
    per_filter: pd.DataFrame
    sweep: pd.DataFrame
    metric: str

    def _repr_html_(self) -> str:
        return self.scores._repr_html_()

    def plot(self, title: str | None = None) -> Any:
        """The three scores of every scope as bars (raw areas; below 0 fragile, above 0
        antifragile), scopes in network order."""
        import matplotlib.pyplot as plt
        import seaborn as sns

        names = {"phi_clean": "φ_clean", "phi_adv": "φ_adv", "delta_phi": "Δφ"}
        present = [c for c in names if self.scores[c].notna().any()]
        long = self.scores.melt(id_vars=["layer"], value_vars=present, var_name="score", value_name="value")
        long["score"] = long["score"].map(names)
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * self.scores["layer"].nunique() + 2), 3.8))
        sns.barplot(data=long, x="layer", y="value", hue="score", ax=ax, order=list(self.scores["layer"]))
        ax.axhline(0, color="black", lw=0.8)
        ax.set(xlabel="", ylabel="score (area)", title=title or "Synaptic-filtering scores (combined filter, Eq. 13)")
        ax.tick_params(axis="x", labelrotation=45)
        fig.tight_layout()
        return fig


def filter_scores(
    model: nn.Module,
    data: Any,
    *,
    attack: str | None = "fgsm",
    eps: float | None = None,
    T: int = 25,
    layers: Sequence[str] | None = None,
    filters: Sequence[str] = FL.FILTERS,
    adversarial: str = "fixed",
    reference: str = "own",
    tolerance: float = 0.0,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    metric: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    higher_is_better: bool | None = None,
    output: Callable[[Any], torch.Tensor] | None = None,
    device: Any = None,
    batch_size: int = 256,
) -> FilterScores:
    """The synaptic-filtering scores of Pravin et al. (2023) for ``model``: every conv and
    linear weight tensor (``layers``: their module names, and/or ``"global"`` for all of them
    together; default: each layer, then global) is filtered by the high-pass, low-pass and
    pulse filters (Eqs. 7-9) at ``T`` thresholds, and the model is measured on clean inputs
    and, with ``attack="fgsm"``, on FGSM inputs of size ``eps`` (in the units of the model's
    inputs; crafted once against the unfiltered model, ``adversarial="fixed"``, the paper's
    text, or against each filtered one, ``"regenerate"``, the official code). The areas
    between the responses and the baseline (Eqs. 10-16, Simpson's rule) are φ_clean, φ_adv
    and Δφ, labelled fragile below ``-tolerance``, antifragile above ``+tolerance``, robust
    in between. ``reference``: what a response is divided by
    (:data:`paramstress.filtering.fragility.REFERENCES` except ``"chance"``; default the
    unfiltered model's own score). ``attack=None``: clean only (e.g. a model whose inputs
    are token ids). Returns a :class:`FilterScores`. Other arguments as in
    :func:`corruption_indicator`.
    """
    _check_model(model)
    task = _task(model, loss, metric, higher_is_better, output)
    if attack not in ATTACKS:
        raise ValueError(f"attack must be 'fgsm' or None (clean inputs only), got {attack!r}")
    if attack is None and eps is not None:
        raise ValueError("eps is the FGSM size: give attack='fgsm' with it, or leave eps=None")
    if attack == "fgsm" and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps)
                             or eps <= 0):
        raise ValueError(f"attack='fgsm' needs eps=, the FGSM size (> 0, in the model's input units), got {eps!r}; "
                         "or pass attack=None for clean inputs only")
    T = FL.check_T(T)
    filters = [FL.check_filter(f) for f in filters]
    if not filters:
        raise ValueError(f"filters is empty; choose some of {list(FL.FILTERS)}")
    if adversarial not in FL.ADVERSARIAL_MODES:
        raise ValueError(f"adversarial must be one of {list(FL.ADVERSARIAL_MODES)}, got {adversarial!r}")
    if reference == "chance":
        raise ValueError("reference='chance' needs the chance score of a classifier; use "
                         "paramstress.filtering.fragility.scores on FilterScores.sweep, or another reference")
    FR.check_reference(reference, None)
    FR.classify([0.0], tolerance)  # checks the tolerance
    available = FL.filterable_layers(model)
    scopes = [*available, FL.GLOBAL] if layers is None else list(layers)
    unknown = [s for s in scopes if s != FL.GLOBAL and s not in available]
    if unknown or not scopes or len(set(scopes)) != len(scopes):
        raise ValueError(f"layers must be distinct names among the conv/linear layers {available} or "
                         f"{FL.GLOBAL!r}, got {layers!r}")
    batch_size = _check_batch_size(batch_size)
    _check_data(data)
    dev = _device(model, device)
    x, y = as_tensors(data, dev, batch_size=batch_size)
    _check_targets(task, x, y)
    if attack == "fgsm" and not x.is_floating_point():
        raise ValueError(f"FGSM perturbs the inputs, which are {x.dtype} here (token ids?): pass attack=None")
    score = None
    if not task.classifier:
        score = task.score if task.score is not None else task.loss
    with _session(model, task, dev, x):
        sweep = FL.filter_sweep(model, x, y, scopes=scopes, filters=filters, T=T,
                                eps=float(eps) if attack else None, adversarial=adversarial,
                                batch_size=batch_size, score=score,
                                loss_fn=None if task.classifier else task.loss,
                                reuse_activations=task.output is None)
    rated = sweep
    if not task.higher_is_better:  # responses as reference / value (module docstring)
        rated = sweep.copy()
        for col in ("clean_accuracy", "adv_accuracy", "clean_reference", "adv_reference"):
            rated[col] = 1.0 / rated[col].astype(float)
    table = FR.scores(rated, reference=reference)
    table = FR.label_scores(table, tolerance)
    table = FR.normalise(table, by=["filter"])
    order = {name: i for i, name in enumerate(scopes)}
    table = table.assign(position=table["layer"].map(order)).sort_values(["filter", "position"], kind="stable")
    keep = ["layer", "position", "filter", "T", *FR.SCORES, *[f"{s}_label" for s in FR.SCORES],
            *[f"{s}_norm" for s in FR.SCORES]]
    table = table[[c for c in keep if c in table.columns]].reset_index(drop=True)
    combined = table[table["filter"] == "combined"]
    if combined.empty:  # fewer than the three filters: no Eq. 13 combination
        combined = table
    return FilterScores(scores=combined.reset_index(drop=True), per_filter=table[table["filter"] != "combined"]
                        .reset_index(drop=True), sweep=sweep, metric=task.metric)
