"""Data for the sequence-to-sequence exercises, generated offline from real language rules.

Shape legend: B batch, S source length, T target length. Everything is batch-first.

Two tasks, both small enough to train on a laptop and both with a known alignment:

- **Dates** (the classic human date -> ISO task used to show Bahdanau attention):
  ``"lundi 2 janvier 1950"`` -> ``"1950-01-02"``, character by character. The human side is written
  by :func:`babel.dates.format_date` in English, French, German and Spanish.
- **Number words** (from :mod:`num2words`): ``42`` is ``forty two`` in English but
  ``zwei und vierzig`` in German, units before tens, so an English -> German model has to learn
  *crossing* alignments. French and plain digits are there too (e.g. words -> digits).

The pipeline: make pairs of strings or token lists -> :func:`split_pairs` -> :meth:`Vocab.build` on the
training split -> :class:`TranslationDataset` -> :func:`make_loader`, whose batches are
:class:`Seq2SeqBatch`. :func:`date_task` and :func:`number_task` do all of it in one call.

Masks follow :mod:`coursekit.masks`: **True means "not allowed"** (here: a padding position).
"""

from __future__ import annotations

import functools
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import NamedTuple, TypeVar

import torch
from babel import Locale
from babel.dates import format_date, tokenize_pattern
from num2words import num2words
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from coursekit.masks import padding_mask

SPECIAL_TOKENS = ("[PAD]", "[START]", "[STOP]", "[UNK]")

TokenPair = tuple[list[str], list[str]]
Src = TypeVar("Src")
Tgt = TypeVar("Tgt")


# --------------------------------------------------------------------------------------------------
# Vocabulary
# --------------------------------------------------------------------------------------------------


class Vocab:
    """A token <-> id table whose first ids are the special tokens ``[PAD]``, ``[START]``, ``[STOP]``, ``[UNK]``.

    Args:
        tokens: the ordinary tokens in id order; they get ids 4, 5, ... (use :meth:`build` to count them).
    """

    def __init__(self, tokens: Iterable[str]) -> None:
        self._tokens = list(SPECIAL_TOKENS)
        for token in tokens:
            if token in SPECIAL_TOKENS:
                raise ValueError(f"{token!r} is a special token; pass only the ordinary tokens")
            self._tokens.append(token)
        self._ids = {token: i for i, token in enumerate(self._tokens)}
        if len(self._ids) != len(self._tokens):
            duplicates = sorted(t for t, c in Counter(self._tokens).items() if c > 1)
            raise ValueError(f"duplicate tokens in the vocabulary: {duplicates}")

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], min_freq: int = 1) -> Vocab:
        """Count tokens and keep those seen at least ``min_freq`` times.

        Ids are deterministic: by frequency (most frequent first), ties broken by the token itself.

        Args:
            sequences: token lists, e.g. the sources of the training split.
            min_freq: rarer tokens are left out and will encode as ``[UNK]``.
        """
        if min_freq < 1:
            raise ValueError(f"min_freq must be at least 1, got {min_freq}")
        counts = Counter(token for sequence in sequences for token in sequence)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)  # they already have ids 0-3
        kept = [token for token, count in counts.items() if count >= min_freq]
        return cls(sorted(kept, key=lambda token: (-counts[token], token)))

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def start_id(self) -> int:
        return 1

    @property
    def stop_id(self) -> int:
        return 2

    @property
    def unk_id(self) -> int:
        return 3

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, specials included (``tokens[i]`` has id ``i``)."""
        return list(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self._tokens == other._tokens

    def __repr__(self) -> str:
        shown = self._tokens[len(SPECIAL_TOKENS) : len(SPECIAL_TOKENS) + 10]
        more = ", ..." if len(self) > len(SPECIAL_TOKENS) + 10 else ""
        return f"Vocab(size={len(self)}, tokens={shown!r}{more})"

    def encode(self, tokens: Iterable[str], add_start: bool = False, add_stop: bool = False) -> list[int]:
        """Token list -> ids; unknown tokens become ``unk_id``."""
        ids = [self._ids.get(token, self.unk_id) for token in tokens]
        return ([self.start_id] if add_start else []) + ids + ([self.stop_id] if add_stop else [])

    def decode(self, ids: Iterable[int] | Tensor, strip_special: bool = True) -> list[str]:
        """Ids -> tokens.

        Args:
            ids: a list of ids or a 1-D tensor (e.g. one row of a model's greedy output).
            strip_special: stop at the first ``[STOP]`` and drop ``[PAD]`` and ``[START]``, which is what
                you want for a model's output. ``[UNK]`` is kept: it stands for a real token.
        """
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence, shape (T,); got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        tokens = []
        for i in ids:
            if not 0 <= i < len(self._tokens):
                raise IndexError(f"id {i} is outside this vocabulary (ids 0..{len(self) - 1})")
            if strip_special and i == self.stop_id:
                break
            if strip_special and i in (self.pad_id, self.start_id):
                continue
            tokens.append(self._tokens[i])
        return tokens

    def to_dict(self) -> dict[str, list[str]]:
        """A plain dict to store in a checkpoint; :meth:`from_dict` reads it back."""
        return {"tokens": self.tokens}

    @classmethod
    def from_dict(cls, data: dict[str, list[str]]) -> Vocab:
        tokens = list(data["tokens"])
        if tuple(tokens[: len(SPECIAL_TOKENS)]) != SPECIAL_TOKENS:
            raise ValueError(f"a saved Vocab starts with {list(SPECIAL_TOKENS)}, got {tokens[:4]}")
        return cls(tokens[len(SPECIAL_TOKENS) :])


# --------------------------------------------------------------------------------------------------
# Dates: human date -> ISO
# --------------------------------------------------------------------------------------------------

DATE_LANGUAGES = ("en", "fr", "de", "es")

_BABEL_STYLES = ("short", "medium", "long", "full")

# Babel's four styles per language plus a few CLDR patterns. Every format must let the reader recover
# the date *without knowing the language*: English's own "short" (M/d/yy, month first) is left out
# because "1/2/50" would also be Spanish d/M/yy for 1 February. All other numeric formats are day first.
DATE_FORMATS: dict[str, tuple[str, ...]] = {
    "en": ("medium", "long", "full", "d MMM y", "EEEE d MMMM y", "dd/MM/y"),
    "fr": _BABEL_STYLES + ("EEE d MMM y", "d/M/y"),
    "de": _BABEL_STYLES + ("d. MMM y", "EEE, d.M.y"),
    "es": _BABEL_STYLES + ("d MMMM y", "EEE, d MMM y"),
}


def _check_languages(languages: Sequence[str], supported: Sequence[str], what: str) -> None:
    if isinstance(languages, str):
        raise TypeError(f"languages must be a sequence of codes such as ('en', 'fr'), not the string {languages!r}")
    if not languages:
        raise ValueError(f"languages is empty; choose from {', '.join(supported)}")
    for lang in languages:
        if lang not in supported:
            raise ValueError(f"unknown {what} language {lang!r}; supported: {', '.join(supported)}")


@functools.lru_cache(maxsize=None)
def _date_patterns(lang: str, allow_two_digit_years: bool) -> tuple[str, ...]:
    """The CLDR patterns for ``lang`` (babel style names resolved), e.g. 'short' -> 'dd.MM.yy' for de."""
    locale = Locale.parse(lang)
    patterns = []
    for fmt in DATE_FORMATS[lang]:
        pattern = locale.date_formats[fmt].pattern if fmt in _BABEL_STYLES else fmt
        two_digit_year = ("field", ("y", 2)) in tokenize_pattern(pattern)
        if allow_two_digit_years or not two_digit_year:
            patterns.append(pattern)
    return tuple(patterns)


def make_date_pairs(
    n: int,
    seed: int = 0,
    languages: Sequence[str] = DATE_LANGUAGES,
    start: date = date(1950, 1, 1),
    end: date = date(2049, 12, 31),
) -> list[tuple[str, str]]:
    """Random (human date, ISO date) pairs such as ``("2. Januar 1950", "1950-01-02")``.

    Each pair draws a day uniformly from ``start..end``, then a language, then one of its
    :data:`DATE_FORMATS`. The human side is babel's real output, capitals and punctuation included.

    Two-digit years ('yy', e.g. German "02.01.50") are used only when the range covers at most 100
    calendar years, so that each 'yy' names one year: with the default range, 50-99 means 19xx and
    00-49 means 20xx. Over a wider range those formats are skipped.

    Args:
        n: number of pairs (duplicates are possible; :func:`split_pairs` removes them).
        seed: the same seed gives the same pairs.
        languages: any of :data:`DATE_LANGUAGES`.
        start, end: the range of dates, both included.

    Returns:
        A list of ``n`` (human, "YYYY-MM-DD") string pairs.
    """
    _check_languages(languages, DATE_LANGUAGES, "date")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if start > end:
        raise ValueError(f"start ({start}) is after end ({end})")
    allow_yy = end.year - start.year < 100
    locales = {lang: Locale.parse(lang) for lang in languages}  # parsed once: format_date is the hot loop
    patterns = {lang: _date_patterns(lang, allow_yy) for lang in languages}
    n_days = (end - start).days + 1
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        day = start + timedelta(days=rng.randrange(n_days))
        lang = rng.choice(languages)
        pattern = rng.choice(patterns[lang])
        pairs.append((format_date(day, pattern, locale=locales[lang]), day.isoformat()))
    return pairs


def char_tokens(s: str) -> list[str]:
    """Character-level tokens: ``"2 ene"`` -> ``["2", " ", "e", "n", "e"]``."""
    if not isinstance(s, str):
        raise TypeError(f"char_tokens takes a string, got {type(s).__name__}")
    return list(s)


# --------------------------------------------------------------------------------------------------
# Number words
# --------------------------------------------------------------------------------------------------

NUMBER_LANGUAGES = ("en", "fr", "de", "digits")
MAX_NUMBER = 999_999  # the German lexicon below stops at "tausend"; "eine Million" would need more

# German writes numbers as one compound ("dreitausendvierhundertzweiundvierzig"); we cut it into these
# morphemes by greedy longest match. Choices:
# - "ein" (inside a compound: einhundert, einundzwanzig) and "eins" (standing alone or last:
#   einhunderteins) stay distinct tokens, as num2words writes them.
# - The teens 13-19 are single tokens like "elf" and "zwölf": their stems ("sech", "sieb") are not
#   words, and English "seventeen" is one token too. Crossing alignments come from 21-99.
_GERMAN_MORPHEMES = (
    "null", "ein", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun",
    "zehn", "elf", "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn",
    "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig",
    "hundert", "tausend", "und",
)  # fmt: skip
_LONGEST_FIRST = sorted(_GERMAN_MORPHEMES, key=len, reverse=True)


def split_german_number(word: str) -> list[str]:
    """Cut a German number word into morphemes, longest match first.

    Example:
        >>> split_german_number("zweiundvierzig")
        ['zwei', 'und', 'vierzig']
    """
    morphemes, i = [], 0
    while i < len(word):
        match = next((m for m in _LONGEST_FIRST if word.startswith(m, i)), None)
        if match is None:
            raise ValueError(f"cannot split {word!r}: no known morpheme at {word[i:]!r}")
        morphemes.append(match)
        i += len(match)
    return morphemes


# num2words takes ~0.1 ms a call; tasks ask for the same numbers over and over.
@functools.lru_cache(maxsize=1 << 19)
def _number_words(n: int, lang: str) -> tuple[str, ...]:
    if lang == "digits":
        return tuple(str(n))
    if lang == "de":
        return tuple(split_german_number(num2words(n, lang="de")))
    if lang == "en":
        # num2words writes British "one hundred and one"; we drop "and" (and commas) for the shorter
        # American "one hundred one", and split hyphens: "forty-two" -> "forty", "two".
        words = num2words(n, lang="en").replace(",", "").replace("-", " ").split()
        return tuple(w for w in words if w != "and")
    # French: "vingt et un" -> "vingt", "et", "un"; "quatre-vingt-dix" -> "quatre", "vingt", "dix".
    return tuple(num2words(n, lang="fr").replace("-", " ").split())


def number_words(n: int, lang: str) -> list[str]:
    """The number ``n`` as word tokens.

    Args:
        n: an integer in 0..:data:`MAX_NUMBER`.
        lang: "en" (``forty two``, no "and"), "fr" (``quarante deux``; "et" kept), "de" (morphemes,
            ``zwei und vierzig``; see :func:`split_german_number`) or "digits" (``4 2``).

    Returns:
        A new list of tokens (safe to modify).
    """
    _check_languages([lang], NUMBER_LANGUAGES, "number")
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"n must be an integer in 0..{MAX_NUMBER}, got {n!r}")
    return list(_number_words(n, lang))


def make_number_pairs(numbers: Iterable[int], src_lang: str, tgt_lang: str) -> list[TokenPair]:
    """(source words, target words) for each number, e.g. ``(["forty", "two"], ["zwei", "und", "vierzig"])``."""
    _check_languages([src_lang, tgt_lang], NUMBER_LANGUAGES, "number")
    return [(number_words(n, src_lang), number_words(n, tgt_lang)) for n in numbers]


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _hashable(x: object) -> object:
    return tuple(x) if isinstance(x, list) else x


def split_pairs(
    pairs: Iterable[tuple[Src, Tgt]],
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> tuple[list[tuple[Src, Tgt]], list[tuple[Src, Tgt]], list[tuple[Src, Tgt]]]:
    """Shuffle and cut pairs into train / valid / test, with no source in two splits.

    Identical pairs are kept once. Pairs are grouped by source before the cut, so a model is never
    tested on a source it was trained on; the fractions count distinct sources.

    Args:
        pairs: (source, target) pairs; sources may be strings or token lists.
        fractions: (train, valid, test), non-negative, summing to 1.
        seed: the same seed gives the same split.

    Returns:
        (train, valid, test) lists of pairs.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    groups: dict[object, dict[object, tuple[Src, Tgt]]] = {}  # source -> {target: pair}, insertion-ordered
    for src, tgt in pairs:
        groups.setdefault(_hashable(src), {}).setdefault(_hashable(tgt), (src, tgt))
    ordered = list(groups.values())
    random.Random(seed).shuffle(ordered)
    cut1 = round(fractions[0] * len(ordered))
    cut2 = round((fractions[0] + fractions[1]) * len(ordered))

    def flatten(chunk: list[dict[object, tuple[Src, Tgt]]]) -> list[tuple[Src, Tgt]]:
        return [pair for group in chunk for pair in group.values()]

    return flatten(ordered[:cut1]), flatten(ordered[cut1:cut2]), flatten(ordered[cut2:])


# --------------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------------


class Seq2SeqBatch(NamedTuple):
    """One padded batch. Padding is at the end and holds ``pad_id``; masks are True at padding.

    Shape:
        src: (B, S) long, source ids (no [START] / [STOP]).
        src_lengths: (B,) long, true source lengths (what ``pack_padded_sequence`` wants).
        src_key_padding_mask: (B, S) bool.
        tgt_in: (B, T) long, ``[START] + target``: the decoder's input (teacher forcing).
        tgt_out: (B, T) long, ``target + [STOP]``: what the decoder should predict at each step.
        tgt_key_padding_mask: (B, T) bool, shared by ``tgt_in`` and ``tgt_out``.
    """

    src: Tensor
    src_lengths: Tensor
    src_key_padding_mask: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    tgt_key_padding_mask: Tensor

    def to(self, device: torch.device | str) -> Seq2SeqBatch:
        """A copy with every tensor on ``device``."""
        return Seq2SeqBatch(*(tensor.to(device) for tensor in self))


def _pad(sequences: list[list[int]], pad_id: int) -> Tensor:
    tensors = [torch.tensor(ids, dtype=torch.long) for ids in sequences]
    return pad_sequence(tensors, batch_first=True, padding_value=pad_id)


def collate_pairs(pairs: Sequence[TokenPair], src_vocab: Vocab, tgt_vocab: Vocab) -> Seq2SeqBatch:
    """Encode and pad a list of (source tokens, target tokens) pairs.

    Returns:
        A :class:`Seq2SeqBatch`; S is the longest source, T the longest target plus one.
    """
    if not pairs:
        raise ValueError("collate_pairs got an empty list of pairs")
    src_ids = [src_vocab.encode(src) for src, _ in pairs]
    tgt_ids = [tgt_vocab.encode(tgt) for _, tgt in pairs]
    if any(len(ids) == 0 for ids in src_ids):
        # An empty source would leave its decoder queries nothing to attend to (NaN weights).
        raise ValueError("a pair has an empty source; every source needs at least one token")
    src_lengths = torch.tensor([len(ids) for ids in src_ids])
    tgt_lengths = torch.tensor([len(ids) + 1 for ids in tgt_ids])  # +1 for [START] / [STOP]
    return Seq2SeqBatch(
        src=_pad(src_ids, src_vocab.pad_id),
        src_lengths=src_lengths,
        src_key_padding_mask=padding_mask(src_lengths),
        tgt_in=_pad([[tgt_vocab.start_id] + ids for ids in tgt_ids], tgt_vocab.pad_id),
        tgt_out=_pad([ids + [tgt_vocab.stop_id] for ids in tgt_ids], tgt_vocab.pad_id),
        tgt_key_padding_mask=padding_mask(tgt_lengths),
    )


class TranslationDataset(Dataset):
    """(source tokens, target tokens) pairs plus the vocabularies that encode them.

    Args:
        pairs: token lists, e.g. ``(char_tokens(human), char_tokens(iso))``.
        src_vocab, tgt_vocab: usually built from the training split.
    """

    def __init__(self, pairs: Iterable[TokenPair], src_vocab: Vocab, tgt_vocab: Vocab) -> None:
        self.pairs = list(pairs)
        for src, tgt in self.pairs:
            # A bare string would be split into characters without complaint, wrong for word tasks.
            if isinstance(src, str) or isinstance(tgt, str):
                raise TypeError(
                    f"pairs must hold token lists, got the string pair {(src, tgt)!r}; "
                    "tokenize first, e.g. (char_tokens(src), char_tokens(tgt))"
                )
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> TokenPair:
        return self.pairs[index]


def make_loader(dataset: TranslationDataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    """A DataLoader of :class:`Seq2SeqBatch`; with ``shuffle`` the order depends only on ``seed``."""
    collate = functools.partial(collate_pairs, src_vocab=dataset.src_vocab, tgt_vocab=dataset.tgt_vocab)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=generator, num_workers=0
    )


# --------------------------------------------------------------------------------------------------
# Ready-made tasks
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """Token-list splits of one task and the vocabularies built from its training split."""

    train: list[TokenPair]
    valid: list[TokenPair]
    test: list[TokenPair]
    src_vocab: Vocab
    tgt_vocab: Vocab

    def __repr__(self) -> str:  # the default would print every pair
        return (
            f"Task(train={len(self.train)}, valid={len(self.valid)}, test={len(self.test)}, "
            f"src_vocab={len(self.src_vocab)} tokens, tgt_vocab={len(self.tgt_vocab)} tokens)"
        )


def _task(pairs: list[TokenPair], fractions: tuple[float, float, float], seed: int) -> Task:
    train, valid, test = split_pairs(pairs, fractions, seed=seed)
    src_vocab = Vocab.build(src for src, _ in train)
    tgt_vocab = Vocab.build(tgt for _, tgt in train)
    return Task(train, valid, test, src_vocab, tgt_vocab)


def date_task(
    n: int = 20_000,
    seed: int = 0,
    languages: Sequence[str] = DATE_LANGUAGES,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Task:
    """Human date -> ISO date, character level, in one call (see :func:`make_date_pairs`).

    ``n`` pairs are drawn before duplicates are removed. At the default size every character of the
    valid and test splits also occurs in training.
    """
    pairs = [(char_tokens(h), char_tokens(iso)) for h, iso in make_date_pairs(n, seed=seed, languages=languages)]
    return _task(pairs, fractions, seed)


def number_task(
    lo: int,
    hi: int,
    src_lang: str,
    tgt_lang: str,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> Task:
    """Every number in ``range(lo, hi)`` (``hi`` excluded) from ``src_lang`` to ``tgt_lang`` words.

    A word used by a single number (such as "zero" or "null") lands in only one split, so it may be
    ``[UNK]`` in valid/test.
    """
    if not 0 <= lo < hi <= MAX_NUMBER + 1:
        raise ValueError(f"need 0 <= lo < hi <= {MAX_NUMBER + 1}, got lo={lo}, hi={hi}")
    return _task(make_number_pairs(range(lo, hi), src_lang, tgt_lang), fractions, seed)
