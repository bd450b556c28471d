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

``--sweep-images N`` (0: skip) then times whole sweeps: :func:`paramstress.sweep.corruption_sweep`
of the same model (``resnet34_cifar``, seeded initial weights: the time does not depend on
training) on the first ``N`` CIFAR-10 (JPEG copy) test images, ``--sweep-trials`` random rows
at each of the corruption page's Fig. 3 ε (n = k) and Table 1's n = 100 ε, with ``prefetch``
(the next row's draw in a background thread while the current row is evaluated) against
without, twice each in alternating order; rows must be identical (exit status 1 otherwise).
Data: ``paramstress.data.load("cifar10-jpeg")`` (the mirror or a download, as everywhere).
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch

from paramstress import corruption as C
from paramstress.provenance import pick_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto",
                    help="auto (default: cuda when available), cuda or cpu (paramstress.provenance.pick_device; "
                         "on a CPU both paths are the same)")
    ap.add_argument("--k", type=int, default=21_282_122)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sweep-images", type=int, default=0, help="test images per sweep row (0: no sweep timing)")
    ap.add_argument("--sweep-trials", type=int, default=2)
    args = ap.parse_args()
    if args.sweep_images < 0 or args.sweep_trials < 1:
        sys.exit("--sweep-images must be >= 0 and --sweep-trials >= 1")
    device = pick_device(args.device)  # fails here, before any work, if CUDA is asked for but absent
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
    if args.sweep_images:
        ok = _time_sweeps(device, args.sweep_images, args.sweep_trials) and ok
    return 0 if ok else 1


def _time_sweeps(device: torch.device, images: int, trials: int) -> bool:
    from paramstress import data, models
    from paramstress import sweep as S

    ds = data.load("cifar10-jpeg").subset(train=images, test=images, seed=0).to(device)
    torch.manual_seed(0)
    model = models.build_model("resnet34_cifar", 10, 3, 32).to(device).eval()
    params = C.select_parameters(model)
    k = C.subspace_size(params)
    grad = torch.randn(k, generator=torch.Generator().manual_seed(1))  # the random rows only use g for aᵀg
    fig3 = [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
    grids = [dict(eps_values=fig3, n_values=[None]), dict(eps_values=[1e-2, 1e-1, 1.0, 10.0, 100.0], n_values=[100])]
    rows = sum(len(g["eps_values"]) for g in grids) * trials
    print(f"sweeps: resnet34_cifar (k = {k:,}), {images} CIFAR-10 (JPEG) test images per row, "
          f"{rows} random rows (Fig. 3's ε at n = k and Table 1's at n = 100, {trials} trials)")

    def run(prefetch: bool) -> tuple[float, list]:
        _sync(device)
        t0 = time.perf_counter()
        out = [S.corruption_sweep(model, params, grad, ds.test_x, ds.test_y, methods=["random"], trials=trials,
                                  p=math.inf, seed=0, batch_size=1000, transform=ds.normalize,
                                  prefetch=prefetch, **g) for g in grids]
        _sync(device)
        return time.perf_counter() - t0, out

    times: dict[bool, list[float]] = {True: [], False: []}
    tables: dict[bool, list] = {}
    for order in ((True, False), (False, True)):
        for prefetch in order:
            seconds, tables[prefetch] = run(prefetch)
            times[prefetch].append(seconds)
    same = all(a.equals(b) for a, b in zip(tables[True], tables[False]))
    for prefetch in (False, True):
        label = "prefetch" if prefetch else "in turn"
        print(f"sweep {label:<9} best {min(times[prefetch]):.2f} s  ({', '.join(f'{t:.2f}' for t in times[prefetch])})")
    print(f"sweep prefetch / in turn (best): {min(times[True]) / min(times[False]):.2f}; rows "
          + ("identical" if same else "DIFFER"))
    return same


if __name__ == "__main__":
    raise SystemExit(main())
