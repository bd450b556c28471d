"""Profiles live in one place (params/) and agree with the notebooks' parameters cells."""
import json

import pytest

from paramstress import profiles

REPO = profiles.repo_root()
BOOK = REPO / "book"
NOTEBOOKS = profiles.notebooks()


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
    source = root / "lib" / "paramstress" / "__init__.py"
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


def _write_profiles(folder, name, defaults, changes=None, **extra):
    import yaml
    spec = {"published": "local", "defaults": dict(defaults),
            "profiles": {p: dict((changes or {}).get(p, {})) for p in profiles.PROFILES}, **extra}
    (folder / f"{name}.yml").write_text(yaml.safe_dump(spec))


def test_shared_keys_come_from_the_other_notebook(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "params_dir", lambda: tmp_path)
    _write_profiles(tmp_path, "first", {"task_params": {"a": 1}, "seed": 3}, {"gpu": {"task_params": {"a": 2}}})
    _write_profiles(tmp_path, "second", {"grid": [1, 2]}, shares={"from": "first", "keys": ["task_params"]})
    assert profiles.parameters("second", "gpu") == {"grid": [1, 2], "task_params": {"a": 2}, "profile": "gpu"}
    assert profiles.parameters("second", "ci") == {"grid": [1, 2], "task_params": {"a": 1}, "profile": "ci"}
    _write_profiles(tmp_path, "clash", {"task_params": {}}, shares={"from": "first", "keys": ["task_params"]})
    with pytest.raises(profiles.ProfileError, match="remove them here"):
        profiles.parameters("clash")
    _write_profiles(tmp_path, "absent", {"grid": 1}, shares={"from": "first", "keys": ["nothing"]})
    with pytest.raises(profiles.ProfileError, match="has no"):
        profiles.parameters("absent")
    _write_profiles(tmp_path, "chain", {"grid": 1}, shares={"from": "second", "keys": ["grid"]})
    with pytest.raises(profiles.ProfileError, match="shares nothing itself"):
        profiles.parameters("chain")


def test_profiles_are_defaults_plus_changes(tmp_path, monkeypatch):
    monkeypatch.setattr(profiles, "params_dir", lambda: tmp_path)
    _write_profiles(tmp_path, "nb", {"epochs": 2, "lr": 0.1}, {"ci": {"epochs": 1}, "paper": {"lr": 0.01}})
    assert profiles.parameters("nb", "ci") == {"epochs": 1, "lr": 0.1, "profile": "ci"}
    assert profiles.parameters("nb", "local") == {"epochs": 2, "lr": 0.1, "profile": "local"}
    assert profiles.parameters("nb", "paper") == {"epochs": 2, "lr": 0.01, "profile": "paper"}
    _write_profiles(tmp_path, "typo", {"epochs": 2}, {"gpu": {"epohcs": 10}})
    with pytest.raises(profiles.ProfileError, match=r"changes \['epohcs'\], which 'defaults' lacks"):
        profiles.parameters("typo", "ci")
    (tmp_path / "short.yml").write_text("published: local\ndefaults: {a: 1}\nprofiles: {ci: {}, local: {}}\n")
    with pytest.raises(profiles.ProfileError, match=r"missing \['gpu', 'paper'\]"):
        profiles.parameters("short")


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_every_profile_passes_its_schema(notebook):
    """Each notebook's schema covers exactly its parameters, and the four profiles pass it."""
    entries = profiles.schema(notebook)
    for profile in profiles.PROFILES:
        values = profiles.parameters(notebook, profile)
        assert set(entries) == set(values)
        profiles.check(notebook, values)


def test_params_files_change_only_what_differs_from_the_defaults():
    """Profiles as overrides: no profile repeats a default value."""
    import yaml
    for notebook in NOTEBOOKS:
        spec = yaml.safe_load((profiles.params_dir() / f"{notebook}.yml").read_text())
        for profile, changes in spec["profiles"].items():
            same = [k for k, v in (changes or {}).items() if v == spec["defaults"][k]]
            assert not same, f"{notebook}.yml's {profile} repeats the defaults of {same}"


@pytest.mark.parametrize("key, value, message", [
    ("epochs", 0, "epochs = 0: 0 is less than the minimum of 1"),
    ("epochs", 2.5, "2.5 is not of type 'integer'"),
    ("p", 0.5, "p = 0.5: 0.5 is less than the minimum of 1"),
    ("p", "infinity", "expected the norm's p"),
    ("seeds", [0, 0], "has non-unique elements"),
    ("seeds", [], "should be non-empty"),
    ("dataset", "fashion_mnist", "'fashion_mnist' is not a dataset name; choose from mnist, fashion-mnist"),
    ("model", "resnet", "'resnet' is not a model name"),
    ("schedule", "linear", "'linear' is not a schedule name; choose from onecycle, cosine, constant"),
    ("alpha_test", 1.0, "1.0 is greater than or equal to the maximum of 1"),
    ("train_samples", 0, "0 is less than the minimum of 1"),
    ("device", "gpu", "does not match"),
    ("augment", "yes", "'yes' is not of type 'boolean'"),
])
def test_bad_values_are_named_with_what_is_expected(key, value, message):
    values = dict(profiles.parameters("resistant_training", "ci"), **{key: value})
    with pytest.raises(profiles.ProfileError, match="resistant_training: bad parameter values") as info:
        profiles.check("resistant_training", values)
    assert message in str(info.value)
    assert str(info.value).count("\n  - ") == 1  # only the bad key


def test_good_values_pass_and_null_counts_mean_all():
    values = dict(profiles.parameters("resistant_training", "ci"), train_samples=None, p="inf", device="cuda:1")
    profiles.check("resistant_training", values)


def test_check_reads_a_notebook_namespace():
    """The notebooks' first code cell passes globals(): extra names are ignored, a missing
    parameter is named."""
    namespace = dict(profiles.parameters("quickstart", "ci"), np=object(), __name__="__main__")
    namespace.pop("profile")
    profiles.check("quickstart", namespace)
    namespace.pop("lr")
    with pytest.raises(profiles.ProfileError, match="lr: not set"):
        profiles.check("quickstart", namespace)


def test_formats_name_the_librarys_registries():
    from paramstress import fragility, models, selective, training
    assert set(profiles.FORMATS["model"]()) == set(models.MODEL_NAMES)
    assert set(profiles.FORMATS["reference"]()) == set(fragility.REFERENCES)
    assert set(profiles.FORMATS["freeze_rule"]()) == set(selective.FREEZE_RULES)
    assert "corruption_direct" in profiles.FORMATS["objective"]() and \
        set(profiles.FORMATS["objective"]()) == set(training.objective_names())


def test_schema_must_cover_the_parameters(tmp_path, monkeypatch):
    import shutil
    monkeypatch.setattr(profiles, "params_dir", lambda: tmp_path)
    shutil.copy(REPO / "params" / profiles.TYPES_FILE, tmp_path)
    _write_profiles(tmp_path, "nb", {"epochs": 2, "lr": 0.1}, schema={"epochs": "positive_int"})
    with pytest.raises(profiles.ProfileError, match=r"missing \['lr'\]"):
        profiles.schema("nb")
    _write_profiles(tmp_path, "nb", {"epochs": 2}, schema={"epochs": "positive_integer"})
    with pytest.raises(profiles.ProfileError, match="unknown type 'positive_integer'"):
        profiles.schema("nb")
    _write_profiles(tmp_path, "nb", {"epochs": 2}, schema={"epochs": "positive_int", "lr": "positive_number"})
    with pytest.raises(profiles.ProfileError, match=r"not parameters \['lr'\]"):
        profiles.schema("nb")


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
