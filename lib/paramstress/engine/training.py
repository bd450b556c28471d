"""One training loop for every model of the book, with pluggable objectives.

:func:`train` takes a model, an :class:`~paramstress.data.ImageData` and a
:class:`TrainConfig`, and runs SGD (Nesterov momentum) or Adam with a per-step
OneCycle, cosine or constant learning-rate schedule, with all data on the device: the whole dataset is
moved there once, each epoch is a random permutation (drawn from a seeded
``torch.Generator``) sliced into batches by indexing, and the augmentation
(random crop with zero padding, optional horizontal flip) runs on the device on the
``uint8`` batch before normalisation. There is no DataLoader. On CUDA the forward
passes run under bf16 autocast and the model and batches are ``channels_last``;
on the CPU everything is float32, and two runs with the same seed give
bit-identical weights.

Checkpoints are cached by :func:`config_hash` (the config plus the identity of
the dataset) as ``<checkpoint_dir>/<hash>.pt``, written atomically after every
``checkpoint_every`` epochs and after the last one. A finished checkpoint is
loaded instead of training; a partial one is resumed, and the resumed run ends with
the same weights as an uninterrupted one (model, optimizer, schedule and every
random-number generator are restored).

The loop's phases
-----------------
:func:`train` is one client of :class:`TrainingLoop`; :func:`paramstress.tasks.train_task`
(the text tasks) is another. The loop holds what one run trains (model, optimizer,
schedule, objective, loss, batch generator, frozen parameters, history) and runs in
named phases: :meth:`TrainingLoop.prepare` (optimizer and schedule, after
:func:`seeded_generator` seeded the random-number generators), :meth:`TrainingLoop.restore`
(a partial checkpoint that :func:`read_checkpoint` found), :meth:`TrainingLoop.run_epoch`
(one optimizer step per batch of any iterable of ``(x, y, weight)``), the caller's
evaluation, which turns each :class:`EpochResult` into a history row, and
:meth:`TrainingLoop.save` (:meth:`TrainingLoop.checkpoint`, written atomically);
:meth:`TrainingLoop.run` strings the last three together. A client supplies only its
batches, its loss, its evaluation and what identifies its run in the checkpoint.

Snapshots, frozen layers, runs that start from a snapshot
-------------------------------------------------------
Pravin et al. (2023) analyse each network at several points of its training
(§4.3: "the model of every 10 epochs was stored") and retrain it with the
gradients of its fragile layers zeroed (§5, "Selective backpropagation on robust
and antifragile parameters"). Three config fields serve this:

* ``keep_epochs``: after each listed epoch (0 = the initialisation) the model's
  state dict, the epoch and its test accuracy are written atomically to
  ``<checkpoint_dir>/<hash>.epoch<e>.pt`` (:func:`snapshot_path`), read back with
  :func:`load_snapshot`. They are separate files, so a resumed run keeps the
  ones written before the interruption and writes the later ones.
* ``frozen``: parameter-name prefixes (module paths such as ``"conv1"`` or
  ``"layer1.0.conv2"``, or full names such as ``"fc.weight"``) whose parameters
  are truly frozen: they are left out of the optimizer (so neither weight decay
  nor Adam's or SGD-momentum's state can move them), their ``requires_grad`` is
  off while training (restored afterwards; objectives that perturb only
  ``requires_grad`` parameters leave them alone) and any gradient is discarded.
  After every epoch they are checked to be bit-identical to where they started.
  Buffers (batch-norm running statistics) are not parameters and keep updating
  in train mode.
* ``init_from = {"config_hash": h, "epoch": e}``: instead of a random
  initialisation the run starts from the snapshot ``<checkpoint_dir>/<h>.epoch<e>.pt``
  of another config (which must list ``e`` in its ``keep_epochs``). Epochs are
  numbered on from ``e``: the run trains epochs ``e+1 … epochs``, and its
  ``keep_epochs`` and history use those absolute numbers. It is otherwise a fresh
  run: a new optimizer (Adam's moments start at zero), a schedule over its own
  ``epochs - e`` epochs and a data order drawn from its own ``seed``. The
  parent's hash and epoch are part of the config, hence of its cache key.

Selective backpropagation is then a chain: train a regular run with
``keep_epochs=(10, 20, …)``; score its epoch-10 snapshot; train
``init_from={"config_hash": parent.config_hash, "epoch": 10}``,
``frozen=<fragile layers>``, ``epochs=20``, ``keep_epochs=(20,)``; score that
snapshot, and so on. The control is the same chain with
``frozen=()``: same start, same seeds, same data order, same optimizer resets.
(There is no frozen-set schedule inside one run: every change of the frozen set
is a new config, so each cache key names exactly what was trained.)

Extension point: objectives
---------------------------
What one training step *computes* is an :class:`Objective`: a callable
``objective(model, x, y, loss_fn) -> loss`` that runs the forward and backward
passes of one batch, leaving the gradients in ``param.grad``, and returns the
(detached) loss to log. The loop zeroes the gradients before the call and, after
it, drops the frozen parameters' gradients, clips (when the client asks for it, as
:func:`paramstress.tasks.train_task` does) and does ``optimizer.step()`` and
``scheduler.step()``; nothing else. In :func:`train`, ``loss_fn``
is a :class:`BatchLoss`: ``loss_fn(model, x, y)`` runs the forward pass under the
loop's precision policy and returns the float32 training criterion (cross-entropy
with the configured label smoothing); ``loss_fn.logits(model, x)`` and
``loss_fn.criterion(logits, y)`` give the two halves. Objectives call
``.backward()`` themselves, outside autocast, so any number of passes fits:

* plain training (:class:`CrossEntropy`): ``loss = loss_fn(model, x, y);
  loss.backward()``;
* a double-backward regulariser (Sun et al. 2021, Eq. 16, ``L + λ‖g‖``):
  ``g = torch.autograd.grad(loss, params, create_graph=True)``, then
  ``(loss + lam * norm(g)).backward()``;
* a two-pass, SAM-like step (Sun et al. Eq. 13, SAM, AWP): ``loss.backward()``,
  compute a perturbation from the gradients under ``torch.no_grad()``, add it to
  the weights, zero the gradients, ``loss_fn(model, x, y).backward()`` again,
  subtract the perturbation; the loop's ``optimizer.step()`` then uses the
  gradients of the perturbed point at the restored weights.

Register a new objective with :func:`register_objective` (its parameters come from
``TrainConfig.objective_params`` as keyword arguments) and select it with
``TrainConfig(objective=name)``; the loop is never copied. An objective with state
that must survive a resume (say, a running estimate) implements ``state_dict()``
and ``load_state_dict(state)``; the loop saves and restores it with the checkpoint.
Randomness should come from ``torch``'s global generator, which the loop seeds from
``TrainConfig.seed`` and checkpoints. Parameters listed in ``TrainConfig.frozen``
have ``requires_grad=False`` while an objective runs.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn


from paramstress.engine import models
from paramstress.engine.data import ImageData
from paramstress.engine.storage import atomic_save, project_folder

__all__ = [
    "CHECKPOINT_DIR_ENV",
    "CHECKPOINT_FORMAT",
    "OPTIMIZERS",
    "SCHEDULES",
    "Batch",
    "BatchLoss",
    "CrossEntropy",
    "EpochResult",
    "EpochStats",
    "Objective",
    "TrainConfig",
    "TrainResult",
    "TrainingLoop",
    "atomic_save",
    "augment_batch",
    "cutout_batch",
    "config_hash",
    "default_checkpoint_dir",
    "evaluate_accuracy",
    "frozen_parameter_names",
    "load_checkpoint",
    "load_snapshot",
    "make_objective",
    "objective_names",
    "read_checkpoint",
    "register_objective",
    "seeded_generator",
    "snapshot_path",
    "train",
    "train_many",
    "train_in_workers",
    "pretrained_result",
]

#: Bumped whenever the checkpoint layout or the meaning of a config field changes,
#: so that old cached checkpoints are not mistaken for new ones.
CHECKPOINT_FORMAT = 1
#: Valid ``TrainConfig.schedule`` values.
SCHEDULES: tuple[str, ...] = ("onecycle", "cosine", "constant")
#: Valid ``TrainConfig.optimizer`` values.
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
#: Fields added after the first cached checkpoints, with their defaults: a field at
#: its default is left out of :func:`config_hash`, so older keys stay valid.
_HASH_OPTIONAL: dict[str, Any] = {"optimizer": "sgd", "keep_epochs": (), "frozen": (), "init_from": None,
                                  "cutout": 0}
#: Environment variable that overrides :func:`default_checkpoint_dir`.
CHECKPOINT_DIR_ENV = "PARAMSTRESS_CHECKPOINTS"


def default_checkpoint_dir() -> Path:
    """``$PARAMSTRESS_CHECKPOINTS`` if set, else the checkout's ``checkpoints/`` folder
    (ignored by git), else ``./checkpoints``. Created on first save, not here."""
    return project_folder(CHECKPOINT_DIR_ENV, "checkpoints")


# =========================================================================== objectives
class BatchLoss:
    """The training criterion of one batch, under the loop's precision policy.

    ``self(model, x, y)`` = ``criterion(logits(model, x), y)``: the forward pass
    runs under autocast with ``amp_dtype`` when that is set (bf16 on CUDA), the
    logits are cast to float32 and the criterion (cross-entropy with label
    smoothing) is computed in float32.
    """

    def __init__(self, criterion: nn.Module, device_type: str, amp_dtype: torch.dtype | None) -> None:
        self.criterion = criterion
        self.device_type = device_type
        self.amp_dtype = amp_dtype

    def logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Forward pass (autocast when enabled), logits as float32."""
        if self.amp_dtype is None:
            return model(x).float()
        with torch.autocast(self.device_type, dtype=self.amp_dtype):
            out = model(x)
        return out.float()

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.logits(model, x), y)


#: The type of ``loss_fn`` as objectives see it.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class Objective(Protocol):
    """One training step's forward and backward passes (see the module docstring).

    ``name`` is the registry name; it must equal ``TrainConfig.objective`` so that
    checkpoints of different objectives never share a cache key.
    """

    name: str

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> torch.Tensor:
        """Leave the batch's gradients in ``param.grad`` and return the detached loss to log."""
        ...


_OBJECTIVES: dict[str, Callable[..., Objective]] = {}


def register_objective(name: str) -> Callable[[Callable[..., Objective]], Callable[..., Objective]]:
    """Class decorator: make ``TrainConfig(objective=name)`` build this objective.

    The factory is called with ``TrainConfig.objective_params`` as keyword
    arguments; the objects it builds must have ``name == name``. Registering a
    different factory under a taken name is an error (re-registering the same
    class, as a module reload does, is not).
    """

    def decorator(factory: Callable[..., Objective]) -> Callable[..., Objective]:
        if getattr(factory, "name", name) != name:
            raise ValueError(
                f"objective factory {factory!r} has name {factory.name!r} but is registered as {name!r}"
            )
        existing = _OBJECTIVES.get(name)
        if existing is not None and _qualified(existing) != _qualified(factory):
            raise ValueError(
                f"objective {name!r} is already registered by {_qualified(existing)}; choose another name"
            )
        _OBJECTIVES[name] = factory
        return factory

    return decorator


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def objective_names() -> tuple[str, ...]:
    """The registered objective names (valid ``TrainConfig.objective`` values)."""
    return tuple(sorted(_OBJECTIVES))


def make_objective(name: str, params: dict[str, Any] | None = None) -> Objective:
    """Build the registered objective ``name`` with keyword arguments ``params``."""
    if name not in _OBJECTIVES:
        raise ValueError(
            f"unknown objective {name!r}; registered: {', '.join(objective_names())}. "
            "Set TrainConfig(objective=...) to one of them, or import the module that registers yours"
        )
    try:
        objective = _OBJECTIVES[name](**(params or {}))
    except TypeError as exc:
        raise ValueError(
            f"objective_params {params!r} do not fit objective {name!r} ({exc}); "
            "fix TrainConfig(objective_params=...)"
        ) from exc
    if getattr(objective, "name", None) != name:
        raise ValueError(f"objective registered as {name!r} built an object named {getattr(objective, 'name', None)!r}")
    return objective


@register_objective("cross_entropy")
@dataclasses.dataclass
class CrossEntropy:
    """Plain training: one forward pass, one backward pass of the criterion."""

    name: ClassVar[str] = "cross_entropy"

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> torch.Tensor:
        loss = loss_fn(model, x, y)
        loss.backward()
        return loss.detach()


# =========================================================================== config
@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (given the data and the code).

    Every field enters :func:`config_hash`, so any change trains (and caches) a new
    model. The config is validated when it is constructed: a bad value raises
    ``ValueError`` naming the field and the fix, before any compute.

    Optimisation: ``optimizer='sgd'`` is SGD with ``momentum`` (Nesterov when
    ``nesterov``) and ``weight_decay``; ``optimizer='adam'`` is ``torch.optim.Adam``
    with default betas and eps and ``weight_decay`` as Adam's L2 term (added to the
    gradient, not decoupled; ``momentum`` and ``nesterov`` are ignored and left
    out of the hash). Pravin et al. (2023, §4.3) train with Adam, lr 1e-3, batch 100.
    ``lr`` is the peak learning rate of the per-step ``schedule``: ``'onecycle'``
    (``OneCycleLR``: cosine warm-up from ``lr/25`` over the first
    ``warmup_fraction`` of the steps, then cosine decay to ``lr/25e4``; momentum is
    held at ``momentum``, not cycled), ``'cosine'`` (linear warm-up over
    ``warmup_fraction`` of the steps, may be 0, then cosine decay to 0) or
    ``'constant'`` (``lr`` throughout; ``warmup_fraction`` is ignored and left out
    of the hash).

    Data: ``train_subset``/``test_subset`` (``None`` = all) draw a random subset of
    that size with ``subset_seed`` (:meth:`ImageData.subset`). With ``augment``, each
    training image is randomly cropped back to its size after zero-padding by
    ``crop_padding`` pixels and, if ``hflip``, mirrored with probability 1/2 (turn
    ``hflip`` off for digits: a mirrored 2 is not a 2). ``cutout > 0`` (with
    ``augment``) then masks one ``cutout``×``cutout`` square per image, at a uniformly
    random centre and clipped at the border, to zero after normalisation, i.e. to the
    data mean (:func:`cutout_batch`; DeVries & Taylor 2017). ``label_smoothing`` is that
    of ``nn.CrossEntropyLoss``.

    ``seed`` seeds the model initialisation (when :func:`train` builds the model),
    the batch order, the augmentation and the global RNG during training.
    ``objective`` names a registered :class:`Objective`, built with
    ``objective_params`` (JSON-serialisable). On CUDA, ``amp`` runs forward passes
    under bf16 autocast and ``channels_last`` uses that memory format; both are
    ignored on the CPU.

    ``keep_epochs`` (epochs after which a snapshot is kept, 0 = initialisation),
    ``frozen`` (parameter-name prefixes that are not trained) and ``init_from``
    (``{"config_hash": ..., "epoch": ...}``: start from another run's snapshot) are
    described in the module docstring. Lists are accepted and stored as sorted
    tuples without duplicates. These four fields (and ``optimizer``) enter the hash
    only when they differ from their defaults, so configs that existed before them
    keep their keys.
    """

    model: str = "resnet34_cifar"
    epochs: int = 30
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    warmup_fraction: float = 0.25
    augment: bool = True
    crop_padding: int = 4
    hflip: bool = True
    cutout: int = 0
    label_smoothing: float = 0.0
    seed: int = 0
    objective: str = "cross_entropy"
    objective_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    train_subset: int | None = None
    test_subset: int | None = None
    subset_seed: int = 0
    checkpoint_every: int = 1
    eval_batch_size: int = 1024
    amp: bool = True
    channels_last: bool = True
    optimizer: str = "sgd"
    keep_epochs: tuple[int, ...] = ()
    frozen: tuple[str, ...] = ()
    init_from: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # canonical forms (lists from YAML/JSON become sorted tuples) before validation
        for name in ("keep_epochs", "frozen"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                try:
                    object.__setattr__(self, name, tuple(sorted(set(value))))
                except TypeError as exc:
                    raise ValueError(f"{name} must hold values of one type, got {value!r}") from exc
        if isinstance(self.init_from, dict):
            object.__setattr__(self, "init_from", dict(self.init_from))
        self.validate()

    @property
    def start_epoch(self) -> int:
        """The epoch the run starts from: ``init_from["epoch"]``, else 0."""
        return int(self.init_from["epoch"]) if self.init_from is not None else 0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the fix for any invalid value."""
        if self.model not in models.MODEL_NAMES:
            raise ValueError(
                f"unknown model {self.model!r}; set TrainConfig(model=...) to one of: "
                f"{', '.join(models.MODEL_NAMES)}"
            )
        _require_int(self, "epochs", minimum=1, meaning="the number of passes over the training set")
        _require_int(self, "batch_size", minimum=1, meaning="the number of images per step")
        _require_int(self, "checkpoint_every", minimum=1, meaning="save a checkpoint every that many epochs")
        _require_int(self, "eval_batch_size", minimum=1, meaning="the evaluation batch size")
        _require_int(self, "crop_padding", minimum=0, meaning="pixels of zero padding before cropping")
        _require_int(self, "cutout", minimum=0, meaning="the side of the cutout square in pixels (0: none)")
        if self.cutout and not self.augment:
            raise ValueError(f"cutout={self.cutout} is an augmentation: set augment=True, or cutout=0")
        _require_int(self, "seed", minimum=None, meaning="the training seed")
        _require_int(self, "subset_seed", minimum=None, meaning="the seed of the subset draw")
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                _require_int(self, name, minimum=1, meaning="a subset size, or None for the whole split")
        for name in ("nesterov", "augment", "hflip", "amp", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        lr = _require_float(self, "lr")
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}: set TrainConfig(lr=...) to the peak learning rate, e.g. 0.1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"unknown optimizer {self.optimizer!r}; set TrainConfig(optimizer=...) to one of {', '.join(OPTIMIZERS)}"
            )
        if self.optimizer == "sgd":  # Adam ignores momentum and nesterov
            momentum = _require_float(self, "momentum")
            if not 0.0 <= momentum < 1.0:
                raise ValueError(f"momentum must be in [0, 1), got {momentum}; e.g. TrainConfig(momentum=0.9)")
            if self.nesterov and momentum == 0.0:
                raise ValueError("Nesterov momentum needs momentum > 0: set momentum=0.9, or nesterov=False")
        if _require_float(self, "weight_decay") < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= _require_float(self, "label_smoothing") < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {self.schedule!r}; set TrainConfig(schedule=...) to one of {', '.join(SCHEDULES)}"
            )
        warmup = _require_float(self, "warmup_fraction")
        if self.schedule == "onecycle" and not 0.0 < warmup < 1.0:
            raise ValueError(f"the onecycle schedule needs 0 < warmup_fraction < 1, got {warmup}")
        if self.schedule == "cosine" and not 0.0 <= warmup < 1.0:
            raise ValueError(f"the cosine schedule needs 0 <= warmup_fraction < 1, got {warmup}")
        self._validate_snapshot_fields()
        if not isinstance(self.objective_params, dict):
            raise ValueError(f"objective_params must be a dict, got {type(self.objective_params).__name__}")
        try:
            json.dumps(self.objective_params, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"objective_params must be JSON-serialisable (they enter the config hash): {exc}"
            ) from exc
        make_objective(self.objective, self.objective_params)  # unknown name or bad params

    def _validate_snapshot_fields(self) -> None:
        start = 0
        if self.init_from is not None:
            if not isinstance(self.init_from, dict) or set(self.init_from) != {"config_hash", "epoch"}:
                raise ValueError(
                    f"init_from must be None or a dict with exactly the keys 'config_hash' and 'epoch', got "
                    f"{self.init_from!r}; e.g. init_from={{'config_hash': parent.config_hash, 'epoch': 10}}"
                )
            key, start = self.init_from["config_hash"], self.init_from["epoch"]
            if not isinstance(key, str) or len(key) != 20 or any(c not in "0123456789abcdef" for c in key):
                raise ValueError(
                    f"init_from['config_hash'] must be a 20-hex-digit config hash (TrainResult.config_hash), got {key!r}"
                )
            if not isinstance(start, int) or isinstance(start, bool) or start < 0:
                raise ValueError(f"init_from['epoch'] must be an int >= 0 (a kept snapshot's epoch), got {start!r}")
            if start >= self.epochs:
                raise ValueError(
                    f"init_from starts at epoch {start} but epochs={self.epochs}: epochs are numbered on from the "
                    f"snapshot, so set epochs > {start} (the last epoch to train to)"
                )
        if not isinstance(self.keep_epochs, tuple) or not all(
            isinstance(e, int) and not isinstance(e, bool) for e in self.keep_epochs
        ):
            raise ValueError(f"keep_epochs must be a tuple of ints (epochs to keep a snapshot of), got {self.keep_epochs!r}")
        outside = [e for e in self.keep_epochs if not start <= e <= self.epochs]
        if outside:
            raise ValueError(
                f"keep_epochs {outside} lie outside the run's epochs {start}..{self.epochs}; "
                f"keep only epochs in that range (0 is the initialisation)"
            )
        if not isinstance(self.frozen, tuple) or not all(isinstance(f, str) and f for f in self.frozen):
            raise ValueError(
                f"frozen must be a tuple of non-empty parameter-name prefixes (e.g. ('conv1', 'fc')), got {self.frozen!r}"
            )

    def __hash__(self) -> int:  # the generated one would fail on the objective_params dict
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (what checkpoints store)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**values)


def _require_int(cfg: TrainConfig, name: str, minimum: int | None, meaning: str) -> int:
    value = getattr(cfg, name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int ({meaning}), got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum} ({meaning}), got {value}: fix TrainConfig({name}=...)")
    return value


def _require_float(cfg: TrainConfig, name: str) -> float:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _tensor_digest(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().to("cpu").contiguous()
        digest.update(f"{flat.dtype}{tuple(flat.shape)}".encode())
        digest.update(flat.numpy().tobytes())
    return digest.hexdigest()


def _data_identity(data: ImageData) -> dict[str, Any]:
    """What identifies a dataset in the cache key.

    The dataset's name and published ``checksum`` (a digest of the image
    content when the checksum is empty, as for synthetic data), the split sizes
    and image shape, and a digest of the labels (cheap, and it tells apart
    subsets of equal size drawn with different seeds).
    """
    checksum = data.checksum or "content:" + _tensor_digest(data.train_x, data.test_x)
    return {
        "name": data.name,
        "checksum": checksum,
        "train": int(len(data.train_y)),
        "test": int(len(data.test_y)),
        "image_shape": list(data.image_shape),
        "num_classes": int(data.num_classes),
        "labels": _tensor_digest(data.train_y, data.test_y),
    }


def config_hash(cfg: TrainConfig, data: ImageData) -> str:
    """A stable 20-hex-digit key: the config, the dataset's identity and the checkpoint format.

    Stable across processes and machines (canonical JSON, SHA-256); it changes when
    any config field, the dataset's name or checksum, or the split sizes change, and for
    the models of :data:`paramstress.models.INIT_REVISIONS` with their initialisation.
    Note ``1`` and ``1.0`` are different JSON values: keep field types consistent.

    Fields that cannot affect the run are left out: ``optimizer``,
    ``keep_epochs``, ``frozen`` and ``init_from`` at their defaults (so keys from
    before those fields existed are unchanged), ``momentum`` and ``nesterov``
    under Adam, ``warmup_fraction`` under the constant schedule.
    """
    config = cfg.to_dict()
    for name, default in _HASH_OPTIONAL.items():
        if config[name] == default:
            del config[name]
    if cfg.optimizer == "adam":
        del config["momentum"], config["nesterov"]
    if cfg.schedule == "constant":
        del config["warmup_fraction"]
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config,
        "data": _data_identity(data),
    }
    if cfg.model in models.INIT_REVISIONS:  # an initialisation changed since older checkpoints
        payload["init"] = models.INIT_REVISIONS[cfg.model]
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# =========================================================================== results
@dataclasses.dataclass
class EpochStats:
    """One epoch: mean training loss (the objective's logged loss), test accuracy,
    wall-clock seconds (training and evaluation) and the learning rate of its last step."""

    epoch: int
    train_loss: float
    test_accuracy: float
    seconds: float
    lr: float


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns. ``model`` is on the training device, in eval mode.

    ``epochs_trained`` counts the epochs run by this call (0 when the finished
    checkpoint was reused, ``from_cache``); ``resumed_from_epoch`` is the epoch
    training (re)started from: the number of epochs a partial checkpoint already
    held, or ``cfg.start_epoch`` for a fresh start (0 without ``init_from``).
    ``snapshots`` maps each of ``cfg.keep_epochs`` to its snapshot file.
    """

    model: nn.Module
    config: TrainConfig | None  # None: a distributed model, not trained here (pretrained_result)
    history: list[EpochStats]
    final_test_accuracy: float
    config_hash: str
    checkpoint_path: Path | None
    epochs_trained: int
    resumed_from_epoch: int
    from_cache: bool
    snapshots: dict[int, Path] = dataclasses.field(default_factory=dict)


def pretrained_result(model: nn.Module, data: ImageData, *, name: str, batch_size: int = 1000) -> TrainResult:
    """A distributed (pretrained) model in the place of a trained one.

    Sun et al. (2021), Table 1: the ImageNet column corrupts torchvision's ResNet-34 with
    its ImageNet weights as distributed; nothing is trained. The result has ``config``
    ``None``, an empty ``history``, ``from_cache`` true, ``config_hash`` ``"pretrained:<name>"``
    and ``final_test_accuracy`` measured on ``data``'s test split (eval mode). The model is
    moved to ``data``'s device and left in eval mode.
    """
    if len(data.test_y) == 0:
        raise ValueError(f"{data.name} has no test images to evaluate the pretrained {name} on")
    model = model.to(data.device).eval()
    accuracy = evaluate_accuracy(model, data.test_x, data.test_y, data.normalize, batch_size=batch_size)
    return TrainResult(model=model, config=None, history=[], final_test_accuracy=accuracy,
                       config_hash=f"pretrained:{name}", checkpoint_path=None, epochs_trained=0,
                       resumed_from_epoch=0, from_cache=True)


# =========================================================================== helpers
def augment_batch(
    x: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop after zero padding, and optional random horizontal flip, per image.

    ``x`` is a ``B×C×H×W`` batch (any dtype, typically ``uint8``) on any device;
    the random numbers come from ``generator`` (on ``x``'s device) and the result
    has ``x``'s shape, dtype and device. ``padding=0`` and ``hflip=False`` return
    ``x`` unchanged.
    """
    b, c, h, w = x.shape
    device = x.device
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
        rows = dy[:, None] + torch.arange(h, device=device)  # B×H
        cols = dx[:, None] + torch.arange(w, device=device)  # B×W
        x = padded[
            torch.arange(b, device=device)[:, None, None, None],
            torch.arange(c, device=device)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]
    if hflip:
        flip = torch.rand(b, generator=generator, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x


def cutout_batch(x: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017, "Improved regularization of convolutional neural
    networks with cutout", §3): per image, a ``size``×``size`` square centred at a
    uniformly random pixel, clipped where it crosses the border, set to zero.

    Applied to normalised images, zero is the data mean, as in the paper. ``x`` is a
    ``B×C×H×W`` batch on any device; the centres come from ``generator`` (on ``x``'s
    device); the result is a new tensor of ``x``'s shape and dtype (``size=0``: ``x``).
    Vectorised over the batch (torchvision's ``RandomErasing`` draws one box per call,
    the same for every image of a batch tensor).
    """
    if size < 0:
        raise ValueError(f"cutout size must be >= 0, got {size}")
    if size == 0:
        return x
    b, _, h, w = x.shape
    device = x.device
    cy = torch.randint(0, h, (b,), generator=generator, device=device)
    cx = torch.randint(0, w, (b,), generator=generator, device=device)
    top, left = cy - size // 2, cx - size // 2
    rows = torch.arange(h, device=device)[None, :] - top[:, None]  # B×H
    cols = torch.arange(w, device=device)[None, :] - left[:, None]  # B×W
    inside = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]
    return x.masked_fill(inside[:, None], 0)


def evaluate_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    batch_size: int = 1024,
) -> float:
    """Top-1 accuracy of ``model`` on ``uint8`` images ``x`` and labels ``y``.

    Runs in eval mode under ``torch.inference_mode`` on the model's device (the
    model's train/eval mode is restored afterwards); ``normalize`` is typically
    ``data.normalize``.
    """
    if len(y) == 0:
        raise ValueError("evaluate_accuracy needs at least one example")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    try:
        with torch.inference_mode():
            for start in range(0, len(y), batch_size):
                xb = normalize(x[start:start + batch_size].to(device))
                yb = y[start:start + batch_size].to(device)
                correct += (model(xb).argmax(dim=1) == yb).sum()
    finally:
        model.train(was_training)
    return correct.item() / len(y)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`train` (tensors and plain data only)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the fix
        raise RuntimeError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to retrain"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(
            f"checkpoint {path} is not in format {CHECKPOINT_FORMAT} of paramstress.training; delete it to retrain"
        )
    return state


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_data(data: ImageData) -> None:
    for name in ("train_x", "test_x"):
        tensor = getattr(data, name)
        if tensor.dtype != torch.uint8 or tensor.dim() != 4:
            raise ValueError(f"data.{name} must be a uint8 N×C×H×W tensor, got {tensor.dtype} {tuple(tensor.shape)}")
    for name in ("train_y", "test_y"):
        if getattr(data, name).dtype != torch.int64:
            raise ValueError(f"data.{name} must be int64 labels, got {getattr(data, name).dtype}")
    if len(data.train_y) == 0 or len(data.test_y) == 0:
        raise ValueError(
            f"the training and the test split of {data.name!r} must both be non-empty (got "
            f"{len(data.train_y)}/{len(data.test_y)}); an evaluation-only data set such as imagenet-val "
            "is for pretrained models (models.build_model('resnet34_imagenet', ...)), not for train()"
        )


def _check_model(model: nn.Module, cfg: TrainConfig, data: ImageData) -> None:
    channels, height, _ = data.image_shape
    expected = models.parameter_shapes(cfg.model, data.num_classes, channels, height)
    actual = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if actual != expected:
        raise ValueError(
            f"the model passed to train() is not a {cfg.model!r} for {data.num_classes} classes and "
            f"{channels}×{height}×{height} images (its parameters differ); pass "
            f"build_model({cfg.model!r}, {data.num_classes}, {channels}, {height}), or model=None, "
            "or set TrainConfig(model=...) to the model's name"
        )


def _check_schedule(cfg: TrainConfig, total_steps: int) -> None:
    """``OneCycleLR`` divides by zero when its warm-up phase is shorter than one step."""
    if cfg.schedule == "onecycle" and cfg.warmup_fraction * total_steps <= 1:
        raise ValueError(
            f"onecycle with warmup_fraction={cfg.warmup_fraction} over {total_steps} steps has no warm-up "
            "step; train longer, use a smaller batch_size or a larger warmup_fraction, or schedule='cosine'"
        )


def make_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step scheduler: ``OneCycleLR``, linear warm-up then cosine to 0, or constant (``LambdaLR``)."""
    _check_schedule(cfg, total_steps)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, _constant_factor)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=cfg.warmup_fraction,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    warmup_steps = int(round(cfg.warmup_fraction * total_steps))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _constant_factor(step: int) -> float:
    return 1.0


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam (default betas; ``weight_decay`` as L2) over ``params``."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
    )


def frozen_parameter_names(model: nn.Module, prefixes: tuple[str, ...] | list[str]) -> list[str]:
    """Names of ``model``'s parameters that the ``prefixes`` of ``TrainConfig.frozen`` select.

    A prefix selects a parameter whose name equals it or starts with it followed by
    a dot: ``"conv1"`` selects ``conv1.weight`` (and ``conv1.bias``) but not
    ``conv10.weight``; ``"layer1"`` selects the whole first stage; ``"fc.weight"``
    only that tensor. A prefix that selects nothing raises ``ValueError`` listing
    valid layer names (a typo would otherwise silently train everything).
    """
    names = [name for name, _ in model.named_parameters()]
    selected: list[str] = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            layers = sorted({n.rsplit(".", 1)[0] for n in names})
            shown = ", ".join(layers[:12]) + (", ..." if len(layers) > 12 else "")
            raise ValueError(
                f"frozen prefix {prefix!r} matches no parameter of the model; use module paths or "
                f"parameter names such as: {shown}"
            )
        selected.extend(h for h in hits if h not in selected)
    return [n for n in names if n in selected]


def snapshot_path(
    cfg: TrainConfig, data: ImageData, epoch: int, *, checkpoint_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``<checkpoint_dir>/<config_hash>.epoch<epoch>.pt`` (the default checkpoint dir when None)."""
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    return folder / f"{config_hash(cfg, data)}.epoch{epoch}.pt"


def _snapshot_file(folder: Path, key: str, epoch: int) -> Path:
    return folder / f"{key}.epoch{epoch}.pt"


def _normalization(data: ImageData) -> dict[str, list[float]]:
    """The per-channel statistics ``data.normalize`` uses, as stored in every checkpoint."""
    return {"mean": [float(m) for m in data.mean], "std": [float(s) for s in data.std]}


def _check_normalization(state: dict[str, Any], data: ImageData, path: Path) -> None:
    """Refuse a checkpoint whose network saw other normalised inputs than ``data`` gives.

    The cache key identifies the images, not ``data.mean``/``data.std``: these are
    computed from the images, and a float32 reduction once rounded differently with
    the thread count (``paramstress.data.channel_stats``). A checkpoint records the
    statistics it was trained with; one written before it did so is taken as it is.
    """
    stored = state.get("normalization")
    if stored is None:
        return
    current = _normalization(data)
    if stored != current:
        raise RuntimeError(
            f"checkpoint {path} was trained on inputs normalised with mean {stored['mean']} and std "
            f"{stored['std']}, but {data.name!r} now normalises with mean {current['mean']} and std "
            f"{current['std']}; it is stale: delete it to retrain"
        )


def _read_snapshot(path: Path, key: str, epoch: int, fix: str, map_location: str | torch.device,
                   data: ImageData) -> dict[str, Any]:
    """The epoch-``epoch`` snapshot of config ``key``, checked to be that and to have been
    trained on ``data``'s normalisation."""
    if not path.exists():
        raise FileNotFoundError(f"no snapshot of config {key} at epoch {epoch}: {path} does not exist; {fix}")
    state = load_checkpoint(path, map_location=map_location)
    if state.get("kind") != "snapshot" or state.get("config_hash") != key or state.get("epoch") != epoch:
        raise RuntimeError(
            f"{path} is not the epoch-{epoch} snapshot of config {key}; delete it and train that config again"
        )
    _check_normalization(state, data, path)
    return state


def load_snapshot(
    cfg: TrainConfig,
    data: ImageData,
    epoch: int,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """The model of ``cfg`` on ``data`` as it was after ``epoch`` (kept by ``keep_epochs``), in eval mode.

    Builds ``cfg.model`` for ``data`` and loads the weights of
    :func:`snapshot_path`; ``checkpoint_dir`` defaults to
    :func:`default_checkpoint_dir`. An epoch not in ``cfg.keep_epochs`` raises
    ``ValueError``; a missing file raises ``FileNotFoundError`` naming the fix. The
    snapshot's epoch and test accuracy are in ``training.load_checkpoint(path)``.
    """
    if epoch not in cfg.keep_epochs:
        raise ValueError(
            f"epoch {epoch} is not in keep_epochs {cfg.keep_epochs} of this config, so no snapshot of it is "
            f"kept; add it to TrainConfig(keep_epochs=...) and train again"
        )
    path = snapshot_path(cfg, data, epoch, checkpoint_dir=checkpoint_dir)
    fix = (
        f"run training.train(None, data, cfg, checkpoint_dir={str(path.parent)!r}) first "
        "(it writes the snapshots of keep_epochs), or pass the checkpoint_dir it used"
    )
    state = _read_snapshot(path, config_hash(cfg, data), epoch, fix, device, data)
    channels, height, _ = data.image_shape
    model = models.build_model(cfg.model, data.num_classes, channels, height, seed=cfg.seed)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def _snapshots_written(folder: Path | None, key: str, epochs: tuple[int, ...]) -> dict[int, Path]:
    if folder is None:
        return {}
    return {e: _snapshot_file(folder, key, e) for e in epochs if _snapshot_file(folder, key, e).exists()}


# =========================================================================== the loop's phases
#: What a batch source yields: ``(x, y, weight)``; ``weight`` (an int) multiplies the step's
#: logged loss in :attr:`EpochResult.loss_sum` (the batch's examples, or 1 per step).
Batch = tuple[Any, Any, int]


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """Seed torch's global generators (the CPU's and every CUDA device's) with ``seed`` and
    return a new ``torch.Generator`` on ``device`` seeded with ``seed``.

    The loop's random-number policy: the batch order and the augmentation draw from the
    returned generator, objectives and dropout from the global ones. Both are part of every
    checkpoint (:meth:`TrainingLoop.checkpoint`).
    """
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


@dataclasses.dataclass
class EpochResult:
    """What :meth:`TrainingLoop.run_epoch` measured over one epoch.

    ``epoch`` is the epoch's number (absolute: 1 for the first epoch of a fresh run; a
    run that starts from a snapshot of epoch ``e`` numbers on from ``e + 1``).
    ``loss_sum`` is the float64 sum, on the loop's device, of every step's logged loss
    times its batch weight, ``weight`` the sum of the weights and ``steps`` the number of
    optimizer steps; the caller turns them into its mean (:func:`train`: per example,
    ``(loss_sum / weight).item()``; :func:`paramstress.tasks.train_task`: per step,
    ``float(loss_sum) / steps``; the two differ in the last bit on CUDA, where a device
    tensor divided by a Python number is multiplied by its reciprocal). ``last_lr`` is the
    learning rate the epoch's last step used, ``started`` the ``time.perf_counter()`` when
    the epoch began.
    """

    epoch: int
    loss_sum: torch.Tensor
    weight: int
    steps: int
    last_lr: float
    started: float


@dataclasses.dataclass(eq=False)
class TrainingLoop:
    """The one training loop, as phases that :func:`train` and
    :func:`paramstress.tasks.train_task` (and any other trainer) call in this order:

    1. **prepare** (:meth:`prepare`): the optimizer over ``params`` and the per-step
       schedule (:func:`make_optimizer`, :func:`make_scheduler`), with the objective, the
       loss, the batch generator (from :func:`seeded_generator`) and the frozen parameters;
    2. **restore** (:meth:`restore`), when :func:`read_checkpoint` found a partial run:
       weights, optimizer, schedule, the batch generator, torch's global CPU generator (and
       the CUDA one of the loop's device), the objective's state if it has one, the
       history and the number of epochs done;
    3. **one epoch** (:meth:`run_epoch`) over an iterable of :data:`Batch`: per step
       ``optimizer.zero_grad(set_to_none=True)``; ``objective(model, x, y, loss_fn)``
       (forward and backward passes); the gradients of ``frozen`` parameters discarded;
       the global gradient norm of ``params`` clipped to ``clip_norm`` (when > 0);
       ``optimizer.step()``; ``scheduler.step()``;
    4. **evaluate**: the caller's ``record`` (:meth:`run`) evaluates the model and turns
       the :class:`EpochResult` into the epoch's history row (a dict of plain values);
    5. **save** (:meth:`save`): the checkpoint (:meth:`checkpoint`), written atomically.

    :meth:`run` strings 3-5 together for every epoch up to ``epochs``, saving after every
    ``checkpoint_every`` epochs and after the last. Because everything a step depends on
    is restored, a run resumed from a partial checkpoint ends with the same weights and
    history (wall-clock seconds aside) as an uninterrupted one, on the CPU bit for bit.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    objective: Objective
    loss_fn: LossFn
    generator: torch.Generator
    device: torch.device
    params: list[nn.Parameter]
    frozen: dict[str, nn.Parameter] = dataclasses.field(default_factory=dict)
    clip_norm: float = 0.0
    epoch: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    label: str = ""
    fix: str = "lower the learning rate"

    @classmethod
    def prepare(
        cls,
        model: nn.Module,
        cfg: Any,
        *,
        total_steps: int,
        objective: Objective,
        loss_fn: LossFn,
        generator: torch.Generator,
        device: str | torch.device | None = None,
        params: list[nn.Parameter] | None = None,
        frozen: dict[str, nn.Parameter] | None = None,
        clip_norm: float = 0.0,
        start_epoch: int = 0,
        label: str = "",
        fix: str = "lower the learning rate",
    ) -> "TrainingLoop":
        """The loop of a fresh run, ``start_epoch`` epochs done and an empty history.

        ``cfg`` has the optimisation fields of :class:`TrainConfig` (``optimizer``, ``lr``,
        ``momentum``, ``nesterov``, ``weight_decay``, ``schedule``, ``warmup_fraction``);
        the schedule spans ``total_steps`` optimizer steps. ``params`` (default: every
        parameter with ``requires_grad``) are what the optimizer steps and ``clip_norm``
        clips; ``frozen`` (name → parameter, none of them in ``params``) are not trained:
        ``requires_grad`` is off while an epoch runs, their gradients are discarded after
        the objective, and an epoch that moves them raises ``RuntimeError``. ``device``
        (default: the model's) holds the loss sum and names the CUDA generator a checkpoint
        keeps. ``label`` prefixes error messages; ``fix`` is what the non-finite loss's
        message suggests.
        """
        params = [p for p in model.parameters() if p.requires_grad] if params is None else list(params)
        if not params:
            raise ValueError(f"{label or 'the model'}: no parameter to train; unfreeze some")
        optimizer = make_optimizer(params, cfg)
        scheduler = make_scheduler(optimizer, cfg, total_steps)
        device = torch.device(device) if device is not None else next(model.parameters()).device
        return cls(model, optimizer, scheduler, objective, loss_fn, generator, device, params,
                   dict(frozen or {}), float(clip_norm), int(start_epoch), [], label, fix)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue the run a checkpoint (:meth:`checkpoint`, read by :func:`read_checkpoint`)
        holds: weights, optimizer, schedule, batch generator, global generators, objective
        state, history and epochs done."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["rng_cpu"].cpu())
        if self.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        if state.get("objective") is not None and hasattr(self.objective, "load_state_dict"):
            self.objective.load_state_dict(state["objective"])
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])

    def run_epoch(
        self,
        batches: Iterable[Batch],
        *,
        expected_steps: int | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> EpochResult:
        """One epoch: one optimizer step per batch (the class docstring's step 3), the
        model in train mode; ``on_step()`` after each step. Then the epoch counts as done.

        Raises ``RuntimeError`` when the batches were not ``expected_steps`` (the schedule is
        per step) or a frozen parameter moved, and ``FloatingPointError`` when the summed
        loss is not finite; the epoch then does not count and nothing is saved.
        """
        started = time.perf_counter()
        epoch = self.epoch + 1
        frozen = list(self.frozen.items())
        start = [p.detach().clone() for _, p in frozen]
        flags = [p.requires_grad for _, p in frozen]
        self.model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        weight = steps = 0
        last_lr = math.nan
        try:
            for _, p in frozen:
                p.requires_grad_(False)
            for x, y, w in batches:
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.objective(self.model, x, y, self.loss_fn)
                for _, p in frozen:  # no gradient reaches them
                    p.grad = None
                if self.clip_norm > 0:
                    nn.utils.clip_grad_norm_(self.params, self.clip_norm)
                last_lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.step()
                self.scheduler.step()
                loss_sum += loss.detach().double() * w
                weight += w
                steps += 1
                if on_step is not None:
                    on_step()
        finally:
            for (_, p), flag in zip(frozen, flags):
                p.requires_grad_(flag)
        prefix = f"{self.label}: " if self.label else ""
        if expected_steps is not None and steps != expected_steps:
            raise RuntimeError(f"{prefix}epoch {epoch} had {steps} batches, the first had {expected_steps}; "
                               "the batches must be as many every epoch (the schedule is per step)")
        if steps == 0:
            raise ValueError(f"{prefix}epoch {epoch} had no batch; check the training data size")
        if not bool(torch.isfinite(loss_sum)):
            mean = float(loss_sum) / max(weight, 1)
            raise FloatingPointError(f"{prefix}the training loss of epoch {epoch} is {mean}; {self.fix} "
                                     "(the last good checkpoint is kept)")
        moved = [name for (name, p), p0 in zip(frozen, start) if not torch.equal(p, p0)]
        if moved:
            raise RuntimeError(
                f"frozen parameters {moved[:5]} changed during epoch {epoch}: the objective "
                f"{getattr(self.objective, 'name', self.objective)!r} writes to parameters with "
                "requires_grad=False; make it skip them"
            )
        self.epoch = epoch
        return EpochResult(epoch, loss_sum, weight, steps, last_lr, started)

    def checkpoint(self, identity: dict[str, Any], *, finished: bool) -> dict[str, Any]:
        """The checkpoint of the run as it is: ``format`` (:data:`CHECKPOINT_FORMAT`), the
        caller's ``identity`` (``config_hash`` and what else names the run), ``epoch``
        (done), ``finished``, ``history``, ``model``, ``optimizer`` and ``scheduler`` state
        dicts, ``generator`` (the batch generator's state), ``rng_cpu`` and ``rng_cuda``
        (torch's global generators; ``None`` off CUDA), ``objective`` (its
        ``state_dict()`` or ``None``), ``torch_version`` and ``device``. Tensors, dicts,
        lists, strings and numbers only: it loads with ``weights_only=True``."""
        cuda = self.device.type == "cuda"
        return {
            "format": CHECKPOINT_FORMAT,
            **identity,
            "epoch": self.epoch,
            "finished": finished,
            "history": [dict(row) for row in self.history],
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if cuda else None,
            "objective": self.objective.state_dict() if hasattr(self.objective, "state_dict") else None,
            "torch_version": str(torch.__version__),
            "device": str(self.device),
        }

    def save(self, path: str | os.PathLike[str], identity: dict[str, Any], *, finished: bool) -> None:
        """Write :meth:`checkpoint` to ``path`` atomically (a failed write keeps the old file)."""
        atomic_save(self.checkpoint(identity, finished=finished), Path(path))

    def run(
        self,
        epochs: int,
        batches: Callable[[torch.Generator], Iterable[Batch]],
        *,
        record: Callable[[EpochResult], dict[str, Any]],
        checkpoint: str | os.PathLike[str] | None = None,
        identity: dict[str, Any] | None = None,
        checkpoint_every: int = 1,
        expected_steps: int | None = None,
        on_step: Callable[[], None] | None = None,
        after_epoch: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """Train from the epochs done up to ``epochs``. Each epoch: :meth:`run_epoch` over
        ``batches(self.generator)``; ``row = record(result)`` (evaluate, build the row),
        appended to :attr:`history`; ``after_epoch(row)``; with ``checkpoint`` (a path),
        :meth:`save` with ``identity`` after the last epoch (``finished``) and after every
        ``checkpoint_every``-th (0: the last only)."""
        while self.epoch < epochs:
            result = self.run_epoch(batches(self.generator), expected_steps=expected_steps, on_step=on_step)
            row = record(result)
            self.history.append(row)
            if after_epoch is not None:
                after_epoch(row)
            finished = self.epoch >= epochs
            if checkpoint is not None and (finished or (checkpoint_every and self.epoch % checkpoint_every == 0)):
                self.save(checkpoint, identity or {}, finished=finished)


def read_checkpoint(
    path: str | os.PathLike[str] | None,
    key: str,
    *,
    map_location: str | torch.device = "cpu",
    upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """The checkpoint of run ``key`` at ``path`` (:meth:`TrainingLoop.checkpoint`), or
    ``None`` when there is none (or ``path`` is ``None``).

    Read by :func:`load_checkpoint` (an unreadable file or another format raises
    ``RuntimeError`` naming the fix); ``upgrade(state)``, when given, turns an older layout
    of the caller's into this one; a checkpoint of another ``config_hash`` raises
    ``RuntimeError``. Whether it is ``finished`` is the caller's to act on: load the weights
    and stop, or :meth:`TrainingLoop.restore` and go on.
    """
    if path is None or not Path(path).exists():
        return None
    state = load_checkpoint(path, map_location=map_location)
    if upgrade is not None:
        state = upgrade(state)
    if state.get("config_hash") != key:
        raise RuntimeError(f"checkpoint {path} holds config {state.get('config_hash')}, not {key}; delete it")
    return state


def _image_batches(data: ImageData, cfg: TrainConfig, generator: torch.Generator,
                   memory_format: torch.memory_format) -> Iterator[Batch]:
    """One epoch of :func:`train`'s batches: a permutation drawn from ``generator`` sliced
    into ``cfg.batch_size`` images, augmented on the device, normalised, cut out."""
    n_train = len(data.train_y)
    order = torch.randperm(n_train, generator=generator, device=generator.device)
    for start in range(0, n_train, cfg.batch_size):
        index = order[start:start + cfg.batch_size]
        xb = data.train_x[index]
        yb = data.train_y[index]
        if cfg.augment:
            xb = augment_batch(xb, cfg.crop_padding, cfg.hflip, generator)
        xb = data.normalize(xb)
        if cfg.cutout:  # > 0 only with augment (TrainConfig checks)
            xb = cutout_batch(xb, cfg.cutout, generator)
        yield xb.contiguous(memory_format=memory_format), yb, len(index)


# =========================================================================== train: images
def train(
    model: nn.Module | None,
    data: ImageData,
    cfg: TrainConfig,
    *,
    device: str | torch.device | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    objective: Objective | None = None,
) -> TrainResult:
    """Train ``model`` on ``data`` as ``cfg`` says, or load the cached result.

    ``model=None`` builds ``cfg.model`` for the data, initialised from ``cfg.seed`` (and,
    for a network with an ``init_from_data(train_x, normalize)`` method such as
    ``airbench_cifar``, from the training images: its whitening filters; a run from
    ``cfg.init_from`` takes the snapshot's weights instead);
    a given model must have ``cfg.model``'s architecture (checked, so that the cache
    key is honest) and is trained in place. ``device`` defaults to CUDA when
    available. With ``checkpoint_dir``, ``<dir>/<config_hash>.pt`` is loaded if
    finished (no training), resumed if partial, and written atomically every
    ``cfg.checkpoint_every`` epochs and at the end. ``objective`` overrides the
    one built from ``cfg.objective``/``cfg.objective_params`` (for instance a
    stateful instance); its ``name`` must equal ``cfg.objective``.

    ``cfg.keep_epochs`` and ``cfg.init_from`` need ``checkpoint_dir`` (snapshots
    live next to the checkpoints); with ``cfg.init_from`` a given model's weights
    are replaced by the snapshot's. ``cfg.frozen`` parameters are not trained (see
    the module docstring); the model's ``requires_grad`` flags are restored on return.

    The epochs run through :class:`TrainingLoop` (batches of :func:`augment_batch` /
    :func:`cutout_batch` images weighted by their size, the history's ``train_loss`` the
    mean per example, ``lr`` that of the epoch's last step, ``test_accuracy`` from
    :func:`evaluate_accuracy` after every epoch); its checkpoint's identity adds the
    config, the data's provenance and its normalisation. The caller's global
    random-number state is left as it was.

    Everything is validated before any compute; a non-finite epoch loss raises
    ``FloatingPointError`` (lower ``lr``) without overwriting the last checkpoint.
    """
    cfg.validate()
    _check_data(data)
    if objective is None:
        objective = make_objective(cfg.objective, cfg.objective_params)
    elif getattr(objective, "name", None) != cfg.objective:
        raise ValueError(
            f"the objective passed is named {getattr(objective, 'name', None)!r} but cfg.objective is "
            f"{cfg.objective!r}; set TrainConfig(objective=...) to its name so checkpoints stay distinct"
        )
    key = config_hash(cfg, data)
    if checkpoint_dir is None and (cfg.keep_epochs or cfg.init_from is not None):
        field = "keep_epochs" if cfg.keep_epochs else "init_from"
        raise ValueError(
            f"TrainConfig({field}=...) needs snapshot files: pass train(..., checkpoint_dir=...) "
            "(e.g. training.default_checkpoint_dir())"
        )
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else None
    channels, height, _ = data.image_shape
    built = model is None
    if built:
        model = models.build_model(cfg.model, data.num_classes, channels, height, seed=cfg.seed)
    else:
        _check_model(model, cfg, data)
    frozen_names = frozen_parameter_names(model, cfg.frozen)
    if frozen_names and len(frozen_names) == len(list(model.parameters())):
        raise ValueError(f"frozen={cfg.frozen} freezes every parameter of {cfg.model}; leave some to train")
    init_state = None
    if cfg.init_from is not None and not (folder / f"{key}.pt").exists():
        parent, init_epoch = cfg.init_from["config_hash"], cfg.init_from["epoch"]
        init_state = _read_snapshot(
            _snapshot_file(folder, parent, init_epoch), parent, init_epoch,
            f"train the parent config with keep_epochs including {init_epoch} and "
            f"checkpoint_dir={str(folder)!r} first", "cpu", data,
        )
        if init_state["config"]["model"] != cfg.model:
            raise ValueError(
                f"init_from names a snapshot of a {init_state['config']['model']!r}, but cfg.model is "
                f"{cfg.model!r}; set TrainConfig(model=...) to the parent's model"
            )
    if cfg.train_subset is not None or cfg.test_subset is not None:
        data = data.subset(cfg.train_subset, cfg.test_subset, seed=cfg.subset_seed)
    if built and init_state is None and callable(getattr(model, "init_from_data", None)):
        # a data-dependent initialisation (airbench_cifar's whitening filters): before any
        # checkpoint is read, which replaces it; deterministic given the data
        model.init_from_data(data.train_x, data.normalize)
    steps_per_epoch = math.ceil(len(data.train_y) / cfg.batch_size)
    first_epoch = cfg.start_epoch
    total_steps = (cfg.epochs - first_epoch) * steps_per_epoch
    _check_schedule(cfg, total_steps)

    device = torch.device(device) if device is not None else _default_device()
    cuda = device.type == "cuda"
    memory_format = torch.channels_last if cuda and cfg.channels_last else torch.contiguous_format
    if init_state is not None:
        model.load_state_dict(init_state["model"])
    model.to(device=device, memory_format=memory_format)
    path = folder / f"{key}.pt" if folder is not None else None
    rng_devices = [device.index if device.index is not None else torch.cuda.current_device()] if cuda else []

    with torch.random.fork_rng(devices=rng_devices):  # the caller's global RNG is left untouched
        state = read_checkpoint(path, key, map_location=device)
        if state is not None:
            _check_normalization(state, data, path)
            if state["finished"]:
                return _cached_result(model, cfg, key, path, state, folder)
        named = dict(model.named_parameters())
        loop = TrainingLoop.prepare(
            model, cfg, total_steps=total_steps, objective=objective,
            loss_fn=BatchLoss(nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing), device.type,
                              torch.bfloat16 if (cuda and cfg.amp) else None),
            generator=seeded_generator(cfg.seed, device), device=device,
            # frozen parameters are not given to the optimizer: nothing (weight decay, momentum, Adam state) moves them
            params=[p for n, p in named.items() if n not in frozen_names],
            frozen={n: named[n] for n in frozen_names}, start_epoch=first_epoch, fix="lower TrainConfig(lr=...)",
        )
        if state is not None:
            loop.restore(state)
        start_epoch = loop.epoch
        data = data.to(device)
        # what every checkpoint and snapshot records about the run and the data it was trained on
        identity = {
            "config_hash": key,
            "config": cfg.to_dict(),
            "data": json.loads(json.dumps(data.provenance(), default=str)),
            "normalization": _normalization(data),
        }

        def accuracy() -> float:
            return evaluate_accuracy(model, data.test_x, data.test_y, data.normalize, cfg.eval_batch_size)

        def keep_snapshot(epoch: int, test_accuracy: float) -> None:
            atomic_save(
                {
                    "format": CHECKPOINT_FORMAT,
                    "kind": "snapshot",
                    **identity,
                    "epoch": epoch,
                    "test_accuracy": test_accuracy,
                    "model": model.state_dict(),
                    "torch_version": str(torch.__version__),
                    "device": str(device),
                },
                _snapshot_file(folder, key, epoch),
            )

        def record(result: EpochResult) -> dict[str, Any]:
            test_accuracy = accuracy()
            return dataclasses.asdict(EpochStats(
                epoch=result.epoch, train_loss=(result.loss_sum / result.weight).item(), test_accuracy=test_accuracy,
                seconds=time.perf_counter() - result.started, lr=float(result.last_lr),
            ))

        from tqdm import tqdm  # plain text bars: readable in papermill logs and notebooks

        bar = tqdm(total=total_steps, initial=(start_epoch - first_epoch) * steps_per_epoch,
                   disable=not progress, desc=f"train {cfg.model}", unit="step")

        def after_epoch(row: dict[str, Any]) -> None:
            bar.set_postfix(epoch=row["epoch"], loss=f"{row['train_loss']:.4f}", acc=f"{row['test_accuracy']:.4f}")
            if row["epoch"] in cfg.keep_epochs:
                keep_snapshot(row["epoch"], row["test_accuracy"])

        try:
            if start_epoch == first_epoch and first_epoch in cfg.keep_epochs:
                keep_snapshot(first_epoch, accuracy())
            loop.run(cfg.epochs, lambda generator: _image_batches(data, cfg, generator, memory_format),
                     record=record, checkpoint=path, identity=identity, checkpoint_every=cfg.checkpoint_every,
                     on_step=lambda: bar.update(1), after_epoch=after_epoch)
        finally:
            bar.close()

    model.eval()
    history = [EpochStats(**row) for row in loop.history]
    return TrainResult(
        model, cfg, history, history[-1].test_accuracy, key, path,
        epochs_trained=cfg.epochs - start_epoch, resumed_from_epoch=start_epoch, from_cache=False,
        snapshots=_snapshots_written(folder, key, cfg.keep_epochs),
    )


def _cached_result(model: nn.Module, cfg: TrainConfig, key: str, path: Path, state: dict[str, Any],
                   folder: Path) -> TrainResult:
    """:func:`train`'s result from a finished checkpoint (its snapshots must all be there)."""
    model.load_state_dict(state["model"])
    snapshots = _snapshots_written(folder, key, cfg.keep_epochs)
    missing = sorted(set(cfg.keep_epochs) - set(snapshots))
    if missing:
        raise FileNotFoundError(
            f"the snapshots of epochs {missing} of finished run {key} are missing from {folder}; "
            f"delete {path} to train again (that rewrites every snapshot)"
        )
    model.eval()
    history = [EpochStats(**row) for row in state["history"]]
    return TrainResult(
        model, cfg, history, history[-1].test_accuracy, key, path,
        epochs_trained=0, resumed_from_epoch=int(state["epoch"]), from_cache=True, snapshots=snapshots,
    )


def _train_job(cfg: TrainConfig, rebuild: Callable[[], ImageData], identity: dict[str, Any], device: str | None,
               checkpoint_dir: str, registers: str) -> dict[str, Any]:
    """One :func:`train_many` job in a worker process: import the module that registers the
    objective (a fresh process has only the built-in one), rebuild the data, check it is the
    caller's, train (or find the finished checkpoint) and say which."""
    import importlib

    importlib.import_module(registers)
    data = rebuild()
    if _data_identity(data) != identity:
        raise ValueError(f"{data.name}: the data rebuilt in the worker process differ from the caller's "
                         f"({_data_identity(data)} vs {identity}); point every process at the same data "
                         "(PARAMSTRESS_DATA / PARAMSTRESS_DATA_MIRROR) and give a rebuild that makes the "
                         "caller's split")
    result = train(None, data, cfg, device=device, checkpoint_dir=checkpoint_dir, progress=False)
    return {"from_cache": result.from_cache, "epochs_trained": result.epochs_trained,
            "resumed_from_epoch": result.resumed_from_epoch}


def train_many(data: ImageData, configs: Sequence[TrainConfig], *, checkpoint_dir: str | os.PathLike[str] | None,
               rebuild: Callable[[], ImageData] | None = None, workers: int = 1, threads: int | None = None,
               cluster: str | None = None, gpus_per_job: float | None = None,
               device: str | torch.device | None = None, progress: bool = False) -> list[TrainResult]:
    """``[train(None, data, cfg, ...) for cfg in configs]``: independent trainings (trainers ×
    seeds) through the one job executor, :func:`paramstress.engine.workers.run_jobs`.

    ``workers=1`` without a cluster trains one after another in this process, exactly that
    list comprehension. With ``workers > 1`` (a local Ray instance) or a ``cluster`` (or
    ``$PARAMSTRESS_RAY_CLUSTER``), each configuration is a job: the worker process calls
    ``rebuild()`` to make the data itself (jobs carry names and small tables, never the
    data: ``rebuild`` is a picklable zero-argument callable, e.g.
    ``functools.partial(data.load, "mnist")``; default: load ``data.name``), checks that they
    are the caller's (name, checksum, sizes, label digest: the cache key's data identity),
    trains, and writes the checkpoint into ``checkpoint_dir``; this process then reads each
    finished checkpoint back (a shared path on a cluster). The models and histories equal
    the serial run's (the same code on the same data, with ``threads`` intra-op threads per
    job: pin the caller to the same count), and ``from_cache`` / ``epochs_trained`` say what
    the worker did. ``device`` ``None`` lets each process pick its own (CUDA where it has one). Everything is checked before any training: the configurations, the
    executor's arguments, and that the parallel path has a checkpoint folder.
    """
    from paramstress.engine import workers as W

    configs = list(configs)
    for cfg in configs:
        if not isinstance(cfg, TrainConfig):
            raise TypeError(f"configs must be TrainConfig objects, got {type(cfg).__name__}")
        cfg.validate()
        make_objective(cfg.objective, cfg.objective_params)  # a registered name and parameters it accepts
    if not W.runs_remotely(workers, len(configs), cluster):
        return [train(None, data, cfg, device=device, checkpoint_dir=checkpoint_dir, progress=progress)
                for cfg in configs]
    if rebuild is None:
        if data.source == "synthetic":
            raise ValueError(f"{data.name} is synthetic (built in this process): give rebuild=, a picklable "
                             "callable that makes the same data in a worker, or use workers=1")
        from paramstress.engine import data as D

        rebuild = functools.partial(D.load, data.name)
    identity = _data_identity(data)  # once: every job trains on the same data
    jobs = [dict(cfg=cfg, rebuild=rebuild, identity=identity, device=None if device is None else str(device),
                 checkpoint_dir=str(checkpoint_dir), registers=_OBJECTIVES[cfg.objective].__module__)
            for cfg in configs]
    return train_in_workers(
        _train_job, jobs, lambda i: train(None, data, configs[i], device=device, checkpoint_dir=checkpoint_dir,
                                          progress=False),
        cached="from_cache", checkpoint_dir=checkpoint_dir, workers=workers, threads=threads, cluster=cluster,
        gpus_per_job=gpus_per_job, progress=progress,
        labels=[f"{cfg.model} {cfg.objective} seed {cfg.seed}" for cfg in configs])


def train_in_workers(fn: Callable[..., dict[str, Any]], jobs: Sequence[dict[str, Any]], read_back: Callable[[int], Any],
                     *, cached: str, checkpoint_dir: str | os.PathLike[str] | None, labels: Sequence[str],
                     workers: int, threads: int | None = None, cluster: str | None = None,
                     gpus_per_job: float | None = None, progress: bool = False) -> list[Any]:
    """Trainings as jobs of :func:`paramstress.engine.workers.run_jobs` whose models come back
    through ``checkpoint_dir`` (:func:`train_many`, :func:`paramstress.tasks.train_tasks`).

    ``fn(**job)`` trains in a worker process and returns the fields of the result that say
    what it did (e.g. ``{"from_cache": False, ...}``); then ``read_back(i)`` loads job ``i``'s
    finished checkpoint here, which must be found (its ``cached`` attribute true: otherwise
    the folder is not shared with the workers, and it would have trained again here), and
    those fields are set on it. Refused before any job starts without a checkpoint folder."""
    from paramstress.engine import workers as W

    if checkpoint_dir is None:
        raise ValueError("training in worker processes needs checkpoint_dir: the trained models come back through "
                         "it (training.default_checkpoint_dir(), a shared path on a cluster); or use workers=1")
    done = W.run_jobs(fn, jobs, workers=workers, threads=threads, cluster=cluster, gpus_per_job=gpus_per_job,
                      progress=progress, labels=labels)
    results = []
    for i, (label, what) in enumerate(zip(labels, done)):
        back = read_back(i)
        if not getattr(back, cached):
            raise RuntimeError(f"{label}: the checkpoint a worker wrote is not in {checkpoint_dir} here (trained "
                               "again in this process); put checkpoint_dir on a path every node shares")
        results.append(dataclasses.replace(back, **what))
    return results
