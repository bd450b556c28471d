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
- :func:`resistance_claim`: the paper's claim, tested ε by ε with a one-sided paired t-test
  across seeds (:mod:`paramstress.stats`), and :func:`claim_verdict` /
  :func:`claim_verdicts` / :func:`paper_claim_verdict`, the sentences the page prints;
- :func:`task_table2`: the whole of Table 2 for one text task of
  :mod:`paramstress.tasks` (baseline, virtual-corruption search on the task's
  validation split, the chosen model and the baseline on the evaluation split),
  through the shared task trainer and :func:`paramstress.tasks.task_corrupted_scores`.

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

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from paramstress.corruption import operators as C
from paramstress.engine import stats as S
from paramstress.engine import workers as W
from paramstress.engine.data import ImageData
from paramstress.corruption.objectives import OBJECTIVE_LABELS, parse_p
from paramstress.engine.training import make_objective
from paramstress.engine.sweep import evaluate, iter_batches
from paramstress.corruption.sweeps import corruption_sweep
from paramstress.corruption.tables import CLEAN_ROW

__all__ = [
    "damage_frame",
    "search_findings",
    "flatness_table",
    "flatness_findings",
    "TRAINER_LABELS",
    "holdout_split",
    "load_holdout_split",
    "trainer_specs",
    "corrupted_accuracy",
    "select_virtual",
    "summarize",
    "table2",
    "paper_table2",
    "PAPER_TABLE2",
    "resistance_claim",
    "resistance_claims",
    "claim_outcome",
    "claim_numbers",
    "claim_table",
    "claim_verdict",
    "claim_verdicts",
    "paper_claim_verdict",
    "TaskTable2",
    "task_table2",
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
def load_holdout_split(dataset: str, train: int | None, validation: int, seed: int = 0) -> ImageData:
    """:func:`holdout_split` of the data set named ``dataset``, loaded through the data layer:
    what a worker process rebuilds for :func:`paramstress.engine.training.train_many`
    (``functools.partial(load_holdout_split, name, train, validation, seed)``)."""
    from paramstress.engine import data as D

    return holdout_split(D.load(dataset), train, validation, seed)


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
    eps_list = [C.check_eps(e) for e in eps_values]
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
                   size_col: str = "virtual_eps", metric: str = "accuracy",
                   higher_is_better: bool = True) -> tuple[float, pd.DataFrame]:
    """The search rule for the virtual corruption (see the module docstring).

    ``search``: rows of :func:`corrupted_accuracy` (or, for any task,
    :func:`paramstress.tasks.task_corrupted_scores`) on the validation set with a
    ``size_col`` column (one value per searched size); ``baseline``: the baseline's
    rows. ``metric`` names the score column; with ``higher_is_better=False`` (log
    perplexity) "better" and "cost" are read the other way. Returns the chosen size and
    one row per size: ``clean`` (validation score), ``corrupted_mean`` (mean over the ε
    grid), ``clean_cost`` (how much worse than the baseline's clean score, in the
    metric's units), ``corrupted_gain`` (how much better than the baseline's corrupted
    mean), ``eligible`` and ``selected``.
    """
    if search.empty or size_col not in search.columns:
        raise ValueError(f"search needs rows with a {size_col!r} column")
    for name, frame in (("search", search), ("baseline", baseline)):
        if metric not in frame.columns:
            raise ValueError(f"{name} has no {metric!r} column; pass metric= the score column "
                             f"(columns: {list(frame.columns)})")
    sign = 1.0 if higher_is_better else -1.0
    base_clean = float(baseline.loc[baseline["eps"].isna(), metric].iloc[0])
    base_corrupted = float(baseline.loc[baseline["eps"].notna(), metric].mean())
    records = []
    for size, rows in search.groupby(size_col, sort=True):
        clean = float(rows.loc[rows["eps"].isna(), metric].iloc[0])
        corrupted = float(rows.loc[rows["eps"].notna(), metric].mean())
        cost = sign * (base_clean - clean)
        records.append({size_col: float(size), "clean": clean, "corrupted_mean": corrupted,
                        "clean_cost": cost, "corrupted_gain": sign * (corrupted - base_corrupted),
                        "eligible": cost <= clean_tolerance})
    table = pd.DataFrame.from_records(records)
    pool = table[table["eligible"]]
    best = (lambda col: col.idxmax()) if higher_is_better else (lambda col: col.idxmin())
    if len(pool):
        chosen = float(pool.loc[best(pool["corrupted_mean"]), size_col])
    else:
        chosen = float(table.loc[best(table["clean"]), size_col])
    table["selected"] = table[size_col] == chosen
    return chosen, table


# --------------------------------------------------------------------------- tables
def summarize(results: pd.DataFrame, *, trainer_col: str = "trainer", metric: str = "accuracy") -> pd.DataFrame:
    """Mean, std (``ddof = 1``; NaN for one seed), min, max and seed count of the
    score column ``metric`` per trainer and ε (NaN ε = clean), in the order trainers
    first appear."""
    needed = [trainer_col, "seed", "eps", metric]
    missing = [c for c in needed if c not in results.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}")
    frame = results.assign(_eps=results["eps"].fillna(-1.0))
    out = (frame.groupby([trainer_col, "_eps"], sort=False)[metric]
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
           decimals: int = 2, trainer_col: str = "trainer", paper: bool | str = True) -> pd.DataFrame:
    """Table 2 in the paper's layout: a clean row on top, then one row per ε (``L2``,
    ``n = k``); one column per trainer, ``mean ± std`` over seeds (just the mean for one
    seed); the clean row of every other trainer adds its change from the baseline in
    parentheses, as the paper's "96.12 (+1.86)". With ``paper`` (``True``: CIFAR-10, or
    a task of :data:`PAPER_TABLE2`, e.g. ``"De-En"``), the paper's Baseline and Proposed
    columns of that task (:func:`paper_table2`) are joined on the rows they share (``—``
    elsewhere): different data and models, see the page."""
    labels = dict(labels or {})
    base = summary[summary[trainer_col] == baseline].set_index(summary.loc[summary[trainer_col] == baseline, "eps"]
                                                               .fillna(-1.0))["mean"]
    rows: dict[str, dict[str, str]] = {}
    task = None if not paper else ("CIFAR-10" if paper is True else str(paper))
    ref = paper_table2(task) if task else None
    eps_set = set(summary["eps"].dropna().astype(float))
    if ref is not None and task != "CIFAR-10":  # the paper's own rows that ours lack join, in ε order
        eps_set |= set(ref["eps"].dropna().astype(float))
    for eps in [math.nan] + sorted(eps_set):
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
    table = pd.DataFrame.from_dict(rows, orient="index").reindex(list(rows))
    table.index.name = "ε (L2, n = k)"
    if ref is not None:
        ref_rows = {_row_label(e): (b, q) for e, b, q in zip(ref["eps"], ref["baseline"], ref["proposed"])}
        table[f"{task} Baseline (paper)"] = [f"{ref_rows[i][0]:.2f}" if i in ref_rows else "—" for i in table.index]
        table[f"{task} Proposed (paper)"] = [
            (f"{ref_rows[i][1]:.2f}" + (f" ({ref_rows[i][1] - ref_rows[i][0]:+.2f})" if i == CLEAN_ROW else ""))
            if i in ref_rows else "—" for i in table.index]
    return table.fillna("—")


#: The paper's perplexities in the PTB-LM clean row (Table 2 prints them, not log PPL).
PAPER_TABLE2_PTB_LM_PPL: tuple[float, float] = (70.09, 68.28)


#: Sun et al. (2021), Table 2, transcribed: task → ε (None = w/o corruption) →
#: (Baseline, Proposed), ``L2``, ``n = k``. Metrics: accuracy (%) for Tiny-ImageNet and
#: CIFAR-10 (ResNet-34), log perplexity for PTB-LM (LSTM; the paper prints the clean row
#: as perplexity, :data:`PAPER_TABLE2_PTB_LM_PPL`, stored here as its natural log so that
#: the column has one unit), UAS for PTB-Parsing (MLP), BLEU for De-En (Transformer).
PAPER_TABLE2: dict[str, dict[float | None, tuple[float, float]]] = {
    "Tiny-ImageNet": {None: (66.56, 67.06), 0.05: (64.88, 65.79), 0.1: (60.70, 63.47), 0.2: (41.79, 52.51),
                      0.5: (1.07, 7.92), 1.0: (0.55, 1.26)},
    "CIFAR-10": {None: (94.26, 96.12), 0.05: (93.20, 95.65), 0.1: (89.84, 94.59), 0.2: (71.44, 87.92),
                 0.5: (13.77, 21.42), 1.0: (10.00, 10.94)},
    "PTB-LM": {None: tuple(round(math.log(ppl), 4) for ppl in PAPER_TABLE2_PTB_LM_PPL),
               2.0: (4.28, 4.24), 5.0: (4.43, 4.24), 10.0: (4.94, 4.24), 20.0: (6.45, 4.27), 50.0: (12.11, 4.62)},
    "PTB-Parsing": {None: (87.26, 87.89), 0.005: (86.74, 87.67), 0.01: (85.32, 87.26), 0.05: (72.32, 82.06),
                    0.1: (61.80, 73.19), 0.2: (49.46, 57.73)},
    "De-En": {None: (35.33, 35.69), 0.5: (31.68, 34.84), 0.75: (22.13, 33.58), 1.0: (11.17, 31.25),
              1.25: (3.47, 24.47), 1.5: (1.56, 14.91)},
}


def paper_table2(task: str = "CIFAR-10") -> pd.DataFrame:
    """The paper's Table 2 for one task (:data:`PAPER_TABLE2`), transcribed: columns
    ``eps`` (NaN for the clean row), ``baseline``, ``proposed``, ``change`` (``L2``,
    ``n = k``; the task's metric)."""
    if task not in PAPER_TABLE2:
        raise ValueError(f"the paper's Table 2 has no task {task!r}; its tasks: {list(PAPER_TABLE2)}")
    rows = [{"eps": math.nan if e is None else e, "baseline": b, "proposed": q, "change": round(q - b, 4)}
            for e, (b, q) in PAPER_TABLE2[task].items()]
    return pd.DataFrame.from_records(rows)


# --------------------------------------------------------------------------- the claim
def _claim_from_summary(summary: pd.DataFrame, trainer: str, *, baseline: str, min_drop: float,
                        max_clean_cost: float, min_se: float, trainer_col: str, higher_is_better: bool,
                        metric: str) -> pd.DataFrame:
    """The claim from seed means only (no pairing): the rule before the paired test, kept
    for frames that hold only means (a page's ``summarize`` output, the paper's numbers)."""
    def pick(name: str) -> pd.DataFrame:
        part = summary[summary[trainer_col] == name]
        if part.empty:
            raise ValueError(f"no rows for trainer {name!r}; trainers: {list(dict.fromkeys(summary[trainer_col]))}")
        return part.assign(_eps=part["eps"].fillna(-1.0)).set_index("_eps")

    sign = 1.0 if higher_is_better else -1.0
    base, other = pick(baseline), pick(trainer)
    base_clean, other_clean = float(base.loc[-1.0, "mean"]), float(other.loc[-1.0, "mean"])
    records = []
    for eps, row in base.iterrows():
        if eps < 0 or eps not in other.index:
            continue
        drop = sign * (base_clean - float(row["mean"]))
        if drop < min_drop:
            continue
        o = other.loc[eps]
        se = math.sqrt(row["std"] ** 2 / row["seeds"] + o["std"] ** 2 / o["seeds"]) \
            if row["seeds"] > 1 and o["seeds"] > 1 else math.nan
        gain = sign * (float(o["mean"]) - float(row["mean"]))
        cost = sign * (base_clean - other_clean)
        resolved = bool(gain > 0 and (math.isnan(se) or gain > min_se * se))
        records.append({"trainer": trainer, "eps": float(eps), "baseline_drop": drop,
                        "baseline": float(row["mean"]), metric: float(o["mean"]), "gain": gain, "gain_se": se,
                        "clean_cost": cost, "resolved": resolved,
                        "holds": bool(gain > 0 and resolved and cost <= max_clean_cost)})
    columns = ["trainer", "eps", "baseline_drop", "baseline", metric, "gain", "gain_se", "clean_cost",
               "resolved", "holds"]
    return pd.DataFrame.from_records(records, columns=columns)


#: Columns of :func:`resistance_claim` on per-seed results (``accuracy`` is the metric's name).
CLAIM_COLUMNS = ["trainer", "eps", "n", "test", "baseline_drop", "baseline", "accuracy", "gain", "ci_low",
                 "ci_high", "p_value", "p_adjusted", "clean_cost", "verdict", "holds"]

#: The three outcomes of a tested ε (``verdict`` column).
HOLDS, DOES_NOT_HOLD, NOT_TESTED = "holds", "does not hold", "not tested"


def _per_seed(results: pd.DataFrame, name: str, trainer_col: str, metric: str) -> pd.DataFrame:
    """One trainer's per-seed scores: rows seeds, columns ε (-1 = clean)."""
    part = results[results[trainer_col] == name]
    if part.empty:
        raise ValueError(f"no rows for trainer {name!r}; trainers: {list(dict.fromkeys(results[trainer_col]))}")
    part = part.assign(_eps=part["eps"].astype(float).fillna(-1.0))
    dup = part.duplicated(["seed", "_eps"])
    if dup.any():
        first = part[dup].iloc[0]
        raise ValueError(f"trainer {name!r} has more than one row for seed {first['seed']} at ε "
                         f"{'clean' if first['_eps'] < 0 else first['_eps']}; give one row per (trainer, seed, ε)")
    wide = part.pivot(index="seed", columns="_eps", values=metric).sort_index()
    if -1.0 not in wide.columns:
        raise ValueError(f"trainer {name!r} has no clean row (eps NaN); the clean cost needs it")
    return wide.astype(float)


def resistance_claim(results: pd.DataFrame, trainer: str, *, baseline: str = "baseline", min_drop: float = 10.0,
                     max_clean_cost: float = 1.0, alpha_test: float = 0.05, adjust: str | None = "holm",
                     min_se: float = 2.0, trainer_col: str = "trainer", higher_is_better: bool = True,
                     metric: str = "accuracy") -> pd.DataFrame:
    """The paper's claim for ``trainer``, ε by ε, tested across seeds: at an ε where the
    baseline loses at least ``min_drop`` (metric units), is ``trainer`` better under that
    corruption than the baseline trained with the same seed, at a clean cost of at most
    ``max_clean_cost``?

    ``results``: one row per (trainer, seed, ε) with columns ``trainer_col``, ``seed``,
    ``eps`` (NaN = clean) and ``metric``, as the Table 2 page builds them. Seeds pair the
    two trainers (same initialisation and batch order); both must have the same seeds.
    With ``higher_is_better=False`` (log perplexity) a loss is a rise and a gain a fall.

    One row per ε where the baseline's mean drop (clean − corrupted, over the seeds) is at
    least ``min_drop``: ``n`` (seeds), ``test`` (its name), ``baseline_drop``, ``baseline``
    and ``<metric>`` (means over seeds), ``gain`` (mean over seeds of trainer − baseline,
    signed so that better is positive), ``ci_low``/``ci_high`` (the one-sided
    ``1 − alpha_test`` interval of the gain, ``[low, ∞)``), ``p_value`` (one-sided paired
    t-test, H1: mean gain > 0, :func:`paramstress.stats.paired_test`), ``p_adjusted``
    (Holm's adjustment over this trainer's ε rows, :func:`paramstress.stats.holm`: the
    claim "holds at some ε" is one family of tests; ``adjust=None`` keeps ``p_value``),
    ``clean_cost`` (mean over seeds of baseline − trainer clean), ``verdict``
    (``"holds"``, ``"does not hold"`` or ``"not tested"``) and ``holds`` (a bool: the
    adjusted p is below ``alpha_test`` and ``clean_cost ≤ max_clean_cost``). With fewer than
    2 seeds nothing is tested: ``verdict`` is ``"not tested"``, ``holds`` False, the
    interval and p NaN. Empty when the baseline never loses ``min_drop``. The thresholds
    travel with the frame (``attrs["claim"]``), for :func:`claim_verdict`.

    A frame of seed means (:func:`summarize`'s output: ``mean``, ``seeds``, no ``seed``
    column) cannot be paired; for it the rule before the paired test applies (``gain_se``:
    standard error of the difference of the means; ``resolved``: the gain exceeds
    ``min_se`` standard errors, any positive gain with one seed; ``holds``), with those
    columns, so that pages holding only means keep working.
    """
    if "seed" not in results.columns and {"mean", "seeds"} <= set(results.columns):
        return _claim_from_summary(results, trainer, baseline=baseline, min_drop=min_drop,
                                   max_clean_cost=max_clean_cost, min_se=min_se, trainer_col=trainer_col,
                                   higher_is_better=higher_is_better, metric=metric)
    needed = [trainer_col, "seed", "eps", metric]
    missing = [c for c in needed if c not in results.columns]
    if missing:
        raise ValueError(f"results lack columns {missing}; give the per-seed rows (trainer, seed, eps, {metric})")
    if not 0 < alpha_test < 1:
        raise ValueError(f"alpha_test must lie strictly between 0 and 1 (e.g. 0.05), got {alpha_test!r}")
    if adjust not in (None, "holm"):
        raise ValueError(f"adjust must be 'holm' or None, got {adjust!r}")
    sign = 1.0 if higher_is_better else -1.0
    base, other = _per_seed(results, baseline, trainer_col, metric), _per_seed(results, trainer, trainer_col, metric)
    if list(base.index) != list(other.index):
        raise ValueError(f"trainer {trainer!r} has seeds {list(other.index)}, the baseline {list(base.index)}: "
                         "the paired test pairs them by seed; run both with the same seeds")
    n = len(base)
    cost_by_seed = sign * (base[-1.0] - other[-1.0])
    cost = float(cost_by_seed.mean())
    records = []
    for eps in base.columns:
        if eps < 0 or eps not in other.columns:
            continue
        b, o = base[eps], other[eps]
        if b.isna().any() or o.isna().any():
            raise ValueError(f"ε = {eps:g}: some seeds lack a {metric} for {baseline!r} or {trainer!r}; "
                             "every seed needs a row at every ε")
        drop = float((sign * (base[-1.0] - b)).mean())
        if drop < min_drop:
            continue
        row = {"trainer": trainer, "eps": float(eps), "n": n, "baseline_drop": drop, "baseline": float(b.mean()),
               metric: float(o.mean()), "gain": float((sign * (o - b)).mean()), "clean_cost": cost}
        if n >= 2:
            test = S.paired_test(sign * o.to_numpy(), sign * b.to_numpy(), confidence=1 - alpha_test,
                                 alternative="greater")
            row.update(test=test.test, ci_low=test.ci_low, ci_high=test.ci_high, p_value=test.p_value)
        else:
            row.update(test="none (fewer than 2 seeds)", ci_low=math.nan, ci_high=math.nan, p_value=math.nan)
        records.append(row)
    columns = [metric if c == "accuracy" else c for c in CLAIM_COLUMNS]
    out = pd.DataFrame.from_records(records, columns=columns)
    thresholds = {"min_drop": float(min_drop), "max_clean_cost": float(max_clean_cost),
                  "alpha_test": float(alpha_test), "adjust": adjust, "metric": metric}
    if out.empty:
        out = out.astype({**{c: float for c in columns if c not in ("trainer", "test", "verdict", "holds", "n")},
                          "n": int, "holds": bool})
        out.attrs["claim"] = thresholds
        return out
    out["p_adjusted"] = S.holm(out["p_value"].to_numpy()) if adjust == "holm" else out["p_value"]
    tested = out["p_adjusted"].notna()
    out["holds"] = tested & (out["p_adjusted"] < alpha_test) & (out["clean_cost"] <= max_clean_cost)
    out["verdict"] = [NOT_TESTED if not t else (HOLDS if h else DOES_NOT_HOLD)
                      for t, h in zip(tested, out["holds"])]
    out = out[columns]
    out.attrs["claim"] = thresholds
    return out


def resistance_claims(results: pd.DataFrame, trainers: Sequence[str], **kwargs: Any) -> pd.DataFrame:
    """:func:`resistance_claim` for several trainers, one frame (Holm's adjustment per trainer)."""
    if not trainers:
        raise ValueError("trainers is empty: name the trainers to check against the baseline")
    frames = [resistance_claim(results, t, **kwargs) for t in trainers]
    full = [f for f in frames if len(f)]
    out = pd.concat(full, ignore_index=True) if full else frames[0]
    out.attrs = dict(frames[0].attrs)
    return out


def _thresholds(claims: pd.DataFrame) -> dict[str, Any]:
    """The thresholds ``claims`` were built with (:func:`resistance_claim` stores them)."""
    found = claims.attrs.get("claim")
    if not found:
        raise ValueError("claims carry no thresholds (attrs['claim']); build them with resistance_claim / "
                         "resistance_claims on per-seed results")
    return found


def claim_outcome(claims: pd.DataFrame, trainer: str) -> str:
    """One trainer's verdict over its ε rows: ``"holds"`` (at some ε), ``"not tested"`` (too
    few seeds), ``"does not hold"``, or ``"not checked"`` (the baseline never lost enough)."""
    part = claims[claims["trainer"] == trainer]
    if part.empty:
        return "not checked"
    if part["holds"].any():
        return HOLDS
    if (part["verdict"] == NOT_TESTED).all():
        return NOT_TESTED
    return DOES_NOT_HOLD


def claim_numbers(claims: pd.DataFrame, trainer: str, *, metric: str = "accuracy") -> dict[str, float]:
    """The numbers behind one trainer's verdict at the smallest ε its claim was checked at
    (its first row of :func:`resistance_claim`): ``eps``, the seed means ``baseline`` and
    ``proposed`` (``metric``), the mean paired ``gain`` and its Holm-adjusted one-sided ``p``;
    ``{}`` when the baseline never lost enough for the claim to be checked."""
    part = claims[claims["trainer"] == trainer].sort_values("eps")
    if part.empty:
        return {}
    row = part.iloc[0]
    return {"eps": float(row["eps"]), "baseline": float(row["baseline"]), "proposed": float(row[metric]),
            "gain": float(row["gain"]), "p": float(row["p_adjusted"])}


def claim_table(claims: pd.DataFrame, *, labels: Mapping[str, str] | None = None, metric: str = "accuracy",
                decimals: int = 2) -> pd.DataFrame:
    """:func:`resistance_claim`'s rows for display: trainer labels and ε as the index, the
    columns named as printed (``n``, ``test``, ``baseline drop``, ``baseline mean``,
    ``trainer mean``, ``mean gain``, ``CI low``/``CI high``,
    ``p``, ``p (Holm)``, ``clean cost``, ``verdict``), numbers rounded."""
    labels = {**TRAINER_LABELS, **dict(labels or {})}
    out = claims.assign(trainer=claims["trainer"].map(lambda k: labels.get(k, k)),
                        eps=claims["eps"].map(lambda e: f"{e:g}"))
    out = out.drop(columns=["holds"]).rename(columns={
        "baseline_drop": "baseline drop", "baseline": "baseline mean", metric: "trainer mean", "gain": "mean gain",
        "ci_low": "CI low", "ci_high": "CI high", "p_value": "p", "p_adjusted": "p (Holm)",
        "clean_cost": "clean cost"})
    numeric = ["baseline drop", "baseline mean", "trainer mean", "mean gain", "CI low", "CI high", "clean cost"]
    # rounded as the verdict sentences print them (Python's format, not numpy's round-half-even)
    out[numeric] = out[numeric].astype(float).map(lambda v: float(f"{v:.{decimals}f}"))
    out[["p", "p (Holm)"]] = out[["p", "p (Holm)"]].astype(float).map(lambda v: float(f"{v:.4f}"))
    return out.set_index(["trainer", "eps"])


def _eps_set(values: Sequence[float]) -> str:
    return "{" + ", ".join(f"{float(e):g}" for e in values) + "}"


def claim_verdict(claims: pd.DataFrame, trainer: str, *, label: str | None = None, units: str = "points",
                  percent: bool = True, decimals: int = 2) -> str:
    """One trainer's verdict as a Markdown bullet, from :func:`resistance_claim`'s rows: the
    outcome (:func:`claim_outcome`), the ε it rests on (where it holds: the largest gain
    among those ε; otherwise the ε with the smallest adjusted p), the test, ``n``, the mean
    gain with its interval, ``p`` (and Holm's), the clean cost, and why it fails where it
    does, with the thresholds ``claims`` were built with. Levels are printed with ``%`` when
    ``percent``."""
    t = _thresholds(claims)
    min_drop, max_clean_cost, alpha_test, metric = t["min_drop"], t["max_clean_cost"], t["alpha_test"], t["metric"]
    name = label or TRAINER_LABELS.get(trainer, trainer)
    part = claims[claims["trainer"] == trainer]
    pct = "%" if percent else ""
    if part.empty:
        return (f"- **{name}**: the baseline never loses ≥ {min_drop:g} {units} on this grid; "
                "the claim cannot be checked.")
    where = f"where the baseline loses ≥ {min_drop:g} {units} (ε ∈ {_eps_set(part['eps'])})"
    outcome = claim_outcome(claims, trainer)
    if outcome == NOT_TESTED:
        best = part.loc[part["gain"].idxmax()]
        return (f"- **{name}**: **{S.not_tested(int(best['n']))}**. Observed only: {where}, the largest mean "
                f"gain is {best['gain']:+.{decimals}f} {units} at ε = {best['eps']:g} "
                f"({best['baseline']:.{decimals}f}{pct} → {best[metric]:.{decimals}f}{pct}), at a clean cost of "
                f"{best['clean_cost']:+.{decimals}f} {units}.")
    pool = part[part["holds"]] if outcome == HOLDS else part
    if outcome == HOLDS:
        best = pool.loc[pool["gain"].idxmax()]
    else:  # the smallest adjusted p; Holm ties broken by the raw p
        best = pool.sort_values(["p_adjusted", "p_value"], kind="stable").iloc[0]
    test = S.PairedTest(n=int(best["n"]), mean_difference=float(best["gain"]), sd=math.nan, t=math.nan,
                        df=int(best["n"]) - 1, p_value=float(best["p_value"]), ci_low=float(best["ci_low"]),
                        ci_high=float(best["ci_high"]), test=str(best["test"]).replace("mean difference", "mean gain"),
                        confidence=1 - alpha_test)
    adjusted_rows = len(part) > 1 and not np.allclose(part["p_adjusted"], part["p_value"], equal_nan=True)
    adjusted = float(best["p_adjusted"]) if adjusted_rows else None
    why = [what for what, failed in (("the test", not best["p_adjusted"] < alpha_test),
                                     ("the clean cost", best["clean_cost"] > max_clean_cost)) if failed]
    head = (f"**holds** at ε = {best['eps']:g}" if outcome == HOLDS
            else f"**does not hold** at any ε; closest (smallest p) at ε = {best['eps']:g}")
    return (f"- **{name}**: {where}, the claim {head}: {best['baseline']:.{decimals}f}{pct} → "
            f"{best[metric]:.{decimals}f}{pct}; {S.describe(test, units=units, decimals=decimals, p_adjusted=adjusted)}"
            f" {'<' if best['p_adjusted'] < alpha_test else '≥'} α = {alpha_test:g}; clean cost "
            f"{best['clean_cost']:+.{decimals}f} {units}{' (a clean gain)' if best['clean_cost'] < 0 else ''}"
            f" {'≤' if best['clean_cost'] <= max_clean_cost else '>'} {max_clean_cost:g}"
            + (f". It fails on {' and on '.join(why)}." if why else "."))


def claim_verdicts(claims: pd.DataFrame, results: pd.DataFrame, *, main: Sequence[str] = ("resistant", "direct"),
                   baseline: str = "baseline", trainer_col: str = "trainer") -> str:
    """The Table 2 page's verdicts as Markdown: :func:`claim_verdict` for the paper's trainers
    (``main``), the outcome of every other trainer of ``claims`` under the same test, and two
    facts for context from ``results``: which trainers beat the baseline's clean mean, and
    whether the largest gain at the smallest checked ε belongs to another trainer than the
    paper's (then the effect is not specific to its objective)."""
    metric = _thresholds(claims)["metric"]
    others = [k for k in dict.fromkeys(claims["trainer"]) if k not in main]
    lines = [claim_verdict(claims, k) for k in main if k in set(results[trainer_col])]
    if others:
        lines.append("\nFor comparison, the same test for the other trainers: " + "; ".join(
            f"{TRAINER_LABELS.get(k, k)} {claim_outcome(claims, k)}" for k in others) + ".")
    clean = results[results["eps"].isna()].groupby(trainer_col, sort=False)[metric].mean()
    paper = paper_table2()
    paper_clean_gain = float(paper.loc[paper["eps"].isna(), "change"].iloc[0])
    gainers = [TRAINER_LABELS.get(k, k) for k in clean.index if k != baseline and clean[k] > clean[baseline]]
    context = (f"Clean accuracy above the baseline's (mean over seeds): {', '.join(gainers)}." if gainers else
               f"No trainer beats the baseline's clean accuracy (mean over seeds) here, where the paper's resistant "
               f"training gains {paper_clean_gain:.2f} points on CIFAR-10.")
    if len(claims):
        first = claims[np.isclose(claims["eps"], claims["eps"].min())]
        top = first.loc[first["gain"].idxmax()]
        if top["trainer"] not in main:
            context += (f" At ε = {top['eps']:g} the largest mean gain of all trainers is "
                        f"{TRAINER_LABELS.get(top['trainer'], top['trainer'])}'s ({top['gain']:+.2f} points), so on "
                        "this data the effect is not specific to the paper's objective.")
    lines.append(context if others else "\n" + context)
    return "\n".join(lines)


def paper_claim_verdict(*, min_drop: float, max_clean_cost: float, task: str = "CIFAR-10") -> str:
    """The paper's own Table 2 numbers for ``task`` put through the claim's thresholds. One
    number per cell (no seeds), so no test is possible: the sentence says which ε qualify,
    the largest gain and the clean cost, and that this is an observation."""
    rows = paper_table2(task)
    summary = pd.concat([rows.assign(trainer=t, seeds=1, mean=rows[t], std=np.nan)
                         for t in ("baseline", "proposed")], ignore_index=True)
    claim = _claim_from_summary(summary, "proposed", baseline="baseline", min_drop=min_drop,
                                max_clean_cost=max_clean_cost, min_se=2.0, trainer_col="trainer",
                                higher_is_better=True, metric="proposed")
    if claim.empty:
        return f"The paper's own {task} numbers: the baseline never loses ≥ {min_drop:g} points on its grid."
    best = claim.loc[claim["gain"].idxmax()]
    met = bool(best["gain"] > 0 and best["clean_cost"] <= max_clean_cost)
    return (f"The paper's own {task} numbers (one value per cell, no seeds: no test is possible), under the same "
            f"thresholds: the baseline loses ≥ {min_drop:g} points at ε ∈ {_eps_set(claim['eps'])}; "
            f"the largest gain "
            f"is {best['gain']:+.2f} points at ε = {best['eps']:g}, with a clean cost of {best['clean_cost']:+.2f} "
            f"({'a clean gain' if best['clean_cost'] < 0 else 'a clean loss'}): the thresholds are "
            f"{'met' if met else 'not met'} there, as an observation, untested.")


# --------------------------------------------------------------------------- text tasks
@dataclasses.dataclass
class TaskTable2:
    """What :func:`task_table2` found for one task.

    ``results``: one row per (trainer, seed, ε) on the evaluation split (``trainer``
    ``baseline`` / ``resistant``, ``seed``, ``eps`` (NaN = clean), the metric, ``loss``,
    ``delta_loss``, ``indicator``, ``virtual_eps``); ``search``: the validation rows of
    every searched size (and the baseline's, ``virtual_eps`` NaN); ``selection``: the
    table of :func:`select_virtual`; ``chosen``: the selected size; ``models``: the
    trained models by ``(trainer, seed)``; ``seconds``: training and evaluation time.
    """

    results: pd.DataFrame
    search: pd.DataFrame
    selection: pd.DataFrame
    chosen: float
    models: dict[tuple[str, int], nn.Module]
    histories: dict[tuple[str, float | None, int], list[dict[str, float]]]
    seconds: dict[str, float]


def task_table2(
    task: Any,
    validation_task: Any,
    train: Mapping[str, Any],
    *,
    virtual_eps: Sequence[float],
    eval_eps: Sequence[float],
    alpha: float = 0.5,
    p: float | str = 2,
    objective: str = "corruption_direct",
    seeds: Sequence[int] = (0,),
    clean_tolerance: float = 1.0,
    checkpoint_dir: Any = None,
    progress: bool = False,
    workers: int = 1,
    task_params: Mapping[str, Any] | None = None,
) -> TaskTable2:
    """Table 2 for one task of :mod:`paramstress.tasks` (Sun et al. 2021, Eqs. 13/16, Table 2).

    ``train``: the :class:`~paramstress.tasks.TaskTrainConfig` fields shared by every
    trainer (the seed is added). Steps:

    1. the baseline (cross-entropy) for the first seed, and one corruption-resistant
       model per size in ``virtual_eps`` (``objective``: ``corruption_direct``, Eq. 13,
       or ``corruption_resistant``, Eq. 16; ``alpha``, ``p``), all with the same loop;
    2. each model's gradient once over the task's gradient data (Algorithm 2) and its
       scores on ``validation_task``'s split, clean and under the ``L_p`` (``p = 2``),
       ``n = k`` gradient-based corruption at each of ``eval_eps``;
    3. :func:`select_virtual` picks the size (in the metric's direction);
    4. the baseline and the chosen size for every seed, scored the same way on
       ``task``'s evaluation split (the searched model of the first seed is reused).

    ``task`` and ``validation_task`` must be the same task with the same training data
    (their :meth:`identity` must agree), differing only in the split they evaluate.
    Models are cached by :func:`paramstress.tasks.train_task`; the trainings of steps 1 and
    4 are independent jobs of :func:`paramstress.tasks.train_tasks` (``workers``: 1 one after
    another in this process; N a local Ray instance, or ``$PARAMSTRESS_RAY_CLUSTER``, whose
    workers build the task from ``task_params``, the plain values it was built with, so
    these are needed then). Weights are restored bit-identically after every corruption.
    """
    import time

    from paramstress.corruption.text import tasks as T

    if task.identity() != validation_task.identity():
        raise ValueError("task and validation_task train on different data or models; build the validation task "
                         "with the same parameters and only another eval_split")
    if not virtual_eps:
        raise ValueError("virtual_eps is empty: give the virtual-corruption sizes to search, e.g. [0.05, 0.1]")
    if not seeds:
        raise ValueError("seeds is empty: give at least one training seed")
    eps_list = [C.check_eps(e) for e in eval_eps]
    if not eps_list:
        raise ValueError("eval_eps is empty: give the Table 2 ε grid (L2, n = k)")
    virtual = [C.check_eps(e) for e in virtual_eps]
    p_float = parse_p(p)
    p_json: Any = "inf" if math.isinf(p_float) else p
    metric, better = task.metric, task.higher_is_better

    def config(seed: int, size: float | None) -> Any:
        if size is None:
            return T.TaskTrainConfig(**dict(train), seed=seed)
        return T.TaskTrainConfig(**dict(train), seed=seed, objective=objective,
                                 objective_params={"alpha": alpha, "eps": size, "p": p_json})

    seconds = {"training": 0.0, "evaluation": 0.0}
    models: dict[tuple[str, float | None, int], nn.Module] = {}
    histories: dict[tuple[str, float | None, int], list[dict[str, float]]] = {}
    grads: dict[tuple[str, float | None, int], torch.Tensor] = {}

    def train_all(keys: Sequence[tuple[str, float | None, int]]) -> None:
        """Train (or load) every model of ``keys`` not trained yet, as one set of jobs."""
        todo = [k for k in dict.fromkeys(keys) if k not in models]
        if not todo:
            return
        began = time.perf_counter()
        done = T.train_tasks({task.key: task}, [(task.key, config(seed, size)) for _, size, seed in todo],
                             params={task.key: dict(task_params or {})}, checkpoint_dir=checkpoint_dir,
                             workers=workers, progress=progress)
        seconds["training"] += time.perf_counter() - began
        for k, result in zip(todo, done):
            models[k], histories[k] = result.model, result.history

    def scores(on: Any, trainer: str, size: float | None, seed: int) -> pd.DataFrame:
        model = models[trainer, size, seed]  # trained by train_all (steps 1 and 4) before it is scored
        began = time.perf_counter()
        key = (trainer, size, seed)
        if key not in grads:
            grads[key] = T.task_gradient(task, model)
        out = T.task_corrupted_scores(on, model, eps_values=eps_list, p=p_float, grad_vec=grads[key])
        seconds["evaluation"] += time.perf_counter() - began
        return out.assign(trainer=trainer, seed=seed, virtual_eps=math.nan if size is None else size)

    for size in (None, *virtual):  # every config and objective checked before the first step
        cfg = config(seeds[0], size)
        make_objective(cfg.objective, cfg.objective_params)
    W.check_workers(workers)
    if W.runs_remotely(workers, 2, None) and task_params is None:  # 2: step 1 trains at least two models
        raise ValueError("training in worker processes builds the task there: give task_params, the parameters "
                         "the task was built with (params/text_tasks.yml's task_params[key]); or use workers=1")
    first = seeds[0]
    train_all([("baseline", None, first), *[("resistant", size, first) for size in virtual]])  # step 1
    base_val = scores(validation_task, "baseline", None, first)
    search = pd.concat([scores(validation_task, "resistant", size, first) for size in virtual], ignore_index=True)
    chosen, selection = select_virtual(search, base_val, clean_tolerance=clean_tolerance, metric=metric,
                                       higher_is_better=better)
    train_all([(trainer, size, seed) for seed in seeds for trainer, size in (("baseline", None), ("resistant", chosen))])
    results = pd.concat([frame for seed in seeds for frame in
                         (scores(task, "baseline", None, seed), scores(task, "resistant", chosen, seed))],
                        ignore_index=True)
    columns = ["trainer", "seed", "virtual_eps", "eps", metric, "loss", "delta_loss", "indicator"]
    return TaskTable2(
        results=results[columns], search=pd.concat([base_val, search], ignore_index=True)[columns],
        selection=selection, chosen=chosen,
        models={(trainer, seed): m for (trainer, size, seed), m in models.items()
                if trainer == "baseline" or size == chosen},
        histories=histories, seconds=seconds)


# --------------------------------------------------------------------------- the page's findings
def search_findings(search_table: pd.DataFrame, baseline: pd.DataFrame, *, chosen_eps: float, alpha: float) -> str:
    """What the ε search of the direct variant (Eq. 13) shows, as Markdown: whether its clean
    validation accuracy is unimodal in ε with an interior peak (the paper's description) or
    monotone on the grid, how many sizes beat the baseline's clean accuracy, the range under
    corruption, and the chosen ε (λ = αε for Eq. 16). ``search_table``: the table of
    :func:`select_virtual`; ``baseline``: the baseline's rows of :func:`corrupted_accuracy`
    on the validation set."""
    base_clean = float(baseline.loc[baseline.eps.isna(), "accuracy"].iloc[0])
    base_corr = float(baseline.loc[baseline.eps.notna(), "accuracy"].mean())
    best_clean = search_table.loc[search_table["clean"].idxmax()]
    interior = search_table["virtual_eps"].min() < best_clean["virtual_eps"] < search_table["virtual_eps"].max()
    above = search_table[search_table["clean"] > base_clean]
    shape = ("rises and then falls (unimodal, with its peak inside the grid), as the paper describes"
             if interior else
             f"is highest at the {'smallest' if best_clean['virtual_eps'] == search_table['virtual_eps'].min() else 'largest'} "
             "searched ε, so on this grid it is monotone rather than unimodal with an interior peak")
    return (
        f"On the validation set the clean accuracy of the direct variant {shape}: from "
        f"{search_table['clean'].iloc[0]:.2f}% at ε = {search_table['virtual_eps'].iloc[0]:g} to "
        f"{search_table['clean'].iloc[-1]:.2f}% at ε = {search_table['virtual_eps'].iloc[-1]:g}, against "
        f"{base_clean:.2f}% for the baseline; {len(above)} of the {len(search_table)} sizes beat the baseline's clean "
        f"accuracy (the paper's Table 2 has the resistant model ahead on every task). Under corruption the mean "
        f"validation accuracy goes from {search_table['corrupted_mean'].min():.2f}% to "
        f"{search_table['corrupted_mean'].max():.2f}% (baseline {base_corr:.2f}%). The rule picks "
        f"**ε = {chosen_eps:g}** for the virtual corruption (λ = αε = {alpha * chosen_eps:g} for Eq. 16).")


def flatness_table(flat: pd.DataFrame, results: pd.DataFrame, *, eps: float) -> pd.DataFrame:
    """The flatness rows (one per model: ``trainer``, ``seed``, the flatness measures of
    :func:`paramstress.flatness.flatness`) joined with each model's test accuracy at ``eps``
    (``accuracy``) and clean (``clean``) from Table 2's ``results``, and the trainer's label."""
    at = results[np.isclose(results["eps"].fillna(-1), eps)][["trainer", "seed", "accuracy"]]
    clean = results[results.eps.isna()][["trainer", "seed", "accuracy"]].rename(columns={"accuracy": "clean"})
    out = flat.merge(at, on=["trainer", "seed"], how="left").merge(clean, on=["trainer", "seed"], how="left")
    out["label"] = out["trainer"].map(lambda k: TRAINER_LABELS.get(k, k))
    return out


def flatness_findings(table: pd.DataFrame, trainers: Sequence[str], *, eps: float) -> tuple[str, dict[str, float]]:
    """Stutz et al.'s flatness against the accuracy under corruption over the Table 2 models
    (``trainers``; rows of :func:`flatness_table`), as Markdown, and the glued numbers
    ``spearman_average`` / ``spearman_worst`` (Spearman ρ of each flatness with the accuracy at
    ``eps``; negative: flatter models keep more accuracy). Which trainers are flatter than the
    baseline on average over seeds, and the flattest, are stated beside it."""
    from scipy import stats

    models = table[table["trainer"].isin(list(trainers))].dropna(subset=["accuracy"])
    rho_avg = float(stats.spearmanr(models["average_flatness"], models["accuracy"]).statistic)
    rho_worst = float(stats.spearmanr(models["worst_flatness"], models["accuracy"]).statistic)
    means = table[table["trainer"].isin(list(trainers))].groupby("trainer")[["average_flatness", "worst_flatness"]].mean()
    flattest = {c: TRAINER_LABELS[means[c].idxmin()] for c in means.columns}
    base = means.loc["baseline"]
    flatter = {c: [TRAINER_LABELS[k] for k in means.index if k != "baseline" and means.loc[k, c] < base[c]]
               for c in means.columns}
    text = (
        f"Over the {len(models)} Table 2 models, the Spearman correlation between flatness and the accuracy at "
        f"ε = {eps:g} is **{rho_avg:.2f}** for the average case and **{rho_worst:.2f}** for the worst case "
        "(negative: flatter models keep more accuracy under corruption). "
        f"Flatter than the baseline on average over seeds: average case {', '.join(flatter['average_flatness']) or 'none'}; "
        f"worst case {', '.join(flatter['worst_flatness']) or 'none'}. The flattest trainer is "
        f"{flattest['average_flatness']} (average case) and {flattest['worst_flatness']} (worst case). "
        "Gradient-based corruption is a worst case of absolute size ε, while Stutz et al.'s balls are relative to each "
        "layer's norm, so the two need not rank the models alike.")
    return text, {"spearman_average": rho_avg, "spearman_worst": rho_worst}


def damage_frame(summaries: Mapping[str, pd.DataFrame], tasks: Mapping[str, Any],
                 labels: Mapping[str, str]) -> pd.DataFrame:
    """Table 2's text columns as damage (clean score − corrupted score, in the direction where
    larger is worse) at each ε: ours from ``summaries[key]`` (:func:`summarize`; trainers
    labelled by ``labels``) and the paper's baseline and proposed rows
    (:func:`paper_table2` of the task's label). Columns ``task``, ``eps``, ``damage``, ``model``."""
    rows = []
    for key, task in tasks.items():
        sign = 1.0 if task.higher_is_better else -1.0
        for trainer, part in summaries[key].groupby("trainer", sort=False):
            clean = float(part.loc[part["eps"].isna(), "mean"].iloc[0])
            for _, r in part[part["eps"].notna()].iterrows():
                rows.append({"task": task.label, "eps": r["eps"], "damage": sign * (clean - r["mean"]),
                             "model": f"{labels[trainer]}, ours"})
        ref = paper_table2(task.label)
        for col, name in (("baseline", "Baseline"), ("proposed", "Proposed")):
            clean = float(ref.loc[ref["eps"].isna(), col].iloc[0])
            for _, r in ref[ref["eps"].notna()].iterrows():
                rows.append({"task": task.label, "eps": r["eps"], "damage": sign * (clean - r[col]),
                             "model": f"{name}, paper"})
    return pd.DataFrame(rows)
