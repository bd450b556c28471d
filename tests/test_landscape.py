"""Filtering over training (paramstress.landscape): the paper's training settings, layer
picks, and cached sweeps / ε choices that are read back instead of recomputed."""
import pandas as pd
import pytest
import torch

from paramstress import filtering as FL
from paramstress import landscape as L
from paramstress import training

from test_filtering import tiny

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def test_train_config_is_section_4_3():
    cfg = L.train_config("resnet18", epochs=4, keep_epochs=[4, 2], seed=3, train_subset=100, test_subset=50)
    assert (cfg.optimizer, cfg.lr, cfg.batch_size, cfg.schedule, cfg.weight_decay, cfg.augment) == \
        ("adam", 1e-3, 100, "constant", 0.0, False)
    assert cfg.keep_epochs == (2, 4) and cfg.seed == 3 and cfg.model == "resnet18"
    with pytest.raises(ValueError, match="outside"):
        L.train_config("resnet18", epochs=2, keep_epochs=[3], seed=0)


def test_pick_layers_keeps_first_and_last():
    model = tiny()
    every = FL.filterable_layers(model)
    assert L.pick_layers(model, None) == every
    assert L.pick_layers(model, 2) == [every[0], every[-1]]
    assert L.pick_layers(model, 3) == ["conv1", "block.conv2", "fc"]  # positions 0, round(1.5) = 2, 3
    assert L.pick_layers(model, 9) == every
    with pytest.raises(ValueError, match="count"):
        L.pick_layers(model, 1)


def images(n=24, seed=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 3, (n,), generator=g)


def normalize(x):
    return (x.float() / 255 - 0.5) / 0.25


def shifted_normalize(x):
    """``normalize`` with its mean one float32 ulp higher (as Fashion-MNIST's once was on 2+ threads)."""
    return (x.float() / 255 - 0.50000006) / 0.25


def test_sweeps_and_eps_choices_are_cached_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    model = tiny()
    x, y = images()
    args = dict(normalize=normalize, tags={"model": "tiny", "dataset": "toy", "seed": 0, "epoch": 1},
                snapshot="abc.epoch1", T=5, eps=0.3, batch_size=16)
    first = L.sweep_snapshot(model, x, y, scopes=["conv1", "global"], **args)
    assert first.attrs["stats"]["evaluations"] > 0
    again = L.sweep_snapshot(model, x, y, scopes=["conv1", "global"], **args)
    assert again.attrs["stats"]["evaluations"] == 0  # every row read from the cache
    pd.testing.assert_frame_equal(again, first, check_dtype=False)
    more = L.sweep_snapshot(model, x, y, scopes=["conv1", "fc", "global"], **args)  # one new scope
    assert 0 < more.attrs["stats"]["evaluations"] <= 15
    other = L.sweep_snapshot(model, x, y, scopes=["conv1"], **{**args, "eps": 0.1})  # other settings: other file
    assert other.attrs["stats"]["evaluations"] > 0
    assert len(list((tmp_path / "filtering").glob("sweep.*.csv"))) == 2
    uncached = L.sweep_snapshot(model, x, y, scopes=["conv1", "global"], **{**args, "snapshot": None})
    pd.testing.assert_frame_equal(uncached[first.columns], first, check_dtype=False)
    # the same images normalised otherwise (statistics one float32 ulp apart) are not read from that file
    shifted = L.sweep_snapshot(model, x, y, scopes=["conv1"],
                               **{**args, "normalize": shifted_normalize})
    assert shifted.attrs["stats"]["evaluations"] > 0
    assert len(list((tmp_path / "filtering").glob("sweep.*.csv"))) == 3


def test_choose_epsilon_caches_its_result(tmp_path, monkeypatch):
    monkeypatch.setenv(training.CHECKPOINT_DIR_ENV, str(tmp_path))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    x, y = images(200)
    with torch.no_grad():  # a model that is right on most inputs: predict from the inputs' own labels
        y = model(normalize(x)).argmax(1)
    y[:20] = (y[:20] + 1) % 3
    kw = dict(normalize=normalize, target_accuracy=60.0, eps_max=2.0, batch_size=64, cache_key="k.epoch1")
    first = L.choose_epsilon(model, x, y, **kw)
    assert abs(first["adv_accuracy"] - 60.0) <= 1.0 and first["def7"] and first["def8"]
    files = list((tmp_path / "filtering").glob("eps.*.json"))
    assert len(files) == 1
    files[0].write_text(files[0].read_text().replace(f'"eps": {first["eps"]}', '"eps": 123.0'))
    assert L.choose_epsilon(model, x, y, **kw)["eps"] == 123.0  # read back, not recomputed
    shifted = {**kw, "normalize": shifted_normalize}
    assert L.choose_epsilon(model, x, y, **shifted)["eps"] != 123.0  # other inputs: computed, not read back
    assert len(list((tmp_path / "filtering").glob("eps.*.json"))) == 2
