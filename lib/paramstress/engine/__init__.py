"""The shared engine: data sets, models, the training loop, the sweep engine, storage, the
job executor and small shared helpers (statistics, validators). Nothing here imports from
:mod:`paramstress.corruption`, :mod:`paramstress.filtering` or :mod:`paramstress.book`,
except the sweep engine's use of the corruption operators (ARCHITECTURE.md)."""
