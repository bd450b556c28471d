"""Parameter corruption (Sun et al., AAAI 2021, "Exploring the Vulnerability of Deep
Neural Networks: A Study of Parameter Corruption").

Notation follows the paper. ``w ∈ R^k`` is a *parameter subspace*: an ordered set of
parameter tensors of a model, flattened and concatenated in that order (see
:func:`select_parameters`). ``g = ∂L(w; D)/∂w`` is the gradient of the loss over a
dataset ``D``, ``ε > 0`` the size of the corruption, ``p ∈ [1, ∞]`` the norm,
``p* = p/(p−1)`` its dual exponent, and ``n ≤ k`` the number of coordinates that may
change. What each function implements:

- Eq. 1, the corruption constraint ``S(ε, p, n) = {a : ‖a‖_p = ε, ‖a‖_0 ≤ n}``:
  every corruption returned here lies in ``S`` (:func:`solve_corruption`).
- Eq. 10, gradient-based corruption ``â = argmax_{a∈S} aᵀg``, in closed form
  ``â = ε · sgn(h) ⊙ |h|^{1/(p−1)} / ‖|h|^{1/(p−1)}‖_p`` with ``h = top_n(g)``
  (:func:`solve_corruption`, :func:`gradient_corruption`, :func:`top_n`).
- Eq. 5, random corruption: the same maximiser with ``r ~ N(0, I)`` in place of ``g``
  and *exactly the same normaliser*, so ``ε`` means the same thing for both methods
  (:func:`random_corruption`). (The public re-implementation that adds ``ε·N(0, 1)``
  unnormalised makes random corruption look stronger than it is; not done here.)
- Eq. 11, the first-order estimate of the indicator
  ``f(â) = âᵀg = ε ‖top_n(g)‖_{p*}`` (:func:`indicator`).
- Algorithm 2, step 1: the gradient ``g`` over a stated dataset, computed once
  (:func:`subspace_gradient`); step 3, ``w ← w + a``, applied in place and undone
  bit-identically (:func:`corrupted`).

Choices the paper leaves open, made here (and to be stated wherever results are shown):

- ``top_n`` keeps the ``n`` largest ``|v_i|``; ties are broken by position (the
  lower flat index wins), so the result is deterministic on every device.
- ``p = 1`` puts all of ``ε`` on the single largest ``|v_i|`` (first one on ties),
  the limit of Eq. 10 as ``p → 1``; ``p = ∞`` gives ``ε · sgn(h)`` on the top-n
  support, the limit as ``p → ∞``. Fractional ``p`` (1.5, …) uses the general formula.
- Coordinates of the top-n support where ``v`` is exactly zero stay zero
  (``sgn(0) = 0``): they do not change ``aᵀv``, so the corruption touches only the
  nonzero coordinates (``‖a‖_0 ≤ n`` still holds, ``‖a‖_p = ε`` exactly, for
  ``p = ∞`` too). A vector that is zero on the whole support (``v = 0``) has no
  direction to follow and raises :class:`ZeroDirectionError`.
- The closed form is computed in float64, with ``|h|`` divided by its maximum before
  taking powers (no overflow for ``p`` near 1, no underflow for ``p`` large), and is
  returned in the dtype asked for (by default that of ``v``).
- Applying a corruption rounds once: ``w ← fl(w + a)`` is computed in float64 and
  cast to the parameter's dtype; the originals are restored by copying saved exact
  copies back, never by subtracting.
"""
from __future__ import annotations

import contextlib
import fnmatch
import itertools
import math
import operator
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Union

import torch
from torch import nn

__all__ = [
    "NamedParameters",
    "ZeroDirectionError",
    "select_parameters",
    "SUBSPACES",
    "NORM_TYPES",
    "parameter_kind",
    "table1_subspace",
    "coordinate_kinds",
    "support_share",
    "as_named_parameters",
    "subspace_size",
    "parameter_vector",
    "dual_exponent",
    "lp_norm",
    "top_n",
    "solve_corruption",
    "gradient_corruption",
    "random_corruption",
    "random_draw",
    "mean_loss_gradient",
    "indicator",
    "first_order_change",
    "subspace_gradient",
    "corrupted",
]

#: A parameter subspace: ``(name, parameter)`` pairs in a fixed order. The flat vector
#: of the subspace is the concatenation of the flattened tensors in this order.
NamedParameters = list[tuple[str, nn.Parameter]]
ParamsLike = Union[Sequence[tuple[str, torch.Tensor]], Sequence[torch.Tensor]]


class ZeroDirectionError(ValueError):
    """The vector to follow (Eq. 10's ``h = top_n(v)``) is zero: no direction exists."""


# --------------------------------------------------------------------------------------
# Subspace selection (the paper's "k-dimensional subspace w")
# --------------------------------------------------------------------------------------

def _preview(items: Sequence[str], limit: int = 30) -> str:
    items = list(items)
    shown = ", ".join(repr(s) for s in items[:limit])
    if len(items) > limit:
        shown += f", ... ({len(items) - limit} more)"
    return "[" + shown + "]"


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, type)):
        return [value]
    return list(value)


def _name_matches(pattern: str, name: str) -> bool:
    if pattern.startswith("re:"):
        try:
            return re.fullmatch(pattern[3:], name) is not None
        except re.error as exc:
            raise ValueError(f"invalid regular expression in name pattern {pattern!r}: {exc}") from exc
    return fnmatch.fnmatchcase(name, pattern)


def select_parameters(
    model: nn.Module,
    names: str | Sequence[str] | None = None,
    module_types: type[nn.Module] | Sequence[type[nn.Module]] | None = None,
    layers: str | Sequence[str] | None = None,
    include_bias: bool = True,
) -> NamedParameters:
    """The parameter subspace ``w`` (paper, "Parameter Corruption": a k-dimensional
    subspace of the parameter space), as ``(name, parameter)`` pairs in the order of
    ``model.named_parameters()``.

    Criteria combine with AND; the entries of one criterion combine with OR.

    - ``names``: patterns on the full parameter name, shell-style (``fnmatch``, e.g.
      ``"layer1.*.bn?.weight"``) or, prefixed with ``re:``, a regular expression
      that must match the whole name (e.g. ``"re:layer[12]\\..*"``).
    - ``module_types``: keep parameters held directly by a module of one of these
      types (e.g. ``nn.BatchNorm2d`` selects its ``weight`` and ``bias``).
    - ``layers``: module names (as in ``model.named_modules()``, e.g. ``"layer1"`` or
      ``"layer1.0.conv1"``); keep the parameters inside those modules.
    - ``include_bias=False`` drops every parameter whose own name is ``bias``.

    With no criterion, every parameter is selected. Every pattern, type and layer must
    select something and the result must be non-empty; otherwise ``ValueError``
    naming what exists.
    """
    all_named = list(model.named_parameters())
    if not all_named:
        raise ValueError(f"{type(model).__name__} has no parameters to select from")
    owner: dict[str, nn.Module] = {}
    for mod_name, mod in model.named_modules():
        for local, _ in mod.named_parameters(recurse=False):
            owner.setdefault(f"{mod_name}.{local}" if mod_name else local, mod)
    param_names = [name for name, _ in all_named]
    keep = set(param_names)

    patterns = _as_list(names)
    if patterns:
        chosen: set[str] = set()
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"names must be strings (patterns), got {pattern!r}")
            hits = {name for name in param_names if _name_matches(pattern, name)}
            if not hits:
                raise ValueError(
                    f"no parameter name matches {pattern!r} (fnmatch; prefix 're:' for a regex); "
                    f"the parameters are {_preview(param_names)}"
                )
            chosen |= hits
        keep &= chosen

    types = _as_list(module_types)
    if types:
        present = sorted({type(owner[name]).__name__ for name in param_names})
        chosen = set()
        for t in types:
            if not (isinstance(t, type) and issubclass(t, nn.Module)):
                raise TypeError(f"module_types must be nn.Module subclasses, got {t!r}")
            hits = {name for name in param_names if isinstance(owner[name], t)}
            if not hits:
                raise ValueError(
                    f"no module of type {t.__name__} holds parameters in this model; "
                    f"the module types holding parameters are {_preview(present)}"
                )
            chosen |= hits
        keep &= chosen

    prefixes = _as_list(layers)
    if prefixes:
        module_names = [name for name, _ in model.named_modules() if name]
        chosen = set()
        for layer in prefixes:
            if not isinstance(layer, str) or layer not in module_names:
                children = [name for name, _ in model.named_children()]
                raise ValueError(
                    f"unknown layer {layer!r}: layers are module names as in model.named_modules(); "
                    f"the top-level ones are {_preview(children)} (all: {_preview(module_names, 15)})"
                )
            hits = {name for name in param_names if name.startswith(layer + ".")}
            if not hits:
                raise ValueError(f"layer {layer!r} holds no parameters")
            chosen |= hits
        keep &= chosen

    if not include_bias:
        keep = {name for name in keep if name.rsplit(".", 1)[-1] != "bias"}

    selected = [(name, prm) for name, prm in all_named if name in keep]
    if not selected:
        raise ValueError(
            "the selection is empty: names="
            f"{patterns or None}, module_types={[t.__name__ for t in types] or None}, "
            f"layers={prefixes or None}, include_bias={include_bias} select nothing together; "
            f"the parameters are {_preview(param_names)}"
        )
    return selected


#: Module types whose parameters are *norm-layer affine parameters* (scale and shift of a
#: normalisation): batch norm, layer norm, group norm, instance norm (RMSNorm where torch has it).
NORM_TYPES: tuple[type[nn.Module], ...] = tuple(t for t in (
    nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
    getattr(nn, "RMSNorm", None)) if t is not None)

#: The subspaces of Table 1 (Sun et al. 2021) a model can be corrupted in (:func:`table1_subspace`):
#:
#: - ``"all"``: every trainable parameter, as ``model.named_parameters()`` lists them (the
#:   weights, the biases and the norm layers' affine scale and shift): the book's choice until
#:   issue 30, and what the paper's caption says literally ("all parameters can be corrupted,
#:   that is, k stands for the total number of model parameters");
#: - ``"no-norm"``: all but the norm layers' affine parameters (:data:`NORM_TYPES`);
#: - ``"weights"``: the weight tensors only: no biases (own name ``bias`` or ending in
#:   ``_bias``, e.g. attention's ``in_proj_bias``), no norm-layer affine parameters; for the
#:   book's ResNets, the convolution and linear weights.
SUBSPACES: tuple[str, ...] = ("all", "no-norm", "weights")


def check_subspace(subspace: Any) -> str:
    if not isinstance(subspace, str) or subspace not in SUBSPACES:
        raise ValueError(f"unknown subspace {subspace!r}; choose one of {list(SUBSPACES)} "
                         "('all': every parameter; 'no-norm': without norm-layer affine parameters; "
                         "'weights': conv/linear weights only, no biases, no norm-layer parameters)")
    return subspace


def _owners(model: nn.Module) -> dict[str, nn.Module]:
    owner: dict[str, nn.Module] = {}
    for mod_name, mod in model.named_modules():
        for local, _ in mod.named_parameters(recurse=False):
            owner.setdefault(f"{mod_name}.{local}" if mod_name else local, mod)
    return owner


def _is_bias(name: str) -> bool:
    own = name.rsplit(".", 1)[-1]
    return own == "bias" or own.endswith("_bias")


def parameter_kind(model: nn.Module) -> dict[str, str]:
    """``{parameter name: kind}`` for every parameter of ``model``: ``"norm"`` (held by a
    norm layer, :data:`NORM_TYPES`: its scale *and* its shift), ``"bias"`` (another module's
    bias, own name ``bias`` or ``*_bias``) or ``"weight"`` (everything else)."""
    owner = _owners(model)
    out = {}
    for name, _ in model.named_parameters():
        if isinstance(owner[name], NORM_TYPES):
            out[name] = "norm"
        elif _is_bias(name):
            out[name] = "bias"
        else:
            out[name] = "weight"
    return out


def table1_subspace(model: nn.Module, subspace: str = "all") -> NamedParameters:
    """The parameter subspace ``w`` of Table 1 named by ``subspace`` (one of
    :data:`SUBSPACES`), trainable parameters only, in ``model.named_parameters()`` order.
    ``"all"`` is :func:`select_parameters` ``(model)`` with the frozen ones left out.
    Raises ``ValueError`` naming the valid values for an unknown name, and when the
    subspace is empty (e.g. ``"weights"`` of a model made of norm layers)."""
    subspace = check_subspace(subspace)
    kinds = parameter_kind(model)
    keep = {"all": {"weight", "bias", "norm"}, "no-norm": {"weight", "bias"}, "weights": {"weight"}}[subspace]
    named = [(name, prm) for name, prm in model.named_parameters() if prm.requires_grad and kinds[name] in keep]
    if not named:
        raise ValueError(f"subspace {subspace!r} of {type(model).__name__} is empty (its trainable parameters are "
                         f"{_preview([n for n, p in model.named_parameters() if p.requires_grad])}); "
                         "choose 'all'")
    return named


def coordinate_kinds(model: nn.Module, params: ParamsLike) -> list[tuple[str, int]]:
    """The kind (:func:`parameter_kind`) of each tensor of the subspace with its size, in the
    subspace's order: the flat vector's coordinates ``[0, size_0)`` are of the first kind,
    and so on. Every tensor must be a parameter of ``model``."""
    named = as_named_parameters(params)
    kinds = parameter_kind(model)
    by_id = {id(prm): kinds[name] for name, prm in model.named_parameters()}
    missing = [name for name, prm in named if id(prm) not in by_id]
    if missing:
        raise ValueError(f"parameters {_preview(missing)} are not parameters of this {type(model).__name__}; "
                         "build the subspace from the same model")
    return [(by_id[id(prm)], prm.numel()) for _, prm in named]


def support_share(kinds: Sequence[tuple[str, int]], v: torch.Tensor, n: int) -> dict[str, float]:
    """Where ``top_n(v)`` (Eqs. 5, 10) falls: the percentage of its ``n`` coordinates in each
    kind of parameter, ``{"weight": %, "bias": %, "norm": %}`` (they sum to 100).
    ``kinds`` is :func:`coordinate_kinds`; ``v`` the flat vector over the same subspace (the
    gradient ``g`` for the gradient-based corruption, the draw ``r`` for a random one). The
    support is the one :func:`top_n` keeps (ties by position)."""
    v = check_vector(v)
    total = sum(size for _, size in kinds)
    if total != v.numel():
        raise ValueError(f"v has {v.numel()} entries but the subspace's kinds cover {total}; "
                         "use coordinate_kinds of the same subspace")
    n = check_n(n, v.numel())
    idx = _top_indices(v.detach(), n) if n < v.numel() else torch.arange(v.numel(), device=v.device)
    bounds = torch.tensor([0] + list(itertools.accumulate(size for _, size in kinds)), device=idx.device)
    which = torch.bucketize(idx, bounds[1:], right=True)  # tensor position of each kept index
    counts = torch.bincount(which, minlength=len(kinds)).tolist()
    per_kind = {"weight": 0, "bias": 0, "norm": 0}
    for (kind, _), c in zip(kinds, counts):
        per_kind[kind] += c
    return {kind: 100.0 * c / n for kind, c in per_kind.items()}


def as_named_parameters(params: ParamsLike) -> NamedParameters:
    """The subspace ``w`` (paper, "Parameter Corruption") as ``(name, parameter)`` pairs: accepts the output of
    :func:`select_parameters` or a plain sequence of tensors (named ``param0``, …).
    Empty sequences and repeated tensors raise ``ValueError``."""
    named: NamedParameters = []
    for i, item in enumerate(params):
        if isinstance(item, torch.Tensor):
            named.append((f"param{i}", item))  # type: ignore[arg-type]
        else:
            name, prm = item
            if not isinstance(prm, torch.Tensor):
                raise TypeError(f"entry {i} ({name!r}) is not a tensor: {type(prm).__name__}")
            named.append((str(name), prm))  # type: ignore[arg-type]
    if not named:
        raise ValueError("the parameter subspace is empty: select at least one parameter")
    seen: dict[int, str] = {}
    for name, prm in named:
        if id(prm) in seen:
            raise ValueError(f"parameter {name!r} appears twice in the subspace (also as {seen[id(prm)]!r})")
        seen[id(prm)] = name
    return named


def subspace_size(params: ParamsLike) -> int:
    """``k``, the dimension of the subspace ``w ∈ R^k`` (paper, "Parameter Corruption")."""
    return sum(prm.numel() for _, prm in as_named_parameters(params))


def parameter_vector(params: ParamsLike) -> torch.Tensor:
    """A flat copy of the subspace ``w ∈ R^k`` (tensors flattened and concatenated in order)."""
    return torch.cat([prm.detach().reshape(-1) for _, prm in as_named_parameters(params)])


# --------------------------------------------------------------------------------------
# Validation (always before any compute; messages name the fix)
# --------------------------------------------------------------------------------------

def check_p(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise TypeError(f"p must be a number in [1, inf] (use math.inf for L-infinity), got {p!r}")
    p = float(p)
    if math.isnan(p) or p < 1.0:
        raise ValueError(
            f"p must be in [1, inf], got {p}: for p < 1 the L_p 'norm' is not a norm "
            "(paper, Def. 1); use p >= 1, e.g. 1, 2 or math.inf"
        )
    return p


def check_eps(eps: float) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a positive finite number, got {eps!r}")
    eps = float(eps)
    if not math.isfinite(eps) or eps <= 0.0:
        raise ValueError(f"eps must be a positive finite number (the corruption size ‖a‖_p = eps), got {eps}")
    return eps


def check_n(n: int, k: int) -> int:
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer (the number of coordinates allowed to change), got {n!r}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1 (the number of coordinates allowed to change), got {n}")
    if n > k:
        raise ValueError(f"n = {n} exceeds the subspace size k = {k}; use n <= k (n = k: no sparsity limit)")
    return n


def check_k(k: int) -> int:
    try:
        k = operator.index(k)
    except TypeError:
        raise TypeError(f"k must be an integer (the subspace size), got {k!r}") from None
    if k < 1:
        raise ValueError(f"k must be >= 1 (the subspace size), got {k}")
    return k


def check_vector(v: torch.Tensor, what: str = "v") -> torch.Tensor:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim != 1:
        raise ValueError(f"{what} must be a flat (1-D) vector over the subspace, got shape {tuple(v.shape)}; "
                         "flatten it, e.g. torch.cat([t.reshape(-1) for t in tensors])")
    if v.numel() == 0:
        raise ValueError(f"{what} is empty")
    if not v.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {v.dtype}")
    if not bool(torch.isfinite(v).all()):
        bad = int((~torch.isfinite(v)).sum())
        raise ValueError(f"{what} has {bad} non-finite entries (nan/inf); fix the source "
                         "(e.g. a diverged loss) before corrupting")
    return v


# --------------------------------------------------------------------------------------
# Eqs. 5, 10, 11
# --------------------------------------------------------------------------------------

def dual_exponent(p: float) -> float:
    """``p* = p/(p−1)`` (Eq. 11), with ``1* = ∞`` and ``∞* = 1``."""
    p = check_p(p)
    if p == 1.0:
        return math.inf
    if math.isinf(p):
        return 1.0
    return p / (p - 1.0)


def lp_norm(x: torch.Tensor, p: float) -> float:
    """``‖x‖_p`` (the norms of Eqs. 1, 10, 11) in float64, computed as
    ``m · ‖x/m‖_p`` with ``m = max|x_i|`` (no overflow or underflow for large ``p``)."""
    p = check_p(p)
    a = x.detach().to(torch.float64).abs()
    m = a.max() if a.numel() else torch.zeros((), dtype=torch.float64)
    if m == 0:
        return 0.0
    if math.isinf(p):
        return float(m)
    return float(m * ((a / m) ** p).sum() ** (1.0 / p))


def _top_indices(v: torch.Tensor, n: int) -> torch.Tensor:
    """The set of the ``n`` largest ``|v_i|``, ties at the cut broken by position (the lower
    index is kept): the first ``n`` of a stable descending sort, found in O(k) with
    ``topk`` + a threshold instead of sorting all ``k`` (ResNet-34's 21 M entries: seconds
    per call on a CPU). Returned in index order, not by magnitude."""
    a = v.abs()
    cut = torch.topk(a, n, sorted=False).values.min()  # the n-th largest |v_i|
    above = torch.nonzero(a > cut).squeeze(1)
    at_cut = torch.nonzero(a == cut).squeeze(1)[: n - above.numel()]
    return torch.sort(torch.cat([above, at_cut])).values


def _top_n(v: torch.Tensor, n: int) -> torch.Tensor:
    if n >= v.numel():
        return v.clone()
    idx = _top_indices(v, n)
    out = torch.zeros_like(v)
    out[idx] = v[idx]
    return out


def top_n(v: torch.Tensor, n: int) -> torch.Tensor:
    """``top_n(v)`` of Eqs. 5 and 10: keep the ``n`` entries of largest ``|v_i|``, zero
    the rest. Ties are broken by position (the lower index is kept)."""
    v = check_vector(v)
    n = check_n(n, v.numel())
    return _top_n(v, n)


def unit_corruption(v: torch.Tensor, p: float, n: int) -> torch.Tensor:
    """Eq. 10 with ``ε = 1``, in float64 (arguments already validated)."""
    h = _top_n(v.detach().to(torch.float64), n)
    m = h.abs().max()
    if m == 0:
        raise ZeroDirectionError(
            "the vector is zero (on its top-n support): Eq. 10 has no direction to follow. "
            "A zero gradient means the loss is flat to first order in this subspace: check that the "
            "selected parameters are used by the forward pass and the data, or use random_corruption"
        )
    if p == 1.0:
        a = torch.zeros_like(h)
        i = int(torch.argmax(h.abs()))  # first maximal index, consistent with top_n's ties
        a[i] = torch.sign(h[i])
        return a
    if math.isinf(p):
        return torch.sign(h)
    u = (h.abs() / m) ** (1.0 / (p - 1.0))  # in [0, 1], max entry exactly 1
    return torch.sign(h) * u / lp_norm(u, p)


def solve_corruption(
    v: torch.Tensor, eps: float, p: float, n: int, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """The closed-form maximiser of ``aᵀv`` over ``S(ε, p, n)`` (Eqs. 1, 5, 10):

    ``h = top_n(v)``, ``a = ε · sgn(h) ⊙ |h|^{1/(p−1)} / ‖|h|^{1/(p−1)}‖_p`` for
    ``1 < p < ∞``; ``a = ε · sgn(h)`` for ``p = ∞``; ``a = ε · sgn(v_i) e_i`` at the
    largest ``|v_i|`` for ``p = 1``. Computed in float64, returned as ``dtype``
    (default: ``v.dtype``) on ``v``'s device. Coordinates where ``h`` is zero stay zero;
    ``v = 0`` raises :class:`ZeroDirectionError`.
    """
    v = check_vector(v)
    eps = check_eps(eps)
    p = check_p(p)
    n = check_n(n, v.numel())
    return (unit_corruption(v, p, n) * eps).to(dtype or v.dtype)


def gradient_corruption(
    grad_vec: torch.Tensor, eps: float, p: float, n: int, *, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Gradient-based corruption ``â = argmax_{a∈S} aᵀg`` (Eq. 10; Algorithm 2, step 2)."""
    check_vector(grad_vec, "grad_vec")
    return solve_corruption(grad_vec, eps, p, n, dtype=dtype)


def random_corruption(
    k: int,
    eps: float,
    p: float,
    n: int,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random corruption (Eq. 5; Algorithm 1): draw ``r ~ N(0, I_k)`` (float64, on the
    generator's device, CPU by default, so a seed gives the same ``a`` everywhere) and
    return the maximiser of ``aᵀr`` over ``S(ε, p, n)`` — Eq. 10's formula with the
    same normaliser, so ``‖a‖_p = ε`` exactly as for the gradient-based corruption.
    For ``p = 2, n = k`` this is uniform on the sphere of radius ``ε`` (Theorem 1).

    ``device``: where ``a`` is returned. Only the draw ``r`` happens on the generator's
    device; ``r`` is moved to ``device`` first and the rest (``top_n``, signs, the
    normaliser) runs there (``benchmarks/random_corruption_device.py`` compares the two
    placements). For ``p = ∞`` and ``p = 1`` the result is
    bit-identical on any device (selection and signs only); for finite ``p > 1`` the
    normaliser's sum may differ in its last bits between devices (summation order)."""
    k = check_k(k)
    eps = check_eps(eps)
    p = check_p(p)
    n = check_n(n, k)
    return corruption_from_draw(random_draw(k, generator), eps, p, n, dtype=dtype, device=device)


def random_draw(k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The draw ``r ~ N(0, I_k)`` of :func:`random_corruption` (Eq. 5), float64, on the
    generator's device (CPU by default). Separate so that a sweep can draw the next row's
    ``r`` while the current row is evaluated (:func:`paramstress.corruption.sweeps.corruption_sweep`)."""
    k = check_k(k)
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(k, generator=generator, dtype=torch.float64, device=gen_device)


def corruption_from_draw(
    r: torch.Tensor, eps: float, p: float, n: int, *, dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The rest of :func:`random_corruption` after :func:`random_draw` (arguments validated):
    ``r`` moved to ``device``, then Eq. 10's formula with ``r`` in place of ``g``."""
    if device is not None:
        r = r.to(device)
    return (unit_corruption(r, p, n) * eps).to(dtype)


def indicator(grad_vec: torch.Tensor, eps: float, p: float, n: int) -> float:
    """The first-order (gradient-based) estimate of the indicator (Eq. 11):
    ``f(â) = âᵀg = ε ‖top_n(g)‖_{p*}`` with ``p* = p/(p−1)`` (``p = 1 → p* = ∞``,
    ``p = ∞ → p* = 1``). Zero for a zero gradient."""
    g = check_vector(grad_vec, "grad_vec")
    eps = check_eps(eps)
    p = check_p(p)
    n = check_n(n, g.numel())
    return eps * lp_norm(_top_n(g.detach().to(torch.float64), n), dual_exponent(p))


def first_order_change(delta_vec: torch.Tensor, grad_vec: torch.Tensor) -> float:
    """``aᵀg`` in float64: the first-order loss change ``f(a)`` of Eq. 4."""
    a = check_vector(delta_vec, "delta_vec")
    g = check_vector(grad_vec, "grad_vec")
    if a.numel() != g.numel():
        raise ValueError(f"delta_vec has {a.numel()} entries but grad_vec has {g.numel()}")
    return float(torch.dot(a.detach().to(torch.float64), g.detach().to(device=a.device, dtype=torch.float64)))


# --------------------------------------------------------------------------------------
# Algorithm 2: the gradient over a stated dataset, and w ← w + a
# --------------------------------------------------------------------------------------

def subspace_gradient(
    model: nn.Module,
    params: ParamsLike,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Algorithm 2, step 1: ``g = ∂L(w; D)/∂w`` for the subspace, over the dataset ``D``
    given as an iterable of ``(x, y)`` batches, computed once.

    ``L(w; D)`` is the mean loss over *all examples* of ``D``: ``loss_fn(output, y)``
    must return the batch mean (like ``F.cross_entropy``), and batch gradients are
    weighted by batch size. ``transform`` (e.g. ``ImageData.normalize``) is applied to
    each ``x`` first. The model runs in eval mode (batch-norm running statistics, no
    dropout — the network that is then corrupted and evaluated); each module's
    train/eval flag is restored afterwards. ``.grad`` attributes are not touched.
    Returns one flat float32 vector of length ``k`` (accumulated in float64), on the
    parameters' device. Raises ``ValueError`` before any compute if a selected
    parameter has ``requires_grad=False``.
    """
    return mean_loss_gradient(
        model, params,
        ((lambda x=x, y=y: loss_fn(model(transform(x) if transform is not None else x), y), int(y.shape[0]))
         for x, y in batches),
        what="loss_fn(output, y)",
        fix="e.g. torch.nn.functional.cross_entropy with reduction='mean'",
    )


def mean_loss_gradient(
    model: nn.Module,
    params: ParamsLike,
    batch_losses: Iterable[tuple[Callable[[], torch.Tensor], int]],
    *,
    what: str = "the batch loss",
    fix: str = "return the mean over the batch's units",
) -> torch.Tensor:
    """Algorithm 2, step 1, for any task: ``g = ∂L(w; D)/∂w`` of the mean loss over every
    unit of ``D`` (images, tokens, parser transitions, ...).

    ``batch_losses`` yields ``(loss_of_batch, count)``: a callable returning the batch's
    *mean* loss (a scalar) over its ``count`` units, so batch gradients are weighted by
    ``count``. Eval mode (each module's flag restored afterwards), float64 accumulation,
    ``.grad`` untouched; one flat float32 vector of length ``k`` on the parameters'
    device. Raises ``ValueError`` before any compute if a selected parameter has
    ``requires_grad=False``.
    """
    named = as_named_parameters(params)
    frozen = [name for name, prm in named if not prm.requires_grad]
    if frozen:
        raise ValueError(
            f"parameters {_preview(frozen)} have requires_grad=False, so ∂L/∂w cannot be computed; "
            "call .requires_grad_(True) on them (or leave them out of the subspace)"
        )
    tensors = [prm for _, prm in named]
    modes = [(mod, mod.training) for mod in model.modules()]
    accs = [torch.zeros(prm.shape, dtype=torch.float64, device=prm.device) for prm in tensors]
    count = 0
    model.eval()
    try:
        with torch.enable_grad():
            for loss_of_batch, b in batch_losses:
                b = int(b)
                if b == 0:
                    continue
                loss = loss_of_batch()
                if loss.ndim != 0:
                    raise ValueError(f"{what} returned shape {tuple(loss.shape)}; it must return the batch "
                                     f"mean (a scalar): {fix}")
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                for acc, grad in zip(accs, grads):
                    if grad is not None:
                        acc.add_(grad.to(torch.float64), alpha=b)
                count += b
    finally:
        for mod, training in modes:
            mod.train(training)
    if count == 0:
        raise ValueError("batches yielded no examples: the gradient over an empty dataset is undefined")
    flat = torch.cat([acc.reshape(-1) for acc in accs]) / count
    if not bool(torch.isfinite(flat).all()):
        raise FloatingPointError("the gradient has non-finite entries (the loss overflowed on this data)")
    return flat.to(torch.float32)


@contextlib.contextmanager
def corrupted(model_params: ParamsLike, delta_vec: torch.Tensor) -> Iterator[NamedParameters]:
    """Algorithm 1/2, step 3: ``w ← w + a`` on the subspace, in place, for the body of the
    ``with`` block; on exit — also when the body raises — the weights are restored
    *bit-identically* by copying back exact copies saved on entry (never by
    subtracting ``a``, which would not round-trip in floating point).

    ``delta_vec`` is the flat corruption ``a`` (length ``k``, finite). Each tensor gets
    ``fl(w + a)``: the sum is formed in float64 and rounded once to the parameter's
    dtype. Yields the ``(name, parameter)`` pairs.
    """
    named = as_named_parameters(model_params)
    k = sum(prm.numel() for _, prm in named)
    delta = check_vector(delta_vec, "delta_vec")
    if delta.numel() != k:
        raise ValueError(f"delta_vec has {delta.numel()} entries but the subspace has k = {k}; "
                         "build it for the same (ordered) parameter selection")
    originals = [prm.detach().clone() for _, prm in named]
    try:
        with torch.no_grad():
            offset = 0
            for _, prm in named:
                d = delta[offset:offset + prm.numel()].view(prm.shape)
                offset += prm.numel()
                summed = prm.to(torch.float64) + d.to(device=prm.device, dtype=torch.float64)
                prm.copy_(summed.to(prm.dtype))
        yield named
    finally:
        with torch.no_grad():
            for (_, prm), orig in zip(named, originals):
                prm.copy_(orig)
