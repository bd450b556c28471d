"""Do the two papers name the same layers? Per-layer measures of parameter fragility from
Sun et al. (2021) and Pravin et al. (2023) side by side, with rank correlations.

Neither paper makes this comparison. On one checkpoint, for every convolution and
linear layer ``l`` (its ``weight`` tensor: the parameters synaptic filtering removes,
Pravin et al. §3.1, §4.3), this module measures:

- **gradient-based corruption restricted to the layer** (Sun et al., Eqs. 10-11, and
  their Fig. 4 probes restricted to one subspace): the first-order indicator
  ``ε‖top_n(g_l)‖_{p*}`` (Eq. 11) and the measured loss change and accuracy drop under
  the corruption of size ``ε`` with ``n`` changed parameters (:func:`layer_corruption`,
  through :func:`paramstress.vulnerability.probe`; one gradient for the model, sliced
  per layer);
- **synaptic-filtering scores** φ_clean and Δφ (Pravin et al., Eqs. 14 and 16, from
  :func:`paramstress.fragility.scores`, combined response of Eq. 13);
- **flatness restricted to the layer** (Stutz et al. 2021): the average-case and
  worst-case loss increase in the relative ball ``‖ν_l‖ ≤ ξ‖w_l‖`` of that layer alone
  (:func:`layer_flatness`, through :mod:`paramstress.flatness` with ``params`` set to the
  layer).

Orientation (:data:`MEASURES`): every measure is turned into a *vulnerability* where a
larger value means "more fragile": the indicator, the loss change, the drop and the
flatness values as they are; φ_clean and Δφ negated (a layer is fragile when its score
is negative, Defs. 4-6). A positive rank correlation then always means agreement.
Two structural covariates are there to check for confounding: ``position`` (depth)
and ``k`` (the layer's number of weights).

Statistics: :func:`rank_correlation` gives Spearman's ρ or Kendall's τ_b, the
two-sided p-value of scipy.stats, and a confidence interval either by the percentile
bootstrap over layers (resampling layers with replacement, ranks recomputed in each
resample) or by the Fisher z-transform with the Bonett-Wright (Spearman) or
Fieller-Hartley-Pearson (Kendall) standard error. :func:`top_k_overlap` counts the
layers shared by two top-k lists, against the hypergeometric null of unrelated
rankings; :func:`set_agreement` asks whether a chosen set of layers (selective
backpropagation's frozen, negative-Δφ layers) ranks high under another measure (the
AUC of the Mann-Whitney test).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from paramstress.corruption import operators as C
from paramstress.filtering import filters as FL
from paramstress.corruption import flatness as FT
from paramstress.filtering import fragility as FR
from paramstress.corruption import vulnerability as V
from paramstress.engine.sweep import iter_batches

__all__ = [
    "MEASURES",
    "MEASURE_LABELS",
    "layer_weights",
    "layer_corruption",
    "choose_corruption_eps",
    "layer_flatness",
    "join_layers",
    "orient",
    "rank_correlation",
    "correlations",
    "top_k_overlap",
    "set_agreement",
    "SHORT",
    "PAIRS",
    "OVERLAP_PAIRS",
    "SELECTION_MEASURES",
    "top_k_overlaps",
    "selection_agreement",
    "describe_rho",
    "stability_verdict",
    "span",
    "task_findings",
    "same_layers_answer",
]

#: measure column → sign that turns it into "larger = more vulnerable / fragile".
MEASURES: dict[str, int] = {
    "indicator": +1,
    "loss_change": +1,
    "drop": +1,
    "phi_clean": -1,
    "phi_adv": -1,
    "delta_phi": -1,
    "average_flatness": +1,
    "worst_flatness": +1,
    "position": +1,
    "k": +1,
}
MEASURE_LABELS: dict[str, str] = {
    "indicator": "corruption indicator ε‖top_n(g_l)‖",
    "loss_change": "loss change under gradient corruption",
    "drop": "accuracy drop under gradient corruption",
    "phi_clean": "−φ_clean (filtering, clean)",
    "phi_adv": "−φ_adv (filtering, adversarial)",
    "delta_phi": "−Δφ (filtering, adversarial − clean)",
    "average_flatness": "average-case flatness (loss increase)",
    "worst_flatness": "worst-case flatness (loss increase)",
    "position": "depth (layer index)",
    "k": "layer size (weights)",
}
METHODS = ("spearman", "kendall")
CI_METHODS = ("bootstrap", "fisher")

Transform = Callable[[torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- per-layer measures
def layer_weights(model: nn.Module, layers: Sequence[str] | None = None) -> dict[str, C.NamedParameters]:
    """``{layer: [(layer.weight, tensor)]}`` for the conv/linear layers of synaptic
    filtering (:func:`paramstress.filtering.filterable_layers`, or the given subset)."""
    known = FL.filterable_layers(model)
    chosen = list(known) if layers is None else list(layers)
    unknown = [name for name in chosen if name not in known]
    if unknown:
        raise ValueError(f"unknown layers {unknown[:5]}: use conv/linear layer names from "
                         f"filtering.filterable_layers(model), e.g. {known[:3]}")
    if not chosen:
        raise ValueError("layers is empty")
    modules = dict(model.named_modules())
    return {name: [(f"{name}.weight", modules[name].weight)] for name in chosen}


def layer_corruption(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float | Sequence[float],
    n: int,
    p: float = math.inf,
    grad_x: torch.Tensor | None = None,
    grad_y: torch.Tensor | None = None,
    transform: Transform | None = None,
    batch_size: int = 1000,
    layers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Gradient-based corruption (Sun et al. Eq. 10) restricted to each layer's weight, at
    ``eps`` (one value or a grid) and ``n`` (the ``n`` largest ``|g|`` of the layer change;
    ``n = k`` for a smaller layer), ``L_p``.

    The gradient is computed once over ``(grad_x, grad_y)`` (default: the evaluation set
    ``(x, y)``) in eval mode and sliced per layer; the corruption is evaluated on
    ``(x, y)``. One row per layer and ε: ``position``, ``layer``, ``k``, ``n``, ``p``, ``eps``,
    ``indicator`` (``ε‖top_n(g_l)‖_{p*}``, Eq. 11), ``loss_change``, ``drop``
    (accuracy points), ``accuracy``, ``base_accuracy``, ``base_loss``. Weights are
    bit-identical afterwards.
    """
    groups = layer_weights(model, layers)
    eps_values = [float(e) for e in eps] if isinstance(eps, (list, tuple)) else [float(eps)]
    if not eps_values:
        raise ValueError("eps is empty: give a corruption size or a grid of them")
    for e in eps_values:
        C.check_eps(e)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (parameters that may change per layer), got {n!r}")
    gx, gy = (x, y) if grad_x is None else (grad_x, grad_y)
    if gy is None or len(gx) != len(gy) or len(gy) == 0:
        raise ValueError("grad_x and grad_y must be given together, non-empty and of equal length")
    gradient = V.model_gradient(model, iter_batches(gx, gy, batch_size), transform=transform)
    frame = V.probe(model, {"layer": groups}, gradient, x, y, eps_values=eps_values, n=n, p=p,
                    batch_size=batch_size, transform=transform)
    frame = frame.rename(columns={"group": "layer"}).drop(columns=["group_kind"])
    cols = ["position", "layer", "k", "n", "p", "eps", "indicator", "loss_change", "drop", "accuracy",
            "base_accuracy", "base_loss"]
    return frame[cols].sort_values(["eps", "position"], kind="stable").reset_index(drop=True)


def choose_corruption_eps(frame: pd.DataFrame, by: Sequence[str] = (), metric: str = "drop") -> pd.DataFrame:
    """The ε of a :func:`layer_corruption` grid that tells the layers apart best: the one at
    which ``metric`` (the accuracy drop) has the largest standard deviation across the
    layers (a small ε moves no layer, a large one breaks them all; both rank nothing);
    the smallest such ε on ties (within 1e-9). One row per ``by`` group: ``eps``,
    ``spread`` (that standard deviation), ``most`` and ``least`` (the layers with the
    largest and smallest ``metric`` there)."""
    by = list(by)
    missing = [c for c in [*by, "eps", "layer", metric] if c not in frame.columns]
    if missing:
        raise ValueError(f"the frame lacks columns {missing}: pass the output of layer_corruption")
    records = []
    for key, rows in (frame.groupby(by, sort=True) if by else [((), frame)]):
        key = key if isinstance(key, tuple) else (key,)
        spread = rows.groupby("eps")[metric].agg(lambda s: float(s.std(ddof=0))).sort_index()
        best = float(spread.max())
        eps = float(spread[spread >= best - 1e-9].index.min())
        at = rows[rows["eps"] == eps]
        records.append({**dict(zip(by, key)), "eps": eps, "spread": best,
                        "most": at.loc[at[metric].idxmax(), "layer"], "least": at.loc[at[metric].idxmin(), "layer"]})
    return pd.DataFrame.from_records(records)


def layer_flatness(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    average_xi: float = FT.AVERAGE_XI,
    average_samples: int = FT.AVERAGE_SAMPLES,
    worst_xi: float = FT.WORST_XI,
    worst_steps: int = FT.WORST_STEPS,
    worst_lr: float = FT.WORST_LR,
    measures: Sequence[str] = ("average", "worst"),
    seed: int = 0,
    transform: Transform | None = None,
    batch_size: int = 1000,
    layers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Stutz et al.'s flatness restricted to one layer at a time: the loss increase when
    only that layer's weight moves within ``‖ν_l‖ ≤ ξ‖w_l‖`` (average case: mean over
    ``average_samples`` points of the sphere; worst case: ``worst_steps`` of projected
    gradient ascent). One row per layer: ``position``, ``layer``, ``k``, ``loss``,
    ``average_flatness`` and/or ``worst_flatness``. The same ``seed`` is used for
    every layer. Weights are bit-identical afterwards."""
    groups = layer_weights(model, layers)
    unknown = [m for m in measures if m not in ("average", "worst")]
    if unknown or not measures:
        raise ValueError(f"measures must be a non-empty subset of ('average', 'worst'), got {list(measures)}")
    FT.check_xi(average_xi, "average_xi")
    FT.check_xi(worst_xi, "worst_xi")
    FT.check_count(average_samples, "average_samples")
    FT.check_count(worst_steps, "worst_steps", minimum=0)
    rows = []
    base = None  # the unperturbed loss: the same for every layer, evaluated once
    for position, (name, named) in enumerate(groups.items()):
        row: dict[str, Any] = {"position": position, "layer": name, "k": C.subspace_size(named)}
        if "average" in measures:
            res = FT.average_case_flatness(model, x, y, xi=average_xi, samples=average_samples, seed=seed,
                                           batch_size=batch_size, transform=transform, params=named, base_loss=base)
            base = res["loss"]
            row["loss"] = res["loss"]
            row["average_flatness"] = res["flatness"]
        if "worst" in measures:
            res = FT.worst_case_flatness(model, x, y, xi=worst_xi, steps=worst_steps, lr=worst_lr, seed=seed,
                                         batch_size=batch_size, transform=transform, params=named, base_loss=base)
            base = res["loss"]
            row["loss"] = res["loss"]
            row["worst_flatness"] = res["flatness"]
        rows.append(row)
    return pd.DataFrame(rows)


def join_layers(scores: pd.DataFrame, *others: pd.DataFrame, keys: Sequence[str] = (),
                filter: str = FR.COMBINED) -> pd.DataFrame:
    """One row per (``keys``, layer): the filtering scores of ``filter`` (from
    :func:`paramstress.fragility.scores`; φ_clean, φ_adv, Δφ) joined with the per-layer
    frames ``others`` (:func:`layer_corruption`, :func:`layer_flatness`) on ``keys`` and
    ``layer``. Every layer must be in every frame (an inner join that loses a layer
    raises ``ValueError``). Rows are sorted by ``keys`` and, when a frame brings it,
    ``position``."""
    keys = list(keys)
    need = [*keys, "layer", "filter", "phi_clean", "delta_phi"]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lacks {missing}: pass the frame of fragility.scores (with the key columns {keys})")
    base = scores[scores["filter"] == filter]
    if base.empty:
        raise ValueError(f"no rows of filter {filter!r} in the scores (filters: {sorted(scores['filter'].unique())})")
    if base.duplicated([*keys, "layer"]).any():
        raise ValueError(f"the scores have several rows per {[*keys, 'layer']}: add the distinguishing columns to keys")
    out = base.drop(columns=[c for c in ("filter", "T") if c in base.columns])
    for frame in others:
        lost = [c for c in [*keys, "layer"] if c not in frame.columns]
        if lost:
            raise ValueError(f"a frame to join lacks the key columns {lost}")
        extra = [c for c in frame.columns if c not in out.columns or c in (*keys, "layer")]
        joined = out.merge(frame[extra], on=[*keys, "layer"], how="inner", validate="one_to_one")
        if len(joined) != len(out):
            raise ValueError(f"joining lost {len(out) - len(joined)} of {len(out)} rows: every (keys, layer) of the "
                             "scores must be in every frame (same checkpoints, same layers)")
        out = joined
    if "position" in out.columns:  # input to output within each model
        out = out.sort_values([*keys, "position"], kind="stable")
    return out.reset_index(drop=True)


def orient(table: pd.DataFrame, measures: Iterable[str] | None = None) -> pd.DataFrame:
    """Adds ``<measure>_vuln`` = sign × value (:data:`MEASURES`): larger = more fragile."""
    out = table.copy()
    for m in (list(measures) if measures is not None else [m for m in MEASURES if m in table.columns]):
        if m not in MEASURES:
            raise ValueError(f"unknown measure {m!r}; known: {list(MEASURES)}")
        if m not in out.columns:
            raise ValueError(f"the table has no column {m!r}")
        out[f"{m}_vuln"] = MEASURES[m] * out[m].astype(float)
    return out


# --------------------------------------------------------------------------- statistics
def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(axis=1) / den
    r[den <= 0] = np.nan
    return np.clip(r, -1.0, 1.0)


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _pearson_rows(stats.rankdata(a, axis=1), stats.rankdata(b, axis=1))


def _kendall_rows(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """τ_b of each row pair (ties handled as scipy.stats.kendalltau does)."""
    out = np.empty(len(a))
    n = a.shape[1]
    iu = np.triu_indices(n, k=1)
    for start in range(0, len(a), chunk):
        da = np.sign(a[start:start + chunk, :, None] - a[start:start + chunk, None, :])[:, iu[0], iu[1]]
        db = np.sign(b[start:start + chunk, :, None] - b[start:start + chunk, None, :])[:, iu[0], iu[1]]
        s = (da * db).sum(axis=1)
        pa = (da != 0).sum(axis=1)
        pb = (db != 0).sum(axis=1)
        den = np.sqrt(pa.astype(float) * pb.astype(float))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = s / den
        tau[den <= 0] = np.nan
        out[start:start + chunk] = tau
    return np.clip(out, -1.0, 1.0)


_ROW_STATISTIC = {"spearman": _spearman_rows, "kendall": _kendall_rows}


def _check_pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"the two measures must have one value per layer each, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("the measures have non-finite values; drop those layers first (or fix the measurement)")
    return a, b


def rank_correlation(
    a: Any,
    b: Any,
    *,
    method: str = "spearman",
    ci: str = "bootstrap",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Rank correlation of two per-layer measures with a confidence interval.

    ``method``: ``"spearman"`` (ρ) or ``"kendall"`` (τ_b). ``ci``: ``"bootstrap"``
    (percentile interval of ``n_resamples`` resamples of the layers, with replacement,
    drawn from ``numpy.random.default_rng(seed)``; resamples in which a measure is
    constant are dropped and counted) or ``"fisher"`` (``tanh(atanh(r) ± z·se)`` with
    ``se = sqrt((1 + r²/2)/(n − 3))`` for ρ, Bonett & Wright 2000, and
    ``sqrt(0.437/(n − 4))`` for τ, Fieller et al. 1957). Returns ``{"method", "n",
    "statistic", "low", "high", "pvalue", "ci", "confidence", "valid_resamples"}``;
    the p-value is scipy.stats' two-sided test of no association. Fewer than 4 layers,
    or a constant measure, give NaN.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    if not (isinstance(confidence, float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be a float in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 100:
        raise ValueError(f"n_resamples must be an int >= 100, got {n_resamples!r}")
    a, b = _check_pair(a, b)
    n = a.size
    out: dict[str, Any] = {"method": method, "n": n, "statistic": math.nan, "low": math.nan, "high": math.nan,
                           "pvalue": math.nan, "ci": ci, "confidence": confidence, "valid_resamples": 0}
    if n < 4 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.spearmanr(a, b) if method == "spearman" else stats.kendalltau(a, b)
    r = float(_ROW_STATISTIC[method](a[None], b[None])[0])
    out["statistic"], out["pvalue"] = r, float(res.pvalue)
    alpha = 1.0 - confidence
    if ci == "fisher":
        if method == "spearman":
            if n <= 3:
                return out
            se = math.sqrt((1.0 + r * r / 2.0) / (n - 3))
        else:
            if n <= 4:
                return out
            se = math.sqrt(0.437 / (n - 4))
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        with np.errstate(divide="ignore"):
            center = np.arctanh(np.clip(r, -1.0, 1.0))
        out["low"], out["high"] = float(np.tanh(center - z * se)), float(np.tanh(center + z * se))
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_resamples, n))
    values = _ROW_STATISTIC[method](a[idx], b[idx])
    values = values[np.isfinite(values)]
    out["valid_resamples"] = int(values.size)
    if values.size < max(100, n_resamples // 2):
        return out
    out["low"], out["high"] = (float(v) for v in np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0]))
    return out


def correlations(
    table: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    *,
    by: Sequence[str] = (),
    method: str = "spearman",
    ci: str = "bootstrap",
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`rank_correlation` of each pair of measures (oriented by :data:`MEASURES`,
    so a positive value means agreement) within each group of ``by`` (e.g. dataset,
    seed, epoch). One tidy row per (group, pair): the ``by`` columns, ``x``, ``y``,
    ``method``, ``n``, ``statistic``, ``low``, ``high``, ``pvalue``, ``ci``, ``confidence``."""
    by = list(by)
    cols = sorted({m for pair in pairs for m in pair})
    missing = [c for c in [*by, *cols] if c not in table.columns]
    if missing:
        raise ValueError(f"the table lacks columns {missing}")
    if not pairs:
        raise ValueError("pairs is empty: give (measure, measure) pairs, e.g. [('indicator', 'phi_clean')]")
    oriented = orient(table, cols)
    rows = []
    groups = oriented.groupby(by, sort=True) if by else [((), oriented)]
    for key, part in groups:
        key = key if isinstance(key, tuple) else (key,)
        for x, yname in pairs:
            res = rank_correlation(part[f"{x}_vuln"], part[f"{yname}_vuln"], method=method, ci=ci,
                                   confidence=confidence, n_resamples=n_resamples, seed=seed)
            rows.append({**dict(zip(by, key)), "x": x, "y": yname, **res})
    return pd.DataFrame(rows)


def top_k_overlap(a: Mapping[str, float] | pd.Series, b: Mapping[str, float] | pd.Series, k: int) -> dict[str, Any]:
    """How many of the ``k`` layers with the largest ``a`` are among the ``k`` with the
    largest ``b`` (both oriented so that larger = more fragile; ties broken by layer
    order). Returns ``{"k", "n", "overlap", "fraction", "expected", "pvalue", "a_top",
    "b_top"}``: ``expected = k²/n`` and ``pvalue = P(X ≥ overlap)`` for a hypergeometric
    ``X`` (two unrelated rankings of the same ``n`` layers)."""
    sa, sb = pd.Series(a, dtype=float), pd.Series(b, dtype=float)
    if set(sa.index) != set(sb.index) or len(sa) == 0:
        raise ValueError("a and b must score the same, non-empty set of layers")
    n = len(sa)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an int in 1..{n} (the number of layers), got {k!r}")
    order = {name: i for i, name in enumerate(sa.index)}
    top = lambda s: sorted(s.index, key=lambda name: (-s[name], order[name]))[:k]  # noqa: E731
    ta, tb = top(sa), top(sb)
    overlap = len(set(ta) & set(tb))
    return {"k": int(k), "n": n, "overlap": overlap, "fraction": overlap / k, "expected": k * k / n,
            "pvalue": float(stats.hypergeom(n, k, k).sf(overlap - 1)), "a_top": ta, "b_top": tb}


def set_agreement(chosen: Iterable[str], scores: Mapping[str, float] | pd.Series) -> dict[str, Any]:
    """Does a chosen set of layers rank high under ``scores`` (larger = more fragile)?

    ``auc``: the probability that a chosen layer scores above an unchosen one (ties
    count one half; the Mann-Whitney U over ``m·(n−m)``); 0.5 = no relation, 1 = the
    chosen layers are exactly the top ones. ``pvalue``: one-sided Mann-Whitney test
    (chosen higher). ``overlap``: chosen layers among the top ``m`` of ``scores``, with
    its hypergeometric ``expected`` value and ``overlap_pvalue``. NaN when nothing or
    everything is chosen."""
    s = pd.Series(scores, dtype=float)
    chosen = list(dict.fromkeys(chosen))
    unknown = [c for c in chosen if c not in s.index]
    if unknown:
        raise ValueError(f"chosen layers {unknown[:5]} are not scored")
    if not np.isfinite(s.to_numpy()).all():
        raise ValueError("scores have non-finite values")
    n, m = len(s), len(chosen)
    out: dict[str, Any] = {"n": n, "chosen": m, "auc": math.nan, "pvalue": math.nan, "overlap": math.nan,
                           "expected": math.nan, "overlap_pvalue": math.nan}
    if m == 0 or m == n:
        return out
    inside = s[chosen].to_numpy()
    outside = s.drop(index=chosen).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mw = stats.mannwhitneyu(inside, outside, alternative="greater")
    out["auc"] = float(mw.statistic) / (m * (n - m))
    out["pvalue"] = float(mw.pvalue)
    top = top_k_overlap(s.rename(None), pd.Series({name: 1.0 if name in chosen else 0.0 for name in s.index}), m)
    out["overlap"], out["expected"], out["overlap_pvalue"] = top["overlap"], top["expected"], top["pvalue"]
    return out


# --------------------------------------------------------------------------- the page's verdicts
#: Short names of the measures in tables and pair labels (``"indicator ~ −φ_clean"``).
SHORT: dict[str, str] = {"indicator": "indicator", "loss_change": "ΔL (corruption)", "drop": "drop (corruption)",
                         "phi_clean": "−φ_clean", "delta_phi": "−Δφ", "average_flatness": "avg flatness",
                         "worst_flatness": "worst flatness", "position": "depth", "k": "size k"}
#: The (x, y) pairs of measures the corruption-vs-filtering page correlates.
PAIRS: tuple[tuple[str, str], ...] = (
    ("indicator", "phi_clean"), ("indicator", "delta_phi"), ("loss_change", "phi_clean"),
    ("loss_change", "delta_phi"), ("average_flatness", "phi_clean"), ("worst_flatness", "phi_clean"),
    ("indicator", "average_flatness"), ("indicator", "worst_flatness"), ("phi_clean", "delta_phi"),
    ("position", "indicator"), ("position", "phi_clean"))
#: The (vulnerable by, fragile by) pairs whose top-k lists are compared.
OVERLAP_PAIRS: tuple[tuple[str, str], ...] = (("indicator", "phi_clean"), ("indicator", "delta_phi"),
                                              ("loss_change", "phi_clean"))
#: The measures the frozen layers of selective backpropagation are ranked under.
SELECTION_MEASURES: tuple[str, ...] = ("indicator", "loss_change", "phi_clean")


def top_k_overlaps(table: pd.DataFrame, *, keys: Sequence[str], top_k: int,
                   pairs: Sequence[tuple[str, str]] = OVERLAP_PAIRS) -> pd.DataFrame:
    """:func:`top_k_overlap` of each pair (oriented by :func:`orient`) for every ``keys``
    group of a :func:`join_layers` table (``k = min(top_k, layers)``): one row per group and
    pair, with the columns the page prints (``most vulnerable by``, ``most fragile by`` in
    :data:`SHORT` names, ``overlap``, ``expected by chance``, ``p (≥ overlap)``, the lists)."""
    keys = list(keys)
    rows = []
    for (task, seed, epoch), part in table.groupby(keys):
        part = orient(part).set_index("layer")
        for a, b in pairs:
            res = top_k_overlap(part[f"{a}_vuln"], part[f"{b}_vuln"], min(top_k, len(part)))
            rows.append({"dataset": task, "seed": seed, "epoch": epoch, "most vulnerable by": SHORT[a],
                         "most fragile by": SHORT[b], "k": res["k"], "layers": res["n"], "overlap": res["overlap"],
                         "expected by chance": round(res["expected"], 2), "p (≥ overlap)": res["pvalue"],
                         "vulnerable": ", ".join(res["a_top"]), "fragile": ", ".join(res["b_top"])})
    return pd.DataFrame(rows)


def selection_agreement(table: pd.DataFrame, *, keys: Sequence[str],
                        measures: Sequence[str] = SELECTION_MEASURES) -> pd.DataFrame:
    """:func:`set_agreement` of the layers a table marks ``fragile`` (those selective
    backpropagation freezes) under each measure (oriented by :data:`MEASURES`), per ``keys``
    group: ``auc``, ``pvalue``, ``overlap``, ``expected``, ``overlap_pvalue``, the frozen layers."""
    keys = list(keys)
    rows = []
    for (task, seed, epoch), part in table.groupby(keys):
        part = part.set_index("layer")
        frozen = list(part.index[part["fragile"]])
        for measure in measures:
            res = set_agreement(frozen, MEASURES[measure] * part[measure])
            rows.append({"dataset": task, "seed": seed, "epoch": epoch, "measure": SHORT[measure],
                         "frozen layers": len(frozen), "of": len(part), **{k: res[k] for k in
                         ("auc", "pvalue", "overlap", "expected", "overlap_pvalue")},
                         "frozen": ", ".join(frozen) or "none"})
    return pd.DataFrame(rows)


def describe_rho(row: Mapping[str, Any]) -> str:
    """One correlation row of :func:`correlations` as ``ρ = +0.12 [−0.30, +0.50] (includes 0)``."""
    if not np.isfinite(row["statistic"]):
        return "undefined (a measure is constant over the layers)"
    sig = "excludes 0" if (row["low"] > 0 or row["high"] < 0) else "includes 0"
    return f"ρ = {row['statistic']:+.2f} [{row['low']:+.2f}, {row['high']:+.2f}] ({sig})"


def stability_verdict(rows: pd.DataFrame) -> str:
    """Whether a pair of measures agrees over the analysed snapshots: counted by the
    correlation intervals of :func:`correlations` that lie above 0 (agree) or below 0
    (disagree); the rest are not distinguishable from unrelated."""
    finite = rows[np.isfinite(rows["statistic"])]
    if finite.empty:
        return "cannot be judged"
    n, pos, neg = len(finite), int((finite["low"] > 0).sum()), int((finite["high"] < 0).sum())
    if pos == n:
        return f"agree at every analysed snapshot (interval above 0 at all {n})"
    if neg == n:
        return f"disagree, naming opposite layers, at every analysed snapshot (interval below 0 at all {n})"
    if pos and neg:
        return f"agree significantly at {pos} and disagree significantly at {neg} of {n} snapshots: no stable relation"
    if pos:
        return f"agree significantly at {pos} of {n} snapshots and are not distinguishable from unrelated at the others"
    if neg:
        return (f"disagree significantly at {neg} of {n} snapshots and are not distinguishable from unrelated "
                "at the others")
    return f"show no relation distinguishable from none at any of the {n} snapshots"


def span(values: Iterable[float], fmt: str = "{:+.2f}") -> str:
    """``"from a to b"`` over the finite values (one value when both ends print alike)."""
    values = [float(v) for v in values if np.isfinite(v)]
    if not values:
        return "undefined"
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"from {lo} to {hi}"


def _pair(frame: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    return frame[(frame["x"] == a) & (frame["y"] == b)]


def task_findings(spearman: pd.DataFrame, overlaps: pd.DataFrame, selection: pd.DataFrame, *, task: str, label: str,
                  epoch: int, seed: int, epochs: Sequence[int]) -> tuple[str, dict[str, float]]:
    """The page's finding for one data set, as one Markdown bullet, and its glued numbers
    (``rho_indicator_phi_clean``, ``rho_indicator_delta_phi``): the Spearman rows of
    :func:`correlations` at ``epoch`` (with intervals, :func:`describe_rho`), their stability
    over ``epochs`` (:func:`stability_verdict`), the top-k overlap of indicator and φ_clean
    (:func:`top_k_overlaps`) and the AUC of the frozen layers under the indicator
    (:func:`selection_agreement`)."""
    part = spearman[spearman["dataset"] == task]
    at = part[part["epoch"] == epoch]
    get = lambda a, b: _pair(at, a, b).iloc[0]  # noqa: E731
    ov = overlaps[(overlaps["dataset"] == task) & (overlaps["epoch"] == epoch)
                  & (overlaps["most vulnerable by"] == SHORT["indicator"])
                  & (overlaps["most fragile by"] == SHORT["phi_clean"])]
    sel = selection[(selection["dataset"] == task) & (selection["epoch"] == epoch)
                    & (selection["measure"] == SHORT["indicator"])]
    main = get("indicator", "phi_clean")
    numbers = {"rho_indicator_phi_clean": float(main["statistic"]),
               "rho_indicator_delta_phi": float(get("indicator", "delta_phi")["statistic"])}
    auc = sel["auc"].dropna()
    sel_text = (f"the layers it freezes have an indicator AUC of {auc.mean():.2f} (mean over {len(auc)} seed(s); "
                f"0.5 = unrelated, 1 = exactly the most vulnerable)" if len(auc)
                else "it freezes no layer (or every layer), so there is no choice to compare")
    line = (
        f"- **{label}** (epoch {epoch}, seed {seed}): corruption indicator against −φ_clean "
        f"{describe_rho(main)}; against −Δφ {describe_rho(get('indicator', 'delta_phi'))}; the measured loss change "
        f"against −φ_clean {describe_rho(get('loss_change', 'phi_clean'))}. The {int(ov['k'].iloc[0])} most vulnerable "
        f"and the {int(ov['k'].iloc[0])} most fragile-to-removal layers share {int(ov['overlap'].iloc[0])} "
        f"(chance: {float(ov['expected by chance'].iloc[0]):.1f}). Over the epochs {list(epochs)}, indicator and "
        f"φ_clean {stability_verdict(_pair(part, 'indicator', 'phi_clean'))}; indicator and Δφ "
        f"{stability_verdict(_pair(part, 'indicator', 'delta_phi'))}. "
        f"Depth: the indicator {describe_rho(get('position', 'indicator'))}, −φ_clean "
        f"{describe_rho(get('position', 'phi_clean'))}. Selective backpropagation: {sel_text}.")
    return line, numbers


def same_layers_answer(spearman: pd.DataFrame, overlaps: pd.DataFrame, selection: pd.DataFrame, *, epoch: int,
                       top_k: int) -> tuple[str, dict[str, float]]:
    """The page's answer to "do the two papers name the same layers?" over every model at
    ``epoch``, as Markdown, and its glued numbers (``mean_rho_indicator_phi_clean``,
    ``mean_auc``). The rule: "yes, in part" when the Spearman interval of the indicator
    against −φ_clean lies above 0 for every model; "at most weakly" when the mean ρ is
    positive but not every interval excludes 0; "no" otherwise. Depth, the relation to −Δφ
    and the AUC of the frozen layers are stated beside it."""
    at = spearman[spearman["epoch"] == epoch]
    ip, idp, dp = _pair(at, "indicator", "phi_clean"), _pair(at, "indicator", "delta_phi"), _pair(at, "position", "phi_clean")
    di = _pair(at, "position", "indicator")
    n_models = len(ip)
    ip_pos, idp_neg = int((ip["low"] > 0).sum()), int((idp["high"] < 0).sum())
    ov = overlaps[(overlaps["epoch"] == epoch) & (overlaps["most vulnerable by"] == SHORT["indicator"])
                  & (overlaps["most fragile by"] == SHORT["phi_clean"])]
    aucs = selection[(selection["epoch"] == epoch) & (selection["measure"] == SHORT["indicator"])]["auc"].dropna()
    mean_rho = float(ip["statistic"].mean())
    if ip_pos == n_models:
        a1 = "yes, in part: they rank the layers in the same direction in every model analysed"
    elif mean_rho > 0:
        a1 = (f"at most weakly: the rank correlation is positive on average but its interval excludes 0 in only "
              f"{ip_pos} of {n_models} models")
    else:
        a1 = "no: the rank correlation is not positive"
    a1 += (f" (Spearman ρ of the indicator against −φ_clean {span(ip['statistic'])}; top-{top_k} lists share "
           f"{span(ov['overlap'], '{:.0f}')} layers against {float(ov['expected by chance'].iloc[0]):.1f} by chance). "
           f"Against depth, the indicator has ρ {span(di['statistic'])} and −φ_clean ρ {span(dp['statistic'])}")
    if di["statistic"].mean() < 0 and dp["statistic"].mean() < 0:
        a1 += ": both fall with depth, so part of what they share is that early layers score high on both."
    elif di["statistic"].mean() > 0 and dp["statistic"].mean() > 0:
        a1 += ": both rise with depth, so part of what they share is that late layers score high on both."
    else:
        a1 += ": they follow depth in opposite directions, so depth does not explain their agreement."
    idp_pos = int((idp["low"] > 0).sum())
    a2 = (f"Against the score that drives selective backpropagation, −Δφ, the indicator correlates "
          f"{span(idp['statistic'])} (interval below 0 in {idp_neg}, above 0 in {idp_pos} of {len(idp)} models)")
    if idp["statistic"].mean() < 0 and idp_neg:
        a2 += (": the layers most vulnerable to worst-case corruption tend to be the ones Δφ calls *robust or "
               "antifragile*, not fragile.")
    elif idp["statistic"].mean() > 0 and idp_pos:
        a2 += ": the layers most vulnerable to worst-case corruption tend to be the ones Δφ calls fragile."
    else:
        a2 += ": no clear relation."
    if len(aucs):
        a3 = (f"Accordingly, the layers selective backpropagation freezes rank low under the indicator (AUC "
              f"{span(aucs, '{:.2f}')}; 0.5 would be unrelated): it does **not** freeze the layers the corruption "
              "indicator calls most vulnerable"
              if aucs.max() < 0.5 else
              f"The layers selective backpropagation freezes have an indicator AUC {span(aucs, '{:.2f}')} "
              "(0.5 = unrelated).")
    else:
        a3 = "Selective backpropagation froze no layer at this epoch, so its choice cannot be compared."
    numbers = {"mean_rho_indicator_phi_clean": mean_rho, "mean_auc": float(aucs.mean()) if len(aucs) else math.nan}
    text = f"**Do the two papers name the same layers?** On this run, {a1}\n\n{a2} {a3.rstrip('.')}."
    return text, numbers
