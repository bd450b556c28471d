"""Seconds per training epoch, per evaluation and per gradient of the text tasks at a profile's sizes.

    python benchmarks/text_epochs.py [--profile gpu|ci] [--tasks ptb-lm ptb-parsing de-en] [--epochs 1]
                                     [--device cuda] [--set de-en.max_tokens=2048 ...]

Why: the gpu profiles of text_tasks, text_vulnerability and text_resistant_training (issue 29
item 4) must fit one 10-minute GPU command, and no GPU time of these tasks has been measured.
For each task the script builds it with the profile's ``task_params`` (params/text_tasks.yml),
trains ``--epochs`` epochs of the profile's ``train_params`` schedule (with ``epochs`` set to
``--epochs``, so the learning-rate schedule is a short one; the seconds per epoch are what
matter), then times one evaluation on the task's evaluation split (De-En: beam search and BLEU
on the whole test split at the gpu profile) and one gradient (Algorithm 2). It prints one line
per task, and a JSON line at the end, with which a profile's epochs and sweep sizes are set:
a page's time is about ``epochs x epoch_s + (sweep points) x evaluate_s``.
Nothing is cached (a temporary checkpoint folder), so every run measures training. Without
``--profile`` the sizes are the gpu profile's on CUDA and the ci profile's on a CPU (so that
``make benchmarks`` stays short there).
"""
from __future__ import annotations

import argparse
import ast
import json
import sys
import tempfile
import time

import torch

from paramstress import tasks as T
from paramstress.book import profiles


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=None,
                    help="profile of params/text_tasks.yml whose sizes are timed (default: gpu on CUDA, else ci)")
    ap.add_argument("--tasks", nargs="+", default=None, help="task keys (default: the profile's text_tasks)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs trained per task (the first includes warm-up)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--set", action="append", default=[], metavar="TASK.KEY=VALUE",
                    help="override one task parameter, e.g. de-en.eval_samples=100 (a CPU check)")
    args = ap.parse_args(argv)
    if args.epochs < 1:
        ap.error("--epochs must be >= 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.profile is None:
        args.profile = "gpu" if device.type == "cuda" else "ci"
    values = profiles.parameters("text_tasks", args.profile)
    task_params = {k: dict(v) for k, v in values["task_params"].items()}
    for item in args.set:
        try:
            target, value = item.split("=", 1)
            key, name = target.split(".", 1)
        except ValueError:
            ap.error(f"--set {item!r}: write TASK.KEY=VALUE, e.g. de-en.eval_samples=100")
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        task_params.setdefault(key, {})[name] = parsed
    keys = args.tasks or list(values["text_tasks"])
    print(f"text tasks at profile {args.profile!r} on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    report = {}
    with tempfile.TemporaryDirectory() as folder:
        for key in keys:
            started = time.perf_counter()
            task = T.build_task(key, device=device, **task_params.get(key, {}))
            built_s = time.perf_counter() - started
            train = dict(values["train_params"][key], epochs=args.epochs)
            train.pop("eval_every", None)
            cfg = T.TaskTrainConfig(**train, seed=0)
            _sync(device)
            started = time.perf_counter()
            result = T.train_task(task, cfg, checkpoint_dir=folder, progress=False)
            _sync(device)
            train_s = time.perf_counter() - started
            epoch_s = [round(float(row["seconds"]), 2) for row in result.history if "seconds" in row]
            started = time.perf_counter()
            scores = task.evaluate(result.model)
            _sync(device)
            evaluate_s = time.perf_counter() - started
            started = time.perf_counter()
            grad = T.task_gradient(task, result.model)
            _sync(device)
            gradient_s = time.perf_counter() - started
            report[key] = {"build_s": round(built_s, 2), "train_s": round(train_s, 2), "epoch_s": epoch_s,
                           "evaluate_s": round(evaluate_s, 2), "gradient_s": round(gradient_s, 2),
                           "parameters": int(grad.numel()),
                           "scores": {k: round(float(v), 4) for k, v in scores.items()}}
            print(f"{key}: build {built_s:.1f} s, {args.epochs} epoch(s) {train_s:.1f} s {epoch_s}, "
                  f"evaluate {evaluate_s:.1f} s, gradient {gradient_s:.1f} s, k = {grad.numel():,}, "
                  f"scores {report[key]['scores']}", flush=True)
    print(json.dumps({"profile": args.profile, "device": str(device), "epochs": args.epochs, "tasks": report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
