"""Execute the book's notebooks at a profile, through papermill's Python API.

    python -m paramstress.runner quickstart --profile local      # published → in place in book/
    python -m paramstress.runner all --profile gpu               # → runs/gpu/<nb>.ipynb
    python -m paramstress.runner all --ci-copies                 # → tests/notebooks/ (nbval)
    python -m paramstress.runner all --published-only --jobs 2   # what `make book` executes
    python -m paramstress.runner quickstart -p epochs 1 --out /tmp/x
    python -m paramstress.runner score_landscapes --profile paper --cluster auto --gpus-per-job 0.25

(``make run NB=<name> PROFILE=<p> [CLUSTER=auto] [GPUS_PER_JOB=0.25]`` calls this.)
``--cluster`` and ``--gpus-per-job`` reach the notebooks' multi-job studies through the
environment (``$PARAMSTRESS_RAY_CLUSTER``, ``$PARAMSTRESS_GPUS_PER_JOB``, read by
:func:`paramstress.engine.workers.run_jobs`), not as parameters: the pages' parameters
and numbers do not depend on where the jobs run. Everything is checked before a kernel
starts: notebook and profile names, parameter names, and that each data set the
parameters name can be found (a missing or corrupted data set stops the run here,
with the data layer's message). A run at a profile other than the notebook's
published one never writes into ``book/``. Output is written to a temporary file and
moved into place only when the whole notebook succeeded; a failed run's partial
notebook goes to ``runs/failed/`` and the exit status is non-zero.

``--jobs N`` executes up to N pages side by side, each in its own runner process (its log in
``runs/logs/<page>.log``). A page starts only after the pages whose cached models it reads
(:func:`paramstress.book.profiles.runs_after`), so two pages never train the same model at
once; among the pages ready, the one with the longest chain of work after it (from the
committed runs' wall times) goes first. Each page computes what it computes alone: the
numbers do not depend on N (the pages are pinned to one intra-op thread each by ``make``).
"""
from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from paramstress.book import profiles

OUTPUT_DIR_ENV = "PARAMSTRESS_OUTPUT_DIR"


class RunError(RuntimeError):
    pass


def output_dir() -> Path:
    """Folder for a notebook's tidy results: beside the executed notebook under the runner, else cwd."""
    return Path(os.environ.get(OUTPUT_DIR_ENV) or Path.cwd())


def book_dir() -> Path:
    return profiles.repo_root() / "book"


def _literal(text: str) -> Any:
    """Parse ``-p key value`` values like papermill's ``-p``: Python literals, else strings."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def target_path(notebook: str, profile: str, out: str | None, ci_copies: bool) -> Path:
    published = profiles.published(notebook)
    if ci_copies:
        folder = profiles.repo_root() / "tests" / "notebooks"
    elif out:
        folder = Path(out)
    elif profile == published:
        folder = book_dir()
    else:
        folder = profiles.repo_root() / "runs" / profile
    target = (folder / f"{notebook}.ipynb").resolve()
    if target == (book_dir() / f"{notebook}.ipynb").resolve() and profile != published:
        raise RunError(f"{notebook} is published at profile {published!r}; a {profile!r} run may not "
                       f"overwrite book/{notebook}.ipynb. Use --out DIR (default runs/{profile}/).")
    return target


def preflight(notebook: str, params: dict[str, Any]) -> None:
    """Fail before any kernel starts: the source notebook exists and its data sets are reachable."""
    source = book_dir() / f"{notebook}.ipynb"
    if not source.exists():
        raise RunError(f"{source} does not exist (params/{notebook}.yml names it)")
    names = []
    for key in ("dataset", "datasets", "tasks"):
        value = params.get(key)
        if value:
            names += [value] if isinstance(value, str) else list(value)
    if names:
        from paramstress.engine import data

        for name in names:
            data.verify(name)  # raises UnknownDataset / DataNotFound / ChecksumMismatch with the fix


def hide_injected_parameters(notebook: Path) -> None:
    """Tag the cell papermill injects (``injected-parameters``) ``remove-cell``, as the
    notebooks' own parameters cell is: the page's provenance table lists the parameters once,
    with what the run changed from its profile, so the HTML shows neither cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    changed = False
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]
            changed = True
    if changed:
        nbformat.write(nb, notebook)


def execute(notebook: str, profile: str, overrides: dict[str, Any], target: Path) -> float:
    import papermill

    source = book_dir() / f"{notebook}.ipynb"
    params = profiles.parameters(notebook, profile, **overrides)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{notebook}.", suffix=".ipynb")
    os.close(fd)
    env_before = os.environ.get(OUTPUT_DIR_ENV)
    os.environ[OUTPUT_DIR_ENV] = str(target.parent)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), tmp, parameters=params, cwd=str(target.parent),
                                   progress_bar=sys.stderr.isatty(), log_output=True,
                                   kernel_name="python3")
    except BaseException as err:
        failed = profiles.repo_root() / "runs" / "failed" / f"{notebook}.{profile}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        if Path(tmp).exists():
            os.replace(tmp, failed)
        evalue = getattr(err, "evalue", None) or str(err)
        raise RunError(f"{notebook} at profile {profile!r} failed: {getattr(err, 'ename', type(err).__name__)}: "
                       f"{evalue}\n(partial notebook: {failed})") from err
    else:
        hide_injected_parameters(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; an executed notebook is an ordinary file
        os.replace(tmp, target)
    finally:
        if env_before is None:
            os.environ.pop(OUTPUT_DIR_ENV, None)
        else:
            os.environ[OUTPUT_DIR_ENV] = env_before
        Path(tmp).unlink(missing_ok=True)
    return time.perf_counter() - start


def _executor_environment(cluster: str | None, gpus_per_job: float | None) -> dict[str, str]:
    """Check ``--cluster`` / ``--gpus-per-job``: the environment that hands them to the kernels."""
    from paramstress.engine import workers

    values = {}
    try:
        if cluster is not None:
            values[workers.CLUSTER_ENV] = workers.check_cluster(cluster) or ""
        if gpus_per_job is not None:
            values[workers.GPUS_PER_JOB_ENV] = repr(workers.check_gpus_per_job(gpus_per_job))
    except ValueError as err:
        raise RunError(str(err)) from None
    return values


def committed_seconds(notebook: str, profile: str) -> float | None:
    """The wall time of the repository's executed copy of ``notebook`` at ``profile`` (the
    published page, or the nbval copy at ``ci``), from its provenance table; ``None`` if none."""
    from paramstress.book.dashboard import provenance

    row = provenance(notebook, ci=profile == "ci" and profiles.published(notebook) != "ci")
    if row.get("profile", "").split(" ")[0] != profile:
        return None
    try:
        return float(row.get("wall time", "").split(" ")[0].replace(",", ""))
    except ValueError:
        return None


def _cache_files() -> set[str]:
    """The files under the checkpoint folder (trained models, snapshots, cached sweeps)."""
    from paramstress.engine import training

    folder = training.default_checkpoint_dir()
    return {str(p) for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def summary_table(done: list[tuple[str, str, float, float | None, int]]) -> str:
    """The end of a multi-page run: each page's seconds beside its committed run's, and the
    cache files it wrote (0: everything it needed was cached)."""
    width = max(len(d[0]) for d in done)
    lines = ["", f"{'page':<{width}}  profile  seconds  committed run  new cache files"]
    for name, profile, seconds, expected, written in done:
        lines.append(f"{name:<{width}}  {profile:<7}  {seconds:>7.0f}  "
                     f"{'—' if expected is None else f'{expected:.0f}':>13}  {written:>15}")
    total = sum(d[2] for d in done)
    known = [d[3] for d in done if d[3] is not None]
    lines.append(f"{'all':<{width}}  {'':<7}  {total:>7.0f}  {sum(known) if known else 0:>13.0f}  "
                 f"{sum(d[4] for d in done):>15}")
    return "\n".join(lines)


def schedule_order(names: list[str], expected: dict[str, float | None],
                   after: dict[str, list[str]]) -> tuple[dict[str, set[str]], dict[str, float]]:
    """The dependencies among ``names`` (``after`` restricted to them) and each page's priority:
    its expected seconds plus the longest chain of pages that wait on it (a page with no
    committed run counts 60 s). Raises :class:`RunError` on a cycle."""
    needs = {n: {a for a in after.get(n, []) if a in names} for n in names}
    waiting_on = {n: [m for m in names if n in needs[m]] for n in names}
    priority: dict[str, float] = {}

    def chain(n: str, seen: tuple[str, ...]) -> float:
        if n in seen:
            raise RunError(f"the pages {' → '.join((*seen, n))} wait on each other ('after' / 'shares' in params/)")
        if n not in priority:
            own = expected.get(n)
            priority[n] = (60.0 if own is None else own) + max(
                (chain(m, (*seen, n)) for m in waiting_on[n]), default=0.0)
        return priority[n]

    for n in names:
        chain(n, ())
    return needs, priority


def _run_side_by_side(plan: list[tuple[str, str, Path]], expected: list[float | None], jobs: int,
                      argv_for: Any, started: float, logs: Path | None = None,
                      given_order: bool = False) -> tuple[list[tuple[str, str, float, float | None, int]], list[str]]:
    """Execute ``plan`` in up to ``jobs`` runner processes at once (see the module docstring)."""
    names = [name for name, _, _ in plan]
    by_name = {name: (name, profile, target) for name, profile, target in plan}
    exp = dict(zip(names, expected))
    needs, priority = schedule_order(names, exp, {n: profiles.runs_after(n) for n in names})
    if given_order:  # the caller's order (after the dependencies), e.g. when no committed run is cold
        priority = {n: float(len(names) - i) for i, n in enumerate(names)}
    logs = Path(logs) if logs is not None else profiles.repo_root() / "runs" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    pending, running, finished, failed = list(names), {}, set(), []
    done = []
    while pending or running:
        for n in [n for n in pending if needs[n] & set(failed)]:  # its models come from a failed page
            pending.remove(n)
            failed.append(n)
            print(f"[{names.index(n) + 1}/{len(names)}] {n} not started: "
                  f"{', '.join(sorted(needs[n] & set(failed)))} failed", flush=True)
        ready = sorted((n for n in pending if needs[n] <= finished), key=lambda n: -priority[n])
        while ready and len(running) < jobs:
            n = ready.pop(0)
            pending.remove(n)
            name, profile, target = by_name[n]
            log = logs / f"{name}.log"
            handle = log.open("w")
            proc = subprocess.Popen(argv_for(name, profile, target), stdout=handle, stderr=subprocess.STDOUT)
            running[n] = (proc, handle, time.perf_counter(), _cache_files())
            left = [exp[m] for m in pending if exp[m] is not None]
            print(f"[{names.index(n) + 1}/{len(names)}] {name} @ {profile} → {target} started "
                  f"({time.perf_counter() - started:.0f} s elapsed; log {log}; "
                  f"{len(running)} running, {len(pending)} waiting"
                  + (f", which took ~{sum(left) / 60:.0f} min in their committed runs)" if left else ")"),
                  flush=True)
        if not running:
            break
        time.sleep(0.5)
        for n, (proc, handle, began, caches) in list(running.items()):
            if proc.poll() is None:
                continue
            handle.close()
            del running[n]
            seconds = time.perf_counter() - began
            name, profile, _ = by_name[n]
            if proc.returncode == 0:
                finished.add(n)
                done.append((name, profile, seconds, exp[n], len(_cache_files() - caches)))
                print(f"[{names.index(n) + 1}/{len(names)}] {name} done in {seconds:.1f} s "
                      f"({time.perf_counter() - started:.0f} s elapsed)", flush=True)
            else:
                failed.append(n)
                tail = (logs / f"{name}.log").read_text(errors="replace").splitlines()[-15:]
                print(f"[{names.index(n) + 1}/{len(names)}] {name} FAILED (exit {proc.returncode}) after "
                      f"{seconds:.0f} s; the end of {logs / f'{name}.log'}:\n  " + "\n  ".join(tail), flush=True)
    return done, failed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="paramstress-run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebooks", nargs="+", help="notebook names (book/<name>.ipynb) or 'all'")
    ap.add_argument("--profile", default=None, help=f"one of {profiles.PROFILES} (default: local; ci with --ci-copies)")
    ap.add_argument("--out", default=None, help="output folder (default: book/ for the published profile, else runs/<profile>/)")
    ap.add_argument("--ci-copies", action="store_true", help="write the CI-profile copies nbval checks (tests/notebooks/)")
    ap.add_argument("--published-only", action="store_true",
                    help="run only the notebooks published at --profile (in place in book/); keep the others' committed runs")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"))
    ap.add_argument("--cluster", default=None,
                    help="run the multi-job studies on this Ray cluster: 'auto' or 'ray://host:port' "
                         "(sets $PARAMSTRESS_RAY_CLUSTER)")
    ap.add_argument("--gpus-per-job", default=None, type=float,
                    help="GPU share each job reserves, e.g. 0.25 (sets $PARAMSTRESS_GPUS_PER_JOB)")
    ap.add_argument("--order", choices=("chain", "given"), default="chain",
                    help="with --jobs: start first the page with the longest chain of work after it, from "
                         "the committed runs' wall times (chain, default), or the pages in the order named")
    ap.add_argument("--jobs", "-j", default=1, type=int,
                    help="pages executed side by side, each in its own process (default 1); a page "
                         "waits for the pages whose cached models it reads")
    args = ap.parse_args(argv)
    import logging

    # papermill logs "Executing Cell N" and the cells' output at INFO: that is the progress output
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    try:
        if args.jobs < 1:
            raise RunError(f"--jobs must be at least 1 (pages executed side by side), got {args.jobs}")
        if args.jobs > 1 and args.ci_copies:
            raise RunError("--ci-copies executes the nbval copies one after another, in nbval's order (each "
                           "copy shows what a run in that order prints); drop --jobs")
        executor = _executor_environment(args.cluster, args.gpus_per_job)
        names = profiles.notebooks() if args.notebooks == ["all"] else args.notebooks
        overrides = {k: _literal(v) for k, v in args.parameter}
        plan = []
        for name in names:  # check everything before anything runs
            profile = args.profile or ("ci" if args.ci_copies else profiles.DEFAULT_PROFILE)
            if args.published_only and profiles.published(name) != profile:
                print(f"keeping book/{name}.ipynb: it is published at profile "
                      f"{profiles.published(name)!r}, not {profile!r}", flush=True)
                continue
            if args.ci_copies and profile != "ci":
                raise RunError("--ci-copies writes the nbval copies, which are executed at profile 'ci'")
            params = profiles.parameters(name, profile, **overrides)
            profiles.check(name, params)  # every value against params/<name>.yml's schema
            target = target_path(name, profile, args.out, args.ci_copies)
            preflight(name, params)
            plan.append((name, profile, target))
        expected = [committed_seconds(name, profile) for name, profile, _ in plan]
        caches = _cache_files()
        started, done = time.perf_counter(), []
        from paramstress.engine import workers

        # the kernels inherit --cluster / --gpus-per-job; this process gets its environment back:
        # main called in a process (a test, a notebook) must not leave them for its later studies
        with workers.environment(executor):
            if args.jobs > 1 and len(plan) > 1:
                def argv_for(name: str, profile: str, target: Path) -> list[str]:
                    extra = [x for k, v in args.parameter for x in ("-p", k, v)]
                    return [sys.executable, "-m", "paramstress.book.runner", name, "--profile", profile,
                            "--out", str(target.parent), *extra]

                done, failed = _run_side_by_side(plan, expected, args.jobs, argv_for, started,
                                                 given_order=args.order == "given")
                print((summary_table(done) if done else "") + f"\n(wall time of the whole run: {time.perf_counter() - started:.0f} s, "
                      f"{args.jobs} pages at a time; a page's new cache files include those of pages "
                      "running beside it)", flush=True)
                if failed:
                    raise RunError(f"{len(failed)} page(s) failed or were not started: {', '.join(failed)}")
                return 0
            if not args.ci_copies:  # the nbval copies keep nbval's (alphabetical) order: they must show
                # what a run in that order prints (e.g. which page trains a shared model, which loads it)
                names = [n for n, _, _ in plan]
                needs, _ = schedule_order(names, dict(zip(names, expected)), {n: profiles.runs_after(n) for n in names})
                order = []  # one after another: every page after the pages it reads from, else as given
                while len(order) < len(plan):
                    order.append(next(p for p in plan if p not in order and needs[p[0]] <= {o[0] for o in order}))
                expected = [expected[plan.index(p)] for p in order]
                plan = order
            for i, (name, profile, target) in enumerate(plan, 1):
                left = [e for e in expected[i - 1:] if e is not None]
                estimate = (f"; the {len(expected) - i + 1} left took ~{sum(left) / 60:.0f} min in their committed runs"
                            if left else "")
                print(f"[{i}/{len(plan)}] {name} @ {profile} → {target} "
                      f"({time.perf_counter() - started:.0f} s elapsed{estimate})", flush=True)
                seconds = execute(name, profile, overrides, target)
                now = _cache_files()
                done.append((name, profile, seconds, expected[i - 1], len(now - caches)))
                caches = now
                print(f"[{i}/{len(plan)}] {name} done in {seconds:.1f} s", flush=True)
        if len(done) > 1:
            print(summary_table(done), flush=True)
    except Exception as err:
        from paramstress.engine import data

        if isinstance(err, (RunError, profiles.ProfileError, data.DataError)):
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
