"""Independent jobs in parallel worker processes, with the results the serial loop gives.

The book's multi-model studies (the filtering landscapes of Pravin et al. 2023, §4.3 and
§5: one network per architecture, data set and seed, each trained, given its FGSM size
and filtered on its own) are sets of jobs that share nothing but read-only inputs and
the on-disk caches, whose entries are keyed by digests of everything that determines
them and written atomically. :func:`run_jobs` runs such jobs either one after another
in this process (``workers=1``, the default) or in ``workers`` processes started with
``spawn`` (no CUDA state or thread pools inherited from the parent), and returns their
results in the order of the jobs whatever the order they finish in.

Why processes: these networks are small. On a GPU their training steps are bounded by
the host launching kernels (hundreds of tiny kernels per step), not by the device, so
several processes keep one device busier than one; on a CPU each job runs on its own
core(s) (``threads`` intra-op threads each). A job computes the same numbers in a worker
as in the parent: same code, same inputs, same thread count (``benchmarks/workers.py``
checks that bit for bit and times both).

Standard library only (:class:`concurrent.futures.ProcessPoolExecutor`); torch's own
``torch.multiprocessing`` adds CUDA-tensor sharing, which the jobs do not need: they
send names and small tables, never tensors that live on a device.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

__all__ = ["run_jobs", "check_workers", "default_threads"]


def check_workers(workers: Any) -> int:
    """``workers`` as a positive integer, or ``ValueError`` naming the fix."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (1: run the jobs one after another in this "
                         f"process), got {workers!r}")
    return workers


def default_threads(workers: int) -> int:
    """Intra-op threads per worker when none are given: the machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def _describe(label: Any) -> str:
    return label if isinstance(label, str) else repr(label)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[Mapping[str, Any]], *, workers: int = 1,
             threads: int | None = None, labels: Sequence[Any] | None = None) -> list[Any]:
    """``[fn(**job) for job in jobs]``, in ``workers`` processes when ``workers > 1``.

    ``fn`` must be importable by name (a module-level function) and the jobs' arguments
    and results picklable; both are checked before any process starts. A script that
    calls this with ``workers > 1`` needs the ``if __name__ == "__main__":`` guard
    (workers start with ``spawn``, which re-imports the main module). ``threads`` sets
    ``torch.set_num_threads`` in every worker (default: :func:`default_threads`); the
    serial path leaves this process's setting alone. Results are collected in the jobs'
    order; the first failure collected stops the run (jobs not started are cancelled, the
    worker processes ended) and its exception is re-raised here with a note naming the
    job (``labels[i]``, default the job's arguments).
    """
    check_workers(workers)
    jobs = list(jobs)
    if labels is not None and len(labels) != len(jobs):
        raise ValueError(f"labels has {len(labels)} entries for {len(jobs)} jobs; give one label per job")
    names = [_describe(labels[i]) if labels is not None else _describe(dict(job)) for i, job in enumerate(jobs)]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None (share the cores out) or an integer >= 1, got {threads!r}")
    if workers == 1 or len(jobs) <= 1:
        results = []
        for name, job in zip(names, jobs):
            try:
                results.append(fn(**job))
            except Exception as exc:
                exc.add_note(f"in job {name}")
                raise
        return results

    try:
        pickle.dumps(fn)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} cannot be sent to a worker process ({exc}); "
                        "define it at module level in an importable module, or use workers=1") from exc
    for name, job in zip(names, jobs):
        try:
            pickle.dumps(dict(job))
        except Exception as exc:
            raise TypeError(f"the arguments of job {name} cannot be sent to a worker process ({exc}); pass "
                            "names or CPU tensors, or use workers=1") from exc
    count = min(workers, len(jobs))
    per_worker = threads if threads is not None else default_threads(count)
    pool = ProcessPoolExecutor(max_workers=count, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(per_worker,))
    futures = [pool.submit(fn, **job) for job in jobs]
    results: list[Any] = []
    try:
        for name, future in zip(names, futures):
            try:
                results.append(future.result())
            except BrokenProcessPool as exc:
                exc.add_note(f"in job {name}: a worker process died. Called from a script? Workers start with "
                             "'spawn', which re-imports the main module: put the script's code under "
                             "`if __name__ == \"__main__\":`. Otherwise it may have run out of memory: "
                             "use fewer workers.")
                raise
            except Exception as exc:
                exc.add_note(f"in job {name} (worker process)")
                raise
    except BaseException:  # a failed job, or an interrupt: stop the others now, not after they finish
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            if process.is_alive():
                process.terminate()
        raise
    pool.shutdown(wait=True)
    return results
