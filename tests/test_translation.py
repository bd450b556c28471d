"""De-En translation task (paramstress.translation): BLEU, subwords, loss, model, evaluate."""
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, mirror_or_skip

T = pytest.importorskip("paramstress.translation", reason="fairseq not installed (make env)")

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

TOY_DE = ["ein hund läuft", "eine katze schläft", "ein mann isst", "eine frau liest ein buch",
          "der hund schläft", "die katze läuft", "ein kind spielt", "der mann liest"]
TOY_EN = ["a dog runs", "a cat sleeps", "a man eats", "a woman reads a book",
          "the dog sleeps", "the cat runs", "a child plays", "the man reads"]


def test_bleu_equals_sacrebleu_cli(tmp_path):
    refs = ["A man in an orange hat starring at something.", "A Boston Terrier is running on lush green grass.",
            "A girl in karate uniform breaking a stick with a front kick.", "Two dogs play in the snow."]
    hyps = ["A man in an orange hat is staring at something.", "A Boston terrier runs on green grass.",
            "A girl in a karate uniform breaks a stick with a kick.", "Two dogs are playing in snow."]
    (tmp_path / "ref.txt").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    cli = Path(sys.executable).parent / "sacrebleu"
    out = subprocess.run([str(cli), str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"), "-b"],
                         capture_output=True, text=True, check=True)
    ours = T.corpus_bleu(hyps, refs)
    assert 0 < ours < 100
    assert ours == pytest.approx(float(out.stdout.strip()), abs=0.05)  # the CLI prints one decimal
    assert T.corpus_bleu(refs, refs) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="hypotheses"):
        T.corpus_bleu(hyps[:2], refs)


def test_subword_round_trip_restores_tokenised_text():
    raw = ["Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
           "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
           "Two young, White males are outside near many bushes.",
           "A little girl climbing into a wooden playhouse.", "It's a \"quoted\" word (really)!"]
    tokenised = [T.moses_tokenize(line, "de" if i < 2 else "en") for i, line in enumerate(raw)]
    assert tokenised[2].split()[:3] == ["Two", "young", ","]  # Moses splits punctuation, keeps case
    proto = T.train_sentencepiece(tokenised * 3, vocab_size=60)
    sp = T._sp_processor(proto)
    for line in tokenised:
        pieces = sp.encode(line, out_type=str)
        assert len(pieces) > len(line.split()) / 2
        assert sp.decode_pieces(pieces) == line
    assert T.moses_detokenize(tokenised[3], "en") == raw[3]
    assert T._remove_subword_nmt("a wood@@ en play@@ house .") == "a wooden playhouse ."


def test_label_smoothed_loss_matches_hand_computation():
    torch.manual_seed(0)
    pad, eps = 1, 0.1
    lprobs = torch.log_softmax(torch.randn(2, 3, 5), dim=-1)
    target = torch.tensor([[2, 4, 3], [0, 1, 1]])  # two pads
    loss, nll, tokens = T.label_smoothed_loss(lprobs, target, eps, pad)
    V = 5
    hand_loss = hand_nll = 0.0
    n = 0
    for b in range(2):
        for t in range(3):
            y = int(target[b, t])
            if y == pad:
                continue
            n += 1
            nl = -float(lprobs[b, t, y])
            smooth = -float(lprobs[b, t].sum())
            hand_nll += nl
            hand_loss += (1 - eps - eps / (V - 1)) * nl + eps / (V - 1) * smooth
    assert tokens == n == 4
    assert float(loss) == pytest.approx(hand_loss / n, rel=1e-5)
    assert float(nll) == pytest.approx(hand_nll / n, rel=1e-5)
    assert float(T.nll_loss(lprobs, target, pad)) == pytest.approx(hand_nll / n, rel=1e-5)
    # smoothing really changes the loss
    assert float(T.label_smoothed_loss(lprobs, target, 0.0, pad)[0]) == pytest.approx(hand_nll / n, rel=1e-5)
    assert abs(float(loss) - hand_nll / n) > 1e-3


def test_model_has_iwslt_architecture_and_fig4_components():
    d = T.make_dictionary(TOY_DE + TOY_EN)
    with torch.device("meta"):
        full = T.build_transformer(d)
    assert (full.args.encoder_embed_dim, full.args.encoder_ffn_embed_dim, full.args.encoder_attention_heads,
            full.args.encoder_layers, full.args.decoder_layers) == (512, 1024, 4, 6, 6)
    assert full.args.arch == "transformer_iwslt_de_en"
    small = T.build_transformer(d, seed=3, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
                                decoder_ffn_embed_dim=32, encoder_layers=1, decoder_layers=2,
                                encoder_attention_heads=2, decoder_attention_heads=2)
    names = [n for n, _ in small.named_parameters()]
    for part in ("encoder.embed_tokens", "decoder.embed_tokens", "encoder.layers.0.self_attn.q_proj",
                 "decoder.layers.1.encoder_attn.k_proj", "self_attn_layer_norm", "final_layer_norm", "fc1"):
        assert any(part in n for n in names), part
    again = T.build_transformer(d, seed=3, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
                                decoder_ffn_embed_dim=32, encoder_layers=1, decoder_layers=2,
                                encoder_attention_heads=2, decoder_attention_heads=2)
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), again.state_dict().values()))
    with pytest.raises(ValueError, match="divisible"):
        T.build_transformer(d, encoder_embed_dim=10, encoder_attention_heads=4)


@pytest.fixture
def toy_task(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.de").write_text("\n".join(TOY_DE) + "\n", encoding="utf-8")
        (tmp_path / f"{split}.en").write_text("\n".join(TOY_EN) + "\n", encoding="utf-8")
    corpus = T.read_prepared_corpus(tmp_path, dataset="toy")
    return T.DeEnTranslationTask(corpus=corpus, embed_dim=16, ffn_dim=32, layers=1, heads=2, max_tokens=16,
                                 beam=2, eval_batch_size=3, dropout=0.0)


def test_task_batches_loss_and_training(toy_task):
    task = toy_task
    batches = list(task.train_batches(torch.Generator().manual_seed(0)))
    assert len(batches) == len(list(task.train_batches(torch.Generator().manual_seed(1)))) > 1
    tokens = sum(int(y.ne(task.pad).sum()) for _, y in batches)
    assert tokens == sum(len(s.split()) + 1 for s in TOY_EN)  # every target token + </s>, once
    assert sum(c for *_, c in task.gradient_batches()) == tokens
    x, y = batches[0]
    assert x["src_tokens"].shape[0] == y.shape[0] and (x["prev_output_tokens"][:, 0] == task.dictionary.eos()).all()
    model = task.build_model(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        for x, y in task.train_batches(torch.Generator().manual_seed(0)):
            opt.zero_grad()
            loss = task.loss(model, x, y)
            loss.backward()
            opt.step()
            first = float(loss.detach()) if first is None else first
    assert float(loss) < first / 2
    scores = task.evaluate(model)
    assert scores["bleu"] > 50 and scores["loss"] < 1.0  # memorised the 8 toy pairs


def test_evaluate_restores_flags_and_weights_and_survives_nan(toy_task):
    task = toy_task
    model = task.build_model(1)
    model.train()
    model.encoder.layers[0].eval()
    flags = {n: m.training for n, m in model.named_modules()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = task.evaluate(model)
    assert set(scores) == {"bleu", "loss"} and math.isfinite(scores["loss"])
    assert flags == {n: m.training for n, m in model.named_modules()}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        model.decoder.layers[0].fc1.weight.fill_(float("nan"))
    broken = task.evaluate(model)
    assert broken["loss"] == math.inf and broken["bleu"] == 0.0
    assert flags == {n: m.training for n, m in model.named_modules()}


def test_validation_fails_fast():
    with pytest.raises(ValueError, match="max_tokens"):
        T.DeEnTranslationTask(max_tokens=0, dataset="nope")
    with pytest.raises(ValueError, match="dataset"):
        T.DeEnTranslationTask(dataset="nope")
    with pytest.raises(FileNotFoundError, match="prepare-iwslt14"):
        T.read_prepared_corpus(REPO / "no-such-folder")


@pytest.mark.slow
def test_multi30k_tiny_model_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMSTRESS_DATA_MIRROR", str(mirror_or_skip()))
    if not (Path(os.environ["PARAMSTRESS_DATA_MIRROR"]) / "multi30k").is_dir():
        pytest.skip("no multi30k in the data mirror")
    from paramstress.tasks import TaskTrainConfig, train_task

    task = T.DeEnTranslationTask(vocab_size=2000, embed_dim=64, ffn_dim=128, layers=2, heads=2, dropout=0.1,
                                 max_tokens=768, train_samples=3000, eval_samples=100, beam=1,
                                 cache_dir=str(tmp_path))
    assert task.corpus.sizes() == {"train_pairs": 29000, "valid_pairs": 1014, "test_pairs": 1000}
    initial = task.evaluate(task.build_model(0))
    result = train_task(task, TaskTrainConfig(epochs=2, lr=3e-3, schedule="cosine", clip_norm=1.0),
                        checkpoint_dir=tmp_path)
    rows = result.history
    assert sum(1 for _ in task.train_batches(torch.Generator())) * 2 >= 150  # a few hundred steps
    assert rows[1]["train_loss"] < rows[0]["train_loss"]
    assert result.final["eval_loss"] < initial["loss"] - 1.0
    assert result.final["bleu"] > 0.0
    copy = task.reference_scores()["copy source"]
    assert 0.0 < copy < 10.0  # German copied as English: a few names and numbers match


def test_fast_encode_matches_fairseq_encode_line(toy_task):
    d = toy_task.dictionary
    src, tgt = toy_task.corpus.encode("test", 5)
    assert len(src) == len(tgt) == 5
    for line, ids in zip(TOY_EN[:5], tgt):
        assert torch.equal(ids, d.encode_line(line, add_if_not_exist=False, append_eos=True).long())
    assert int(toy_task.corpus.encode("test")[0][0][0]) != d.unk()
    assert toy_task.corpus.decode("a wood@@ en play@@ house .") == "a wooden playhouse."
    assert toy_task.reference_scores()["copy source"] < 20.0
    assert T.TranslationCorpus.encode(toy_task.corpus, "test")[1][0].dtype == torch.long


def test_importing_fairseq_leaves_the_root_logger_alone():
    # a fresh interpreter: fairseq configures logging only when first imported
    code = ("import logging; from paramstress import translation; translation._fairseq(); "
            "root = logging.getLogger(); print(root.level, len(root.handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == [str(logging.WARNING), "0"]


def test_fig4_groups_of_the_fairseq_transformer():
    from paramstress import vulnerability as V

    d = T.make_dictionary(TOY_DE + TOY_EN)
    model = T.build_transformer(d, seed=0, encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
                                decoder_ffn_embed_dim=32, encoder_layers=2, decoder_layers=2,
                                encoder_attention_heads=2, decoder_attention_heads=2,
                                share_decoder_input_output_embed=True)  # as the task builds it
    comps = V.component_groups(model)
    assert list(comps) == ["fc", "embedding", "attention", "layernorm"]
    assert all(".self_attn." in n or ".encoder_attn." in n for n, _ in comps["attention"])
    assert all("layer_norm" in n for n, _ in comps["layernorm"])
    assert all(".fc1." in n or ".fc2." in n for n, _ in comps["fc"])  # the output projection is tied to the embedding
    layers = V.layer_groups(model)
    assert list(layers) == ["encoder.embed_tokens (Emb)", "encoder.layers.0 (block)", "encoder.layers.1 (block)",
                            "decoder.embed_tokens (Emb)", "decoder.layers.0 (block)", "decoder.layers.1 (block)"]
    every = [n for n, _ in model.named_parameters()]
    for groups in (comps, layers):
        assert sorted(n for members in groups.values() for n, _ in members) == sorted(every)


def test_fig4_probe_of_a_translation_task_scores_bleu(toy_task):
    from paramstress import corruption as C
    from paramstress import tasks as TK
    from paramstress import vulnerability as V

    task = toy_task
    model = task.build_model(0)
    named = C.select_parameters(model)
    gradient = V.gradient_by_name(TK.task_gradient(task, model, named), named)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frame = V.probe(model, {"component": V.component_groups(model)}, gradient, eps_values=[0.5, 50.0], n=10,
                    evaluator=lambda: task.evaluate(model), metric="bleu")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {"bleu", "base_bleu", "drop"} <= set(frame.columns) and "accuracy" not in frame.columns
    assert (frame["drop"] == frame["base_bleu"] - frame["bleu"]).all()
    assert set(frame["group"]) == {"fc", "embedding", "attention", "layernorm"}
    assert (frame.loc[frame.eps == 50.0, "loss_change"] > 0).any()


def test_corrupted_translations_are_the_scored_ones(toy_task):
    """The recorded translations reproduce the BLEU of each row, the clean row is the plain
    evaluation, and the rows equal tasks.task_corrupted_scores' (same corruption)."""
    from paramstress import bootstrap as B
    from paramstress import tasks as TK

    task = toy_task
    model = task.build_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = T.corrupted_translations(task, model, eps_values=[0.05, 5.0])
    assert [r["eps"] for r in rows[1:]] == [0.05, 5.0] and math.isnan(rows[0]["eps"])
    metrics, hyps = task.evaluate_with_hypotheses(model)
    assert rows[0]["hypotheses"] == hyps and rows[0]["bleu"] == metrics["bleu"] == task.evaluate(model)["bleu"]
    assert len(hyps) == len(task.eval_references) == len(TOY_EN)
    table = TK.task_corrupted_scores(task, model, eps_values=[0.05, 5.0])
    assert [r["bleu"] for r in rows] == pytest.approx(table["bleu"].tolist(), abs=1e-12)
    for r in rows:
        assert B.bleu_from_statistics(B.bleu_statistics(r["hypotheses"], task.eval_references)) == \
            pytest.approx(r["bleu"], abs=1e-9)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="eps_values is empty"):
        T.corrupted_translations(task, model, eps_values=[])


def test_translation_significance_on_the_toy_task(toy_task):
    from paramstress import bootstrap as B

    task = toy_task.with_eval_samples(5)
    assert len(task.eval_references) == 5 and len(toy_task.eval_references) == len(TOY_EN)
    assert task.identity() == toy_task.identity()
    models = {("baseline", 0): toy_task.build_model(3), ("resistant", 0): toy_task.build_model(4)}
    frame = B.translation_significance(task, models, [0.05], samples=None, resamples=100, seed=1)
    assert frame["eps"].isna().tolist() == [True, False] and (frame["n"] == len(TOY_EN)).all()
    clean = T.corrupted_translations(toy_task, models[("resistant", 0)], eps_values=[0.05])[0]["bleu"]
    assert frame["system"].iloc[0] == pytest.approx(clean, abs=1e-9)  # the whole split, as evaluate scores it
    same = B.translation_significance(task, {("baseline", 0): models[("baseline", 0)],
                                             ("resistant", 0): models[("baseline", 0)]}, [0.05], resamples=100)
    assert (same["gain"] == 0).all() and (same["n"] == 5).all() and not same["holds"].any()
    with pytest.raises(ValueError, match=r"no model for \[\('baseline', 1\), \('resistant', 1\)\]"):
        B.translation_significance(task, models, [0.05], seeds=[0, 1], resamples=100)
    with pytest.raises(ValueError, match="samples must be"):
        B.translation_significance(task, models, [0.05], samples=1)
    with pytest.raises(ValueError, match="DeEnTranslationTask"):
        B.translation_significance(object(), models, [0.05])


def test_de_en_units_are_sacrebleu_statistics_and_the_bootstrap_is_the_translations(toy_task):
    """evaluate_units gives the sentences' BLEU statistics of the scored translations, and
    translation_significance (now task_significance over those units) equals
    paired_bootstrap_bleu on the decoded translations, the path it took before."""
    import numpy as np

    from paramstress import bootstrap as B
    from paramstress import tasks as TK

    assert TK.has_unit_statistics(toy_task) and toy_task.units == "sentences"
    model = toy_task.build_model(2)
    metrics, stats = toy_task.evaluate_units(model)
    _, hyps = toy_task.evaluate_with_hypotheses(model)
    assert np.array_equal(stats, B.bleu_statistics(hyps, toy_task.eval_references))
    assert toy_task.combine(stats) == pytest.approx(metrics["bleu"], abs=1e-9)
    models = {("baseline", 0): toy_task.build_model(3), ("resistant", 0): toy_task.build_model(4)}
    frame = B.translation_significance(toy_task, models, [0.05, 5.0], resamples=100, seed=1)
    assert (frame["units"] == "test sentences").all() and frame["higher_is_better"].all()
    decoded = {t: T.corrupted_translations(toy_task, models[(t, 0)], eps_values=[0.05, 5.0])
               for t in ("baseline", "resistant")}
    for k in range(3):
        ref = B.paired_bootstrap_bleu(decoded["baseline"][k]["hypotheses"], decoded["resistant"][k]["hypotheses"],
                                      toy_task.eval_references, resamples=100, seed=1)
        assert frame.drop(columns=["eps", "units"]).iloc[k].to_dict() == ref.as_dict()
