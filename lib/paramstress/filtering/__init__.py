"""Pravin et al. (2023), *Fragility, Robustness and Antifragility in Deep Learning*.

The package root is the synaptic filters (:mod:`paramstress.filtering.filters`: the
high-pass, low-pass and pulse filters and the filtering sweep), so ``from paramstress import
filtering; filtering.filter_sweep(...)`` reads as before. Beside them: :mod:`.adversarial`
(FGSM), :mod:`.fragility` (φ, Δφ and the labels), :mod:`.batchnorm`, :mod:`.landscape`
(scores over training), :mod:`.selective` (selective backpropagation) and :mod:`.collapse`.
"""
from __future__ import annotations

from typing import Any

from paramstress.filtering import filters as _filters


def __getattr__(name: str) -> Any:
    return getattr(_filters, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_filters)))
