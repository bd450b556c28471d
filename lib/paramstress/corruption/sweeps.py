"""Parameter corruption on the sweep engine (Sun et al. 2021, Table 1 / Fig. 3 / Fig. 4).

:func:`corruption_sweep` evaluates a model under a grid of corruptions with one precomputed
gradient ``g`` for the whole grid (Algorithm 2, step 1, done once): gradient-based (Eq. 10)
and random (Eq. 5) corruptions applied with :func:`paramstress.corruption.corrupted`, which
restores the weights bit-identically after each point, and evaluated by
:func:`paramstress.engine.sweep.evaluate` (its non-finite rule applies).

- Gradient-based corruption is deterministic, so each (eps, n) has one gradient row
  (``trial = 0``); random corruption has ``trials`` rows, each drawn from its own
  seed :func:`derive_seed` ``(seed, eps, n, trial)`` on the CPU, so a row is
  reproducible on any device and independently of the rest of the grid.
- ``indicator`` is the first-order loss change ``aᵀg``: ``ε‖top_n(g)‖_{p*}`` for
  gradient rows (Eq. 11), the realised ``aᵀg`` for random rows.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from paramstress.corruption import operators as C
from paramstress.engine.sweep import Point, Transform, check_nonfinite_rule, evaluate, sweep

__all__ = ["CORRUPTION_METHODS", "derive_seed", "corruption_grid", "corruption_sweep"]

CORRUPTION_METHODS: tuple[str, ...] = ("random", "gradient")

def derive_seed(seed: int, eps: float, n: int, trial: int) -> int:
    """The seed of one random-corruption draw: SHA-256 of ``(seed, eps, n, trial)``,
    48 bits (exact in a float64 CSV column)."""
    text = f"{int(seed)}|{float(eps)!r}|{int(n)}|{int(trial)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:6], "big")


def corruption_grid(
    eps_values: Sequence[float],
    n_values: Sequence[int | None],
    methods: Sequence[str] = CORRUPTION_METHODS,
    trials: int = 5,
    p: float = math.inf,
    *,
    k: int | None = None,
) -> list[dict[str, Any]]:
    """Grid points ``{method, p, n, eps, trial}``: for each method, ``n`` and ``eps``,
    ``trials`` random rows (trial 0…trials−1) or one gradient row (trial 0; it is
    deterministic). ``n = None`` means ``n = k`` (needs ``k``). Validates everything
    first."""
    methods = list(methods)
    bad = [m for m in methods if m not in CORRUPTION_METHODS]
    if bad or not methods:
        raise ValueError(f"unknown corruption methods {bad}; choose from {list(CORRUPTION_METHODS)}")
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ValueError(f"trials must be a positive integer, got {trials!r}")
    p = C.check_p(p)
    eps_list = [C.check_eps(e) for e in eps_values]
    if not eps_list:
        raise ValueError("eps_values is empty")
    if k is not None:
        k = C.check_k(k)
    n_list: list[int] = []
    for n in n_values:
        if n is None:
            if k is None:
                raise ValueError("n = None means n = k: pass k")
            n = k
        n_list.append(C.check_n(n, k if k is not None else n))
    if not n_list:
        raise ValueError("n_values is empty")
    points = []
    for method in methods:
        for n in n_list:
            for eps in eps_list:
                for trial in range(trials if method == "random" else 1):
                    points.append({"method": method, "p": p, "n": n, "eps": eps, "trial": trial})
    return points


_COLUMNS = ["method", "p", "n", "eps", "trial", "k", "seed", "accuracy", "loss", "delta_loss",
            "indicator", "nonfinite", "base_accuracy", "base_loss", "delta_accuracy"]


class _DrawAhead:
    """Random corruption's draws ``C.random_draw(k, Generator().manual_seed(s))`` for the
    seeds ``seeds`` in the order the sweep asks for them, each next one started in one
    background thread when the previous is taken, so that the CPU draw overlaps the
    evaluation of the row before (torch releases the GIL inside ``randn``). A seed asked out
    of order (rows skipped on resume) is drawn at once and the look-ahead moves on from it;
    the values never depend on the order. ``enabled=False``: every draw at once, in turn."""

    def __init__(self, k: int, seeds: Sequence[int], *, enabled: bool = True):
        self.k = k
        self.after = {s: seeds[i + 1] for i, s in enumerate(seeds[:-1])}
        self.enabled = enabled
        self.pool: Any = None
        self.ahead: tuple[int, Any] | None = None

    def _draw(self, row_seed: int) -> torch.Tensor:
        return C.random_draw(self.k, torch.Generator().manual_seed(row_seed))

    def get(self, row_seed: int) -> torch.Tensor:
        if self.ahead is not None and self.ahead[0] == row_seed:
            r = self.ahead[1].result()
        else:
            if self.ahead is not None:
                self.ahead[1].cancel()
            r = self._draw(row_seed)
        self.ahead = None
        nxt = self.after.get(row_seed)
        if self.enabled and nxt is not None:
            if self.pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paramstress-draw")
            self.ahead = (nxt, self.pool.submit(self._draw, nxt))
        return r

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool, self.ahead = None, None


def corruption_sweep(
    model: nn.Module,
    params: C.ParamsLike,
    grad_vec: torch.Tensor,
    x: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    *,
    eps_values: Sequence[float],
    n_values: Sequence[int | None],
    p: float = math.inf,
    methods: Sequence[str] = CORRUPTION_METHODS,
    trials: int = 5,
    seed: int = 0,
    batch_size: int = 1024,
    transform: Transform | None = None,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = False,
    evaluator: Callable[[], Mapping[str, float]] | None = None,
    prefetch: bool = True,
    nonfinite: str = "wrong",
) -> pd.DataFrame:
    """Table 1 / Fig. 3 of Sun et al.: accuracy and loss of ``model`` on ``(x, y)``
    under gradient-based (Eq. 10) and random (Eq. 5) corruption of the subspace
    ``params``, over the grid :func:`corruption_grid` ``(eps_values, n_values,
    methods, trials, p)`` (``n = None``: ``n = k``).

    ``grad_vec`` is ``g`` from :func:`~paramstress.corruption.subspace_gradient`,
    computed once and used for every gradient row and every random row's ``aᵀg``.
    Random draws are seeded by :func:`derive_seed` ``(seed, eps, n, trial)``. One row
    per point: method, p, n, eps, trial, k, seed (random rows), accuracy, loss,
    delta_loss (= loss − unperturbed loss), indicator (``ε‖top_n(g)‖_{p*}`` for
    gradient rows, ``aᵀg`` for random rows), nonfinite, base_accuracy, base_loss,
    delta_accuracy. Weights are bit-identical afterwards. Arguments are validated
    before any forward pass. CSV and resume as in :func:`sweep`.

    Any task (language modelling, parsing, translation: :mod:`paramstress.tasks`)
    passes ``evaluator`` instead of ``(x, y)``: a callable returning the task's metrics
    of the model as it is at that moment (e.g. ``{"log_ppl": ..., "loss": ...}``);
    every metric ``m`` it returns gets ``base_m`` and ``delta_m`` columns, and
    ``delta_loss`` is always there.

    ``prefetch``: each random row's draw ``r`` (seeded, on the CPU, so a seed gives the same
    corruption on any device; ~0.5 s for ResNet-34's 21 M parameters) is made in one
    background thread while the previous row is evaluated. The rows are identical either way;
    ``False`` draws in turn (for side-by-side timing, ``benchmarks/random_corruption_device.py``).

    ``nonfinite``: how :func:`evaluate` counts an example with non-finite logits in the
    accuracy (:data:`NONFINITE_RULES`; ``"wrong"`` by default, as the published pages were
    computed); the share of such examples is the ``nonfinite`` column either way. Rows computed
    under ``"uniform"`` carry ``nonfinite_rule = "uniform"`` (rows under the default keep the
    published layout, without the column), and a CSV whose rows were computed under another
    rule is not resumed from: ``ValueError`` before any compute (pass ``resume=False`` or
    another ``csv_path``). With an ``evaluator`` the rule is the evaluator's own, and only the
    default is accepted.
    """
    check_nonfinite_rule(nonfinite)
    named = C.as_named_parameters(params)
    k = sum(prm.numel() for _, prm in named)
    g = C.check_vector(grad_vec, "grad_vec")
    if g.numel() != k:
        raise ValueError(f"grad_vec has {g.numel()} entries but the subspace has k = {k}; "
                         "compute it with subspace_gradient on the same parameter selection")
    points = corruption_grid(eps_values, n_values, methods, trials, p, k=k)
    p = C.check_p(p)
    if "gradient" in methods and not bool((g != 0).any()):
        raise C.ZeroDirectionError("grad_vec is zero: gradient-based corruption has no direction; "
                                   "check the subspace and the data the gradient was computed on")
    if evaluator is None:
        if x is None or y is None:
            raise ValueError("pass the evaluation set (x, y), or evaluator= for a task's own metrics")
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")

        def evaluator() -> Mapping[str, float]:
            return evaluate(model, x, y, batch_size=batch_size, transform=transform, nonfinite=nonfinite)
    elif x is not None or y is not None:
        raise ValueError("give either (x, y) or evaluator, not both")
    elif nonfinite != "wrong":
        raise ValueError(f"nonfinite={nonfinite!r} applies to the (x, y) evaluation; an evaluator scores "
                         "non-finite outputs by its own rule: leave nonfinite at 'wrong'")
    if csv_path is not None and resume and Path(csv_path).exists() and Path(csv_path).stat().st_size > 0:
        done = pd.read_csv(csv_path)
        if len(done):  # a row without the column (or with it empty) was computed under "wrong"
            rules = set(done["nonfinite_rule"].fillna("wrong")) if "nonfinite_rule" in done.columns else {"wrong"}
            if rules - {nonfinite}:
                raise ValueError(f"{csv_path} holds rows computed under the non-finite rule {sorted(rules)}, not "
                                 f"{nonfinite!r}: pass resume=False to recompute them, or another csv_path")
    device = named[0][1].device
    g64 = g.detach().to(device=device, dtype=torch.float64)
    base = dict(evaluator())
    if "loss" not in base:
        raise ValueError(f"the evaluator must return a 'loss' entry (the mean loss), got {sorted(base)}")
    unit_cache: dict[int, tuple[torch.Tensor, float]] = {}
    draws = _DrawAhead(k, [derive_seed(seed, float(pt["eps"]), int(pt["n"]), int(pt["trial"]))
                           for pt in points if pt["method"] == "random"], enabled=prefetch)

    def gradient_unit(n: int) -> tuple[torch.Tensor, float]:
        """Eq. 10 with ε = 1 and ‖top_n(g)‖_{p*} (Eq. 11 / ε), once per n."""
        if n not in unit_cache:
            unit_cache.clear()  # keep one k-vector at a time (points are grouped by n)
            unit_cache[n] = (C.unit_corruption(g64, p, n), C.indicator(g64, 1.0, p, n))
        return unit_cache[n]

    @contextlib.contextmanager
    def apply(point: Point) -> Iterator[dict[str, Any]]:
        eps, n, trial = float(point["eps"]), int(point["n"]), int(point["trial"])
        if point["method"] == "gradient":
            unit, dual_norm = gradient_unit(n)
            delta = unit * eps
            row_seed = None
            first_order = eps * dual_norm
        else:
            row_seed = derive_seed(seed, eps, n, trial)
            r = draws.get(row_seed)  # = C.random_draw(k, Generator().manual_seed(row_seed))
            delta = C.corruption_from_draw(r, eps, p, n, dtype=torch.float64, device=device)
            first_order = float(torch.dot(delta, g64))
        extra = {"k": k, "seed": row_seed, "indicator": first_order}
        if nonfinite != "wrong":
            extra["nonfinite_rule"] = nonfinite
        with C.corrupted(named, delta):
            yield extra

    def measure(point: Point) -> dict[str, float]:
        m = dict(evaluator())
        row = {**m, **{f"base_{key}": base[key] for key in base if key != "nonfinite"}}
        row.update({f"delta_{key}": m[key] - base[key] for key in base if key != "nonfinite"})
        return row

    try:
        table = sweep(points, apply, measure, csv_path, resume=resume,
                      keys=["method", "p", "n", "eps", "trial"], progress=progress, desc="corruption")
    finally:
        draws.close()
    if table.empty:
        return table
    ordered = [c for c in _COLUMNS if c in table.columns]
    return table[ordered + [c for c in table.columns if c not in ordered]]
