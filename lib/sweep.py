"""The sweep engine: evaluate a model under a grid of in-place perturbations.

Every stress in the project is a grid of *points* (dicts such as
``{"method": "gradient", "p": inf, "n": 100, "eps": 1e-3, "trial": 0}``), a way to
perturb the model in place for one point and undo it (a context manager), and an
evaluation. :func:`sweep` runs the grid, one tidy row per point, and can append the
rows to a CSV as it goes so that an interrupted run resumes where it stopped.
:func:`corruption_sweep` is the parameter-corruption instance (Sun et al. 2021,
Table 1 / Fig. 3 / Fig. 4): one precomputed gradient ``g`` for the whole grid
(Algorithm 2, step 1, done once), gradient-based (Eq. 10) and random (Eq. 5)
corruptions applied with :func:`paramstress.corruption.corrupted`, which restores the
weights bit-identically after each point.

Choices stated here (and to be stated wherever results are shown):

- :func:`evaluate` runs the model in eval mode under ``torch.inference_mode``. An
  example whose logits are not all finite (a corruption can overflow the network) has
  no prediction; the rule ``nonfinite`` (:data:`NONFINITE_RULES`) says how it counts:
  ``"wrong"`` (the default, the book's rule until issue 30, which the pages published at
  ``gpu`` were computed with) counts it as misclassified; ``"uniform"`` counts it as a
  uniform guess over the ``C`` classes, 1/C of a correct answer (the expected accuracy of
  a guess: a network whose every output is non-finite scores chance, 100/C %, as the
  paper's Table 1 prints). Under both rules the share of such examples is reported as
  ``nonfinite`` and ``accuracy(uniform) = accuracy(wrong) + nonfinite / C`` exactly
  (:func:`paramstress.tables.nonfinite_as_uniform` re-scores rows computed under
  ``"wrong"``); the loss is then non-finite too and is reported as it is.
- Gradient-based corruption is deterministic, so each (eps, n) has one gradient row
  (``trial = 0``); random corruption has ``trials`` rows, each drawn from its own
  seed :func:`derive_seed` ``(seed, eps, n, trial)`` on the CPU, so a row is
  reproducible on any device and independently of the rest of the grid.
- ``indicator`` is the first-order loss change ``aᵀg``: ``ε‖top_n(g)‖_{p*}`` for
  gradient rows (Eq. 11), the realised ``aᵀg`` for random rows.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import corruption as C

__all__ = [
    "METRICS",
    "NONFINITE_RULES",
    "check_nonfinite_rule",
    "iter_batches",
    "evaluate",
    "evaluate_outcomes",
    "sweep",
    "derive_seed",
    "corruption_grid",
    "corruption_sweep",
    "CORRUPTION_METHODS",
]

Point = Mapping[str, Any]
Transform = Callable[[torch.Tensor], torch.Tensor]

#: Metrics :func:`evaluate` computes: accuracy (%), mean cross-entropy, and the
#: percentage of examples whose logits were not all finite.
METRICS: tuple[str, ...] = ("accuracy", "loss", "nonfinite")
CORRUPTION_METHODS: tuple[str, ...] = ("random", "gradient")
#: How :func:`evaluate` counts an example whose logits are not all finite: ``"wrong"``
#: (misclassified; the default) or ``"uniform"`` (a uniform guess: 1/C of a correct answer).
NONFINITE_RULES: tuple[str, ...] = ("wrong", "uniform")


def check_nonfinite_rule(nonfinite: Any) -> str:
    """``nonfinite`` if it is one of :data:`NONFINITE_RULES`, else ``ValueError`` naming them."""
    if not isinstance(nonfinite, str) or nonfinite not in NONFINITE_RULES:
        raise ValueError(f"unknown non-finite rule nonfinite={nonfinite!r}; choose one of {list(NONFINITE_RULES)} "
                         "('wrong': an example with non-finite logits is misclassified; 'uniform': it counts as a "
                         "uniform guess, 1/C of a correct answer)")
    return nonfinite


# --------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------

def iter_batches(
    x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(x[i:i+b], y[i:i+b])`` slices (views; no copies, no DataLoader).
    Sizes are checked at once, not at the first ``next()``."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return ((x[start:start + batch_size], y[start:start + batch_size]) for start in range(0, len(y), batch_size))


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for mod, training in modes:
            mod.train(training)


def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1024,
    transform: Transform | None = None,
    metrics: Sequence[str] = METRICS,
    nonfinite: str = "wrong",
) -> dict[str, float]:
    """Classification metrics of ``model`` on ``(x, y)``, already on the model's device.

    Batches are slices of ``x``; ``transform`` (e.g. ``ImageData.normalize`` for
    ``uint8`` images) is applied to each batch. Runs in eval mode (each module's flag
    is restored) under ``torch.inference_mode``. Returns the requested ``metrics``
    among :data:`METRICS`: ``accuracy`` (% correct), ``loss`` (mean cross-entropy,
    accumulated in float64) and ``nonfinite`` (% of examples whose logits were not all
    finite). The rule ``nonfinite`` (:data:`NONFINITE_RULES`) says how such an example
    counts in ``accuracy``: ``"wrong"`` (misclassified) or ``"uniform"`` (a uniform guess
    over the ``C`` logits: ``accuracy = accuracy_wrong + nonfinite / C``, computed as
    exactly that sum, so that :func:`paramstress.tables.nonfinite_as_uniform` applied to
    ``"wrong"`` rows gives the same floats).
    """
    check_nonfinite_rule(nonfinite)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    values, _, _ = _evaluate(model, x, y, batch_size=batch_size, transform=transform, nonfinite=nonfinite,
                             per_example=False)
    return {m: values[m] for m in metrics}


def evaluate_outcomes(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 1024,
    transform: Transform | None = None,
    nonfinite: str = "wrong",
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """:func:`evaluate` (every metric of :data:`METRICS`, the same floats) and, per example of
    ``(x, y)`` in order, whether it was classified correctly and whether its logits were all
    finite: ``(metrics, correct, finite)``, two boolean arrays of length ``len(y)``.

    ``correct[i]`` is ``argmax(logits_i) == y_i`` *and* ``finite[i]``: an example with
    non-finite logits is never correct in the array, whatever ``nonfinite`` says. Under
    ``"wrong"``, ``accuracy == 100 * correct.sum() / len(y)`` exactly; under ``"uniform"``
    the accuracy adds ``nonfinite / C``, the expected credit of the uniform guesses, which
    no single example carries."""
    check_nonfinite_rule(nonfinite)
    return _evaluate(model, x, y, batch_size=batch_size, transform=transform, nonfinite=nonfinite, per_example=True)


def _evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int, transform: Transform | None,
    nonfinite: str, per_example: bool,
) -> tuple[dict[str, float], np.ndarray | None, np.ndarray | None]:
    """The evaluation loop of :func:`evaluate` and :func:`evaluate_outcomes`."""
    if len(y) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    batches = iter_batches(x, y, batch_size)  # validates sizes before any forward pass
    correct = torch.zeros((), dtype=torch.int64, device=y.device)
    bad = torch.zeros((), dtype=torch.int64, device=y.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=y.device)
    hits: list[torch.Tensor] = []
    finites: list[torch.Tensor] = []
    classes = None
    with _eval_mode(model), torch.inference_mode():
        for xb, yb in batches:
            logits = model(transform(xb) if transform is not None else xb)
            if logits.ndim != 2 or logits.shape[0] != yb.shape[0]:
                raise ValueError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
            classes = int(logits.shape[1])
            finite = torch.isfinite(logits).all(dim=1)
            hit = (logits.argmax(dim=1) == yb) & finite
            correct += hit.sum()
            bad += (~finite).sum()
            loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum").to(torch.float64)
            if per_example:
                hits.append(hit.cpu())
                finites.append(finite.cpu())
    total = len(y)
    values = {
        "accuracy": 100.0 * int(correct) / total,
        "loss": float(loss_sum) / total,
        "nonfinite": 100.0 * int(bad) / total,
    }
    if nonfinite == "uniform":
        values["accuracy"] = values["accuracy"] + values["nonfinite"] / classes
    if not per_example:
        return values, None, None
    return values, torch.cat(hits).numpy().astype(bool), torch.cat(finites).numpy().astype(bool)


# --------------------------------------------------------------------------------------
# The generic sweep, with a resumable CSV
# --------------------------------------------------------------------------------------

def _canon(value: Any) -> Any:
    """A value as a key for matching points with CSV rows (which are read as text)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "nan" if math.isnan(f) else f


def _repair_tail(path: Path) -> None:
    """Drop a last line that an interrupted write left without its newline."""
    with open(path, "rb+") as fh:
        data = fh.read()
        if data and not data.endswith(b"\n"):
            fh.truncate(data.rfind(b"\n") + 1)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists() or path.stat().st_size == 0:
        return [], []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def _render(header: Sequence[str], rows: Sequence[Mapping[str, Any]], with_header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), restval="", lineterminator="\n")
    if with_header:
        writer.writeheader()
    for row in rows:
        writer.writerow({key: _plain(val) for key, val in row.items()})
    return buf.getvalue()


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()  # numpy scalars
    return value


def _read_header(path: Path) -> list[str]:
    """The CSV's column names (its first line only), or ``[]`` for a missing or empty file."""
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="") as fh:
        return next(csv.reader(fh), [])


#: Seconds between two fsyncs of a sweep's CSV. Every row is written and flushed at
#: once (a killed process loses nothing: the operating system holds it); only a crash
#: of the machine itself can lose the rows of the last interval, and a torn last line is
#: dropped on resume. Syncing every row cost a disk round trip per row.
FSYNC_INTERVAL = 1.0


class _RowWriter:
    """Appends rows to a sweep's CSV, one flushed line per row.

    The header is read once (first line only) and kept: appending no longer re-reads the
    file, which made a sweep quadratic in its number of rows (1,650 rows of one snapshot
    re-parsed 1.4 million lines). A row with columns the header lacks rewrites the file
    with the wider header (atomically, via ``os.replace``).
    """

    def __init__(self, path: Path):
        self.path = path
        self.header = _read_header(path)
        self.synced = time.monotonic()

    def append(self, row: Mapping[str, Any]) -> None:
        if not self.header:
            self.header = list(row)
            text, mode = _render(self.header, [row], with_header=True), "w"
        else:
            if not set(row) <= set(self.header):
                _, existing = _read_rows(self.path)
                self.header = self.header + [key for key in row if key not in self.header]
                tmp = self.path.with_name(self.path.name + ".tmp")
                with open(tmp, "w", newline="") as fh:
                    fh.write(_render(self.header, existing, with_header=True))
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            text, mode = _render(self.header, [row], with_header=False), "a"
        with open(self.path, mode, newline="") as fh:
            fh.write(text)
            fh.flush()
            if mode == "w" or time.monotonic() - self.synced >= FSYNC_INTERVAL:
                os.fsync(fh.fileno())
                self.synced = time.monotonic()

    def close(self) -> None:
        """fsync what the interval left unsynced."""
        if self.path.exists():
            with open(self.path, "rb") as fh:
                os.fsync(fh.fileno())


def sweep(
    points: Sequence[Point],
    apply: Callable[[Point], contextlib.AbstractContextManager[Mapping[str, Any] | None]],
    evaluate: Callable[[Point], Mapping[str, Any]],
    csv_path: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    keys: Sequence[str] | None = None,
    progress: bool = False,
    desc: str | None = None,
    require: Sequence[str] = (),
) -> pd.DataFrame:
    """Run ``evaluate`` at every grid point under the perturbation ``apply(point)``.

    For each point: ``with apply(point) as extra: metrics = evaluate(point)``. The
    context manager perturbs the model in place and must restore it on exit; if it
    yields a mapping, its entries (e.g. the first-order change of that draw) join the
    row. A row is ``{**point, **extra, **metrics}`` (overlapping names are an error).

    ``csv_path``: each finished row is appended to this CSV at once (one flushed line).
    With ``resume=True`` rows already there — matched on ``keys``, by default every
    key of the points — are not recomputed, and a torn last line from an interrupted
    write is dropped; ``resume=False`` starts the file afresh. ``require``: columns a
    CSV row must have filled (non-empty) to count as done; a row without them (e.g. written
    before the column existed) is recomputed and appended, and the later row is kept.
    Returns a DataFrame with
    one row per point, in the order of ``points`` (read back from the CSV when given,
    so a resumed run returns the same frame as an uninterrupted one).
    """
    pts = [dict(pt) for pt in points]
    if keys is None:
        keys = list(dict.fromkeys(key for pt in pts for key in pt))
    keys = list(keys)
    for i, pt in enumerate(pts):
        missing = [key for key in keys if key not in pt]
        if missing:
            raise ValueError(f"point {i} {pt} lacks keys {missing}; every point needs all of {keys}")
    canon = [tuple(_canon(pt[key]) for key in keys) for pt in pts]
    if len(set(canon)) != len(canon):
        dup = next(pt for pt, c in zip(pts, canon) if canon.count(c) > 1)
        raise ValueError(f"duplicate grid point {dup}: points must differ in their keys {keys}")

    path = Path(csv_path) if csv_path is not None else None
    done: set[tuple[Any, ...]] = set()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            _repair_tail(path)
            header, rows = _read_rows(path)
            if all(key in header for key in keys):
                done = {tuple(_canon(row[key]) for key in keys) for row in rows
                        if all(row.get(col) not in (None, "") for col in require)}
        elif path.exists():
            path.unlink()

    pending = [(pt, c) for pt, c in zip(pts, canon) if c not in done]
    iterator: Any = pending
    if progress:
        from tqdm import tqdm

        iterator = tqdm(pending, desc=desc, total=len(pending))
    records: list[dict[str, Any]] = []
    writer = _RowWriter(path) if path is not None else None
    try:
        for pt, _ in iterator:
            with apply(pt) as extra:
                metrics = dict(evaluate(pt))
            extra = dict(extra or {})
            row: dict[str, Any] = dict(pt)
            for part in (extra, metrics):
                clash = [key for key in part if key in row]
                if clash:
                    raise ValueError(f"row fields {clash} are produced twice (point / apply / evaluate)")
                row.update(part)
            if writer is not None:
                writer.append(row)
            records.append(row)
    finally:
        if writer is not None:
            writer.close()

    if path is None:
        return pd.DataFrame.from_records(records)
    if not path.exists():
        return pd.DataFrame(columns=keys)
    table = pd.read_csv(path)  # pandas >= 3 parses floats round-trip by default
    with open(path, newline="") as fh:
        text_rows = list(csv.DictReader(fh))
    position = {c: i for i, c in enumerate(canon)}
    order = [(position.get(tuple(_canon(r[key]) for key in keys)), j) for j, r in enumerate(text_rows)]
    picked = sorted((pos, j) for pos, j in order if pos is not None)
    # If a point was written twice (e.g. two runs on one file), keep its latest row.
    latest: dict[int, int] = {}
    for pos, j in picked:
        latest[pos] = j
    return table.iloc[[latest[pos] for pos in sorted(latest)]].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Parameter corruption (Sun et al. 2021)
# --------------------------------------------------------------------------------------

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
    p = C._check_p(p)
    eps_list = [C._check_eps(e) for e in eps_values]
    if not eps_list:
        raise ValueError("eps_values is empty")
    if k is not None:
        k = C._check_k(k)
    n_list: list[int] = []
    for n in n_values:
        if n is None:
            if k is None:
                raise ValueError("n = None means n = k: pass k")
            n = k
        n_list.append(C._check_n(n, k if k is not None else n))
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
    g = C._check_vector(grad_vec, "grad_vec")
    if g.numel() != k:
        raise ValueError(f"grad_vec has {g.numel()} entries but the subspace has k = {k}; "
                         "compute it with subspace_gradient on the same parameter selection")
    points = corruption_grid(eps_values, n_values, methods, trials, p, k=k)
    p = C._check_p(p)
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
            unit_cache[n] = (C._unit_corruption(g64, p, n), C.indicator(g64, 1.0, p, n))
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
            delta = C._corruption_from_draw(r, eps, p, n, dtype=torch.float64, device=device)
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
