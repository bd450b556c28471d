"""The paired bootstrap over per-unit statistics on tiny PTB-LM and PTB-Parsing tasks: the
corrupted runs through the shared sweep (paramstress.tasks.task_corrupted_units), the
per-task test (paramstress.bootstrap.task_significance) and the page's claim_significance."""
from __future__ import annotations

import math
import types

import numpy as np
import pandas as pd
import pytest
import torch

from paramstress import bootstrap as B
from paramstress import parser as P
from paramstress import tasks as T
from test_language_model import _task as lm_task
from test_parser import toy_sentences
from test_tasks import ToySequenceTask

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def parsing_task():
    sents = toy_sentences(40, seed=7)
    return P.PTBParsingTask(splits={"train": sents, "dev": sents[:30]}, embed_dim=8, hidden=16)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("make", [lm_task, parsing_task], ids=["ptb-lm", "ptb-parsing"])
def test_corrupted_units_reproduce_the_scores_and_restore_the_weights(make):
    task = make()
    assert T.has_unit_statistics(task) and task.units == "sentences"
    model = task.build_model(0)
    before = _state(model)
    rows = T.task_corrupted_units(task, model, eps_values=[0.05, 5.0])
    for k, v in model.state_dict().items():  # bit-identical after the corrupted runs
        assert torch.equal(v, before[k]), k
    assert math.isnan(rows[0]["eps"]) and [r["eps"] for r in rows[1:]] == [0.05, 5.0]
    table = T.task_corrupted_scores(task, model, eps_values=[0.05, 5.0])  # the same corruption
    assert [r[task.metric] for r in rows] == table[task.metric].tolist()
    assert rows[0][task.metric] == task.evaluate(model)[task.metric]
    for r in rows:
        assert r["units"].ndim == 2 and r["units"].shape[1] == 2
        assert task.combine(r["units"]) == pytest.approx(r[task.metric], rel=1e-9)
    assert rows[2][task.metric] != rows[0][task.metric]  # the large ε did corrupt the model


def test_corrupted_units_need_unit_statistics_and_check_them():
    toy = ToySequenceTask()
    model = toy.build_model(0)
    assert not T.has_unit_statistics(toy)
    with pytest.raises(ValueError, match="ToySequenceTask has no per-unit statistics"):
        T.task_corrupted_units(toy, model, eps_values=[0.1])
    with pytest.raises(ValueError, match="eps_values is empty"):
        T.task_corrupted_units(lm_task(), model, eps_values=[])
    with pytest.raises(ValueError, match="evaluate must be a callable"):
        T.task_corrupted_outputs(toy, model, eps_values=[0.1], evaluate="units")
    # statistics that do not give the evaluated score are refused
    task = parsing_task()
    task.combine = lambda stats: 0.0
    with pytest.raises(RuntimeError, match="evaluate_units and combine disagree"):
        T.task_corrupted_units(task, task.build_model(0), eps_values=[0.05])


def test_corrupted_outputs_keep_any_evaluation_output():
    task = ToySequenceTask()
    model = task.build_model(0)
    before = _state(model)
    calls = []

    def evaluate(m):
        calls.append(1)
        return task.evaluate(m), len(calls)

    rows = T.task_corrupted_outputs(task, model, eps_values=[0.1, 1.0], evaluate=evaluate)
    assert [r["output"] for r in rows] == [1, 2, 3]
    assert [r["token_accuracy"] for r in rows] == \
        T.task_corrupted_scores(task, model, eps_values=[0.1, 1.0])["token_accuracy"].tolist()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_task_significance_on_tiny_ptb_tasks():
    lm = lm_task()
    models = {("baseline", 0): lm.build_model(0), ("resistant", 0): lm.build_model(1)}
    frame = B.task_significance(lm, models, [5.0], resamples=200, seed=3)
    assert frame["eps"].isna().tolist() == [True, False]
    assert (frame["units"] == "test sentences").all() and not frame["higher_is_better"].any()
    clean = {t: lm.evaluate(m)["log_ppl"] for (t, _), m in models.items()}
    assert frame["baseline"].iloc[0] == pytest.approx(clean["baseline"], rel=1e-12)
    # lower is better: the gain is baseline − proposed
    assert frame["gain"].iloc[0] == pytest.approx(clean["baseline"] - clean["resistant"], rel=1e-9)
    assert frame["n"].iloc[0] == len(lm.evaluate_units(models[("baseline", 0)])[1])
    same = B.task_significance(lm, {("baseline", 0): models[("baseline", 0)],
                                    ("resistant", 0): models[("baseline", 0)]}, [5.0], resamples=200)
    assert (same["gain"] == 0).all() and (same["p_value"] == 1.0).all() and not same["holds"].any()

    parser = parsing_task()
    trees = {("baseline", 0): parser.build_model(0), ("resistant", 0): parser.build_model(2)}
    frame = B.task_significance(parser, trees, [0.05], resamples=200)
    assert frame["higher_is_better"].all() and (frame["units"] == "dev sentences").all()
    uas = {t: parser.evaluate(m)["uas"] for (t, _), m in trees.items()}
    assert frame["gain"].iloc[0] == uas["resistant"] - uas["baseline"]  # exact: integer sums
    with_token = sum(any(t not in P.PUNCT_TAGS for t in s.tags) for s in parser.eval_sentences)
    assert with_token == 29 and frame["n"].iloc[0] == with_token  # one sentence is punctuation only


def _never(*args, **kwargs):
    raise AssertionError("computed before the arguments were checked")


@pytest.mark.parametrize("kwargs, match", [
    (dict(samples=10), "PTB-LM always evaluates its task's split: pass samples='task'"),
    (dict(samples=None), "pass samples='task'"),
    (dict(seeds=[0, 1]), r"no model for \[\('baseline', 1\), \('resistant', 1\)\]"),
    (dict(seeds=[]), "seeds is empty"),
    (dict(eps_values=[0.0]), "eps_values must be positive"),
    (dict(resamples=10), "resamples must be an int >= 100"),
    (dict(alpha=2.0), "alpha must be a number in"),
])
def test_task_significance_rejects_bad_arguments_before_compute(kwargs, match, monkeypatch):
    monkeypatch.setattr(T, "task_corrupted_units", _never)
    lm = lm_task()
    models = {("baseline", 0): lm.build_model(0), ("resistant", 0): lm.build_model(1)}
    args = dict(eps_values=[5.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        B.task_significance(lm, models, args.pop("eps_values"), **args)


def test_task_significance_needs_unit_statistics(monkeypatch):
    monkeypatch.setattr(T, "task_corrupted_units", _never)
    toy = ToySequenceTask()
    models = {("baseline", 0): toy.build_model(0), ("resistant", 0): toy.build_model(1)}
    with pytest.raises(ValueError, match="ToySequenceTask has no per-unit statistics"):
        B.task_significance(toy, models, [0.1])


def test_claim_significance_covers_every_task_with_units(monkeypatch):
    lm, parser, toy = lm_task(), parsing_task(), ToySequenceTask()
    tables = {key: types.SimpleNamespace(models={("baseline", 0): t.build_model(0), ("resistant", 0): t.build_model(1)})
              for key, t in (("ptb-lm", lm), ("ptb-parsing", parser), ("toy", toy))}
    tasks = {"ptb-lm": lm, "ptb-parsing": parser, "toy": toy}
    claims = pd.DataFrame([{"task": "PTB-LM", "eps": 5.0}, {"task": "PTB-Parsing", "eps": 0.05},
                           {"task": "PTB-Parsing", "eps": 0.5}, {"task": "Toy", "eps": 1.0}])
    # samples re-cuts De-En's split only: the PTB tasks are tested on their split as it is
    out = B.claim_significance(claims, tasks, tables, samples=None, resamples=100)
    assert set(out) == {"ptb-lm", "ptb-parsing"}  # the toy task has no per-unit statistics
    assert out["ptb-lm"]["eps"].tolist()[1:] == [5.0] and out["ptb-parsing"]["eps"].tolist()[1:] == [0.05, 0.5]
    assert (out["ptb-parsing"]["n"] == 29).all()
    none = B.claim_significance(claims[claims.task == "Toy"], tasks, tables, resamples=100)
    assert none == {}
    monkeypatch.setattr(T, "task_corrupted_units", _never)
    with pytest.raises(ValueError, match="no TaskTable2 for 'ptb-parsing'"):
        B.claim_significance(claims, tasks, {"ptb-lm": tables["ptb-lm"]}, resamples=100)
    with pytest.raises(ValueError, match="resamples must be an int >= 100"):
        B.claim_significance(claims, tasks, tables, resamples=5)
    with pytest.raises(ValueError, match="samples must be"):
        B.claim_significance(claims, tasks, tables, samples=1)
    with pytest.raises(ValueError, match=r"PTB-LM: no model for \[\('baseline', 1\)"):
        B.claim_significance(claims, tasks, tables, seeds=[0, 1], resamples=100)


def test_verdicts_of_all_three_kinds_of_task_from_task_significance():
    lm = lm_task()
    models = {("baseline", 0): lm.build_model(0), ("resistant", 0): lm.build_model(1)}
    frame = B.task_significance(lm, models, [5.0], resamples=200)
    clean, corrupted = frame.iloc[0], frame.iloc[1]
    claims = pd.DataFrame([{"task": "PTB-LM", "eps": 5.0, "baseline": corrupted["baseline"],
                            "score": corrupted["system"], "gain": corrupted["gain"], "gain_se": math.nan,
                            "clean_cost": -clean["gain"], "holds": True}])
    text, held = B.text_claim_verdicts(claims, {"ptb-lm": lm}, {"ptb-lm": [0.0, 10.0]}, {"ptb-lm": frame})
    assert f"paired bootstrap over the {int(clean['n'])} test sentences (200 resamples, 1 seed;" in text
    assert "baseline − proposed (lower is better)" in text and "one seed, no test" not in text
    assert f"ε = 5: {corrupted['gain']:+.3f} Log PPL" in text
    assert held["ptb-lm"] == ("1 of 1" if corrupted["p_value"] < 0.05 and -clean["gain"] <= 10.0 else "0 of 1")
