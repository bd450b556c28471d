"""Why accuracy survives removing a whole layer: batch normalisation carries a constant
feature forward (Pravin et al. 2023, §5 "Effects of batch normalization", Eq. 17, Fig. 11).

When synaptic filtering removes every weight of a convolution ``l`` (e.g. ``h_a`` at
the last threshold), the convolution outputs ``z = b`` (its bias, 0 for the bias-free
convolutions of ResNets and ShuffleNets). The batch-norm layer that follows, in eval
mode, computes (Eq. 17) ``y = γ (z − μ_run)/√(σ²_run + ε) + β`` with the running
statistics of training, so its output is the per-channel constant

    ``c = β + γ (b − μ_run)/√(σ²_run + ε)``,

a feature of the *training* batches that the rest of the network receives in place of
the removed layer's output, for every test input. The paper argues that this constant
is what keeps the accuracy from collapsing. :func:`batchnorm_carryover` checks both
halves of the argument on a model:

1. the batch-norm output with layer ``l`` removed is that constant (measured per
   channel over the evaluation set: mean equal to the predicted ``c``, spread 0);
2. the accuracy with ``l`` removed, against the accuracy with ``l`` removed *and* the
   batch-norm output set to 0 (what the next layer would receive if batch norm did not
   re-inject ``c``). In residual networks the skip connection carries features around
   the block as well; the second ablation keeps it and removes only ``c``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pandas as pd
import torch
from torch import fx, nn

from paramstress.filtering import filters as FL

__all__ = ["following_batchnorm", "carried_constant", "Carryover", "batchnorm_carryover", "carryover_table"]

Transform = Callable[[torch.Tensor], torch.Tensor]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def following_batchnorm(model: nn.Module, layer: str, traced: fx.GraphModule | None = None) -> str | None:
    """The batch-norm module that reads the output of conv/linear ``layer`` directly
    (traced with ``torch.fx``), or ``None`` when there is none (e.g. the last linear
    layer, or SqueezeNet, which has no batch norm)."""
    if layer not in FL.filterable_layers(model):
        raise ValueError(f"unknown layer {layer!r}; choose one of {FL.filterable_layers(model)}")
    traced = traced if traced is not None else fx.symbolic_trace(model)
    for node in traced.graph.nodes:
        if node.op == "call_module" and node.target == layer:
            for user in node.users:
                if user.op == "call_module" and isinstance(traced.get_submodule(user.target), _BN):
                    return str(user.target)
    return None


def carried_constant(bn: nn.Module, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 17 with a zero input (plus the removed layer's ``bias``): the per-channel
    constant ``β + γ (b − μ_run)/√(σ²_run + ε)`` that an eval-mode batch norm outputs."""
    if not isinstance(bn, _BN):
        raise ValueError(f"expected a BatchNorm module, got {type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("this batch norm keeps no running statistics (track_running_stats=False): in eval mode "
                         "it normalises with batch statistics and carries nothing; there is no constant to predict")
    mean = bn.running_mean.detach().double()
    var = bn.running_var.detach().double()
    b = torch.zeros_like(mean) if bias is None else bias.detach().double()
    gamma = bn.weight.detach().double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach().double() if bn.bias is not None else torch.zeros_like(mean)
    return beta + gamma * (b - mean) / torch.sqrt(var + bn.eps)


class _ChannelStats:
    """Per-channel mean and standard deviation of a module's output over all batch and
    spatial positions (float64 sums)."""

    def __init__(self) -> None:
        self.n = 0
        self.s: torch.Tensor | None = None
        self.ss: torch.Tensor | None = None

    def __call__(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        o = output.detach().double().transpose(0, 1).reshape(output.shape[1], -1)
        s, ss = o.sum(dim=1), (o * o).sum(dim=1)
        self.s = s if self.s is None else self.s + s
        self.ss = ss if self.ss is None else self.ss + ss
        self.n += o.shape[1]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.s / self.n
        var = (self.ss / self.n - mean * mean).clamp_min(0)
        return mean, var.sqrt()


@contextlib.contextmanager
def _hook(module: nn.Module, fn: Callable[..., Any]) -> Iterator[None]:
    handle = module.register_forward_hook(fn)
    try:
        yield
    finally:
        handle.remove()


def _zero_output(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(output)


@dataclasses.dataclass
class Carryover:
    """The batch-norm analysis of one removed layer: ``channels`` (per channel: the
    predicted constant, the measured mean and spread of the batch-norm output with the
    layer removed, and the mean and spread without filtering) and ``accuracy`` (%):
    ``unfiltered``, ``removed`` (every weight of the layer zeroed), ``removed_no_carry``
    (also the batch-norm output zeroed)."""

    layer: str
    bn: str
    channels: pd.DataFrame
    accuracy: dict[str, float]

    @property
    def max_error(self) -> float:
        """Largest |measured mean − predicted constant| over the channels."""
        return float((self.channels["measured_mean"] - self.channels["predicted"]).abs().max())

    @property
    def max_spread(self) -> float:
        """Largest per-channel standard deviation of the output with the layer removed (0: constant)."""
        return float(self.channels["measured_std"].max())


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(y), batch_size):
            logits = model(x[start:start + batch_size])
            ok = (logits.argmax(dim=1) == y[start:start + batch_size]) & torch.isfinite(logits).all(dim=1)
            correct += int(ok.sum())
    return 100.0 * correct / len(y)


def batchnorm_carryover(model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, *,
                        transform: Transform | None = None, batch_size: int = 1000,
                        traced: fx.GraphModule | None = None) -> Carryover:
    """Remove every weight of ``layer`` (synaptic filtering at full stress) and measure
    what the following batch norm outputs, and the accuracies with and without its
    carried constant (see the module docstring). Weights, hooks and train/eval flags
    are restored afterwards. ``ValueError`` if no batch norm reads the layer's output."""
    if len(x) != len(y) or len(y) == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {len(x)} and {len(y)}")
    bn_name = following_batchnorm(model, layer, traced)
    if bn_name is None:
        raise ValueError(f"no batch norm reads the output of {layer!r}; the analysis applies to conv layers followed "
                         "by batch norm (not to the last linear layer or to networks without batch norm)")
    modules = dict(model.named_modules())
    conv, bn = modules[layer], modules[bn_name]
    predicted = carried_constant(bn, getattr(conv, "bias", None))
    scope = FL.make_scope(model, layer)
    everything = FL.Window("h_a", 0, 1.0, math.inf, -math.inf, math.inf)
    with FL.eval_mode(model):
        xn = x if transform is None else torch.cat([transform(b) for b in x.split(batch_size)])
        before = _ChannelStats()
        with _hook(bn, before):
            unfiltered = _accuracy(model, xn, y, batch_size)
        after = _ChannelStats()
        with FL.filtered(scope, everything):
            with _hook(bn, after):
                removed = _accuracy(model, xn, y, batch_size)
            with _hook(bn, _zero_output):
                no_carry = _accuracy(model, xn, y, batch_size)
    m0, s0 = before.result()
    m1, s1 = after.result()
    channels = pd.DataFrame({
        "channel": range(len(predicted)),
        "predicted": predicted.cpu().numpy(),
        "measured_mean": m1.cpu().numpy(),
        "measured_std": s1.cpu().numpy(),
        "unfiltered_mean": m0.cpu().numpy(),
        "unfiltered_std": s0.cpu().numpy(),
    })
    return Carryover(layer, bn_name, channels,
                     {"unfiltered": unfiltered, "removed": removed, "removed_no_carry": no_carry})


def carryover_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, layers: Sequence[str] | None = None,
                    transform: Transform | None = None, batch_size: int = 1000) -> pd.DataFrame:
    """:func:`batchnorm_carryover` for every conv layer followed by batch norm (or
    ``layers``): one row per layer with the three accuracies, the largest deviation of
    the measured output from the predicted constant, the largest spread, and the mean
    |constant| against the mean |unfiltered output| of the channels."""
    traced = fx.symbolic_trace(model)
    names = layers if layers is not None else [
        name for name in FL.filterable_layers(model) if following_batchnorm(model, name, traced) is not None]
    if not names:
        raise ValueError("no conv layer of this model is followed by batch norm")
    if transform is not None:
        x = torch.cat([transform(b) for b in x.split(batch_size)])
    rows = []
    for name in names:
        r = batchnorm_carryover(model, name, x, y, batch_size=batch_size, traced=traced)
        c = r.channels
        rows.append({"layer": name, "bn": r.bn, **{f"acc_{k}": v for k, v in r.accuracy.items()},
                     "max_error": r.max_error, "max_spread": r.max_spread,
                     "mean_abs_constant": float(c["predicted"].abs().mean()),
                     "mean_abs_unfiltered": float(c["unfiltered_mean"].abs().mean()),
                     "channels": len(c)})
    return pd.DataFrame(rows)
