"""Tasks: one interface for every column of Sun et al. (2021), Tables 1-2.

The paper corrupts the parameters of image classifiers (ResNet-34 on ImageNet and
CIFAR-10) *and* of three NLP models (§4, "Experimental Settings"): an LSTM language
model on PTB (log perplexity), a neural transition-based dependency parser on PTB
(UAS) and a Transformer translating German to English (BLEU). A :class:`Task` says
what differs between them — the model, the data, the training loss, the data ``D``
of Algorithm 2's gradient and the metric — so that the rest is shared:

* :func:`train_task` — the engine's training loop (:class:`paramstress.training.TrainingLoop`,
  the one :func:`paramstress.training.train` runs) with the task's model, batches, loss and
  evaluation, and the shared objectives (cross-entropy, the corruption-resistant Eqs. 13/16,
  AWP, SAM, ...); its checkpoints are the engine's, cached by a hash of the config and the task;
* :func:`task_gradient` — Algorithm 2, step 1 (``g = ∂L(w; D)/∂w``, computed once);
* :func:`task_corruption_sweep` — Table 1 / Fig. 3 through the shared sweep engine
  (:func:`paramstress.corruption.sweeps.corruption_sweep` with the task's evaluator), one tidy row
  per grid point, weights restored bit-identically;
* :func:`task_corrupted_scores` — Table 2's corrupted columns (gradient-based, ``L_2``,
  ``n = k``) for any task;
* :func:`task_corrupted_units` — the same corruption with the per-unit sufficient
  statistics behind each score (:meth:`Task.evaluate_units`), what a paired bootstrap over
  test units resamples (:func:`paramstress.bootstrap.task_significance`);
  :func:`task_corrupted_outputs` is its general form (any per-evaluation output, e.g. De-En's
  translations).

The image tasks keep their tensor-based path (:func:`paramstress.training.train`,
:func:`paramstress.sweep.evaluate` with augmentation on the device and bf16), and their
sweeps produce the same tidy rows, so one Table 1 (:func:`paramstress.tables.table1`)
holds image and text columns side by side.
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from paramstress.corruption import operators as C
from paramstress.corruption import objectives as _objectives  # noqa: F401  (registers the Table 2 objectives)
from paramstress.corruption.sweeps import CORRUPTION_METHODS, corruption_sweep
from paramstress.engine.training import (
    EpochResult,
    TrainingLoop,
    default_checkpoint_dir,
    make_objective,
    objective_names,
    read_checkpoint,
    seeded_generator,
    train_in_workers,
)

__all__ = [
    "Task",
    "TaskTrainConfig",
    "TaskTrainResult",
    "task_config_hash",
    "train_task",
    "train_tasks",
    "task_gradient",
    "task_corruption_sweep",
    "task_corrupted_scores",
    "task_corrupted_outputs",
    "task_corrupted_units",
    "has_unit_statistics",
    "TASKS",
    "build_task",
]


class Task(abc.ABC):
    """One task of Tables 1-2: model, data, training loss, gradient data and metric.

    Subclasses set the class attributes and implement the abstract methods:

    ``key`` / ``label``
        a short identifier (``"ptb-lm"``) and the table's column label (``"PTB-LM"``).
    ``metric`` / ``metric_label`` / ``higher_is_better``
        the score :meth:`evaluate` returns (``"log_ppl"`` / ``"Log PPL"`` / ``False``).
    ``device``
        where the task's tensors and models live.

    Optional, for a paired bootstrap over test units (:mod:`paramstress.bootstrap`): a task
    whose score is a function of summed per-unit statistics sets ``units`` (what a unit is,
    plural: ``"sentences"``) and implements :meth:`evaluate_units` and :meth:`combine`
    (:func:`has_unit_statistics` says whether a task does). ``decimals``: how many decimals
    a verdict prints of the metric's differences.
    """

    key: ClassVar[str]
    label: ClassVar[str]
    metric: ClassVar[str]
    metric_label: ClassVar[str]
    higher_is_better: ClassVar[bool]
    units: ClassVar[str | None] = None
    decimals: ClassVar[int] = 2
    device: torch.device

    @abc.abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """A fresh model initialised from ``seed``, on :attr:`device`."""

    @abc.abstractmethod
    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[Any, Any]]:
        """One epoch of training batches ``(x, y)`` on the device, in an order drawn from ``generator``.
        The number of batches must be the same every epoch (the schedule is per step)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: Any, y: Any) -> torch.Tensor:
        """The batch-mean training loss (what the shared objectives call as ``loss_fn``)."""

    @abc.abstractmethod
    def gradient_batches(self) -> Iterable[tuple[Any, Any, int]]:
        """Algorithm 2's data ``D``: ``(x, y, count)``, ``count`` the units the batch mean is over."""

    def gradient_loss(self, model: nn.Module, x: Any, y: Any) -> torch.Tensor:
        """The batch-mean loss whose gradient is ``g`` (default: the training loss)."""
        return self.loss(model, x, y)

    @abc.abstractmethod
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{metric: value, "loss": mean per-unit loss}`` on the evaluation split (eval mode,
        inference mode, every module's train flag restored; never raises on non-finite outputs)."""

    def evaluate_units(self, model: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """Optional: :meth:`evaluate`'s metrics and the per-unit sufficient statistics of the
        metric on the same evaluation, an ``(n_units, k)`` float64 array whose rows
        :meth:`combine` turns into the metric: ``combine(stats) == metrics[metric]`` (to
        rounding), and ``combine(stats[idx])`` is the metric of a resample ``idx`` of the units."""
        raise NotImplementedError(f"{type(self).__name__} has no per-unit statistics: implement evaluate_units "
                                  "and combine (and set units) to test it by a paired bootstrap")

    def combine(self, unit_stats: np.ndarray) -> float:
        """Optional, with :meth:`evaluate_units`: the metric of per-unit statistics ``(n, k)``
        (their column sums; an already summed ``(k,)`` vector is accepted)."""
        raise NotImplementedError(f"{type(self).__name__} has no per-unit statistics: implement evaluate_units "
                                  "and combine (and set units) to test it by a paired bootstrap")

    def reference_scores(self) -> dict[str, float]:
        """Scores of trivial baselines on the evaluation split, in the task's metric, for the
        page to show beside the model's (e.g. a unigram model's log perplexity); none by default."""
        return {}

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """JSON-able: what defines the trained weights besides the train config (data checksum,
        split sizes, vocabulary, model hyper-parameters). Enters the checkpoint key."""

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """``{"dataset", "source", "checksum", ...}`` for the notebook's provenance table."""


def has_unit_statistics(task: Any) -> bool:
    """Whether ``task`` (a :class:`Task`) gives per-unit statistics: it sets ``units`` and
    overrides both :meth:`Task.evaluate_units` and :meth:`Task.combine`."""
    cls = type(task)
    return (isinstance(task, Task) and bool(getattr(task, "units", None))
            and cls.evaluate_units is not Task.evaluate_units and cls.combine is not Task.combine)


#: The text tasks of Sun et al.'s Tables 1-2: key → (module, class). Imported on use, so
#: that ``import paramstress.tasks`` does not pull in NLTK or fairseq.
TASKS: dict[str, tuple[str, str]] = {
    "ptb-lm": ("language_model", "PTBLanguageModelTask"),
    "ptb-parsing": ("parser", "PTBParsingTask"),
    "de-en": ("translation", "DeEnTranslationTask"),
}


def build_task(key: str, *, device: str | torch.device = "cpu", **params: Any) -> Task:
    """The task ``key`` of :data:`TASKS` built with its keyword ``params`` (plain values
    from a profile) on ``device``. An unknown key, or a parameter the task does not
    take, fails here, before any data is read."""
    import importlib
    import inspect

    if key not in TASKS:
        raise ValueError(f"unknown task {key!r}; choose from {', '.join(TASKS)}")
    module, name = TASKS[key]
    cls = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"task {key!r} takes no parameter(s) {unknown}; its parameters are "
                         f"{sorted(n for n in accepted if n != 'device')}")
    return cls(device=device, **params)


# --------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class TaskTrainConfig:
    """How :func:`train_task` trains a task's model; every field enters the cache key.

    ``optimizer`` ``"sgd"`` (``momentum``, Nesterov when ``nesterov``) or ``"adam"``;
    ``lr`` the peak of the per-step ``schedule`` (``"constant"``, ``"cosine"`` with a
    linear warm-up over ``warmup_fraction`` of the steps, or ``"onecycle"``), as in
    :class:`paramstress.training.TrainConfig`. ``clip_norm`` clips the global
    gradient norm before each step (0: off; LSTMs and Transformers are trained with
    it). ``objective`` names a registered objective of :mod:`paramstress.training`
    (``objective_params`` its arguments), so the corruption-resistant trainers of
    Table 2 run on text tasks unchanged. ``eval_every``: evaluate on the task's
    evaluation split after every that many epochs (0: after the last only).
    """

    epochs: int = 10
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_fraction: float = 0.1
    clip_norm: float = 0.0
    seed: int = 0
    objective: str = "cross_entropy"
    objective_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_every: int = 0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            problems.append(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("sgd", "adam"):
            problems.append(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "onecycle"):
            problems.append(f"schedule must be 'constant', 'cosine' or 'onecycle', got {self.schedule!r}")
        if not 0.0 <= float(self.warmup_fraction) < 1.0:
            problems.append(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if not (float(self.clip_norm) >= 0.0):
            problems.append(f"clip_norm must be >= 0 (0: no clipping), got {self.clip_norm!r}")
        if float(self.weight_decay) < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        for name in ("eval_every", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{name} must be a non-negative integer, got {value!r}")
        if self.objective not in objective_names():
            problems.append(f"unknown objective {self.objective!r}; registered: {', '.join(objective_names())} "
                            "(import paramstress.objectives for the corruption-resistant ones)")
        if problems:
            raise ValueError("TaskTrainConfig: " + "; ".join(problems))

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TaskTrainResult:
    """A trained task model: the model (eval mode), per-epoch history, cache key and file."""

    model: nn.Module
    history: list[dict[str, float]]
    config: TaskTrainConfig
    config_hash: str
    checkpoint: Path | None
    loaded: bool  # True when read from a finished checkpoint (no training ran)

    @property
    def final(self) -> dict[str, float]:
        """The last evaluated epoch's metrics."""
        rows = [row for row in self.history if "eval_loss" in row]
        return rows[-1] if rows else {}

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.history)


#: The format number in :func:`task_config_hash` (the key of every cached task model: it stays
#: 1). The files themselves are the engine's checkpoints, checked against
#: :data:`paramstress.training.CHECKPOINT_FORMAT`.
TASK_CHECKPOINT_FORMAT = 1


def task_config_hash(cfg: TaskTrainConfig, task: Task) -> str:
    """A stable 20-hex-digit key: the config, the task's identity and the checkpoint format."""
    payload = {"format": TASK_CHECKPOINT_FORMAT, "task": type(task).__name__, "key": task.key,
               "config": cfg.to_dict(), "identity": task.identity()}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _evaluated(task: Task, model: nn.Module) -> dict[str, float]:
    scores = task.evaluate(model)
    return {f"eval_{k}" if k == "loss" else k: float(v) for k, v in scores.items()}


def _shared_layout(state: dict[str, Any], key: str, cfg: TaskTrainConfig, device: torch.device) -> dict[str, Any]:
    """``state`` in the engine's layout (:meth:`paramstress.training.TrainingLoop.checkpoint`).

    A task checkpoint of the same format number whose random-number states sit under one
    ``"rng"`` key (``{"torch", "generator", "cuda": every CUDA device's}``), with no
    ``config_hash`` or ``finished``, holds the same data under other names: it is renamed
    (``finished``: ``epoch >= cfg.epochs``; the CUDA state of ``device`` only). A checkpoint
    in the engine's layout is returned as it is."""
    if "rng" not in state or "rng_cpu" in state:
        return state
    rng = state["rng"]
    cuda = None
    if device.type == "cuda" and rng.get("cuda") is not None:
        cuda = rng["cuda"][device.index if device.index is not None else torch.cuda.current_device()]
    return {"format": state["format"], "config_hash": key, "config": state["config"], "identity": state["identity"],
            "epoch": state["epoch"], "finished": state["epoch"] >= cfg.epochs, "history": state["history"],
            "model": state["model"], "optimizer": state["optimizer"], "scheduler": state["scheduler"],
            "generator": rng["generator"], "rng_cpu": rng["torch"], "rng_cuda": cuda, "objective": None}


def train_task(
    task: Task,
    cfg: TaskTrainConfig,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> TaskTrainResult:
    """Train ``task``'s model as ``cfg`` says, or load the cached result.

    The loop is the engine's (:class:`paramstress.training.TrainingLoop`), with the
    task's parts: ``task.build_model(cfg.seed)``; torch's global generators seeded with
    ``cfg.seed`` and each epoch's batches from ``task.train_batches`` drawn with a CPU
    generator seeded with ``cfg.seed``; per step the objective (``cfg.objective``)
    computes the loss through ``task.loss`` and leaves the gradients, the global gradient
    norm of the trainable parameters is clipped to ``cfg.clip_norm``, the optimizer and
    the per-step schedule step. The history's ``train_loss`` is the mean over the epoch's
    steps, ``lr`` the schedule's rate after its last step; after ``cfg.eval_every`` epochs
    and after the last, ``task.evaluate`` adds the metric and ``eval_loss``. A non-finite
    training loss raises ``FloatingPointError`` (lower ``lr`` or clip) without overwriting
    the last checkpoint. The caller's global generators are not restored afterwards (as
    :func:`paramstress.training.train` does): they are left where training left them.

    With ``checkpoint_dir`` (default :func:`paramstress.training.default_checkpoint_dir`;
    ``False``-y paths are not allowed, pass a folder), ``task-<hash>.pt`` is loaded when
    finished, resumed when partial (model, optimizer, schedule and random-number
    generators restored, so a resumed run ends with the same weights on the CPU), and
    written atomically after every ``cfg.checkpoint_every`` epochs and at the end. Its
    contents are the engine's checkpoint (:meth:`paramstress.training.TrainingLoop.checkpoint`)
    whose identity is ``config_hash``, ``config`` and ``task.identity()`` as ``identity``.
    """
    if not isinstance(task, Task):
        raise TypeError(f"train_task needs a paramstress.tasks.Task, got {type(task).__name__}")
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir()
    key = task_config_hash(cfg, task)
    path = folder / f"task-{key}.pt"
    model = task.build_model(cfg.seed)
    device = torch.device(task.device)
    state = read_checkpoint(path, key, map_location=task.device,
                            upgrade=lambda old: _shared_layout(old, key, cfg, device))
    if state is not None and state["finished"]:
        model.load_state_dict(state["model"])
        model.eval()
        return TaskTrainResult(model, state["history"], cfg, key, path, loaded=True)

    generator = seeded_generator(cfg.seed, "cpu")
    steps_per_epoch = sum(1 for _ in task.train_batches(torch.Generator().manual_seed(cfg.seed)))
    if steps_per_epoch == 0:
        raise ValueError(f"{task.label}: train_batches yielded no batch; check the training data size")
    loop = TrainingLoop.prepare(model, cfg, total_steps=cfg.epochs * steps_per_epoch,
                                objective=make_objective(cfg.objective, cfg.objective_params), loss_fn=task.loss,
                                generator=generator, device=device, clip_norm=cfg.clip_norm, label=task.label,
                                fix="lower lr or set clip_norm")
    if state is not None:
        loop.restore(state)

    def record(result: EpochResult) -> dict[str, float]:
        row: dict[str, float] = {"epoch": result.epoch, "train_loss": float(result.loss_sum) / result.steps,
                                 "lr": loop.scheduler.get_last_lr()[0]}
        if result.epoch == cfg.epochs or (cfg.eval_every and result.epoch % cfg.eval_every == 0):
            row.update(_evaluated(task, model))
        row["seconds"] = time.perf_counter() - result.started
        return row

    def report(row: dict[str, float]) -> None:
        if progress:
            print(f"{task.label} epoch {row['epoch']}/{cfg.epochs}: " +
                  ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch"), flush=True)

    loop.run(cfg.epochs, lambda g: ((x, y, 1) for x, y in task.train_batches(g)), record=record,
             checkpoint=path, identity={"config_hash": key, "config": cfg.to_dict(), "identity": task.identity()},
             checkpoint_every=cfg.checkpoint_every, expected_steps=steps_per_epoch, after_epoch=report)
    model.eval()
    return TaskTrainResult(model, loop.history, cfg, key, path, loaded=False)


# --------------------------------------------------------------------------- corruption
def _train_task_job(key: str, params: dict[str, Any], identity: Any, cfg: TaskTrainConfig, device: str,
                    checkpoint_dir: str) -> dict[str, bool]:
    """One :func:`train_tasks` job in a worker process: build the task from its key and
    parameters, check it is the caller's, train (or find the finished checkpoint); whether it
    was loaded."""
    task = build_task(key, device=device, **params)
    if task.identity() != identity:
        raise ValueError(f"{key}: the task built in the worker process differs from the caller's "
                         f"({task.identity()} vs {identity}); point every process at the same data "
                         "(PARAMSTRESS_DATA / PARAMSTRESS_DATA_MIRROR) and pass the parameters the task was built with")
    return {"loaded": train_task(task, cfg, checkpoint_dir=checkpoint_dir).loaded}


def train_tasks(tasks: Mapping[str, Task], jobs: Sequence[tuple[str, TaskTrainConfig]], *,
                params: Mapping[str, Mapping[str, Any]], checkpoint_dir: str | os.PathLike[str] | None,
                workers: int = 1, threads: int | None = None, cluster: str | None = None,
                gpus_per_job: float | None = None, progress: bool = False) -> list[TaskTrainResult]:
    """``[train_task(tasks[key], cfg, ...) for key, cfg in jobs]`` through the one job executor
    (:func:`paramstress.engine.workers.run_jobs`), the text counterpart of
    :func:`paramstress.engine.training.train_many`.

    ``workers=1`` without a cluster is that loop in this process. Otherwise each job runs in
    a Ray worker, which builds the task itself (:func:`build_task` with ``params[key]``, the
    plain values the task was built with; jobs carry names and small tables, never data),
    checks its identity against the caller's, trains and writes the checkpoint; this process
    then reads each finished checkpoint back (``loaded`` says what the worker did). The models
    equal the serial run's. Checked before anything trains: every key is a built task with
    its parameters, every config a :class:`TaskTrainConfig`, a checkpoint folder for the
    parallel path, and the executor's arguments."""
    from paramstress.engine import workers as W

    jobs = list(jobs)
    for key, cfg in jobs:
        if key not in tasks or key not in params:
            raise ValueError(f"job for task {key!r}: give its built task in tasks and its parameters in params "
                             f"(built: {sorted(tasks)}, parameters for: {sorted(params)})")
        if not isinstance(cfg, TaskTrainConfig):
            raise TypeError(f"job for task {key!r}: the config must be a TaskTrainConfig, got {type(cfg).__name__}")
    if not W.runs_remotely(workers, len(jobs), cluster):
        return [train_task(tasks[key], cfg, checkpoint_dir=checkpoint_dir, progress=progress) for key, cfg in jobs]
    identities = {key: tasks[key].identity() for key in dict.fromkeys(key for key, _ in jobs)}
    runs = [dict(key=key, params=dict(params[key]), identity=identities[key], cfg=cfg,
                 device=str(getattr(tasks[key], "device", "cpu")), checkpoint_dir=str(checkpoint_dir))
            for key, cfg in jobs]
    return train_in_workers(
        _train_task_job, runs, lambda i: train_task(tasks[jobs[i][0]], jobs[i][1], checkpoint_dir=checkpoint_dir),
        cached="loaded", checkpoint_dir=checkpoint_dir, workers=workers, threads=threads, cluster=cluster,
        gpus_per_job=gpus_per_job, progress=progress,
        labels=[f"{key} {cfg.objective} seed {cfg.seed}" for key, cfg in jobs])


def task_gradient(task: Task, model: nn.Module, params: C.ParamsLike | None = None) -> torch.Tensor:
    """Algorithm 2, step 1, for a task: ``g = ∂L(w; D)/∂w`` of ``task.gradient_loss``
    averaged over every unit of ``task.gradient_batches()`` (eval mode). ``params``
    defaults to every trainable parameter."""
    named = C.select_parameters(model) if params is None else C.as_named_parameters(params)
    return C.mean_loss_gradient(
        model, named,
        ((lambda x=x, y=y: task.gradient_loss(model, x, y), count) for x, y, count in task.gradient_batches()),
        what=f"{type(task).__name__}.gradient_loss", fix="return the mean over the batch's units",
    )


def task_corruption_sweep(
    task: Task,
    model: nn.Module,
    params: C.ParamsLike,
    grad_vec: torch.Tensor,
    *,
    eps_values: Sequence[float],
    n_values: Sequence[int | None],
    p: float = math.inf,
    methods: Sequence[str] = CORRUPTION_METHODS,
    trials: int = 5,
    seed: int = 0,
    csv_path: str | os.PathLike[str] | None = None,
    resume: bool = True,
    progress: bool = False,
) -> pd.DataFrame:
    """Table 1 / Fig. 3 for any task: :func:`paramstress.corruption.sweeps.corruption_sweep` with the
    task's evaluator, so rows carry ``<metric>``, ``loss``, ``base_<metric>``,
    ``delta_<metric>``, ``delta_loss`` and ``indicator`` (Eq. 11) per grid point."""
    return corruption_sweep(model, params, grad_vec, eps_values=eps_values, n_values=n_values, p=p,
                            methods=methods, trials=trials, seed=seed, csv_path=csv_path, resume=resume,
                            progress=progress, evaluator=lambda: task.evaluate(model))


def task_corrupted_scores(task: Task, model: nn.Module, *, eps_values: Sequence[float], p: float = 2.0,
                          grad_vec: torch.Tensor | None = None) -> pd.DataFrame:
    """Table 2's columns for any task: the clean score, then the gradient-based corruption
    (``L_p``, ``n = k``, all trainable parameters) at each ε, with ``g`` computed once
    (:func:`task_gradient`) unless given. Rows: ``eps`` (NaN for the clean row), the
    metric, ``loss``, ``delta_loss``, ``indicator``."""
    eps_list = [C.check_eps(e) for e in eps_values]
    if not eps_list:
        raise ValueError("eps_values is empty: give the Table 2 ε grid, e.g. [0.05, 0.1, 0.2]")
    named = C.select_parameters(model)
    g = task_gradient(task, model, named) if grad_vec is None else grad_vec
    swept = task_corruption_sweep(task, model, named, g, eps_values=eps_list, n_values=[None], p=p,
                                  methods=["gradient"])
    clean = swept.iloc[0]
    metric = task.metric
    rows = [{"eps": math.nan, metric: float(clean[f"base_{metric}"]), "loss": float(clean["base_loss"]),
             "delta_loss": 0.0, "indicator": 0.0}]
    rows += swept[["eps", metric, "loss", "delta_loss", "indicator"]].to_dict("records")
    return pd.DataFrame.from_records(rows)


def task_corrupted_outputs(task: Task, model: nn.Module, *, eps_values: Sequence[float], p: float = 2.0,
                           grad_vec: torch.Tensor | None = None,
                           evaluate: Callable[[nn.Module], tuple[Mapping[str, float], Any]] | None = None,
                           ) -> list[dict[str, Any]]:
    """Table 2's corruption of :func:`task_corrupted_scores` (clean, then the gradient-based
    ``L_p``, ``n = k`` corruption of every trainable parameter at each ε, through the same
    sweep engine, ``g`` from :func:`task_gradient` unless given, weights restored
    bit-identically), keeping what each evaluation produced besides its metrics.

    ``evaluate(model) -> (metrics, output)`` (default :meth:`Task.evaluate_units`, whose
    output is the per-unit statistics) is called once clean and once per ε with the model as
    it is then; its ``metrics`` are the sweep's. One record per row, clean first: ``eps``
    (NaN = clean), the metric, ``loss``, ``output``. Arguments are checked before the
    gradient is computed."""
    eps_list = [C.check_eps(e) for e in eps_values]
    if not eps_list:
        raise ValueError("eps_values is empty: give the Table 2 ε grid, e.g. [0.05, 0.1, 0.2]")
    if evaluate is None:
        if not has_unit_statistics(task):
            raise ValueError(f"{type(task).__name__} has no per-unit statistics (evaluate_units, combine, units): "
                             "pass evaluate=, or implement them")
        evaluate = task.evaluate_units
    elif not callable(evaluate):
        raise ValueError(f"evaluate must be a callable model -> (metrics, output), got {type(evaluate).__name__}")
    named = C.select_parameters(model)
    g = task_gradient(task, model, named) if grad_vec is None else grad_vec
    log: list[Any] = []

    def evaluator() -> dict[str, float]:
        metrics, output = evaluate(model)
        log.append(output)
        return dict(metrics)

    swept = corruption_sweep(model, named, g, eps_values=eps_list, n_values=[None], p=p, methods=["gradient"],
                             evaluator=evaluator)
    if len(log) != len(swept) + 1:  # the clean evaluation, then one per row
        raise RuntimeError(f"expected {len(swept) + 1} evaluations, recorded {len(log)}")
    metric = task.metric
    out = [{"eps": math.nan, metric: float(swept.iloc[0][f"base_{metric}"]),
            "loss": float(swept.iloc[0]["base_loss"]), "output": log[0]}]
    for (_, row), output in zip(swept.iterrows(), log[1:]):
        out.append({"eps": float(row["eps"]), metric: float(row[metric]), "loss": float(row["loss"]),
                    "output": output})
    return out


def task_corrupted_units(task: Task, model: nn.Module, *, eps_values: Sequence[float], p: float = 2.0,
                         grad_vec: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """:func:`task_corrupted_outputs` with the task's per-unit statistics
    (:meth:`Task.evaluate_units`): one record per row, clean first, ``eps`` (NaN = clean),
    the metric, ``loss`` and ``units`` (the ``(n, k)`` statistics). Each record's statistics
    are checked to reproduce its score through :meth:`Task.combine` (relative 1e-9;
    infinite scores must be reproduced as infinite)."""
    if not has_unit_statistics(task):
        raise ValueError(f"{type(task).__name__} has no per-unit statistics (evaluate_units, combine, units); "
                         "a paired bootstrap over its units is not possible")
    rows = task_corrupted_outputs(task, model, eps_values=eps_values, p=p, grad_vec=grad_vec)
    metric = task.metric
    for row in rows:
        stats = np.asarray(row.pop("output"), dtype=np.float64)
        combined = float(task.combine(stats))
        if not math.isclose(combined, row[metric], rel_tol=1e-9, abs_tol=1e-12):
            raise RuntimeError(f"{task.label}: the per-unit statistics give {metric} = {combined!r}, the evaluation "
                               f"{row[metric]!r} (eps {row['eps']}): evaluate_units and combine disagree")
        row["units"] = stats
    return rows
