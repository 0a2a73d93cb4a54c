"""BERT's WordPiece tokenizer, and packing and padding its ids into model inputs.

Shape legend: B batch, S sequence length (padded).

- :class:`WordPieceTokenizer`: BERT's uncased WordPiece (Wu et al., 2016), trained offline with the
  ``tokenizers`` library or loaded from an existing ``vocab.txt`` by the same code.
- :func:`build_pair`: ``[CLS] A [SEP] (B [SEP])`` and segment ids (Devlin et al., 2019, figure 2).
- :func:`pad_batch`: right-padded (B, S) ids.

Book: chapter "BERT".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)


class WordPieceTokenizer:
    """BERT's tokenizer: clean and lowercase, split on whitespace and punctuation, then greedy longest-match
    WordPiece, continuation pieces marked ``##`` (Devlin et al., 2019, section 3; Wu et al., 2016).

    Build it with :meth:`train` (a new vocabulary from text), :meth:`from_vocab` (an existing ``vocab.txt``,
    e.g. all-MiniLM-L6-v2's) or :meth:`from_tokens` (a list, as a checkpoint keeps it); all go through
    :func:`_pipeline`, so they tokenize alike. The special tokens are recognised in text: ``"[MASK]"`` is one token.

    Args:
        tokenizer: a ``tokenizers.Tokenizer`` with a WordPiece model whose vocabulary holds the five
            special tokens.
    """

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ValueError(f"the vocabulary lacks the special tokens {missing}; BERT needs {list(SPECIAL_TOKENS)}")
        # A vocab.txt lists the specials as ordinary entries: registering them (ids unchanged) makes a "[MASK]"
        # written in text one token rather than "[", "mask", "]", and lets decode skip them.
        tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
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
        path = Path(path)
        path = path / "vocab.txt" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        return cls.from_tokens(path.read_text(encoding="utf-8").splitlines(), lowercase)

    @classmethod
    def from_tokens(cls, tokens: Sequence[str], lowercase: bool = True) -> WordPieceTokenizer:
        """The tokenizer of a vocabulary given as its tokens in id order (:attr:`tokens` of another one).

        Training twice on the same text can order a vocabulary differently (``tokenizers`` breaks ties in
        frequency its own way), so a model's checkpoint keeps its tokenizer's tokens and rebuilds it from them.
        """
        from tokenizers import Tokenizer, models

        tokens = list(tokens)
        if len(set(tokens)) != len(tokens):
            repeated = sorted({t for t in tokens if tokens.count(t) > 1})[:5]
            raise ValueError(f"a vocabulary lists each token once; these appear more than once: {repeated}")
        vocab = {token: i for i, token in enumerate(tokens)}
        return cls(_pipeline(Tokenizer(models.WordPiece(vocab, unk_token=UNK)), lowercase))

    @property
    def tokens(self) -> list[str]:
        """The vocabulary in id order: ``tokens[i]`` is the token of id ``i``."""
        vocab = self._tokenizer.get_vocab()
        return sorted(vocab, key=vocab.get)

    def save(self, directory: str | Path) -> Path:
        """Write ``vocab.txt`` into ``directory`` (what :meth:`from_vocab` and Hugging Face read). Returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.txt").write_text("".join(t + "\n" for t in self.tokens), encoding="utf-8")
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


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """Right-pad id lists to the longest. Shape: B lists -> (B, S)."""
    longest = max(len(s) for s in sequences)
    return torch.tensor([list(s) + [pad_id] * (longest - len(s)) for s in sequences], dtype=torch.long)
