"""De-En: fairseq's Transformer translating German to English (Sun et al. 2021, Tables 1-2).

Sun et al. (§4, "Experimental Settings") corrupt the parameters of fairseq's
Transformer ``transformer_iwslt_de_en`` (Vaswani et al. 2017; Ott et al. 2019)
trained on IWSLT14 De-En, metric **BLEU** (higher is better). This module builds
that model through fairseq's own architecture registry and provides
:class:`DeEnTranslationTask`, the :class:`paramstress.tasks.Task` that plugs it into
the shared trainer (:func:`paramstress.tasks.train_task`), Algorithm 2's gradient
and the corruption sweep (Table 1 / Fig. 3), and the resistant objectives (Table 2).

Data (choices stated here and in the book)
------------------------------------------
* ``multi30k`` (profiles ci/local/gpu): Multi30k task 1 (Elliott et al. 2016),
  29,000 / 1,014 / 1,000 raw caption pairs (test = test2016), from
  ``paramstress.data.load("multi30k")``. Preprocessing (:func:`prepare_multi30k`):
  both sides are tokenised with sacremoses (Moses tokenizer, German resp. English
  rules, ``escape=False``, **case kept**: the references are cased and BLEU is the
  cased detokenised sacreBLEU), then a **joint** subword model is learnt on the
  tokenised training text of both languages (sentencepiece BPE, ``vocab_size``
  pieces, character coverage 1.0, identity normalisation so that decoding restores
  the tokenised text exactly). The piece vocabulary becomes one fairseq
  :class:`~fairseq.data.Dictionary` shared by source and target. The subword model
  and the encoded splits are cached (``translation-data-<hash>.pt`` in the
  checkpoint folder, written atomically, keyed by the data checksum and the
  preprocessing settings). Multi30k is not IWSLT14: its BLEU is not comparable
  with the paper's.
* ``iwslt14-de-en`` (profile ``paper``): the output folder of fairseq's
  ``examples/translation/prepare-iwslt14.sh`` (user-supplied; tokenised,
  lower-cased and BPE-encoded with subword-nmt, ``@@`` continuation marks), read as
  is (:func:`read_prepared_corpus`); references for BLEU are the test targets with
  the BPE removed and Moses-detokenised.

Model
-----
``TransformerModel.build_model(args, task)`` of fairseq with the registered
architecture ``transformer_iwslt_de_en`` (embed 512, FFN 1024, 4 heads, 6+6
layers), a minimal fairseq ``TranslationTask`` holding the dictionaries, dropout
0.3 and decoder input/output embeddings shared, as in fairseq's IWSLT14 example.
Smaller sizes for the CPU profiles override the architecture's defaults
(embedding/FFN dims, layers, heads); everything else stays the family's.

Loss, gradient, metric
----------------------
* training loss: fairseq's label-smoothed cross-entropy (``ε_ls = 0.1``, padding
  ignored, :func:`fairseq.criterions.label_smoothed_cross_entropy.label_smoothed_nll_loss`)
  divided by the number of target tokens (fairseq's ``sample_size``), so the shared
  objectives see a per-token batch mean;
* corruption gradient ``g`` (Algorithm 2): the plain NLL per target token;
* :meth:`DeEnTranslationTask.evaluate`: beam search with fairseq's
  :class:`~fairseq.sequence_generator.SequenceGenerator` (``beam`` 5 by default, 1 =
  greedy), subwords removed, Moses-detokenised, ``sacrebleu.corpus_bleu`` (13a,
  cased) against the raw references; ``loss`` is the teacher-forced NLL per
  reference token (``inf`` if any logit is not finite). A corrupted model may
  produce NaN scores: if the generator raises on a batch, that batch's hypotheses
  are empty strings (they score 0 in the corpus BLEU) and the evaluation goes on.
  Generation is bounded by ``max_len_a * src_len + max_len_b`` tokens (fairseq's
  options; a corrupted model that never emits end-of-sentence costs at most that).

fairseq on torch >= 2.6: this module never loads fairseq checkpoints (trained
weights go through :func:`paramstress.tasks.train_task`'s own files), so fairseq's
``torch.load`` paths (``checkpoint_utils``) are not used.
"""
from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import io
import json
import logging
import warnings
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from paramstress.engine.storage import atomic_save
from paramstress.engine.sweep import eval_mode
from paramstress.corruption.text.tasks import Task

__all__ = [
    "ARCH",
    "PREPROCESSING_VERSION",
    "TranslationCorpus",
    "moses_tokenize",
    "moses_detokenize",
    "train_sentencepiece",
    "prepare_multi30k",
    "read_prepared_corpus",
    "load_corpus",
    "make_dictionary",
    "build_transformer",
    "collate",
    "token_batches",
    "label_smoothed_loss",
    "nll_loss",
    "corpus_bleu",
    "translate",
    "corrupted_translations",
    "DeEnTranslationTask",
]

ARCH = "transformer_iwslt_de_en"
#: Bumped when the Multi30k preprocessing changes (part of the cache key and the identity).
PREPROCESSING_VERSION = 1
LANGS = ("de", "en")


def _quiet_fairseq() -> None:
    for name in ("fairseq", "fairseq.tasks.text_to_speech", "fairseq.tasks"):
        logging.getLogger(name).setLevel(logging.WARNING)


# fairseq passes a boolean padding mask with a float attention mask to torch's attention, which
# warns once per process; where the first warning lands depends on what ran before (training or
# a cached model), so notebooks would differ between runs: it is silenced.
warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask and attn_mask is deprecated",
                        category=UserWarning)


@functools.lru_cache(maxsize=1)
def _fairseq() -> Any:
    """Import fairseq once (it is slow and chatty); fail with the install command."""
    _quiet_fairseq()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import fairseq  # noqa: F401
        import fairseq.models.transformer  # noqa: F401  (registers transformer_iwslt_de_en)
    except ImportError as err:
        raise ImportError(
            f"paramstress.translation needs fairseq ({err}). Install it into the environment with "
            "`pip install --no-build-isolation --no-deps fairseq-fixed==0.12.3.1` after "
            "`pip install -r requirements.txt` (the Makefile's `env` target does both)") from err
    finally:
        # fairseq's modules call logging.basicConfig(level=DEBUG) on import: put the root logger
        # back, or every library (matplotlib's font search, ...) floods the notebooks with DEBUG lines
        root.setLevel(level)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
    _quiet_fairseq()
    return fairseq


# --------------------------------------------------------------------------- text
@functools.lru_cache(maxsize=4)
def _moses(lang: str, detok: bool = False) -> Any:
    from sacremoses import MosesDetokenizer, MosesTokenizer

    return MosesDetokenizer(lang=lang) if detok else MosesTokenizer(lang=lang)


def moses_tokenize(line: str, lang: str) -> str:
    """Moses tokenisation (sacremoses, ``escape=False``, case kept) as a space-joined string."""
    return _moses(lang).tokenize(line.strip(), escape=False, return_str=True)


def moses_detokenize(text: str, lang: str = "en") -> str:
    """Moses detokenisation of a space-separated token string."""
    tokens = text.split()
    return _moses(lang, True).detokenize(tokens) if tokens else ""


def train_sentencepiece(lines: Iterable[str], vocab_size: int, *, seed_sentencepiece_size: int = 1_000_000) -> bytes:
    """A joint sentencepiece BPE model learnt on ``lines`` (already Moses-tokenised), as bytes.

    Identity normalisation and full character coverage: ``decode(encode(t)) == t``
    for any text made of the training characters (the subword round trip)."""
    import sentencepiece as spm

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 16:
        raise ValueError(f"vocab_size must be an integer >= 16, got {vocab_size!r}")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)), model_writer=model, model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, normalization_rule_name="identity", num_threads=1, input_sentence_size=0,
        shuffle_input_sentence=False, seed_sentencepiece_size=seed_sentencepiece_size,
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2, hard_vocab_limit=False,
    )
    return model.getvalue()


def _sp_processor(model_proto: bytes) -> Any:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_proto=model_proto)


def _remove_subword_nmt(text: str) -> str:
    return (text + " ").replace("@@ ", "").rstrip()


class TranslationCorpus:
    """A parallel corpus as subword pieces, with the dictionary and the decoding back to text.

    ``pieces[split] = (source_piece_lines, target_piece_lines)`` (space-separated pieces),
    ``references[split]`` the raw target sentences BLEU is scored against,
    ``scheme`` ``"sentencepiece"`` (``model_proto`` the model) or ``"subword_nmt"``.
    """

    def __init__(self, *, dataset: str, source: str, data_checksum: str,
                 pieces: dict[str, tuple[list[str], list[str]]], references: dict[str, list[str]],
                 scheme: str, model_proto: bytes | None = None, description: dict[str, Any] | None = None) -> None:
        if scheme not in ("sentencepiece", "subword_nmt"):
            raise ValueError(f"scheme must be 'sentencepiece' or 'subword_nmt', got {scheme!r}")
        if scheme == "sentencepiece" and not model_proto:
            raise ValueError("a sentencepiece corpus needs its model_proto")
        for split, (src, tgt) in pieces.items():
            if len(src) != len(tgt) or len(src) != len(references[split]):
                raise ValueError(f"{dataset} {split}: {len(src)} source, {len(tgt)} target, "
                                 f"{len(references[split])} reference lines")
        self.dataset, self.source, self.data_checksum = dataset, source, data_checksum
        self.pieces, self.references, self.scheme = pieces, references, scheme
        self.model_proto = model_proto
        self.description = dict(description or {})
        self.dictionary = make_dictionary(line for split in ("train",) for side in pieces[split] for line in side)

    @functools.cached_property
    def _sp(self) -> Any:
        return _sp_processor(self.model_proto) if self.scheme == "sentencepiece" else None

    def decode(self, piece_line: str, lang: str = "en") -> str:
        """Subword pieces → detokenised text (subwords removed, Moses-detokenised with ``lang``'s rules)."""
        if self.scheme == "sentencepiece":
            tokenised = self._sp.decode_pieces(piece_line.split())
        else:
            tokenised = _remove_subword_nmt(piece_line)
        return moses_detokenize(tokenised, lang)

    @functools.cached_property
    def checksum(self) -> str:
        """MD5 of the pieces and the subword model: what the encoded tensors depend on."""
        h = hashlib.md5()
        h.update(self.scheme.encode())
        h.update(self.model_proto or b"")
        for split in sorted(self.pieces):
            for side in self.pieces[split]:
                h.update("\n".join(side).encode())
        return h.hexdigest()

    def sizes(self) -> dict[str, int]:
        return {f"{split}_pairs": len(src) for split, (src, _) in self.pieces.items()}

    def encode(self, split: str, limit: int | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The first ``limit`` (default all) pairs of the split as fairseq token ids, each
        sentence followed by ``</s>`` (as ``Dictionary.encode_line``, unknown pieces → ``<unk>``)."""
        d = self.dictionary
        index, unk, eos = d.indices, d.unk(), d.eos()
        return tuple([torch.tensor([index.get(p, unk) for p in line.split()] + [eos], dtype=torch.long)
                      for line in side[:limit]] for side in self.pieces[split])


def make_dictionary(piece_lines: Iterable[str]) -> Any:
    """One fairseq ``Dictionary`` (``<s> <pad> </s> <unk>`` first) of the pieces in
    ``piece_lines``, most frequent first, ties alphabetical (deterministic)."""
    from collections import Counter

    _fairseq()
    from fairseq.data import Dictionary

    counts = Counter(piece for line in piece_lines for piece in line.split())
    d = Dictionary()
    for piece, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        d.add_symbol(piece, n=count)
    return d


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    from paramstress.engine.training import default_checkpoint_dir

    return default_checkpoint_dir()


def prepare_multi30k(vocab_size: int = 8000, *, cache_dir: str | os.PathLike[str] | None = None,
                     data: Any = None) -> TranslationCorpus:
    """Multi30k De-En (``paramstress.data.load("multi30k")``) Moses-tokenised and encoded with
    a joint sentencepiece BPE model of ``vocab_size`` pieces learnt on the training split
    (see the module docstring). Cached in ``cache_dir`` (default: the checkpoint folder)."""
    if data is None:
        from paramstress.engine import data as D

        data = D.load("multi30k")
    settings = {"version": PREPROCESSING_VERSION, "data": data.checksum, "vocab_size": vocab_size,
                "tokenizer": "sacremoses", "case": "kept", "subwords": "sentencepiece-bpe-joint"}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir(cache_dir) / f"translation-data-{key}.pt"
    cached = torch.load(path, weights_only=True) if path.exists() else None
    if cached is None or cached.get("settings") != settings:
        tokenised = {split: tuple([moses_tokenize(line, lang) for line in side] for side, lang in zip(pair, LANGS))
                     for split, pair in data.splits.items()}
        proto = train_sentencepiece(tokenised["train"][0] + tokenised["train"][1], vocab_size)
        sp = _sp_processor(proto)
        pieces = {split: tuple([" ".join(sp.encode(line, out_type=str)) for line in side] for side in pair)
                  for split, pair in tokenised.items()}
        cached = {"settings": settings, "model_proto": proto, "pieces": pieces}
        atomic_save(cached, path)
    references = {split: [line.strip() for line in pair[1]] for split, pair in data.splits.items()}
    return TranslationCorpus(
        dataset="multi30k", source=getattr(data, "source", ""), data_checksum=data.checksum,
        pieces={s: tuple(map(list, p)) for s, p in cached["pieces"].items()}, references=references,
        scheme="sentencepiece", model_proto=cached["model_proto"],
        description={"preprocessing": "sacremoses tokenisation (case kept), joint sentencepiece BPE "
                                      f"({vocab_size} pieces) learnt on train", "cache": path.name},
    )


def read_prepared_corpus(folder: str | os.PathLike[str], *, dataset: str = "iwslt14-de-en", source: str = "",
                         data_checksum: str = "") -> TranslationCorpus:
    """A folder prepared the standard fairseq way (``prepare-iwslt14.sh``): tokenised,
    subword-nmt BPE'd ``{train,valid,test}.{de,en}``. References: the target with the
    BPE removed, Moses-detokenised."""
    folder = Path(folder)
    missing = [f"{s}.{lang}" for s in ("train", "valid", "test") for lang in LANGS if not (folder / f"{s}.{lang}").is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: expected the output folder of fairseq's "
                                "examples/translation/prepare-iwslt14.sh (iwslt14.tokenized.de-en/)")
    pieces, references = {}, {}
    for split in ("train", "valid", "test"):
        src, tgt = ((folder / f"{split}.{lang}").read_text(encoding="utf-8").splitlines() for lang in LANGS)
        if len(src) != len(tgt):
            raise ValueError(f"{folder}: {split}.de has {len(src)} lines, {split}.en {len(tgt)}")
        pieces[split] = ([s.strip() for s in src], [t.strip() for t in tgt])
        references[split] = [moses_detokenize(_remove_subword_nmt(t.strip()), "en") for t in tgt]
    if not data_checksum:
        h = hashlib.md5()
        for split in sorted(pieces):
            for side in pieces[split]:
                h.update("\n".join(side).encode())
        data_checksum = h.hexdigest()
    return TranslationCorpus(dataset=dataset, source=source or str(folder), data_checksum=data_checksum,
                             pieces=pieces, references=references, scheme="subword_nmt",
                             description={"preprocessing": "prepare-iwslt14.sh (Moses, lower-cased, "
                                                           "subword-nmt BPE), read as is"})


def load_corpus(dataset: str = "multi30k", *, vocab_size: int = 8000,
                cache_dir: str | os.PathLike[str] | None = None) -> TranslationCorpus:
    """``"multi30k"`` (:func:`prepare_multi30k`) or ``"iwslt14-de-en"`` (through
    ``paramstress.data``, read by :func:`read_prepared_corpus`)."""
    if dataset == "multi30k":
        return prepare_multi30k(vocab_size, cache_dir=cache_dir)
    if dataset == "iwslt14-de-en":
        from paramstress.engine import data as D

        data = D.load(dataset)
        return read_prepared_corpus(data.folder, dataset=dataset, source=data.source, data_checksum=data.checksum)
    raise ValueError(f"dataset must be 'multi30k' or 'iwslt14-de-en', got {dataset!r}")


# --------------------------------------------------------------------------- model
def build_transformer(dictionary: Any, *, seed: int = 0, arch: str = ARCH, **overrides: Any) -> nn.Module:
    """fairseq's ``TransformerModel`` with architecture ``arch`` (registered defaults), source
    and target sharing ``dictionary``; ``overrides`` set fairseq arguments (e.g.
    ``encoder_embed_dim=128``). Weights drawn from ``seed`` (global RNG left untouched)."""
    _fairseq()
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
    from fairseq.tasks.translation import TranslationConfig, TranslationTask

    if arch not in ARCH_CONFIG_REGISTRY or ARCH_MODEL_REGISTRY[arch].__name__ != "TransformerModel":
        raise ValueError(f"arch must be a registered fairseq Transformer architecture, got {arch!r}")
    args = argparse.Namespace(arch=arch, **overrides)
    ARCH_CONFIG_REGISTRY[arch](args)
    for side in ("encoder", "decoder"):
        dim, heads = getattr(args, f"{side}_embed_dim"), getattr(args, f"{side}_attention_heads")
        if dim % heads:
            raise ValueError(f"{side}_embed_dim {dim} is not divisible by {side}_attention_heads {heads}")
    fs_task = TranslationTask(TranslationConfig(), dictionary, dictionary)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = ARCH_MODEL_REGISTRY[arch].build_model(args, fs_task)
    return model


# --------------------------------------------------------------------------- batches
def collate(src: Sequence[torch.Tensor], tgt: Sequence[torch.Tensor], dictionary: Any,
            device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """fairseq's ``language_pair_dataset`` collation: source left-padded, target right-padded,
    ``prev_output_tokens`` = ``</s>`` + target without its final ``</s>``."""
    from fairseq.data import data_utils

    pad, eos = dictionary.pad(), dictionary.eos()
    src_tokens = data_utils.collate_tokens(list(src), pad, eos, left_pad=True)
    target = data_utils.collate_tokens(list(tgt), pad, eos, left_pad=False)
    prev = data_utils.collate_tokens(list(tgt), pad, eos, left_pad=False, move_eos_to_beginning=True)
    net_input = {"src_tokens": src_tokens.to(device),
                 "src_lengths": torch.tensor([len(s) for s in src], dtype=torch.long, device=device),
                 "prev_output_tokens": prev.to(device)}
    return net_input, target.to(device)


def token_batches(src: Sequence[torch.Tensor], tgt: Sequence[torch.Tensor], max_tokens: int, *,
                  max_positions: int = 1024) -> list[list[int]]:
    """Indices grouped like fairseq's ``batch_by_size``: pairs sorted by (target, source)
    length, then cut so that ``batch size × longest side ≤ max_tokens``. Pairs longer than
    ``max_positions`` are dropped (fairseq's ``skip_invalid_size_inputs_valid_test``)."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    order = sorted((i for i in range(len(src)) if max(len(src[i]), len(tgt[i])) <= max_positions),
                   key=lambda i: (len(tgt[i]), len(src[i]), i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        size = max(len(src[i]), len(tgt[i]))
        if current and max(longest, size) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, size)
    if current:
        batches.append(current)
    return batches


# --------------------------------------------------------------------------- losses
def _lprobs(model: nn.Module, net_input: dict[str, torch.Tensor]) -> torch.Tensor:
    net_output = model(**net_input)
    return model.get_normalized_probs(net_output, log_probs=True).float()


def label_smoothed_loss(lprobs: torch.Tensor, target: torch.Tensor, epsilon: float, pad: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """fairseq's label-smoothed cross-entropy (``label_smoothed_nll_loss``, summed, padding
    ignored) divided by the number of non-pad target tokens: ``(loss, nll, tokens)`` per token.
    Per token: ``(1 - ε - ε/(V-1))·(-log p_y) + ε/(V-1)·Σ_v (-log p_v)``."""
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss

    tokens = int(target.ne(pad).sum())
    loss, nll = label_smoothed_nll_loss(lprobs.reshape(-1, lprobs.shape[-1]), target.reshape(-1), epsilon,
                                        ignore_index=pad, reduce=True)
    denom = max(tokens, 1)
    return loss / denom, nll / denom, tokens


def nll_loss(lprobs: torch.Tensor, target: torch.Tensor, pad: int) -> torch.Tensor:
    """Mean negative log-likelihood per non-pad target token."""
    return torch.nn.functional.nll_loss(lprobs.reshape(-1, lprobs.shape[-1]), target.reshape(-1),
                                        ignore_index=pad, reduction="mean")


# --------------------------------------------------------------------------- BLEU
def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """sacreBLEU's corpus BLEU (default 13a tokenisation, cased), as ``sacrebleu ref -i hyp -b``."""
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def translate(model: nn.Module, src: Sequence[torch.Tensor], dictionary: Any, decode: Callable[[str], str], *,
              beam: int = 5, max_len_a: float = 1.2, max_len_b: int = 10, batch_size: int = 64,
              device: torch.device | str = "cpu") -> tuple[list[str], int]:
    """Beam search (fairseq ``SequenceGenerator``) over ``src`` token tensors, in the given
    order; ``decode`` turns a hypothesis' piece string into text. Returns the hypotheses and
    the number of batches whose generation raised (their hypotheses are ``""``)."""
    _fairseq()
    from fairseq.sequence_generator import SequenceGenerator

    generator = SequenceGenerator([model], dictionary, beam_size=beam, max_len_a=max_len_a, max_len_b=max_len_b)
    order = sorted(range(len(src)), key=lambda i: len(src[i]))
    hyps = [""] * len(src)
    failed = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        from fairseq.data import data_utils

        tokens = data_utils.collate_tokens([src[i] for i in idx], dictionary.pad(), dictionary.eos(), left_pad=True)
        sample = {"net_input": {"src_tokens": tokens.to(device),
                                "src_lengths": torch.tensor([len(src[i]) for i in idx], device=device)}}
        try:
            out = generator.generate([model], sample)
        except Exception:  # NaN/inf scores of a corrupted model: score the batch as empty output
            failed += 1
            continue
        for i, hypos in zip(idx, out):
            best = hypos[0]["tokens"] if hypos else torch.empty(0, dtype=torch.long)
            hyps[i] = decode(dictionary.string(best.cpu()))
    return hyps, failed


def corrupted_translations(task: "DeEnTranslationTask", model: nn.Module, *, eps_values: Sequence[float],
                           p: float = 2.0, grad_vec: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Table 2's De-En scores *with the translations behind them*: the clean model, then the
    gradient-based corruption (``L_p``, ``n = k``, every trainable parameter) at each ε,
    through :func:`paramstress.tasks.task_corrupted_outputs` (the corruption of
    :func:`paramstress.tasks.task_corrupted_scores`: the same sweep engine, ``g`` from
    :func:`paramstress.tasks.task_gradient` unless given; weights restored bit-identically)
    with :meth:`DeEnTranslationTask.evaluate_with_hypotheses`. One record per row, clean
    first: ``eps`` (NaN = clean), ``bleu``, ``loss`` and ``hypotheses`` (one string per
    evaluated pair of ``task``'s split)."""
    from paramstress.corruption.text.tasks import task_corrupted_outputs

    if not isinstance(task, DeEnTranslationTask):
        raise ValueError(f"task must be a DeEnTranslationTask (it returns its translations), got {type(task).__name__}")
    out = task_corrupted_outputs(task, model, eps_values=eps_values, p=p, grad_vec=grad_vec,
                                 evaluate=task.evaluate_with_hypotheses)
    for record in out:
        record["hypotheses"] = record.pop("output")
        # the recorded translations are the scored ones
        if not math.isclose(corpus_bleu(record["hypotheses"], task.eval_references), record["bleu"], abs_tol=1e-9):
            raise RuntimeError("the recorded translations do not reproduce the sweep's BLEU")
    return out


# --------------------------------------------------------------------------- task
class DeEnTranslationTask(Task):
    """Sun et al.'s De-En column as a :class:`paramstress.tasks.Task` (see the module docstring).

    Plain parameters (a notebook passes them from YAML):

    * data: ``dataset`` (``"multi30k"`` or ``"iwslt14-de-en"``), ``vocab_size`` (joint
      sentencepiece pieces, Multi30k only), ``cache_dir`` — or a ready ``corpus``;
    * model (``transformer_iwslt_de_en`` overrides): ``embed_dim``, ``ffn_dim``,
      ``layers`` (encoder = decoder), ``heads``, ``dropout`` (0.3), ``attention_dropout``,
      ``share_embeddings`` (decoder input/output, fairseq's
      ``--share-decoder-input-output-embed``); ``None`` keeps the architecture's value;
    * training: ``max_tokens`` per batch (token budget), ``train_samples`` (the first that
      many training pairs; ``None`` = all; the subword model is always learnt on all of
      train), ``label_smoothing`` (0.1);
    * evaluation: ``eval_split`` (``"test"`` for Table 1), ``eval_samples`` (the first that
      many pairs; ``None`` = all), ``beam`` (5; 1 = greedy), ``max_len_a``/``max_len_b``,
      ``eval_batch_size`` sentences per generation batch;
    * Algorithm 2's data: ``gradient_tokens`` — training batches in their fixed length order
      until at least this many target tokens are covered (``None``: the whole training split).
    """

    key = "de-en"
    label = "De-En"
    metric = "bleu"
    metric_label = "BLEU"
    higher_is_better = True
    units = "sentences"

    def __init__(
        self,
        *,
        dataset: str = "multi30k",
        corpus: TranslationCorpus | None = None,
        vocab_size: int = 8000,
        cache_dir: str | None = None,
        embed_dim: int | None = None,
        ffn_dim: int | None = None,
        layers: int | None = None,
        heads: int | None = None,
        dropout: float = 0.3,
        attention_dropout: float = 0.0,
        share_embeddings: bool = True,
        max_tokens: int = 4096,
        train_samples: int | None = None,
        label_smoothing: float = 0.1,
        eval_split: str = "test",
        eval_samples: int | None = None,
        beam: int = 5,
        max_len_a: float = 1.2,
        max_len_b: int = 10,
        eval_batch_size: int = 128,
        gradient_tokens: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        problems = []
        for name, value in (("embed_dim", embed_dim), ("ffn_dim", ffn_dim), ("layers", layers), ("heads", heads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer or None, got {value!r}")
        for name, value in (("max_tokens", max_tokens), ("beam", beam), ("eval_batch_size", eval_batch_size),
                            ("max_len_b", max_len_b)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("eval_samples", eval_samples), ("gradient_tokens", gradient_tokens),
                            ("train_samples", train_samples)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"{name} must be a positive integer or None, got {value!r}")
        if not 0.0 <= float(label_smoothing) < 1.0:
            problems.append(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        for name, value in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= float(value) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {value!r}")
        if not float(max_len_a) >= 0:
            problems.append(f"max_len_a must be >= 0, got {max_len_a!r}")
        if eval_split not in ("valid", "test"):
            problems.append(f"eval_split must be 'valid' or 'test', got {eval_split!r}")
        if corpus is None and dataset not in ("multi30k", "iwslt14-de-en"):
            problems.append(f"dataset must be 'multi30k' or 'iwslt14-de-en', got {dataset!r}")
        if problems:
            raise ValueError("DeEnTranslationTask: " + "; ".join(problems))
        self.model_params: dict[str, Any] = {"dropout": float(dropout), "attention_dropout": float(attention_dropout),
                                             "share_decoder_input_output_embed": bool(share_embeddings)}
        for side in ("encoder", "decoder"):
            for name, value in ((f"{side}_embed_dim", embed_dim), (f"{side}_ffn_embed_dim", ffn_dim),
                                (f"{side}_layers", layers), (f"{side}_attention_heads", heads)):
                if value is not None:
                    self.model_params[name] = value
        self.device = torch.device(device)
        _fairseq()
        self.corpus = corpus if corpus is not None else load_corpus(dataset, vocab_size=vocab_size, cache_dir=cache_dir)
        with torch.device("meta"):  # validates the hyper-parameters cheaply
            build_transformer(self.corpus.dictionary, **self.model_params)
        self.dictionary = self.corpus.dictionary
        self.pad = self.dictionary.pad()
        self.max_tokens, self.label_smoothing = max_tokens, float(label_smoothing)
        self.eval_split, self.eval_samples, self.beam = eval_split, eval_samples, beam
        self.max_len_a, self.max_len_b, self.eval_batch_size = float(max_len_a), max_len_b, eval_batch_size
        self.gradient_tokens = gradient_tokens

        src, tgt = self.corpus.encode("train", train_samples)
        self.train_samples = len(src)
        self._train = [collate([src[i] for i in b], [tgt[i] for i in b], self.dictionary, self.device)
                       for b in token_batches(src, tgt, max_tokens)]
        if not self._train:
            raise ValueError("DeEnTranslationTask: no training batch; the training split is empty")
        esrc, etgt = self.corpus.encode(eval_split)
        n = len(esrc) if eval_samples is None else min(eval_samples, len(esrc))
        self.eval_src, self.eval_tgt = esrc[:n], etgt[:n]
        self.eval_references = self.corpus.references[eval_split][:n]
        self._eval = [collate([esrc[i] for i in b], [etgt[i] for i in b], self.dictionary, self.device)
                      for b in token_batches(self.eval_src, self.eval_tgt, max_tokens, max_positions=10**9)]

    def with_eval_samples(self, eval_samples: int | None) -> "DeEnTranslationTask":
        """The same task (data, models, identity) evaluating the first ``eval_samples`` pairs
        of its evaluation split instead (``None``: all of them); a shallow copy, nothing rebuilt."""
        if eval_samples is not None and (isinstance(eval_samples, bool) or not isinstance(eval_samples, int)
                                         or eval_samples < 1):
            raise ValueError(f"eval_samples must be a positive integer or None (the whole split), got {eval_samples!r}")
        other = copy.copy(self)
        esrc, etgt = self.corpus.encode(self.eval_split)
        n = len(esrc) if eval_samples is None else min(eval_samples, len(esrc))
        other.eval_samples = eval_samples
        other.eval_src, other.eval_tgt = esrc[:n], etgt[:n]
        other.eval_references = self.corpus.references[self.eval_split][:n]
        other._eval = [collate([esrc[i] for i in b], [etgt[i] for i in b], self.dictionary, self.device)
                       for b in token_batches(other.eval_src, other.eval_tgt, self.max_tokens, max_positions=10**9)]
        return other

    # ----------------------------------------------------------------- model and data
    def build_model(self, seed: int) -> nn.Module:
        """fairseq's ``TransformerModel`` (``transformer_iwslt_de_en`` + overrides) from ``seed``."""
        return build_transformer(self.dictionary, seed=seed, **self.model_params).to(self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        """One epoch: the fixed token-budget batches in an order drawn from ``generator``."""
        order = torch.randperm(len(self._train), generator=generator).tolist()
        return (self._train[i] for i in order)

    def loss(self, model: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Label-smoothed cross-entropy per target token (fairseq's criterion, ``ε_ls``)."""
        return label_smoothed_loss(_lprobs(model, x), y, self.label_smoothing, self.pad)[0]

    def gradient_batches(self) -> Iterable[tuple[dict[str, torch.Tensor], torch.Tensor, int]]:
        out, covered = [], 0
        for x, y in self._train:
            if self.gradient_tokens is not None and covered >= self.gradient_tokens:
                break
            count = int(y.ne(self.pad).sum())
            out.append((x, y, count))
            covered += count
        return out

    def gradient_loss(self, model: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Plain NLL per target token (no label smoothing)."""
        return nll_loss(_lprobs(model, x), y, self.pad)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{"bleu", "loss"}`` on the first ``eval_samples`` pairs of the evaluation split:
        corpus BLEU of the beam-search translations (a batch whose generation raises
        counts as empty translations) and the teacher-forced NLL per reference token
        (``inf`` when any logit is not finite)."""
        return self.evaluate_with_hypotheses(model)[0]

    def evaluate_with_hypotheses(self, model: nn.Module) -> tuple[dict[str, float], list[str]]:
        """:meth:`evaluate` and the translations it scored, one detokenised string per
        evaluated pair in the split's order (what a paired bootstrap over sentences needs,
        :func:`paramstress.bootstrap.paired_bootstrap_bleu`)."""
        # no_grad, not inference_mode: fairseq caches tensors made here (the decoder's future mask)
        # and reuses them in later gradient passes, where inference tensors are refused
        with eval_mode(model), torch.no_grad():
            total, tokens, finite = torch.zeros((), dtype=torch.float64, device=self.device), 0, True
            for x, y in self._eval:
                lprobs = _lprobs(model, x)
                mask = y.ne(self.pad)
                picked = lprobs.gather(-1, y.unsqueeze(-1)).squeeze(-1)[mask]
                if not bool(torch.isfinite(lprobs[mask]).all()):
                    finite = False
                    break
                total -= picked.to(torch.float64).sum()
                tokens += int(mask.sum())
            loss = float(total) / max(tokens, 1) if finite else math.inf
            if not math.isfinite(loss):
                loss = math.inf
            hyps, _ = translate(model, self.eval_src, self.dictionary, self.corpus.decode, beam=self.beam,
                                max_len_a=self.max_len_a, max_len_b=self.max_len_b,
                                batch_size=self.eval_batch_size, device=self.device)
        return {"bleu": corpus_bleu(hyps, self.eval_references), "loss": loss}, hyps

    def evaluate_units(self, model: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """:meth:`evaluate` and sacreBLEU's sufficient statistics of every evaluated sentence
        (:func:`paramstress.bootstrap.bleu_statistics` of the translations it scored: an
        ``(n, 10)`` array, columns :data:`paramstress.bootstrap.STAT_COLUMNS`)."""
        from paramstress.corruption.text.bootstrap import bleu_statistics

        metrics, hyps = self.evaluate_with_hypotheses(model)
        return metrics, bleu_statistics(hyps, self.eval_references)

    def combine(self, unit_stats: np.ndarray) -> float:
        """Corpus BLEU of per-sentence statistics (:func:`paramstress.bootstrap.bleu_from_statistics`)."""
        from paramstress.corruption.text.bootstrap import bleu_from_statistics

        return bleu_from_statistics(unit_stats)

    def reference_scores(self) -> dict[str, float]:
        """BLEU of a trivial baseline on the evaluated pairs: the German source copied as the
        "translation" (names, numbers and cognates match; a trained model must be far above)."""
        n = len(self.eval_src)
        copied = [self.corpus.decode(line, "de") for line in self.corpus.pieces[self.eval_split][0][:n]]
        return {"copy source": corpus_bleu(copied, self.eval_references)}

    # ----------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        c = self.corpus
        return {"task": self.key, "dataset": c.dataset, "data_checksum": c.data_checksum,
                "corpus_checksum": c.checksum, "preprocessing_version": PREPROCESSING_VERSION,
                **c.sizes(), "vocab": len(self.dictionary), "model": f"fairseq TransformerModel/{ARCH}",
                **self.model_params, "train_samples": self.train_samples, "max_tokens": self.max_tokens,
                "label_smoothing": self.label_smoothing}

    def provenance(self) -> dict[str, Any]:
        c = self.corpus
        return {"dataset": c.dataset, "source": c.source, "checksum": c.data_checksum,
                "corpus_checksum": c.checksum, **c.sizes(), "vocab": len(self.dictionary),
                "preprocessing": c.description.get("preprocessing", ""), "eval_split": self.eval_split,
                "eval_samples": len(self.eval_src), "beam": self.beam, "architecture": ARCH}
