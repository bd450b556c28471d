"""Seconds per training epoch of the shared training loop under a few settings.

Usage::

    PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/train_throughput.py \
        [--model resnet34_cifar] [--dataset cifar10-jpeg] [--epochs 3] [--device cuda]

What is measured
----------------
:func:`paramstress.training.train` (the loop every page trains with) for ``--epochs``
epochs of ``--model`` on all of ``--dataset`` under each variant below, one after another
in this process. Per variant: the seconds of each epoch (``EpochStats.seconds``: the
training pass and the per-epoch test evaluation), the wall seconds of the whole call
(checkpoint writes included), and the test accuracy after the last epoch (only a sanity
check at so few epochs). The first epoch of the first variant carries the device's
warm-up (cuDNN autotuning, allocator growth); compare the later epochs.

Variants (each a change from the corruption page's gpu recipe: batch 256, lr 0.1,
one-cycle, crop+flip, label smoothing 0.1, bf16 autocast, channels_last, a checkpoint
after every epoch):

- ``base``: that recipe, checkpoints into a temporary folder;
- ``no-checkpoints``: the same without a checkpoint folder (how much the per-epoch
  atomic checkpoint write costs);
- ``batch-512`` / ``batch-1024``: larger batches, the peak learning rate scaled linearly;
- ``no-channels-last``: the default memory format;
- ``cutout-16``: with a 16-pixel cutout square per image (``TrainConfig.cutout``).

Why: the corruption page's ResNet-34 (issue 3) needs more epochs than fit one 10-minute
command at the rate seen on an H200 (80 epochs in 352.9 s of training, 2026-11-27).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from paramstress import data, training

VARIANTS = {
    "base": ({}, True),
    "no-checkpoints": ({}, False),
    "batch-512": ({"batch_size": 512, "lr": 0.2}, False),
    "batch-1024": ({"batch_size": 1024, "lr": 0.4}, False),
    "no-channels-last": ({"channels_last": False}, False),
    "cutout-16": ({"cutout": 16}, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet34_cifar")
    parser.add_argument("--dataset", default="cifar10-jpeg")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch carries the warm-up)")

    started = time.perf_counter()
    ds = data.load(args.dataset).to(args.device)
    print(f"{args.dataset}: {len(ds.train_y)} training images on {args.device} "
          f"({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'cpu'}), "
          f"loaded in {time.perf_counter() - started:.1f} s", flush=True)
    later_by_variant: dict[str, float] = {}
    for name in args.variants:
        overrides, checkpoints = VARIANTS[name]
        settings = dict(model=args.model, epochs=args.epochs, label_smoothing=0.1, hflip=ds.image_shape[0] == 3)
        cfg = training.TrainConfig(**{**settings, **overrides})
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = training.train(None, ds, cfg, device=args.device,
                                    checkpoint_dir=tmp if checkpoints else None, progress=False)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
        epochs = [h.seconds for h in result.history]
        later = statistics.median(epochs[1:])
        later_by_variant[name] = later
        print(f"{name:18s} epochs (s): {', '.join(f'{s:.2f}' for s in epochs)}  | later-epoch median "
              f"{later:.2f} s | call {wall:.1f} s | test acc {100 * result.final_test_accuracy:.2f} %", flush=True)
    base = later_by_variant.get("base")
    if base:
        print("\nlater-epoch seconds relative to base:")
        for name, later in later_by_variant.items():
            print(f"  {name:18s} {later / base:.2f}x")


if __name__ == "__main__":
    main()
