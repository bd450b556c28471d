"""Sun et al. (AAAI 2021), *Exploring the Vulnerability of Deep Neural Networks: A Study of
Parameter Corruption*.

The package root is the corruption operators (:mod:`paramstress.corruption.operators`:
Eqs. 1, 5, 10, 11 and Algorithm 2), so ``from paramstress import corruption as C;
C.corrupted(...)`` reads as before. Beside them: :mod:`.theory` (Theorem 1),
:mod:`.vulnerability` (Fig. 4), :mod:`.objectives` and :mod:`.resistant` (Table 2,
Eqs. 13-16), :mod:`.tables` (Table 1), :mod:`.flatness` and the text tasks
(:mod:`.text`: PTB-LM, PTB-Parsing, De-En).
"""
from __future__ import annotations

from typing import Any

from paramstress.corruption import operators as _operators


def __getattr__(name: str) -> Any:
    return getattr(_operators, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_operators)))
