"""Filtering over training: the networks of Pravin et al. (2023) trained over epochs, the
FGSM size chosen once per model and dataset, and a synaptic-filtering sweep of every kept
snapshot (§4.3 "Experimental set-up", §5; the data behind Figs. 5-7, 9 and 10).

- Training (§4.3): torchvision's ImageNet-style networks (``models.build_model``: 1-channel
  first convolution for MNIST-like data), cross-entropy, Adam with lr 1e-3 and default
  betas/eps, batch 100, no weight decay, no augmentation, a constant learning rate
  (:func:`train_config`). ``seed`` sets the initialisation *and* the data order (the
  official code's three "seeds" share both; not copied). Snapshots are kept after the
  listed epochs (the paper: every 10 epochs up to 100) by ``paramstress.training``.
- Evaluation data (:func:`eval_data`): the test images the training loop itself scores
  (``cfg.test_subset`` drawn with ``cfg.subset_seed``), so the per-epoch test accuracy of
  training and the filtering's unfiltered accuracy are measured on the same images.
- ε (Defs. 7-9, :func:`choose_epsilon`): one line search per model and dataset, on the
  snapshot of the last epoch of the first seed, to an adversarial accuracy shared by all
  models and datasets; that ε is then used at every epoch and seed of the pair. A network
  that cannot be brought to that target (clean accuracy not above it, so Def. 7 cannot hold,
  or FGSM up to ``eps_max`` leaves it above) is, with ``unreachable="clean-only"``, filtered on
  clean inputs only instead of ending the study.
- Sweeps (:func:`sweep_snapshot`): :func:`paramstress.filtering.filter_sweep` of one
  snapshot, written to a resumable CSV in ``<checkpoints>/filtering/`` whose name is a
  digest of everything that determines the rows — the snapshot (config hash, epoch),
  the evaluation images and what ``normalize`` makes of the first of them, T, ε, the
  adversarial mode, the global range, the evaluation batch size and the source of the
  modules that compute them. A second notebook (or a
  re-run) asking for the same rows reads them instead of recomputing them, the way
  trained weights are reused; new layers are added to the same file. Any change to the
  code of ``filtering``, ``adversarial`` or ``sweep`` changes the digest, so stale rows
  are never read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from paramstress.filtering import adversarial as A
from paramstress.engine import data as D
from paramstress.filtering import filters as FL
from paramstress.engine import models
from paramstress.engine import sweep as S
from paramstress.engine import training
from paramstress.engine import workers as W
from paramstress.engine.data import ImageData

__all__ = [
    "PAPER_TRAINING",
    "train_config",
    "eval_data",
    "pick_layers",
    "cache_dir",
    "code_digest",
    "choose_epsilon",
    "sweep_snapshot",
    "TrainedRun",
    "PairStudy",
    "UNREACHABLE",
    "study_pair",
    "study",
]

#: §4.3: Adam (lr 1e-3, default betas and eps), batch 100, no augmentation; no weight
#: decay and a constant learning rate (the paper names no schedule).
PAPER_TRAINING: dict[str, Any] = dict(optimizer="adam", lr=1e-3, batch_size=100, schedule="constant",
                                      weight_decay=0.0, augment=False, hflip=False)


def train_config(arch: str, *, epochs: int, keep_epochs: Sequence[int], seed: int,
                 train_subset: int | None = None, test_subset: int | None = None, subset_seed: int = 0,
                 **overrides: Any) -> training.TrainConfig:
    """The :class:`~paramstress.training.TrainConfig` of §4.3 for ``arch``, with
    snapshots after ``keep_epochs`` and checkpoints every epoch (``overrides`` replace
    any field, e.g. ``eval_batch_size``)."""
    missing = [e for e in keep_epochs if not 0 <= e <= epochs]
    if missing:
        raise ValueError(f"snapshot epochs {missing} are outside 0..{epochs}; raise epochs or drop them")
    settings = dict(PAPER_TRAINING, model=arch, epochs=epochs, keep_epochs=tuple(keep_epochs), seed=seed,
                    train_subset=train_subset, test_subset=test_subset, subset_seed=subset_seed)
    settings.update(overrides)
    return training.TrainConfig(**settings)


def eval_data(ds: ImageData, cfg: training.TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images and labels that training scores for ``cfg`` (its ``test_subset``
    drawn with ``subset_seed``; all of them when ``None``), on ``ds``'s device."""
    sub = ds.subset(cfg.train_subset, cfg.test_subset, seed=cfg.subset_seed)
    return sub.test_x, sub.test_y


def pick_layers(model: nn.Module, count: int | None) -> list[str]:
    """``count`` conv/linear layers evenly spaced through the network, always including
    the first convolution and the last linear layer (``None`` or more than there are:
    every layer)."""
    layers = FL.filterable_layers(model)
    if count is None or count >= len(layers):
        return layers
    _check_layer_count(count, "count")
    idx = sorted({int(round(i)) for i in np.linspace(0, len(layers) - 1, count)})
    return [layers[i] for i in idx]


def cache_dir() -> Path:
    """``<checkpoints>/filtering``: cached sweeps and ε choices, beside the trained weights."""
    return training.default_checkpoint_dir() / "filtering"


def code_digest() -> str:
    """Digest of the source of the modules that compute a sweep's numbers."""
    h = hashlib.sha256()
    for mod in (FL, A, S):
        h.update(Path(mod.__file__).read_bytes())
    return h.hexdigest()[:16]


def _digest(payload: Mapping[str, Any], *tensors: torch.Tensor) -> str:
    h = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    for t in tensors:
        flat = t.detach().to("cpu").contiguous()
        h.update(f"{flat.dtype}{tuple(flat.shape)}".encode())
        h.update(flat.numpy().tobytes())
    return h.hexdigest()[:20]


def _normalized_probe(normalize, x: torch.Tensor) -> torch.Tensor:
    """``normalize`` applied to the first images, for the cache digests: a cached result is
    only read back for inputs normalised the same way (the statistics are computed from the
    images and once depended on the thread count, see ``paramstress.data.channel_stats``)."""
    return normalize(x[:8])


def choose_epsilon(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, normalize, target_accuracy: float,
                   eps_max: float, grid: int = 8, tol: float = 1.0, batch_size: int = 500,
                   cache_key: str | None = None) -> dict[str, Any]:
    """Defs. 7-9 for one model and dataset (:func:`paramstress.adversarial.select_epsilon`
    on the normalised images): the summary (eps, adversarial and clean accuracy, chance,
    flipped inputs, Def. 7/8 checks) and the evaluated curve under ``"curve"``. With
    ``cache_key`` (e.g. the snapshot's config hash and epoch) the result is cached as JSON
    in :func:`cache_dir`."""
    settings = {"kind": "eps", "key": cache_key, "target": float(target_accuracy), "eps_max": float(eps_max),
                "grid": grid, "tol": float(tol), "batch_size": batch_size, "code": code_digest()}
    path = None
    if cache_key is not None:
        path = cache_dir() / f"eps.{_digest(settings, x, y, _normalized_probe(normalize, x))}.json"
        if path.exists():
            return json.loads(path.read_text())
    xn = torch.cat([normalize(b) for b in x.split(batch_size)])
    choice = A.select_epsilon(model, xn, y, target_accuracy=target_accuracy, eps_max=eps_max, grid=grid, tol=tol,
                              batch_size=batch_size)
    result = {**choice.summary(), "curve": choice.curve.to_dict(orient="list")}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(path)
    return result


def sweep_snapshot(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, normalize, tags: Mapping[str, Any],
                   snapshot: str | None, scopes: Sequence[str], T: int, eps: float | None,
                   adversarial: str = "fixed", global_range: Any = "true", batch_size: int = 500,
                   filters: Sequence[str] = FL.FILTERS) -> pd.DataFrame:
    """:func:`paramstress.filtering.filter_sweep` of one snapshot over ``scopes``, cached
    (see the module docstring) when ``snapshot`` names it (e.g. ``"<config hash>.epoch<e>"``;
    ``None``: not cached). ``x`` are the uint8 test images, ``normalize`` the data set's
    normalisation. The frame's ``attrs["stats"]`` counts what this call computed."""
    csv_path = None
    if snapshot is not None:
        settings = {"kind": "sweep", "snapshot": snapshot, "T": T,
                    "eps": None if eps is None else float(eps), "adversarial": adversarial if eps is not None else None,
                    "global_range": global_range, "batch_size": batch_size, "code": code_digest(),
                    "tags": {k: str(v) for k, v in tags.items()}}
        csv_path = cache_dir() / f"sweep.{_digest(settings, x, y, _normalized_probe(normalize, x))}.csv"
    table = FL.filter_sweep(model, x, y, scopes=list(scopes), filters=filters, T=T, global_range=global_range,
                            eps=eps, adversarial=adversarial, transform=normalize, batch_size=batch_size,
                            tags=dict(tags), csv_path=csv_path, resume=True)
    if not table.empty:  # the CSV round trip reads "global" layer names etc. as text, numbers as numbers
        for k, v in tags.items():
            if isinstance(v, str):
                table[k] = table[k].astype(str)
        table["layer"] = table["layer"].astype(str)
    return table


@dataclasses.dataclass
class TrainedRun:
    """What a study keeps of one :func:`paramstress.training.train` call (the weights stay
    in the checkpoint folder; :func:`paramstress.training.load_snapshot` reads them)."""

    config: training.TrainConfig
    config_hash: str
    history: list[training.EpochStats]
    final_test_accuracy: float
    from_cache: bool
    epochs_trained: int


@dataclasses.dataclass
class PairStudy:
    """One architecture on one data set (:func:`study_pair`): the trained seeds, the ε of
    Defs. 7-9, the filtering rows of every kept snapshot, what was computed (not read
    from a cache) per snapshot, and where and how long it ran."""

    arch: str
    dataset: str
    runs: dict[int, TrainedRun]
    eps: dict[str, Any]
    sweeps: pd.DataFrame
    computed: list[dict[str, Any]]
    seconds: dict[str, float]
    worker: str


def _trained(result: training.TrainResult) -> TrainedRun:
    return TrainedRun(config=result.config, config_hash=result.config_hash, history=list(result.history),
                      final_test_accuracy=result.final_test_accuracy, from_cache=result.from_cache,
                      epochs_trained=result.epochs_trained)


def _check_layer_count(count: Any, name: str) -> None:
    """``count`` layers for :func:`pick_layers`: an integer >= 2, or ``ValueError`` naming ``name``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 2:
        raise ValueError(f"{name} must be None (all layers) or an integer >= 2 (first and last), got {count!r}")


def _check_settings(seeds: Sequence[int], snapshot_epochs: Sequence[int]) -> None:
    if not seeds:
        raise ValueError("seeds is empty; give at least one training seed")
    if not snapshot_epochs:
        raise ValueError("snapshot_epochs is empty; name the epochs whose snapshots are filtered")


#: What :func:`study_pair` does with a network that cannot reach the shared adversarial target.
UNREACHABLE = ("raise", "clean-only")


def _check_unreachable(value: Any) -> None:
    if value not in UNREACHABLE:
        raise ValueError(f"unreachable must be one of {list(UNREACHABLE)}, got {value!r}")


def _check_target(adv_target: Any, datasets: Mapping[str, ImageData]) -> None:
    """Def. 8 before any compute: the shared adversarial accuracy must lie above chance for
    every data set (:func:`paramstress.adversarial.check_above_chance`) and below 100 %
    (or no attack is needed)."""
    if isinstance(adv_target, bool) or not isinstance(adv_target, (int, float)) or not adv_target < 100:
        raise ValueError(f"adv_target must be an accuracy in % below 100, got {adv_target!r}")
    A.check_above_chance(adv_target, {d: ds.num_classes for d, ds in datasets.items()}, name="adv_target")


def study_pair(arch: str, dataset: str | ImageData, *, seeds: Sequence[int], eps_seed: int, epochs: int,
               snapshot_epochs: Sequence[int], train_samples: int | None, test_samples: int | None,
               adv_target: float, eps_max: float, T: int, layers: int | None, include_layers: Sequence[str] = (),
               adversarial: str = "fixed", global_range: Any = "true", eval_batch_size: int = 500,
               device: str = "cpu", checksum: str | None = None, unreachable: str = "raise") -> PairStudy:
    """§4.3 and §5 of Pravin et al. (2023) for one architecture on one data set: train every
    seed (:func:`train_config`; cached), choose ε on the last snapshot of ``eps_seed``
    (:func:`choose_epsilon`, Defs. 7-9; trained too if it is not among ``seeds``), and sweep
    every kept snapshot (:func:`sweep_snapshot`) over ``layers`` (:func:`pick_layers`;
    ``include_layers`` are added in front when the pick leaves them out) and the global
    scope. ``dataset`` is a loaded :class:`~paramstress.data.ImageData` or a data set name
    (loaded here, e.g. in a worker process; ``checksum``, when given, must match the loaded
    files). Everything is read back from the caches when it was computed before.

    ``unreachable`` says what happens when the trained network cannot be brought to the
    shared adversarial accuracy of Def. 9 (:class:`paramstress.adversarial.TargetUnreachable`:
    its clean accuracy is not above ``adv_target``, so Def. 7 cannot hold, or FGSM up to
    ``eps_max`` leaves it above the target): ``"raise"`` (the default) re-raises it;
    ``"clean-only"`` keeps the network in the study without an attack: its snapshots are
    filtered on clean inputs only (``adv_accuracy`` NaN, so φ_adv and Δφ are NaN), and
    ``eps`` records ``eps=None``, the clean accuracy, the classes it predicts and the
    short reason under ``"excluded"``."""
    start = time.perf_counter()
    _check_settings(seeds, snapshot_epochs)
    _check_unreachable(unreachable)
    ds = D.load(dataset) if isinstance(dataset, str) else dataset
    if checksum is not None and ds.checksum != checksum:
        raise ValueError(f"{ds.name}: the files loaded here have checksum {ds.checksum}, the caller's {checksum}; "
                         "point every process at the same data (PARAMSTRESS_DATA / PARAMSTRESS_DATA_MIRROR)")
    last = max(snapshot_epochs)
    ckpt = training.default_checkpoint_dir()
    cfg_of = {s: train_config(arch, epochs=epochs, keep_epochs=snapshot_epochs, seed=s, train_subset=train_samples,
                              test_subset=test_samples) for s in dict.fromkeys([*seeds, eps_seed])}
    runs = {s: _trained(training.train(None, ds, cfg_of[s], device=device, checkpoint_dir=ckpt, progress=False))
            for s in cfg_of}
    trained_at = time.perf_counter()

    eps_cfg = cfg_of[eps_seed]
    model = training.load_snapshot(eps_cfg, ds, last, device=device)
    x, y = eval_data(ds, eps_cfg)
    try:
        eps = choose_epsilon(model, x.to(device), y.to(device), normalize=ds.normalize, target_accuracy=adv_target,
                             eps_max=eps_max, batch_size=eval_batch_size,
                             cache_key=f"{runs[eps_seed].config_hash}.epoch{last}")
    except A.TargetUnreachable as exc:
        if unreachable == "raise":
            exc.add_note(f"{arch} on {ds.name}, epoch {last} of seed {eps_seed}: pass unreachable='clean-only' "
                         "to filter such a network on clean inputs only")
            raise
        eps = {**exc.summary(), "curve": exc.curve.to_dict(orient="list")}
    eps_at = time.perf_counter()

    frames, computed = [], []
    for s in seeds:
        cfg = cfg_of[s]
        x, y = (t.to(device) for t in eval_data(ds, cfg))
        for e in snapshot_epochs:
            model = training.load_snapshot(cfg, ds, e, device=device)
            picked = pick_layers(model, layers)
            scopes = [*[name for name in include_layers if name not in picked], *picked, FL.GLOBAL]
            frame = sweep_snapshot(model, x, y, normalize=ds.normalize,
                                   tags={"model": arch, "dataset": ds.name, "seed": s, "epoch": e},
                                   snapshot=f"{runs[s].config_hash}.epoch{e}", scopes=scopes, T=T,
                                   eps=eps["eps"], adversarial=adversarial, global_range=global_range,
                                   batch_size=eval_batch_size)
            frames.append(frame)
            computed.append({"seed": s, "epoch": e, **frame.attrs["stats"]})
    end = time.perf_counter()
    sweeps = pd.concat(frames, ignore_index=True)
    sweeps.attrs = {}
    return PairStudy(arch=arch, dataset=ds.name, runs={s: runs[s] for s in seeds}, eps=eps, sweeps=sweeps,
                     computed=computed, worker=f"pid {os.getpid()}",
                     seconds={"train": trained_at - start, "eps": eps_at - trained_at, "sweep": end - eps_at,
                              "total": end - start})


def study(archs: Sequence[str], datasets: Mapping[str, ImageData], *, workers: int = 1, threads: int | None = None,
          device: str | torch.device = "cpu", cluster: str | None = None, gpus_per_job: float | None = None,
          **settings: Any) -> dict[tuple[str, str], PairStudy]:
    """:func:`study_pair` for every architecture × data set, keyed ``(arch, data set name)``
    in that order. ``workers > 1`` runs the pairs on a local Ray instance with that many
    CPUs, ``cluster`` on a Ray cluster (:func:`paramstress.engine.workers.run_jobs`, which
    also reads ``$PARAMSTRESS_RAY_CLUSTER`` and ``$PARAMSTRESS_GPUS_PER_JOB``; ``threads``
    intra-op threads each): a worker loads a named data set itself (its checksum checked
    against ``datasets``') and writes the same caches, so the results equal the serial
    ones. The settings (seeds,
    epochs, layers, ``adv_target`` against each data set's chance level, ``unreachable``,
    ...) are checked before any compute."""
    W.check_workers(workers)
    W.check_cluster(cluster)
    if gpus_per_job is not None:
        W.check_gpus_per_job(gpus_per_job)
    _check_settings(settings.get("seeds", ()), settings.get("snapshot_epochs", ()))
    _check_unreachable(settings.get("unreachable", "raise"))
    if not archs or not datasets:
        raise ValueError(f"nothing to study: archs {list(archs)}, data sets {list(datasets)}; name at least one of each")
    unknown = [a for a in archs if a not in models.MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown architectures {unknown}; choose from {list(models.MODEL_NAMES)}")
    for a in archs:
        train_config(a, epochs=settings["epochs"], keep_epochs=settings["snapshot_epochs"],
                     seed=settings.get("eps_seed", 0)).validate()
    if settings.get("layers") is not None:
        _check_layer_count(settings["layers"], "layers")
    misnamed = {d: ds.name for d, ds in datasets.items() if ds.name != d}
    if misnamed:
        raise ValueError(f"key the data sets by their own names (data.load(name).name): got {misnamed}")
    if "adv_target" in settings:
        _check_target(settings["adv_target"], datasets)
    device = str(device)
    pairs = [(a, d) for a in archs for d in datasets]
    parallel = W.runs_remotely(workers, len(pairs), cluster)
    jobs = []
    for a, d in pairs:
        ds = datasets[d]
        by_name = parallel and ds.source != "synthetic"
        jobs.append(dict(settings, arch=a, dataset=d if by_name else ds, device=device,
                         checksum=ds.checksum if by_name else None))
    results = W.run_jobs(study_pair, jobs, workers=workers, threads=threads, cluster=cluster,
                         gpus_per_job=gpus_per_job, labels=[f"{a} on {d}" for a, d in pairs])
    return dict(zip(pairs, results))
