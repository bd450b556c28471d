"""Run profiles of the book's notebooks, defined in one place: ``params/<notebook>.yml``.

Each file names the notebook's parameters for four profiles and which profile the
book publishes::

    published: local          # the executed copy committed in book/
    profiles:
      ci:    {...}            # seconds on a CPU: the nbval regression copies
      local: {...}            # the default main job on a 2-core CPU
      gpu:   {...}            # paper-scale on the offline data, one 10-minute GPU command
      paper: {...}            # the papers' own data sets and budgets, downloaded

A notebook that continues another one's work can take some keys from it, so that the
two never drift apart (and share cached models)::

    shares: {from: text_tasks, keys: [task_params, train_params]}

Every profile lists the same keys; the notebook's ``parameters`` cell holds the
``local`` values as defaults, so ``papermill book/<nb>.ipynb out.ipynb -p key value``
runs without the runner (a test keeps the two in step).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PROFILES = ("ci", "local", "gpu", "paper")
DEFAULT_PROFILE = "local"


class ProfileError(ValueError):
    """Unknown notebook, profile or parameter; the message names the valid ones."""


def repo_root() -> Path:
    here = Path(__file__).resolve().parent.parent
    if (here / "params").is_dir() and (here / "book").is_dir():
        return here
    cwd = Path.cwd()
    for candidate in (cwd, *cwd.parents):
        if (candidate / "params").is_dir() and (candidate / "book").is_dir():
            return candidate
    raise ProfileError("cannot find the paramstress checkout (a folder with params/ and book/); "
                       "run from inside the checkout")


def params_dir() -> Path:
    return repo_root() / "params"


def notebooks() -> list[str]:
    """Names of the book's notebooks that have a profile file."""
    return sorted(p.stem for p in params_dir().glob("*.yml"))


def _load_raw(notebook: str) -> dict[str, Any]:
    path = params_dir() / f"{notebook}.yml"
    if not path.exists():
        raise ProfileError(f"unknown notebook {notebook!r}; known: {', '.join(notebooks()) or '(none)'}")
    return yaml.safe_load(path.read_text()) or {}


def _load(notebook: str) -> dict[str, Any]:
    path = params_dir() / f"{notebook}.yml"
    spec = _load_raw(notebook)
    profiles = spec.get("profiles", {})
    shares = spec.get("shares")
    if shares is not None:
        if not isinstance(shares, dict) or set(shares) != {"from", "keys"} or not shares["keys"]:
            raise ProfileError(f"{path}: 'shares' must be {{from: <notebook>, keys: [<key>, ...]}}, got {shares!r}")
        if shares["from"] == notebook or _load_raw(shares["from"]).get("shares"):
            raise ProfileError(f"{path}: 'shares' must name a notebook that shares nothing itself")
        source = _load(shares["from"])
        for profile, values in profiles.items():
            clash = sorted(set(shares["keys"]) & set(values or {}))
            if clash:
                raise ProfileError(f"{path}: profile {profile!r} defines {clash}, which it shares from "
                                   f"{shares['from']!r}; remove them here")
            missing = [k for k in shares["keys"] if k not in source["profiles"].get(profile, {})]
            if missing:
                raise ProfileError(f"{path}: {shares['from']!r} has no {missing} in profile {profile!r}")
            profiles[profile] = {**(values or {}), **{k: source["profiles"][profile][k] for k in shares["keys"]}}
    missing = [p for p in PROFILES if p not in profiles]
    if missing:
        raise ProfileError(f"{path}: profiles {missing} are not defined; every notebook defines {PROFILES}")
    keys = {p: set(v) for p, v in profiles.items()}
    if len({frozenset(k) for k in keys.values()}) != 1:
        raise ProfileError(f"{path}: profiles must define the same keys, got {keys}")
    if spec.get("published") not in PROFILES:
        raise ProfileError(f"{path}: 'published' must be one of {PROFILES}")
    return spec


def published(notebook: str) -> str:
    """The profile whose executed copy the book shows for ``notebook``."""
    return _load(notebook)["published"]


def parameters(notebook: str, profile: str = DEFAULT_PROFILE, **overrides: Any) -> dict[str, Any]:
    """The parameters of ``notebook`` at ``profile`` (plus ``profile`` itself), with overrides."""
    spec = _load(notebook)
    if profile not in PROFILES:
        raise ProfileError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    values = dict(spec["profiles"][profile])
    unknown = sorted(set(overrides) - set(values) - {"profile"})
    if unknown:
        raise ProfileError(f"{notebook}: unknown parameter(s) {unknown}; its parameters are {sorted(values)}")
    values.update(overrides)
    values["profile"] = profile
    return values


def differences(notebook: str, profile: str, actual: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Parameters of a run that differ from its named profile: ``{key: (profile value, actual)}``."""
    try:
        expected = parameters(notebook, profile)
    except ProfileError:
        return {}
    return {k: (v, actual.get(k)) for k, v in expected.items() if k in actual and actual[k] != v}
