"""Synaptic filtering (Pravin et al. 2023, "Fragility, Robustness and Antifragility in
Deep Learning", §3.1 Def. 1-2 and §4.1.2 Eqs. 7-9): remove the weights of a layer, or of
the whole network, whose values fall in a window set by a threshold α, and measure the
network on clean and adversarial inputs at every threshold.

What is filtered (§3.1, §4.3; the official code agrees): the ``weight`` tensors of the
convolution and linear modules only. Biases, batch-norm parameters and buffers are never
touched. A filtered weight is set to exactly 0; nothing is rescaled.

The three filters (Eqs. 7-9), over a *stress axis* ``λ_t = t/(T−1)``, ``t = 0…T−1``
(the paper's normalised thresholds; ``T`` is a parameter: the paper says 100, the
official code 25), for a parameter range ``[lo, hi]``:

- ``h_a``, ideal high-pass (Eq. 7): zero every ``w ≤ α`` with ``α = lo + λ(hi − lo)``;
- ``h_b``, ideal low-pass (Eq. 8): zero every ``w ≥ α`` with ``α = hi − λ(hi − lo)``,
  i.e. the same sweep "from the opposite direction", so that for both filters the
  stress grows with ``λ`` (one extreme weight removed at ``λ = 0``, every weight at
  ``λ = 1``);
- ``h_c``, pulse (Eq. 9): zero the window ``α − δ/2 ≤ w ≤ α + δ/2`` of width
  ``δ = (hi − lo)/T`` centred on ``α = lo + λ(hi − lo)``.

All windows are closed intervals. ``α`` is computed as ``(1 − λ)·lo + λ·hi`` in float64
(exactly ``lo`` and ``hi`` at the ends) and rounded once to the weights' dtype; the
same rounded bounds are used for the mask and for the removal count, and are the ones
reported.

Scopes (§3.1): *local* analysis filters one conv/linear weight tensor over its own
``[min, max]``; *global* analysis filters all conv/linear weights together over the
network's true range ``[min, max]`` of all of them (``global_range="true"``) or over
the official code's fixed ``[−1, 1]`` (``global_range="fixed"``). The global filter
masks *every* layer (the official code writes back only the last one; not copied),
and its pulse really removes the window (the code's removes nothing; not copied).

Removed counts (Eq. 10's numerator): the number of weights that were *nonzero* and are
set to 0; a weight that was already 0 is not counted as removed. The denominator is the
number of nonzero weights of the scope before filtering (the largest number a filter
can remove); ``fraction_removed`` and ``baseline = 1 − fraction_removed`` (Eq. 10) use
it. A scope whose weights are all zero is refused (Def. 1 requires ``θ ≠ 0``).

Masks are applied in place (:func:`filtered`), and the overwritten values are copied
back on exit, so the weights are bit-identical afterwards, also when the body raises.

:func:`filter_sweep` runs the grid (scopes × filters × thresholds) through the shared
engine :func:`paramstress.sweep.sweep` (one tidy row per point, resumable CSV). What
makes it fast, all of it exact:

- *mask deduplication*: a point is identified by the set of nonzero weights it
  removes, an index range ``[i, j)`` in the sorted nonzero values of its scope
  (ties included, so equal ranges mean bit-identical filtered networks); a point whose
  range was already evaluated reuses that result, and a point that removes nothing
  reuses the unperturbed model's result;
- *activation reuse* (local scopes): the model is traced with ``torch.fx``; every
  node that does not depend on the filtered weight is computed once per scope (the
  "head", up to the frontier of values that the rest of the graph reads), and each
  threshold runs only the nodes downstream of the filtered module (the "tail"). The
  split is checked against the whole model on one batch and dropped (full forward
  passes) if the logits differ, if the model cannot be traced, or if the cached
  frontier would exceed ``cache_bytes``;
- *one pass for the clean score and the attack* (regenerate mode, local scopes, accuracy):
  the head is run once per scope with gradients from the clean inputs (its graph kept), and
  each threshold runs the tail once with gradients: its logits are the clean accuracy's
  (bit-identical to an inference pass) and their loss's input gradient, through the tail and
  the kept head graph, is FGSM's (bit-identical to :func:`paramstress.adversarial.fgsm`
  on the whole model); only the adversarial examples then go through the whole network;
- evaluation under ``torch.inference_mode`` in eval mode, whole batches sliced from
  tensors already on the device, no model copies.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import fx, nn

from paramstress.engine import sweep as S

__all__ = [
    "FILTERS",
    "FILTER_LABELS",
    "GLOBAL",
    "FILTERABLE_TYPES",
    "Scope",
    "Window",
    "Removal",
    "filterable_layers",
    "make_scope",
    "stress_axis",
    "window",
    "removal",
    "filtered",
    "channels_last_on_cpu",
    "filter_grid",
    "filter_sweep",
    "GraphSplit",
    "split_at",
    "mode_cost",
]

#: The three synaptic filters of Eqs. 7-9.
FILTERS: tuple[str, ...] = ("h_a", "h_b", "h_c")
FILTER_LABELS: dict[str, str] = {
    "h_a": "h_a: high-pass (zero w ≤ α)",
    "h_b": "h_b: low-pass (zero w ≥ α)",
    "h_c": "h_c: pulse (zero |w − α| ≤ δ/2)",
}
#: The scope name of the global analysis (all conv/linear weights together).
GLOBAL = "global"
#: Modules whose ``weight`` is filtered; everything else is left untouched.
FILTERABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
GLOBAL_RANGES = ("true", "fixed")
ADVERSARIAL_MODES = ("fixed", "regenerate")
FIXED_RANGE = (-1.0, 1.0)

Transform = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------------------
# Scopes, thresholds and windows (Def. 1, Eqs. 7-9)
# --------------------------------------------------------------------------------------

def filterable_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the conv and linear modules whose
    ``weight`` synaptic filtering removes (§3.1, §4.3), in module order."""
    names = [name for name, mod in model.named_modules()
             if isinstance(mod, FILTERABLE_TYPES) and isinstance(getattr(mod, "weight", None), torch.Tensor)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no conv or linear weights to filter "
                         f"(synaptic filtering acts on {[t.__name__ for t in FILTERABLE_TYPES]} weights)")
    return names


@dataclasses.dataclass(frozen=True, eq=False)
class Scope:
    """What one analysis filters: a layer's weight (local) or all of them (global).

    ``lo``/``hi``: the range the thresholds span, in the weights' dtype; ``total``: the
    number of weights; ``nonzero``: how many are nonzero (Eq. 10's denominator);
    ``sorted_nonzero``: the nonzero values, sorted (the key of mask deduplication).
    """

    name: str
    params: tuple[tuple[str, torch.Tensor], ...]
    lo: float
    hi: float
    total: int
    nonzero: int
    sorted_nonzero: torch.Tensor
    range_kind: str

    @property
    def is_global(self) -> bool:
        return self.name == GLOBAL


def _check_global_range(global_range: Any) -> tuple[str, tuple[float, float] | None]:
    if isinstance(global_range, str):
        if global_range not in GLOBAL_RANGES:
            raise ValueError(f"global_range must be 'true' (the network's [min, max]), 'fixed' (the official "
                             f"code's [-1, 1]) or a (lo, hi) pair, got {global_range!r}")
        return global_range, (FIXED_RANGE if global_range == "fixed" else None)
    try:
        lo, hi = (float(v) for v in global_range)
    except (TypeError, ValueError):
        raise ValueError(f"global_range must be 'true', 'fixed' or a (lo, hi) pair, got {global_range!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"a global_range pair needs finite lo < hi, got {global_range!r}")
    return f"[{lo:g}, {hi:g}]", (lo, hi)


def make_scope(model: nn.Module, layer: str, *, global_range: Any = "true") -> Scope:
    """The scope of a local analysis (``layer``, a name from :func:`filterable_layers`,
    over that weight's own ``[min, max]``) or of the global one (``layer="global"``,
    every conv/linear weight over ``global_range``: ``"true"`` = their joint
    ``[min, max]``, ``"fixed"`` = ``[−1, 1]``, or an explicit ``(lo, hi)``)."""
    layers = filterable_layers(model)
    modules = dict(model.named_modules())
    if layer == GLOBAL:
        names = layers
        kind, fixed = _check_global_range(global_range)
    elif layer in layers:
        names = [layer]
        kind, fixed = "layer", None
    else:
        raise ValueError(f"unknown layer {layer!r}: filter one of the conv/linear layers {layers} or {GLOBAL!r}")
    params = tuple((f"{n}.weight", modules[n].weight) for n in names)
    dtypes = {p.dtype for _, p in params}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise ValueError(f"the weights of scope {layer!r} must share one floating dtype, got {sorted(map(str, dtypes))}")
    flat = torch.cat([p.detach().reshape(-1) for _, p in params])
    if not bool(torch.isfinite(flat).all()):
        raise ValueError(f"scope {layer!r} has non-finite weights; synaptic filtering needs a finite network")
    nonzero_values = flat[flat != 0]
    if nonzero_values.numel() == 0:
        raise ValueError(f"every weight of scope {layer!r} is zero: Def. 1 requires a trained network (θ ≠ 0); "
                         "load the trained weights before filtering")
    if fixed is None:
        lo, hi = float(flat.min()), float(flat.max())
    else:
        lo, hi = fixed
    if not lo < hi:
        raise ValueError(f"scope {layer!r} has a single weight value ({lo}); there is no range to sweep")
    return Scope(name=layer, params=params, lo=lo, hi=hi, total=flat.numel(), nonzero=int(nonzero_values.numel()),
                 sorted_nonzero=nonzero_values.sort().values, range_kind=kind)


def check_T(T: Any) -> int:
    try:
        T = operator.index(T)
    except TypeError:
        raise ValueError(f"T (the number of thresholds) must be an integer, got {T!r}") from None
    if T < 3:
        raise ValueError(f"T must be >= 3 (Simpson's rule over the thresholds needs 3 points), got {T}; "
                         "the paper uses 100, the official code 25")
    return T


def stress_axis(T: int) -> np.ndarray:
    """``λ_t = t/(T−1)``, ``t = 0…T−1``: the thresholds normalised to [0, 1] (Def. 1)."""
    T = check_T(T)
    return np.arange(T, dtype=np.float64) / (T - 1)


@dataclasses.dataclass(frozen=True)
class Window:
    """One filter at one threshold: zero every weight with ``lower ≤ w ≤ upper``
    (``±inf`` for the open side of ``h_a``/``h_b``). ``alpha`` is the threshold α."""

    filter: str
    t: int
    lam: float
    alpha: float
    lower: float
    upper: float


def check_filter(name: str) -> str:
    if name not in FILTERS:
        raise ValueError(f"unknown filter {name!r}; choose from {list(FILTERS)} "
                         "(h_a high-pass, h_b low-pass, h_c pulse)")
    return name


def _round_to(value: float, dtype: torch.dtype) -> float:
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))


def window(filter: str, t: int, T: int, lo: float, hi: float, dtype: torch.dtype = torch.float32) -> Window:
    """The window of filter ``filter`` at threshold index ``t`` of ``T`` over ``[lo, hi]``
    (Eqs. 7-9; see the module docstring), with bounds rounded to ``dtype``."""
    check_filter(filter)
    T = check_T(T)
    if not (0 <= t < T):
        raise ValueError(f"threshold index t must be in 0..{T - 1}, got {t}")
    lam = t / (T - 1)
    if filter == "h_b":
        alpha = (1.0 - lam) * hi + lam * lo
        lower, upper = alpha, math.inf
    else:
        alpha = (1.0 - lam) * lo + lam * hi
        if filter == "h_a":
            lower, upper = -math.inf, alpha
        else:
            half = (hi - lo) / (2 * T)
            lower, upper = alpha - half, alpha + half
    return Window(filter, t, lam, _round_to(alpha, dtype), _round_to(lower, dtype), _round_to(upper, dtype))


@dataclasses.dataclass(frozen=True)
class Removal:
    """What a window removes from a scope: the index range ``[start, stop)`` of the
    removed values among the sorted nonzero weights (the deduplication key), and the
    counts of Eq. 10."""

    start: int
    stop: int
    nonzero: int
    total: int

    @property
    def removed(self) -> int:
        return max(0, self.stop - self.start)

    @property
    def fraction_removed(self) -> float:
        return self.removed / self.nonzero

    @property
    def baseline(self) -> float:
        """Eq. 10: ``1 − removed / N`` (N = nonzero weights of the scope)."""
        return 1.0 - self.fraction_removed

    @property
    def key(self) -> tuple[int, int] | None:
        """``None`` when nothing nonzero is removed (the unperturbed network)."""
        return (self.start, self.stop) if self.stop > self.start else None


def removal(scope: Scope, win: Window) -> Removal:
    """The exact set of nonzero weights ``win`` removes from ``scope`` (Eq. 10's count;
    weights already zero are not counted)."""
    s = scope.sorted_nonzero
    bounds = torch.tensor([win.lower, win.upper], dtype=s.dtype, device=s.device)
    start = int(torch.searchsorted(s, bounds[:1], right=False))
    stop = int(torch.searchsorted(s, bounds[1:], right=True))
    return Removal(start, max(start, stop), scope.nonzero, scope.total)


def _mask(p: torch.Tensor, win: Window) -> torch.Tensor:
    lower = torch.tensor(win.lower, dtype=p.dtype, device=p.device)
    upper = torch.tensor(win.upper, dtype=p.dtype, device=p.device)
    return (p >= lower) & (p <= upper)


@contextlib.contextmanager
def channels_last_on_cpu(model: nn.Module) -> Iterator[None]:
    """Hold ``model``'s contiguous 4-D CPU parameters channels-last for the body of the ``with``.

    oneDNN's convolutions run faster on channels-last weights: a regenerate-mode sweep of a
    ResNet-18 on 28 × 28 inputs took 1.47× less time on one thread, with every accuracy of its
    90 points unchanged (``benchmarks/README.md``). The parameter objects stay the same (only
    their storage order changes, so masks and views taken inside the body apply to them); on
    exit each gets its own storage back, holding the same values, also when the body raises.
    Parameters on another device, or already channels-last, are left alone."""
    moved = [(p, p.data) for p in S.channels_last_weights(model).values() if p.is_contiguous()]
    try:
        with torch.no_grad():
            for p, _ in moved:
                p.data = S.channels_last_copy(p.data)
        yield
    finally:
        with torch.no_grad():
            for p, original in moved:  # the same values back into the parameter's own storage
                original.copy_(p.data)
                p.data = original


@contextlib.contextmanager
def filtered(scope: Scope, win: Window) -> Iterator[Removal]:
    """Apply ``win`` to every tensor of ``scope`` in place (filtered weights set to 0,
    Eq. 1's ``θ ⊙ m``) for the body of the ``with``; yields the :class:`Removal`.

    The overwritten values are saved and copied back on exit, so the weights are
    bit-identical afterwards, also when the body (or the masking itself) raises.
    """
    info = removal(scope, win)
    saved: list[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for _, p in scope.params:
                m = _mask(p, win)
                hits = int(m.sum())
                if hits == 0:
                    continue
                # few hits: keep only the overwritten values; many: a copy of the tensor is cheaper
                saved.append((p, m, p.detach()[m].clone()) if hits * 8 < m.numel() else (p, None, p.detach().clone()))
                p.masked_fill_(m, 0)
        yield info
    finally:
        with torch.no_grad():
            for p, m, values in reversed(saved):
                if m is None:
                    p.copy_(values)
                else:
                    p[m] = values


# --------------------------------------------------------------------------------------
# Activation reuse: split the traced graph at the filtered weight
# --------------------------------------------------------------------------------------

class GraphSplit:
    """A traced model cut at the modules that use a set of parameters.

    ``head(x)`` returns the *frontier*: the values, computed without those parameters,
    that the downstream part reads; ``tail(*frontier)`` runs only the nodes that depend
    on the parameters and returns the model's output. Both share the model's modules
    (no copies), so masking the model's weights changes ``tail``'s result.
    """

    def __init__(self, traced: fx.GraphModule, params: Sequence[torch.Tensor]):
        ids = {id(p) for p in params}
        nodes = list(traced.graph.nodes)
        sources = set()
        for node in nodes:
            if node.op == "call_module":
                mod = traced.get_submodule(node.target)
                if any(id(p) in ids for p in mod.parameters()):
                    sources.add(node)
            elif node.op == "get_attr":
                obj = _fetch_attr(traced, node.target)
                if id(obj) in ids:
                    sources.add(node)
        if not sources:
            raise ValueError("the traced graph never uses the filtered parameters")
        down = set()
        for node in nodes:
            if node in sources or any(a in down for a in node.all_input_nodes):
                down.add(node)
        output = next(n for n in nodes if n.op == "output")
        down.discard(output)
        frontier: list[fx.Node] = []
        for node in nodes:
            if node in down:
                for a in node.all_input_nodes:
                    if a not in down and a not in frontier:
                        frontier.append(a)
        if not any(a in down for a in output.all_input_nodes):
            raise ValueError("the model's output does not depend on the filtered parameters")
        self.frontier_names = [n.name for n in frontier]

        head = fx.Graph()
        env: dict[fx.Node, fx.Node] = {}
        for node in nodes:
            if node in down or node.op == "output":
                continue
            env[node] = head.node_copy(node, lambda n: env[n])
        head.output(tuple(env[n] for n in frontier))
        tail = fx.Graph()
        tenv: dict[fx.Node, fx.Node] = {}
        for n in frontier:
            tenv[n] = tail.placeholder(n.name)
        for node in nodes:
            if node in down:
                tenv[node] = tail.node_copy(node, lambda n: tenv[n])
        tail.output(fx.node.map_arg(output.args[0], lambda n: tenv[n]))
        self.head = fx.GraphModule(traced, head)
        self.head.graph.eliminate_dead_code()
        self.head.recompile()
        self.tail = fx.GraphModule(traced, tail)
        # placeholders the head still needs (the model's inputs)
        self.head_inputs = [n.name for n in head.nodes if n.op == "placeholder"]


def _fetch_attr(module: nn.Module, target: str) -> Any:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def split_at(model: nn.Module, params: Sequence[torch.Tensor], traced: fx.GraphModule | None = None) -> GraphSplit:
    """:class:`GraphSplit` of ``model`` (traced with ``torch.fx`` unless ``traced`` is
    given) at the modules that use ``params``. Raises if the model cannot be traced."""
    if traced is None:
        traced = fx.symbolic_trace(model)
    return GraphSplit(traced, params)


# --------------------------------------------------------------------------------------
# Evaluation helpers
# --------------------------------------------------------------------------------------

#: Eval mode for the duration of a block, every module's own mode restored after
#: (the sweep engine's helper; one definition for every stress).
eval_mode = S.eval_mode


def _correct(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per example: predicted class right and logits all finite (a non-finite example is wrong)."""
    if logits.ndim != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
    return (logits.argmax(dim=1) == y) & torch.isfinite(logits).all(dim=1)


# --------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------

_KEY_COLUMNS = ["layer", "filter", "t"]
SWEEP_COLUMNS = ["layer", "filter", "t", "T", "lam", "alpha", "lower", "upper", "range", "removed", "nonzero", "total",
            "fraction_removed", "baseline", "clean_accuracy", "adv_accuracy", "clean_reference", "adv_reference",
            "eps", "adversarial"]


def filter_grid(scopes: Sequence[str], filters: Sequence[str] = FILTERS, T: int = 25,
                tags: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Grid points ``{**tags, layer, filter, t}``, scope-major (each scope's setup is
    done once), then filter, then threshold index."""
    T = check_T(T)
    filters = [check_filter(f) for f in filters]
    if not filters:
        raise ValueError(f"filters is empty; choose some of {list(FILTERS)}")
    if not scopes:
        raise ValueError("no scope to filter: give layer names and/or 'global'")
    if len(set(scopes)) != len(scopes):
        raise ValueError(f"scopes contain duplicates: {list(scopes)}")
    tags = dict(tags or {})
    return [{**tags, "layer": s, "filter": f, "t": t} for s in scopes for f in filters for t in range(T)]


def _check_inputs(x: torch.Tensor, y: torch.Tensor, transform: Transform | None, attack: bool = True) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be tensors (already on the model's device)")
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    # integer inputs are a model's own (token ids) when no attack needs their gradient; uint8 are images
    if transform is None and not x.is_floating_point() and (attack or x.dtype == torch.uint8):
        raise ValueError(f"x is {x.dtype}: pass transform= (e.g. ImageData.normalize) to turn images into "
                         "the model's normalised float inputs")


def filter_sweep(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scopes: Sequence[str] | None = None,
    filters: Sequence[str] = FILTERS,
    T: int = 25,
    global_range: Any = "true",
    eps: float | None = None,
    adversarial: str | None = "fixed",
    transform: Transform | None = None,
    batch_size: int = 1000,
    tags: Mapping[str, Any] | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    dedup: bool = True,
    reuse_activations: bool = True,
    cache_bytes: int = 2 << 30,
    progress: bool = False,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Synaptic filtering of ``model`` (Defs. 1-2, Eqs. 7-9) over ``scopes`` × ``filters``
    × ``T`` thresholds, measured on clean inputs and under FGSM (external stress,
    Def. 3).

    ``scopes``: layer names from :func:`filterable_layers` and/or ``"global"`` (default:
    every layer, then global). ``x``/``y``: the evaluation set on the model's device;
    ``transform`` turns ``x`` into the model's normalised inputs (applied once).
    ``eps``: the FGSM size in normalised units (``None``: clean only). ``adversarial``:
    ``"fixed"`` — one adversarial set crafted against the unfiltered model and reused at
    every point (the paper's text) — or ``"regenerate"`` — crafted anew against each
    filtered model (the official code). ``tags`` (e.g. model, dataset, epoch, seed) are
    copied into every row and are part of the key of the resumable ``csv_path``
    (:func:`paramstress.sweep.sweep`).

    One row per point: tags, layer, filter, t, T, lam (λ_t), alpha, lower/upper (the
    window), range (``layer``, ``true``, ``fixed``), removed / nonzero / total,
    fraction_removed, baseline (Eq. 10), clean_accuracy, adv_accuracy (%),
    clean_reference / adv_reference (the unfiltered model's), eps, adversarial.
    ``dedup`` and ``reuse_activations`` change the speed, never the numbers (see the
    module docstring). The frame's ``attrs["stats"]`` counts the evaluations done.
    Weights, buffers and train/eval flags are as before afterwards. On a CPU the model's
    4-D (convolution) weights are held channels-last for the sweep
    (:func:`channels_last_on_cpu`), which oneDNN convolves faster.

    Models that are not classifiers (:mod:`paramstress.api`): ``score(outputs, targets)``
    returns each example's score (shape ``(batch,)``, higher is better) or the batch's mean
    score (a scalar); the ``clean_accuracy`` / ``adv_accuracy`` columns (and their
    references) then hold the mean score over the evaluation set instead of the accuracy in
    %, and batches never mix clean and adversarial examples. ``loss_fn(outputs, targets)``
    (a scalar) is the loss FGSM follows (:func:`paramstress.filtering.adversarial.fgsm`;
    default cross-entropy). Without ``score`` the accuracy is computed as before, and
    integer inputs (token ids) are accepted when no attack is asked for (``eps=None``).
    """
    _check_inputs(x, y, transform, attack=eps is not None)
    if score is not None and not callable(score):
        raise ValueError(f"score must be a callable (outputs, targets) -> per-example scores, got {score!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    layers = filterable_layers(model)
    if scopes is None:
        scopes = [*layers, GLOBAL]
    scopes = list(scopes)
    unknown = [s for s in scopes if s != GLOBAL and s not in layers]
    if unknown:
        raise ValueError(f"unknown scopes {unknown}: use conv/linear layer names {layers} or {GLOBAL!r}")
    range_kind, _ = _check_global_range(global_range)
    T = check_T(T)
    if eps is None:
        adversarial = None
    else:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0 (FGSM size in normalised units), got {eps!r}")
        if adversarial not in ADVERSARIAL_MODES:
            raise ValueError(f"adversarial must be one of {ADVERSARIAL_MODES} when eps is given, got {adversarial!r}")
    tags = dict(tags or {})
    clash = [k for k in tags if k in SWEEP_COLUMNS]
    if clash:
        raise ValueError(f"tags {clash} clash with the sweep's own columns; rename them")
    points = filter_grid(scopes, filters, T, tags)

    from paramstress.filtering import adversarial as A  # local import: adversarial imports this module's helpers

    state: dict[str, Any] = {"scope": None, "split": None, "traced": None, "trace_failed": False}
    stats = {"points": len(points), "evaluations": 0, "reused_points": 0, "split_layers": 0, "full_layers": 0,
             "attack_split_layers": 0}
    cache: dict[tuple[str, Any], dict[str, float]] = {}
    memo: dict[str, Any] = {}

    def inputs() -> dict[str, torch.Tensor]:
        """The normalised clean inputs ``xn`` (once; a normal tensor, so FGSM can
        differentiate through it) and the evaluation set ``X``/``Y``: the clean inputs
        followed, in fixed mode, by the one adversarial set of the unfiltered model, so
        that both go through the network in the same passes."""
        if "xn" not in memo:
            with torch.no_grad():
                xn = torch.cat([transform(xb) for xb in x.split(batch_size)]) if transform is not None else x
            memo["xn"] = xn.detach()
            if adversarial == "fixed":
                x_adv = A.fgsm(model, memo["xn"], y, float(eps), batch_size=batch_size, loss_fn=loss_fn)
                memo["X"], memo["Y"] = torch.cat([memo["xn"], x_adv]), torch.cat([y, y])
            else:
                memo["X"], memo["Y"] = memo["xn"], y
        return memo

    def chunks(data: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``batch_size``; with a ``score``, the clean part (the first ``len(y)``)
        and the adversarial part are batched apart, so that a batch mean belongs to one part."""
        if score is None or len(labels) <= len(y):
            return list(zip(data.split(batch_size), labels.split(batch_size)))
        n = len(y)
        return chunks(data[:n], labels[:n]) + chunks(data[n:], labels[n:])

    def batches(data: torch.Tensor, labels: torch.Tensor) -> list[tuple[tuple[torch.Tensor], torch.Tensor]]:
        return [((xb,), yb) for xb, yb in chunks(data, labels)]

    def counts(forward: Callable[..., torch.Tensor], parts: Sequence[tuple[Sequence[torch.Tensor], torch.Tensor]]
               ) -> tuple[float, float | None]:
        """Accuracies (%) of the clean part (first len(y) examples) and of the rest (with a
        ``score``: the mean scores)."""
        if score is not None:
            return _mean_scores(forward, parts)
        with torch.inference_mode():
            correct = torch.cat([_correct(forward(*inp), yb) for inp, yb in parts])
        n = len(y)
        clean = 100.0 * int(correct[:n].sum()) / n
        return clean, (100.0 * int(correct[n:].sum()) / n if len(correct) > n else None)

    def _mean_scores(forward: Callable[..., torch.Tensor],
                     parts: Sequence[tuple[Sequence[torch.Tensor], torch.Tensor]]) -> tuple[float, float | None]:
        sums = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)]
        seen = 0
        with torch.inference_mode():
            for inp, yb in parts:
                value = score(forward(*inp), yb)
                if not isinstance(value, torch.Tensor) or value.shape not in ((), (len(yb),)):
                    raise ValueError(f"score must return one value per example (shape ({len(yb)},)) or the batch "
                                     f"mean (a scalar), got {type(value).__name__} {tuple(getattr(value, 'shape', ()))}")
                total = value.detach().to(torch.float64).sum() if value.ndim else value.detach().double() * len(yb)
                sums[0 if seen < len(y) else 1] += total.cpu()
                seen += len(yb)
        n = len(y)
        return float(sums[0]) / n, (float(sums[1]) / n if seen > n else None)

    def reference() -> dict[str, float]:
        if "reference" not in memo:
            d = inputs()
            clean, adv = counts(model, batches(d["X"], d["Y"]))
            ref = {"clean": clean, "adv": adv}
            if adversarial == "regenerate":
                xa = A.fgsm(model, d["xn"], y, float(eps), batch_size=batch_size, loss_fn=loss_fn)
                ref["adv"] = counts(model, batches(xa, y))[0]
            memo["reference"] = ref
            stats["evaluations"] += 1
        return memo["reference"]

    def setup(name: str) -> None:
        if state["scope"] is not None and state["scope"].name == name:
            return
        state["scope"], state["split"] = None, None
        scope = make_scope(model, name, global_range=global_range)
        split = None
        if reuse_activations and not scope.is_global and not state["trace_failed"]:
            split = _build_split(scope)
        state["scope"], state["split"] = scope, split
        stats["split_layers" if split is not None else "full_layers"] += 1
        stats["attack_split_layers"] += int(split is not None and "attack" in split)

    def _build_split(scope: Scope) -> dict[str, Any] | None:
        if state["traced"] is None:
            try:
                state["traced"] = fx.symbolic_trace(model)
            except Exception:  # noqa: BLE001 - untraceable models are evaluated whole
                state["trace_failed"] = True
                return None
        try:
            split = GraphSplit(state["traced"], [p for _, p in scope.params])
        except ValueError:
            return None
        d = inputs()
        if adversarial == "regenerate" and score is None:
            return _build_attack_split(split, d)
        cached: list[tuple[tuple[torch.Tensor, ...], torch.Tensor]] = []
        size = 0
        with torch.inference_mode():
            for xb, yb in chunks(d["X"], d["Y"]):
                front = split.head(xb)
                front = tuple(front) if isinstance(front, (tuple, list)) else (front,)
                size += sum(v.numel() * v.element_size() for v in front if isinstance(v, torch.Tensor))
                if size > cache_bytes:
                    return None
                cached.append((front, yb))
            # the split must reproduce the whole model exactly (checked on the first batch)
            front, yb = cached[0]
            if not torch.equal(split.tail(*front), model(d["X"][:len(yb)])):
                return None
        return {"split": split, "batches": cached}

    def _build_attack_split(split: GraphSplit, d: dict[str, torch.Tensor]) -> dict[str, Any] | None:
        """Regenerate mode: the head run once with gradients from each batch of clean
        inputs (leaf tensors), its graph kept for every threshold's FGSM backward."""
        cached: list[tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]] = []
        size = 0
        with A.attack_mode(model), torch.enable_grad():
            for xb, yb in chunks(d["xn"], y):
                leaf = xb.detach().clone().requires_grad_(True)
                front = split.head(leaf)
                front = tuple(front) if isinstance(front, (tuple, list)) else (front,)
                # the kept graph holds about as much again as its frontier
                size += 2 * sum(v.numel() * v.element_size() for v in front if isinstance(v, torch.Tensor))
                if size > cache_bytes:
                    return None
                cached.append((leaf, front, yb))
            leaf, front, yb = cached[0]
            tail = split.tail(*front)
        with torch.inference_mode():
            if not torch.equal(tail.detach(), model(d["xn"][:len(yb)])):
                return None
        return {"split": split, "attack": cached}

    def attack_through_split(split: dict[str, Any]) -> tuple[float, torch.Tensor]:
        """The clean accuracy (%) and the FGSM examples of the filtered model from one
        gradient pass of the tail per batch (see the module docstring)."""
        correct, crafted = 0, []
        with A.attack_mode(model), torch.enable_grad():
            for leaf, front, yb in split["attack"]:
                logits = split["split"].tail(*front)
                correct += int(_correct(logits.detach(), yb).sum())
                loss = A.attack_loss(logits, yb, loss_fn)
                (grad,) = torch.autograd.grad(loss, leaf, retain_graph=True)
                crafted.append(leaf.detach() + float(eps) * grad.sign())
        return 100.0 * correct / len(y), torch.cat(crafted)

    current: dict[str, Any] = {}

    @contextlib.contextmanager
    def apply(point: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        reference()  # the unfiltered model's inputs, adversarial set and accuracies, before any mask
        setup(point["layer"])
        scope: Scope = state["scope"]
        dtype = scope.params[0][1].dtype
        win = window(point["filter"], int(point["t"]), T, scope.lo, scope.hi, dtype)
        info = removal(scope, win)
        key = info.key
        current["key"] = None if key is None else (scope.name, key)
        extra = {"T": T, "lam": win.lam, "alpha": win.alpha, "lower": win.lower, "upper": win.upper,
                 "range": scope.range_kind, "removed": info.removed, "nonzero": info.nonzero, "total": info.total,
                 "fraction_removed": info.fraction_removed, "baseline": info.baseline}
        known = current["key"] is None or (dedup and current["key"] in cache)
        if known:
            yield extra
        else:
            with filtered(scope, win):
                yield extra

    def measure(point: Mapping[str, Any]) -> dict[str, Any]:
        ref = reference()
        key = current["key"]
        if key is None:
            result = {"clean": ref["clean"], "adv": ref.get("adv")}
            stats["reused_points"] += 1
        elif dedup and key in cache:
            result = cache[key]
            stats["reused_points"] += 1
        else:
            result = evaluate_filtered()
            stats["evaluations"] += 1
            if dedup:
                cache[key] = result
        return {"clean_accuracy": result["clean"],
                "adv_accuracy": result["adv"] if adversarial is not None else math.nan,
                "clean_reference": ref["clean"],
                "adv_reference": ref["adv"] if adversarial is not None else math.nan,
                "eps": float(eps) if eps is not None else math.nan,
                "adversarial": adversarial or "none"}

    def evaluate_filtered() -> dict[str, float | None]:
        d = inputs()
        split = state["split"]
        if split is not None and "attack" in split:
            clean, xa = attack_through_split(split)
            return {"clean": clean, "adv": counts(model, batches(xa, y))[0]}
        if split is not None:
            clean, adv = counts(split["split"].tail, split["batches"])
        else:
            clean, adv = counts(model, batches(d["X"], d["Y"]))
        if adversarial == "regenerate":
            xa = A.fgsm(model, d["xn"], y, float(eps), batch_size=batch_size, loss_fn=loss_fn)
            adv = counts(model, batches(xa, y))[0]
        return {"clean": clean, "adv": adv}

    with eval_mode(model), channels_last_on_cpu(model):
        try:
            table = S.sweep(points, apply, measure, csv_path, resume=resume, keys=[*tags, *_KEY_COLUMNS],
                            progress=progress, desc="filtering")
        finally:
            state.clear()
            memo.clear()
    if not table.empty:
        ordered = [*tags, *[c for c in SWEEP_COLUMNS if c in table.columns]]
        table = table[ordered + [c for c in table.columns if c not in ordered]]
    table.attrs["stats"] = stats
    return table


def mode_cost(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, scopes: Sequence[str], eps: float,
              T: int = 25, transform: Transform | None = None, batch_size: int = 1000,
              global_range: Any = "true") -> pd.DataFrame:
    """What regenerating the adversarial examples costs: :func:`filter_sweep` of ``scopes``
    run once per mode of :data:`ADVERSARIAL_MODES`, uncached, one after the other on the
    same model and inputs. One row per mode: ``seconds`` (wall time of the sweep),
    ``points``, ``evaluations`` (filtered networks evaluated), ``fgsm_sets`` (adversarial
    sets crafted: one in fixed mode, one per evaluated network and one for the unfiltered
    network when regenerating) and ``relative`` (seconds over the fixed mode's). The
    arguments are checked by the first sweep before anything is timed; the model is left
    as it was."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a positive FGSM size in normalised units, got {eps!r}")
    rows = []
    for mode in ADVERSARIAL_MODES:
        started = time.perf_counter()
        table = filter_sweep(model, x, y, scopes=list(scopes), T=T, global_range=global_range, eps=float(eps),
                             adversarial=mode, transform=transform, batch_size=batch_size, csv_path=None)
        seconds = time.perf_counter() - started
        stats = table.attrs["stats"]
        evaluations = int(stats["evaluations"]) - 1  # the first evaluation is the unfiltered reference
        rows.append({"adversarial": mode, "seconds": seconds, "points": int(stats["points"]),
                     "evaluations": evaluations, "fgsm_sets": 1 if mode == "fixed" else evaluations + 1})
    out = pd.DataFrame(rows)
    out["relative"] = out["seconds"] / float(out.loc[out["adversarial"] == "fixed", "seconds"].iloc[0])
    return out
