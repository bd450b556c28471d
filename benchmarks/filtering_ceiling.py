"""How much of a network's arithmetic the filtering sweep's activation reuse can skip.

Usage::

    python benchmarks/filtering_ceiling.py [--archs resnet18 shufflenet_v2_x1_0] [--channels 1 --size 28]

Why
---
Issue 6 asks the synaptic-filtering sweep to beat a naive loop by 10× on a CPU, where the
forward passes are the cost. Of the exact savings (``paramstress.filtering``'s module
docstring), only *activation reuse* removes arithmetic on every point: for a local scope
(one conv/linear layer filtered), the part of the graph that does not depend on the
filtered weight is computed once per scope and each threshold runs only the rest (the
``tail`` of :func:`paramstress.filtering.split_at`). Deduplication skips whole points
(a few per cent of them on trained weights, ``benchmarks/filtering.py``), and the naive
loop's host-side overhead (deep copies, a per-sample ``DataLoader``, autograd) is a small
share of a CPU forward pass. So the FLOPs of the tails bound what an exact CPU sweep gains.

What is computed
----------------
For each network (untrained: the split depends on the graph, not on the weights), the
floating-point operations of one forward pass (``torch.utils.flop_counter``: convolutions,
linear layers and matrix products; batch norm, activations and pooling are not counted),
and, for **every** filterable layer (the paper's local analysis), the operations of the
tail that :func:`~paramstress.filtering.split_at` cuts for it, run on the head's real
frontier. Printed per network: the number of layers, the ratio Σ full / Σ tail over all
layers (every layer swept with the same grid), the same with the global scope added (no
reuse there), and the tail share of the first, middle and last layers. This is a count,
not a timing: it says nothing about memory traffic or per-call overhead, which on a CPU
add to both paths alike.
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from paramstress import filtering as FL
from paramstress.models import build_model


def flops(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def ceiling(arch: str, channels: int, size: int, classes: int = 10) -> dict:
    model = build_model(arch, classes, channels, size, seed=0).eval()
    x = torch.zeros(2, channels, size, size)
    with torch.inference_mode():
        full = flops(model, x)
        tails = {}
        for layer in FL.filterable_layers(model):
            split = FL.split_at(model, [model.get_submodule(layer).weight])
            frontier = split.head(x)
            frontier = frontier if isinstance(frontier, tuple) else (frontier,)
            tails[layer] = flops(split.tail, *frontier)
    n = len(tails)
    return {"arch": arch, "layers": n, "full": full, "tails": tails,
            "local": n * full / sum(tails.values()),
            "with_global": (n + 1) * full / (sum(tails.values()) + full)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "resnet50", "squeezenet1_1", "shufflenet_v2_x1_0"])
    ap.add_argument("--channels", type=int, default=1, help="input channels (default 1: MNIST-like)")
    ap.add_argument("--size", type=int, default=28, help="input side in pixels (default 28)")
    args = ap.parse_args(argv)
    print(f"input {args.channels}×{args.size}×{args.size}; FLOPs of conv/linear/matmul per image")
    print(f"{'network':20s} {'layers':>6s} {'MFLOPs':>8s} {'every layer':>12s} {'+ global':>9s}  tail share: first / middle / last")
    for arch in args.archs:
        r = ceiling(arch, args.channels, args.size)
        share = [t / r["full"] for t in r["tails"].values()]
        mid = share[len(share) // 2]
        print(f"{arch:20s} {r['layers']:6d} {r['full'] / 2e6:8.1f} {r['local']:11.2f}x {r['with_global']:8.2f}x  "
              f"{share[0]:.2f} / {mid:.2f} / {share[-1]:.4f}")
        if not all(0 < s <= 1.0 + 1e-9 for s in share):
            print(f"FAIL: a tail of {arch} counts more operations than the whole network", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
