"""SqueezeNet 1.1 trained as Pravin et al. (2023, §4.3) train it, at score_landscapes' `gpu` sizes.

Reproduces the check quoted on the score-landscapes page and in params/score_landscapes.yml:
torchvision's SqueezeNet 1.1 (1-channel first convolution for the digits), Adam 1e-3, batch 100,
constant rate, no augmentation (``paramstress.landscape.train_config``), 30,000 training images
and 1,000 test images per data set, 10 epochs, seed 0, on the CPU. For each data set it prints the
test accuracy after every epoch, the classes the trained network ever predicts on the test images
and how many class logits are exactly 0 on every one of them: SqueezeNet's classifier is a 1×1
convolution followed by a ReLU, and a class whose logit the ReLU silences on every input gets no
gradient again, so the network can settle on a few classes (or none) for good. A network whose
clean accuracy is not above the shared adversarial target cannot be attacked down to it (Def. 7);
the page keeps such networks clean-only (``landscape.study(unreachable="clean-only")``).

    PARAMSTRESS_DATA_MIRROR=../shared/data .venv/bin/python scripts/squeezenet_collapse.py [--epochs 10]

Seen on a 2-core AMD EPYC (2026-11-26, 2 threads, about 2 minutes per data set when nothing else
runs): MNIST 41.8 % (4 of 10 classes predicted, 6 logits always 0), Fashion-MNIST 29.6 % (3 classes,
8 logits), CIFAR-10 JPEG 10.4 % (1 class, all 10 logits always 0), each flat from epoch 2 on. The
checkpoints go to ``--checkpoints`` (a temporary folder by default), not to the book's cache.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch

from paramstress import data, landscape, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist", "cifar10-jpeg"])
    parser.add_argument("--arch", default="squeezenet1_1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-samples", type=int, default=30000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--checkpoints", default=None, help="checkpoint folder (default: a temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.checkpoints or tmp
        for name in args.datasets:
            ds = data.load(name)
            cfg = landscape.train_config(args.arch, epochs=args.epochs, keep_epochs=[], seed=args.seed,
                                         train_subset=args.train_samples, test_subset=args.test_samples,
                                         eval_batch_size=1000)
            start = time.perf_counter()
            result = training.train(None, ds, cfg, device="cpu", checkpoint_dir=folder, progress=False)
            x, y = landscape.eval_data(ds, cfg)
            with torch.inference_mode():
                logits = result.model.eval()(ds.normalize(x))
            predicted = sorted(set(logits.argmax(1).tolist()))
            silent = int((logits.abs().amax(0) == 0).sum())
            curve = ", ".join(f"{100 * h.test_accuracy:.1f}" for h in result.history)
            print(f"{args.arch} on {name}: {time.perf_counter() - start:.0f} s; test accuracy (%) by epoch: {curve}; "
                  f"classes predicted: {predicted} ({len(predicted)} of {ds.num_classes}); "
                  f"class logits 0 on every test image: {silent}", flush=True)


if __name__ == "__main__":
    main()
