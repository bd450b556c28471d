"""PTB-LM (Sun et al. 2021, Table 1 column "PTB-LM"): preprocessing, batching, the LSTM
language model's loss against a hand computation, evaluation, and the real sample."""
import json
import math
import time

import numpy as np
import pytest
import torch

from paramstress import language_model as LM
from paramstress.language_model import EOS, UNK

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


# ------------------------------------------------------------------ preprocessing
def _tree_pos(text):
    from nltk import Tree

    return Tree.fromstring(text).pos()


def test_mikolov_preprocessing_on_toy_trees():
    tree = """(S (NP-SBJ (NNP Pierre) (NNP Vinken) (, ,) (ADJP (NP (CD 61) (NNS years)) (JJ old)) (, ,))
              (VP (MD will) (VP (VB join) (NP (DT the) (NN board)) (NP (-NONE- *-1))
              (PP (IN by) (NP (CD 3.2) (NN %))) (NP (NNP Nov.) (CD 29)) (NP (CD 1,000) (CD 1\\/2))
              (`` ``) (NP (NNS shares)) ('' '') (-LRB- -LRB-) (NP ($ $) (CD 5)) (-RRB- -RRB-)
              (SBAR (-NONE- 0) (S (NP (-NONE- *T*-2)) (VP (VBZ is) (RB n't))))
              (: --) (NP (NNP U.S.) (POS 's)))) (. .))"""
    words = LM.mikolov_tokens(_tree_pos(tree))
    assert words == ["pierre", "vinken", "N", "years", "old", "will", "join", "the", "board", "by", "N", "N",
                     "nov.", "N", "N", "N", "shares", "$", "N", "is", "n't", "u.s.", "'s"]


@pytest.mark.parametrize("word,expected", [("61", "N"), ("3.2", "N"), ("1,000", "N"), ("1\\/2", "N"), ("2:30", "N"),
                                           ("%", "N"), ("-5", "N"), ("Nov.", "nov."), ("1980s", "1980s"),
                                           ("N.V.", "n.v."), ("$", "$"), ("'s", "'s"), ("Boeing", "boeing")])
def test_normalize_word(word, expected):
    assert LM.normalize_word(word) == expected


def test_vocabulary_order_cap_and_unk():
    train = "b a c a b a d".split()
    vocab = LM.build_vocabulary(train, min_count=2)
    assert vocab.words == (UNK, EOS, "a", "b")  # by count, c and d are rare
    assert LM.build_vocabulary(train, min_count=1).words == (UNK, EOS, "a", "b", "c", "d")  # ties alphabetical
    assert LM.build_vocabulary(train, min_count=1, max_size=3).words == (UNK, EOS, "a")
    assert vocab.encode(["a", "zzz", "b", EOS]).tolist() == [2, 0, 3, 1]
    with pytest.raises(ValueError, match="min_count"):
        LM.build_vocabulary(train, min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        LM.build_vocabulary(train, max_size=2)


def test_make_corpus_streams_eos_and_unk():
    sents = {"train": [["a", "b"], ["a", "c"], ["b"]], "valid": [["a", "x"]], "test": [["c", "b"]]}
    c = LM.make_corpus(sents, min_count=2)
    assert c.vocab.words == (UNK, EOS, "a", "b")
    assert c.vocab.decode(c.train) == ["a", "b", EOS, "a", UNK, EOS, "b", EOS]
    assert c.vocab.decode(c.valid) == ["a", UNK, EOS]
    assert c.vocab.decode(c.test) == [UNK, "b", EOS]
    assert c.unk_rate("test") == pytest.approx(1 / 3)
    other = LM.make_corpus({**sents, "test": [["b", "c"]]}, min_count=2)
    assert other.checksum != c.checksum  # the checksum covers the token streams


def test_mikolov_corpus_from_text_files(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(" the cat <unk> sat \n the dog N \n")
    (tmp_path / "ptb.valid.txt").write_text(" the bird \n")
    (tmp_path / "ptb.test.txt").write_text(" a cat \n")
    c = LM.mikolov_corpus(*(tmp_path / f"ptb.{s}.txt" for s in ("train", "valid", "test")))
    assert c.vocab.decode(c.train) == ["the", "cat", UNK, "sat", EOS, "the", "dog", "N", EOS]
    assert c.vocab.decode(c.valid) == ["the", UNK, EOS]  # every training word is in the vocabulary
    assert len(c.vocab) == 2 + 5  # <unk>, <eos>, the cat sat dog N


# ------------------------------------------------------------------ batching
def test_batchify_shapes_and_streams():
    ids = torch.arange(103)
    data = LM.batchify(ids, 4)
    assert data.shape == (25, 4) and data.is_contiguous()
    for b in range(4):  # column b is the b-th contiguous quarter of the stream; the 3 last tokens dropped
        assert data[:, b].tolist() == list(range(25 * b, 25 * (b + 1)))
    with pytest.raises(ValueError, match="lower batch_size"):
        LM.batchify(torch.arange(7), 4)


def test_windows_targets_shifted_by_one_with_context():
    data = LM.batchify(torch.arange(2 * 23), 2)  # 23 steps
    wins = LM.windows(data, 5, context=3)
    assert [y.shape[0] for _, y in wins] == [5, 5, 5, 5, 2]  # 22 predictable rows
    starts = [0, 5, 10, 15, 20]
    for (x, y), s in zip(wins, starts):
        c = min(3, s)
        assert x.shape == (c + y.shape[0], 2)
        assert torch.equal(x[c:], data[s: s + y.shape[0]])
        assert torch.equal(y, data[s + 1: s + 1 + y.shape[0]])  # the next token
        assert torch.equal(x[:c], data[s - c: s])
    # every predictable row is a target exactly once, also from an offset
    for offset in (0, 3):
        rows = torch.cat([y for _, y in LM.windows(data, 5, offset=offset)])
        assert torch.equal(rows, data[1 + offset:])


# ------------------------------------------------------------------ the loss by hand
def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _hand_lstm(x_emb, w_ih, w_hh, b, h, c):
    """PyTorch's LSTM cell (gate order i, f, g, o) over a (T, B, E) sequence, in float64."""
    outs = []
    for t in range(x_emb.shape[0]):
        z = x_emb[t] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = np.split(z, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        outs.append(h)
    return (np.stack(outs) if outs else None), h, c


def _toy_model():
    model = LM.LSTMLanguageModel(6, emb_size=3, hidden_size=4, num_layers=1, dropout=0.5, dropouth=0.5,
                                 dropouti=0.5, dropoute=0.5)
    rng = np.random.default_rng(7)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.8, 0.8, p.shape)).float())
    return model


def test_lm_loss_equals_hand_computed_cross_entropy():
    model = _toy_model().eval()  # eval: no dropout
    assert model.decoder.weight is model.encoder.weight  # tied
    emb = model.encoder.weight.detach().double().numpy()
    rnn = model.rnns[0]
    w_ih, w_hh = rnn.weight_ih_l0.detach().double().numpy(), rnn.weight_hh_l0.detach().double().numpy()
    b = (rnn.bias_ih_l0 + rnn.bias_hh_l0).detach().double().numpy()
    dec_b = model.decoder.bias.detach().double().numpy()
    tokens = torch.tensor([[1, 4], [2, 5], [3, 0], [5, 2], [0, 1], [4, 3]])  # (T=6, B=2)

    def hand(context):
        x, y = tokens[:-1], tokens[1:]
        zeros = np.zeros((2, 3))
        _, h, c = _hand_lstm(emb[x[:context].numpy()], w_ih, w_hh, b, zeros, zeros)
        out, _, _ = _hand_lstm(emb[x[context:].numpy()], w_ih, w_hh, b, h, c)
        logits = out @ emb.T + dec_b  # (T', B, V), tied decoder
        m = logits.max(axis=-1, keepdims=True)
        log_softmax = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
        target = y[context:].numpy()
        nll = -np.take_along_axis(log_softmax, target[..., None], axis=-1)
        return nll.mean()

    for context in (0, 2):
        x, y = tokens[:-1], tokens[1 + context:]
        loss = LM.lm_loss(model, x, y)
        assert loss.ndim == 0
        assert float(loss.detach()) == pytest.approx(hand(context), rel=1e-5, abs=1e-6)
    assert hand(0) != pytest.approx(hand(2), abs=1e-3)  # the context matters, so the test can tell


def test_lm_loss_context_gets_no_gradient_and_is_repeatable():
    model = _toy_model().eval()
    tokens = torch.tensor([[1, 4], [2, 5], [3, 0], [5, 2], [0, 1], [4, 3]])
    x, y = tokens[:-1], tokens[3:]  # 2 context rows
    loss1 = LM.lm_loss(model, x, y)
    loss1.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.no_grad():
        _, hidden = model(x[:2])
    logits, _ = model(x[2:], [tuple(t.detach() for t in s) for s in hidden])
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, 6), y.reshape(-1))
    ref.backward()
    assert float(loss1.detach()) == float(LM.lm_loss(model, x, y).detach())  # a pure function of (weights, x, y)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)


def test_dropouts_act_only_in_train_mode():
    model = _toy_model()
    x = torch.tensor([[1, 2], [3, 4], [5, 0]])
    model.eval()
    a, _ = model(x)
    b, _ = model(x)
    assert torch.equal(a, b)
    model.train()
    torch.manual_seed(0)
    c, _ = model(x)
    assert not torch.allclose(a, c)


# ------------------------------------------------------------------ the task
def _toy_corpus(n_train=600, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(12)]

    def sents(n):  # a Markov chain: w_{i+1} follows w_i mostly, so an LSTM can beat the unigram model
        out = []
        for _ in range(n):
            k = int(rng.integers(0, 12))
            s = []
            for _ in range(int(rng.integers(3, 8))):
                s.append(words[k])
                k = (k + 1) % 12 if rng.random() < 0.9 else int(rng.integers(0, 12))
            out.append(s)
        return out

    return LM.make_corpus({"train": sents(n_train), "valid": sents(60), "test": sents(60)}, min_count=1,
                          dataset="toy", data_checksum="toy")


def _task(corpus=None, **kw):
    params = dict(emb_size=16, hidden_size=24, num_layers=2, dropout=0.1, dropouth=0.1, dropouti=0.1, dropoute=0.0,
                  batch_size=8, bptt=10, eval_batch_size=5, eval_bptt=7)
    params.update(kw)
    return LM.PTBLanguageModelTask(corpus=corpus or _toy_corpus(), **params)


def test_task_attributes_and_model():
    task = _task()
    assert (task.key, task.label, task.metric, task.metric_label, task.higher_is_better) == \
        ("ptb-lm", "PTB-LM", "log_ppl", "Log PPL", False)
    a, b, c = task.build_model(3), task.build_model(3), task.build_model(4)
    state = torch.get_rng_state()
    task.build_model(5)
    assert torch.equal(state, torch.get_rng_state())  # the global generator is untouched
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.rnns[0].weight_hh_l0, c.rnns[0].weight_hh_l0)
    assert a.decoder.weight is a.encoder.weight


def test_task_validates_before_loading_data():
    with pytest.raises(ValueError, match="dropout"):
        LM.PTBLanguageModelTask(corpus=_toy_corpus(), dropout=1.5)
    with pytest.raises(ValueError, match="eval_split"):
        LM.PTBLanguageModelTask(corpus=_toy_corpus(), eval_split="train")
    with pytest.raises(ValueError, match="context"):
        LM.PTBLanguageModelTask(corpus=_toy_corpus(), context=-1)


def test_train_batches_full_windows_same_count_seeded_order():
    task = _task()
    epoch = list(task.train_batches(torch.Generator().manual_seed(1)))
    again = list(task.train_batches(torch.Generator().manual_seed(1)))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(epoch, again))
    steps = task.train_data.shape[0]
    count = (steps - task.bptt) // task.bptt
    starts = set()
    for seed in range(8):  # the schedule is per step: every epoch has the same number of batches
        batches = list(task.train_batches(torch.Generator().manual_seed(seed)))
        assert len(batches) == count
        rows = []
        for x, y in batches:
            assert y.shape == (task.bptt, task.batch_size)
            c = x.shape[0] - y.shape[0]
            assert 0 <= c <= task.context
            # find the window's row: y is data[s+1 : s+1+bptt] and x ends at data[s+bptt-1]
            s = next(r for r in range(steps - task.bptt) if torch.equal(task.train_data[r + 1: r + 1 + task.bptt], y))
            assert torch.equal(x, task.train_data[s - c: s + task.bptt])
            rows.append(s)
        assert len(set(rows)) == count and all((r - min(rows)) % task.bptt == 0 for r in rows)  # disjoint windows
        starts.add(min(rows))
        if seed == 0:
            first = [s for s in rows]
        elif sorted(rows) == sorted(first):
            assert rows != first  # same boundaries, so the order must differ
    assert len(starts) > 1  # the window boundaries move between epochs


def test_gradient_batches_counts():
    task = _task()
    batches = list(task.gradient_batches())
    assert sum(n for _, _, n in batches) == (task.train_data.shape[0] - 1) * task.batch_size
    assert all(n == y.numel() for _, y, n in batches)
    few = list(_task(gradient_tokens=100).gradient_batches())
    assert sum(n for *_, n in few) >= 100 and len(few) == math.ceil(100 / (task.bptt * task.batch_size))


def test_evaluate_restores_flags_and_weights_and_equals_one_pass():
    task = _task()
    model = task.build_model(0)
    model.train()
    model.drop_hidden.eval()  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    result = task.evaluate(model)
    assert set(result) == {"log_ppl", "loss"} and result["log_ppl"] == result["loss"]
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # carried state across windows == one pass over each whole stream
    data = LM.batchify(task.eval_ids, task.eval_batch_size)
    model.eval()
    with torch.no_grad():
        logits, _ = model(data[:-1])
        ref = torch.nn.functional.cross_entropy(logits.reshape(-1, task.vocab_size).double(), data[1:].reshape(-1))
    assert result["log_ppl"] == pytest.approx(float(ref), rel=1e-5)


def test_evaluate_reports_inf_for_nonfinite_weights():
    task = _task()
    model = task.build_model(0)
    with torch.no_grad():
        model.rnns[1].weight_hh_l0[0, 0] = float("nan")
    result = task.evaluate(model)
    assert result["log_ppl"] == math.inf and result["loss"] == math.inf
    with torch.no_grad():
        model.rnns[1].weight_hh_l0[0, 0] = 0.0
        model.decoder.bias[2] = float("inf")
    assert LM.evaluate_lm(model, task.eval_ids, batch_size=5)["nonfinite"] == 100.0


def test_identity_is_json_and_changes_with_what_defines_the_weights():
    task = _task()
    ident = task.identity()
    json.dumps(ident)
    json.dumps(task.provenance())
    assert ident == _task().identity()
    assert ident != _task(hidden_size=32).identity()
    assert ident != _task(bptt=12).identity()
    assert ident != _task(corpus=_toy_corpus(seed=1)).identity()
    assert ident == _task(eval_split="valid").identity()  # evaluation does not change trained weights


def test_unigram_baseline_by_hand():
    sents = {"train": [["a", "a", "b"]], "valid": [["b"]], "test": [["a", "c"]]}
    c = LM.make_corpus(sents, min_count=1)  # vocab <unk> <eos> a b; train counts 0 1 2 1
    # add-one: p = (0+1, 1+1, 2+1, 1+1) / 8 ; test tokens a <unk> <eos>
    expected = -(math.log(3 / 8) + math.log(1 / 8) + math.log(2 / 8)) / 3
    assert LM.unigram_log_ppl(c, "test") == pytest.approx(expected)
    assert LM.unigram_log_ppl(c, "test", smoothing="ml") == math.inf
    assert LM.unigram_log_ppl(c, "valid", smoothing="ml") == pytest.approx(-(math.log(1 / 4) + math.log(1 / 4)) / 2)


def _train(task, epochs, lr=20.0, seed=0):
    model = task.build_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for x, y in task.train_batches(gen):
            opt.zero_grad()
            task.loss(model, x, y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
    return model


def test_short_training_beats_unigram_on_toy_markov_text():
    task = _task()
    model = _train(task, epochs=4)
    assert task.evaluate(model)["log_ppl"] < task.unigram_log_ppl() - 0.5


# ------------------------------------------------------------------ the real sample
@pytest.mark.slow
def test_real_treebank_sample_sizes_and_training_beats_unigram(mirror, tmp_path):
    corpus = LM.load_corpus("ptb-treebank")
    assert corpus.dataset == "ptb-treebank" and corpus.data_checksum and corpus.source.startswith(("root", "mirror"))
    assert sum(corpus.description["sentences"].values()) == 3914
    assert corpus.description["sentences"] == {"train": 3396, "valid": 273, "test": 245}
    assert corpus.sizes() == {"train_tokens": 75503, "valid_tokens": 5941, "test_tokens": 5579, "vocab_size": 4696}
    assert corpus.vocab.decode(corpus.train[:16]) == [UNK, "vinken", "N", "years", "old", "will", "join", "the",
                                                      "board", "as", "a", "nonexecutive", "director", "nov.", "N", EOS]
    assert not any(w.startswith("*") or w in {",", ".", "``", "-lrb-", "-none-"} for w in corpus.vocab.words)
    # the recommended `ci` profile, through the shared trainer
    from paramstress import tasks

    task = LM.PTBLanguageModelTask(corpus=corpus, emb_size=32, hidden_size=64, num_layers=1, dropout=0.1,
                                   dropouth=0.1, dropouti=0.1, dropoute=0.0, batch_size=24, bptt=35, context=0)
    unigram = task.unigram_log_ppl()
    assert 5.7 < unigram < 6.1
    assert task.reference_scores() == {"unigram": unigram}
    cfg = tasks.TaskTrainConfig(epochs=2, lr=30.0, optimizer="sgd", momentum=0.0, nesterov=False, clip_norm=0.25)
    start = time.perf_counter()
    result = tasks.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert result.final["log_ppl"] < unigram - 0.2, (result.final, unigram, time.perf_counter() - start)


def test_load_corpus_dispatches_on_the_data_layer_files(tmp_path, monkeypatch):
    from paramstress import data

    folder = tmp_path / "ptb-mikolov"
    folder.mkdir()
    for split, text in (("train", "a b a\nb a\n"), ("valid", "a c\n"), ("test", "b\n")):
        (folder / f"ptb.{split}.txt").write_text(text)
    files = {f"ptb.{s}.txt": "md5" for s in ("train", "valid", "test")}
    loaded = data.TextFiles(name="ptb-mikolov", folder=folder, files=files, checksum="abc", source="mirror: x")
    monkeypatch.setattr(data, "load", lambda name: loaded)
    corpus = LM.load_corpus("ptb-mikolov")
    assert (corpus.dataset, corpus.data_checksum, corpus.source) == ("ptb-mikolov", "abc", "mirror: x")
    assert corpus.vocab.decode(corpus.valid) == ["a", UNK, EOS]
    loaded.files = {"other.txt": "md5"}
    with pytest.raises(ValueError, match="not a language-modelling corpus"):
        LM.load_corpus("ptb-mikolov")


@pytest.mark.parametrize("objective,params", [("cross_entropy", {}), ("sam", {"rho": 0.05})])
def test_shared_trainer_and_gradient(tmp_path, objective, params):
    from paramstress import tasks

    task = _task()
    cfg = tasks.TaskTrainConfig(epochs=3, lr=20.0, optimizer="sgd", momentum=0.0, nesterov=False, clip_norm=0.25,
                                objective=objective, objective_params=params)
    result = tasks.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert result.final["log_ppl"] < task.unigram_log_ppl() - 0.3
    assert set(task.reference_scores()) == {"unigram"}
    g = tasks.task_gradient(task, result.model)
    assert g.shape == (sum(p.numel() for p in result.model.parameters()),) and torch.isfinite(g).all()
    again = tasks.train_task(task, cfg, checkpoint_dir=tmp_path)
    assert again.loaded


# ------------------------------------------------------------------ per-sentence statistics (paired bootstrap)
def test_sentence_nll_by_hand():
    # three sentences 5 6 <eos> | 7 <eos> | 8 9 <eos>, batchified into 2 streams of 4 rows:
    # stream 0 = positions 0-3, stream 1 = positions 4-7; positions 0 and 4 are never predicted
    ids = torch.tensor([5, 6, 1, 7, 1, 8, 9, 1])
    nll = torch.tensor([[math.nan, math.nan], [0.5, 2.0], [1.0, 4.0], [0.25, 8.0]], dtype=torch.float64)
    stats = LM.sentence_nll(ids, nll)
    assert stats.tolist() == [[1.5, 2.0], [0.25, 1.0], [14.0, 3.0]]
    # a sentence with no predicted token (<eos> alone at a stream start) is left out; an
    # infinite NLL stays infinite
    ids = torch.tensor([1, 5, 6, 1, 7, 1, 8, 1])
    nll = torch.tensor([[math.nan, math.nan], [0.5, math.inf], [1.0, 4.0], [0.25, 8.0]], dtype=torch.float64)
    assert LM.sentence_nll(ids, nll).tolist() == [[1.75, 3.0], [math.inf, 1.0], [12.0, 2.0]]
    # tokens batchify drops (len % B at the end) count in no sentence
    ids = torch.tensor([5, 1, 6, 1, 7])
    nll = torch.tensor([[math.nan, math.nan], [3.0, 5.0]], dtype=torch.float64)
    assert LM.sentence_nll(ids, nll).tolist() == [[3.0, 1.0], [5.0, 1.0]]
    with pytest.raises(ValueError, match="is not batchify"):
        LM.sentence_nll(ids, torch.zeros(3, 2, dtype=torch.float64))


def test_evaluate_units_reproduce_the_log_perplexity():
    task = _task()
    model = task.build_model(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    metrics, stats = task.evaluate_units(model)
    assert metrics == task.evaluate(model)  # the same evaluation, bit for bit
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    steps = len(task.eval_ids) // task.eval_batch_size
    assert stats.shape[1] == 2 and stats[:, 1].sum() == (steps - 1) * task.eval_batch_size  # every predicted token
    sentences = int((task.eval_ids == 1).sum())
    assert sentences - task.eval_batch_size <= len(stats) <= sentences and (stats[:, 1] > 0).all()
    assert task.combine(stats) == pytest.approx(metrics["log_ppl"], rel=1e-12)
    assert task.combine(stats.sum(0)) == task.combine(stats)
    # the per-sentence sums are those of the per-token NLL of one pass over each whole stream
    data = LM.batchify(task.eval_ids, task.eval_batch_size)
    model.eval()
    with torch.no_grad():
        logits, _ = model(data[:-1])
        token = torch.nn.functional.cross_entropy(logits.reshape(-1, task.vocab_size).double(), data[1:].reshape(-1),
                                                  reduction="none").reshape(steps - 1, -1)
    laid = torch.cat([torch.full((1, task.eval_batch_size), math.nan, dtype=torch.float64), token])
    assert np.allclose(LM.sentence_nll(task.eval_ids, laid).numpy(), stats, rtol=1e-5)
    # an infinite evaluation has infinite statistics
    with torch.no_grad():
        model.rnns[1].weight_hh_l0[0, 0] = float("nan")
    metrics, stats = task.evaluate_units(model)
    assert metrics["log_ppl"] == math.inf == task.combine(stats)
