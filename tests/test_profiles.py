"""Profiles live in one place (params/) and agree with the notebooks' parameters cells."""
import json

import pytest

from paramstress import profiles

BOOK = profiles.repo_root() / "book"


def _parameters_cell(nb_path):
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{nb_path} needs exactly one cell tagged 'parameters'"
    namespace: dict = {}
    exec("".join(cells[0]["source"]), {}, namespace)
    return namespace


def test_every_book_notebook_has_profiles_and_vice_versa():
    notebooks = sorted(p.stem for p in BOOK.glob("*.ipynb"))
    assert notebooks, "the book has no notebooks"
    assert notebooks == profiles.notebooks()


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_parameters_cell_defaults_are_the_local_profile(notebook):
    cell = _parameters_cell(BOOK / f"{notebook}.ipynb")
    assert cell == profiles.parameters(notebook, "local")


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_all_four_profiles_defined(notebook):
    for p in profiles.PROFILES:
        assert profiles.parameters(notebook, p)["profile"] == p
    assert profiles.published(notebook) in profiles.PROFILES


def test_bad_names_say_what_exists():
    with pytest.raises(profiles.ProfileError, match="known: .*quickstart"):
        profiles.parameters("nope")
    with pytest.raises(profiles.ProfileError, match="choose one of ci, local, gpu, paper"):
        profiles.parameters("quickstart", "laptop")
    with pytest.raises(profiles.ProfileError, match="unknown parameter"):
        profiles.parameters("quickstart", "ci", epohcs=3)


def test_differences_name_the_modified_keys():
    actual = profiles.parameters("quickstart", "local", epochs=7)
    assert profiles.differences("quickstart", "local", actual) == {"epochs": (2, 7)}


def test_git_commit_ignores_run_outputs_but_not_code():
    import subprocess

    from paramstress import provenance

    root = profiles.repo_root()
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                      capture_output=True, text=True).stdout.strip():
        pytest.skip("checkout has uncommitted changes")
    csv = root / "book" / "quickstart.history.csv"
    original = csv.read_bytes()
    try:
        csv.write_bytes(original + b"\n")
        assert "uncommitted" not in provenance.git_commit()
    finally:
        csv.write_bytes(original)
    source = root / "lib" / "__init__.py"
    original = source.read_bytes()
    try:
        source.write_bytes(original + b"\n")
        assert provenance.git_commit().endswith("+ uncommitted changes")
    finally:
        source.write_bytes(original)


def test_git_commit_of_a_copied_tree_comes_from_the_environment(tmp_path, monkeypatch):
    from paramstress import provenance

    checkout = profiles.repo_root()
    monkeypatch.setattr(provenance.profiles, "repo_root", lambda: tmp_path)  # no .git here
    monkeypatch.delenv(provenance.GIT_COMMIT_ENV, raising=False)
    assert provenance.git_commit() == "unknown (not a git checkout)"
    monkeypatch.setenv(provenance.GIT_COMMIT_ENV, "abc123def456")
    assert provenance.git_commit() == "abc123def456 (copied tree; commit named by $PARAMSTRESS_GIT_COMMIT)"
    # it also overrides a (possibly stale) .git of the copy
    monkeypatch.setattr(provenance.profiles, "repo_root", lambda: checkout)
    assert provenance.git_commit().startswith("abc123def456 (copied tree")


def _write_profiles(folder, name, profiles_body, **extra):
    import yaml
    spec = {"published": "local", "profiles": {p: dict(profiles_body) for p in profiles.PROFILES}, **extra}
    (folder / f"{name}.yml").write_text(yaml.safe_dump(spec))


def test_shared_keys_come_from_the_other_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "params_dir", lambda: tmp_path)
    _write_profiles(tmp_path, "first", {"task_params": {"a": 1}, "seed": 3})
    _write_profiles(tmp_path, "second", {"grid": [1, 2]}, shares={"from": "first", "keys": ["task_params"]})
    assert profiles.parameters("second", "gpu") == {"grid": [1, 2], "task_params": {"a": 1}, "profile": "gpu"}
    _write_profiles(tmp_path, "clash", {"task_params": {}}, shares={"from": "first", "keys": ["task_params"]})
    with pytest.raises(profiles.ProfileError, match="remove them here"):
        profiles.parameters("clash")
    _write_profiles(tmp_path, "absent", {"grid": 1}, shares={"from": "first", "keys": ["nothing"]})
    with pytest.raises(profiles.ProfileError, match="has no"):
        profiles.parameters("absent")
    _write_profiles(tmp_path, "chain", {"grid": 1}, shares={"from": "second", "keys": ["grid"]})
    with pytest.raises(profiles.ProfileError, match="shares nothing itself"):
        profiles.parameters("chain")


def test_vulnerability_reuses_the_corruption_pages_cifar_model_at_gpu():
    """At `gpu` both pages train ResNet-34 on cifar10-jpeg: one checkpoint (same TrainConfig)."""
    from paramstress import training

    fields = ("epochs", "batch_size", "lr", "weight_decay", "schedule", "augment", "hflip", "seed")
    c = profiles.parameters("corruption", "gpu")
    v = profiles.parameters("vulnerability", "gpu")
    run = next(r for r in v["runs"] if r["task"] == "cifar10-jpeg")
    assert "cifar10-jpeg" in c["tasks"] and run["train_samples"] == c["train_samples"]
    mine = dict({f: c[f] for f in fields}, model=c["model"], **c["train_overrides"].get("cifar10-jpeg", {}))
    theirs = dict({f: v[f] for f in fields}, model=run["model"], **run["overrides"])
    assert training.TrainConfig(**mine) == training.TrainConfig(**theirs)


@pytest.mark.parametrize("profile", ["local"])
def test_score_landscapes_reuses_synaptic_filterings_resnet18(profile):
    """Where both filtering pages train ResNet-18 on a data set, they build the same
    TrainConfig (one set of snapshots) and sweep it with the same settings (one cached
    sweep per snapshot), so the second page recomputes nothing for that network.
    At `local` (`make book` runs both); not at `gpu`, where score_landscapes is cut to
    fit one 10-minute command and synaptic_filtering's run is published on its own
    (params/score_landscapes.yml)."""
    from paramstress import landscape as L

    f = profiles.parameters("synaptic_filtering", profile)
    s = profiles.parameters("score_landscapes", profile)
    shared = [d for d in f["datasets"] if d in s["datasets"]]
    assert f["arch"] in s["archs"] and shared

    def cfg(p):
        return L.train_config(f["arch"], epochs=p["epochs"], keep_epochs=p["snapshot_epochs"], seed=p["eps_seed"],
                              train_subset=p["train_samples"], test_subset=p["test_samples"])

    assert cfg(f) == cfg(s)
    sweep_keys = ("T", "global_range", "adv_target", "eps_max", "adversarial", "eval_batch_size")
    assert {k: f[k] for k in sweep_keys} == {k: s[k] for k in sweep_keys}
