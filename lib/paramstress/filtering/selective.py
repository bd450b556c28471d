"""Selective backpropagation (Pravin et al. 2023, §5 "Selective backpropagation on
robust and antifragile parameters", Fig. 12): train on with the gradients of the
*fragile* layers zeroed, and compare with regular backpropagation under FGSM.

What the paper says, and how it is read here:

- **Which layers** (§5): "we take a layer-wise approach that considers the parameter
  characterization scores of individual network layers and we subsequently omit the
  characterized fragile layers corresponding to negative parameter characterizations
  scores from network training by zeroing out the update gradients during training".
  The score is the difference score Δφ (§4.2.3, Eq. 16) of the *local* analysis
  (one conv/linear layer filtered at a time), of the combined response of the three
  filters (Eq. 13). Def. 4 calls a layer fragile when ``Δφ < 0``; a measured Δφ of
  −0.00x is not below 0 beyond the noise of the measurement, so the freezing rule is a
  parameter (``freeze_rule``): ``"seeds"`` (:func:`fragile_by_seeds`, the default of the
  page) scores every seed's model and freezes, in every seed, the layers whose mean Δφ
  over the seeds is below 0 by a one-sided one-sample t-test (``p < alpha``, at least 3
  seeds; the chains run in lockstep so that each stage's decision sees every seed);
  ``"tolerance"`` freezes, per seed, the layers with ``Δφ < −tolerance`` (``tolerance =
  0``: Def. 4's strict condition, one seed's measurement). Only conv and linear layers are scored
  (§4.3), so only they can be frozen; a frozen layer is its module's ``weight`` and
  ``bias``; batch-norm layers always train.
- **When** (§5, Fig. 12): the networks are "tested at epoch 10 to epoch 100 measured
  every 10 epochs", and only robust and antifragile layers are retrained "at any given
  epoch". Read as a chain over the epochs ``e_1 < e_2 < … < e_K`` (the paper:
  10, 20, …, 100): a regular run to ``e_1``; at every ``e_k`` (k < K) the current
  model is scored, its fragile layers are frozen, and it trains on to ``e_{k+1}``,
  where it is scored again (**re-scoring**: the frozen set can change at every
  stage).
- **Frozen means frozen**: each stage is a run of the shared loop that starts from
  the previous stage's snapshot (``TrainConfig.init_from``) with the fragile layers in
  ``TrainConfig.frozen``: they are left out of the optimizer, so neither Adam's
  moments nor weight decay move them, and the loop checks after every epoch that they
  are bit-identical (:mod:`paramstress.training`).
- **The control** (regular backpropagation) is the same chain with nothing frozen:
  same parent snapshot, same seeds (hence the same data order in every stage), the
  same optimizer resets at the same epochs. The only difference between the two arms
  is the frozen set. When a stage freezes nothing, its selective run *is* its control
  run (same config, same cache key, trained once).
- The parent run is any regular config that keeps a snapshot of ``e_1``; when it
  also keeps later epochs of the ``e_k`` and trains to them, its snapshots are a third
  arm, ``regular`` (uninterrupted: no optimizer reset at all).

Fig. 12 plots the accuracy against the FGSM size up to the ε of Defs. 7-9, mean ± std
over seeds, for regular and selective training at each epoch: :func:`fgsm_curve`
gives one model's curve through :func:`paramstress.adversarial.adversarial_accuracy`.

The driver (:func:`selective_backprop`) takes the scorer as a callable, so that it is
testable with a fake one; :class:`DeltaPhiScorer` is the paper's (the filter sweep of
:mod:`paramstress.filtering` and the scores of :mod:`paramstress.fragility`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from paramstress.filtering import adversarial as A
from paramstress.filtering import filters as FL
from paramstress.filtering import fragility as FR
from paramstress.filtering import landscape as L
from paramstress.engine import models
from paramstress.engine import training
from paramstress.engine import stats as ST
from paramstress.engine.data import ImageData

__all__ = [
    "first_last_summary",
    "ARMS",
    "FREEZE_RULES",
    "Scorer",
    "fragile_layers",
    "fragile_by_seeds",
    "selective_backprop_seeds",
    "PairedDifference",
    "paired_difference",
    "per_model",
    "paired_differences",
    "fig12_verdicts",
    "Stage",
    "SelectiveResult",
    "selective_backprop",
    "DeltaPhiScorer",
    "fgsm_curve",
    "eps_grid",
    "weights_digest",
]

#: The arms of the comparison: the selective chain, its control chain (nothing frozen)
#: and the uninterrupted parent run.
ARMS: tuple[str, ...] = ("selective", "control", "regular")

#: ``scorer(model, epoch) -> {conv/linear layer name: Δφ}`` (the model is in eval mode).
Scorer = Callable[[nn.Module, int], Mapping[str, float]]

#: How a stage decides the frozen layers: ``"tolerance"`` per seed (Δφ < −tolerance),
#: ``"seeds"`` across the seeds (one-sided t-test of the mean Δφ < 0, :func:`fragile_by_seeds`).
FREEZE_RULES: tuple[str, ...] = ("tolerance", "seeds")

#: Fewest seeds the ``"seeds"`` rule accepts (a t-test over 2 values has 1 degree of freedom).
MIN_SEEDS = 3


def fragile_layers(scores: Mapping[str, float], tolerance: float = 0.0) -> tuple[str, ...]:
    """The layers whose score is below ``−tolerance`` (Def. 4: fragile), in the order given.

    ``scores`` maps layer names to Δφ; a non-finite score raises ``ValueError`` (a
    layer's Δφ is undefined when the sweep had no adversarial accuracy: pass ``eps``).
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) \
            or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0 (Def. 4: fragile below −tolerance), got {tolerance!r}")
    bad = {k: v for k, v in scores.items() if not isinstance(v, (int, float, np.floating)) or not math.isfinite(v)}
    if bad:
        raise ValueError(f"scores must be finite numbers, got {bad}: score the layers with an adversarial "
                         "accuracy (filter_sweep(..., eps=...)) so that Δφ is defined")
    return tuple(name for name, value in scores.items() if float(value) < -float(tolerance))



def fragile_by_seeds(scores: Mapping[Any, Mapping[str, float]], alpha: float = 0.05) -> tuple[tuple[str, ...], pd.DataFrame]:
    """The layers whose Δφ is below 0 beyond the seeds' noise.

    ``scores``: ``{seed: {layer: Δφ}}``, every seed scoring the same layers (at least
    :data:`MIN_SEEDS` seeds). Per layer, a one-sided one-sample t-test of ``H0: mean Δφ ≥ 0``
    against ``mean Δφ < 0`` over the ``n`` seeds: ``t = mean / (sd / √n)``, ``p =
    F_{t, n−1}(t)``; the layer is fragile when ``p < alpha``, which is the same as the
    one-sided ``1 − alpha`` upper confidence bound ``mean + t_{1−alpha, n−1}·sd/√n`` lying
    below 0 (so the tolerance is ``t_{1−alpha, n−1}·sd/√n``, the layer's own spread). When
    every seed gives the same Δφ (equal up to :data:`paramstress.stats.EQUAL_TOLERANCE`), ``p`` is 0
    for a negative value and 1 otherwise. The test is :func:`paramstress.stats.paired_test` of
    the layer's Δφ against 0 (``alternative="less"``, ``confidence = 1 − alpha``), the one
    t-test of the library.

    Each layer's test is its own decision, at level ``alpha``, without a correction across the
    layers: freezing is a training choice, not a claim, and a layer frozen by chance costs one
    segment of its training, which the verdict (:func:`paired_difference`, selective against
    regular over the seeds) then weighs. A family-wise correction (Holm over ~20 layers) would
    freeze almost nothing at 3 seeds and so test a different method than the paper's.

    Returns the fragile layers (in the order of the first seed) and a table, one row per
    layer: ``layer``, ``seeds``, ``mean``, ``sd``, ``upper`` (the bound), ``t``,
    ``p_value``, ``fragile``.
    """
    alpha = ST.check_alpha(alpha)
    if not isinstance(scores, Mapping) or len(scores) < MIN_SEEDS:
        n = len(scores) if isinstance(scores, Mapping) else type(scores).__name__
        raise ValueError(f"the 'seeds' rule needs the scores of at least {MIN_SEEDS} seeds ({{seed: {{layer: Δφ}}}}), "
                         f"got {n}: add seeds, or use freeze_rule='tolerance'")
    seeds = list(scores)
    layers = list(scores[seeds[0]])
    for seed in seeds:
        if set(scores[seed]) != set(layers):
            raise ValueError(f"seed {seed!r} scores other layers than seed {seeds[0]!r}: every seed must score "
                             "the same conv/linear layers")
        fragile_layers(scores[seed])  # finite numbers
    n = len(seeds)
    rows = []
    for layer in layers:
        values = [float(scores[seed][layer]) for seed in seeds]
        test = ST.paired_test(values, [0.0] * n, confidence=1.0 - alpha, alternative="less")
        rows.append({"layer": layer, "seeds": n, "mean": test.mean_difference, "sd": test.sd, "upper": test.ci_high,
                     "t": test.t, "p_value": test.p_value, "fragile": bool(test.p_value < alpha)})
    table = pd.DataFrame(rows, columns=["layer", "seeds", "mean", "sd", "upper", "t", "p_value", "fragile"])
    return tuple(table.loc[table["fragile"], "layer"]), table


@dataclasses.dataclass(frozen=True)
class Stage:
    """One scoring of the selective chain.

    ``epoch``: where the scored model stands (``e_k``); ``scores``: its Δφ per layer;
    ``fragile``: the layers frozen from ``epoch`` to ``next_epoch``; ``selective`` /
    ``control``: the config hashes of the two runs of that segment (``None`` for the
    last scoring, after which nothing is trained).
    """

    epoch: int
    next_epoch: int | None
    scores: dict[str, float]
    fragile: tuple[str, ...]
    selective: str | None
    control: str | None
    #: the ``"seeds"`` rule's table of :func:`fragile_by_seeds` (the same in every seed), else None
    test: pd.DataFrame | None = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass
class SelectiveResult:
    """What :func:`selective_backprop` returns.

    ``parent``: the regular run whose ``e_1`` snapshot starts both chains;
    ``configs[arm][epoch]``: the config whose snapshot is the arm's model at that epoch
    (at ``e_1`` every arm is the parent); ``runs[arm][epoch]``: the
    :class:`~paramstress.training.TrainResult` of the segment ending there;
    ``stages``: the scorings, in order; ``layers``: every scorable layer of the model.
    """

    data: ImageData
    parent: training.TrainResult
    epochs: tuple[int, ...]
    stages: list[Stage]
    configs: dict[str, dict[int, training.TrainConfig]]
    runs: dict[str, dict[int, training.TrainResult]]
    layers: tuple[str, ...]
    tolerance: float
    checkpoint_dir: Path
    freeze_rule: str = "tolerance"
    alpha: float | None = None

    def arms(self) -> list[str]:
        """The arms present: selective and control always, regular when the parent kept the epochs."""
        return [a for a in ARMS if self.configs.get(a)]

    def model(self, arm: str, epoch: int, device: str | torch.device = "cpu") -> nn.Module:
        """The arm's model at ``epoch`` (a fresh copy from its snapshot, eval mode)."""
        if arm not in ARMS:
            raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
        if epoch not in self.configs.get(arm, {}):
            raise ValueError(f"the {arm} arm has no model at epoch {epoch}; its epochs: "
                             f"{sorted(self.configs.get(arm, {}))}")
        return training.load_snapshot(self.configs[arm][epoch], self.data, epoch,
                                      checkpoint_dir=self.checkpoint_dir, device=device)

    def config_hash(self, arm: str, epoch: int) -> str:
        return training.config_hash(self.configs[arm][epoch], self.data)

    def choices(self) -> pd.DataFrame:
        """Tidy: one row per (scoring epoch, layer): ``epoch``, ``next_epoch``,
        ``position`` (the layer's index in the model), ``layer``, ``delta_phi``,
        ``fragile`` (frozen for the next segment); under the ``"seeds"`` rule also the
        test of :func:`fragile_by_seeds`: ``mean_delta_phi`` (over the seeds), ``sd``,
        ``upper`` (one-sided bound) and ``p_value``."""
        rows = []
        position = {name: i for i, name in enumerate(self.layers)}
        for stage in self.stages:
            test = stage.test.set_index("layer") if stage.test is not None else None
            for layer, value in stage.scores.items():
                row = {"epoch": stage.epoch, "next_epoch": stage.next_epoch, "position": position[layer],
                       "layer": layer, "delta_phi": float(value), "fragile": layer in stage.fragile}
                if test is not None:
                    row.update({"mean_delta_phi": float(test.loc[layer, "mean"]), "sd": float(test.loc[layer, "sd"]),
                                "upper": float(test.loc[layer, "upper"]), "p_value": float(test.loc[layer, "p_value"])})
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """Tidy: one row per (arm, epoch): the test accuracy the loop recorded at that
        epoch, the config hash, and the number of layers frozen during the segment that
        ended there (0 for the control and regular arms)."""
        rows = []
        frozen_into = {s.next_epoch: len(s.fragile) for s in self.stages if s.next_epoch is not None}
        for arm in self.arms():
            for epoch, cfg in sorted(self.configs[arm].items()):
                state = training.load_checkpoint(training.snapshot_path(cfg, self.data, epoch,
                                                                        checkpoint_dir=self.checkpoint_dir))
                rows.append({"arm": arm, "epoch": epoch, "config_hash": training.config_hash(cfg, self.data),
                             "test_accuracy": 100.0 * float(state["test_accuracy"]),
                             "frozen_layers": frozen_into.get(epoch, 0) if arm == "selective" else 0})
        return pd.DataFrame(rows)


def _check_epochs(epochs: Sequence[int], cfg: training.TrainConfig) -> tuple[int, ...]:
    try:
        values = tuple(int(e) for e in epochs)
    except (TypeError, ValueError):
        raise ValueError(f"epochs must be a sequence of ints (the scoring/testing epochs), got {epochs!r}") from None
    if any(isinstance(e, bool) or not isinstance(e, (int, np.integer)) for e in epochs):
        raise ValueError(f"epochs must be ints, got {list(epochs)!r}")
    if len(values) < 2:
        raise ValueError(f"epochs needs at least two values (score at the first, train to the next), got {values}; "
                         "the paper uses (10, 20, ..., 100)")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"epochs must be strictly increasing, got {values}")
    if values[0] < cfg.start_epoch:
        raise ValueError(f"the first epoch {values[0]} lies before the parent's start {cfg.start_epoch}")
    if values[0] > cfg.epochs or values[0] not in cfg.keep_epochs:
        raise ValueError(
            f"the parent config must keep a snapshot of the first scoring epoch {values[0]}: add it to "
            f"TrainConfig(keep_epochs=...) (now {cfg.keep_epochs}) and train to at least that epoch (epochs={cfg.epochs})")
    return values


def selective_backprop(
    data: ImageData,
    cfg: training.TrainConfig,
    epochs: Sequence[int],
    scorer: Scorer,
    *,
    tolerance: float = 0.0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    score_last: bool = True,
) -> SelectiveResult:
    """Run the selective-backpropagation chain and its regular-backpropagation control
    (Pravin et al. 2023, §5; see the module docstring).

    ``cfg``: the regular parent config (nothing frozen, a snapshot kept at
    ``epochs[0]``); it is trained (or loaded from the cache) first. ``epochs``: the
    scoring and testing epochs ``e_1 < … < e_K``. At each ``e_k`` (k < K) ``scorer``
    gets the selective chain's model (eval mode, on ``device``) and ``e_k`` and returns
    Δφ per conv/linear layer (names as in :func:`paramstress.filtering.filterable_layers`,
    every layer exactly once); layers below ``−tolerance`` are frozen for the segment
    ``e_k → e_{k+1}``, a run of ``cfg`` with ``init_from`` the previous snapshot,
    ``epochs=e_{k+1}``, ``keep_epochs=(e_{k+1},)`` and ``frozen`` those layers; the
    control segment is the same config with ``frozen=()`` started from the control's
    previous snapshot. With ``score_last`` the last model (``e_K``) is scored too (its
    scores freeze nothing; they show where the chain ended). Everything is validated before any training;
    checkpoints go to ``checkpoint_dir`` (default
    :func:`paramstress.training.default_checkpoint_dir`).
    """
    if not isinstance(cfg, training.TrainConfig):
        raise ValueError(f"cfg must be a paramstress.training.TrainConfig (the regular parent run), got {type(cfg).__name__}")
    return selective_backprop_seeds(data, {cfg.seed: cfg}, epochs, {cfg.seed: scorer}, freeze_rule="tolerance",
                                    tolerance=tolerance, checkpoint_dir=checkpoint_dir, device=device,
                                    progress=progress, score_last=score_last)[cfg.seed]


def selective_backprop_seeds(
    data: ImageData,
    cfgs: Mapping[int, training.TrainConfig],
    epochs: Sequence[int],
    scorers: Mapping[int, Scorer],
    *,
    freeze_rule: str = "seeds",
    alpha: float = 0.05,
    tolerance: float = 0.0,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    score_last: bool = True,
    workers: int = 1,
    threads: int | None = None,
    rebuild: Callable[[], ImageData] | None = None,
) -> dict[int, SelectiveResult]:
    """The chains of :func:`selective_backprop` for several seeds, run in lockstep:
    at each scoring epoch every seed's selective model is scored (``scorers[seed]``), then
    the frozen sets are decided, then every seed trains its next segment.

    ``cfgs``: ``{seed: regular parent config}``; ``freeze_rule``:

    - ``"seeds"``: one frozen set for all seeds, the layers whose mean Δφ over the seeds
      is below 0 by a one-sided one-sample t-test at level ``alpha``
      (:func:`fragile_by_seeds`; at least :data:`MIN_SEEDS` seeds); the stage's test table
      is kept in :attr:`Stage.test`;
    - ``"tolerance"``: each seed freezes its own layers with ``Δφ < −tolerance``
      (:func:`fragile_layers`), as :func:`selective_backprop` does for one seed.

    The trainings are independent jobs of :func:`paramstress.engine.training.train_many`:
    the parents, then at each stage every seed's selective and control segments (``workers``
    1: one after another here; N: a local Ray instance, whose jobs rebuild the data with
    ``rebuild``, default: load ``data.name``; ``threads`` per job). The scorers run here.
    Everything (configs, epochs, rule, seeds) is validated before any training. Returns
    ``{seed: SelectiveResult}``.
    """
    if freeze_rule not in FREEZE_RULES:
        raise ValueError(f"freeze_rule must be one of {FREEZE_RULES} ('seeds': a t-test over the seeds' Δφ; "
                         f"'tolerance': Δφ < -tolerance per seed), got {freeze_rule!r}")
    fragile_layers({}, tolerance)  # validates tolerance
    alpha = ST.check_alpha(alpha)
    if not isinstance(cfgs, Mapping) or not cfgs:
        raise ValueError("cfgs must be a non-empty mapping {seed: TrainConfig} (the regular parent runs)")
    if not isinstance(scorers, Mapping) or set(scorers) != set(cfgs):
        raise ValueError(f"scorers must map the same seeds as cfgs {sorted(cfgs)} to scorers, got "
                         f"{sorted(scorers) if isinstance(scorers, Mapping) else type(scorers).__name__}")
    if freeze_rule == "seeds" and len(cfgs) < MIN_SEEDS:
        raise ValueError(f"freeze_rule='seeds' needs at least {MIN_SEEDS} seeds (a t-test over the seeds' Δφ), got "
                         f"{len(cfgs)} ({sorted(cfgs)}): add seeds, or use freeze_rule='tolerance'")
    seeds = list(cfgs)
    values: tuple[int, ...] = ()
    for seed in seeds:
        cfg = cfgs[seed]
        if not isinstance(cfg, training.TrainConfig):
            raise ValueError(f"cfg must be a paramstress.training.TrainConfig (the regular parent run), got "
                             f"{type(cfg).__name__}")
        if cfg.frozen:
            raise ValueError(f"the parent config freezes {cfg.frozen}: the parent must be a regular run "
                             "(TrainConfig(frozen=())); the driver freezes the fragile layers itself")
        values = _check_epochs(epochs, cfg)
        if not callable(scorers[seed]):
            raise ValueError("scorer must be a callable scorer(model, epoch) -> {layer: delta_phi}")
        # every segment's config is valid before the first step (epochs > start, keep_epochs in range)
        for a, b in zip(values, values[1:]):
            dataclasses.replace(cfg, epochs=b, keep_epochs=(b,), init_from={"config_hash": "0" * 20, "epoch": a})
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else training.default_checkpoint_dir()
    channels, height, _ = data.image_shape
    layer_sets = set()
    for seed in seeds:
        with torch.device("meta"):
            layer_sets.add(tuple(FL.filterable_layers(models.build_model(cfgs[seed].model, data.num_classes, channels,
                                                                         height))))
    if len(layer_sets) != 1:
        raise ValueError("the seeds' configs build networks with different layers: give every seed the same model")
    layers = layer_sets.pop()

    def train_all(configs_: list[training.TrainConfig]) -> list[training.TrainResult]:
        return training.train_many(data, configs_, checkpoint_dir=folder, device=device, progress=progress,
                                   workers=workers, threads=threads, rebuild=rebuild)

    parents, configs, runs = dict(zip(seeds, train_all([cfgs[seed] for seed in seeds]))), {}, {}
    for seed in seeds:
        cfg = cfgs[seed]
        parent = parents[seed]
        configs[seed] = {arm: {} for arm in ARMS}
        runs[seed] = {arm: {} for arm in ARMS}
        for arm in ARMS:
            configs[seed][arm][values[0]] = cfg
            runs[seed][arm][values[0]] = parent
        for e in values[1:]:
            if e <= cfg.epochs and e in cfg.keep_epochs:
                configs[seed]["regular"][e] = cfg
                runs[seed]["regular"][e] = parent
        if len(configs[seed]["regular"]) == 1:
            configs[seed]["regular"], runs[seed]["regular"] = {}, {}

    stages: dict[int, list[Stage]] = {seed: [] for seed in seeds}
    for k, epoch in enumerate(values):
        if k + 1 == len(values) and not score_last:
            break
        scored = {}
        for seed in seeds:
            model_device = next(parents[seed].model.parameters()).device
            model = training.load_snapshot(configs[seed]["selective"][epoch], data, epoch, checkpoint_dir=folder,
                                           device=model_device)
            raw = scorers[seed](model, epoch)
            del model
            if not isinstance(raw, Mapping):
                raise ValueError(f"the scorer must return a mapping {{layer: delta_phi}}, got {type(raw).__name__}")
            scores = {str(name): float(value) for name, value in raw.items()}
            unknown = sorted(set(scores) - set(layers))
            missing = [name for name in layers if name not in scores]
            if unknown or missing:
                raise ValueError(f"the scorer must score every conv/linear layer exactly once: unknown {unknown[:5]}, "
                                 f"missing {missing[:5]} (layers: filtering.filterable_layers(model))")
            scored[seed] = {name: scores[name] for name in layers}
        if freeze_rule == "seeds":
            common, test = fragile_by_seeds(scored, alpha)
            decided = {seed: (common, test) for seed in seeds}
        else:
            decided = {seed: (fragile_layers(scored[seed], tolerance), None) for seed in seeds}
        if k + 1 == len(values):
            for seed in seeds:
                fragile, test = decided[seed]
                stages[seed].append(Stage(epoch, None, scored[seed], fragile, None, None, test))
            continue
        nxt = values[k + 1]
        children = {}  # (seed, arm): the next segment, every seed's and arm's trained as one set of jobs
        for seed in seeds:
            for arm, frozen in (("selective", decided[seed][0]), ("control", ())):
                parent_cfg = configs[seed][arm][epoch]
                children[seed, arm] = dataclasses.replace(
                    cfgs[seed], epochs=nxt, keep_epochs=(nxt,), frozen=tuple(frozen),
                    init_from={"config_hash": training.config_hash(parent_cfg, data), "epoch": epoch})
        for (seed, arm), result in zip(children, train_all(list(children.values()))):
            runs[seed][arm][nxt], configs[seed][arm][nxt] = result, children[seed, arm]
        for seed in seeds:
            fragile, test = decided[seed]
            stages[seed].append(Stage(epoch, nxt, scored[seed], fragile, runs[seed]["selective"][nxt].config_hash,
                                      runs[seed]["control"][nxt].config_hash, test))
    return {seed: SelectiveResult(data=data, parent=parents[seed], epochs=values, stages=stages[seed],
                                  configs={a: c for a, c in configs[seed].items() if c},
                                  runs={a: r for a, r in runs[seed].items() if r}, layers=layers,
                                  tolerance=float(tolerance), checkpoint_dir=folder, freeze_rule=freeze_rule,
                                  alpha=alpha if freeze_rule == "seeds" else None)
            for seed in seeds}


class DeltaPhiScorer:
    """The paper's scorer: the local synaptic-filtering sweep of every conv/linear layer
    (:func:`paramstress.filtering.filter_sweep`, three filters, ``T`` thresholds,
    clean and FGSM-``eps`` inputs), the scores of Eqs. 14-16
    (:func:`paramstress.fragility.scores`), and Δφ of the ``filter`` response
    (default ``"combined"``, Eq. 13) per layer. ``reference`` and ``chance`` (the chance
    accuracy in %, for ``reference="chance"``) choose what each response is divided by
    (:func:`paramstress.fragility.responses`).

    ``x``/``y``: the evaluation set on the model's device (``uint8`` images with
    ``transform=ImageData.normalize``, or normalised floats). ``tags`` are added to
    every row (e.g. dataset, seed); each call adds ``epoch``. With ``csv_path`` the
    sweep rows go to a resumable CSV; with ``cache=True`` they go through
    :func:`paramstress.landscape.sweep_snapshot`'s cache of sweeps beside the checkpoints,
    keyed by :func:`weights_digest` of the model (so another notebook that sweeps the same
    snapshot with the same images, settings and tags reads the rows instead of
    recomputing them). ``tables`` collects every call's scores frame
    (all filters, φ_clean, φ_adv, Δφ), ``sweeps`` the raw sweep frames.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, eps: float, T: int = 25,
                 filters: Sequence[str] = FL.FILTERS, adversarial: str = "fixed", transform: Any = None,
                 batch_size: int = 1000, reference: str = "own", chance: float | None = None,
                 filter: str = FR.COMBINED, tags: Mapping[str, Any] | None = None,
                 csv_path: str | os.PathLike[str] | None = None, cache: bool = False) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be a positive FGSM size (Δφ needs adversarial accuracies), got {eps!r}")
        FL.check_T(T)
        for f in filters:
            FL.check_filter(f)
        if filter == FR.COMBINED and set(filters) != set(FL.FILTERS):
            raise ValueError(f"the combined response (Eq. 13) needs all three filters {list(FL.FILTERS)}, got "
                             f"{list(filters)}; pass filter='h_a' (one of them) to score a single filter")
        if filter != FR.COMBINED and filter not in filters:
            raise ValueError(f"filter {filter!r} is not among the swept filters {list(filters)}")
        if adversarial not in FL.ADVERSARIAL_MODES:
            raise ValueError(f"adversarial must be one of {FL.ADVERSARIAL_MODES}, got {adversarial!r}")
        FR.check_reference(reference, chance)
        self.x, self.y = x, y
        self.eps, self.T, self.filters = float(eps), int(T), tuple(filters)
        self.adversarial, self.transform, self.batch_size = adversarial, transform, batch_size
        self.reference, self.chance, self.filter = reference, chance, filter
        self.tags = dict(tags or {})
        if "epoch" in self.tags:
            raise ValueError("tags may not contain 'epoch': the scorer adds it")
        if cache and csv_path is not None:
            raise ValueError("give csv_path or cache=True, not both (the cache keeps its own CSVs)")
        if cache and (transform is None or x.is_floating_point()):
            raise ValueError("cache=True needs the uint8 images and transform=ImageData.normalize "
                             "(the cache key digests the images)")
        self.csv_path, self.cache = csv_path, bool(cache)
        self.tables: list[pd.DataFrame] = []
        self.sweeps: list[pd.DataFrame] = []

    def __call__(self, model: nn.Module, epoch: int, **extra_tags: Any) -> dict[str, float]:
        tags = {**self.tags, **extra_tags, "epoch": int(epoch)}
        layers = FL.filterable_layers(model)
        if self.cache:
            frame = L.sweep_snapshot(model, self.x, self.y, normalize=self.transform, tags=tags,
                                     snapshot=weights_digest(model), scopes=layers, T=self.T, eps=self.eps,
                                     adversarial=self.adversarial, batch_size=self.batch_size, filters=self.filters)
        else:
            frame = FL.filter_sweep(model, self.x, self.y, scopes=layers, filters=self.filters, T=self.T,
                                    eps=self.eps, adversarial=self.adversarial, transform=self.transform,
                                    batch_size=self.batch_size, tags=tags, csv_path=self.csv_path)
        # a resumed CSV reads numeric module names (nn.Sequential's "0", "4") back as ints
        frame = frame.assign(layer=frame["layer"].astype(str))
        table = FR.scores(frame, reference=self.reference, chance=self.chance)
        self.sweeps.append(frame)
        self.tables.append(table)
        chosen = table[table["filter"] == self.filter].set_index("layer")["delta_phi"]
        return {name: float(chosen[name]) for name in layers}

    def scores(self) -> pd.DataFrame:
        """Every call's scores (tags, epoch, layer, filter, T, φ_clean, φ_adv, Δφ), one frame."""
        if not self.tables:
            return pd.DataFrame()
        return pd.concat(self.tables, ignore_index=True)


def weights_digest(model: nn.Module) -> str:
    """A 20-hex-digit SHA-256 of the model's state dict (names, dtypes, shapes, values):
    the identity of a snapshot, whatever chain of runs produced it."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}{flat.dtype}{tuple(flat.shape)}".encode())
        h.update(flat.numpy().tobytes() if flat.dtype != torch.bfloat16 else flat.view(torch.int16).numpy().tobytes())
    return "weights:" + h.hexdigest()[:20]


def eps_grid(eps_max: float, points: int) -> list[float]:
    """``points`` evenly spaced FGSM sizes from 0 (clean) to ``eps_max`` (Fig. 12's x axis)."""
    if isinstance(eps_max, bool) or not isinstance(eps_max, (int, float)) or not math.isfinite(eps_max) or eps_max <= 0:
        raise ValueError(f"eps_max must be a positive number (the ε of Defs. 7-9), got {eps_max!r}")
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an int >= 2 (0 and eps_max at least), got {points!r}")
    return [float(v) for v in np.linspace(0.0, float(eps_max), points)]


def fgsm_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values: Sequence[float], *,
               batch_size: int = 1000) -> pd.DataFrame:
    """Fig. 12's curve of one model: accuracy (%) under FGSM at each ε of ``eps_values``
    (0 = clean), through :func:`paramstress.adversarial.adversarial_accuracy`.
    ``x``: normalised inputs on the model's device. Columns ``eps``, ``accuracy``."""
    values = [A.check_eps(e) for e in eps_values]
    if not values:
        raise ValueError("eps_values is empty: give the FGSM sizes, e.g. eps_grid(eps_max, 7)")
    accuracies = A.adversarial_accuracies(model, x, y, values, batch_size=batch_size)  # checks x, y; one gradient
    return pd.DataFrame([{"eps": e, "accuracy": a} for e, a in zip(values, accuracies)])


# --------------------------------------------------------------------------- Fig. 12's verdict
def freeze_rule_text(freeze_rule: str, *, tolerance: float = 0.0, alpha: float = 0.05, seeds: int | None = None) -> str:
    """The freezing rule in one sentence, for the page's table of choices."""
    if freeze_rule == "seeds":
        n = f"the {seeds} seeds" if seeds else "the seeds"
        return (f"combined Δφ below 0 beyond the seeds' noise: a one-sided one-sample t-test of the mean Δφ over "
                f"{n} (p < {alpha:g}, i.e. the upper {100 * (1 - alpha):g} % bound of the mean is below 0); "
                "one frozen set for every seed")
    if freeze_rule == "tolerance":
        return (f"combined Δφ < {-tolerance:g} in each seed's own scores" if tolerance
                else "combined Δφ < 0 in each seed's own scores (Def. 4, no allowance for noise)")
    raise ValueError(f"freeze_rule must be one of {FREEZE_RULES}, got {freeze_rule!r}")


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """A paired t-test of ``a − b`` over ``n`` pairs (seeds): ``mean``, ``sd`` of the
    differences, the two-sided ``1 − alpha`` interval of the mean, ``t`` and the two-sided
    ``p_value`` (``scipy.stats.ttest_rel``); with sd = 0, p is 0 for a non-zero mean, 1 for 0."""

    n: int
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    t: float
    p_value: float
    alpha: float

    def direction(self) -> str:
        """``"above"`` (interval above 0), ``"below"`` (below 0) or ``"includes 0"``."""
        if self.ci_low > 0:
            return "above"
        if self.ci_high < 0:
            return "below"
        return "includes 0"


def paired_difference(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> PairedDifference:
    """Paired t-test of ``a − b`` (``a[i]`` and ``b[i]`` from the same seed), two-sided, with
    the ``1 − alpha`` interval of the mean difference; at least 2 pairs. Computed by
    :func:`paramstress.stats.paired_test` (``alternative="two-sided"``)."""
    alpha = ST.check_alpha(alpha)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"a and b must be two equally long sequences of paired values (one per seed), got shapes "
                         f"{x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs (seeds), got {len(x)}: add seeds")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a and b must be finite numbers")
    r = ST.paired_test(x, y, confidence=1.0 - alpha, alternative="two-sided")
    return PairedDifference(n=r.n, mean=r.mean_difference, sd=r.sd, ci_low=r.ci_low, ci_high=r.ci_high, t=r.t,
                            p_value=r.p_value, alpha=alpha)


def per_model(fig12: pd.DataFrame) -> pd.DataFrame:
    """One row per (dataset, seed, arm, epoch) of Fig. 12's curves: ``clean`` (accuracy at
    ε = 0), ``at_eps`` (at the largest ε) and ``mean_over_eps`` (the area under the curve
    over ``eps_fraction`` ∈ [0, 1], i.e. the mean accuracy over the grid)."""
    need = {"dataset", "seed", "arm", "epoch", "eps", "eps_fraction", "accuracy"}
    if not need <= set(fig12.columns):
        raise ValueError(f"fig12 needs the columns {sorted(need)}, missing {sorted(need - set(fig12.columns))}")
    out = []
    for (task, seed, arm, epoch), part in fig12.groupby(["dataset", "seed", "arm", "epoch"]):
        part = part.sort_values("eps")
        out.append({"dataset": task, "seed": seed, "arm": arm, "epoch": epoch,
                    "clean": float(part["accuracy"].iloc[0]), "at_eps": float(part["accuracy"].iloc[-1]),
                    "mean_over_eps": float(np.trapezoid(part["accuracy"], part["eps_fraction"]))})
    return pd.DataFrame(out)


def paired_differences(models_table: pd.DataFrame, first_epoch: int) -> pd.DataFrame:
    """Selective − control per (dataset, epoch > ``first_epoch``, seed) of :func:`per_model`'s
    ``clean``, ``at_eps`` and ``mean_over_eps`` (indexed by dataset, epoch, seed)."""
    later = models_table[models_table["epoch"] > first_epoch]
    wide = later.pivot_table(index=["dataset", "epoch", "seed"], columns="arm",
                             values=["clean", "at_eps", "mean_over_eps"])
    return pd.DataFrame({m: wide[(m, "selective")] - wide[(m, "control")]
                         for m in ("clean", "at_eps", "mean_over_eps")})


def fig12_verdicts(fig12: pd.DataFrame, choices: pd.DataFrame, eps: Mapping[str, float], epochs: Sequence[int], *,
                   names: Mapping[str, str] | None = None, alpha: float = 0.05) -> tuple[str, pd.DataFrame]:
    """The page's verdict on the paper's claim (selective training is more robust to FGSM
    than regular training), per task at the last chain epoch: selective − control at the
    task's ε by a paired t-test over the seeds (:func:`paired_difference`: n, mean, the
    ``1 − alpha`` interval, p). The claim is shown where the interval lies above 0, its
    opposite where it lies below, and neither where it includes 0.

    ``fig12``: the curves (columns of :func:`per_model`'s input, all arms); ``choices``:
    the chains' :meth:`SelectiveResult.choices` with ``dataset`` and ``seed`` columns;
    ``eps``: the task's ε. Returns Markdown (one bullet per task) and a table, one row
    per task: ``dataset``, ``epoch``, ``seeds``, the arms' mean accuracies, ``gain``,
    ``gain_low``, ``gain_high``, ``gain_p``, ``clean_change`` (and its interval and p),
    ``frozen`` (mean layers frozen per segment), ``layers``, ``verdict``."""
    alpha = ST.check_alpha(alpha)
    names = dict(names or {})
    values = [int(e) for e in epochs]
    if len(values) < 2:
        raise ValueError(f"epochs needs at least two chain epochs, got {values}")
    models_table = per_model(fig12)
    first, last = values[0], max(values)
    diff = paired_differences(models_table, first)
    at_last = models_table[models_table["epoch"] == last]
    tasks = list(dict.fromkeys(fig12["dataset"]))
    missing = [t for t in tasks if t not in eps]
    if missing:
        raise ValueError(f"eps has no ε for {missing}: give {{task: ε}} for every task of fig12")
    n_layers = int(choices.groupby(["dataset", "seed", "epoch"]).size().max())
    lines, rows = [], []
    level = f"{100 * (1 - alpha):g} %"
    for task in tasks:
        label = names.get(task, task)
        if (task, last) not in diff.index:
            raise ValueError(f"no selective and control models of {task!r} at epoch {last}")
        d = diff.loc[(task, last)]
        sel = at_last[(at_last.dataset == task) & (at_last.arm == "selective")].set_index("seed")
        ctl = at_last[(at_last.dataset == task) & (at_last.arm == "control")].set_index("seed")
        seeds = list(d.index)
        gain = paired_difference(sel.loc[seeds, "at_eps"], ctl.loc[seeds, "at_eps"], alpha)
        clean = paired_difference(sel.loc[seeds, "clean"], ctl.loc[seeds, "clean"], alpha)
        frozen = choices[(choices["dataset"] == task) & choices["next_epoch"].notna()]
        n_frozen = float(frozen.groupby(["seed", "epoch"])["fragile"].sum().mean()) if len(frozen) else 0.0
        if gain.direction() == "above":
            verdict = "selective training is ahead of its control beyond the seeds' noise (the interval lies above 0)"
        elif gain.direction() == "below":
            verdict = ("selective training is behind its control beyond the seeds' noise (the interval lies below 0): "
                       "the paper's claim does not hold on this run")
        else:
            verdict = ("the difference is within the seeds' noise (the interval includes 0): this run shows neither "
                       "the claim nor its opposite")
        text = (f"- **{label}**, epoch {last}: at ε = {eps[task]:.3g} the selective models reach "
                f"{sel['at_eps'].mean():.1f} % against {ctl['at_eps'].mean():.1f} % for regular backpropagation from "
                f"the same start; selective − regular: {gain.mean:+.1f} points, {level} interval "
                f"[{gain.ci_low:+.1f}, {gain.ci_high:+.1f}], paired t-test over {gain.n} seeds, p = {gain.p_value:.2g} "
                f"({n_frozen:.1f} of {n_layers} layers frozen on average): {verdict}. The clean accuracy changes by "
                f"{clean.mean:+.1f} points [{clean.ci_low:+.1f}, {clean.ci_high:+.1f}], p = {clean.p_value:.2g}")
        if gain.direction() == "above" and clean.mean >= gain.mean:
            text += ", as much as or more than the accuracy under attack, so the gain is not specific to the attack"
        text += "."
        reg = at_last[(at_last.dataset == task) & (at_last.arm == "regular")]
        if len(reg):
            reg_at, reg_clean = float(reg["at_eps"].mean()), float(reg["clean"].mean())
            text += (f" The uninterrupted regular run (no optimizer restart at epoch {first}) reaches {reg_at:.1f} % "
                     f"under attack and {reg_clean:.1f} % clean: selective training is "
                     f"{'above' if sel['at_eps'].mean() > reg_at else 'below'} it under attack (mean over seeds).")
        lines.append(text)
        rows.append({"dataset": task, "epoch": last, "seeds": gain.n, "selective_at_eps": float(sel["at_eps"].mean()),
                     "control_at_eps": float(ctl["at_eps"].mean()), "gain": gain.mean, "gain_low": gain.ci_low,
                     "gain_high": gain.ci_high, "gain_p": gain.p_value, "clean_change": clean.mean,
                     "clean_low": clean.ci_low, "clean_high": clean.ci_high, "clean_p": clean.p_value,
                     "frozen": n_frozen, "layers": n_layers, "verdict": gain.direction()})
    return "\n".join(lines), pd.DataFrame(rows)


def first_last_summary(choices: pd.DataFrame, layers: Sequence[str]) -> str:
    """How often the first convolution and the last linear layer (``layers[0]``,
    ``layers[-1]``) were fragile over the scorings of a run (``choices``: the rows of
    :meth:`SelectiveResult.choices` with ``dataset`` and ``seed`` columns), and how many of
    the layers a segment froze on average, as one Markdown sentence (Pravin et al. call the
    first and the last layer fragile)."""
    if not len(layers):
        raise ValueError("layers is empty: pass the scored conv/linear layers in network order")
    missing = [c for c in ("dataset", "seed", "epoch", "layer", "fragile") if c not in choices.columns]
    if missing:
        raise ValueError(f"choices lacks {missing}: pass the choices() rows with dataset and seed columns")
    first, last = layers[0], layers[-1]
    counts = choices[choices["layer"].isin([first, last])].groupby("layer")["fragile"].agg(["sum", "count"])
    scorings = choices.groupby(["dataset", "seed", "epoch"])
    return (f"Over the {scorings.ngroups} scorings of this run, the first convolution (`{first}`) is fragile in "
            f"{int(counts.loc[first, 'sum'])} and the last linear layer (`{last}`) in {int(counts.loc[last, 'sum'])}; "
            f"on average {scorings['fragile'].sum().mean():.1f} of {len(layers)} layers are frozen per segment.")
