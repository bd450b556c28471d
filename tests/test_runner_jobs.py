"""``runner --jobs N``: pages side by side, each after the pages whose cached models it reads
(issue 28). The children here are small Python commands standing in for the runner processes."""
import sys
import time

import pytest

from paramstress.book import profiles, runner


def test_text_pages_wait_for_the_page_they_share_models_from():
    assert profiles.runs_after("text_vulnerability") == ["text_tasks"]
    assert profiles.runs_after("text_resistant_training") == ["text_tasks"]
    assert profiles.runs_after("quickstart") == []


def test_priority_is_the_longest_chain_of_work_after_a_page():
    names = ["a", "b", "c", "d"]
    needs, priority = runner.schedule_order(names, {"a": 100, "b": 10, "c": 50, "d": None},
                                            {"b": ["a"], "c": ["b"], "d": ["zzz"]})
    assert needs == {"a": set(), "b": {"a"}, "c": {"b"}, "d": set()}  # pages not in the run are ignored
    assert priority == {"a": 160, "b": 60, "c": 50, "d": 60}  # no committed run: 60 s


def test_a_cycle_is_refused_before_anything_runs():
    with pytest.raises(runner.RunError, match="wait on each other"):
        runner.schedule_order(["a", "b"], {}, {"a": ["b"], "b": ["a"]})


def _child(tmp_path, seconds, fail=()):
    def argv_for(name, profile, target):
        code = (f"import time, sys; open(r'{tmp_path}/{name}.start', 'w').write(repr(time.time())); "
                f"time.sleep({seconds[name]}); open(r'{tmp_path}/{name}.end', 'w').write(repr(time.time())); "
                f"print('ran {name}'); sys.exit({1 if name in fail else 0})")
        return [sys.executable, "-c", code]
    return argv_for


def _times(tmp_path, name):
    return float((tmp_path / f"{name}.start").read_text()), float((tmp_path / f"{name}.end").read_text())


def test_two_pages_run_at_once_and_a_dependent_page_waits(tmp_path, capsys):
    plan = [(n, "local", tmp_path / f"{n}.ipynb") for n in ("text_vulnerability", "text_tasks", "quickstart")]
    seconds = {"text_tasks": 3.0, "text_vulnerability": 0.2, "quickstart": 0.5}  # room for slow starts
    done, failed = runner._run_side_by_side(plan, [1, 100, 5], 2, _child(tmp_path, seconds),
                                            time.perf_counter(), logs=tmp_path / "logs")
    assert failed == [] and sorted(d[0] for d in done) == sorted(seconds)
    tasks, vuln, quick = (_times(tmp_path, n) for n in ("text_tasks", "text_vulnerability", "quickstart"))
    assert vuln[0] >= tasks[1]  # started after the page it reads models from ended
    assert quick[0] < tasks[1] and tasks[0] < quick[1]  # the independent page ran beside it
    assert (tmp_path / "logs" / "quickstart.log").read_text().strip() == "ran quickstart"
    out = capsys.readouterr().out
    assert "text_tasks @ local" in out and "2 running" in out


def test_one_job_at_a_time_never_overlaps(tmp_path):
    plan = [(n, "local", tmp_path / f"{n}.ipynb") for n in ("quickstart", "vulnerability")]
    runner._run_side_by_side(plan, [1, 1], 1, _child(tmp_path, {"quickstart": 0.3, "vulnerability": 0.3}),
                             time.perf_counter(), logs=tmp_path / "logs")
    a, b = sorted((_times(tmp_path, n) for n in ("quickstart", "vulnerability")))
    assert b[0] >= a[1]


def test_a_failed_page_stops_the_pages_that_read_from_it(tmp_path, capsys):
    plan = [(n, "local", tmp_path / f"{n}.ipynb") for n in ("text_tasks", "text_vulnerability", "quickstart")]
    done, failed = runner._run_side_by_side(
        plan, [1, 1, 1], 2, _child(tmp_path, {"text_tasks": 0.1, "text_vulnerability": 0.1, "quickstart": 0.1},
                                   fail={"text_tasks"}), time.perf_counter(), logs=tmp_path / "logs")
    assert [d[0] for d in done] == ["quickstart"]
    assert failed == ["text_tasks", "text_vulnerability"]
    assert not (tmp_path / "text_vulnerability.start").exists()
    out = capsys.readouterr().out
    assert "text_tasks FAILED (exit 1)" in out and "ran text_tasks" in out
    assert "text_vulnerability not started: text_tasks failed" in out


def test_bad_jobs_is_refused(capsys, tmp_path):
    assert runner.main(["quickstart", "vulnerability", "--jobs", "0", "--out", str(tmp_path)]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def test_a_bad_after_entry_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "params").mkdir()
    (tmp_path / "book").mkdir()
    src = (profiles.params_dir() / "quickstart.yml").read_text()
    (tmp_path / "params" / "quickstart.yml").write_text(src + "\nafter: [nosuchpage]\n")
    monkeypatch.setattr(profiles, "params_dir", lambda: tmp_path / "params")
    with pytest.raises(profiles.ProfileError, match="'after' names \\['nosuchpage'\\]"):
        profiles.runs_after("quickstart")


@pytest.mark.parametrize("given", [False, True])
def test_the_ready_page_started_first_is_the_longest_chain_or_the_first_named(tmp_path, given):
    names = ("quickstart", "vulnerability", "resistant_training")
    plan = [(n, "local", tmp_path / f"{n}.ipynb") for n in names]
    runner._run_side_by_side(plan, [1, 50, 100], 1, _child(tmp_path, dict.fromkeys(names, 0.05)),
                             time.perf_counter(), logs=tmp_path / "logs", given_order=given)
    started = sorted(names, key=lambda n: _times(tmp_path, n)[0])
    assert started == (list(names) if given else ["resistant_training", "vulnerability", "quickstart"])


def test_the_nbval_copies_are_not_executed_side_by_side(capsys):
    assert runner.main(["quickstart", "vulnerability", "--ci-copies", "--jobs", "2"]) == 2
    assert "one after another, in nbval's order" in capsys.readouterr().err


def test_one_job_at_a_time_runs_a_page_after_the_page_it_reads_from(monkeypatch, tmp_path, mirror):
    ran = []
    monkeypatch.setenv("PARAMSTRESS_CHECKPOINTS", str(tmp_path / "ckpt"))
    monkeypatch.setattr(runner, "execute", lambda name, profile, overrides, target: ran.append(name) or 0.1)
    assert runner.main(["text_vulnerability", "quickstart", "text_tasks", "--out", str(tmp_path)]) == 0
    assert ran == ["quickstart", "text_tasks", "text_vulnerability"]


def test_make_books_run_hands_each_page_to_a_runner_that_writes_it_in_place(monkeypatch, mirror):
    seen = {}

    def fake(plan, expected, jobs, argv_for, started, logs=None, given_order=False):
        seen.update(jobs=jobs, argv={name: argv_for(name, profile, target) for name, profile, target in plan})
        return [(name, profile, 1.0, None, 0) for name, profile, _ in plan], []

    monkeypatch.setattr(runner, "_run_side_by_side", fake)
    assert runner.main(["all", "--published-only", "--jobs", "2"]) == 0  # what `make book` runs
    from paramstress.book import verify

    assert seen["jobs"] == 2 and sorted(seen["argv"]) == sorted(verify.local_pages())
    argv = seen["argv"]["quickstart"]
    assert argv[1:] == ["-m", "paramstress.book.runner", "quickstart", "--profile", "local",
                        "--out", str(runner.book_dir().resolve())]
    # the child, given that folder, writes the published page in place (and may: local is its profile)
    assert runner.target_path("quickstart", "local", argv[-1], False) == (runner.book_dir() / "quickstart.ipynb").resolve()
