"""BERT's pretraining data: next-sentence pairs and dynamic masking (Devlin et al., 2019, section 3.1).

Shape legend: B batch, S sequence length (padded), V vocabulary size.

- :class:`NextSentenceDataset`: ``[CLS] A [SEP] B [SEP]`` pairs, B the next sentence half of the time and a
  sentence from another document otherwise (section 3.1, task 2).
- :func:`mask_tokens` and :class:`MLMCollator`: 15% of the tokens chosen, 80% of those replaced by [MASK],
  10% by a random token, 10% kept (section 3.1, task 1; appendix C.2); drawn afresh for every batch.
- :func:`make_pretraining_loader`: batches of :class:`PretrainingBatch`, of similar lengths
  (:class:`BucketBatchSampler`).

Masks follow torch.nn: ``key_padding_mask`` True at padding.

Book: chapter "BERT".
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from coursekit.bert.corpus import Document
from coursekit.bert.tokenizer import WordPieceTokenizer, build_pair, pad_batch

IGNORE_INDEX = -100  # the label of positions the MLM loss skips (F.cross_entropy's default ignore_index)


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

    Each token that is not special ([CLS], [SEP], [PAD], ...) is chosen with probability
    ``mask_prob``; a chosen token becomes [MASK] with probability 0.8, a random non-special
    token with 0.1, and stays as it is with 0.1. The model must predict the original token at
    every chosen position.

    Args:
        input_ids: (B, S) ids, padding included.
        mask_id: the [MASK] id.
        special_ids: ids never chosen and never drawn as random tokens.
        vocab_size: V; random tokens come from the non-special ids below it.
        mask_prob: fraction of tokens chosen.
        replace_probs: ([MASK], random, unchanged), summing to 1.
        generator: source of randomness (for reproducible batches).

    Shape:
        Returns ``(masked_ids, labels)``, both (B, S): labels hold the original id at chosen
        positions and :data:`IGNORE_INDEX` (-100) elsewhere.
    """
    p_mask, p_random, p_keep = replace_probs
    if abs(p_mask + p_random + p_keep - 1.0) > 1e-6 or min(replace_probs) < 0:
        raise ValueError(f"replace_probs must be three non-negative numbers summing to 1, "
                         f"got {replace_probs}")
    device = input_ids.device
    special = torch.isin(input_ids, torch.as_tensor(list(special_ids), device=device))  # (B, S)
    draw = torch.rand(input_ids.shape, generator=generator).to(device)  # (B, S)
    chosen = (draw < mask_prob) & ~special
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)  # (B, S)
    fate = torch.rand(input_ids.shape, generator=generator).to(device)  # (B, S): what then
    to_mask = chosen & (fate < p_mask)
    to_random = chosen & (fate >= p_mask) & (fate < p_mask + p_random)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[list(special_ids)] = False
    candidates = allowed.nonzero().squeeze(1).to(device)  # (V',) the non-special ids
    picks = torch.randint(len(candidates), input_ids.shape, generator=generator).to(device)
    random_ids = candidates[picks]  # (B, S)
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
