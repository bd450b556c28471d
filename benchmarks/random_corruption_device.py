"""Where random corruption's ``top_n`` and signs run: on the CPU that draws ``r``, or on the
model's device.

Usage::

    python benchmarks/random_corruption_device.py [--device cuda] [--k 21282122] [--repeats 5]

What is measured
----------------
One random corruption (Eq. 5 of Sun et al. 2021; :func:`paramstress.corruption.random_corruption`)
of ``k`` parameters (default: ResNet-34 with a CIFAR stem, ``k = 21,282,122``) under
``L∞``, for ``n = k`` (Table 1's and Fig. 3's dense rows) and ``n = 100`` (the sparse rows),
delivered as a float64 vector on ``--device``, as :func:`paramstress.sweep.corruption_sweep`
needs it for each random row:

- **cpu-solve**: ``random_corruption(..., dtype=float64).to(device)``: the draw, ``top_n``,
  signs and scaling on the CPU, then the copy (the sweep before 2026-11-27);
- **device-solve**: ``random_corruption(..., dtype=float64, device=device)``: the draw on the
  seeded CPU generator, the copy of ``r``, then ``top_n``, signs and scaling on the device.

Both draw the same ``r`` (one seed per repeat) and must return bit-identical vectors under
``L∞`` (exit status 1 otherwise). The paths take turns, each repeat synchronised with the
device; the best and the median of ``--repeats`` are printed, and the ratio of the best times.
The first call of each path (allocator and kernel warm-up) is not timed.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from paramstress import corruption as C


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--k", type=int, default=21_282_122)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device here; use --device cpu (both paths are then the same)")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"k = {args.k:,}, torch {torch.__version__}, CPU threads {torch.get_num_threads()}")

    paths = {
        "cpu-solve": lambda n, s: C.random_corruption(args.k, 1e-3, math.inf, n, torch.Generator().manual_seed(s),
                                                      dtype=torch.float64).to(device),
        "device-solve": lambda n, s: C.random_corruption(args.k, 1e-3, math.inf, n,
                                                         torch.Generator().manual_seed(s),
                                                         dtype=torch.float64, device=device),
    }
    ok = True
    for n in (args.k, 100):
        times: dict[str, list[float]] = {name: [] for name in paths}
        for name, fn in paths.items():  # warm-up, untimed
            fn(n, 0)
        _sync(device)
        for rep in range(args.repeats):
            out = {}
            order = list(paths) if rep % 2 == 0 else list(reversed(paths))
            for name in order:
                _sync(device)
                t0 = time.perf_counter()
                out[name] = paths[name](n, rep + 1)
                _sync(device)
                times[name].append(time.perf_counter() - t0)
            if not torch.equal(out["cpu-solve"], out["device-solve"]):
                print(f"n = {n}: the two paths differ at repeat {rep}")
                ok = False
        best = {name: min(v) for name, v in times.items()}
        for name, v in times.items():
            print(f"n = {n:>10,}  {name:<13} best {best[name]:.3f} s  median {statistics.median(v):.3f} s")
        print(f"n = {n:>10,}  device-solve / cpu-solve (best): {best['device-solve'] / best['cpu-solve']:.2f}")
    print("outputs bit-identical" if ok else "OUTPUTS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
