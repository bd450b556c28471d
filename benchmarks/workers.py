"""Filtering studies on Ray against the same study one job after another, and Ray's start time.

Usage::

    PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/workers.py [--quick] [--workers 2] [--device cpu]
        [--gpus-per-job 0.25]

What is measured
----------------
:func:`paramstress.landscape.study` (Pravin et al. 2023, §4.3 and §5: per network and data
set, train every seed, choose the FGSM ε of Defs. 7-9, filter every kept snapshot) over
``--archs`` × ``--datasets``, at small settings (``--train-samples`` training images,
``--epochs`` epochs with a snapshot after each, ``--test-samples`` evaluation images,
``--T`` thresholds, ``--layers`` local scopes and the global one). Three paths, each into a
fresh, empty checkpoint folder, so that every path computes everything:

- **serial**: ``workers=1``, this process, ``--threads`` intra-op threads: what the book's
  notebooks do at ``workers: 1``;
- **workers**: ``workers=--workers``: a local Ray instance with that many CPUs
  (:func:`paramstress.engine.workers.run_jobs`, started and shut down inside the timed
  call), each job with ``--threads`` threads (and ``--gpus-per-job`` of a GPU);
- **serial, all threads**: ``workers=1`` with ``--workers × --threads`` threads, the other way
  to use the same cores (timed only: a different thread count rounds float reductions
  differently on a CPU, so its numbers are not compared bit for bit).

The first two must agree: on a CPU bit for bit (eps choices, per-epoch test accuracies,
every sweep row), or the script exits 1; on CUDA, where training is not bitwise
reproducible even in one process, the largest differences are printed. The paths run
one after another (serial, workers, serial with all threads); compare them within one
run only. Printed: wall seconds per path, the ratios, the machine's 1-minute load average,
and, first, the seconds to start and to shut down an empty local Ray instance with
``--workers`` CPUs (what the workers path pays before its first job).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import pandas as pd
import torch

from paramstress import data, training
from paramstress import landscape as L
from paramstress.engine import workers as W
from paramstress.provenance import pick_device


def ray_start(workers: int) -> tuple[float, float]:
    """Seconds to start a local Ray instance with ``workers`` CPUs (ready for tasks), and to shut it down."""
    start = time.perf_counter()
    with W.ray_session(workers=workers) as ray:
        ray.get(ray.remote(lambda: 0).remote())  # one trivial task: a worker process is up
        up = time.perf_counter()
    return up - start, time.perf_counter() - up


def run(archs, sets, *, workers, threads, folder, device, settings, gpus_per_job=None):
    os.environ[training.CHECKPOINT_DIR_ENV] = folder
    if workers == 1:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    result = L.study(archs, sets, workers=workers, threads=threads, device=device, gpus_per_job=gpus_per_job,
                     **settings)
    return result, time.perf_counter() - start


def compare(a, b, exact: bool) -> list[str]:
    problems = []
    for key in a:
        x, y = a[key], b[key]
        if exact:
            if x.eps != y.eps:
                problems.append(f"{key}: eps {x.eps['eps']} != {y.eps['eps']}")
            hx = [[h.test_accuracy for h in r.history] for r in x.runs.values()]
            hy = [[h.test_accuracy for h in r.history] for r in y.runs.values()]
            if hx != hy:
                problems.append(f"{key}: test accuracies {hx} != {hy}")
            try:
                pd.testing.assert_frame_equal(x.sweeps, y.sweeps)
            except AssertionError as err:
                problems.append(f"{key}: sweeps differ: {str(err).splitlines()[0]}")
        else:
            gap = (x.sweeps[["clean_accuracy", "adv_accuracy"]] - y.sweeps[["clean_accuracy", "adv_accuracy"]]).abs()
            print(f"  {key}: eps {x.eps['eps']:.4g} / {y.eps['eps']:.4g}; final test accuracy "
                  f"{100 * x.runs[min(x.runs)].final_test_accuracy:.2f} / {100 * y.runs[min(y.runs)].final_test_accuracy:.2f} %; "
                  f"largest sweep accuracy gap {gap.to_numpy().max():.2f} points")
    return problems


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", nargs="+", default=["resnet18", "shufflenet_v2_x1_0"])
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gpus-per-job", type=float, default=None,
                    help="GPU share per Ray job (default: the GPUs found shared out among the workers)")
    ap.add_argument("--train-samples", type=int, default=4000)
    ap.add_argument("--test-samples", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--T", type=int, default=11)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--adv-target", type=float, default=50.0, help="shared adversarial accuracy (%%), Defs. 7-9")
    ap.add_argument("--no-wide", action="store_true", help="skip the serial run with all threads")
    ap.add_argument("--quick", action="store_true",
                    help="the ci profile's sizes: 2,000 training images, 100 test images, 2 epochs, T = 5, 3 layers, "
                         "adversarial target 25 %%")
    args = ap.parse_args(argv)
    if args.quick:
        args.train_samples, args.test_samples, args.epochs, args.T, args.layers, args.adv_target = 2000, 100, 2, 5, 3, 25.0
    device = pick_device(args.device)
    sets = {d: data.load(d) for d in args.datasets}  # checked before any compute
    settings = dict(seeds=[0], eps_seed=0, epochs=args.epochs, snapshot_epochs=list(range(1, args.epochs + 1)),
                    train_samples=args.train_samples, test_samples=args.test_samples, adv_target=args.adv_target, eps_max=2.0,
                    T=args.T, layers=args.layers, eval_batch_size=max(args.test_samples, 100))
    jobs = len(args.archs) * len(args.datasets)
    print(f"{jobs} jobs ({', '.join(args.archs)} x {', '.join(args.datasets)}); {args.train_samples:,} training "
          f"images, {args.epochs} epoch(s), T = {args.T}, {args.layers} layers + global; device {device}; "
          f"{os.cpu_count()} cores")
    t_up, t_down = ray_start(args.workers)
    print(f"Ray: local instance with {args.workers} CPUs up (one task run) in {t_up:.1f} s, shut down in {t_down:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        serial, t_serial = run(args.archs, sets, workers=1, threads=args.threads, folder=f"{tmp}/serial",
                               device=device, settings=settings)
        print(f"serial, {args.threads} thread(s): {t_serial:.1f} s (load {os.getloadavg()[0]:.2f})")
        parallel, t_par = run(args.archs, sets, workers=args.workers, threads=args.threads, folder=f"{tmp}/workers",
                              device=device, settings=settings, gpus_per_job=args.gpus_per_job)
        print(f"Ray, {args.workers} workers x {args.threads} thread(s): {t_par:.1f} s, its start included "
              f"(load {os.getloadavg()[0]:.2f})")
        if not args.no_wide:
            wide = args.workers * args.threads
            _, t_wide = run(args.archs, sets, workers=1, threads=wide, folder=f"{tmp}/wide", device=device,
                            settings=settings)
            print(f"serial, {wide} thread(s): {t_wide:.1f} s (load {os.getloadavg()[0]:.2f})")
    exact = device.type == "cpu"
    problems = compare(serial, parallel, exact)
    print(f"ratio serial / Ray workers: {t_serial / t_par:.2f}x" +
          ("" if args.no_wide else f"; serial with all threads / workers: {t_wide / t_par:.2f}x"))
    if problems:
        print("MISMATCH between the serial and the worker results:\n  " + "\n  ".join(problems))
        return 1
    print("results: " + ("identical bit for bit (eps, test accuracies, every sweep row)" if exact
                         else "compared above (CUDA training is not bitwise reproducible)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
