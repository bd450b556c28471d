"""glibc's allocator as ``make`` sets it (``ALLOC`` in the Makefile), side by side with its
defaults: the same training runs in fresh processes, with and without (issue 28, CPU levers).

Usage::

    OMP_NUM_THREADS=1 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2 \\
      PARAMSTRESS_DATA_MIRROR=../shared/data python benchmarks/allocator.py [--quick]

What is measured
----------------
By default glibc serves every block above its mmap threshold (128 KiB, rising to 32 MiB as
blocks are freed) with a fresh ``mmap`` and unmaps it on ``free``; freed heap above 128 KiB is
given back to the system. A training step allocates and frees its activations and gradients,
so every step faults those pages in again. ``ALLOC`` (read from the Makefile, the one place it
is written) turns ``mmap`` off and keeps up to 1 GiB of freed heap. The variables are read
when a process starts, so each run is a fresh Python process: the child mode of this script
trains one workload and prints its time and a digest of the trained weights.

Workloads, at the ``local`` pages' sizes (``--quick``: subsets, for a smoke test):

- ``de-en``: one epoch of text_tasks' De-En Transformer (cross-entropy);
- ``ptb-parsing-eq13``: one epoch of the PTB-Parsing model with Sun et al.'s Eq. 13 (two
  passes and a corruption of every parameter per step, as text_resistant_training trains it);
- ``resnet18``: one epoch of selective_backprop's ResNet-18 parent (2,000 MNIST images);
- ``small_cnn``: one epoch of resistant_training's small CNN (12,000 Fashion-MNIST images).

The two settings take turns (order reversed every other round); each setting's best time
counts. Exits 1 if the weights differ in any bit between the settings (an allocator must
change no number).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("de-en", "ptb-parsing-eq13", "resnet18", "small_cnn")


def alloc_settings() -> dict[str, str]:
    """``ALLOC`` of the Makefile as ``{variable: value}``."""
    line = re.search(r"^ALLOC := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    if line is None:
        raise SystemExit("no `ALLOC := ...` line in the Makefile")
    return dict(kv.split("=", 1) for kv in line.group(1).split())


def digest(model) -> str:
    """A hash of :func:`_helpers.bits` (the weights' bytes), comparable across processes."""
    from _helpers import bits

    h = hashlib.sha256()
    for k, v in sorted(bits(model).items()):
        h.update(k.encode())
        h.update(v.cpu().reshape(-1).numpy().tobytes())
    return h.hexdigest()[:16]


def child(workload: str, quick: bool) -> None:
    import torch
    import yaml

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as ckpt:
        if workload in ("de-en", "ptb-parsing-eq13"):
            from paramstress.corruption.text import tasks as T

            p = yaml.safe_load((ROOT / "params" / "text_tasks.yml").read_text())["defaults"]
            key = "de-en" if workload == "de-en" else "ptb-parsing"
            params = dict(p["task_params"][key])
            if quick:
                params.update({"train_samples": 1000} if key == "de-en" else {"max_train_sentences": 500})
            task = T.build_task(key, device="cpu", **params)
            extra = {} if key == "de-en" else {"objective": "corruption_direct",
                                                "objective_params": {"alpha": 0.5, "eps": 0.05, "p": 2}}
            cfg = T.TaskTrainConfig(**dict(p["train_params"][key], epochs=1), seed=0, **extra)
            started = time.perf_counter()
            model = T.train_task(task, cfg, checkpoint_dir=ckpt).model
        else:
            from paramstress import data, training
            from paramstress.filtering import landscape

            name, subset = ("resnet18", "mnist") if workload == "resnet18" else ("small_cnn", "fashion-mnist")
            n = {"resnet18": 2000, "small_cnn": 12000}[workload] // (4 if quick else 1)
            ds = data.load(subset)
            overrides = {"batch_size": 128} if workload == "small_cnn" else {}
            cfg = landscape.train_config(name, epochs=1, keep_epochs=[1], seed=0, train_subset=n, test_subset=300,
                                         **overrides)
            started = time.perf_counter()
            model = training.train(None, ds, cfg, checkpoint_dir=ckpt, progress=False).model
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "digest": digest(model)}))


def run(workload: str, alloc: dict[str, str] | None, quick: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(alloc or {})
    cmd = [sys.executable, __file__, "--child", workload] + (["--quick"] if quick else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="subsets, one round (a smoke test, about a minute)")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=WORKLOADS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.quick)
        return 0
    alloc = alloc_settings()
    print("ALLOC:", " ".join(f"{k}={v}" for k, v in alloc.items()))
    print("pins:", " ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                            if k.split("_")[0] in ("OMP", "MKL", "ATEN", "ONEDNN")) or "none")
    repeats = 1 if args.quick else args.repeats
    rows, failed = [], False
    for w in args.workloads:
        # not _helpers.best_of: it would time the whole child process (start, imports, data);
        # what counts here is the training time each child reports
        best = {"glibc defaults": float("inf"), "ALLOC": float("inf")}
        digests = set()
        for r in range(repeats):
            for name in (list(best) if r % 2 == 0 else list(reversed(best))):
                res = run(w, alloc if name == "ALLOC" else None, args.quick)
                best[name] = min(best[name], res["seconds"])
                digests.add(res["digest"])
        same = len(digests) == 1
        failed |= not same
        rows.append((w, best["glibc defaults"], best["ALLOC"], best["glibc defaults"] / best["ALLOC"], same))
    print(f"\n{'workload':18s} {'defaults s':>10s} {'ALLOC s':>8s} {'speed-up':>8s}  weights")
    for w, a, b, ratio, same in rows:
        print(f"{w:18s} {a:10.1f} {b:8.1f} {ratio:7.2f}x  {'bit-identical' if same else 'DIFFER'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
