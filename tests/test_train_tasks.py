"""tasks.train_tasks: the text tasks' trainings through the one executor. On a local 2-CPU Ray
instance the parser and the language model (the ci profile's sizes, NLTK's PTB sample from the
mirror) train to the serial run's weights bit for bit; bad jobs are refused before anything trains."""
import pytest
import torch
from conftest import mirror_or_skip

from paramstress.book import profiles
from paramstress.corruption.text import tasks as T
from paramstress.engine import workers as W

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

CI = profiles.parameters("text_tasks", "ci")
KEYS = ["ptb-parsing", "ptb-lm"]


@pytest.fixture(scope="module")
def built():
    mirror = mirror_or_skip()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror))
        yield {key: T.build_task(key, **CI["task_params"][key]) for key in KEYS}


def jobs():
    return [(key, T.TaskTrainConfig(**CI["train_params"][key], seed=seed)) for key in KEYS for seed in (0, 1)]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_two_ray_workers_train_the_text_models_the_serial_loop_trains(built, tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror_or_skip()))  # the workers load the data too
    serial = T.train_tasks(built, jobs(), params=CI["task_params"], checkpoint_dir=tmp_path / "serial")
    parallel = T.train_tasks(built, jobs(), params=CI["task_params"], checkpoint_dir=tmp_path / "ray",
                             workers=2, threads=1)
    assert [r.config_hash for r in parallel] == [r.config_hash for r in serial]
    assert [r.loaded for r in serial] == [r.loaded for r in parallel] == [False] * 4  # trained, in the workers
    for a, b in zip(serial, parallel):
        assert same(a, b)
        assert [{k: v for k, v in h.items() if k != "seconds"} for h in a.history] == \
               [{k: v for k, v in h.items() if k != "seconds"} for h in b.history]


def test_bad_jobs_are_refused_before_anything_trains(built, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "run_jobs", lambda *a, **k: pytest.fail("the executor was reached"))
    cfg = T.TaskTrainConfig(epochs=1)
    with pytest.raises(ValueError, match="give its built task"):
        T.train_tasks(built, [("de-en", cfg)], params=CI["task_params"], checkpoint_dir=tmp_path, workers=2)
    with pytest.raises(ValueError, match="give its built task"):
        T.train_tasks(built, [("ptb-lm", cfg)], params={}, checkpoint_dir=tmp_path, workers=2)
    with pytest.raises(TypeError, match="TaskTrainConfig"):
        T.train_tasks(built, [("ptb-lm", dict(epochs=1))], params=CI["task_params"], checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        T.train_tasks(built, [("ptb-lm", cfg), ("ptb-lm", cfg)], params=CI["task_params"], checkpoint_dir=None,
                      workers=2)
    assert not list(tmp_path.iterdir())


def test_task_table2_on_workers_needs_the_tasks_parameters_before_anything_trains(built, tmp_path, monkeypatch):
    from paramstress.corruption import resistant as R

    monkeypatch.setattr(W, "run_jobs", lambda *a, **k: pytest.fail("the executor was reached"))
    task = built["ptb-parsing"]
    with pytest.raises(ValueError, match="give task_params"):
        R.task_table2(task, task, CI["train_params"]["ptb-parsing"], virtual_eps=[0.02], eval_eps=[0.01],
                      checkpoint_dir=tmp_path, workers=2)
    with pytest.raises(ValueError, match="workers must be"):
        R.task_table2(task, task, CI["train_params"]["ptb-parsing"], virtual_eps=[0.02], eval_eps=[0.01],
                      checkpoint_dir=tmp_path, workers=0)
    assert not list(tmp_path.iterdir())
