"""Run profiles of the book's notebooks, defined in one place: ``params/<notebook>.yml``.

Each file holds the notebook's default parameters, what each of the four profiles changes,
which profile the book publishes, and the parameters' schema::

    published: local          # the executed copy committed in book/
    defaults: {...}           # the notebook's parameters cell (the `local` values)
    profiles:                 # each profile: only the keys it changes
      ci:    {...}            # seconds on a CPU: the nbval regression copies
      local: {}               # the default main job on a 2-core CPU
      gpu:   {...}            # paper-scale on the offline data, one 10-minute GPU command
      paper: {...}            # the papers' own data sets and budgets, downloaded
    schema: {...}             # key: a type of params/_types.yml, or an inline JSON Schema

A notebook that continues another one's work can take some keys from it, so that the
two never drift apart (and share cached models)::

    shares: {from: text_tasks, keys: [task_params, train_params]}

A notebook that trains the same models as another one (the same configurations, hence the
same cache entries) without sharing keys names it, so that a run of several pages side by
side (``runner --jobs 2``) starts it only once that one has filled the cache::

    after: [corruption_vs_filtering]

The notebook's ``parameters`` cell holds the defaults, so ``papermill book/<nb>.ipynb
out.ipynb -p key value`` runs without the runner (a test keeps the two in step).
:func:`check` validates a run's values against the schema (JSON Schema, with the
``jsonschema`` package; names are checked against the library's registries through
:data:`FORMATS`): the runner calls it before a kernel starts, and each notebook's first
code cell calls it after papermill's injected parameters.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("ci", "local", "gpu", "paper")
DEFAULT_PROFILE = "local"


class ProfileError(ValueError):
    """Unknown notebook, profile or parameter; the message names the valid ones."""


def repo_root() -> Path:
    here = Path(__file__).resolve().parents[3]  # lib/paramstress/book/profiles.py
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
    return sorted(p.stem for p in params_dir().glob("*.yml") if not p.stem.startswith("_"))


def _load_raw(notebook: str) -> dict[str, Any]:
    path = params_dir() / f"{notebook}.yml"
    if not path.exists():
        raise ProfileError(f"unknown notebook {notebook!r}; known: {', '.join(notebooks()) or '(none)'}")
    return yaml.safe_load(path.read_text()) or {}


def _load(notebook: str) -> dict[str, Any]:
    """The notebook's spec with ``profiles`` resolved to full parameter sets (defaults,
    then the profile's changes, then the keys shared from another notebook)."""
    path = params_dir() / f"{notebook}.yml"
    spec = _load_raw(notebook)
    defaults = spec.get("defaults")
    if not isinstance(defaults, dict) or not defaults:
        raise ProfileError(f"{path}: 'defaults' must map every parameter to its value (the notebook's "
                           "parameters cell)")
    changes = spec.get("profiles") or {}
    missing = [p for p in PROFILES if p not in changes]
    extra = sorted(set(changes) - set(PROFILES))
    if missing or extra:
        raise ProfileError(f"{path}: 'profiles' must list exactly {PROFILES} (an unchanged one as `{{}}`); "
                           f"missing {missing}, unknown {extra}")
    profiles = {}
    for profile in PROFILES:
        values = changes[profile] or {}
        if not isinstance(values, dict):
            raise ProfileError(f"{path}: profile {profile!r} must map keys to values, got {values!r}")
        unknown = sorted(set(values) - set(defaults))
        if unknown:
            raise ProfileError(f"{path}: profile {profile!r} changes {unknown}, which 'defaults' lacks; "
                               "add them to 'defaults' first")
        profiles[profile] = {**defaults, **values}
    shares = spec.get("shares")
    if shares is not None:
        if not isinstance(shares, dict) or set(shares) != {"from", "keys"} or not shares["keys"]:
            raise ProfileError(f"{path}: 'shares' must be {{from: <notebook>, keys: [<key>, ...]}}, got {shares!r}")
        if shares["from"] == notebook or _load_raw(shares["from"]).get("shares"):
            raise ProfileError(f"{path}: 'shares' must name a notebook that shares nothing itself")
        clash = sorted(set(shares["keys"]) & set(defaults))
        if clash:
            raise ProfileError(f"{path}: 'defaults' defines {clash}, which it shares from "
                               f"{shares['from']!r}; remove them here")
        source = _load(shares["from"])
        absent = [k for k in shares["keys"] if k not in source["defaults"]]
        if absent:
            raise ProfileError(f"{path}: {shares['from']!r} has no {absent}")
        for profile in PROFILES:
            profiles[profile].update({k: source["profiles"][profile][k] for k in shares["keys"]})
    if spec.get("published") not in PROFILES:
        raise ProfileError(f"{path}: 'published' must be one of {PROFILES}")
    after = spec.get("after", [])
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after) or notebook in after:
        raise ProfileError(f"{path}: 'after' must list other notebooks, e.g. [corruption_vs_filtering]; got {after!r}")
    unknown = [a for a in after if not (params_dir() / f"{a}.yml").exists()]
    if unknown:
        raise ProfileError(f"{path}: 'after' names {unknown}, which have no params file; known: {', '.join(notebooks())}")
    return {**spec, "profiles": profiles}


def published(notebook: str) -> str:
    """The profile whose executed copy the book shows for ``notebook``."""
    return _load(notebook)["published"]


def runs_after(notebook: str) -> list[str]:
    """The notebooks whose cached models ``notebook`` reads: the one it ``shares`` keys from and
    those it names in ``after``. A run of several pages side by side starts it after them."""
    spec = _load(notebook)
    first = [spec["shares"]["from"]] if spec.get("shares") else []
    return list(dict.fromkeys(first + list(spec.get("after", []))))


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


# --------------------------------------------------------------------------- schema
TYPES_FILE = "_types.yml"


def _registry(module: str, attribute: str) -> Callable[[], Collection[str]]:
    def names() -> Collection[str]:
        value = importlib.import_module(f"paramstress.{module}")
        for part in attribute.split("."):
            value = getattr(value, part)
        return tuple(value() if callable(value) else value)
    return names


def _dataset_names() -> Collection[str]:
    from paramstress.engine import data

    return tuple(dict.fromkeys((*data.SPECS, *data.TEXT_SPECS)))


def _objective_names() -> Collection[str]:
    from paramstress.corruption import objectives  # noqa: F401  (registers the book's objectives)
    from paramstress.engine import training

    return training.objective_names()


#: ``format`` names of the schemas → the library's registry of valid names (imported on use).
FORMATS: dict[str, Callable[[], Collection[str]]] = {
    "dataset": _dataset_names,
    "model": _registry("engine.models", "MODEL_NAMES"),
    "task": _registry("corruption.text.tasks", "TASKS"),
    "schedule": _registry("engine.training", "SCHEDULES"),
    "objective": _objective_names,
    "reference": _registry("filtering.fragility", "REFERENCES"),
    "adversarial": _registry("filtering.filters", "ADVERSARIAL_MODES"),
    "global_range": _registry("filtering.filters", "GLOBAL_RANGES"),
    "freeze_rule": _registry("filtering.selective", "FREEZE_RULES"),
    "nonfinite": _registry("engine.sweep", "NONFINITE_RULES"),
    "subspace": _registry("corruption.operators", "SUBSPACES"),
    "gradient_data": _registry("engine.data", "ImageData.GRADIENT_DATA"),
}


def types() -> dict[str, dict[str, Any]]:
    """The named parameter types of ``params/_types.yml`` (JSON Schemas)."""
    path = params_dir() / TYPES_FILE
    spec = yaml.safe_load(path.read_text()) if path.exists() else None
    if not isinstance(spec, dict):
        raise ProfileError(f"{path} must map type names to JSON Schemas")
    return spec


def schema(notebook: str) -> dict[str, dict[str, Any]]:
    """``{parameter: JSON Schema}`` of ``notebook``: its ``schema:`` entries (a type name
    of ``params/_types.yml`` resolved, or an inline schema), the shared keys' from the notebook
    they come from, and ``profile``. Every parameter has one; a schema for a key the notebook
    does not have is an error."""
    path = params_dir() / f"{notebook}.yml"
    spec = _load(notebook)
    named = types()
    raw = spec.get("schema")
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: 'schema' must map every parameter to a type of params/{TYPES_FILE} "
                           "or a JSON Schema")
    out: dict[str, dict[str, Any]] = {}
    for key, entry in raw.items():
        if isinstance(entry, str):
            if entry not in named:
                raise ProfileError(f"{path}: schema of {key!r} names the unknown type {entry!r}; "
                                   f"types: {', '.join(named)}")
            entry = named[entry]
        if not isinstance(entry, dict):
            raise ProfileError(f"{path}: schema of {key!r} must be a type name or a JSON Schema, got {entry!r}")
        out[key] = entry
    shares = spec.get("shares")
    if shares:
        source = schema(shares["from"])
        out.update({k: source[k] for k in shares["keys"]})
    keys = set(spec["defaults"]) | set(shares["keys"] if shares else ())
    missing, unknown = sorted(keys - set(out)), sorted(set(out) - keys)
    if missing or unknown:
        raise ProfileError(f"{path}: the schema must cover exactly the parameters; missing {missing}, "
                           f"not parameters {unknown}")
    out["profile"] = {"enum": list(PROFILES), "description": f"one of {', '.join(PROFILES)}"}
    return out


def _format_checker() -> Any:
    import jsonschema

    checker = jsonschema.FormatChecker(formats=())
    for name, names in FORMATS.items():
        checker.checks(name)(lambda value, names=names: not isinstance(value, str) or value in names())
    return checker


def _describe(error: Any, entry: Mapping[str, Any]) -> str:
    if error.validator == "format":
        names = FORMATS[error.validator_value]()
        return f"{error.instance!r} is not a {error.validator_value} name; choose from {', '.join(map(str, names))}"
    return error.message


def check(notebook: str, values: Mapping[str, Any]) -> None:
    """Reject bad parameter values of ``notebook`` before any compute.

    ``values``: a run's parameters (the runner's) or a notebook's namespace (``globals()``
    after papermill's injected cell); every parameter of the schema must be present.
    Raises :class:`ProfileError` listing each bad value with what its type expects.
    """
    import jsonschema

    entries = schema(notebook)
    checker = _format_checker()
    problems = []
    for key, entry in entries.items():
        if key not in values:
            if key != "profile":
                problems.append(f"{key}: not set (params/{notebook}.yml's defaults give {key!r} a value)")
            continue
        validator = jsonschema.Draft202012Validator(entry, format_checker=checker)
        errors = sorted(validator.iter_errors(values[key]), key=lambda e: list(e.absolute_path))
        if errors:
            err = jsonschema.exceptions.best_match(errors)
            where = "".join(f"[{p!r}]" for p in err.absolute_path)
            expected = entry.get("description")
            problems.append(f"{key}{where} = {values[key]!r}: {_describe(err, entry)}"
                            + (f" (expected {expected})" if expected else ""))
    if problems:
        raise ProfileError(f"{notebook}: bad parameter values, fix them before running:\n  - "
                           + "\n  - ".join(problems))
