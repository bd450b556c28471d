"""PTB-Parsing: the neural transition-based dependency parser of Chen & Manning (2014).

Sun et al. (AAAI 2021) corrupt, in Table 1 (column "PTB-Parsing") and Table 2, the
greedy neural parser of Chen and Manning, "A Fast and Accurate Dependency Parser using
Neural Networks" (EMNLP 2014), scored by the unlabelled attachment score (UAS). This
module implements that parser and wraps it as a :class:`~paramstress.tasks.Task`
(:class:`PTBParsingTask`), so the shared trainers, objectives and corruption sweep run
on it unchanged. What each piece implements:

- The **arc-standard transition system** (C&M §2; Nivre 2004): a configuration is a
  stack, a buffer and a set of arcs; it starts with ``ROOT`` (token 0) on the stack and
  the whole sentence in the buffer; SHIFT moves the buffer's front onto the stack,
  LEFT-ARC(l) adds ``s1 → s2`` with label ``l`` and pops ``s2``, RIGHT-ARC(l) adds
  ``s2 → s1`` and pops ``s1`` (:class:`Configuration`, :class:`TransitionSystem`).
  ``ROOT`` takes exactly one dependent, and only when the buffer is empty (as in the
  Stanford implementation), so every legal sequence has ``2n`` transitions and ends in a
  tree with a single root word.
- The **static oracle** (C&M §3.1, "we use the arc-standard oracle"): LEFT-ARC if
  ``s1`` is ``s2``'s gold head; else RIGHT-ARC if ``s2`` is ``s1``'s gold head and every
  gold dependent of ``s1`` is attached; else SHIFT (:meth:`TransitionSystem.oracle`). It
  reproduces every *projective* gold tree exactly; non-projective training sentences
  (crossing arcs, :func:`is_projective`) are skipped, counted and reported.
- The **48 features** (C&M §3.1): ``S^w`` (18 words): the top 3 stack and buffer words
  ``s1, s2, s3, b1, b2, b3``; the first and second leftmost / rightmost children
  ``lc1, rc1, lc2, rc2`` of ``s1`` and ``s2``; the leftmost of the leftmost and the
  rightmost of the rightmost child ``lc1(lc1), rc1(rc1)`` of ``s1`` and ``s2``;
  ``S^t`` (18 POS tags) of the same 18 tokens; ``S^l`` (12 arc labels) of the 12 child
  positions. Absent positions are ``<NULL>``; token 0 is ``<ROOT>``
  (:func:`extract_features`; order of the table in :data:`FEATURE_NAMES`).
- The **network** (C&M §3.1, Fig. 2): embeddings ``E^w, E^t, E^l`` (``d = 50``), one
  hidden layer with the **cube activation** ``h = (W1 [x^w; x^t; x^l] + b1)^3`` (the
  paper's choice, kept here), dropout on ``h`` (C&M: 0.5), and a softmax layer
  ``p = softmax(W2 h)`` (no bias, as in the paper) over the ``2·|labels| + 1``
  transitions (:class:`ChenManningParser`). Training minimises the cross-entropy of
  the oracle transitions; C&M's L2 regulariser is the optimizer's weight decay.
- **Greedy parsing** (C&M §3.2): from the initial configuration, repeatedly take the
  highest-scoring *legal* transition. :func:`parse` runs all sentences of a batch in
  lock-step, one forward pass per step for every unfinished sentence; transitions whose
  logits are not finite (a corrupted model) are treated as ``-inf``, and when no legal
  transition has a finite score the first legal one (SHIFT before LEFT before RIGHT) is
  taken, so a broken model still yields a tree and an honest (low) score.
- **UAS / LAS** (:func:`attachment_scores`): % of scored tokens whose predicted head
  (and label) is the gold one, *excluding punctuation*: tokens whose gold POS tag is
  one of :data:`PUNCT_TAGS` ``(`` '' , . : -LRB- -RRB- # $)``, the usual convention for
  PTB dependency evaluation.
  Per sentence (:func:`attachment_statistics`, :meth:`PTBParsingTask.evaluate_units`, for
  the paired bootstrap of :mod:`paramstress.bootstrap`): correct heads and scored tokens,
  whose sums give the UAS exactly.

Data, and choices the paper leaves open (state them wherever results are shown):

- Offline, the data is NLTK's ``dependency_treebank`` (the 10% PTB WSJ sample,
  wsj_0001–wsj_0199, 3,914 sentences, 94,084 tokens, Malt-TAB with three columns: word,
  POS, head). **It has no arc labels** (every label is empty): the label set found is
  the single label :data:`NO_LABEL` ``"_"``, so there are 3 transitions, the 12 label
  features only say whether a child exists, and LAS is not reported (it would equal
  UAS). It is split by file: wsj_0001–0159 train (3,396 sentences), 0160–0179 dev (273),
  0180–0199 test (245) (:data:`DEFAULT_SPLIT`). Every tree of the sample is projective.
  C&M train on the full WSJ (sections 02–21, ~40k sentences) with 50-d pretrained word
  embeddings (their test UAS: 91.8 with Stanford dependencies; Sun et al.'s base parser:
  87.3); no pretrained embeddings are available offline, so word embeddings start
  random, and with a tenth of the data a lower UAS is expected.
- Words are lower-cased (the pretrained embeddings C&M used are lower-case); training
  words seen fewer than ``min_count`` times are ``<UNK>`` (so ``<UNK>`` is trained);
  POS tags and labels are kept as they are.
- The full treebank (the ``paper`` profile) is read from user-supplied CoNLL-X or
  CoNLL-U files with :func:`read_conll` (multi-word token ranges and empty nodes are
  skipped; the fine-grained POS column is used, as C&M use PTB tags).
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from paramstress.engine.sweep import eval_mode
from paramstress.corruption.text.tasks import Task

__all__ = [
    "DATASETS",
    "DEFAULT_SPLIT",
    "FEATURE_NAMES",
    "NO_LABEL",
    "NULL",
    "PUNCT_TAGS",
    "ROOT",
    "UNK",
    "ChenManningParser",
    "Configuration",
    "OracleData",
    "PTBParsingTask",
    "ParserError",
    "Sentence",
    "TransitionSystem",
    "Vocabulary",
    "attachment_scores",
    "attachment_statistics",
    "extract_features",
    "is_projective",
    "oracle_data",
    "parse",
    "parse_sentence",
    "read_conll",
    "read_nltk_dependency",
    "split_by_file",
]

NULL, UNK, ROOT = "<NULL>", "<UNK>", "<ROOT>"
#: The label of an arc whose treebank gives none (NLTK's three-column Malt-TAB files).
NO_LABEL = "_"
#: Gold POS tags of the tokens left out of UAS/LAS (punctuation, PTB tag set).
PUNCT_TAGS: frozenset[str] = frozenset({"``", "''", ",", ".", ":", "-LRB-", "-RRB-", "#", "$"})
#: Dependency treebanks of :mod:`paramstress.data` the task reads: NLTK's sample, the full treebank.
DATASETS: tuple[str, ...] = ("ptb-dependency", "ptb-conll")
#: Files of NLTK's dependency_treebank per split (wsj_0001 … wsj_0199): numbers, inclusive.
DEFAULT_SPLIT: dict[str, tuple[int, int]] = {"train": (1, 159), "dev": (160, 179), "test": (180, 199)}

_POSITIONS = ["s1", "s2", "s3", "b1", "b2", "b3"]
_CHILDREN = [f"{c}({s})" for s in ("s1", "s2") for c in ("lc1", "rc1", "lc2", "rc2", "lc1(lc1)", "rc1(rc1)")]
#: The 48 features in the order :func:`extract_features` returns them (C&M §3.1).
FEATURE_NAMES: tuple[str, ...] = tuple(
    [f"w:{p}" for p in _POSITIONS + _CHILDREN]
    + [f"t:{p}" for p in _POSITIONS + _CHILDREN]
    + [f"l:{p}" for p in _CHILDREN]
)
N_WORD, N_TAG, N_LABEL = 18, 18, 12


class ParserError(ValueError):
    """A malformed treebank, configuration or transition; the message names the fix."""


# =========================================================================== sentences and readers
@dataclasses.dataclass(frozen=True)
class Sentence:
    """A dependency tree: tokens ``1..n``; ``heads[i-1]`` is token ``i``'s head (0 = ROOT)."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    heads: tuple[int, ...]
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.words)
        if not (len(self.tags) == len(self.heads) == len(self.labels) == n) or n == 0:
            raise ParserError(f"a sentence needs n >= 1 words with one tag, head and label each; got "
                              f"{len(self.words)}/{len(self.tags)}/{len(self.heads)}/{len(self.labels)}")
        bad = [h for h in self.heads if not 0 <= h <= n]
        if bad:
            raise ParserError(f"heads {bad} out of range 0..{n} in {' '.join(self.words)!r}")
        if any(h == i + 1 for i, h in enumerate(self.heads)):
            raise ParserError(f"a token is its own head in {' '.join(self.words)!r}")

    def __len__(self) -> int:
        return len(self.words)


def read_nltk_dependency(nltk_root: Path | str, fileids: Sequence[str] | None = None, *,
                         max_sentences: int | None = None) -> dict[str, list[Sentence]]:
    """Read NLTK's ``dependency_treebank`` from ``<nltk_root>/corpora/dependency_treebank.zip``.

    Returns ``{fileid: [Sentence, ...]}`` in file order (``fileids``: those files only;
    ``max_sentences``: stop after the file in which that many sentences are reached). Read with NLTK's
    ``DependencyCorpusReader`` from the zip named here, not through a (cached)
    ``LazyCorpusLoader`` that could find another copy on ``nltk.data.path``; the root
    is put on ``nltk.data.path`` because NLTK only opens files under it. Empty labels
    (the three-column files) become :data:`NO_LABEL`.
    """
    import nltk
    from nltk.corpus.reader import DependencyCorpusReader

    root = Path(nltk_root).resolve()
    zip_path = root / "corpora" / "dependency_treebank.zip"
    if not zip_path.is_file():
        raise ParserError(f"{zip_path} not found: pass the nltk_data folder that holds corpora/dependency_treebank.zip "
                          f"(paramstress.data.load('ptb-dependency').nltk_root)")
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    pointer = nltk.data.find("corpora/dependency_treebank.zip/dependency_treebank/", paths=[str(root)])
    reader = DependencyCorpusReader(pointer, r"wsj_\d+\.dp")
    out: dict[str, list[Sentence]] = {}
    known = set(reader.fileids())
    missing = [f for f in fileids or () if f not in known]
    if missing:
        raise ParserError(f"{zip_path} has no files {missing[:5]}{'...' if len(missing) > 5 else ''}; "
                          f"it holds {min(known)} ... {max(known)}")
    count = 0
    for fid in fileids if fileids is not None else reader.fileids():
        if max_sentences is not None and count >= max_sentences:
            break
        sents = []
        for graph in reader.parsed_sents(fid):
            nodes = [graph.nodes[i] for i in range(1, len(graph.nodes))]
            sents.append(Sentence(
                words=tuple(nd["word"] for nd in nodes), tags=tuple(nd["tag"] for nd in nodes),
                heads=tuple(int(nd["head"]) for nd in nodes),
                labels=tuple(nd["rel"] or NO_LABEL for nd in nodes)))
        out[fid] = sents
        count += len(sents)
    return out


def split_by_file(files: Mapping[str, list[Sentence]],
                  split: Mapping[str, tuple[int, int]] = DEFAULT_SPLIT) -> dict[str, list[Sentence]]:
    """Group ``wsj_NNNN.dp`` files into splits by file number (inclusive ranges)."""
    out: dict[str, list[Sentence]] = {name: [] for name in split}
    for fid in sorted(files):
        m = re.search(r"(\d+)", fid)
        if m is None:
            raise ParserError(f"file id {fid!r} has no number to split by")
        num = int(m.group(1))
        for name, (lo, hi) in split.items():
            if lo <= num <= hi:
                out[name].extend(files[fid])
    empty = [k for k, v in out.items() if not v]
    if empty:
        raise ParserError(f"splits {empty} are empty with file ranges {dict(split)}; choose ranges within the files "
                          f"{sorted(files)[0]}…{sorted(files)[-1]}")
    return out


def read_conll(path: Path | str) -> list[Sentence]:
    """Sentences of a CoNLL-X (10 columns) or CoNLL-U file (the full treebank, ``paper`` profile).

    Uses FORM, the fine POS column (CoNLL-X POSTAG / CoNLL-U XPOS, falling back to the
    coarse column when it is ``_``), HEAD and DEPREL; comment lines, multi-word token
    ranges (``1-2``) and empty nodes (``1.1``) are skipped.
    """
    path = Path(path)
    sents: list[Sentence] = []
    rows: list[list[str]] = []

    def flush(lineno: int) -> None:
        if rows:
            try:
                if [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
                    raise ParserError("token ids are not 1..n")
                sents.append(Sentence(
                    words=tuple(r[1] for r in rows),
                    tags=tuple(r[4] if r[4] != "_" else r[3] for r in rows),
                    heads=tuple(int(r[6]) for r in rows),
                    labels=tuple(r[7] if r[7] not in ("", "_") else NO_LABEL for r in rows)))
            except (ValueError, ParserError) as err:
                raise ParserError(f"{path}: sentence ending at line {lineno}: {err}. Fix the file "
                                  f"(CoNLL-X/CoNLL-U, 10 tab-separated columns)") from None
            rows.clear()

    with open(path, encoding="utf-8") as f:
        lineno = 0
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line.strip():
                flush(lineno)
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise ParserError(f"{path}:{lineno}: {len(cols)} columns, CoNLL-X/CoNLL-U have 10 (tab-separated)")
            if "-" in cols[0] or "." in cols[0]:
                continue
            rows.append(cols)
        flush(lineno)
    if not sents:
        raise ParserError(f"{path} holds no sentences")
    return sents


def is_projective(heads: Sequence[int]) -> bool:
    """True when no two arcs cross (the arc from ROOT, token 0, included).

    Arcs ``(a, b)`` and ``(c, d)`` (endpoints sorted) cross iff ``a < c < b < d``.
    """
    spans = sorted((min(h, d), max(h, d)) for d, h in enumerate(heads, 1))
    for i, (a, b) in enumerate(spans):
        for c, d in spans[i + 1:]:
            if c >= b:
                break
            if a < c < b < d:
                return False
    return True


# =========================================================================== transition system
class Configuration:
    """A parser state: ``stack`` (token ids, ROOT = 0), the buffer ``next..n``, the arcs built.

    ``head[i]``/``label[i]`` are -1 until token ``i`` is attached; ``lefts[i]`` and
    ``rights[i]`` are its attached left / right dependents in increasing token order.
    """

    __slots__ = ("n", "stack", "next", "head", "label", "lefts", "rights")

    def __init__(self, n: int) -> None:
        self.n = n
        self.stack = [0]
        self.next = 1
        self.head = [-1] * (n + 1)
        self.label = [-1] * (n + 1)
        self.lefts: list[list[int]] = [[] for _ in range(n + 1)]
        self.rights: list[list[int]] = [[] for _ in range(n + 1)]

    def add_arc(self, h: int, d: int, label: int) -> None:
        if self.head[d] != -1:
            raise ParserError(f"token {d} already has head {self.head[d]}")
        self.head[d] = h
        self.label[d] = label
        bisect.insort(self.lefts[h] if d < h else self.rights[h], d)

    @property
    def terminal(self) -> bool:
        return self.next > self.n and len(self.stack) == 1


class TransitionSystem:
    """Arc-standard with labels: transition 0 = SHIFT, ``1+l`` = LEFT-ARC(l), ``1+L+l`` = RIGHT-ARC(l)."""

    def __init__(self, labels: Sequence[str]) -> None:
        if not labels:
            raise ParserError("the transition system needs at least one arc label")
        self.labels = list(labels)
        self.num_labels = len(self.labels)
        self.num_transitions = 1 + 2 * self.num_labels
        #: which of (SHIFT, LEFT, RIGHT) each transition is
        self.kind = torch.tensor([0] + [1] * self.num_labels + [2] * self.num_labels)

    def name(self, t: int) -> str:
        if t == 0:
            return "SHIFT"
        kind, lab = ("LEFT", t - 1) if t <= self.num_labels else ("RIGHT", t - 1 - self.num_labels)
        return f"{kind}({self.labels[lab]})"

    @staticmethod
    def legal(c: Configuration) -> tuple[bool, bool, bool]:
        """Whether SHIFT, LEFT-ARC, RIGHT-ARC may be applied (ROOT takes one dependent, last)."""
        depth = len(c.stack)
        buffer_left = c.next <= c.n
        left = depth > 2  # s2 exists and is not ROOT
        right = depth > 2 or (depth == 2 and not buffer_left)
        return buffer_left, left, right

    def apply(self, c: Configuration, t: int) -> None:
        shift, left, right = self.legal(c)
        if t == 0:
            if not shift:
                raise ParserError("SHIFT with an empty buffer")
            c.stack.append(c.next)
            c.next += 1
        elif t <= self.num_labels:
            if not left:
                raise ParserError(f"LEFT-ARC is illegal with stack {c.stack}")
            s1 = c.stack.pop()
            s2 = c.stack.pop()
            c.add_arc(s1, s2, t - 1)
            c.stack.append(s1)
        elif t < self.num_transitions:
            if not right:
                raise ParserError(f"RIGHT-ARC is illegal with stack {c.stack} and buffer at {c.next}/{c.n}")
            s1 = c.stack.pop()
            c.add_arc(c.stack[-1], s1, t - 1 - self.num_labels)
        else:
            raise ParserError(f"transition {t} out of range 0..{self.num_transitions - 1}")

    def oracle(self, c: Configuration, heads: Sequence[int], labels: Sequence[int], n_deps: Sequence[int]) -> int:
        """The static arc-standard oracle's transition for gold ``heads``/``labels`` (label ids).

        ``n_deps[i]`` is the number of gold dependents of token ``i`` (0 = ROOT).
        """
        st = c.stack
        if len(st) >= 2:
            s1, s2 = st[-1], st[-2]
            if s2 != 0 and heads[s2 - 1] == s1:
                return 1 + labels[s2 - 1]
            if heads[s1 - 1] == s2 and len(c.lefts[s1]) + len(c.rights[s1]) == n_deps[s1]:
                if s2 != 0 or c.next > c.n:
                    return 1 + self.num_labels + labels[s1 - 1]
        if c.next <= c.n:
            return 0
        raise ParserError("the oracle is stuck: the gold tree is not projective or has several roots")

    def gold_transitions(self, heads: Sequence[int], labels: Sequence[int]) -> list[int]:
        """The oracle's transition sequence for a projective tree (checked to rebuild it)."""
        n = len(heads)
        n_deps = [0] * (n + 1)
        for h in heads:
            n_deps[h] += 1
        c = Configuration(n)
        seq = []
        while not c.terminal:
            t = self.oracle(c, heads, labels, n_deps)
            seq.append(t)
            self.apply(c, t)
        if c.head[1:] != list(heads) or c.label[1:] != list(labels):
            raise ParserError("the oracle did not rebuild the gold tree (non-projective input?)")
        return seq


# =========================================================================== vocabularies and features
class Vocabulary:
    """Word, POS and label ids, built from the training sentences (C&M §3.1).

    Each table starts ``<NULL>`` = 0, ``<UNK>`` = 1, ``<ROOT>`` = 2. Words are
    lower-cased when ``lowercase``; words seen fewer than ``min_count`` times in
    training map to ``<UNK>``. Labels are the training labels, sorted.
    """

    def __init__(self, sentences: Sequence[Sentence], *, min_count: int = 2, lowercase: bool = True) -> None:
        if min_count < 1:
            raise ParserError(f"min_count must be >= 1, got {min_count}")
        if not sentences:
            raise ParserError("cannot build vocabularies from no training sentences")
        self.lowercase = lowercase
        self.min_count = min_count
        special = [NULL, UNK, ROOT]
        words = Counter(self.norm(w) for s in sentences for w in s.words)
        self.words = special + sorted(w for w, c in words.items() if c >= min_count)
        self.tags = special + sorted({t for s in sentences for t in s.tags})
        self.labels = sorted({lab for s in sentences for lab in s.labels})
        self.label_tokens = special + self.labels  # label-feature table
        self.word_id = {w: i for i, w in enumerate(self.words)}
        self.tag_id = {t: i for i, t in enumerate(self.tags)}
        self.label_id = {lab: i for i, lab in enumerate(self.labels)}

    def norm(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def encode(self, s: Sentence) -> tuple[list[int], list[int]]:
        """Word and tag ids of tokens ``0..n`` (token 0 is ``<ROOT>``)."""
        w = [2] + [self.word_id.get(self.norm(x), 1) for x in s.words]
        t = [2] + [self.tag_id.get(x, 1) for x in s.tags]
        return w, t

    def sizes(self) -> dict[str, int]:
        return {"words": len(self.words), "tags": len(self.tags), "labels": len(self.labels)}


def extract_features(c: Configuration, words: Sequence[int], tags: Sequence[int]) -> list[int]:
    """The 48 feature ids of C&M §3.1 (order: :data:`FEATURE_NAMES`).

    ``words``/``tags`` are the ids of tokens ``0..n`` (:meth:`Vocabulary.encode`);
    absent positions give ``<NULL>`` (id 0); label features are ``3 + label`` (the
    label-feature table is ``<NULL>, <UNK>, <ROOT>, labels...``).
    """
    st = c.stack
    depth = len(st)
    nxt, n = c.next, c.n
    pos = [st[-1] if depth > 0 else -1, st[-2] if depth > 1 else -1, st[-3] if depth > 2 else -1,
           nxt if nxt <= n else -1, nxt + 1 if nxt + 1 <= n else -1, nxt + 2 if nxt + 2 <= n else -1]
    lefts, rights = c.lefts, c.rights
    for s in pos[:2]:
        if s < 0:
            pos.extend((-1, -1, -1, -1, -1, -1))
            continue
        L, R = lefts[s], rights[s]
        lc1 = L[0] if L else -1
        rc1 = R[-1] if R else -1
        pos.append(lc1)
        pos.append(rc1)
        pos.append(L[1] if len(L) > 1 else -1)
        pos.append(R[-2] if len(R) > 1 else -1)
        pos.append(lefts[lc1][0] if lc1 >= 0 and lefts[lc1] else -1)
        pos.append(rights[rc1][-1] if rc1 >= 0 and rights[rc1] else -1)
    lab = c.label
    return ([words[p] if p >= 0 else 0 for p in pos]
            + [tags[p] if p >= 0 else 0 for p in pos]
            + [lab[p] + 3 if p >= 0 else 0 for p in pos[6:]])


@dataclasses.dataclass
class OracleData:
    """Oracle (features → transition) pairs of a split, and what was left out."""

    x: torch.Tensor  # int64, N×48
    y: torch.Tensor  # int64, N
    sentences: int  # sentences used
    non_projective: int  # sentences skipped: crossing arcs
    unknown_label: int  # sentences skipped: a gold label absent from training (no transition for it)

    def to(self, device: torch.device | str) -> "OracleData":
        return dataclasses.replace(self, x=self.x.to(device), y=self.y.to(device))


def oracle_data(sentences: Sequence[Sentence], vocab: Vocabulary, system: TransitionSystem) -> OracleData:
    """Run the static oracle on every projective sentence; collect (features, transition) pairs."""
    xs: list[list[int]] = []
    ys: list[int] = []
    nonproj = unknown = used = 0
    for s in sentences:
        if not is_projective(s.heads):
            nonproj += 1
            continue
        if any(lab not in vocab.label_id for lab in s.labels):
            unknown += 1
            continue
        labels = [vocab.label_id[lab] for lab in s.labels]
        n_deps = [0] * (len(s) + 1)
        for h in s.heads:
            n_deps[h] += 1
        words, tags = vocab.encode(s)
        c = Configuration(len(s))
        while not c.terminal:
            t = system.oracle(c, s.heads, labels, n_deps)
            xs.append(extract_features(c, words, tags))
            ys.append(t)
            system.apply(c, t)
        if c.head[1:] != list(s.heads):
            raise ParserError("the oracle did not rebuild a projective gold tree (a bug)")
        used += 1
    x = torch.tensor(xs, dtype=torch.int64) if xs else torch.zeros(0, len(FEATURE_NAMES), dtype=torch.int64)
    return OracleData(x=x, y=torch.tensor(ys, dtype=torch.int64), sentences=used,
                      non_projective=nonproj, unknown_label=unknown)


# =========================================================================== the network
class ChenManningParser(nn.Module):
    """C&M's network: embeddings → one cube hidden layer → dropout → softmax layer (no bias).

    Input: ``N×48`` feature ids (:data:`FEATURE_NAMES`); output: ``N×T`` transition logits
    (``p = softmax(W2 (W1 [x^w; x^t; x^l] + b1)^3)``, C&M Eq. 1 and Fig. 2).

    ``init="chen-manning"``: every parameter ``U(-0.01, 0.01)``, as in the paper, meant for
    its AdaGrad training. ``init="scaled"`` (default; trains faster with Adam): embeddings
    ``N(0, 1)``, ``W1`` with std ``1/sqrt(48 d)`` and ``b1 = 0`` (hidden pre-activations of
    unit variance, where the cube is non-linear), ``W2`` with std ``1/sqrt(15 h)``
    (``E[z^6] = 15``, so the logits start with unit variance).
    """

    def __init__(self, n_words: int, n_tags: int, n_labels: int, n_transitions: int, *,
                 embed_dim: int = 50, hidden: int = 200, dropout: float = 0.5, init: str = "scaled") -> None:
        super().__init__()
        if min(embed_dim, hidden, n_words, n_tags, n_labels, n_transitions) < 1:
            raise ParserError("embedding size, hidden size and table sizes must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ParserError(f"dropout must be in [0, 1), got {dropout}")
        if init not in ("scaled", "chen-manning"):
            raise ParserError(f"init must be 'scaled' or 'chen-manning', got {init!r}")
        self.word_embed = nn.Embedding(n_words, embed_dim)
        self.tag_embed = nn.Embedding(n_tags, embed_dim)
        self.label_embed = nn.Embedding(n_labels, embed_dim)
        self.hidden = nn.Linear(len(FEATURE_NAMES) * embed_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden, n_transitions, bias=False)
        with torch.no_grad():
            if init == "chen-manning":
                for p in self.parameters():
                    p.uniform_(-0.01, 0.01)
            else:
                for emb in (self.word_embed, self.tag_embed, self.label_embed):
                    emb.weight.normal_(0.0, 1.0)
                self.hidden.weight.normal_(0.0, 1.0 / math.sqrt(self.hidden.in_features))
                self.hidden.bias.zero_()
                # E[z^6] = 15 for z ~ N(0, 1): the cube's output has variance 15, so this
                # gives logits of unit variance at initialisation
                self.output.weight.normal_(0.0, 1.0 / math.sqrt(15.0 * hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.cat([self.word_embed(x[:, :N_WORD]), self.tag_embed(x[:, N_WORD:N_WORD + N_TAG]),
                       self.label_embed(x[:, N_WORD + N_TAG:])], dim=1)
        h = self.hidden(e.flatten(1)).pow(3)  # the cube activation (C&M §3.1)
        return self.output(self.dropout(h))


# =========================================================================== greedy parsing
def _choose(logits: torch.Tensor, legal: torch.Tensor, kind: torch.Tensor) -> list[int]:
    """Highest-scoring legal transition per row; non-finite scores count as -inf; a row with
    no finite legal score takes its first legal transition."""
    allowed = legal[:, kind]  # B×T
    scores = torch.where(torch.isfinite(logits) & allowed, logits, -math.inf)
    best = scores.argmax(dim=1)
    fallback = allowed.to(torch.int8).argmax(dim=1)  # first legal transition
    ok = torch.isfinite(scores).any(dim=1)
    return torch.where(ok, best, fallback).tolist()


def parse(model: nn.Module, sentences: Sequence[Sentence], vocab: Vocabulary, system: TransitionSystem,
          *, batch_size: int = 512) -> list[tuple[list[int], list[int]]]:
    """Greedy parsing (C&M §3.2) of ``sentences``, ``batch_size`` of them in lock-step.

    Returns ``[(heads, label_ids), ...]`` (token ``i``'s head at index ``i-1``). Call it
    in eval mode under ``torch.inference_mode`` (as :meth:`PTBParsingTask.evaluate` does).
    """
    if batch_size < 1:
        raise ParserError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    kind = system.kind.to(device)
    out: list[tuple[list[int], list[int]]] = []
    for start in range(0, len(sentences), batch_size):
        group = sentences[start:start + batch_size]
        enc = [vocab.encode(s) for s in group]
        confs = [Configuration(len(s)) for s in group]
        active = list(range(len(group)))
        while active:
            feats = [extract_features(confs[i], *enc[i]) for i in active]
            legal = torch.tensor([system.legal(confs[i]) for i in active], dtype=torch.bool, device=device)
            logits = model(torch.tensor(feats, dtype=torch.int64, device=device))
            for i, t in zip(active, _choose(logits.float(), legal, kind)):
                system.apply(confs[i], t)
            active = [i for i in active if not confs[i].terminal]
        out.extend((c.head[1:], c.label[1:]) for c in confs)
    return out


def parse_sentence(model: nn.Module, sentence: Sentence, vocab: Vocabulary,
                   system: TransitionSystem) -> tuple[list[int], list[int]]:
    """Greedy parsing of one sentence, one configuration at a time (the reference for :func:`parse`)."""
    device = next(model.parameters()).device
    kind = system.kind.to(device)
    words, tags = vocab.encode(sentence)
    c = Configuration(len(sentence))
    while not c.terminal:
        x = torch.tensor([extract_features(c, words, tags)], dtype=torch.int64, device=device)
        legal = torch.tensor([system.legal(c)], dtype=torch.bool, device=device)
        system.apply(c, _choose(model(x).float(), legal, kind)[0])
    return c.head[1:], c.label[1:]


def attachment_statistics(gold: Sequence[Sentence], predicted: Sequence[tuple[Sequence[int], Sequence[str]]],
                          *, punct_tags: Iterable[str] = PUNCT_TAGS) -> list[tuple[int, int, int]]:
    """Per sentence: ``(correct heads, correct heads and labels, scored tokens)`` over the
    tokens whose gold POS is not in ``punct_tags`` (the rule of :func:`attachment_scores`,
    which sums these). ``predicted[k] = (heads, labels)`` for ``gold[k]`` (labels as strings)."""
    if len(gold) != len(predicted):
        raise ParserError(f"{len(gold)} gold trees but {len(predicted)} predictions")
    punct = frozenset(punct_tags)
    out = []
    for s, (heads, labels) in zip(gold, predicted):
        if len(heads) != len(s):
            raise ParserError(f"a prediction has {len(heads)} heads for a {len(s)}-token sentence")
        total = uas = las = 0
        for tag, gh, gl, ph, pl in zip(s.tags, s.heads, s.labels, heads, labels):
            if tag in punct:
                continue
            total += 1
            if gh == ph:
                uas += 1
                las += gl == pl
        out.append((uas, las, total))
    return out


def attachment_scores(gold: Sequence[Sentence], predicted: Sequence[tuple[Sequence[int], Sequence[str]]],
                      *, punct_tags: Iterable[str] = PUNCT_TAGS) -> dict[str, float]:
    """UAS and LAS (%) over tokens whose gold POS is not in ``punct_tags``; ``tokens`` = how many.

    ``predicted[k] = (heads, labels)`` for ``gold[k]`` (labels as strings). The sums of
    :func:`attachment_statistics`.
    """
    per = attachment_statistics(gold, predicted, punct_tags=punct_tags)
    uas, las, total = (sum(column) for column in zip(*per)) if per else (0, 0, 0)
    if total == 0:
        raise ParserError("no token left to score after excluding punctuation")
    return {"uas": 100.0 * uas / total, "las": 100.0 * las / total, "tokens": float(total)}


# =========================================================================== the task
class PTBParsingTask(Task):
    """Sun et al. Table 1, "PTB-Parsing": C&M's parser on a dependency treebank, metric UAS.

    ``dataset`` is a name for :func:`paramstress.data.load`: ``"ptb-dependency"`` (NLTK's
    sample, split by file with ``split``, default :data:`DEFAULT_SPLIT`) or
    ``"ptb-conll"`` (the full treebank, ``train``/``dev``/``test`` CoNLL files). Or pass
    ``splits={"train": [...], "dev": [...], ...}`` of :class:`Sentence` directly
    (tests). ``eval_split`` is the split :meth:`evaluate` scores. ``max_train_sentences``
    / ``max_eval_sentences`` keep the first sentences of a split (small profiles).
    The training data are the oracle (features → transition) pairs of the projective
    training sentences, batched ``batch_size`` at a time; ``loss`` is their mean
    cross-entropy. ``gradient_examples`` (``None`` = all) limits Algorithm 2's data ``D``
    to the first that many training transitions (a fixed subset).
    """

    key = "ptb-parsing"
    label = "PTB-Parsing"
    metric = "uas"
    metric_label = "UAS"
    higher_is_better = True
    units = "sentences"

    def __init__(self, *, dataset: str = "ptb-dependency", splits: Mapping[str, Sequence[Sentence]] | None = None,
                 split: Mapping[str, Sequence[int]] | None = None, eval_split: str = "dev",
                 max_train_sentences: int | None = None, max_eval_sentences: int | None = None,
                 embed_dim: int = 50, hidden: int = 200, dropout: float = 0.5, init: str = "scaled",
                 min_count: int = 2, lowercase: bool = True, batch_size: int = 512,
                 eval_batch_size: int = 1024, gradient_examples: int | None = None,
                 punct_tags: Iterable[str] = PUNCT_TAGS, device: torch.device | str = "cpu") -> None:
        for name, v in (("embed_dim", embed_dim), ("hidden", hidden), ("batch_size", batch_size),
                        ("eval_batch_size", eval_batch_size)):
            if int(v) < 1:
                raise ParserError(f"{name} must be >= 1, got {v}")
        for name, v in (("max_train_sentences", max_train_sentences), ("max_eval_sentences", max_eval_sentences),
                        ("gradient_examples", gradient_examples)):
            if v is not None and int(v) < 1:
                raise ParserError(f"{name} must be >= 1 or None, got {v}")
        if not 0.0 <= dropout < 1.0:
            raise ParserError(f"dropout must be in [0, 1), got {dropout}")
        if init not in ("scaled", "chen-manning"):
            raise ParserError(f"init must be 'scaled' or 'chen-manning', got {init!r}")
        self.device = torch.device(device)
        self.hparams = {"embed_dim": int(embed_dim), "hidden": int(hidden), "dropout": float(dropout), "init": init}
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.punct_tags = frozenset(punct_tags)
        self._data = None
        if splits is None:
            needed = {"train": max_train_sentences, eval_split: max_eval_sentences}
            splits, self._data, split_desc = self._load(dataset, split, needed)
        else:
            dataset, split_desc = "synthetic", "given"
            splits = {k: list(v) for k, v in splits.items()}
        if "train" not in splits or eval_split not in splits:
            raise ParserError(f"splits {sorted(splits)} need 'train' and the eval split {eval_split!r}")
        self.dataset, self.split_desc, self.eval_split = dataset, split_desc, eval_split
        self.train_sentences = list(splits["train"])[:max_train_sentences]
        self.eval_sentences = list(splits[eval_split])[:max_eval_sentences]
        if not self.eval_sentences:
            raise ParserError(f"the eval split {eval_split!r} is empty")
        self.limits = {"max_train_sentences": max_train_sentences, "max_eval_sentences": max_eval_sentences}
        self.vocab = Vocabulary(self.train_sentences, min_count=min_count, lowercase=lowercase)
        self.system = TransitionSystem(self.vocab.labels)
        self.train_data = oracle_data(self.train_sentences, self.vocab, self.system).to(self.device)
        if len(self.train_data.y) == 0:
            raise ParserError("no projective training sentence: nothing to train on")
        self.eval_data = oracle_data(self.eval_sentences, self.vocab, self.system).to(self.device)
        self.gradient_examples = None if gradient_examples is None else min(int(gradient_examples), len(self.train_data.y))

    @staticmethod
    def _load(dataset: str, split: Mapping[str, Sequence[int]] | None, needed: Mapping[str, int | None]):
        """Sentences of the ``needed`` splits (name → how many, None = all), the data, a description."""
        from paramstress.engine import data

        if dataset not in DATASETS:
            raise ParserError(f"dataset {dataset!r} is not a dependency treebank; use one of {', '.join(DATASETS)}")
        files = data.load(dataset)
        if dataset == "ptb-dependency":
            ranges = {k: (int(v[0]), int(v[1])) for k, v in (split or DEFAULT_SPLIT).items()}
            unknown = [k for k in needed if k not in ranges]
            if unknown:
                raise ParserError(f"splits {unknown} are not in the file split {ranges}; add their file ranges")
            sents = {}
            for name, limit in needed.items():  # only the files the task uses (fast small profiles)
                lo, hi = ranges[name]
                if lo > hi:
                    raise ParserError(f"split {name!r}: file range {lo}-{hi} is empty")
                read = read_nltk_dependency(files.nltk_root, [f"wsj_{i:04d}.dp" for i in range(lo, hi + 1)],
                                            max_sentences=limit)
                sents[name] = [x for v in read.values() for x in v]
            desc = ", ".join(f"{k} wsj_{lo:04d}-{hi:04d}" for k, (lo, hi) in ranges.items())
        else:  # ptb-conll
            sents = {}
            for name in ("train", "dev", "test"):
                found = [files.folder / f"{name}.{ext}" for ext in ("conll", "conllu")
                         if (files.folder / f"{name}.{ext}").is_file()]
                sents[name] = read_conll(found[0])
            desc = "train/dev/test CoNLL files"
        return sents, files, desc

    # ------------------------------------------------------------------ Task contract
    @property
    def labelled(self) -> bool:
        return self.system.num_labels > 1

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):  # the global generator is left as it was
            torch.manual_seed(seed)
            model = ChenManningParser(len(self.vocab.words), len(self.vocab.tags), len(self.vocab.label_tokens),
                                      self.system.num_transitions, **self.hparams)
        return model.to(self.device)

    def train_batches(self, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.train_data.y)
        order = torch.randperm(n, generator=generator).to(self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.train_data.x[idx], self.train_data.y[idx]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x).float(), y)

    def gradient_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        n = len(self.train_data.y) if self.gradient_examples is None else self.gradient_examples
        for start in range(0, n, self.eval_batch_size):
            stop = min(n, start + self.eval_batch_size)
            yield self.train_data.x[start:stop], self.train_data.y[start:stop], stop - start

    def gradient_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss(model, x, y)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Greedy parsing of the eval split → UAS (LAS too when the treebank has labels);
        ``loss`` = mean cross-entropy of the gold (oracle) transitions (``inf`` if not finite)."""
        return self._evaluate(model)[0]

    def evaluate_units(self, model: nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """:meth:`evaluate` and, per evaluated sentence with at least one scored token (gold
        POS not in ``punct_tags``), ``(correct heads, scored tokens)`` of that parse: an
        ``(n, 2)`` float64 array (integers) whose column sums give the UAS exactly
        (:meth:`combine`: ``100·Σcorrect/Σtokens``, :func:`attachment_scores`' rule).
        Sentences made only of punctuation carry no scored token and are left out."""
        out, per = self._evaluate(model)
        stats = np.asarray([(uas, total) for uas, _, total in per if total > 0], dtype=np.float64).reshape(-1, 2)
        return out, stats

    def combine(self, unit_stats: np.ndarray) -> float:
        """UAS (%) of per-sentence ``(correct heads, scored tokens)``: ``100·Σcorrect/Σtokens``."""
        from paramstress.corruption.text.bootstrap import ratio_of_sums

        return ratio_of_sums(unit_stats, scale=100.0)

    def _evaluate(self, model: nn.Module) -> tuple[dict[str, float], list[tuple[int, int, int]]]:
        """The metrics of :meth:`evaluate` and the per-sentence :func:`attachment_statistics`."""
        with eval_mode(model), torch.inference_mode():
            pred = parse(model, self.eval_sentences, self.vocab, self.system, batch_size=self.eval_batch_size)
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            x, y = self.eval_data.x, self.eval_data.y
            for start in range(0, len(y), self.eval_batch_size):
                logits = model(x[start:start + self.eval_batch_size]).float()
                total += F.cross_entropy(logits, y[start:start + self.eval_batch_size], reduction="sum").double()
        loss = float(total) / max(1, len(y)) if len(y) else math.nan
        if not math.isfinite(loss) and len(y):
            loss = math.inf
        labels = self.vocab.labels
        predicted = [(h, [labels[i] for i in l]) for h, l in pred]
        scores = attachment_scores(self.eval_sentences, predicted, punct_tags=self.punct_tags)
        out = {"uas": scores["uas"], "loss": loss}
        if self.labelled:
            out["las"] = scores["las"]
        return out, attachment_statistics(self.eval_sentences, predicted, punct_tags=self.punct_tags)

    def reference_scores(self) -> dict[str, float]:
        """UAS of two trivial parsers on the eval split: every word's head is the next word
        (the last word is the root) or the previous word (the first word is the root)."""
        nxt = [([i + 1 for i in range(1, len(s))] + [0], s.labels) for s in self.eval_sentences]
        prev = [(list(range(0, len(s))), s.labels) for s in self.eval_sentences]
        return {name: attachment_scores(self.eval_sentences, pred, punct_tags=self.punct_tags)["uas"]
                for name, pred in (("head = next word", nxt), ("head = previous word", prev))}

    def identity(self) -> dict:
        return {
            "task": self.key, "dataset": self.dataset,
            "checksum": getattr(self._data, "checksum", "") or _sentences_digest(self.train_sentences),
            "split": self.split_desc, **self.limits,
            "train_sentences": len(self.train_sentences), "train_transitions": int(len(self.train_data.y)),
            "vocab": self.vocab.sizes(), "min_count": self.vocab.min_count, "lowercase": self.vocab.lowercase,
            "batch_size": self.batch_size, "model": dict(self.hparams), "features": len(FEATURE_NAMES),
        }

    def provenance(self) -> dict:
        out: dict[str, Any] = {"dataset": self.dataset, "source": getattr(self._data, "source", "synthetic"),
                               "checksum": getattr(self._data, "checksum", "") or _sentences_digest(self.train_sentences),
                               "split": self.split_desc}
        out.update(self.summary())
        return out

    def summary(self) -> dict[str, Any]:
        """Sizes for the notebook: sentences, tokens, oracle transitions, skipped sentences."""
        return {
            "train sentences": len(self.train_sentences),
            "train tokens": sum(len(s) for s in self.train_sentences),
            "train transitions": int(len(self.train_data.y)),
            "non-projective skipped": self.train_data.non_projective,
            f"{self.eval_split} sentences": len(self.eval_sentences),
            f"{self.eval_split} scored tokens": sum(t not in self.punct_tags for s in self.eval_sentences for t in s.tags),
            "labels": len(self.vocab.labels), "words": len(self.vocab.words), "tags": len(self.vocab.tags),
        }


def _sentences_digest(sentences: Sequence[Sentence]) -> str:
    h = hashlib.md5()
    for s in sentences:
        h.update(json.dumps([s.words, s.tags, s.heads, s.labels]).encode())
    return h.hexdigest()
