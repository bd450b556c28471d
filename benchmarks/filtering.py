"""Speed of the synaptic-filtering sweep against a naive loop, on the book's networks.

Usage::

    PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/filtering.py [--quick] [--model resnet18] [--device cuda]

What is measured
----------------
The local and global synaptic filtering of Pravin et al. (2023): for each *scope* (by
default five conv/linear layers evenly spaced through the network, first and last
included, and the global scope of all of them), the three filters (Eqs. 7-9) at ``T``
thresholds, each point evaluated on ``--images`` MNIST test images, clean and under a
fixed FGSM set (ε = ``--eps`` in normalised units, crafted against the unfiltered
model): ``scopes × 3 × T`` points. The network (``--model``, a torchvision net from
``paramstress.models``) is seeded and briefly trained (``--train-steps`` Adam steps,
untimed) so that the accuracies are those of a working classifier.

The two paths evaluate the same points in this one process:

- **fast**: :func:`paramstress.filtering.filter_sweep`, one call per scope. Images are
  whole tensors normalised once; the clean and the adversarial images go through the
  network in the same batches (``--batch-size``, 250 by default) under ``torch.inference_mode``;
  masks are applied in place and undone bit-identically; a threshold whose set of
  removed weights was already evaluated (or that removes nothing) is not evaluated
  again; for a local scope, the part of the graph that does not depend on the filtered
  weight is computed once per scope and only the rest runs per threshold (``torch.fx``
  split, checked against the whole model). Each call also crafts its own FGSM set and
  evaluates the unfiltered model once: charged to the fast path.
- **naive**, as a typical research script writes it (and as the official code does):
  for every point ``copy.deepcopy(model)``, zero the window in the copy's weights, and
  evaluate with ``torch.utils.data.DataLoader`` at batch 100 over a per-sample
  ``Dataset`` (normalising one image per ``__getitem__``) and over the adversarial
  tensors, with autograd enabled; plus one evaluation of the unfiltered model per scope.

Why the comparison is fair
--------------------------
Both paths use the library's thresholds (:func:`paramstress.filtering.window`, so the
windows are the same numbers) and the same adversarial images: the naive path reads the
set :func:`paramstress.adversarial.fgsm` crafts at the fast path's batch size, which is
what the fast path crafts internally (untimed for the naive path, like a precomputed
file). Both count an example with non-finite logits as wrong. Results must agree: the
removed-weight counts exactly, the clean and adversarial numbers of correct examples
to within one example per point (batch 100 and the fast path's batch may round the last
bit of a logit differently; differences are printed), and the weights must be
bit-identical after the fast sweep; the script exits 1 otherwise. Before timing, both
paths run once on a tiny grid (warm-up: library initialisation is charged to neither).
The two paths take turns scope by scope, in an order rotated from one scope to the next,
so that bursts of load from other processes hit both alike; ``--repeats`` > 1 keeps the
fastest repeat of each scope. ``--threads`` fixes ``torch.set_num_threads``.

``--device cuda``: the network, and the fast path's images, live on the GPU; the naive
path's ``DataLoader`` yields CPU batches that its loop moves to the device (``xb.to(device)``,
as such scripts do). Each point ends in a host-side count, so the timings include the
device work. CUDA kernels may round differently from one batch size to another; the
one-example tolerance covers that as on a CPU.

Printed: points, the evaluations the fast path actually ran (after deduplication), the
scopes it split, wall and CPU seconds of each path, points per second, the ratio, the
per-scope ratios, and the machine's 1-minute load average (compare the paths only within
one run on a shared machine).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from paramstress import adversarial as A
from paramstress import filtering as FL
from paramstress.data import ImageData, load
from paramstress.landscape import pick_layers
from paramstress.models import build_model
from paramstress.provenance import pick_device

NAIVE_BATCH = 100


def state_bits(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous().reshape(-1).view(torch.uint8) for k, v in model.state_dict().items()}


def changed(model: nn.Module, saved: dict[str, torch.Tensor]) -> list[str]:
    now = state_bits(model)
    return [k for k in saved if not torch.equal(now[k], saved[k])]


def brief_training(model: nn.Module, data: ImageData, steps: int, seed: int, batch: int = 100) -> None:
    """``steps`` Adam steps (lr 1e-3, batch 100: the paper's optimiser) on random training batches."""
    if steps > 0:
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(steps):
            idx = torch.randint(len(data.train_y), (batch,), generator=gen)
            loss = F.cross_entropy(model(data.normalize(data.train_x[idx])), data.train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    model.eval()


# --------------------------------------------------------------------------------------
# Naive path
# --------------------------------------------------------------------------------------

class NormalizedImages(Dataset):
    """Per-sample dataset: ``__getitem__`` scales one ``uint8`` image to [0, 1] and
    standardises it (the same float32 operations as ``ImageData.normalize``)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i].to(torch.float32) / 255.0
        return (img - self.mean) / self.std, self.labels[i]


def naive_correct(model: nn.Module, loader: DataLoader) -> int:
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        out = model(xb)  # autograd enabled, as in most research scripts
        correct += int(((out.argmax(dim=1) == yb) & torch.isfinite(out).all(dim=1)).sum())
    return correct


def naive_scope(model: nn.Module, scope: str, clean: DataLoader, adv: DataLoader, T: int) -> pd.DataFrame:
    """Every point of one scope, the naive way: a fresh deep copy per point."""
    layers = FL.filterable_layers(model) if scope == FL.GLOBAL else [scope]
    ref = copy.deepcopy(model)
    rows = [{"layer": scope, "filter": "none", "t": -1, "removed": 0,
             "clean_correct": naive_correct(ref, clean), "adv_correct": naive_correct(ref, adv)}]
    for f in FL.FILTERS:
        for t in range(T):
            net = copy.deepcopy(model)
            weights = [net.get_submodule(name).weight for name in layers]
            flat = torch.cat([w.detach().reshape(-1) for w in weights])
            win = FL.window(f, t, T, float(flat.min()), float(flat.max()))
            removed = 0
            with torch.no_grad():
                for w in weights:
                    mask = (w >= win.lower) & (w <= win.upper)
                    removed += int((mask & (w != 0)).sum())
                    w[mask] = 0.0
            rows.append({"layer": scope, "filter": f, "t": t, "removed": removed,
                         "clean_correct": naive_correct(net, clean), "adv_correct": naive_correct(net, adv)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Fast path
# --------------------------------------------------------------------------------------

def fast_scope(model: nn.Module, scope: str, x, y, *, T: int, eps: float, normalize, batch_size: int) -> pd.DataFrame:
    table = FL.filter_sweep(model, x, y, scopes=[scope], T=T, eps=eps, adversarial="fixed", transform=normalize,
                            batch_size=batch_size)
    n = len(y)
    out = table[["layer", "filter", "t", "removed"]].copy()
    out["clean_correct"] = (table["clean_accuracy"] * n / 100).round().astype(int)
    out["adv_correct"] = (table["adv_accuracy"] * n / 100).round().astype(int)
    ref = {"layer": scope, "filter": "none", "t": -1, "removed": 0,
           "clean_correct": round(table["clean_reference"].iloc[0] * n / 100),
           "adv_correct": round(table["adv_reference"].iloc[0] * n / 100)}
    out = pd.concat([pd.DataFrame([ref]), out], ignore_index=True)
    out.attrs["stats"] = table.attrs["stats"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="200 images, T = 11, 3 layers + global (a minute or two)")
    ap.add_argument("--model", default="resnet18", help="paramstress.models name (default resnet18)")
    ap.add_argument("--images", type=int, default=None, help="MNIST test images (default 500, --quick 200)")
    ap.add_argument("--T", type=int, default=None, help="thresholds per filter (default 25, --quick 11)")
    ap.add_argument("--layers", type=int, default=None, help="local scopes, evenly spaced (default 5, --quick 3)")
    ap.add_argument("--eps", type=float, default=0.2, help="FGSM size, normalised units (default 0.2)")
    ap.add_argument("--train-steps", type=int, default=100, help="Adam steps before the sweep (default 100)")
    ap.add_argument("--batch-size", type=int, default=250,
                    help="fast path batch size over the clean + adversarial images (default 250: on a CPU, "
                         "batches of a few hundred run faster than one huge batch)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each scope per path; the fastest counts")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto (paramstress.provenance.pick_device)")
    args = ap.parse_args(argv)
    device = pick_device(args.device)  # fails here, before any data or training, if CUDA is asked for but absent
    if args.threads:
        torch.set_num_threads(args.threads)
    images = args.images or (200 if args.quick else 500)
    T = args.T or (11 if args.quick else 25)
    n_layers = args.layers or (3 if args.quick else 5)

    data = load("mnist")
    test = data.subset(test=images, seed=args.seed)
    x, y = test.test_x, test.test_y
    batch_size = args.batch_size
    model = build_model(args.model, 10, 1, 28, seed=args.seed).to(device)
    t0 = time.perf_counter()
    brief_training(model, data.to(device), args.train_steps, args.seed)
    train_s = time.perf_counter() - t0
    scopes = [*pick_layers(model, n_layers), FL.GLOBAL]
    x_cpu, y_cpu = x, y  # the naive path's per-sample dataset reads these (a DataLoader yields CPU batches)
    x, y = x.to(device), y.to(device)  # the fast path's evaluation set, on the model's device
    xn = data.normalize(x)
    x_adv = A.fgsm(model, xn, y, args.eps, batch_size=batch_size)  # what the fast path crafts internally
    x_adv = x_adv.cpu()  # the naive path reads it like a precomputed file
    clean_loader = DataLoader(NormalizedImages(x_cpu, y_cpu, data.mean, data.std), batch_size=NAIVE_BATCH,
                              shuffle=False)
    adv_loader = DataLoader(TensorDataset(x_adv, y_cpu), batch_size=NAIVE_BATCH, shuffle=False)

    # warm-up of both paths on a tiny grid (library initialisation charged to neither)
    fast_scope(model, scopes[-2], x[:20], y[:20], T=3, eps=args.eps, normalize=data.normalize, batch_size=40)
    naive_scope(model, scopes[-2], DataLoader(NormalizedImages(x_cpu[:20], y_cpu[:20], data.mean, data.std),
                                              batch_size=20),
                DataLoader(TensorDataset(x_adv[:20], y_cpu[:20]), batch_size=20), 3)

    load_avg = f"; 1-min load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"model {args.model} (seed {args.seed}, {args.train_steps} Adam steps, {train_s:.1f} s, untimed); "
          f"MNIST test subset of {len(y):,} images, clean + FGSM ε = {args.eps:g} (normalised units)")
    print(f"scopes: {', '.join(scopes)}; filters h_a, h_b, h_c; T = {T}; fast batch {batch_size}, naive batch {NAIVE_BATCH}")
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__}, device {where}, threads {torch.get_num_threads()}, CPUs {os.cpu_count()}"
          f"{load_avg}", flush=True)

    saved = state_bits(model)
    paths = ["fast", "naive"]
    times: dict[str, dict[str, tuple[float, float]]] = {p: {} for p in paths}
    results: dict[str, list[pd.DataFrame]] = {p: [] for p in paths}
    moved: set[str] = set()
    stats = {"evaluations": 0, "points": 0, "split_layers": 0}
    for i, scope in enumerate(scopes):
        for path in (paths if i % 2 == 0 else paths[::-1]):
            best = None
            for rep in range(max(1, args.repeats)):
                wall0, cpu0 = time.perf_counter(), time.process_time()
                if path == "fast":
                    table = fast_scope(model, scope, x, y, T=T, eps=args.eps, normalize=data.normalize,
                                       batch_size=batch_size)
                else:
                    table = naive_scope(model, scope, clean_loader, adv_loader, T)
                wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
                if best is None or wall < best[0]:
                    best = (wall, cpu)
                if rep == 0:
                    results[path].append(table)
                    if path == "fast":
                        for k in stats:
                            stats[k] += table.attrs["stats"][k]
                        moved.update(changed(model, saved))
            times[path][scope] = best
            print(f"  {scope:28s} {path:5s} {best[0]:7.1f} s", file=sys.stderr, flush=True)

    fast = pd.concat(results["fast"], ignore_index=True)
    naive = pd.concat(results["naive"], ignore_index=True)
    merged = fast.merge(naive, on=["layer", "filter", "t"], suffixes=("_fast", "_naive"), how="outer", indicator=True)
    points = int((fast["t"] >= 0).sum())
    print(f"\npoints: {points} ({len(scopes)} scopes × 3 filters × T = {T}), each on {len(y):,} clean + {len(y):,} "
          f"adversarial images; the fast path evaluated {stats['evaluations'] - len(scopes)} filtered networks "
          f"(+{len(scopes)} unfiltered), reusing {points - stats['evaluations'] + len(scopes)} results; "
          f"activation reuse on {stats['split_layers']} of {len(scopes) - 1} local scopes")
    if hasattr(os, "getloadavg"):
        print(f"1-min load average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    fast_wall = sum(w for w, _ in times["fast"].values())
    naive_wall = sum(w for w, _ in times["naive"].values())
    fast_cpu = sum(c for _, c in times["fast"].values())
    naive_cpu = sum(c for _, c in times["naive"].values())
    print(f"{'path':6s} {'wall s':>8s} {'CPU s':>8s} {'points/s':>9s}")
    print(f"{'fast':6s} {fast_wall:8.1f} {fast_cpu:8.1f} {points / fast_wall:9.2f}")
    print(f"{'naive':6s} {naive_wall:8.1f} {naive_cpu:8.1f} {points / naive_wall:9.2f}")
    print(f"ratio naive/fast: {naive_wall / fast_wall:.2f}x wall, {naive_cpu / fast_cpu:.2f}x CPU")
    print("per scope (naive/fast wall): " + ", ".join(
        f"{s} {times['naive'][s][0] / times['fast'][s][0]:.1f}x" for s in scopes))

    both = merged["_merge"] == "both"
    removed_ok = bool((merged.loc[both, "removed_fast"] == merged.loc[both, "removed_naive"]).all())
    diffs = pd.DataFrame({
        "clean": merged["clean_correct_naive"] - merged["clean_correct_fast"],
        "adv": merged["adv_correct_naive"] - merged["adv_correct_fast"]})
    exact = int(((diffs["clean"] == 0) & (diffs["adv"] == 0)).sum())
    print(f"\nagreement: {exact}/{len(merged)} rows identical (incl. the unfiltered ones); removed counts "
          f"{'identical' if removed_ok else 'DIFFER'}; largest difference {int(diffs.abs().max().max())} example(s)")
    off = merged[(diffs["clean"] != 0) | (diffs["adv"] != 0)]
    if len(off):
        print(off[["layer", "filter", "t", "clean_correct_fast", "clean_correct_naive", "adv_correct_fast",
                   "adv_correct_naive"]].to_string(index=False))
    print(f"weights after the fast sweeps: {'bit-identical' if not moved else f'CHANGED: {sorted(moved)}'}")
    ok = bool(both.all()) and removed_ok and int(diffs.abs().max().max()) <= 1 and not moved
    if not ok:
        print("FAIL: the paths disagree or the weights changed", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
