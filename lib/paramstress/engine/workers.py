"""Independent jobs run on Ray, with the results the serial loop gives.

The book's multi-model studies (the filtering landscapes of Pravin et al. 2023, §4.3 and
§5: one network per architecture, data set and seed, each trained, given its FGSM size
and filtered on its own) are sets of jobs that share nothing but read-only inputs and
the on-disk caches, whose entries are keyed by digests of everything that determines
them and written atomically (so two processes, or two nodes on a shared path, writing
the same entry is harmless). :func:`run_jobs` is the one executor for them:

- ``workers=1`` (the default, no cluster): one after another in this process, exactly the
  serial loop; Ray is not imported.
- ``workers=N``: a local Ray instance with ``N`` CPUs, started for the call and shut down
  after it, bound to 127.0.0.1 only, without dashboard or usage statistics.
- ``cluster="auto"``, ``"ray://host:port"`` or a head's ``"host:port"``: the jobs go to an
  existing Ray cluster (``ray start``, KubeRay, a SLURM allocation); this process connects
  as a driver and disconnects afterwards, the cluster keeps running.

``gpus_per_job`` is the share of a GPU each job reserves (fractional: ``0.25`` lets four
small networks share one device). Left at ``None`` it is read from
``$PARAMSTRESS_GPUS_PER_JOB``, else, locally, the GPUs this process sees are shared out
among the workers (at most one each), else 0. ``cluster`` left at ``None`` is read from
``$PARAMSTRESS_RAY_CLUSTER`` (how ``make run ... CLUSTER=auto`` and
``paramstress-run --cluster`` reach a notebook without a new parameter).

Jobs send names and small tables, never tensors that live on a device (refused before
anything starts); each job loads its data through the data layer on its own node. Results
come back in the jobs' order whatever the order they finish in. A job that raises stops
the run and its exception is re-raised here with the job's label in a note. A job whose
worker process dies (killed, out of memory, its node lost) is submitted again, up to
``max_retries`` times, and each retry is reported with a :class:`JobRetried` warning:
the jobs are deterministic, so the run completes with the same results.

A job computes the same numbers on a Ray worker as in this process: same code, same
inputs, same intra-op thread count (``threads``, set with ``torch.set_num_threads`` in
every job; the environment, e.g. ``OMP_NUM_THREADS``, is inherited by a local instance's
workers). ``benchmarks/workers.py`` checks that bit for bit and times both.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch

__all__ = ["run_jobs", "environment", "runs_remotely", "ray_session", "loopback_only", "check_workers", "check_cluster", "check_gpus_per_job", "default_threads", "JobRetried",
           "CLUSTER_ENV", "GPUS_PER_JOB_ENV", "LOOPBACK"]

#: Environment variables read when ``cluster`` / ``gpus_per_job`` are left at ``None``.
CLUSTER_ENV = "PARAMSTRESS_RAY_CLUSTER"
GPUS_PER_JOB_ENV = "PARAMSTRESS_GPUS_PER_JOB"
#: The only address a local Ray instance binds to.
LOOPBACK = "127.0.0.1"
#: Set while a local instance starts (its processes inherit them): every node on
#: 127.0.0.1, no usage statistics sent anywhere.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}

_ADDRESS = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class JobRetried(UserWarning):
    """A job's worker process died and the job was submitted again."""


def check_workers(workers: Any) -> int:
    """``workers`` as a positive integer, or ``ValueError`` naming the fix."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1 (1: run the jobs one after another in this "
                         f"process), got {workers!r}")
    return workers


def check_cluster(cluster: Any) -> str | None:
    """``None`` (no cluster), ``"auto"``, ``"ray://host:port"`` or ``"host:port"``, else ``ValueError``."""
    if cluster is None or cluster == "":
        return None
    if isinstance(cluster, str) and (cluster == "auto" or _ADDRESS.match(cluster)):
        return cluster
    raise ValueError(f"cluster must be None (no cluster: workers=N starts a local Ray instance), 'auto' (the "
                     f"cluster `ray start` started on this node) or an address 'ray://host:port' / 'host:port'; "
                     f"got {cluster!r} (from ${CLUSTER_ENV}?)")


def check_gpus_per_job(gpus: Any) -> float:
    """``gpus`` as a float >= 0 (a fraction shares a GPU), else ``ValueError``."""
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)) or not math.isfinite(gpus) or gpus < 0:
        raise ValueError(f"gpus_per_job must be a number >= 0 (0: CPU only; 0.25: four jobs share one GPU), "
                         f"got {gpus!r} (from ${GPUS_PER_JOB_ENV}?)")
    return float(gpus)


def default_threads(workers: int) -> int:
    """Intra-op threads per worker when none are given: the machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _describe(label: Any) -> str:
    return label if isinstance(label, str) else repr(label)


def _device_tensor(value: Any, depth: int = 0) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value if value.device.type != "cpu" else None
    if depth < 3 and isinstance(value, Mapping):
        value = list(value.values())
    if depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            found = _device_tensor(item, depth + 1)
            if found is not None:
                return found
    return None


def _resolve(cluster: Any, gpus_per_job: Any) -> tuple[str | None, float | None]:
    if cluster is None:
        cluster = os.environ.get(CLUSTER_ENV) or None
    if gpus_per_job is None and os.environ.get(GPUS_PER_JOB_ENV):
        text = os.environ[GPUS_PER_JOB_ENV]
        try:
            gpus_per_job = float(text)
        except ValueError:
            gpus_per_job = text
    return check_cluster(cluster), (None if gpus_per_job is None else check_gpus_per_job(gpus_per_job))


def runs_remotely(workers: int, jobs: int, cluster: str | None = None) -> bool:
    """Whether :func:`run_jobs` with these arguments sends the jobs to Ray worker processes
    (``cluster`` ``None``: ``$PARAMSTRESS_RAY_CLUSTER``), so they must load named data themselves."""
    return _resolve(cluster, 0)[0] is not None or (check_workers(workers) > 1 and jobs > 1)


def run_jobs(fn: Callable[..., Any], jobs: Sequence[Mapping[str, Any]], *, workers: int = 1,
             threads: int | None = None, labels: Sequence[Any] | None = None, cluster: str | None = None,
             gpus_per_job: float | None = None, max_retries: int = 3, progress: bool = False) -> list[Any]:
    """``[fn(**job) for job in jobs]``, on Ray when ``workers > 1`` or a cluster is named.

    Every argument is checked before anything starts (``workers``, ``threads``, ``labels``
    (one per job; default the job's arguments), ``cluster``, ``gpus_per_job``,
    ``max_retries``, and, for Ray, that ``fn`` and the jobs can be sent and hold no device
    tensors). ``threads`` sets ``torch.set_num_threads`` in every Ray job (default:
    :func:`default_threads`); the serial path leaves this process's setting alone.
    ``progress`` shows a bar over completed jobs. Returns the results in the jobs' order.
    """
    check_workers(workers)
    cluster, gpus_per_job = _resolve(cluster, gpus_per_job)
    jobs = list(jobs)
    if labels is not None and len(labels) != len(jobs):
        raise ValueError(f"labels has {len(labels)} entries for {len(jobs)} jobs; give one label per job")
    names = [_describe(labels[i]) if labels is not None else _describe(dict(job)) for i, job in enumerate(jobs)]
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be None (share the cores out) or an integer >= 1, got {threads!r}")
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"max_retries must be an integer >= 0 (submissions after a worker process dies), "
                         f"got {max_retries!r}")
    if cluster is None and (workers == 1 or len(jobs) <= 1):
        return _run_serial(fn, jobs, names, progress)

    from ray import cloudpickle  # how Ray sends functions and arguments (importing Ray starts nothing)

    try:
        cloudpickle.dumps(fn)
    except Exception as exc:
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} cannot be sent to a Ray worker ({exc}); define it "
                        "at module level, or use workers=1") from exc
    for name, job in zip(names, jobs):
        tensor = _device_tensor(dict(job))
        if tensor is not None:
            raise TypeError(f"job {name} carries a tensor on {tensor.device}; jobs send names and small tables: "
                            "pass a data set's name or CPU tensors, or use workers=1")
        try:
            cloudpickle.dumps(dict(job))
        except Exception as exc:
            raise TypeError(f"the arguments of job {name} cannot be sent to a Ray worker ({exc}); pass names or "
                            "CPU tensors, or use workers=1") from exc
    count = min(workers, len(jobs))
    if gpus_per_job is None:
        found = torch.cuda.device_count() if cluster is None and torch.cuda.is_available() else 0
        gpus_per_job = min(1.0, math.floor(found / count * 1e4) / 1e4) if found else 0.0  # Ray counts 1e-4
    per_job_threads = threads if threads is not None else (default_threads(count) if cluster is None else 1)
    with ray_session(workers=count, cluster=cluster, gpus_per_job=gpus_per_job) as ray:
        local = cluster is None or _is_loopback(cluster)
        return _run_on_ray(ray, fn, jobs, names, threads=per_job_threads, cpus=1 if cluster is None else
                           per_job_threads, gpus=gpus_per_job, max_retries=max_retries, progress=progress,
                           settings=_settings() if local else None)


def _bar(total: int, progress: bool):
    if not progress:
        return contextlib.nullcontext(None)
    from tqdm.auto import tqdm
    return tqdm(total=total, unit="job")


def _run_serial(fn, jobs, names, progress):
    results = []
    with _bar(len(jobs), progress) as bar:
        for name, job in zip(names, jobs):
            try:
                results.append(fn(**job))
            except Exception as exc:
                exc.add_note(f"in job {name}")
                raise
            if bar is not None:
                bar.update(1)
    return results


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block (processes started in it inherit them), the
    caller's environment restored afterwards (a variable that was unset is unset again)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _is_loopback(cluster: str) -> bool:
    host = cluster.removeprefix("ray://").rsplit(":", 1)[0]
    return host in {LOOPBACK, "localhost"}


@contextlib.contextmanager
def loopback_only() -> Iterator[Any]:
    """The ``ray`` module, with every Ray process started inside the block bound to
    127.0.0.1 and no usage statistics sent: ``$RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (which
    Ray reads once, when it is first imported, into ``ray_constants.ENABLE_RAY_CLUSTER``:
    both are set for the block, whenever Ray was imported) and ``$RAY_USAGE_STATS_ENABLED=0``.
    Without it Ray advertises and listens on the host's interfaces."""
    with environment(LOCAL_RAY_ENV):
        import ray
        from ray._private import ray_constants  # the flag Ray's node startup reads; no public setter

        before = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            yield ray
        finally:
            ray_constants.ENABLE_RAY_CLUSTER = before


@contextlib.contextmanager
def ray_session(*, workers: int = 1, cluster: str | None = None, gpus_per_job: float = 0.0) -> Iterator[Any]:
    """The ``ray`` module, connected: a local instance with ``workers`` CPUs bound to
    127.0.0.1 (:func:`loopback_only`; started here and shut down on exit, no process left),
    or an existing ``cluster`` (connected to and disconnected from; a cluster on 127.0.0.1
    loopback only as well). If Ray is already initialized in this process, that connection
    is used and left open. :func:`run_jobs` opens one per call; open one around several
    calls to start Ray once (``with ray_session(workers=2): ...``)."""
    check_workers(workers)
    cluster = check_cluster(cluster)
    gpus_per_job = check_gpus_per_job(gpus_per_job)
    local = cluster is None or _is_loopback(cluster)
    with loopback_only() if local else environment({"RAY_USAGE_STATS_ENABLED": "0"}):
        import ray

        if ray.is_initialized():  # a session opened around several calls: use it, leave it open
            _check_feasible(ray, gpus_per_job)
            yield ray
            return
        common = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        if cluster is None:
            gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if gpus_per_job > 0 and gpus == 0:
                raise ValueError(f"gpus_per_job={gpus_per_job} but this machine has no GPU; use gpus_per_job=0 "
                                 f"(unset ${GPUS_PER_JOB_ENV}) or name a cluster with GPUs")
            # the workers import the jobs' functions from this process's sys.path, as spawned processes would
            path = os.pathsep.join([p for p in sys.path if p and os.path.isdir(p)]
                                   + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
            with environment({"PYTHONPATH": path}):
                ray.init(num_cpus=workers, num_gpus=gpus, _node_ip_address=LOOPBACK, **common)
        else:
            ray.init(address=cluster, **common, **(dict(_node_ip_address=LOOPBACK) if local else {}))
        try:
            _check_feasible(ray, gpus_per_job)
            yield ray
        finally:
            ray.shutdown()


def _check_feasible(ray: Any, gpus_per_job: float) -> None:
    """``ValueError`` when the connected instance has fewer GPUs than one job reserves: Ray would
    queue such jobs for ever (the driver waits in ``ray.wait``) instead of failing."""
    if gpus_per_job > 0 and ray.cluster_resources().get("GPU", 0) < gpus_per_job:
        raise ValueError(f"gpus_per_job={gpus_per_job} but the Ray instance has "
                         f"{ray.cluster_resources().get('GPU', 0)} GPUs; lower gpus_per_job (unset "
                         f"${GPUS_PER_JOB_ENV}) or add GPU nodes")


def _settings() -> dict[str, str]:
    """This process's ``PARAMSTRESS_*`` settings (data root, mirror, offline, caches) that a job
    on a local instance runs with, whenever that instance was started."""
    return {k: v for k, v in os.environ.items() if k.startswith("PARAMSTRESS_") and k not in (CLUSTER_ENV,
                                                                                              GPUS_PER_JOB_ENV)}


def _call(fn: Callable[..., Any], job: Mapping[str, Any], threads: int, settings: Mapping[str, str] | None) -> Any:
    """One job on a Ray worker, on ``threads`` intra-op threads, with the caller's
    ``PARAMSTRESS_*`` settings when given (a cluster's nodes keep their own)."""
    torch.set_num_threads(threads)
    if settings is not None:
        for key in [k for k in os.environ if k.startswith("PARAMSTRESS_")]:
            del os.environ[key]
        os.environ.update(settings)
    return fn(**job)


def _run_on_ray(ray, fn, jobs, names, *, threads, cpus, gpus, max_retries, progress, settings) -> list[Any]:
    from ray import exceptions as rex

    died = tuple(getattr(rex, name) for name in ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                                                  "OutOfMemoryError", "ObjectLostError") if hasattr(rex, name))
    remote = ray.remote(_call).options(num_cpus=cpus, num_gpus=gpus or 0, max_retries=0, retry_exceptions=False)
    fn_ref = ray.put(fn)
    submit = lambda i: remote.remote(fn_ref, jobs[i], threads, settings)  # noqa: E731
    pending = {submit(i): i for i in range(len(jobs))}
    attempts = [1] * len(jobs)
    results: list[Any] = [None] * len(jobs)
    try:
        with _bar(len(jobs), progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(ready[0])
                try:
                    results[i] = ray.get(ready[0])
                except died as exc:
                    if attempts[i] > max_retries:
                        error = RuntimeError(f"job {names[i]}: its worker process died {attempts[i]} times "
                                             f"({type(exc).__name__}); out of memory? use fewer workers or "
                                             "more max_retries")
                        raise error from exc
                    attempts[i] += 1
                    warnings.warn(f"job {names[i]}: its worker process died ({type(exc).__name__}); "
                                  f"submitted again (attempt {attempts[i]} of {max_retries + 1})",
                                  JobRetried, stacklevel=4)
                    pending[submit(i)] = i
                    continue
                except rex.RayTaskError as exc:
                    cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                    cause.add_note(f"in job {names[i]} (Ray worker; there:\n{exc})")
                    raise cause from None
                if bar is not None:
                    bar.update(1)
    except BaseException:  # a failed job, or an interrupt: stop the others now, not after they finish
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        raise
    return results
