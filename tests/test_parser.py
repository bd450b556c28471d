"""Tests of the Chen & Manning parser (paramstress.parser): transition system, oracle,
features, projectivity, greedy parsing, UAS, and the PTB-Parsing task."""
import math
import os
import random
from pathlib import Path

import pytest
import torch

from paramstress import parser as P
from paramstress.tasks import Task, TaskTrainConfig, task_gradient, train_task

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

REPO = Path(__file__).resolve().parent.parent


def random_projective_heads(n: int, rng: random.Random) -> list[int]:
    """A random projective tree over tokens 1..n (each subtree a contiguous span)."""
    heads = [0] * (n + 1)

    def build(lo: int, hi: int, head: int) -> None:
        if lo > hi:
            return
        # cut [lo, hi] into contiguous segments; each segment's root attaches to head
        cuts = sorted(rng.sample(range(lo + 1, hi + 1), k=rng.randint(0, min(2, hi - lo))))
        bounds = [lo] + cuts + [hi + 1]
        for a, b in zip(bounds, bounds[1:]):
            r = rng.randint(a, b - 1)
            heads[r] = head
            build(a, r - 1, r)
            build(r + 1, b - 1, r)

    root = rng.randint(1, n)
    heads[root] = 0
    build(1, root - 1, root)
    build(root + 1, n, root)
    return heads[1:]


def toy_sentences(count: int, seed: int = 0, labels=("nsubj", "dobj", "amod", "punct")) -> list[P.Sentence]:
    rng = random.Random(seed)
    vocab = ["the", "cat", "dog", "sat", "on", "mat", "saw", "a", "big", "red"]
    tags = ["DT", "NN", "VBD", "IN", "JJ", ",", "."]
    out = []
    for _ in range(count):
        n = rng.randint(1, 14)
        out.append(P.Sentence(words=tuple(rng.choice(vocab) for _ in range(n)),
                              tags=tuple(rng.choice(tags) for _ in range(n)),
                              heads=tuple(random_projective_heads(n, rng)),
                              labels=tuple(rng.choice(labels) for _ in range(n))))
    return out


# ---------------------------------------------------------------------------- projectivity
def test_projectivity_hand_built():
    # 1 <- 3 and 2 <- 4 cross: 1 2 3 4 with heads 3, 4, 0, 3
    assert not P.is_projective([3, 4, 0, 3])
    # a crossing with the arc from ROOT: root is 2, and 1 <- 3 spans over 2
    assert not P.is_projective([3, 0, 2])
    assert P.is_projective([2, 0, 2])
    assert P.is_projective([0])
    assert P.is_projective([2, 3, 0, 3])


def test_random_trees_are_projective_and_single_rooted():
    rng = random.Random(1)
    for _ in range(200):
        heads = random_projective_heads(rng.randint(1, 20), rng)
        assert heads.count(0) == 1
        assert P.is_projective(heads)


# ---------------------------------------------------------------------------- oracle
def test_oracle_rebuilds_every_projective_toy_tree():
    sents = toy_sentences(300)
    vocab = P.Vocabulary(sents, min_count=1)
    system = P.TransitionSystem(vocab.labels)
    for s in sents:
        labels = [vocab.label_id[x] for x in s.labels]
        seq = system.gold_transitions(s.heads, labels)
        assert len(seq) == 2 * len(s)
        c = P.Configuration(len(s))
        for t in seq:
            assert system.legal(c)[system.kind[t]]
            system.apply(c, t)
        assert c.terminal
        assert c.head[1:] == list(s.heads)
        assert [vocab.labels[i] for i in c.label[1:]] == list(s.labels)


def test_oracle_rejects_a_non_projective_tree_and_the_task_skips_it():
    system = P.TransitionSystem(["_"])
    with pytest.raises(P.ParserError):
        system.gold_transitions([3, 4, 0, 3], [0, 0, 0, 0])
    crossing = P.Sentence(("a", "b", "c", "d"), ("DT", "NN", "VB", "NN"), (3, 4, 0, 3), ("_",) * 4)
    sents = toy_sentences(20, labels=("_",))
    vocab = P.Vocabulary(sents + [crossing], min_count=1)
    data = P.oracle_data(sents + [crossing], vocab, P.TransitionSystem(vocab.labels))
    assert data.non_projective == 1 and data.sentences == 20
    assert len(data.y) == sum(2 * len(s) for s in sents)


def test_transition_legality():
    system = P.TransitionSystem(["x"])
    c = P.Configuration(2)
    assert system.legal(c) == (True, False, False)
    with pytest.raises(P.ParserError):
        system.apply(c, 2)  # RIGHT-ARC from ROOT with words left in the buffer
    system.apply(c, 0)
    assert system.legal(c) == (True, False, False)  # ROOT takes its dependent last
    system.apply(c, 0)
    assert system.legal(c) == (False, True, True)
    system.apply(c, 1)  # 2 -> 1
    assert system.legal(c) == (False, False, True)
    system.apply(c, 2)  # 0 -> 2
    assert c.terminal and c.head == [-1, 2, 0]


# ---------------------------------------------------------------------------- features
def hand_config() -> P.Configuration:
    """Stack [ROOT, 3, 7], buffer [8]; arcs 3->2, 2->1, 3->4, 4->5, 7->6 (reachable by arc-standard)."""
    c = P.Configuration(8)
    c.stack = [0, 3, 7]
    c.next = 8
    for h, d in [(3, 2), (2, 1), (3, 4), (4, 5), (7, 6)]:
        c.add_arc(h, d, label=d)  # label id = dependent, to see which child a feature reads
    return c


def test_feature_extraction_on_a_hand_built_configuration():
    words = [100 + i for i in range(9)]  # token i -> 100 + i (token 0 = ROOT)
    tags = [200 + i for i in range(9)]
    f = P.extract_features(hand_config(), words, tags)
    assert len(f) == len(P.FEATURE_NAMES) == 48
    got = dict(zip(P.FEATURE_NAMES, f))
    # positions: s1=7, s2=3, s3=ROOT, b1=8, b2/b3 absent
    expect_tokens = {"s1": 7, "s2": 3, "s3": 0, "b1": 8, "b2": None, "b3": None,
                     "lc1(s1)": 6, "rc1(s1)": None, "lc2(s1)": None, "rc2(s1)": None,
                     "lc1(lc1)(s1)": None, "rc1(rc1)(s1)": None,
                     "lc1(s2)": 2, "rc1(s2)": 4, "lc2(s2)": None, "rc2(s2)": None,
                     "lc1(lc1)(s2)": 1, "rc1(rc1)(s2)": 5}
    for pos, tok in expect_tokens.items():
        assert got[f"w:{pos}"] == (0 if tok is None else 100 + tok), pos
        assert got[f"t:{pos}"] == (0 if tok is None else 200 + tok), pos
        if pos[0] in "lr":
            assert got[f"l:{pos}"] == (0 if tok is None else tok + 3), pos


def test_features_of_the_same_configuration_reached_by_transitions():
    system = P.TransitionSystem(["a"])
    c = P.Configuration(8)
    # SHIFT 1 2, LEFT 2->1, SHIFT 3, LEFT 3->2, SHIFT 4 5, RIGHT 4->5, RIGHT 3->4, SHIFT 6 7, LEFT 7->6
    for t in [0, 0, 1, 0, 1, 0, 0, 2, 2, 0, 0, 1]:
        system.apply(c, t)
    words = list(range(9))
    hand = hand_config()
    hand.label = [0 if x >= 0 else -1 for x in hand.label]
    assert c.stack == hand.stack and c.head == hand.head
    assert P.extract_features(c, words, words) == P.extract_features(hand, words, words)


def test_second_children_and_first_children_orders():
    c = P.Configuration(7)
    c.stack = [0, 4]
    c.next = 8
    for d in (1, 2, 3, 5, 6, 7):
        c.add_arc(4, d, label=0)
    f = dict(zip(P.FEATURE_NAMES, P.extract_features(c, list(range(8)), list(range(8)))))
    assert (f["w:lc1(s1)"], f["w:lc2(s1)"], f["w:rc1(s1)"], f["w:rc2(s1)"]) == (1, 2, 7, 6)


# ---------------------------------------------------------------------------- scores
def test_gold_trees_score_100():
    sents = toy_sentences(50)
    scores = P.attachment_scores(sents, [(s.heads, s.labels) for s in sents])
    assert scores["uas"] == 100.0 and scores["las"] == 100.0


def test_punctuation_is_excluded():
    s = P.Sentence(("He", "left", ",", "then", "slept", "."), ("PRP", "VBD", ",", "RB", "VBD", "."),
                   (2, 0, 2, 5, 2, 2), ("a",) * 6)
    # wrong heads on both punctuation tokens and on 'then': 3 of 4 scored tokens right
    pred = ([2, 0, 1, 4, 2, 5], ["a"] * 6)
    scores = P.attachment_scores([s], [pred])
    assert scores["tokens"] == 4
    assert scores["uas"] == 75.0
    assert P.attachment_scores([s], [pred], punct_tags=())["uas"] == pytest.approx(100 * 3 / 6)
    wrong_label = ([2, 0, 2, 5, 2, 2], ["a", "b", "a", "a", "a", "b"])
    s2 = P.attachment_scores([s], [wrong_label])
    assert s2["uas"] == 100.0 and s2["las"] == 75.0  # the '.' label error is not scored


# ---------------------------------------------------------------------------- greedy parsing
def toy_model(vocab, system, seed=0, hidden=16):
    torch.manual_seed(seed)
    model = P.ChenManningParser(len(vocab.words), len(vocab.tags), len(vocab.label_tokens),
                                system.num_transitions, embed_dim=8, hidden=hidden)
    return model.eval()


def test_batched_parser_equals_one_sentence_at_a_time():
    sents = toy_sentences(40, seed=3)
    vocab = P.Vocabulary(sents[:20], min_count=1)  # the rest has unknown words
    system = P.TransitionSystem(vocab.labels)
    model = toy_model(vocab, system)
    with torch.inference_mode():
        one = [P.parse_sentence(model, s, vocab, system) for s in sents]
        for bs in (1, 7, 1000):
            assert P.parse(model, sents, vocab, system, batch_size=bs) == one
    for s, (heads, _) in zip(sents, one):
        assert len(heads) == len(s) and heads.count(0) == 1  # a tree with a single root word


def test_nan_model_still_parses_and_reports_worst_values():
    sents = toy_sentences(30, seed=4)
    task = P.PTBParsingTask(splits={"train": sents, "dev": sents}, embed_dim=8, hidden=16)
    model = task.build_model(0)
    model.train()
    with torch.no_grad():
        model.output.weight.fill_(float("nan"))
    out = task.evaluate(model)
    assert out["loss"] == math.inf
    assert 0.0 <= out["uas"] <= 100.0
    assert all(m.training for m in model.modules())  # train flags restored
    with torch.no_grad():
        model.output.weight.fill_(float("inf"))
    assert math.isfinite(task.evaluate(model)["uas"])


# ---------------------------------------------------------------------------- readers
def test_read_conll_x_and_u(tmp_path):
    conllu = tmp_path / "a.conllu"
    conllu.write_text(
        "# sent_id = 1\n"
        "1-2\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "1\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_\n"
        "2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_\n"
        "3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n"
        "3.1\tx\tx\tX\t_\t_\t_\t_\t_\t_\n"
        "\n"
        "1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n", encoding="utf-8")
    sents = P.read_conll(conllu)
    assert [s.words for s in sents] == [("do", "n't", "go"), ("Hi",)]
    assert sents[0].tags == ("VBP", "RB", "VB") and sents[1].tags == ("INTJ",)
    assert sents[0].heads == (3, 3, 0) and sents[0].labels == ("aux", "advmod", "root")
    bad = tmp_path / "b.conll"
    bad.write_text("1\tHi\t_\tUH\n", encoding="utf-8")
    with pytest.raises(P.ParserError, match="10"):
        P.read_conll(bad)


def test_sentence_validation():
    with pytest.raises(P.ParserError):
        P.Sentence(("a", "b"), ("X", "X"), (0, 3), ("_", "_"))
    with pytest.raises(P.ParserError):
        P.Sentence(("a",), ("X",), (1,), ("_",))


# ---------------------------------------------------------------------------- the task
def test_task_contract_and_validation():
    sents = toy_sentences(30)
    task = P.PTBParsingTask(splits={"train": sents, "dev": sents[:10]}, embed_dim=8, hidden=16, batch_size=64)
    assert isinstance(task, Task) and task.metric == "uas" and task.higher_is_better
    x, y = next(iter(task.train_batches(torch.Generator().manual_seed(0))))
    assert x.shape == (64, 48) and y.shape == (64,)
    total = sum(c for _, _, c in task.gradient_batches())
    assert total == len(task.train_data.y) == sum(2 * len(s) for s in sents)
    model = task.build_model(0)
    assert torch.equal(model.hidden.weight, task.build_model(0).hidden.weight)
    assert not torch.equal(model.hidden.weight, task.build_model(1).hidden.weight)
    assert task.loss(model, x, y).ndim == 0
    assert "las" in task.evaluate(model)  # the toy treebank has labels
    import json
    json.dumps(task.identity()), json.dumps(task.provenance())
    for bad in ({"hidden": 0}, {"dropout": 1.0}, {"init": "xavier"}, {"eval_split": "test"}):
        with pytest.raises(P.ParserError):
            P.PTBParsingTask(splits={"train": sents, "dev": sents}, **bad)


def test_training_learns_the_toy_treebank(tmp_path):
    sents = toy_sentences(60, seed=5, labels=("_",))
    task = P.PTBParsingTask(splits={"train": sents, "dev": sents}, embed_dim=16, hidden=64, dropout=0.0,
                            batch_size=32, min_count=1)
    before = task.evaluate(task.build_model(0))
    result = train_task(task, TaskTrainConfig(epochs=30, lr=3e-3), checkpoint_dir=tmp_path)
    after = task.evaluate(result.model)
    assert after["loss"] < 0.5 * before["loss"]
    assert after["uas"] > 90.0 > before["uas"]
    assert "las" not in after  # one label: UAS only
    g = task_gradient(task, result.model)
    assert g.shape[0] == sum(p.numel() for p in result.model.parameters()) and torch.isfinite(g).all()


# ---------------------------------------------------------------------------- the real sample
@pytest.fixture(scope="module")
def real_files():
    value = os.environ.get("PARAMSTRESS_DATA_MIRROR") or str(REPO.parent / "shared" / "data")
    zip_path = Path(value) / "nltk_data" / "corpora" / "dependency_treebank.zip"
    local = REPO / "data" / "nltk_data" / "corpora" / "dependency_treebank.zip"
    if not zip_path.is_file() and not local.is_file():
        pytest.skip("NLTK dependency_treebank not found: set PARAMSTRESS_DATA_MIRROR")
    mp = pytest.MonkeyPatch()
    if zip_path.is_file():
        mp.setenv("PARAMSTRESS_DATA_MIRROR", value)
    from paramstress import data

    files = data.load("ptb-dependency")
    yield files, P.read_nltk_dependency(files.nltk_root)
    mp.undo()


@pytest.mark.slow
def test_real_sample_sizes_and_split(real_files):
    _, files = real_files
    assert len(files) == 199
    sents = [s for v in files.values() for s in v]
    assert len(sents) == 3914 and sum(len(s) for s in sents) == 94084
    assert {lab for s in sents for lab in s.labels} == {P.NO_LABEL}  # the sample has no arc labels
    split = P.split_by_file(files)
    assert [len(split[k]) for k in ("train", "dev", "test")] == [3396, 273, 245]


@pytest.mark.slow
def test_oracle_rebuilds_every_projective_tree_of_the_real_sample(real_files):
    _, files = real_files
    sents = [s for v in files.values() for s in v]
    vocab = P.Vocabulary(sents)
    system = P.TransitionSystem(vocab.labels)
    projective = [s for s in sents if P.is_projective(s.heads)]
    assert len(projective) == len(sents)  # the Penn2Malt-style conversion is projective
    for s in projective:
        seq = system.gold_transitions(s.heads, [0] * len(s))  # raises unless the gold tree is rebuilt
        assert len(seq) == 2 * len(s)
    gold = P.attachment_scores(sents, [(s.heads, s.labels) for s in sents])
    assert gold["uas"] == 100.0


@pytest.mark.slow
def test_real_task_builds(real_files):
    task = P.PTBParsingTask(max_train_sentences=300, max_eval_sentences=50, hidden=32)
    assert task.provenance()["source"].startswith(("mirror", "root", "download"))
    assert task.summary()["train sentences"] == 300
    assert task.identity()["checksum"] == real_files[0].checksum
    out = task.evaluate(task.build_model(0))
    assert set(out) == {"uas", "loss"} and 0 <= out["uas"] <= 100


def write_conllu(sentences, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            for i, (w, t, h, lab) in enumerate(zip(s.words, s.tags, s.heads, s.labels), 1):
                f.write(f"{i}\t{w}\t{w}\t_\t{t}\t_\t{h}\t{lab}\t_\t_\n")
            f.write("\n")


def test_paper_profile_reads_user_supplied_conll_through_the_data_layer(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "ptb-conll").mkdir(parents=True)
    splits = {"train": toy_sentences(40, seed=7), "dev": toy_sentences(10, seed=8), "test": toy_sentences(12, seed=9)}
    for name, sents in splits.items():
        write_conllu(sents, root / "ptb-conll" / f"{name}.conllu")
    monkeypatch.setenv("PARAMSTRESS_DATA", str(root))
    monkeypatch.setenv("PARAMSTRESS_OFFLINE", "1")
    monkeypatch.delenv("PARAMSTRESS_DATA_MIRROR", raising=False)
    task = P.PTBParsingTask(dataset="ptb-conll", eval_split="test", embed_dim=8, hidden=16)
    assert task.train_sentences == splits["train"] and task.eval_sentences == splits["test"]
    assert task.labelled and task.system.num_transitions == 1 + 2 * 4
    assert task.provenance()["source"].startswith("root")
    assert set(task.evaluate(task.build_model(0))) == {"uas", "las", "loss"}
    with pytest.raises(P.ParserError, match="dependency treebank"):
        P.PTBParsingTask(dataset="multi30k")


def test_reference_scores_of_trivial_parsers():
    chain_right = P.Sentence(("a", "b", "c"), ("DT", "JJ", "NN"), (2, 3, 0), ("_",) * 3)  # head = next word
    chain_left = P.Sentence(("a", "b", "c"), ("VB", "NN", "NN"), (0, 1, 2), ("_",) * 3)  # head = previous word
    task = P.PTBParsingTask(splits={"train": [chain_right, chain_left], "dev": [chain_right, chain_left]},
                            embed_dim=4, hidden=4, min_count=1)
    assert task.reference_scores() == {"head = next word": 50.0, "head = previous word": 50.0}
    task = P.PTBParsingTask(splits={"train": [chain_right], "dev": [chain_right]}, embed_dim=4, hidden=4)
    assert task.reference_scores() == {"head = next word": 100.0, "head = previous word": 0.0}


# ---------------------------------------------------------------------------- per-sentence statistics
def test_attachment_statistics_by_hand():
    s = P.Sentence(("He", "left", ",", "then", "slept", "."), ("PRP", "VBD", ",", "RB", "VBD", "."),
                   (2, 0, 2, 5, 2, 2), ("a",) * 6)
    only_punct = P.Sentence((",", "."), (",", "."), (0, 1), ("a", "a"))
    pred = ([2, 0, 1, 4, 2, 5], ["a", "b", "a", "a", "a", "a"])  # 'then' wrong, 'left' wrongly labelled
    stats = P.attachment_statistics([s, only_punct], [pred, ([0, 1], ["a", "a"])])
    assert stats == [(3, 2, 4), (0, 0, 0)]
    assert P.attachment_scores([s, only_punct], [pred, ([0, 1], ["a", "a"])]) == {"uas": 75.0, "las": 50.0,
                                                                                  "tokens": 4.0}
    with pytest.raises(P.ParserError, match="2 heads for a 6-token"):
        P.attachment_statistics([s], [([0, 1], ["a", "a"])])


def test_evaluate_units_give_the_uas_exactly():
    sents = toy_sentences(40, seed=6)
    punct_only = P.Sentence((",",), (",",), (0,), ("punct",))
    task = P.PTBParsingTask(splits={"train": sents, "dev": sents[:25] + [punct_only]}, embed_dim=8, hidden=16)
    model = task.build_model(1)
    metrics, stats = task.evaluate_units(model)
    assert metrics == task.evaluate(model)
    assert stats.shape == (25, 2)  # the punctuation-only sentence has no scored token
    scored = [sum(t not in P.PUNCT_TAGS for t in s.tags) for s in sents[:25]]
    assert stats[:, 1].tolist() == scored
    assert task.combine(stats) == metrics["uas"]  # exact: the same integer sums, the same division
    parsed = P.parse(model.eval(), task.eval_sentences, task.vocab, task.system)
    labels = task.vocab.labels
    by_hand = P.attachment_statistics(task.eval_sentences, [(h, [labels[i] for i in l]) for h, l in parsed])
    assert stats[:, 0].tolist() == [c for c, _, n in by_hand if n > 0]
