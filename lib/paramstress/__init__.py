"""paramstress: how fragile the parameters of neural networks are.

The package is grouped by what it does (ARCHITECTURE.md says what may import what):

- :mod:`paramstress.engine`: data, models, the training loop, the sweep engine, storage,
  the job executor and shared helpers (validators, statistics);
- :mod:`paramstress.corruption`: Sun et al. (AAAI 2021), parameter corruption: the operators
  (Eqs. 1-11, at the package root), theory, vulnerability, objectives, corruption-resistant
  training, tables, flatness, and the text tasks (:mod:`paramstress.corruption.text`);
- :mod:`paramstress.filtering`: Pravin et al. (2023), synaptic filtering: the filters (at the
  package root), adversarial inputs, fragility scores, batch norm, landscapes, selective
  backpropagation, collapsed runs;
- :mod:`paramstress.agreement`: the analyses joining the two papers;
- :mod:`paramstress.book`: profiles, runner, provenance, display labels and figures.

The public API for your own models (:mod:`paramstress.api`, imported on first use so that
``import paramstress`` stays light): :func:`~paramstress.api.corruption_indicator`,
:func:`~paramstress.api.corruption_table`, :func:`~paramstress.api.vulnerability_probe` and
:func:`~paramstress.api.filter_scores`.

The flat module names of earlier versions (``paramstress.sweep``, ``paramstress.tasks``, ...)
stay importable: each is the same module object as its new home (:data:`MOVED`), so that
pages published on a GPU, which cannot be re-executed here, run unchanged.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from paramstress.engine._torchvision_compat import ensure_torchvision_importable as _ensure_torchvision

_ensure_torchvision()
__version__ = "0.1.0"

#: The flat module names of earlier versions → their home in the grouped package.
MOVED: dict[str, str] = {
    "data": "engine.data", "models": "engine.models", "training": "engine.training", "sweep": "engine.sweep",
    "storage": "engine.storage", "workers": "engine.workers", "stats": "engine.stats",
    "_torchvision_compat": "engine._torchvision_compat",
    "theory": "corruption.theory", "vulnerability": "corruption.vulnerability",
    "objectives": "corruption.objectives", "resistant": "corruption.resistant", "tables": "corruption.tables",
    "flatness": "corruption.flatness", "tasks": "corruption.text.tasks",
    "language_model": "corruption.text.language_model", "parser": "corruption.text.parser",
    "translation": "corruption.text.translation", "bootstrap": "corruption.text.bootstrap",
    "adversarial": "filtering.adversarial", "fragility": "filtering.fragility", "batchnorm": "filtering.batchnorm",
    "landscape": "filtering.landscape", "selective": "filtering.selective", "collapse": "filtering.collapse",
    "profiles": "book.profiles", "runner": "book.runner", "provenance": "book.provenance",
    "labels": "book.labels", "figures": "book.figures",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``paramstress.<old>`` as the module ``paramstress.<MOVED[old]>`` itself (one
    module object under two names; ``python -m paramstress.runner`` runs the moved file)."""

    prefix = __name__ + "."

    def _target(self, fullname: str) -> str | None:
        if fullname.startswith(self.prefix) and fullname[len(self.prefix):] in MOVED:
            return self.prefix + MOVED[fullname[len(self.prefix):]]
        return None

    def find_spec(self, fullname, path=None, target=None):  # noqa: D102
        if self._target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # noqa: D102
        return importlib.import_module(self._target(spec.name))

    def exec_module(self, module):  # noqa: D102  (the target module is already executed)
        pass

    def get_code(self, fullname):  # noqa: D102  (runpy: python -m paramstress.<old>)
        target = self._target(fullname)
        return importlib.util.find_spec(target).loader.get_code(target)


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModules())


#: The public API (:mod:`paramstress.api`), reachable as ``paramstress.<name>``; the module is
#: imported on first use, so that ``import paramstress`` does not load the engines.
API: tuple[str, ...] = ("corruption_indicator", "corruption_table", "vulnerability_probe", "filter_scores")


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module("paramstress.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(API))
