"""PTB-LM: the LSTM language model of Sun et al. (2021), Table 1 and Table 2, column "PTB-LM".

Sun et al. evaluate parameter corruption on a word-level LSTM language model
"following Merity, Keskar, and Socher (2017, 2018)" on the Penn Treebank, metric
**log perplexity** (Log PPL, lower is better; their uncorrupted model: 4.25, i.e.
perplexity about 70). This module provides the data (corpus, vocabulary,
``batchify``), the model (:class:`LSTMLanguageModel`), a unigram baseline
(:func:`unigram_log_ppl`) and :class:`PTBLanguageModelTask`, the
:class:`paramstress.tasks.Task` that plugs the model into the shared trainer, the
corruption sweep (Algorithm 2, Eqs. 5/10) and the resistant-training objectives
(Eqs. 13/16, SAM, AWP).

Data (choices stated here and in the book)
------------------------------------------
* ``ptb-treebank`` (profiles ci/local/gpu): NLTK's 10 % sample of the WSJ Penn
  Treebank (199 files ``wsj_0001``–``wsj_0199``, 3,914 sentences, 100,676 tokens
  with traces), read with NLTK from ``corpora/treebank.zip`` and preprocessed the
  way Mikolov's PTB language-modelling text is (:func:`mikolov_tokens`):
  empty elements (tag ``-NONE-``: traces such as ``*T*-1``, ``0``, ``*U*``) and
  punctuation tokens (tags ``, . : `` '' -LRB- -RRB-``) are dropped, words are
  lower-cased, numbers (``61``, ``3.2``, ``1,000``, ``1\\/2``, ``2:30``) and the
  per-cent sign become ``N`` (Mikolov's text reads "rose N N to $ N million" for
  "rose 5 % to $ 10 million"), ``$``/``#``/``&`` and clitics (``'s``, ``n't``) are
  kept, and ``<eos>`` ends every sentence.
  Split by file (fixed): **train wsj_0001–0159, valid wsj_0160–0179, test
  wsj_0180–0199** (:data:`TREEBANK_SPLITS`). The vocabulary is the training
  split's own: words seen at least ``min_count`` (default 2) times in train,
  most frequent first, capped at ``max_vocab`` (default 10,000) entries including
  ``<unk>`` and ``<eos>``; every other word (in any split) becomes ``<unk>``. With
  ``min_count=1`` no training token would be ``<unk>`` and the model could not
  learn the probability of unseen words, which then dominate the test loss;
  Mikolov's 10k cap on a 0.9M-token corpus has the same effect.
  The sample is about 1/10 of Mikolov's training text, so perplexities are higher
  than the paper's (see the book for the measured values) and not comparable.
* ``paper`` profile: Mikolov's ``ptb.train.txt``/``ptb.valid.txt``/``ptb.test.txt``
  (from ``simple-examples.tgz``), already preprocessed; :func:`mikolov_corpus`
  builds the same :class:`LMCorpus` from them (one line = one sentence + ``<eos>``;
  the text already holds ``<unk>`` and its vocabulary of exactly 10,000 words).

Model (:class:`LSTMLanguageModel`, AWD-LSTM family, Merity et al. 2018)
------------------------------------------------------------------------
Embedding → ``num_layers`` single-layer LSTMs (the last one's hidden size equals
the embedding size so that the decoder is *weight-tied* to the embedding, Press &
Wolf 2017; Inan et al. 2017) → linear decoder. Regularisation as in AWD-LSTM:
embedding dropout ``dropoute`` (whole words of the embedding matrix, §4.3),
variational ("locked") dropout with one mask per sequence on the embedded input
``dropouti``, between LSTM layers ``dropouth`` and on the last LSTM output
``dropout`` (§4.2). **Not implemented** (stated wherever results are shown): the
weight-dropped LSTM (DropConnect on the hidden-to-hidden matrices, §2),
NT-ASGD (§3), activation regularisation AR/TAR (§4.6) and variable BPTT lengths
(§4.1; instead each epoch starts its windows at a random offset). Training uses
the shared loop of :mod:`paramstress.tasks` (SGD or Adam, gradient clipping).

Hidden state (the Task interface)
---------------------------------
A training batch ``(x, y)`` is one BPTT window of ``bptt`` tokens in
``batch_size`` parallel streams (classic ``batchify``), ``y`` is ``x`` shifted by
one token. Instead of carrying the LSTM state from window to window inside an
epoch (which would make ``loss`` depend on the call history, and SAM/AWP/Eq. 13
call it twice per step), every window carries its own *context*: ``x`` holds the
``context`` tokens that precede the window followed by the window's ``bptt``
tokens, so ``x.shape[0] = context + bptt`` and ``y.shape[0] = bptt`` (the context
length is ``x.shape[0] - y.shape[0]``; shorter at the start of a stream). The
loss runs the context without gradient (truncated back-propagation, as the
detached carried state of the classic loop), then the window from that state,
at the current weights. The loss of a batch is therefore a pure function of
``(weights, x, y)``: calling it twice gives the same value, and the windows of an
epoch can be visited in a random order. With ``context=0`` every window starts
from the zero state. Evaluation (:meth:`PTBLanguageModelTask.evaluate`) is the
classic one: the whole evaluation split in ``eval_batch_size`` streams, hidden
state carried across all windows.

Metric: ``log_ppl`` = mean negative log-likelihood per predicted token, in nats,
over the evaluation split (``exp(log_ppl)`` is the perplexity). A token whose
logits are not all finite (a corruption can overflow the network) counts with
NLL = +inf, so such a model reports ``log_ppl = inf`` (the worst honest value).

Per-sentence statistics (:meth:`PTBLanguageModelTask.evaluate_units`, for the paired
bootstrap of :mod:`paramstress.bootstrap`): the evaluation stream keeps its sentence
boundaries (every sentence ends with ``<eos>``), so the same evaluation pass also returns,
per sentence, the summed NLL of its predicted tokens and their number
(:func:`sentence_nll`); ``ΣNLL/Σtokens`` is ``log_ppl``. The units are sentences, not
blocks of the stream; as in the evaluation, a sentence is scored with the hidden state the
sentences before it left.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paramstress.engine.sweep import eval_mode
from paramstress.corruption.text.tasks import Task

__all__ = [
    "UNK",
    "EOS",
    "TREEBANK_SPLITS",
    "DROP_TAGS",
    "LMCorpus",
    "Vocabulary",
    "normalize_word",
    "mikolov_tokens",
    "build_vocabulary",
    "treebank_sentences",
    "treebank_corpus",
    "mikolov_corpus",
    "make_corpus",
    "load_corpus",
    "batchify",
    "windows",
    "LockedDropout",
    "LSTMLanguageModel",
    "lm_loss",
    "evaluate_lm",
    "sentence_nll",
    "unigram_log_ppl",
    "PTBLanguageModelTask",
]

UNK = "<unk>"
EOS = "<eos>"
#: The fixed file split of NLTK's treebank sample (inclusive ranges of wsj_NNNN).
TREEBANK_SPLITS: dict[str, tuple[int, int]] = {"train": (1, 159), "valid": (160, 179), "test": (180, 199)}
#: POS tags whose tokens Mikolov's PTB text does not contain: empty elements and punctuation.
DROP_TAGS: frozenset[str] = frozenset({"-NONE-", ",", ".", ":", "``", "''", "-LRB-", "-RRB-"})
#: Bumped when the preprocessing changes (part of every corpus checksum).
PREPROCESSING_VERSION = 1

_NUMBER = re.compile(r"^[+-]?(?=.*\d)[\d.,:]*(\\?/[\d.,]+)?$")


# ============================================================================= corpus
def normalize_word(word: str) -> str:
    """One treebank word as Mikolov's PTB text writes it: numbers and ``%`` → ``N``,
    everything else lower-cased (``Nov.`` → ``nov.``, ``N.V.`` → ``n.v.``)."""
    if word == "%" or _NUMBER.match(word):
        return "N"
    return word.lower()


def mikolov_tokens(tagged_sentence: Iterable[tuple[str, str]]) -> list[str]:
    """The words of one ``(word, tag)`` sentence kept by the Mikolov preprocessing
    (tags in :data:`DROP_TAGS` dropped, :func:`normalize_word` applied), without ``<eos>``."""
    return [normalize_word(word) for word, tag in tagged_sentence if tag not in DROP_TAGS]


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words ↔ ids. ``words[0] = <unk>``, ``words[1] = <eos>``, then by decreasing training count."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.words[:2] != (UNK, EOS):
            raise ValueError(f"a vocabulary starts with {UNK!r}, {EOS!r}; got {self.words[:2]}")
        if len(set(self.words)) != len(self.words):
            raise ValueError("vocabulary words must be unique")

    @functools.cached_property
    def index(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Ids of ``tokens`` (int64); words outside the vocabulary map to ``<unk>`` (id 0)."""
        index = self.index
        return torch.tensor([index.get(t, 0) for t in tokens], dtype=torch.int64)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[int(i)] for i in ids]


def build_vocabulary(train_tokens: Sequence[str], *, min_count: int = 2, max_size: int | None = 10_000) -> Vocabulary:
    """The training split's vocabulary: ``<unk>``, ``<eos>``, then the words seen at
    least ``min_count`` times, most frequent first (ties alphabetical), at most
    ``max_size`` entries in all."""
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 3):
        raise ValueError(f"max_size must be an integer >= 3 (it includes {UNK} and {EOS}) or None, got {max_size!r}")
    counts = Counter(t for t in train_tokens if t not in (UNK, EOS))
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
        ranked = ranked[: max_size - 2]
    return Vocabulary((UNK, EOS, *ranked))


@dataclasses.dataclass
class LMCorpus:
    """A tokenised language-modelling corpus: ``train``/``valid``/``test`` id streams
    (1-D int64, sentences concatenated, each ended by ``<eos>``), the vocabulary,
    and where it came from (``dataset``, ``source``, ``data_checksum`` of the files).
    ``checksum`` (SHA-256 of the vocabulary and the three streams) identifies the
    preprocessed corpus itself."""

    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: Vocabulary
    dataset: str
    source: str
    data_checksum: str
    description: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("train", "valid", "test"):
            ids = getattr(self, name)
            if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.ndim != 1:
                raise ValueError(f"corpus split {name!r} must be a 1-D int64 tensor")
            if len(ids) < 2:
                raise ValueError(f"corpus split {name!r} has {len(ids)} tokens; need at least 2")
            if int(ids.min()) < 0 or int(ids.max()) >= len(self.vocab):
                raise ValueError(f"corpus split {name!r} has ids outside the vocabulary of {len(self.vocab)}")

    def split(self, name: str) -> torch.Tensor:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}; choose train, valid or test")
        return getattr(self, name)

    @functools.cached_property
    def checksum(self) -> str:
        h = hashlib.sha256()
        h.update(f"v{PREPROCESSING_VERSION}\n".encode())
        h.update("\n".join(self.vocab.words).encode())
        for name in ("train", "valid", "test"):
            h.update(f"\n{name}:".encode())
            h.update(self.split(name).numpy().astype("<i8").tobytes())
        return h.hexdigest()[:16]

    def sizes(self) -> dict[str, int]:
        return {"train_tokens": len(self.train), "valid_tokens": len(self.valid),
                "test_tokens": len(self.test), "vocab_size": len(self.vocab)}

    def unk_rate(self, name: str) -> float:
        """Fraction of ``<unk>`` tokens in a split."""
        ids = self.split(name)
        return float((ids == 0).sum()) / len(ids)


def make_corpus(
    sentences: dict[str, Sequence[Sequence[str]]],
    *,
    min_count: int = 2,
    max_vocab: int | None = 10_000,
    dataset: str = "custom",
    source: str = "in memory",
    data_checksum: str = "",
    description: dict[str, Any] | None = None,
) -> LMCorpus:
    """An :class:`LMCorpus` from already preprocessed sentences (lists of words, no
    ``<eos>``) per split ``train``/``valid``/``test``; the vocabulary is built on train."""
    missing = [s for s in ("train", "valid", "test") if s not in sentences]
    if missing:
        raise ValueError(f"sentences lacks splits {missing}")
    streams = {name: [tok for sent in sentences[name] for tok in (*sent, EOS)] for name in ("train", "valid", "test")}
    vocab = build_vocabulary(streams["train"], min_count=min_count, max_size=max_vocab)
    desc = {"sentences": {name: len(sentences[name]) for name in streams}, "min_count": min_count,
            "max_vocab": max_vocab, **(description or {})}
    return LMCorpus(
        train=vocab.encode(streams["train"]), valid=vocab.encode(streams["valid"]), test=vocab.encode(streams["test"]),
        vocab=vocab, dataset=dataset, source=source, data_checksum=data_checksum, description=desc,
    )


def _file_number(fileid: str) -> int:
    match = re.fullmatch(r"wsj_(\d{4})\.mrg", fileid)
    if match is None:
        raise ValueError(f"unexpected treebank file {fileid!r} (expected wsj_NNNN.mrg)")
    return int(match.group(1))


@functools.lru_cache(maxsize=4)
def _read_treebank(zip_path: str, mtime_ns: int, size: int) -> dict[int, tuple[tuple[tuple[str, str], ...], ...]]:
    """All tagged sentences of the sample, by file number (cached per zip file state)."""
    import nltk
    from nltk.corpus.reader import BracketParseCorpusReader

    root = str(Path(zip_path).parent.parent)  # .../nltk_data
    added = root not in nltk.data.path
    if added:  # NLTK >= 3.10 reads only below the roots in nltk.data.path
        nltk.data.path.insert(0, root)
    try:
        pointer = nltk.data.find("corpora/treebank.zip/treebank/combined/", paths=[root])
        reader = BracketParseCorpusReader(pointer, r"wsj_\d{4}\.mrg")
        return {_file_number(f): tuple(tuple(s) for s in reader.tagged_sents(f)) for f in reader.fileids()}
    finally:
        if added:
            with contextlib.suppress(ValueError):
                nltk.data.path.remove(root)


def _tagged_files(zip_path: Path) -> dict[int, Any]:
    """Tagged sentences by file number, through NLTK; kept as JSON in the data root's
    ``cache/`` keyed by the zip's MD5 (NLTK's bracket parser takes seconds)."""
    from paramstress.engine.data import data_root, md5_file

    cache = data_root() / "cache" / f"ptb-treebank-tagged-{md5_file(zip_path)}.json"
    if cache.is_file():
        with contextlib.suppress(ValueError, OSError):
            return {int(k): v for k, v in json.loads(cache.read_text(encoding="utf-8")).items()}
    stat = zip_path.stat()
    files = _read_treebank(str(zip_path.resolve()), stat.st_mtime_ns, stat.st_size)
    with contextlib.suppress(OSError):  # a read-only data root only costs the cache
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.", dir=cache.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({str(k): v for k, v in files.items()}, fh)
            os.replace(tmp, cache)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    return files


def treebank_sentences(nltk_root: str | Path) -> dict[str, list[list[str]]]:
    """The NLTK treebank sample (``<nltk_root>/corpora/treebank.zip``) preprocessed by
    :func:`mikolov_tokens`, split by file as :data:`TREEBANK_SPLITS` says."""
    zip_path = Path(nltk_root) / "corpora" / "treebank.zip"
    if not zip_path.is_file():
        raise FileNotFoundError(f"{zip_path} not found: nltk_root must be an nltk_data folder holding corpora/treebank.zip")
    files = _tagged_files(zip_path)
    expected = set(range(1, 200))
    if set(files) != expected:
        raise ValueError(f"{zip_path}: expected files wsj_0001..wsj_0199, found {len(files)} "
                         "(replace it with NLTK's treebank package)")
    out: dict[str, list[list[str]]] = {}
    for name, (lo, hi) in TREEBANK_SPLITS.items():
        out[name] = [mikolov_tokens(s) for n in range(lo, hi + 1) for s in files[n]]
    return out


def treebank_corpus(nltk_root: str | Path, *, min_count: int = 2, max_vocab: int | None = 10_000,
                    source: str = "", data_checksum: str = "") -> LMCorpus:
    """:class:`LMCorpus` of the NLTK treebank sample (see the module docstring)."""
    return make_corpus(
        treebank_sentences(nltk_root), min_count=min_count, max_vocab=max_vocab, dataset="ptb-treebank",
        source=source or str(nltk_root), data_checksum=data_checksum,
        description={"splits": {k: f"wsj_{a:04d}-wsj_{b:04d}" for k, (a, b) in TREEBANK_SPLITS.items()},
                     "preprocessing": "Mikolov-style: -NONE- and punctuation dropped, lower-case, numbers -> N"},
    )


def mikolov_corpus(train: str | Path, valid: str | Path, test: str | Path, *, source: str = "",
                   data_checksum: str = "", max_vocab: int | None = 10_000) -> LMCorpus:
    """:class:`LMCorpus` from Mikolov's ``ptb.train.txt``, ``ptb.valid.txt``,
    ``ptb.test.txt`` (already preprocessed: one sentence a line, ``<unk>`` in place).
    The vocabulary is every training word (``min_count=1``; 10,000 with ``<unk>`` and
    ``<eos>`` for the official files)."""
    sentences = {}
    for name, path in (("train", train), ("valid", valid), ("test", test)):
        text = Path(path).read_text(encoding="utf-8")
        sentences[name] = [line.split() for line in text.splitlines() if line.strip()]
    return make_corpus(sentences, min_count=1, max_vocab=max_vocab, dataset="ptb-mikolov",
                       source=source or str(Path(train).parent), data_checksum=data_checksum,
                       description={"preprocessing": "Mikolov's simple-examples text, as distributed"})


def load_corpus(dataset: str = "ptb-treebank", *, min_count: int = 2, max_vocab: int | None = 10_000) -> LMCorpus:
    """Locate ``dataset`` through :func:`paramstress.data.load` (root → mirror →
    download, MD5-verified) and build its :class:`LMCorpus`: a data set whose files
    include ``treebank.zip`` (``ptb-treebank``) is read through NLTK from its
    ``.nltk_root``; one with ``ptb.train.txt``/``ptb.valid.txt``/``ptb.test.txt``
    (``ptb-mikolov``, the paper profile) by :func:`mikolov_corpus` from its ``.folder``.
    """
    from paramstress.engine import data

    loaded = data.load(dataset)
    files = set(getattr(loaded, "files", {}) or {})
    checksum = str(getattr(loaded, "checksum", ""))
    source = str(getattr(loaded, "source", ""))
    if "treebank.zip" in files:
        corpus = treebank_corpus(loaded.nltk_root, min_count=min_count, max_vocab=max_vocab,
                                 source=source, data_checksum=checksum)
    elif {"ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"} <= files:
        folder = Path(loaded.folder)
        corpus = mikolov_corpus(folder / "ptb.train.txt", folder / "ptb.valid.txt", folder / "ptb.test.txt",
                                source=source, data_checksum=checksum, max_vocab=max_vocab)
    else:
        raise ValueError(f"data set {dataset!r} is not a language-modelling corpus (its files: {sorted(files)}); "
                         "use 'ptb-treebank' (NLTK sample) or 'ptb-mikolov' (Mikolov's text)")
    corpus.dataset = dataset
    return corpus


# ============================================================================= batching
def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The classic LM batching: cut the stream into ``batch_size`` contiguous streams
    (the last ``len % batch_size`` tokens are dropped) laid out as columns of a
    ``(len // batch_size, batch_size)`` tensor (a contiguous copy)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if ids.ndim != 1:
        raise ValueError(f"batchify takes a 1-D token stream, got shape {tuple(ids.shape)}")
    steps = len(ids) // batch_size
    if steps < 2:
        raise ValueError(f"{len(ids)} tokens cannot fill {batch_size} streams of at least 2 tokens; lower batch_size")
    return ids[: steps * batch_size].view(batch_size, steps).t().contiguous()


def windows(data: torch.Tensor, bptt: int, *, offset: int = 0, context: int = 0
            ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """BPTT windows over batchified ``data`` (``(steps, B)``), starting at row ``offset``.

    Window ``i`` covers rows ``s = offset + i·bptt`` … ``s + T − 1`` with
    ``T = min(bptt, steps − 1 − s)``; ``y = data[s+1 : s+T+1]`` (the next tokens) and
    ``x = data[s−c : s+T]`` with ``c = min(context, s)`` context rows in front (so
    ``x[c:]`` is aligned with ``y`` shifted by one). Slices are views."""
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ValueError(f"bptt must be a positive integer, got {bptt!r}")
    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"context must be a non-negative integer, got {context!r}")
    steps = data.shape[0]
    if not 0 <= offset < steps - 1:
        raise ValueError(f"offset {offset} outside the {steps - 1} predictable rows")
    out = []
    for start in range(offset, steps - 1, bptt):
        length = min(bptt, steps - 1 - start)
        c = min(context, start)
        out.append((data[start - c: start + length], data[start + 1: start + 1 + length]))
    return out


# ============================================================================= model
class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016; Merity et al. 2018 §4.2): one mask
    per sequence and feature, shared over time. Input ``(T, B, H)``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        mask = x.new_empty((1, *x.shape[1:])).bernoulli_(1.0 - self.p) / (1.0 - self.p)
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"


def _embedding_dropout(weight: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Embedding dropout (Merity et al. 2018 §4.3, after Gal & Ghahramani 2016): drop
    whole rows (words) of the embedding matrix, rescale the rest by ``1/(1-p)``."""
    if not training or p == 0.0:
        return weight
    mask = weight.new_empty((weight.shape[0], 1)).bernoulli_(1.0 - p) / (1.0 - p)
    return weight * mask


Hidden = list[tuple[torch.Tensor, torch.Tensor]]


class LSTMLanguageModel(nn.Module):
    """Word-level LSTM language model in the AWD-LSTM style (see the module docstring).

    ``forward(x, hidden=None)``: ``x`` int64 ``(T, B)`` → ``(logits (T, B, V), hidden)``,
    ``hidden`` a list of ``(h, c)`` per layer, each ``(1, B, size)``; ``None`` = zeros.
    Parameters: ``encoder.weight`` (tied to ``decoder.weight`` when ``tie_weights``),
    ``rnns.<l>.weight_ih_l0`` / ``weight_hh_l0`` / ``bias_ih_l0`` / ``bias_hh_l0``,
    ``decoder.bias``.
    """

    def __init__(self, vocab_size: int, emb_size: int = 400, hidden_size: int = 1150, num_layers: int = 3, *,
                 dropout: float = 0.4, dropouth: float = 0.25, dropouti: float = 0.4, dropoute: float = 0.1,
                 tie_weights: bool = True) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("emb_size", emb_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name, value in (("dropout", dropout), ("dropouth", dropouth), ("dropouti", dropouti),
                            ("dropoute", dropoute)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}")
        self.vocab_size, self.emb_size, self.hidden_size, self.num_layers = vocab_size, emb_size, hidden_size, num_layers
        self.dropoute = float(dropoute)
        self.tie_weights = bool(tie_weights)
        self.encoder = nn.Embedding(vocab_size, emb_size)
        sizes = [emb_size] + [hidden_size] * (num_layers - 1) + [emb_size if tie_weights else hidden_size]
        self.rnns = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1]) for i in range(num_layers))
        self.drop_in = LockedDropout(dropouti)
        self.drop_hidden = LockedDropout(dropouth)
        self.drop_out = LockedDropout(dropout)
        self.decoder = nn.Linear(sizes[-1], vocab_size)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.encoder.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def hyper_parameters(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "emb_size": self.emb_size, "hidden_size": self.hidden_size,
                "num_layers": self.num_layers, "dropout": self.drop_out.p, "dropouth": self.drop_hidden.p,
                "dropouti": self.drop_in.p, "dropoute": self.dropoute, "tie_weights": self.tie_weights}

    def forward(self, x: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        if x.ndim != 2:
            raise ValueError(f"x must be (T, B) token ids, got shape {tuple(x.shape)}")
        emb = F.embedding(x, _embedding_dropout(self.encoder.weight, self.dropoute, self.training))
        out = self.drop_in(emb)
        new_hidden: Hidden = []
        for layer, rnn in enumerate(self.rnns):
            out, state = rnn(out, None if hidden is None else hidden[layer])
            new_hidden.append(state)
            out = self.drop_hidden(out) if layer < self.num_layers - 1 else self.drop_out(out)
        return self.decoder(out), new_hidden


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of one window (see the module docstring): the first
    ``x.shape[0] - y.shape[0]`` rows of ``x`` are context, run without gradient from
    the zero state; the rest is run from the state they leave and scored against ``y``."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or x.shape[0] < y.shape[0]:
        raise ValueError(f"x (context+T, B) and y (T, B) do not fit: {tuple(x.shape)}, {tuple(y.shape)}")
    context = x.shape[0] - y.shape[0]
    # cuDNN's LSTM cannot back-propagate in eval mode (Algorithm 2's gradient is taken
    # in eval mode): there, use PyTorch's native LSTM kernels instead
    native = x.is_cuda and not model.training and torch.is_grad_enabled()
    with torch.backends.cudnn.flags(enabled=False) if native else contextlib.nullcontext():
        hidden = None
        if context:
            with torch.no_grad():
                _, hidden = model(x[:context])
        logits, _ = model(x[context:], hidden)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))


def evaluate_lm(model: nn.Module, ids: torch.Tensor, *, batch_size: int = 10, bptt: int = 70) -> dict[str, float]:
    """``{"log_ppl", "loss", "nonfinite"}`` of ``model`` on a token stream: ``batchify``
    into ``batch_size`` streams, windows of ``bptt`` with the hidden state carried
    across all of them (eval mode, ``torch.inference_mode``, train flags restored).
    ``log_ppl`` = ``loss`` = mean NLL per predicted token (float64 sum); tokens whose
    logits are not all finite count as NLL = +inf; ``nonfinite`` is their percentage."""
    return _score_stream(model, ids, batch_size, bptt, keep=False)[0]


def _score_stream(model: nn.Module, ids: torch.Tensor, batch_size: int, bptt: int, *, keep: bool
                  ) -> tuple[dict[str, float], torch.Tensor | None]:
    """:func:`evaluate_lm`'s metrics and, with ``keep``, every predicted token's NLL (float64,
    ``+inf`` where the logits are not all finite) laid out as the batchified data
    ``(steps, batch_size)`` on the CPU, row 0 (never predicted) NaN."""
    device = next(model.parameters()).device
    data = batchify(ids, batch_size).to(device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    bad = torch.zeros((), dtype=torch.int64, device=device)
    count = 0
    kept = torch.full(data.shape, math.nan, dtype=torch.float64) if keep else None
    with eval_mode(model), torch.inference_mode():
        hidden = None
        for start, (x, y) in zip(range(0, data.shape[0] - 1, bptt), windows(data, bptt)):
            logits, hidden = model(x, hidden)
            logits = logits.float().reshape(-1, logits.shape[-1])
            finite = torch.isfinite(logits).all(dim=1)
            nll = F.cross_entropy(logits, y.reshape(-1), reduction="none").to(torch.float64)
            nll = torch.where(finite, nll, torch.full_like(nll, math.inf))
            nll = torch.nan_to_num(nll, nan=math.inf)
            total += nll.sum()
            bad += (~finite).sum()
            count += y.numel()
            if kept is not None:
                kept[start + 1: start + 1 + y.shape[0]] = nll.reshape(y.shape).cpu()
    loss = float(total) / count
    return {"log_ppl": loss, "loss": loss, "nonfinite": 100.0 * int(bad) / count}, kept


def sentence_nll(ids: torch.Tensor, token_nll: torch.Tensor, *, eos: int = 1) -> torch.Tensor:
    """Per sentence of the stream ``ids`` (a sentence ends with the token ``eos``, id 1 in
    :class:`Vocabulary`; tokens after the last ``eos`` form one more): ``(summed NLL, scored
    tokens)`` of the tokens :func:`evaluate_lm` predicted, from ``token_nll`` laid out as the
    batchified data ``(steps, B)`` (NaN: not predicted; see :func:`_score_stream`). A
    sentence's NLL is that of its tokens *in the evaluation* (the hidden state carried across
    sentences and windows, as :func:`evaluate_lm` scores them); tokens no window predicts
    (the first of each of the ``B`` streams, the ``len % B`` dropped at the end) count in no
    sentence. Sentences without a scored token are left out. An ``(n, 2)`` float64 tensor
    whose column sums are the total NLL and the number of predicted tokens."""
    if ids.ndim != 1 or token_nll.ndim != 2:
        raise ValueError(f"ids must be a 1-D stream and token_nll (steps, B), got {tuple(ids.shape)}, "
                         f"{tuple(token_nll.shape)}")
    steps, streams = token_nll.shape
    if steps * streams > len(ids) or len(ids) // streams != steps:
        raise ValueError(f"token_nll {tuple(token_nll.shape)} is not batchify(ids, {streams}) of {len(ids)} tokens")
    ids = ids.cpu()
    sentence = torch.cumsum((ids == eos).to(torch.int64), 0) - (ids == eos).to(torch.int64)  # eos ends its sentence
    flat = token_nll.t().reshape(-1).to(torch.float64)  # stream order: position b·steps + r
    scored = ~torch.isnan(flat)
    which = sentence[: steps * streams][scored]
    n = int(sentence[-1]) + 1
    nll = torch.zeros(n, dtype=torch.float64).index_add_(0, which, flat[scored])
    tokens = torch.bincount(which, minlength=n).to(torch.float64)
    keep = tokens > 0
    return torch.stack([nll[keep], tokens[keep]], dim=1)


def unigram_log_ppl(corpus: LMCorpus, split: str = "test", *, smoothing: str = "add-one") -> float:
    """Log perplexity (nats per token) of the unigram model estimated on the training
    split and evaluated on every token of ``split`` (``<eos>`` and ``<unk>`` included).
    ``smoothing``: ``"add-one"`` (Laplace over the vocabulary) or ``"ml"`` (maximum
    likelihood; infinite if ``split`` has a word unseen in train)."""
    if smoothing not in ("add-one", "ml"):
        raise ValueError(f"smoothing must be 'add-one' or 'ml', got {smoothing!r}")
    counts = torch.bincount(corpus.train, minlength=len(corpus.vocab)).to(torch.float64)
    if smoothing == "add-one":
        counts = counts + 1.0
    logp = torch.log(counts) - math.log(float(counts.sum()))
    return float(-logp[corpus.split(split)].mean())


# ============================================================================= task
class PTBLanguageModelTask(Task):
    """Sun et al.'s PTB-LM column as a :class:`paramstress.tasks.Task` (see the module docstring).

    Plain parameters (a notebook passes them from YAML):

    * data: ``dataset`` (``"ptb-treebank"``, or a name registered for Mikolov's text),
      ``min_count``, ``max_vocab`` — or a ready ``corpus`` (:class:`LMCorpus`);
    * model: ``emb_size``, ``hidden_size``, ``num_layers``, ``dropout``, ``dropouth``,
      ``dropouti``, ``dropoute``, ``tie_weights``;
    * batching: ``batch_size`` streams × ``bptt`` tokens per training window, each
      with ``context`` preceding tokens of gradient-free warm-up (default ``bptt``);
    * evaluation: ``eval_split`` (``"test"`` for Table 1, ``"valid"`` for model
      selection), ``eval_batch_size`` (10), ``eval_bptt``;
    * Algorithm 2's data: ``gradient_tokens`` — the corruption gradient uses the
      training windows (in order, no shuffling) until at least this many tokens are
      covered (``None``: the whole training split).
    """

    key = "ptb-lm"
    label = "PTB-LM"
    metric = "log_ppl"
    metric_label = "Log PPL"
    higher_is_better = False
    units = "sentences"
    decimals = 3

    def __init__(
        self,
        *,
        dataset: str = "ptb-treebank",
        corpus: LMCorpus | None = None,
        min_count: int = 2,
        max_vocab: int | None = 10_000,
        emb_size: int = 400,
        hidden_size: int = 1150,
        num_layers: int = 3,
        dropout: float = 0.4,
        dropouth: float = 0.25,
        dropouti: float = 0.4,
        dropoute: float = 0.1,
        tie_weights: bool = True,
        batch_size: int = 20,
        bptt: int = 35,
        context: int | None = None,
        eval_split: str = "test",
        eval_batch_size: int = 10,
        eval_bptt: int = 70,
        gradient_tokens: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model_params = {"emb_size": emb_size, "hidden_size": hidden_size, "num_layers": num_layers,
                             "dropout": dropout, "dropouth": dropouth, "dropouti": dropouti, "dropoute": dropoute,
                             "tie_weights": tie_weights}
        for name, value in (("batch_size", batch_size), ("bptt", bptt), ("eval_batch_size", eval_batch_size),
                            ("eval_bptt", eval_bptt)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        context = bptt if context is None else context
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"context must be a non-negative integer (0 = zero state per window), got {context!r}")
        if eval_split not in ("valid", "test"):
            raise ValueError(f"eval_split must be 'valid' or 'test', got {eval_split!r}")
        if gradient_tokens is not None and (isinstance(gradient_tokens, bool) or not isinstance(gradient_tokens, int)
                                            or gradient_tokens < 1):
            raise ValueError(f"gradient_tokens must be a positive integer or None, got {gradient_tokens!r}")
        self.device = torch.device(device)
        # build a throw-away model on the meta device: validates the hyper-parameters before loading data
        with torch.device("meta"):
            LSTMLanguageModel(3, **self.model_params)
        self.corpus = corpus if corpus is not None else load_corpus(dataset, min_count=min_count, max_vocab=max_vocab)
        self.batch_size, self.bptt, self.context = batch_size, bptt, context
        self.eval_split, self.eval_batch_size, self.eval_bptt = eval_split, eval_batch_size, eval_bptt
        self.gradient_tokens = gradient_tokens
        self.train_data = batchify(self.corpus.train, batch_size).to(self.device)
        self.eval_ids = self.corpus.split(eval_split).to(self.device)
        batchify(self.eval_ids, eval_batch_size)  # fail now, not at the first evaluation

    # ----------------------------------------------------------------- model and data
    @property
    def vocab_size(self) -> int:
        return len(self.corpus.vocab)

    def build_model(self, seed: int) -> LSTMLanguageModel:
        """A fresh model initialised from ``seed`` (the global RNG is left untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = LSTMLanguageModel(self.vocab_size, **self.model_params)
        return model.to(self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of full ``bptt`` windows (each with its context) in a random order.

        The same number of windows every epoch (the schedule is per step): ``n =
        (steps − bptt) // bptt`` of the ``steps − 1`` predictable rows per stream, starting
        at a random offset in ``[0, bptt)``, so window boundaries move from epoch to
        epoch and the fewer than ``2·bptt`` rows left out change too. Offset and order
        are drawn from ``generator``. (Streams shorter than ``2·bptt + 1`` rows: the
        windows from row 0, the last one possibly shorter.)"""
        steps = self.train_data.shape[0]
        if steps - 1 < 2 * self.bptt:
            wins = windows(self.train_data, self.bptt, context=self.context)
        else:
            count = (steps - self.bptt) // self.bptt
            offset = int(torch.randint(0, self.bptt, (1,), generator=generator))
            wins = windows(self.train_data, self.bptt, offset=offset, context=self.context)[:count]
        order = torch.randperm(len(wins), generator=generator).tolist()
        return (wins[i] for i in order)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lm_loss(model, x, y)

    def gradient_batches(self) -> Iterable[tuple[torch.Tensor, torch.Tensor, int]]:
        """Algorithm 2's data: training windows in order from row 0 (each with its
        context), until ``gradient_tokens`` predicted tokens are covered (all if None)."""
        out, covered = [], 0
        for x, y in windows(self.train_data, self.bptt, context=self.context):
            if self.gradient_tokens is not None and covered >= self.gradient_tokens:
                break
            out.append((x, y, y.numel()))
            covered += y.numel()
        return out

    def gradient_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return lm_loss(model, x, y)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``{"log_ppl", "loss"}`` on the evaluation split (carried hidden state; see :func:`evaluate_lm`)."""
        result = evaluate_lm(model, self.eval_ids, batch_size=self.eval_batch_size, bptt=self.eval_bptt)
        return {"log_ppl": result["log_ppl"], "loss": result["loss"]}

    def evaluate_units(self, model: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """:meth:`evaluate` and, per sentence of the evaluation split (the corpus keeps the
        boundaries: every sentence ends with ``<eos>``), ``(summed NLL, predicted tokens)``
        of the same pass (:func:`sentence_nll`: the hidden state is carried across
        sentences as :func:`evaluate_lm` carries it; the few tokens no window predicts count
        in no sentence): an ``(n, 2)`` float64 array whose :meth:`combine`, ``ΣNLL/Σtokens``,
        is the log perplexity (to float64 summation order)."""
        metrics, kept = _score_stream(model, self.eval_ids, self.eval_batch_size, self.eval_bptt, keep=True)
        stats = sentence_nll(self.eval_ids, kept, eos=self.corpus.vocab.index[EOS])
        return {"log_ppl": metrics["log_ppl"], "loss": metrics["loss"]}, stats.numpy()

    def combine(self, unit_stats: np.ndarray) -> float:
        """Log perplexity of per-sentence ``(summed NLL, predicted tokens)``: ``ΣNLL/Σtokens``."""
        from paramstress.corruption.text.bootstrap import ratio_of_sums

        return ratio_of_sums(unit_stats)

    def reference_scores(self) -> dict[str, float]:
        """The unigram baseline's log perplexity on the evaluation split (add-one, trained on train)."""
        return {"unigram": self.unigram_log_ppl()}

    def unigram_log_ppl(self, smoothing: str = "add-one") -> float:
        """The unigram baseline on the evaluation split (the LM must be clearly below it)."""
        return unigram_log_ppl(self.corpus, self.eval_split, smoothing=smoothing)

    # ----------------------------------------------------------------- identity
    def identity(self) -> dict[str, Any]:
        return {
            "task": self.key,
            "dataset": self.corpus.dataset,
            "data_checksum": self.corpus.data_checksum,
            "corpus_checksum": self.corpus.checksum,
            **self.corpus.sizes(),
            "model": "LSTMLanguageModel",
            **self.model_params,
            "batch_size": self.batch_size,
            "bptt": self.bptt,
            "context": self.context,
        }

    def provenance(self) -> dict[str, Any]:
        c = self.corpus
        return {
            "dataset": c.dataset,
            "source": c.source,
            "checksum": c.data_checksum,
            "corpus_checksum": c.checksum,
            **c.sizes(),
            "splits": c.description.get("splits", "as distributed"),
            "preprocessing": c.description.get("preprocessing", ""),
            "min_count": c.description.get("min_count"),
            "unk_rate_eval": round(c.unk_rate(self.eval_split), 4),
            "eval_split": self.eval_split,
        }
