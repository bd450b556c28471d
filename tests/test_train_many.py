"""training.train_many: independent trainings (trainers × seeds) through the one executor. On a
local 2-CPU Ray instance the models, histories and caches equal the serial run's bit for bit;
bad arguments are refused before anything trains or Ray starts."""
import functools
import os

import pytest
import torch

from paramstress.corruption import objectives  # noqa: F401  (registers corruption_direct here)
from paramstress.engine import training
from paramstress.engine import workers as W
from paramstress.engine.data import ImageData

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def ray_instance():
    """One local 2-CPU instance for the module's Ray tests (started once; shut down after)."""
    with W.ray_session(workers=2) as ray:
        yield ray
    assert not ray.is_initialized()


def toy(seed=0, n=400, flip=False):
    """Noisy 1×8×8 images of 3 classes (class k brightens rows 2k..2k+2); ``flip`` changes labels."""
    g = torch.Generator().manual_seed(seed)

    def split(count):
        y = torch.randint(0, 3, (count,), generator=g)
        x = torch.randint(0, 100, (count, 1, 8, 8), generator=g, dtype=torch.uint8)
        for k in range(3):
            x[y == k, :, 2 * k:2 * k + 3, :] += 150
        return x, (2 - y) if flip else y

    tx, ty = split(n)
    vx, vy = split(60)
    return ImageData(name="toy-train-many", train_x=tx, train_y=ty, test_x=vx, test_y=vy, classes=["a", "b", "c"],
                     mean=(0.35,), std=(0.3,))


def configs():
    base = dict(model="small_cnn", epochs=2, batch_size=64, lr=0.05)
    return [training.TrainConfig(**base, seed=s, objective=o, objective_params=p)
            for o, p in (("cross_entropy", {}), ("corruption_direct", {"alpha": 0.5, "eps": 0.1, "p": 2}))
            for s in (0, 1)]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_two_ray_workers_train_what_the_serial_loop_trains(tmp_path, ray_instance):
    ds = toy()
    serial = training.train_many(ds, configs(), checkpoint_dir=tmp_path / "serial", device="cpu")
    assert [r.from_cache for r in serial] == [False] * 4
    loop = [training.train(None, ds, c, device="cpu", checkpoint_dir=tmp_path / "loop", progress=False)
            for c in configs()]
    assert all(same(a, b) for a, b in zip(serial, loop))  # workers=1 is the plain loop
    parallel = training.train_many(ds, configs(), checkpoint_dir=tmp_path / "ray", device="cpu",
                                   rebuild=functools.partial(toy, 0), workers=2, threads=1)
    assert [r.config_hash for r in parallel] == [r.config_hash for r in serial]
    assert [r.from_cache for r in parallel] == [False] * 4 and [r.epochs_trained for r in parallel] == [2] * 4
    for a, b in zip(serial, parallel):
        assert same(a, b)
        assert [h.test_accuracy for h in a.history] == [h.test_accuracy for h in b.history]
        assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    again = training.train_many(ds, configs(), checkpoint_dir=tmp_path / "ray", device="cpu",
                                rebuild=functools.partial(toy, 0), workers=2, threads=1)
    assert [r.from_cache for r in again] == [True] * 4 and all(same(a, b) for a, b in zip(serial, again))


def test_data_rebuilt_differently_in_a_worker_are_refused_with_the_fix(tmp_path, ray_instance):
    with pytest.raises(ValueError, match="differ from the caller's") as info:
        training.train_many(toy(), configs()[:2], checkpoint_dir=tmp_path, device="cpu",
                            rebuild=functools.partial(toy, 0, flip=True), workers=2, threads=1)
    assert any("job small_cnn" in note for note in info.value.__notes__)
    assert not list(tmp_path.glob("*.pt"))  # nothing trained


def test_bad_arguments_are_refused_before_anything_trains_or_ray_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "run_jobs", lambda *a, **k: pytest.fail("the executor was reached"))
    ds = toy()
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        training.train_many(ds, configs(), checkpoint_dir=None, rebuild=toy, workers=2)
    with pytest.raises(ValueError, match="synthetic"):
        training.train_many(ds, configs(), checkpoint_dir=tmp_path, workers=2)
    with pytest.raises(TypeError, match="TrainConfig"):
        training.train_many(ds, [dict(model="small_cnn")], checkpoint_dir=tmp_path, workers=2)
    with pytest.raises(ValueError):
        training.train_many(ds, [training.TrainConfig(model="small_cnn", epochs=0)], checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="workers must be"):
        training.train_many(ds, configs(), checkpoint_dir=tmp_path, workers=0)
    assert not list(tmp_path.iterdir())
    assert os.environ.get(W.CLUSTER_ENV) is None
