"""paramstress.workers (jobs on Ray) and paramstress.landscape.study (the filtering study of
Pravin et al. 2023 per architecture × data set) run on a local Ray instance: same results as
the serial loop, errors named, bad input refused before any process starts.

The module's Ray runs share one local instance with 2 CPUs (``W.ray_session``, started once:
its workers import torch once); tests/test_ray_executor.py starts and stops its own."""
import dataclasses
import os
import threading

import pandas as pd
import pytest
import torch

from paramstress import adversarial as A
from paramstress import fragility as FR
from paramstress import landscape as L
from paramstress import training
from paramstress import workers as W
from paramstress.data import ImageData

pytestmark = pytest.mark.usefixtures("one_cpu_thread", "shared_ray")


@pytest.fixture(scope="module")
def shared_ray():
    with W.ray_session(workers=2) as ray:
        yield ray
    assert not ray.is_initialized()


def draw(seed, n):
    """A job: ``n`` normal draws from ``seed`` and the worker's pid and thread count."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g).sum().item(), os.getpid(), torch.get_num_threads()


def fail_on(seed, bad):
    if seed == bad:
        raise ValueError(f"seed {seed} is bad")
    return seed


def test_serial_and_parallel_give_the_same_results_in_job_order():
    jobs = [dict(seed=s, n=50 + s) for s in range(5)]
    serial = W.run_jobs(draw, jobs)
    parallel = W.run_jobs(draw, jobs, workers=2, threads=1)
    assert [r[0] for r in parallel] == [r[0] for r in serial]
    assert {r[1] for r in serial} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in parallel} and len({r[1] for r in parallel}) == 2
    assert {r[2] for r in parallel} == {1}


def test_jobs_no_node_can_run_are_refused_not_queued_for_ever(monkeypatch):
    """In an open session (here the module's 2-CPU instance, no GPU), jobs that reserve a GPU
    share would wait in ray.wait for ever: refused before any is submitted, the fix named."""
    jobs = [dict(seed=s, n=5) for s in range(3)]
    with pytest.raises(ValueError, match="0 GPUs; lower gpus_per_job"):
        W.run_jobs(draw, jobs, workers=2, gpus_per_job=0.25)
    monkeypatch.setenv(W.GPUS_PER_JOB_ENV, "0.25")  # the same through the environment the runner sets
    with pytest.raises(ValueError, match="unset \\$PARAMSTRESS_GPUS_PER_JOB"):
        W.run_jobs(draw, jobs, workers=2)


def test_a_failing_job_is_named_and_stops_the_run():
    for workers in (1, 2):
        with pytest.raises(ValueError, match="seed 2 is bad") as info:
            W.run_jobs(fail_on, [dict(seed=s, bad=2) for s in range(4)], workers=workers,
                       labels=[f"job {s}" for s in range(4)])
        assert any("job 2" in note for note in info.value.__notes__)


def test_bad_input_is_refused_before_any_process_starts():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="workers must be an integer"):
            W.run_jobs(draw, [dict(seed=0, n=1)], workers=bad)
    with pytest.raises(ValueError, match="threads"):
        W.run_jobs(draw, [dict(seed=0, n=1)] * 2, workers=2, threads=0)
    with pytest.raises(ValueError, match="one label per job"):
        W.run_jobs(draw, [dict(seed=0, n=1)] * 2, workers=2, labels=["a"])
    with pytest.raises(TypeError, match="cannot be sent"):
        W.run_jobs(draw, [dict(seed=0, n=1), dict(seed=1, n=threading.Lock())], workers=2)


def toy(name="synthetic-study", seed=0, size=8):
    """Noisy 1×8×8 images of 3 classes; class k brightens rows 2k..2k+1."""
    g = torch.Generator().manual_seed(seed)

    def split(n):
        y = torch.randint(0, 3, (n,), generator=g)
        x = torch.randint(0, 100, (n, 1, size, size), generator=g, dtype=torch.uint8)
        for k in range(3):
            x[y == k, :, 2 * k:2 * k + 3, :] += 150
        return x, y

    tx, ty = split(600)
    vx, vy = split(60)
    return ImageData(name=name, train_x=tx, train_y=ty, test_x=vx, test_y=vy, classes=["a", "b", "c"],
                     mean=(0.35,), std=(0.3,))


SETTINGS = dict(seeds=[0, 1], eps_seed=0, epochs=2, snapshot_epochs=[1, 2], train_samples=None, test_samples=40,
                adv_target=40.0, eps_max=2.0, T=3, layers=2, eval_batch_size=64)


def test_study_in_workers_equals_the_serial_study(tmp_path, monkeypatch):
    sets = {"one": toy("one", 0), "two": toy("two", 1)}
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path / "serial"))
    serial = L.study(["small_cnn"], sets, **SETTINGS)
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path / "parallel"))  # nothing cached there
    parallel = L.study(["small_cnn"], sets, workers=2, threads=1, **SETTINGS)
    assert list(serial) == list(parallel) == [("small_cnn", "one"), ("small_cnn", "two")]
    for key in serial:
        a, b = serial[key], parallel[key]
        assert a.worker == f"pid {os.getpid()}" and b.worker != a.worker
        assert not any(r.from_cache for r in b.runs.values())  # computed in the worker, not read back
        assert a.eps == b.eps
        assert [[h.test_accuracy for h in r.history] for r in a.runs.values()] == \
               [[h.test_accuracy for h in r.history] for r in b.runs.values()]
        pd.testing.assert_frame_equal(a.sweeps, b.sweeps)
        assert a.computed == b.computed and sum(c["evaluations"] for c in a.computed) > 0
        assert set(a.sweeps.seed) == {0, 1} and set(a.sweeps.epoch) == {1, 2}
        assert set(a.sweeps.layer) == {"global", *L.pick_layers(
            training.load_snapshot(a.runs[0].config, sets[key[1]], 1), 2)}
    again = L.study(["small_cnn"], sets, workers=2, threads=1, **SETTINGS)  # now read back
    for key in again:
        assert all(r.from_cache for r in again[key].runs.values())
        assert sum(c["evaluations"] for c in again[key].computed) == 0
        pd.testing.assert_frame_equal(again[key].sweeps, serial[key].sweeps)


def test_study_pair_adds_the_included_layer_and_trains_the_eps_seed(tmp_path, monkeypatch):
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    ds = toy()
    result = L.study_pair("small_cnn", ds, **{**SETTINGS, "seeds": [1], "eps_seed": 0, "snapshot_epochs": [2]},
                          include_layers=["4"])
    assert list(result.runs) == [1] and set(result.sweeps.seed) == {1}
    assert list(dict.fromkeys(result.sweeps.layer))[0] == "4"
    eps_cfg = L.train_config("small_cnn", epochs=2, keep_epochs=[2], seed=0, test_subset=40)
    assert training.snapshot_path(eps_cfg, ds, 2).exists()  # eps seed 0 was trained for its eps only


def test_study_refuses_bad_settings_before_any_compute(tmp_path, monkeypatch):
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    sets = {"one": toy("one")}
    cases = [(dict(archs=["no_such_net"]), "unknown architectures"),
             (dict(seeds=[]), "seeds is empty"),
             (dict(snapshot_epochs=[3]), "outside"),
             (dict(layers=1), "layers must be"),
             (dict(workers=0), "workers must be"),
             (dict(archs=[]), "nothing to study"),
             (dict(adv_target=33.0), "not above chance for one"),  # 3 classes: chance 33.3 %
             (dict(adv_target=100.0), "below 100"),
             (dict(unreachable="skip"), "unreachable must be")]
    for change, message in cases:
        kwargs = {**SETTINGS, "archs": ["small_cnn"], **change}
        archs = kwargs.pop("archs")
        with pytest.raises(ValueError, match=message):
            L.study(archs, sets, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing trained, nothing cached


def unlearnable(name="noise", seed=5):
    """``toy`` images with labels drawn independently of them: no network gets far above chance."""
    ds = toy(name, seed)
    g = torch.Generator().manual_seed(seed + 1)
    return dataclasses.replace(ds, train_y=torch.randint(0, 3, ds.train_y.shape, generator=g),
                               test_y=torch.randint(0, 3, ds.test_y.shape, generator=g))


def test_a_network_below_the_shared_target_raises_or_is_kept_clean_only(tmp_path, monkeypatch):
    """Def. 7 cannot hold for a network whose clean accuracy is not above the shared target:
    by default the study stops (in a worker process too, with the exception's fields); with
    unreachable='clean-only' that network is filtered on clean inputs only and the others
    are attacked as before."""
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    sets = {"one": toy("one", 0), "noise": unlearnable()}
    settings = {**SETTINGS, "seeds": [0], "adv_target": 70.0}
    for workers in (1, 2):
        with pytest.raises(A.TargetUnreachable, match="Def. 7") as info:
            L.study(["small_cnn"], sets, workers=workers, threads=1, **settings)
        assert info.value.clean_accuracy < 70.0 and info.value.target == 70.0
        assert any("unreachable='clean-only'" in note for note in info.value.__notes__)
    kept = L.study(["small_cnn"], sets, unreachable="clean-only", **settings)
    fine, noise = kept["small_cnn", "one"], kept["small_cnn", "noise"]
    assert fine.eps["eps"] > 0 and "excluded" not in fine.eps and fine.sweeps["adv_accuracy"].notna().all()
    assert noise.eps["eps"] is None and "is not above 70 %" in noise.eps["excluded"] and noise.eps["def7"] is False
    assert noise.eps["clean_accuracy"] < 70.0 and 1 <= noise.eps["classes_predicted"] <= 3
    assert noise.sweeps["adv_accuracy"].isna().all() and noise.sweeps["clean_accuracy"].notna().all()
    assert len(noise.sweeps) == len(fine.sweeps)  # the same scopes, filters and thresholds, clean only
    # FGSM that cannot reach the target within eps_max: the same, with that reason
    resists = L.study(["small_cnn"], {"one": sets["one"]}, unreachable="clean-only", **{**settings, "eps_max": 1e-4})
    assert resists["small_cnn", "one"].eps["eps"] is None
    assert "FGSM up to ε = 0.0001 leaves" in resists["small_cnn", "one"].eps["excluded"]
    assert resists["small_cnn", "one"].eps["evaluations"] == 8 == len(resists["small_cnn", "one"].eps["curve"]["eps"]) - 1
    assert resists["small_cnn", "one"].sweeps["adv_accuracy"].isna().all()
    table = FR.scores(noise.sweeps)
    assert table["phi_clean"].notna().all() and table["phi_adv"].isna().all() and table["delta_phi"].isna().all()


def test_a_worker_refuses_data_that_differ_from_the_callers():
    with pytest.raises(ValueError, match="checksum"):
        L.study_pair("small_cnn", toy(), checksum="not-the-same", **SETTINGS)
