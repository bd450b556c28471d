"""The sweep engine: evaluate a model under a grid of in-place perturbations.

Every stress in the project is a grid of *points* (dicts such as
``{"method": "gradient", "p": inf, "n": 100, "eps": 1e-3, "trial": 0}``), a way to
perturb the model in place for one point and undo it (a context manager), and an
evaluation. :func:`sweep` runs the grid, one tidy row per point, and can append the
rows to a CSV as it goes so that an interrupted run resumes where it stopped.
:func:`paramstress.corruption.sweeps.corruption_sweep` is the parameter-corruption instance
(Sun et al. 2021, Table 1 / Fig. 3 / Fig. 4); the filtering sweeps of Pravin et al. are
another (:func:`paramstress.filtering.filter_sweep`).

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
"""
from __future__ import annotations

import contextlib
import csv
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


__all__ = [
    "METRICS",
    "NONFINITE_RULES",
    "check_nonfinite_rule",
    "iter_batches",
    "evaluate",
    "predict",
    "evaluate_outcomes",
    "channels_last_forward",
    "channels_last_weights",
    "channels_last_copy",
    "sweep",
]

Point = Mapping[str, Any]
Transform = Callable[[torch.Tensor], torch.Tensor]

#: Metrics :func:`evaluate` computes: accuracy (%), mean cross-entropy, and the
#: percentage of examples whose logits were not all finite.
METRICS: tuple[str, ...] = ("accuracy", "loss", "nonfinite")
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
def eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(mod, mod.training) for mod in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for mod, training in modes:
            mod.train(training)


def channels_last_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """``model``'s 4-D (convolution) CPU parameters not yet in canonical channels-last strides,
    by name: what :func:`channels_last_forward` copies and
    :func:`paramstress.filtering.channels_last_on_cpu` moves."""
    return {name: p for name, p in model.named_parameters()
            if p.dim() == 4 and p.device.type == "cpu" and p.numel() > 0
            and p.stride() != channels_last_copy(p.detach()).stride()}


def channels_last_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of 4-D ``t`` with canonical channels-last strides, also for one input channel (where
    both layouts are "contiguous" and ``.contiguous(memory_format=...)`` would keep the NCHW
    strides, which the convolution then reads as NCHW)."""
    return torch.empty_like(t, memory_format=torch.channels_last).copy_(t)


def channels_last_forward(model: nn.Module) -> Callable[..., torch.Tensor]:
    """The forward pass :func:`evaluate` and :func:`predict` run: on a CPU, ``model`` called with
    channels-last copies of its 4-D (convolution) weights through
    :func:`torch.func.functional_call`, which oneDNN convolves (and max-pools after) faster:
    measured on one thread with the AVX2 cap, 1000 images of 28 × 28, 2.0× for ``small_cnn``,
    1.75× for ResNet-18, 1.42× for ``resnet18_cifar_w16`` (``benchmarks/README.md``). The
    model itself is not touched: its parameters keep their storage and layout, so weights
    corrupted or masked in place before the call are what the copies hold. The logits differ
    from the contiguous layout's in the last bits (another summation order), the same on
    every run. Elsewhere (CUDA, no 4-D weights, all already channels-last) it is ``model`` itself."""
    moved = channels_last_weights(model)
    if not moved:
        return model
    from torch.func import functional_call

    swapped = {**dict(model.named_parameters()), **{name: channels_last_copy(p.detach()) for name, p in moved.items()}}
    return lambda *args: functional_call(model, swapped, args)


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
    with eval_mode(model), torch.inference_mode():
        forward = channels_last_forward(model)
        for xb, yb in batches:
            logits = forward(transform(xb) if transform is not None else xb)
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



def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
            transform: Transform | None = None) -> torch.Tensor:
    """The predicted class (argmax of the logits) of every example of ``x``, batched as
    :func:`evaluate` batches, in eval mode (each module's flag restored) under
    ``torch.inference_mode``; on ``x``'s device."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(x) == 0:
        raise ValueError("cannot predict on an empty dataset")
    out = []
    with eval_mode(model), torch.inference_mode():
        forward = channels_last_forward(model)
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            logits = forward(transform(xb) if transform is not None else xb)
            if logits.ndim != 2 or logits.shape[0] != xb.shape[0]:
                raise ValueError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
            out.append(logits.argmax(dim=1))
    return torch.cat(out)

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


#: Names that moved to :mod:`paramstress.corruption.sweeps` (the parameter-corruption instance
#: of this engine). Kept reachable here for pages published before the move, which cannot be
#: re-executed without a GPU; new code imports them from paramstress.corruption.sweeps.
_MOVED_TO_CORRUPTION = ("derive_seed", "corruption_grid", "corruption_sweep", "CORRUPTION_METHODS")


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_CORRUPTION:
        import importlib

        return getattr(importlib.import_module("paramstress.corruption.sweeps"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
