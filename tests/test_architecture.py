"""The folders of the package are its layers (ARCHITECTURE.md): every import statement of
lib/paramstress goes to its own layer or one below, and the old flat names are the moved
modules themselves."""
import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

import paramstress

ROOT = Path(paramstress.__file__).resolve().parent
#: layer of each top-level group, and the groups each may import from
ALLOWED = {
    "engine": {"engine"},
    "corruption": {"engine", "corruption"},
    "filtering": {"engine", "filtering"},
    "agreement": {"engine", "corruption", "filtering", "agreement"},
    "api": {"engine", "corruption", "filtering", "api"},
    "book": {"engine", "corruption", "filtering", "agreement", "book"},
}


def _group(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != "paramstress":
        return None
    return parts[1] if parts[1] in ALLOWED else None


def _imports(path: Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            yield node.lineno, "." * node.level + (node.module or "")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield path, ".".join(("paramstress",) + tuple(p for p in parts if p != "__init__"))


def test_every_module_imports_only_its_layer_and_below():
    bad = []
    for path, module in _modules():
        group = _group(module)
        if group is None:  # paramstress/__init__.py
            continue
        for line, target in _imports(path):
            if target.startswith("."):
                bad.append(f"{module}:{line} relative import {target!r}: import paramstress.<group>... by name")
                continue
            tg = _group(target)
            if target.startswith("paramstress.") and target.split(".")[1] in paramstress.MOVED:
                bad.append(f"{module}:{line} imports the old flat name {target!r}; use its new home")
            elif tg is not None and tg not in ALLOWED[group]:
                bad.append(f"{module}:{line} ({group}) imports {target} ({tg})")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_an_upward_import(tmp_path):
    """The rule itself can fail: an engine module importing the corruption layer is caught."""
    fake = tmp_path / "x.py"
    fake.write_text("from paramstress.corruption import operators\n")
    [(line, target)] = list(_imports(fake))
    assert _group(target) == "corruption" and "corruption" not in ALLOWED["engine"]


@pytest.mark.parametrize("old, new", sorted(paramstress.MOVED.items()))
def test_old_flat_names_are_the_moved_modules(old, new):
    assert importlib.import_module(f"paramstress.{old}") is importlib.import_module(f"paramstress.{new}")


def test_corruption_and_filtering_roots_read_as_before():
    from paramstress import corruption, filtering
    from paramstress.corruption import operators
    from paramstress.filtering import filters
    assert corruption.corrupted is operators.corrupted and corruption.SUBSPACES is operators.SUBSPACES
    assert filtering.ADVERSARIAL_MODES is filters.ADVERSARIAL_MODES


def test_the_runner_runs_under_its_old_name():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-m", "paramstress.runner", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "notebooks" in out.stdout, out.stderr


def _private_uses(path: Path):
    """``from paramstress.x import _name`` and ``alias._name`` where ``alias`` is an imported
    paramstress module."""
    tree = ast.parse(path.read_text())
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("paramstress"):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    yield node.lineno, f"{node.module}.{a.name}"
                target = f"{node.module}.{a.name}"
                if importlib.util.find_spec(node.module) and _is_module(target):
                    modules[a.asname or a.name] = target
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("paramstress"):
                    modules[a.asname or a.name] = a.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            yield node.lineno, f"{modules[node.value.id]}.{node.attr}"


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def test_modules_use_only_each_others_public_names():
    bad = [f"{module}:{line} uses {target}" for path, module in _modules() for line, target in _private_uses(path)]
    assert not bad, "\n".join(bad)


def test_the_private_name_check_can_fail(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text("from paramstress.engine import sweep as S\nS._repair_tail\n"
                    "from paramstress.engine.training import _data_identity\n")
    assert sorted(t for _, t in _private_uses(fake)) == ["paramstress.engine.sweep._repair_tail",
                                                         "paramstress.engine.training._data_identity"]
