"""paramstress.engine.workers on Ray: a local instance, a two-node cluster simulated on this
machine (ray.cluster_utils.Cluster), a worker process killed mid-job, bad arguments.

Loopback only: every Ray process started here binds to 127.0.0.1 (checked on its listening
sockets), and every instance is shut down at the end of its test with no process left.
"""
import ipaddress
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from paramstress.engine import workers as W

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

RAY_PROCESSES = ("raylet", "gcs_server", "ray::", "default_worker", "dashboard", "runtime_env", "log_monitor")


def draw(seed, n):
    """A job: the sum of ``n`` normal draws from ``seed``, the pid and thread count it ran with."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).sum().item(), os.getpid(), torch.get_num_threads()


def listening_addresses():
    """The IPs the Ray processes of this session listen on, seen from a job (a worker's parent
    is its raylet, whose parent is the driver that started the instance)."""
    driver = psutil.Process(os.getppid()).parent()
    ips = set()
    for proc in [driver, *driver.children(recursive=True)]:
        try:
            if any(mark in " ".join(proc.cmdline()) for mark in RAY_PROCESSES):
                ips |= {ipv4(c.laddr.ip) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return ips


def ipv4(ip):
    """``::ffff:127.0.0.1`` (IPv4 on a dual-stack socket) as ``127.0.0.1``; ``::`` stays ``::``."""
    address = ipaddress.ip_address(ip)
    return str(getattr(address, "ipv4_mapped", None) or address)


def draw_and_listen(seed, n):
    value = draw(seed, n)
    return (*value, listening_addresses() if value[1] != os.environ.get("TEST_DRIVER_PID") else set())


def draw_on_node(seed, n):
    """A job that records its node and takes long enough for both nodes to get jobs."""
    import ray

    time.sleep(0.5)
    return draw(seed, n)[0], ray.get_runtime_context().get_node_id()


def die_once(seed, n, marker_dir):
    """A job whose worker process dies on its first attempt at seed 1 (a marker file remembers it)."""
    marker = Path(marker_dir) / f"seed{seed}"
    if seed == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return draw(seed, n)[0]


def fail_on(seed, bad):
    if seed == bad:
        raise ValueError(f"seed {seed} is bad")
    return seed


def ray_children():
    """Ray processes still running below this test process, or anywhere whose command line names a
    Ray session started by it."""
    left = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(proc.cmdline())[:120])
        except psutil.NoSuchProcess:
            pass
    return left


def wait_until_gone(seconds=15.0):
    deadline = time.monotonic() + seconds
    while ray_children() and time.monotonic() < deadline:
        time.sleep(0.2)
    return ray_children()


JOBS = [dict(seed=s, n=50 + s) for s in range(4)]


def test_importing_paramstress_does_not_import_ray():
    code = ("import paramstress, sys\n"
            "from paramstress.engine import workers\n"
            "from paramstress.filtering import landscape\n"
            "from paramstress import workers as flat\n"
            "assert workers.run_jobs([].append, []) == []\n"
            "assert workers.run_jobs(dict, [dict(a=7)] * 3) == [dict(a=7)] * 3\n"
            "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_bad_arguments_are_refused_before_ray_starts(monkeypatch):
    job = [dict(seed=0, n=1)] * 2
    cases = [(dict(workers=0), ValueError, "workers must be an integer >= 1"),
             (dict(workers=2, gpus_per_job=-0.5), ValueError, "gpus_per_job must be a number >= 0"),
             (dict(workers=2, gpus_per_job=float("nan")), ValueError, "gpus_per_job must be"),
             (dict(workers=2, cluster="my-cluster"), ValueError, "cluster must be None .* 'auto' .* 'ray://host:port'"),
             (dict(cluster="http://127.0.0.1:8265"), ValueError, "cluster must be"),
             (dict(workers=2, max_retries=-1), ValueError, "max_retries must be an integer >= 0"),
             (dict(workers=2, threads=0), ValueError, "threads must be"),
             (dict(workers=2, labels=["a"]), ValueError, "one label per job")]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            W.run_jobs(draw, job, **kwargs)
    meta = [dict(seed=0, n=torch.empty(2, device="meta")), dict(seed=1, n=1)]
    with pytest.raises(TypeError, match="carries a tensor on meta.*names"):
        W.run_jobs(draw, meta, workers=2)
    import threading
    with pytest.raises(TypeError, match="cannot be sent"):
        W.run_jobs(draw, [dict(seed=0, n=1), dict(seed=1, n=threading.Lock())], workers=2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU; use gpus_per_job=0"):
            W.run_jobs(draw, job, workers=2, gpus_per_job=0.5)
    monkeypatch.setenv(W.CLUSTER_ENV, "somewhere")
    with pytest.raises(ValueError, match=f"cluster must be .*{W.CLUSTER_ENV}"):
        W.run_jobs(draw, job)
    monkeypatch.delenv(W.CLUSTER_ENV)
    monkeypatch.setenv(W.GPUS_PER_JOB_ENV, "half")
    with pytest.raises(ValueError, match=f"gpus_per_job must be .*{W.GPUS_PER_JOB_ENV}"):
        W.run_jobs(draw, job, workers=2)
    import ray
    assert not ray.is_initialized() and not ray_children()  # nothing started


def test_local_ray_with_two_cpus_equals_the_serial_run_on_loopback_only(monkeypatch):
    monkeypatch.setenv("TEST_DRIVER_PID", str(os.getpid()))
    serial = W.run_jobs(draw_and_listen, JOBS)
    start = time.perf_counter()
    parallel = W.run_jobs(draw_and_listen, JOBS, workers=2, threads=1)
    seconds = time.perf_counter() - start
    assert [r[0] for r in parallel] == [r[0] for r in serial]  # the same numbers in the jobs' order
    assert {r[1] for r in serial} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in parallel} and len({r[1] for r in parallel}) == 2
    assert {r[2] for r in parallel} == {1}
    listening = set().union(*(r[3] for r in parallel))
    assert listening and listening <= {W.LOOPBACK}, listening  # Ray's servers on 127.0.0.1 only
    import ray
    assert not ray.is_initialized()
    assert wait_until_gone() == []  # the instance is shut down, no raylet, gcs_server or worker left
    print(f"local Ray, 2 CPUs, 4 jobs: {seconds:.1f} s")


def test_a_failing_job_is_reraised_with_its_label_and_stops_the_run():
    with pytest.raises(ValueError, match="seed 2 is bad") as info:
        W.run_jobs(fail_on, [dict(seed=s, bad=2) for s in range(4)], workers=2, labels=[f"job {s}" for s in range(4)])
    assert type(info.value) is ValueError  # the job's own exception, not Ray's wrapper
    assert any(note.startswith("in job job 2 (Ray worker") for note in info.value.__notes__)
    assert wait_until_gone() == []


def test_a_worker_killed_mid_job_is_retried_and_the_results_are_identical(tmp_path):
    jobs = [dict(seed=s, n=50 + s, marker_dir=str(tmp_path)) for s in range(3)]
    with pytest.warns(W.JobRetried, match=r"job seed 1: its worker process died \(WorkerCrashedError\); "
                                          r"submitted again \(attempt 2 of 4\)") as caught:
        parallel = W.run_jobs(die_once, jobs, workers=2, threads=1, labels=[f"seed {s}" for s in range(3)])
    assert len([w for w in caught if issubclass(w.category, W.JobRetried)]) == 1
    assert (tmp_path / "seed1").exists()  # it did die once
    assert parallel == W.run_jobs(die_once, jobs) == [draw(s, 50 + s)[0] for s in range(3)]
    assert wait_until_gone() == []


def test_a_simulated_two_node_cluster_runs_jobs_on_both_nodes(monkeypatch):
    # the nodes' workers import this test module, as a cluster's nodes import an installed package
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]))
    with W.loopback_only():
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, node_ip_address=W.LOOPBACK,
                                                                    include_dashboard=False))
    try:
        with W.loopback_only():
            worker_node = cluster.add_node(num_cpus=1, node_ip_address=W.LOOPBACK)
        cluster.wait_for_nodes()
        head = cluster.head_node.node_id
        nodes = {head, worker_node.node_id}
        listening = set()
        for proc in psutil.Process().children(recursive=True):
            with __import__("contextlib").suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                listening |= {ipv4(c.laddr.ip) for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening and listening <= {W.LOOPBACK}, listening
        assert cluster.address.startswith(W.LOOPBACK + ":")
        results = W.run_jobs(draw_on_node, JOBS, cluster=cluster.address, labels=[f"seed {j['seed']}" for j in JOBS])
    finally:
        cluster.shutdown()
    assert [r[0] for r in results] == [draw(**j)[0] for j in JOBS]
    ran_on = [r[1] for r in results]
    assert set(ran_on) == nodes and len(nodes) == 2, (ran_on, nodes)
    print(f"simulated cluster: head {head[:12]}, worker node {worker_node.node_id[:12]}; "
          f"jobs ran on {[n[:12] for n in ran_on]}")
    assert wait_until_gone() == []


def test_the_runner_passes_cluster_and_gpus_through_the_environment(monkeypatch, capsys, tmp_path, mirror):
    from paramstress.book import runner

    monkeypatch.delenv(W.CLUSTER_ENV, raising=False)
    monkeypatch.delenv(W.GPUS_PER_JOB_ENV, raising=False)
    assert runner.main(["quickstart", "--cluster", "my-cluster"]) == 2
    assert "cluster must be None" in capsys.readouterr().err and W.CLUSTER_ENV not in os.environ
    assert runner.main(["quickstart", "--gpus-per-job", "-1"]) == 2
    assert "gpus_per_job must be a number >= 0" in capsys.readouterr().err
    seen = []
    monkeypatch.setattr(runner, "execute", lambda name, profile, overrides, target: seen.append(
        (name, os.environ.get(W.CLUSTER_ENV), os.environ.get(W.GPUS_PER_JOB_ENV))) or 0.0)
    assert runner.main(["quickstart", "--cluster", "ray://127.0.0.1:10001", "--gpus-per-job", "0.25",
                        "--out", str(tmp_path)]) == 0
    assert seen == [("quickstart", "ray://127.0.0.1:10001", "0.25")]  # what the kernel inherits
    # and nothing is left behind in this process: a later study here must not go to that cluster
    # (a leaked GPU share made every later local Ray job infeasible: the tests hung in ray.wait)
    assert W.CLUSTER_ENV not in os.environ and W.GPUS_PER_JOB_ENV not in os.environ
