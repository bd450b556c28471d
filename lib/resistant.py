"""Corruption-resistant training, measured: Sun et al. (AAAI 2021), Table 2.

Table 2 of the paper ("Results of the proposed corruption-resistant training")
trains a baseline and a model with the adversarial corruption-resistant loss
(Eqs. 13-16, :mod:`paramstress.objectives`) and evaluates both clean ("w/o
corrupt.") and under the gradient-based corruption of Eq. 10 with ``L2`` and
``n = k`` (all parameters may change) over a grid of ε; on CIFAR-10 (ResNet-34)
it reports 94.26 → 96.12 clean and, e.g., 71.44 → 87.92 at ε = 0.2. The paper adds
that clean accuracy is about a unimodal function of the magnitude of the virtual
corruption, "whose best configuration can be determined easily".

This module holds what the Table 2 page computes beyond the library's sweep:

- :func:`holdout_split`: a training set and a disjoint *validation* set, both drawn
  from the training split, so that the virtual-corruption search never sees the test set;
- :func:`trainer_specs`: the trainers of the table (baseline, Eq. 16, Eq. 13, AWP,
  SAM, ASAM) as ``(objective, objective_params)`` on the one training loop;
- :func:`corrupted_accuracy`: one model, clean and under ``L2``, ``n = k``
  gradient-based corruption over the ε grid (one gradient per model, Algorithm 2);
- :func:`select_virtual`: the search rule for the virtual corruption's size;
- :func:`summarize`, :func:`table2`: mean ± std over seeds and the paper's layout,
  with :func:`paper_table2` (the paper's CIFAR-10 columns) beside ours;
- :func:`resistance_claim`: the paper's claim, tested ε by ε.

Choices stated here (and on the page):

- The gradient ``g`` of each evaluated model is computed once, in eval mode, over a
  fixed random subset of its *training* images (as on the corruption page); the
  corruption is ``â = ε g/‖g‖₂`` (Eq. 10 with ``p = 2``, ``n = k``) over every
  trainable parameter, weights, biases and batch-norm affine parameters alike.
- Search rule (:func:`select_virtual`): among the searched sizes whose clean
  *validation* accuracy is at most ``clean_tolerance`` points below the baseline's,
  the one with the highest mean corrupted validation accuracy over the ε grid; if
  none qualifies, the one with the highest clean validation accuracy.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from . import corruption as C
from .data import ImageData
from .objectives import OBJECTIVE_LABELS
from .sweep import corruption_sweep, evaluate, iter_batches
from .tables import CLEAN_ROW

__all__ = [
    "TRAINER_LABELS",
    "holdout_split",
    "trainer_specs",
    "corrupted_accuracy",
    "select_virtual",
    "summarize",
    "table2",
    "paper_table2",
    "resistance_claim",
]

#: Column labels of the trainers, in the table's order.
TRAINER_LABELS: dict[str, str] = {
    "baseline": "Baseline",
    "resistant": OBJECTIVE_LABELS["corruption_resistant"],
    "direct": OBJECTIVE_LABELS["corruption_direct"],
    "awp": "AWP",
    "sam": "SAM",
    "asam": "ASAM",
}


# --------------------------------------------------------------------------- data
def holdout_split(data: ImageData, train: int | None, validation: int, seed: int = 0) -> ImageData:
    """Training images and a disjoint validation set, both from ``data``'s training split.

    A random permutation (``seed``) of the training split gives the first ``validation``
    images as the validation set and the next ``train`` (``None``: all the rest) as the
    training set. The result is an :class:`ImageData` whose *test* split is the
    validation set (what the training loop logs each epoch and what the search
    evaluates); the real test split is not in it. ``name`` gets a ``+holdout`` suffix
    so checkpoints of this split never mix with full-split ones (the cache key also
    holds the label digests).
    """
    if isinstance(validation, bool) or not isinstance(validation, int) or validation < 1:
        raise ValueError(f"validation must be a positive int (images held out of training), got {validation!r}")
    n = len(data.train_y)
    if train is not None and (isinstance(train, bool) or not isinstance(train, int) or train < 1):
        raise ValueError(f"train must be a positive int or None (all remaining images), got {train!r}")
    needed = validation + (train if train is not None else 1)
    if needed > n:
        raise ValueError(
            f"{data.name} has {n} training images, fewer than validation={validation} + train={train}; "
            "lower train_samples or val_samples"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx = order[:validation].sort().values.to(data.train_y.device)
    rest = order[validation:] if train is None else order[validation:validation + train]
    train_idx = rest.sort().values.to(data.train_y.device)
    return dataclasses.replace(
        data, name=f"{data.name}+holdout",
        train_x=data.train_x[train_idx], train_y=data.train_y[train_idx],
        test_x=data.train_x[val_idx], test_y=data.train_y[val_idx],
    )


# --------------------------------------------------------------------------- trainers
def trainer_specs(
    *,
    alpha: float,
    eps: float,
    p: float | str = 2,
    awp_gamma: float = 0.01,
    sam_rho: float = 0.05,
    asam_rho: float = 2.0,
    include: Sequence[str] = tuple(TRAINER_LABELS),
) -> dict[str, tuple[str, dict[str, Any]]]:
    """The trainers of Table 2 as ``{key: (objective, objective_params)}`` for
    :class:`~paramstress.training.TrainConfig`: ``baseline`` (cross-entropy),
    ``resistant`` (Eq. 16, ``λ = α·ε``), ``direct`` (Eq. 13), ``awp``, ``sam``,
    ``asam``; the two Sun et al. variants share ``α``, ``ε`` and ``p``. Everything
    else of the config is the caller's and the same for all."""
    unknown = [key for key in include if key not in TRAINER_LABELS]
    if unknown or not include:
        raise ValueError(f"unknown trainers {unknown}; choose from {list(TRAINER_LABELS)}")
    p_json: Any = "inf" if (isinstance(p, (int, float)) and math.isinf(p)) else p
    specs = {
        "baseline": ("cross_entropy", {}),
        "resistant": ("corruption_resistant", {"alpha": alpha, "eps": eps, "p": p_json}),
        "direct": ("corruption_direct", {"alpha": alpha, "eps": eps, "p": p_json}),
        "awp": ("awp", {"gamma": awp_gamma}),
        "sam": ("sam", {"rho": sam_rho, "adaptive": False}),
        "asam": ("sam", {"rho": asam_rho, "adaptive": True}),
    }
    return {key: specs[key] for key in include}


# --------------------------------------------------------------------------- evaluation
def corrupted_accuracy(
    model: nn.Module,
    grad_x: torch.Tensor,
    grad_y: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps_values: Sequence[float],
    p: float = 2.0,
    batch_size: int = 1000,
    transform=None,
) -> pd.DataFrame:
    """One model's Table 2 column: clean, then the gradient-based corruption with ``L_p``
    (``p = 2``) and ``n = k`` over all trainable parameters at each ε.

    The gradient is computed once over ``(grad_x, grad_y)`` (eval mode, Algorithm 2);
    ``(x, y)`` is the evaluation set. Rows: ``eps`` (NaN for the clean row),
    ``accuracy`` (%), ``loss``, ``delta_loss``, ``indicator``, ``nonfinite``. Weights are
    bit-identical afterwards.
    """
    named = [(name, prm) for name, prm in model.named_parameters() if prm.requires_grad]
    eps_list = [C._check_eps(e) for e in eps_values]
    if not eps_list:
        raise ValueError("eps_values is empty: give the Table 2 ε grid, e.g. [0.05, 0.1, 0.2, 0.5, 1.0]")
    g = C.subspace_gradient(model, named, F.cross_entropy, iter_batches(grad_x, grad_y, batch_size),
                            transform=transform)
    clean = evaluate(model, x, y, batch_size=batch_size, transform=transform)
    swept = corruption_sweep(model, named, g, x, y, eps_values=eps_list, n_values=[None], p=p,
                             methods=["gradient"], batch_size=batch_size, transform=transform)
    rows = [{"eps": math.nan, "accuracy": clean["accuracy"], "loss": clean["loss"], "delta_loss": 0.0,
             "indicator": 0.0, "nonfinite": clean["nonfinite"]}]
    rows += swept[["eps", "accuracy", "loss", "delta_loss", "indicator", "nonfinite"]].to_dict("records")
    return pd.DataFrame.from_records(rows)


def select_virtual(search: pd.DataFrame, baseline: pd.DataFrame, *, clean_tolerance: float = 1.0,
                   size_col: str = "virtual_eps") -> tuple[float, pd.DataFrame]:
    """The search rule for the virtual corruption (see the module docstring).

    ``search``: rows of :func:`corrupted_accuracy` on the validation set with a
    ``size_col`` column (one value per searched size); ``baseline``: the baseline's
    rows. Returns the chosen size and one row per size: ``clean`` (validation
    accuracy), ``corrupted_mean`` (mean over the ε grid), ``clean_cost`` (baseline
    clean − clean), ``eligible`` and ``selected``.
    """
    if search.empty or size_col not in search.columns:
        raise ValueError(f"search needs rows with a {size_col!r} column")
    base_clean = float(baseline.loc[baseline["eps"].isna(), "accuracy"].iloc[0])
    base_corrupted = float(baseline.loc[baseline["eps"].notna(), "accuracy"].mean())
    records = []
    for size, rows in search.groupby(size_col, sort=True):
        clean = float(rows.loc[rows["eps"].isna(), "accuracy"].iloc[0])
        corrupted = float(rows.loc[rows["eps"].notna(), "accuracy"].mean())
        records.append({size_col: float(size), "clean": clean, "corrupted_mean": corrupted,
                        "clean_cost": base_clean - clean, "corrupted_gain": corrupted - base_corrupted,
                        "eligible": base_clean - clean <= clean_tolerance})
    table = pd.DataFrame.from_records(records)
    pool = table[table["eligible"]]
    if len(pool):
        chosen = float(pool.loc[pool["corrupted_mean"].idxmax(), size_col])
    else:
        chosen = float(table.loc[table["clean"].idxmax(), size_col])
    table["selected"] = table[size_col] == chosen
    return chosen, table


# --------------------------------------------------------------------------- tables
def summarize(results: pd.DataFrame, *, trainer_col: str = "trainer") -> pd.DataFrame:
    """Mean, std (``ddof = 1``; NaN for one seed), min, max and seed count of the
    accuracy per trainer and ε (NaN ε = clean), in the order trainers first appear."""
    needed = [trainer_col, "seed", "eps", "accuracy"]
    missing = [c for c in needed if c not in results.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}")
    frame = results.assign(_eps=results["eps"].fillna(-1.0))
    out = (frame.groupby([trainer_col, "_eps"], sort=False)["accuracy"]
           .agg(mean="mean", std="std", min="min", max="max", seeds="count").reset_index())
    out["eps"] = out["_eps"].where(out["_eps"] >= 0)
    order = {t: i for i, t in enumerate(dict.fromkeys(results[trainer_col]))}
    out = out.assign(_t=out[trainer_col].map(order)).sort_values(["_t", "_eps"], kind="stable")
    return out.drop(columns=["_t", "_eps"])[[trainer_col, "eps", "seeds", "mean", "std", "min", "max"]] \
        .reset_index(drop=True)


def _row_label(eps: float) -> str:
    """Row labels as the paper's Table 2 writes ε: ``0.05``, ``0.1``, ``1``."""
    return CLEAN_ROW if pd.isna(eps) else f"ε={float(eps):g}"


def table2(summary: pd.DataFrame, *, labels: Mapping[str, str] | None = None, baseline: str = "baseline",
           decimals: int = 2, trainer_col: str = "trainer", paper: bool = True) -> pd.DataFrame:
    """Table 2 in the paper's layout: a clean row on top, then one row per ε (``L2``,
    ``n = k``); one column per trainer, ``mean ± std`` over seeds (just the mean for one
    seed); the clean row of every other trainer adds its change from the baseline in
    parentheses, as the paper's "96.12 (+1.86)". With ``paper``, the paper's CIFAR-10
    ResNet-34 Baseline and Proposed columns (:func:`paper_table2`) are joined on the
    rows they share (``—`` elsewhere): different data and model, see the page."""
    labels = dict(labels or {})
    base = summary[summary[trainer_col] == baseline].set_index(summary.loc[summary[trainer_col] == baseline, "eps"]
                                                               .fillna(-1.0))["mean"]
    rows: dict[str, dict[str, str]] = {}
    eps_order = sorted(summary["eps"].dropna().unique())
    for eps in [math.nan] + list(eps_order):
        rows[_row_label(eps)] = {}
    for trainer, part in summary.groupby(trainer_col, sort=False):
        column = labels.get(trainer, TRAINER_LABELS.get(trainer, trainer))
        for _, r in part.iterrows():
            text = f"{r['mean']:.{decimals}f}"
            if r["seeds"] > 1 and not pd.isna(r["std"]):
                text += f" ± {r['std']:.{decimals}f}"
            if pd.isna(r["eps"]) and trainer != baseline and -1.0 in base.index:
                text += f" ({r['mean'] - base[-1.0]:+.{decimals}f})"
            rows[_row_label(r["eps"])][column] = text
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "ε (L2, n = k)"
    if paper:
        ref = paper_table2()
        ref_rows = {_row_label(e): (b, q) for e, b, q in zip(ref["eps"], ref["baseline"], ref["proposed"])}
        table["CIFAR-10 Baseline (paper)"] = [f"{ref_rows[i][0]:.2f}" if i in ref_rows else "—" for i in table.index]
        table["CIFAR-10 Proposed (paper)"] = [
            (f"{ref_rows[i][1]:.2f}" + (f" ({ref_rows[i][1] - ref_rows[i][0]:+.2f})" if i == CLEAN_ROW else ""))
            if i in ref_rows else "—" for i in table.index]
    return table.fillna("—")


#: Sun et al. (2021), Table 2, CIFAR-10 column (ResNet-34, accuracy %, L2, n = k):
#: ε (None = w/o corruption) → (Baseline, Proposed).
_PAPER_TABLE2_CIFAR10: dict[float | None, tuple[float, float]] = {
    None: (94.26, 96.12),
    0.05: (93.20, 95.65),
    0.1: (89.84, 94.59),
    0.2: (71.44, 87.92),
    0.5: (13.77, 21.42),
    1.0: (10.00, 10.94),
}


def paper_table2() -> pd.DataFrame:
    """The paper's Table 2 for CIFAR-10 (ResNet-34), transcribed: columns ``eps`` (NaN
    for the clean row), ``baseline``, ``proposed``, ``change`` (accuracy %, L2, n = k)."""
    rows = [{"eps": math.nan if e is None else e, "baseline": b, "proposed": q, "change": round(q - b, 2)}
            for e, (b, q) in _PAPER_TABLE2_CIFAR10.items()]
    return pd.DataFrame.from_records(rows)


# --------------------------------------------------------------------------- the claim
def resistance_claim(summary: pd.DataFrame, trainer: str, *, baseline: str = "baseline", min_drop: float = 10.0,
                     max_clean_cost: float = 1.0, min_se: float = 2.0, trainer_col: str = "trainer") -> pd.DataFrame:
    """The paper's claim for ``trainer``, ε by ε: at an ε where the baseline loses at least
    ``min_drop`` points (mean over seeds), does ``trainer`` raise the corrupted accuracy,
    at a clean-accuracy cost of at most ``max_clean_cost`` points?

    One row per such ε: ``baseline_drop``, ``baseline``/``trainer`` accuracy (means),
    ``gain`` (trainer − baseline), ``gain_se`` (standard error of the difference of the
    means, from the seeds' standard deviations; NaN for one seed), ``clean_cost``
    (baseline clean − trainer clean), ``resolved`` (the gain exceeds ``min_se`` standard
    errors; with one seed, where there is no standard error, any positive gain counts)
    and ``holds`` (``gain > 0``, ``resolved`` and ``clean_cost ≤ max_clean_cost``).
    Empty when the baseline never loses ``min_drop`` points.
    """
    def pick(name: str) -> pd.DataFrame:
        part = summary[summary[trainer_col] == name]
        if part.empty:
            raise ValueError(f"no rows for trainer {name!r}; trainers: {list(dict.fromkeys(summary[trainer_col]))}")
        return part.assign(_eps=part["eps"].fillna(-1.0)).set_index("_eps")

    base, other = pick(baseline), pick(trainer)
    base_clean, other_clean = float(base.loc[-1.0, "mean"]), float(other.loc[-1.0, "mean"])
    records = []
    for eps, row in base.iterrows():
        if eps < 0 or eps not in other.index:
            continue
        drop = base_clean - float(row["mean"])
        if drop < min_drop:
            continue
        o = other.loc[eps]
        se = math.sqrt(row["std"] ** 2 / row["seeds"] + o["std"] ** 2 / o["seeds"]) \
            if row["seeds"] > 1 and o["seeds"] > 1 else math.nan
        gain = float(o["mean"]) - float(row["mean"])
        cost = base_clean - other_clean
        resolved = bool(gain > 0 and (math.isnan(se) or gain > min_se * se))
        records.append({"trainer": trainer, "eps": float(eps), "baseline_drop": drop,
                        "baseline": float(row["mean"]), "accuracy": float(o["mean"]), "gain": gain, "gain_se": se,
                        "clean_cost": cost, "resolved": resolved,
                        "holds": bool(gain > 0 and resolved and cost <= max_clean_cost)})
    columns = ["trainer", "eps", "baseline_drop", "baseline", "accuracy", "gain", "gain_se", "clean_cost",
               "resolved", "holds"]
    return pd.DataFrame.from_records(records, columns=columns)
