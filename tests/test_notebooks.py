"""The nbval copies in tests/notebooks/ are the book's notebooks executed at the ci profile."""
import json

import pytest

from paramstress import profiles

REPO = profiles.repo_root()


def code_cells(path):
    nb = json.loads(path.read_text())
    return [
        "".join(c["source"]) for c in nb["cells"]
        if c["cell_type"] == "code" and "injected-parameters" not in c.get("metadata", {}).get("tags", [])
    ], nb


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_ci_copy_code_matches_book_source(notebook):
    book, _ = code_cells(REPO / "book" / f"{notebook}.ipynb")
    ci_path = REPO / "tests" / "notebooks" / f"{notebook}.ipynb"
    assert ci_path.exists(), f"missing {ci_path}: run `make ci-notebooks`"
    ci, _ = code_cells(ci_path)
    assert ci == book, f"{ci_path} drifted from book/{notebook}.ipynb: run `make ci-notebooks`"


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_ci_copy_is_executed_at_ci_profile(notebook):
    _, nb = code_cells(REPO / "tests" / "notebooks" / f"{notebook}.ipynb")
    assert nb["metadata"]["papermill"]["parameters"]["profile"] == "ci"
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_published_copy_is_executed_at_its_profile(notebook):
    _, nb = code_cells(REPO / "book" / f"{notebook}.ipynb")
    assert nb["metadata"].get("papermill", {}).get("parameters", {}).get("profile") == profiles.published(notebook), \
        f"book/{notebook}.ipynb is not an executed run at its published profile: run `make book`"
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def _executed_parameters(path):
    return json.loads(path.read_text())["metadata"].get("papermill", {}).get("parameters", {})


@pytest.mark.parametrize("notebook", profiles.notebooks())
def test_executed_copies_ran_the_profiles_current_parameters(notebook):
    """A profile edited after its page was executed would publish numbers its parameters no
    longer produce: the published page and the nbval copy must have run exactly the current
    parameters of their profiles (change a published profile together with a re-execution)."""
    for path, profile in ((REPO / "book" / f"{notebook}.ipynb", profiles.published(notebook)),
                          (REPO / "tests" / "notebooks" / f"{notebook}.ipynb", "ci")):
        ran = _executed_parameters(path)
        want = profiles.parameters(notebook, profile)
        changed = {k: (ran.get(k, "<absent>"), v) for k, v in want.items() if ran.get(k, "<absent>") != v}
        extra = sorted(set(ran) - set(want))
        assert not changed and not extra, (
            f"{path.relative_to(REPO)} ran other parameters than params/{notebook}.yml's `{profile}` profile "
            f"now has (executed, current): {changed}; no longer in the profile: {extra}. Re-execute it "
            f"(`make book` / `make ci-notebooks`, or on a GPU for a gpu-published page), or revert the profile.")
