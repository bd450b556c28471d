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
  filters (Eq. 13); a layer is fragile when ``Δφ < −tolerance`` (Def. 4;
  ``tolerance = 0``: the strict condition). Only conv and linear layers are scored
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

from . import adversarial as A
from . import filtering as FL
from . import fragility as FR
from . import landscape as L
from . import models, training
from .data import ImageData

__all__ = [
    "ARMS",
    "Scorer",
    "fragile_layers",
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
        ``fragile`` (frozen for the next segment)."""
        rows = []
        position = {name: i for i, name in enumerate(self.layers)}
        for stage in self.stages:
            for layer, value in stage.scores.items():
                rows.append({"epoch": stage.epoch, "next_epoch": stage.next_epoch, "position": position[layer],
                             "layer": layer, "delta_phi": float(value), "fragile": layer in stage.fragile})
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
    if cfg.frozen:
        raise ValueError(f"the parent config freezes {cfg.frozen}: the parent must be a regular run "
                         "(TrainConfig(frozen=())); the driver freezes the fragile layers itself")
    values = _check_epochs(epochs, cfg)
    fragile_layers({}, tolerance)  # validates tolerance
    if not callable(scorer):
        raise ValueError("scorer must be a callable scorer(model, epoch) -> {layer: delta_phi}")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else training.default_checkpoint_dir()
    channels, height, _ = data.image_shape
    with torch.device("meta"):
        layers = tuple(FL.filterable_layers(models.build_model(cfg.model, data.num_classes, channels, height)))
    # every segment's config is valid before the first step (epochs > start, keep_epochs in range)
    for a, b in zip(values, values[1:]):
        dataclasses.replace(cfg, epochs=b, keep_epochs=(b,), init_from={"config_hash": "0" * 20, "epoch": a})

    parent = training.train(None, data, cfg, device=device, checkpoint_dir=folder, progress=progress)
    configs: dict[str, dict[int, training.TrainConfig]] = {arm: {} for arm in ARMS}
    runs: dict[str, dict[int, training.TrainResult]] = {arm: {} for arm in ARMS}
    for arm in ARMS:
        configs[arm][values[0]] = cfg
        runs[arm][values[0]] = parent
    for e in values[1:]:
        if e <= cfg.epochs and e in cfg.keep_epochs:
            configs["regular"][e] = cfg
            runs["regular"][e] = parent
    if len(configs["regular"]) == 1:
        configs["regular"], runs["regular"] = {}, {}

    model_device = next(parent.model.parameters()).device
    stages: list[Stage] = []
    for k, epoch in enumerate(values):
        if k + 1 == len(values) and not score_last:
            break
        model = training.load_snapshot(configs["selective"][epoch], data, epoch, checkpoint_dir=folder,
                                       device=model_device)
        raw = scorer(model, epoch)
        del model
        if not isinstance(raw, Mapping):
            raise ValueError(f"the scorer must return a mapping {{layer: delta_phi}}, got {type(raw).__name__}")
        scores = {str(name): float(value) for name, value in raw.items()}
        unknown = sorted(set(scores) - set(layers))
        missing = [name for name in layers if name not in scores]
        if unknown or missing:
            raise ValueError(f"the scorer must score every conv/linear layer exactly once: unknown {unknown[:5]}, "
                             f"missing {missing[:5]} (layers: filtering.filterable_layers(model))")
        scores = {name: scores[name] for name in layers}
        fragile = fragile_layers(scores, tolerance)
        if k + 1 == len(values):
            stages.append(Stage(epoch, None, scores, fragile, None, None))
            break
        nxt = values[k + 1]
        hashes = {}
        for arm, frozen in (("selective", fragile), ("control", ())):
            parent_cfg = configs[arm][epoch]
            child = dataclasses.replace(
                cfg, epochs=nxt, keep_epochs=(nxt,), frozen=tuple(frozen),
                init_from={"config_hash": training.config_hash(parent_cfg, data), "epoch": epoch})
            runs[arm][nxt] = training.train(None, data, child, device=device, checkpoint_dir=folder, progress=progress)
            configs[arm][nxt] = child
            hashes[arm] = runs[arm][nxt].config_hash
        stages.append(Stage(epoch, nxt, scores, fragile, hashes["selective"], hashes["control"]))
    return SelectiveResult(data=data, parent=parent, epochs=values, stages=stages,
                           configs={a: c for a, c in configs.items() if c},
                           runs={a: r for a, r in runs.items() if r}, layers=layers,
                           tolerance=float(tolerance), checkpoint_dir=folder)


class DeltaPhiScorer:
    """The paper's scorer: the local synaptic-filtering sweep of every conv/linear layer
    (:func:`paramstress.filtering.filter_sweep`, three filters, ``T`` thresholds,
    clean and FGSM-``eps`` inputs), the scores of Eqs. 14-16
    (:func:`paramstress.fragility.scores`), and Δφ of the ``filter`` response
    (default ``"combined"``, Eq. 13) per layer.

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
                 batch_size: int = 1000, reference: str = "unperturbed", filter: str = FR.COMBINED,
                 tags: Mapping[str, Any] | None = None, csv_path: str | os.PathLike[str] | None = None,
                 cache: bool = False) -> None:
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise ValueError(f"eps must be a positive FGSM size (Δφ needs adversarial accuracies), got {eps!r}")
        FL._check_T(T)
        for f in filters:
            FL._check_filter(f)
        if filter == FR.COMBINED and set(filters) != set(FL.FILTERS):
            raise ValueError(f"the combined response (Eq. 13) needs all three filters {list(FL.FILTERS)}, got "
                             f"{list(filters)}; pass filter='h_a' (one of them) to score a single filter")
        if filter != FR.COMBINED and filter not in filters:
            raise ValueError(f"filter {filter!r} is not among the swept filters {list(filters)}")
        if adversarial not in FL.ADVERSARIAL_MODES:
            raise ValueError(f"adversarial must be one of {FL.ADVERSARIAL_MODES}, got {adversarial!r}")
        if reference not in FR.REFERENCES:
            raise ValueError(f"reference must be one of {FR.REFERENCES}, got {reference!r}")
        self.x, self.y = x, y
        self.eps, self.T, self.filters = float(eps), int(T), tuple(filters)
        self.adversarial, self.transform, self.batch_size = adversarial, transform, batch_size
        self.reference, self.filter = reference, filter
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
        table = FR.scores(frame, reference=self.reference)
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
    values = [A._check_eps(e) for e in eps_values]
    if not values:
        raise ValueError("eps_values is empty: give the FGSM sizes, e.g. eps_grid(eps_max, 7)")
    A._check_xy(x, y, batch_size)
    return pd.DataFrame([{"eps": e, "accuracy": A.adversarial_accuracy(model, x, y, e, batch_size=batch_size)}
                         for e in values])
