"""Channels-last weights on a CPU: the evaluation and the filter sweep, each layout side by side.

Usage::

    PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/channels_last.py [--quick]

Run it pinned as ``make book`` runs the pages (one thread, vector instructions capped at
AVX2: ``OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``); the script sets
``torch.set_num_threads(1)`` itself.

What is measured (issue 28, "CPU kernels")
-----------------------------------------
1. **Evaluation** (:func:`paramstress.sweep.evaluate`, which every corruption sweep, Table 1/2
   column and vulnerability probe calls): each network of ``--models``, seeded and briefly
   trained (``--train-steps`` Adam steps on MNIST, untimed), evaluated on the MNIST test
   images (``--images``) in batches of 1,000, once through the contiguous model
   (``model`` itself) and once through :func:`paramstress.sweep.channels_last_forward`
   (channels-last copies of the 4-D weights, what ``evaluate`` now runs).
2. **Filter sweep** (:func:`paramstress.filtering.filter_sweep`, regenerate mode, as the
   Δφ scorings of selective_backprop, corruption_vs_filtering and method_choices run it):
   ``--layers`` evenly spaced layers of the first model, 3 filters × ``--T`` thresholds, on
   ``--sweep-images`` test images, with :func:`paramstress.filtering.channels_last_on_cpu`
   (what the sweep now does) and with it replaced by a no-op (the layout before).

The two paths take turns ``--repeats`` times; each path's best time counts. The script exits
1 if the accuracies of the two layouts differ by more than one example per evaluation (the
logits differ in the last bits), if any sweep row's accuracy differs by more than one
example, or if the model's weights are not bit-identical afterwards.
"""
from __future__ import annotations

import argparse
import contextlib
import sys

import torch

from _helpers import best_of, bits, trained

from paramstress import data
from paramstress.engine import sweep
from paramstress.filtering import filters


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats, one model (a minute)")
    ap.add_argument("--models", nargs="+", default=["small_cnn", "resnet18_cifar_w16", "resnet18"])
    ap.add_argument("--images", type=int, default=4000, help="MNIST test images evaluated (default 4000)")
    ap.add_argument("--train-steps", type=int, default=100, help="Adam steps before timing (default 100)")
    ap.add_argument("--layers", type=int, default=5, help="filtered layers of the sweep (default 5)")
    ap.add_argument("--T", type=int, default=5, help="thresholds per filter (default 5, as the local pages)")
    ap.add_argument("--sweep-images", type=int, default=100, help="images of the sweep (default 100, as the pages)")
    ap.add_argument("--sweep-model", default="resnet18", help="network of the sweep (default resnet18)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.quick:
        args.models, args.images, args.repeats, args.layers = ["small_cnn"], 1000, 2, 2
    torch.set_num_threads(1)
    ds = data.load("mnist")
    x, y = ds.test_x[:args.images], ds.test_y[:args.images]
    failed = False
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, 1 thread; "
          f"MNIST, {len(y)} test images, batches of 1000")
    print(f"{'model':<20} {'contiguous s':>12} {'channels-last s':>15} {'ratio':>6}  accuracy (contiguous / channels-last)")
    for name in args.models:
        model = trained(name, ds, args.train_steps)
        before = bits(model)

        def contiguous() -> float:
            with torch.inference_mode():
                return sum(int((model(ds.normalize(xb)).argmax(1) == yb).sum()) for xb, yb in
                           zip(x.split(1000), y.split(1000)))

        def last() -> float:
            return round(sweep.evaluate(model, x, y, batch_size=1000, transform=ds.normalize,
                                        metrics=["accuracy"])["accuracy"] * len(y) / 100)

        times, out = best_of({"contiguous": contiguous, "channels_last": last}, args.repeats)
        ok = abs(out["contiguous"] - out["channels_last"]) <= 1 and all(
            torch.equal(before[k], v) for k, v in bits(model).items())
        failed |= not ok
        print(f"{name:<20} {times['contiguous']:>12.2f} {times['channels_last']:>15.2f} "
              f"{times['contiguous'] / times['channels_last']:>5.2f}x  {out['contiguous']} / {out['channels_last']}"
              + ("" if ok else "  MISMATCH"))
    model = trained(args.sweep_model, ds, args.train_steps)
    before = bits(model)
    layers = filters.filterable_layers(model)
    scopes = [layers[round(i * (len(layers) - 1) / max(1, args.layers - 1))] for i in range(args.layers)]
    xs, ys = ds.test_x[:args.sweep_images], ds.test_y[:args.sweep_images]
    real = filters.channels_last_on_cpu

    def run(layout):
        filters.channels_last_on_cpu = layout
        try:
            return filters.filter_sweep(model, xs, ys, scopes=scopes, T=args.T, eps=0.2, adversarial="regenerate",
                                        transform=ds.normalize, batch_size=500)
        finally:
            filters.channels_last_on_cpu = real

    times, out = best_of({"contiguous": lambda: run(lambda m: contextlib.nullcontext()),
                          "channels_last": lambda: run(real)}, max(1, args.repeats - 1))
    cols = ["clean_accuracy", "adv_accuracy"]
    diff = (out["contiguous"][cols] - out["channels_last"][cols]).abs()
    rows = int((diff > 0).any(axis=1).sum())
    ok = float(diff.max().max()) <= 100.0 / len(ys) + 1e-9 and all(
        torch.equal(before[k], v) for k, v in bits(model).items())
    failed |= not ok
    print(f"\nfilter sweep, {args.sweep_model}, regenerate mode, {len(scopes)} layers × 3 filters × T = {args.T}, "
          f"{len(ys)} images ({len(out['contiguous'])} rows): contiguous {times['contiguous']:.1f} s, "
          f"channels-last {times['channels_last']:.1f} s, {times['contiguous'] / times['channels_last']:.2f}x; "
          f"rows whose accuracy differs: {rows} (at most {float(diff.max().max()):.1f} points)"
          + ("" if ok else "  MISMATCH"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
