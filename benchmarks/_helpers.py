"""Helpers shared by the benchmark scripts (imported as ``_helpers``: a script's own folder
is first on ``sys.path``). Running this file does nothing."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from paramstress.engine import models


def trained(name: str, ds, steps: int, seed: int = 0) -> torch.nn.Module:
    """``name`` built for ``ds``, seeded, trained ``steps`` Adam steps on batches of 64, in eval mode."""
    torch.manual_seed(seed)
    model = models.build_model(name, num_classes=ds.num_classes, in_channels=ds.image_shape[0],
                               image_size=ds.image_shape[1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ds.train_y), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(ds.normalize(ds.train_x[idx])), ds.train_y[idx]).backward()
        opt.step()
    return model.eval()


def bits(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The bytes of every floating-point tensor of the state dict (for bit-identity checks)."""
    return {k: v.detach().clone().contiguous().view(torch.uint8) for k, v in model.state_dict().items()
            if v.is_floating_point()}


def best_of(fns: dict[str, Callable[[], object]], repeats: int) -> tuple[dict[str, float], dict[str, object]]:
    """Each path's best time over ``repeats`` rounds, the paths taking turns (order reversed
    every other round), and each path's last result."""
    times = {k: float("inf") for k in fns}
    out = {}
    for r in range(repeats):
        for k in (list(fns) if r % 2 == 0 else list(reversed(fns))):
            started = time.perf_counter()
            out[k] = fns[k]()
            times[k] = min(times[k], time.perf_counter() - started)
    return times, out
