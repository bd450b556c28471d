"""Speed of the corruption sweep engine against a naive loop, on Table 1's grid.

Usage::

    PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/sweep_corruption.py [--quick]

What is measured
----------------
The grid of Table 1 of Sun et al. (2021): L∞ corruption of every parameter of
``build_model('small_cnn', 10, 1, 28)`` (the subspace is the whole model), rows
``n = k`` with ε ∈ {1e-4, 1e-3, 1e-2, 1e-1, 1} and ``n = 100`` with
ε ∈ {1e-2, 1e-1, 1, 10, 100}, gradient-based ("proposed", one point per (n, ε)) and
random corruption (``--trials`` points per (n, ε), 5 by default): 60 points in all.
Each point is the accuracy and loss on the MNIST test set (all 10,000 images, from
the data layer; ``--quick``: 1,000 images and 2 trials, 30 points). The model is
seeded (``torch.manual_seed(--seed)``) and briefly trained (``--train-steps`` Adam
steps on the training set, untimed) so that accuracies are those of a working
classifier; ``--train-steps 0`` leaves it at its random initialisation.

The paths below evaluate the same grid in this one process:

- **fast**: :func:`paramstress.sweep.corruption_sweep`, once per Table 1 row. Data
  are whole ``uint8`` tensors normalised per batch; evaluation is full-batch by
  default (``--batch-size``) under ``torch.inference_mode``; the corruption is
  applied to the model in place and undone bit-identically after each point. The
  engine is timed a second time at the naive path's batch size (256;
  ``--also-batch``, 0 to skip), which separates the effect of the batch size from
  the rest (on a CPU, very large batches can be slower: their activations do not
  fit in the caches).
- **naive**, as a typical research script writes it: for every point
  ``copy.deepcopy(model)``, add the perturbation to the copy's parameters, and
  evaluate with a ``torch.utils.data.DataLoader`` (batch 256) over a per-sample
  ``Dataset`` whose ``__getitem__`` normalises one image, with autograd enabled
  (no ``inference_mode``/``no_grad`` around the forward pass).

Why the comparison is fair
--------------------------
All paths do the same work and must give the same numbers. They share the model,
the test images, and the gradient ``g`` (computed once with
:func:`~paramstress.corruption.subspace_gradient` over the evaluated test images,
untimed: a naive script computes it once too). Their perturbations are the same
vectors: the naive path builds them with the public
:func:`~paramstress.corruption.gradient_corruption` and
:func:`~paramstress.corruption.random_corruption`, the latter seeded with
:func:`~paramstress.sweep.derive_seed` ``(seed, eps, n, trial)`` as the engine does.
Both evaluate the unperturbed model once per Table 1 row (``corruption_sweep``
reports the change from it), and both count an example whose logits are not all
finite as misclassified. Before timing, both code paths run once on a few images
(warm-up: library initialisation is charged to neither). The naive path adds the
float32 perturbation to float32 weights (``w += a``), the engine rounds ``w + a``
once from float64, so a weight can differ in its last bit: accuracies must agree to
within one test example (differences are printed), and the model's weights and
buffers must be bit-identical after the fast sweep. The script exits with status 1
otherwise.

Every path runs every Table 1 row ``--repeats`` times (3 by default), the paths
taking turns in an order rotated from one row to the next; a path's time is the sum
over the two rows of its fastest repeat (the sum of medians is printed too). Other
processes on a shared machine come in bursts: this way they hit every path alike,
and the best times least. ``--threads`` fixes ``torch.set_num_threads``.

Printed: points evaluated, best wall seconds of each path (with the CPU seconds of
those same blocks), points per second, the median, the ratios naive/fast, and the
largest peak resident memory a path added over the start of one of its blocks
(sampled from ``/proc/self/statm`` after returning freed memory to the OS with
glibc's ``malloc_trim``; "n/a" where ``/proc`` does not exist). On a shared
machine, times move with the load of other processes (the 1-minute load average is
printed); compare the paths only within one run.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import functools
import math
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from paramstress import corruption as C
from paramstress.data import ImageData, load
from paramstress.models import build_model
from paramstress.sweep import corruption_grid, corruption_sweep, derive_seed, evaluate, iter_batches

#: Table 1 of Sun et al. (2021), L∞: ``(n, eps values)``; ``n = None`` means ``n = k``.
TABLE1_ROWS: tuple[tuple[int | None, tuple[float, ...]], ...] = (
    (None, (1e-4, 1e-3, 1e-2, 1e-1, 1.0)),
    (100, (1e-2, 1e-1, 1.0, 10.0, 100.0)),
)
P = math.inf
NAIVE_BATCH = 256


# --------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------

def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _release_free_memory() -> None:
    """Give memory freed by an earlier block back to the OS (glibc), so that the RSS a
    block adds is not hidden by memory an earlier block left in the allocator."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclasses.dataclass
class Block:
    """One timed block: wall and CPU seconds (all threads of this process), and the peak
    RSS added over its start (None where ``/proc/self/statm`` does not exist)."""

    wall: float = 0.0
    cpu: float = 0.0
    peak_added: int | None = None


@contextlib.contextmanager
def measured(interval: float = 0.005) -> Iterator[Block]:
    _release_free_memory()
    block = Block()
    start_rss = _rss_bytes()
    peak = [start_rss or 0]
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval):
            peak[0] = max(peak[0], _rss_bytes() or 0)

    sampler = threading.Thread(target=poll, daemon=True) if start_rss is not None else None
    if sampler is not None:
        sampler.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        yield block
    finally:
        block.wall = time.perf_counter() - wall0
        block.cpu = time.process_time() - cpu0
        stop.set()
        if sampler is not None:
            sampler.join()
            block.peak_added = max(peak[0], _rss_bytes() or 0) - start_rss


def state_snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def bit_identical(model: nn.Module, snapshot: dict[str, torch.Tensor]) -> list[str]:
    """Names of parameters/buffers whose bytes differ from ``snapshot``."""
    current = model.state_dict()
    bad = [name for name in snapshot if name not in current]
    for name, t in current.items():
        ref = snapshot.get(name)
        if ref is None or ref.dtype != t.dtype or ref.shape != t.shape:
            bad.append(name)
        elif not torch.equal(t.detach().contiguous().reshape(-1).view(torch.uint8),
                             ref.contiguous().reshape(-1).view(torch.uint8)):
            bad.append(name)
    return bad


# --------------------------------------------------------------------------------------
# Setup: data, model, gradient
# --------------------------------------------------------------------------------------

def brief_training(model: nn.Module, data: ImageData, steps: int, seed: int, batch: int = 128) -> None:
    """``steps`` Adam steps (lr 1e-3) on random training batches; leaves the model in eval mode."""
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
# Fast path: the sweep engine
# --------------------------------------------------------------------------------------

def fast_row(model, params, grad, x, y, n_row, eps_values, *, transform, trials, seed, batch_size) -> pd.DataFrame:
    """One Table 1 row (all methods, eps and trials at one n) through the engine."""
    return corruption_sweep(model, params, grad, x, y, eps_values=eps_values, n_values=[n_row], p=P,
                            trials=trials, seed=seed, batch_size=batch_size, transform=transform)


# --------------------------------------------------------------------------------------
# Naive path: deepcopy + DataLoader + autograd on, per grid point
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


def naive_evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
    model.eval()
    correct = total = bad = 0
    loss_sum = 0.0
    for xb, yb in loader:
        out = model(xb)  # autograd enabled, as in most research scripts
        finite = torch.isfinite(out).all(dim=1)
        correct += int(((out.argmax(dim=1) == yb) & finite).sum())
        bad += int((~finite).sum())
        loss_sum += F.cross_entropy(out, yb, reduction="sum").item()
        total += len(yb)
    return {"correct_naive": correct, "loss": loss_sum / total, "nonfinite_naive": bad}


def naive_row(model, grad, loader, n_row, eps_values, *, trials, seed) -> pd.DataFrame:
    """One Table 1 row, the naive way: a fresh deep copy per point."""
    k = sum(prm.numel() for prm in model.parameters())
    base = naive_evaluate(copy.deepcopy(model), loader)
    rows: list[dict[str, Any]] = []
    for pt in corruption_grid(eps_values, [n_row], trials=trials, p=P, k=k):
        eps, n, trial = pt["eps"], pt["n"], pt["trial"]
        if pt["method"] == "gradient":
            delta = C.gradient_corruption(grad, eps, P, n)
        else:
            gen = torch.Generator().manual_seed(derive_seed(seed, eps, n, trial))
            delta = C.random_corruption(k, eps, P, n, gen)
        net = copy.deepcopy(model)
        with torch.no_grad():
            offset = 0
            for prm in net.parameters():
                prm += delta[offset:offset + prm.numel()].view_as(prm)
                offset += prm.numel()
        rows.append({**pt, **naive_evaluate(net, loader), "base_correct": base["correct_naive"]})
    return pd.DataFrame.from_records(rows)


# --------------------------------------------------------------------------------------
# Comparison and report
# --------------------------------------------------------------------------------------

KEYS = ["method", "n", "eps", "trial"]


def compare(fast: pd.DataFrame, naive: pd.DataFrame, total: int) -> tuple[pd.DataFrame, bool]:
    merged = fast.merge(naive, on=KEYS, how="outer", suffixes=("_fast", "_naive"), indicator=True)
    fast_correct = (merged["accuracy"] * total / 100.0).round()
    merged["correct_fast"] = fast_correct
    merged["diff"] = merged["correct_naive"] - fast_correct
    unmatched = merged["_merge"] != "both"
    ok = not unmatched.any() and bool((merged["diff"].abs() <= 1).all())
    ok = ok and bool(((merged["base_accuracy"] * total / 100.0).round() == merged["base_correct"]).all())
    return merged, ok


def table1(fast: pd.DataFrame, k: int) -> pd.DataFrame:
    """Accuracy (%) per (n, eps): gradient vs random (mean over trials, and the minimum)."""
    out = []
    for (n, eps), grp in fast.groupby(["n", "eps"], sort=False):
        rnd = grp.loc[grp["method"] == "random", "accuracy"]
        out.append({"n": "k" if n == k else int(n), "eps": eps,
                    "random_mean": rnd.mean(), "random_min": rnd.min(),
                    "gradient": float(grp.loc[grp["method"] == "gradient", "accuracy"].iloc[0])})
    return pd.DataFrame(out)


def _mib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:,.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="1,000 test images, 2 random trials, 60 training steps (about a minute)")
    ap.add_argument("--images", type=int, default=None, help="test images (default 10000, --quick 1000)")
    ap.add_argument("--trials", type=int, default=None, help="random trials (default 5, --quick 2)")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="Adam steps before the sweep (default 200, --quick 60; 0 = seeded only)")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="batch size of the fast path (default: all images, one batch)")
    ap.add_argument("--also-batch", type=int, default=NAIVE_BATCH,
                    help=f"also time the engine at this batch size (default {NAIVE_BATCH}, the naive "
                         "path's, to separate the batch size from the rest; 0: skip)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads for the whole run (default: torch's own choice)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="times each path runs the grid; the fastest of each row counts (default 3)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    repeats = max(1, args.repeats)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = args.images or (1000 if args.quick else 10000)
    trials = args.trials or (2 if args.quick else 5)
    steps = args.train_steps if args.train_steps is not None else (60 if args.quick else 200)

    data = load("mnist")
    test = data.subset(test=images, seed=args.seed) if images < len(data.test_y) else data
    x, y = test.test_x, test.test_y
    total = len(y)
    batch_sizes = [args.batch_size or total]
    if args.also_batch and args.also_batch not in batch_sizes:
        batch_sizes.append(args.also_batch)

    torch.manual_seed(args.seed)
    model = build_model("small_cnn", 10, 1, 28)
    t0 = time.perf_counter()
    brief_training(model, data, steps, args.seed)
    train_s = time.perf_counter() - t0
    params = C.select_parameters(model)  # the whole model: Table 1 corrupts every parameter
    k = C.subspace_size(params)
    t0 = time.perf_counter()
    grad = C.subspace_gradient(model, params, F.cross_entropy, iter_batches(x, y, 1000), transform=data.normalize)
    grad_s = time.perf_counter() - t0

    loader = DataLoader(NormalizedImages(x, y, data.mean, data.std), batch_size=NAIVE_BATCH, shuffle=False)
    # warm-up of both code paths on a few images (library initialisation charged to neither)
    evaluate(model, x[:NAIVE_BATCH], y[:NAIVE_BATCH], transform=data.normalize)
    naive_evaluate(copy.deepcopy(model), DataLoader(NormalizedImages(x[:NAIVE_BATCH], y[:NAIVE_BATCH],
                                                                     data.mean, data.std), batch_size=NAIVE_BATCH))

    print(f"data: {data.name} test set, {total:,} images ({data.source}); "
          f"model: small_cnn, k = {k:,} parameters, seed {args.seed}, "
          f"{'seeded only' if steps == 0 else f'{steps} Adam steps ({train_s:.1f} s, untimed)'}")
    print(f"gradient over the {total:,} test images: {grad_s:.2f} s (once, shared, untimed)")
    load_avg = f"; 1-min load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}, CPUs: {os.cpu_count()}{load_avg}",
          flush=True)

    # Every path runs every Table 1 row, `repeats` times; the order of the paths is
    # rotated from one block of rows to the next, and each path's time is the sum over
    # rows of its fastest repeat (the median is shown too): bursts of load from other
    # processes then hit all paths alike, and hit the best time least.
    snapshot = state_snapshot(model)
    names = [f"fast (batch {bs})" for bs in batch_sizes] + [f"naive (batch {NAIVE_BATCH})"]
    tasks: dict[str, Callable[[int | None, tuple[float, ...]], pd.DataFrame]] = {
        name: functools.partial(fast_row, model, params, grad, x, y, transform=data.normalize,
                                trials=trials, seed=args.seed, batch_size=bs)
        for name, bs in zip(names, batch_sizes)
    }
    tasks[names[-1]] = functools.partial(naive_row, model, grad, loader, trials=trials, seed=args.seed)
    blocks: dict[str, list[list[Block]]] = {name: [[] for _ in TABLE1_ROWS] for name in names}
    tables: dict[str, list[pd.DataFrame]] = {name: [] for name in names}
    changed: dict[str, set[str]] = {name: set() for name in names}
    unstable: set[str] = set()
    turn = 0
    for rep in range(repeats):
        for i, (n_row, eps_values) in enumerate(TABLE1_ROWS):
            for name in names[turn % len(names):] + names[:turn % len(names)]:
                with measured() as block:
                    table = tasks[name](n_row, eps_values)
                blocks[name][i].append(block)
                print(f"  repeat {rep + 1}/{repeats}, n = {'k' if n_row is None else n_row}: "
                      f"{name} {block.wall:.1f} s", file=sys.stderr, flush=True)
                changed[name].update(bit_identical(model, snapshot))
                if rep == 0:
                    tables[name].append(table)
                else:
                    acc = "accuracy" if "accuracy" in table else "correct_naive"
                    if not table[acc].equals(tables[name][i][acc]):
                        unstable.add(name)
            turn += 1
    results = {name: pd.concat(tables[name], ignore_index=True) for name in names}
    naive = results[names[-1]]

    def best(name: str) -> tuple[float, float]:
        fastest = [min(row, key=lambda b: b.wall) for row in blocks[name]]
        return sum(b.wall for b in fastest), sum(b.cpu for b in fastest)

    def median_wall(name: str) -> float:
        return sum(statistics.median(b.wall for b in row) for row in blocks[name])

    def peak(name: str) -> int | None:
        values = [b.peak_added for row in blocks[name] for b in row if b.peak_added is not None]
        return max(values) if values else None

    fast = results[names[0]]
    points = len(fast)
    print("\nTable 1 grid (L∞), accuracy % on the test images (fast path):")
    print(table1(fast, k).to_string(index=False, float_format=lambda v: f"{v:g}"))
    if fast["nonfinite"].gt(0).any():
        print(f"points with non-finite logits (counted wrong): {int(fast['nonfinite'].gt(0).sum())}")

    print(f"\npoints evaluated: {points} per path and repeat (+{len(TABLE1_ROWS)} unperturbed baselines = "
          f"{points + len(TABLE1_ROWS)} evaluations of {total:,} images), {repeats} repeat(s)")
    if hasattr(os, "getloadavg"):
        print(f"1-min load average of the machine at the end: {os.getloadavg()[0]:.2f} "
              f"({os.cpu_count()} CPUs; other processes slow every path)")
    width = max(len(name) for name in names)
    print(f"{'path':<{width}} {'best wall s':>11} {'its CPU s':>9} {'points/s':>9} {'median wall s':>13} "
          f"{'peak RSS added':>15}")
    for name in names:
        wall, cpu = best(name)
        print(f"{name:<{width}} {wall:>11.2f} {cpu:>9.2f} {points / wall:>9.3f} {median_wall(name):>13.2f} "
              f"{_mib(peak(name)):>15}")
    naive_wall, naive_cpu = best(names[-1])
    for name in names[:-1]:
        wall, cpu = best(name)
        print(f"ratio naive/{name}: {naive_wall / wall:.2f}x best wall, {naive_cpu / cpu:.2f}x its CPU, "
              f"{median_wall(names[-1]) / median_wall(name):.2f}x median wall")
    runs = [(name, results[name], sorted(changed[name])) for name in names[:-1]]

    failed = False
    for name, table, moved in runs:
        merged, same = compare(table, naive, total)
        diffs = merged[merged["diff"].fillna(1e9) != 0]
        print(f"\n{name} vs naive: accuracy agrees exactly at {points - len(diffs)}/{points} points", end="")
        if len(diffs):
            print("; differences (naive − fast, in test examples):")
            print(diffs[KEYS + ["correct_fast", "correct_naive", "diff"]].to_string(index=False))
        else:
            print()
        finite = merged["loss_fast"].map(math.isfinite) & merged["loss_naive"].map(math.isfinite)
        rel = ((merged["loss_naive"] - merged["loss_fast"]).abs()
               / merged["loss_fast"].abs().clip(lower=1e-12))[finite]
        print(f"  loss: max relative difference {rel.max():.1e} over {int(finite.sum())} points with finite loss")
        print(f"  weights after this sweep: {'bit-identical' if not moved else f'CHANGED: {moved}'}")
        failed = failed or not same or bool(moved)
    naive_changed = sorted(changed[names[-1]])
    print(f"weights after the naive loop: {'bit-identical' if not naive_changed else f'CHANGED: {naive_changed}'}")
    if unstable:
        print(f"results differ between repeats for: {sorted(unstable)}")
    if failed or naive_changed or unstable:
        print("FAIL: the paths disagree (by more than one test example), a repeat gave other results, "
              "or the weights changed", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
