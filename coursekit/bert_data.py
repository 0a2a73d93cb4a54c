"""Data for BERT: a WordPiece tokenizer, real English text, next-sentence pairs and dynamic masking.

Shape legend: B batch, S sequence length (padded), V vocabulary size.

- :class:`WordPieceTokenizer`: BERT's uncased WordPiece (Wu et al., 2016), trained offline with the
  ``tokenizers`` library or loaded from an existing ``vocab.txt`` by the same code.
- :func:`stdlib_documents`: the docstrings of the Python standard library, read with :mod:`ast` (nothing is
  imported or downloaded), as documents (a module, or a class with its methods) of sentences.
- :class:`NextSentenceDataset`: ``[CLS] A [SEP] B [SEP]`` pairs, B the next sentence half of the time and a
  sentence from another document otherwise (Devlin et al., 2019, section 3.1, task 2).
- :func:`mask_tokens` and :class:`MLMCollator`: 15% of the tokens chosen, 80% of those replaced by [MASK],
  10% by a random token, 10% kept (section 3.1, task 1; appendix C.2); drawn afresh for every batch.

Masks follow torch.nn: ``key_padding_mask`` True at padding.

Book: chapter "BERT".
"""

from __future__ import annotations

import ast
import math
import os
import random
import re
import sysconfig
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
IGNORE_INDEX = -100  # the label of positions the MLM loss skips (F.cross_entropy's default ignore_index)


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


class WordPieceTokenizer:
    """BERT's tokenizer: clean and lowercase, split on whitespace and punctuation, then greedy longest-match
    WordPiece, continuation pieces marked ``##`` (Devlin et al., 2019, section 3; Wu et al., 2016).

    Build it with :meth:`train` (a new vocabulary from text) or :meth:`from_vocab` (an existing ``vocab.txt``,
    e.g. all-MiniLM-L6-v2's); both go through :func:`_pipeline`, so they tokenize alike.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with a WordPiece model whose vocabulary holds the five
            special tokens.
    """

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}; BERT needs {list(SPECIAL_TOKENS)}")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (
            tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000, min_frequency: int = 2,
              lowercase: bool = True) -> WordPieceTokenizer:
        """Learn a WordPiece vocabulary of at most ``vocab_size`` entries; the special tokens get ids 0..4."""
        from tokenizers import Tokenizer, models, trainers

        tokenizer = _pipeline(Tokenizer(models.WordPiece(unk_token=UNK)), lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
        tokenizer.train_from_iterator(texts, trainer)
        return cls(tokenizer)

    @classmethod
    def from_vocab(cls, path: str | Path, lowercase: bool = True) -> WordPieceTokenizer:
        """Load a ``vocab.txt`` (one token per line, the line number is the id), or a directory holding one."""
        from tokenizers import Tokenizer, models

        path = Path(path)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        return cls(_pipeline(Tokenizer(models.WordPiece.from_file(str(path), unk_token=UNK)), lowercase))

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.txt`` into ``directory`` (what :meth:`from_vocab` and Hugging Face read). Returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = self._tokenizer.get_vocab()
        (directory / "vocab.txt").write_text("".join(t + "\n" for t in sorted(vocab, key=vocab.get)), encoding="utf-8")
        return directory / "vocab.txt"

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size()

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids of [PAD], [UNK], [CLS], [SEP], [MASK]: never chosen for masking nor drawn as random tokens."""
        return self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id

    def tokenize(self, text: str) -> list[str]:
        """The WordPiece tokens of ``text`` (no special tokens added)."""
        return self._tokenizer.encode(text, add_special_tokens=False).tokens

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without [CLS]/[SEP]."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """:meth:`encode` for many texts at once (in parallel inside ``tokenizers``)."""
        return [e.ids for e in self._tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def id_to_token(self, token_id: int) -> str:
        token = self._tokenizer.id_to_token(int(token_id))
        if token is None:
            raise ValueError(f"id {token_id} is outside the vocabulary of {self.vocab_size} tokens")
        return token

    def token_to_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        return self.unk_id if token_id is None else token_id

    def convert_ids_to_tokens(self, ids: Iterable[int] | Tensor) -> list[str]:
        return [self.id_to_token(i) for i in (ids.tolist() if isinstance(ids, Tensor) else ids)]

    def decode(self, ids: Iterable[int] | Tensor, skip_special: bool = True) -> str:
        """Text from ids, ``##`` pieces joined to their word."""
        ids = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return self._tokenizer.decode(ids, skip_special_tokens=skip_special)

    def encode_pair(self, a: str | list[int], b: str | list[int] | None = None,
                    max_len: int | None = None) -> tuple[list[int], list[int]]:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` ids and their segment ids (0 for A, 1 for B).

        Texts are tokenized; id lists are used as given. The longer of A and B loses tokens from its end
        until the pair fits in ``max_len``.
        """
        a = self.encode(a) if isinstance(a, str) else list(a)
        b = (self.encode(b) if isinstance(b, str) else list(b)) if b is not None else None
        return build_pair(a, b, self.cls_id, self.sep_id, max_len)

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size})"


def _pipeline(tokenizer: object, lowercase: bool) -> object:
    """BERT's normalizer (clean control characters, split CJK, lowercase and strip accents if uncased),
    pre-tokenizer (whitespace and punctuation) and ``##`` decoder around a WordPiece model."""
    from tokenizers import decoders, normalizers, pre_tokenizers

    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=None, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return tokenizer


def build_pair(a: list[int], b: list[int] | None, cls_id: int, sep_id: int,
               max_len: int | None = None) -> tuple[list[int], list[int]]:
    """``[CLS] a [SEP] (b [SEP])`` and segment ids, the longer side truncated first so the total fits ``max_len``."""
    a, b = list(a), list(b) if b is not None else None
    if max_len is not None:
        budget = max_len - (3 if b is not None else 2)
        if budget < (2 if b is not None else 1):
            raise ValueError(f"max_len={max_len} leaves no room for the sentences after [CLS] and [SEP]")
        while len(a) + (len(b) if b is not None else 0) > budget:
            (a if b is None or len(a) >= len(b) else b).pop()
    ids = [cls_id, *a, sep_id]
    types = [0] * len(ids)
    if b is not None:
        ids += [*b, sep_id]
        types += [1] * (len(b) + 1)
    return ids, types


# --------------------------------------------------------------------------------------------------
# Text: the standard library's docstrings
# --------------------------------------------------------------------------------------------------


class Document(NamedTuple):
    """One document: a module (its docstring and its functions') or a class (its docstring and its methods')."""

    name: str  # dotted, e.g. "email.message.Message"
    sentences: list[str]

    @property
    def package(self) -> str:
        """The top-level package or module, e.g. "email"."""
        return self.name.split(".")[0]


_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__",
                        "encodings", "turtledemo", "pydoc_data"})
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")


def docstring_sentences(docstring: str | None, min_words: int = 4, max_words: int = 60) -> list[str]:
    """Prose sentences of one docstring: paragraphs of code, doctests and indented tables are dropped, lines
    joined, and the text split after ``.``, ``!`` or ``?`` before a capital; sentences that are mostly symbols,
    too short or too long are dropped.
    """
    sentences = []
    for paragraph in re.split(r"\n\s*\n", docstring or ""):
        lines = [line for line in paragraph.splitlines() if line.strip()]
        if not lines or any(line.lstrip().startswith((">>>", "...", "$ ", "%")) for line in lines):
            continue
        if min(len(line) - len(line.lstrip()) for line in lines) >= 4:  # a code block or a parameter table
            continue
        text = " ".join(line.strip() for line in lines)
        for sentence in _SENTENCE_END.split(text.removesuffix("::")):
            sentence = sentence.strip()
            n_words = len(sentence.split())
            letters = sum(ch.isalpha() or ch == " " for ch in sentence)
            if (min_words <= n_words <= max_words and sentence[0].isupper() and sentence[-1] in ".!?"
                    and letters >= 0.85 * len(sentence)):
                sentences.append(sentence)
    return sentences


def stdlib_documents(packages: Iterable[str] | None = None, root: str | Path | None = None,
                     min_sentences: int = 2, deduplicate: bool = True) -> list[Document]:
    """The standard library's docstrings as documents of sentences, read with :mod:`ast` (nothing is imported).

    A module's document is its docstring followed by its top-level functions'; each class is a document of
    its own (class docstring, then its methods'). Test suites, codecs and demos are skipped. With Python 3.11,
    about 1,100 documents, 13k distinct sentences and 175k words, in a few seconds.

    Args:
        packages: only these top-level packages/modules (e.g. ``["email", "json"]``); all if None.
        root: the library directory; defaults to this interpreter's (``sysconfig``'s "stdlib").
        min_sentences: drop documents with fewer sentences (a next sentence needs two).
        deduplicate: keep only the first occurrence of a sentence repeated elsewhere (about 8% are, e.g.
            "This method is deprecated."), so a held-out document never repeats a training sentence.

    Returns:
        Documents in a fixed order (sorted paths, then source order).
    """
    root = Path(root or sysconfig.get_paths()["stdlib"])
    wanted = set(packages) if packages is not None else None
    documents = []
    for path in _python_files(root):
        parts = path.relative_to(root).with_suffix("").parts
        if wanted is not None and parts[0] not in wanted:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        module_sentences = docstring_sentences(ast.get_docstring(tree))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                module_sentences += docstring_sentences(ast.get_docstring(node))
            elif isinstance(node, ast.ClassDef):
                sentences = docstring_sentences(ast.get_docstring(node))
                for member in node.body:
                    if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        sentences += docstring_sentences(ast.get_docstring(member))
                documents.append(Document(f"{module}.{node.name}", sentences))
        documents.append(Document(module, module_sentences))
    if deduplicate:
        documents = _first_occurrences(documents)
    return [d for d in documents if len(d.sentences) >= min_sentences]


def _first_occurrences(documents: list[Document]) -> list[Document]:
    """The documents with every sentence already seen in an earlier one (or earlier in the same) removed."""
    seen: set[str] = set()
    kept = []
    for d in documents:
        fresh = []
        for sentence in d.sentences:
            if sentence not in seen:
                seen.add(sentence)
                fresh.append(sentence)
        kept.append(Document(d.name, fresh))
    return kept


def _python_files(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root`` in sorted order, not descending into :data:`_SKIP_DIRS`."""
    files = []
    for directory, subdirs, names in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
        files += [Path(directory, n) for n in sorted(names) if n.endswith(".py")]
    return sorted(files)


def split_documents(documents: Sequence[Document], valid_fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[Document], list[Document]]:
    """Shuffle whole documents into (train, held-out), so no held-out sentence is seen in pretraining."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    order = list(range(len(documents)))
    random.Random(seed).shuffle(order)
    n_valid = max(1, round(valid_fraction * len(documents)))
    return [documents[i] for i in order[n_valid:]], [documents[i] for i in order[:n_valid]]


# --------------------------------------------------------------------------------------------------
# Next sentence prediction
# --------------------------------------------------------------------------------------------------

IS_NEXT, NOT_NEXT = 0, 1  # NSP labels, as in Hugging Face's BertForPreTraining


class PairExample(NamedTuple):
    """One NSP example and where its halves came from: document indices ``doc_a``/``doc_b`` and the sentence
    ranges ``span_a``/``span_b`` (start, stop) within them. When IsNext, ``doc_b == doc_a`` and
    ``span_b[0] == span_a[1]``."""

    input_ids: list[int]
    token_type_ids: list[int]
    nsp_label: int
    doc_a: int
    doc_b: int
    span_a: tuple[int, int]
    span_b: tuple[int, int]


class NextSentenceDataset(Dataset):
    """``[CLS] A [SEP] B [SEP]`` pairs for next sentence prediction (Devlin et al., 2019, section 3.1, task 2).

    Each document is walked once from the start. A is the next run of whole sentences (one, or with ``pack``
    as many as fill half of ``max_len``: "a sentence can be an arbitrary span of contiguous text", section 3.1).
    With probability ``next_prob`` (0.5) B is the text that follows A (label :data:`IS_NEXT`) and the walk
    continues after B; otherwise B is taken from a random sentence of a uniformly random OTHER document
    (label :data:`NOT_NEXT`) and the walk continues right after A. B fills the rest of ``max_len``.
    Pairs are drawn once, from ``seed``; masking is left to the collate function, so it changes every batch.

    Args:
        documents: at least two, each a list of sentences.
        tokenizer: a :class:`WordPieceTokenizer`.
        max_len: longest pair, special tokens included; a pair still too long (a long sentence) loses tokens
            from the end of its longer half.
        next_prob: probability that B is the true continuation.
        pack: pack several sentences into A and B (True) or use exactly one sentence each (False).
        dupe_factor: walk the documents this many times, each with new random choices (BERT's
            ``dupe_factor``): more distinct pairs for the same text.
        seed: for the choice of B.
    """

    def __init__(self, documents: Sequence[Document], tokenizer: WordPieceTokenizer, max_len: int = 128,
                 next_prob: float = 0.5, pack: bool = True, dupe_factor: int = 1, seed: int = 0) -> None:
        if len(documents) < 2:
            raise ValueError("next sentence prediction needs at least two documents (random B comes from another one)")
        self.tokenizer, self.max_len = tokenizer, max_len
        flat = tokenizer.encode_batch([s for d in documents for s in d.sentences])
        ids, start = [], 0
        for d in documents:  # per document, its sentences' ids
            ids.append(flat[start:start + len(d.sentences)])
            start += len(d.sentences)
        budget = max_len - 3  # [CLS] A [SEP] B [SEP]
        rng = random.Random(seed)
        self.examples: list[PairExample] = []
        for i, sentences in [(i, sentences) for _ in range(dupe_factor) for i, sentences in enumerate(ids)]:
            k = 0
            while k < len(sentences) - 1:
                a_stop = _span_end(sentences, k, budget // 2 if pack else 0, limit=len(sentences) - 1)
                a = [t for s in sentences[k:a_stop] for t in s]
                if rng.random() < next_prob:
                    j, b_start = i, a_stop
                else:
                    j = rng.randrange(len(ids) - 1)
                    j += j >= i  # uniform over the other documents
                    b_start = rng.randrange(len(ids[j]))
                b_stop = _span_end(ids[j], b_start, budget - len(a) if pack else 0, limit=len(ids[j]))
                b = [t for s in ids[j][b_start:b_stop] for t in s]
                input_ids, token_type_ids = build_pair(a, b, tokenizer.cls_id, tokenizer.sep_id, max_len)
                label = IS_NEXT if j == i else NOT_NEXT
                self.examples.append(PairExample(input_ids, token_type_ids, label, i, j, (k, a_stop), (b_start, b_stop)))
                k = b_stop if label == IS_NEXT else a_stop

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> PairExample:
        return self.examples[index]


def _span_end(sentences: Sequence[list[int]], start: int, budget: int, limit: int) -> int:
    """End (exclusive) of the run of sentences from ``start``: at least one, more while they fit in ``budget``
    tokens, never past ``limit``."""
    stop, used = start + 1, len(sentences[start])
    while stop < limit and used + len(sentences[stop]) <= budget:
        used += len(sentences[stop])
        stop += 1
    return stop


# --------------------------------------------------------------------------------------------------
# Masked language model: dynamic masking in the collate function
# --------------------------------------------------------------------------------------------------


def mask_tokens(
    input_ids: Tensor,
    *,
    mask_id: int,
    special_ids: Sequence[int],
    vocab_size: int,
    mask_prob: float = 0.15,
    replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1),
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    r"""BERT's masking (Devlin et al., 2019, section 3.1, task 1, and appendix C.2).

    Each token that is not special ([CLS], [SEP], [PAD], ...) is chosen with probability ``mask_prob``; a
    chosen token becomes [MASK] with probability 0.8, a random non-special token with 0.1, and stays as it
    is with 0.1. The model must predict the original token at every chosen position.

    Args:
        input_ids: (B, S) ids, padding included.
        mask_id: the [MASK] id. special_ids: ids never chosen and never drawn as random tokens.
        vocab_size: V; random tokens come from the non-special ids below it.
        mask_prob: fraction of tokens chosen. replace_probs: ([MASK], random, unchanged), summing to 1.
        generator: source of randomness (for reproducible batches).

    Shape:
        Returns ``(masked_ids, labels)``, both (B, S): labels hold the original id at chosen positions and
        :data:`IGNORE_INDEX` (-100) elsewhere.
    """
    p_mask, p_random, p_keep = replace_probs
    if abs(p_mask + p_random + p_keep - 1.0) > 1e-6 or min(replace_probs) < 0:
        raise ValueError(f"replace_probs must be three non-negative numbers summing to 1, got {replace_probs}")
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), device=input_ids.device))  # (B, S)
    chosen = (torch.rand(input_ids.shape, generator=generator) < mask_prob).to(input_ids.device) & ~special
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)  # (B, S)
    fate = torch.rand(input_ids.shape, generator=generator).to(input_ids.device)  # (B, S): which replacement
    to_mask = chosen & (fate < p_mask)
    to_random = chosen & (fate >= p_mask) & (fate < p_mask + p_random)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[list(special_ids)] = False
    candidates = allowed.nonzero().squeeze(1).to(input_ids.device)  # (V',) the non-special ids
    random_ids = candidates[torch.randint(len(candidates), input_ids.shape, generator=generator).to(input_ids.device)]
    masked = input_ids.masked_fill(to_mask, mask_id)
    masked = torch.where(to_random, random_ids, masked)  # (B, S)
    return masked, labels


class PretrainingBatch(NamedTuple):
    """A padded batch for :meth:`coursekit.bert.BertForPreTraining.compute_loss`.

    Shape: ``input_ids`` (B, S) after masking, ``token_type_ids`` (B, S), ``key_padding_mask`` (B, S) True at
    padding, ``mlm_labels`` (B, S) original ids at chosen positions and -100 elsewhere, ``nsp_labels`` (B,).
    """

    input_ids: Tensor
    token_type_ids: Tensor
    key_padding_mask: Tensor
    mlm_labels: Tensor
    nsp_labels: Tensor

    def to(self, device: torch.device | str) -> PretrainingBatch:
        return PretrainingBatch(*(t.to(device, non_blocking=True) for t in self))


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Right-pad id lists to the longest. Shape: B lists -> (B, S)."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad_id] * (longest - len(s)) for s in sequences], dtype=torch.long)


class MLMCollator:
    """Collate :class:`PairExample` s into a :class:`PretrainingBatch`, masking with :func:`mask_tokens` afresh
    at every call: each epoch sees different masks of the same sentences (dynamic masking, Liu et al., 2019).

    Args:
        tokenizer: gives the [PAD]/[MASK]/special ids and V.
        mask_prob, replace_probs: as in :func:`mask_tokens`.
        seed: seeds this collator's own generator (None: torch's global one).
    """

    def __init__(self, tokenizer: WordPieceTokenizer, mask_prob: float = 0.15,
                 replace_probs: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int | None = 0) -> None:
        self.pad_id, self.mask_id, self.special_ids = tokenizer.pad_id, tokenizer.mask_id, tokenizer.special_ids
        self.vocab_size, self.mask_prob, self.replace_probs = tokenizer.vocab_size, mask_prob, replace_probs
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __call__(self, examples: Sequence[PairExample]) -> PretrainingBatch:
        input_ids = pad_batch([e.input_ids for e in examples], self.pad_id)  # (B, S)
        token_type_ids = pad_batch([e.token_type_ids for e in examples], 0)  # (B, S)
        lengths = torch.tensor([len(e.input_ids) for e in examples])  # (B,)
        key_padding_mask = torch.arange(input_ids.size(1))[None, :] >= lengths[:, None]  # (B, S)
        masked, labels = mask_tokens(input_ids, mask_id=self.mask_id, special_ids=self.special_ids,
                                     vocab_size=self.vocab_size, mask_prob=self.mask_prob,
                                     replace_probs=self.replace_probs, generator=self.generator)
        nsp_labels = torch.tensor([e.nsp_label for e in examples], dtype=torch.long)  # (B,)
        return PretrainingBatch(masked, token_type_ids, key_padding_mask, labels, nsp_labels)


class BucketBatchSampler(Sampler[list[int]]):
    """Random batches of similar lengths, so little of each batch is padding.

    Every epoch: shuffle the indices, cut them into pools of ``pool`` batches, sort each pool by length, cut
    it into batches and shuffle the batches. Every index appears exactly once per epoch.

    Args:
        lengths: length of each example. batch_size: examples per batch (the last one may be smaller).
        pool: batches per pool; 1 gives plain random batches. seed: for the shuffles.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, pool: int = 50, seed: int = 0) -> None:
        self.lengths, self.batch_size, self.pool = list(lengths), batch_size, pool
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        size = self.batch_size * self.pool
        batches = []
        for start in range(0, len(order), size):
            chunk = sorted(order[start:start + size], key=self.lengths.__getitem__)
            batches += [chunk[i:i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        for i in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[i]

    def __len__(self) -> int:
        full_pools, rest = divmod(len(self.lengths), self.batch_size * self.pool)
        return full_pools * self.pool + math.ceil(rest / self.batch_size)


def make_pretraining_loader(dataset: NextSentenceDataset, batch_size: int, shuffle: bool = True,
                            seed: int = 0) -> DataLoader:
    """Batches of :class:`PretrainingBatch`, masked afresh each time; ``seed`` fixes the order and the masks.

    With ``shuffle``, batches are random but of similar lengths (:class:`BucketBatchSampler`); without, in order.
    """
    collate = MLMCollator(dataset.tokenizer, seed=seed)
    if not shuffle:
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)
    lengths = [len(e.input_ids) for e in dataset.examples]
    return DataLoader(dataset, batch_sampler=BucketBatchSampler(lengths, batch_size, seed=seed), collate_fn=collate)
