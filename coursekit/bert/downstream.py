"""A downstream task for BERT: which part of the standard library does a sentence document?

Shape legend: B batch, S sequence length.

- :func:`stdlib_area_task`: sentences labelled with their package (tkinter, asyncio, email, ...), training
  examples from the pretraining documents and test examples from the held-out ones.
- :class:`SentenceClassificationDataset`: ``[CLS] sentence [SEP]`` with a label, batched as
  :class:`ClassificationBatch` es for :func:`coursekit.bert.training.finetune`.

Book: chapter "BERT".
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from coursekit.bert.corpus import Document
from coursekit.bert.tokenizer import WordPieceTokenizer, build_pair, pad_batch

AREAS = ("tkinter", "asyncio", "email", "logging", "unittest", "xml")


class ClassificationBatch(NamedTuple):
    """Shape: ``input_ids``, ``token_type_ids``, ``key_padding_mask`` (B, S); ``labels`` (B,)."""

    input_ids: Tensor
    token_type_ids: Tensor
    key_padding_mask: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> ClassificationBatch:
        return ClassificationBatch(*(t.to(device, non_blocking=True) for t in self))


class SentenceClassificationDataset(Dataset):
    """``[CLS] sentence [SEP]`` with an integer label. Args: texts, labels, tokenizer, max_len."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], tokenizer: WordPieceTokenizer,
                 max_len: int = 128) -> None:
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        self.tokenizer, self.labels = tokenizer, list(labels)
        self.input_ids = [build_pair(ids, None, tokenizer.cls_id, tokenizer.sep_id, max_len)[0]
                          for ids in tokenizer.encode_batch(texts)]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.input_ids[index], self.labels[index]

    def collate(self, items: Sequence[tuple[list[int], int]]) -> ClassificationBatch:
        input_ids = pad_batch([ids for ids, _ in items], self.tokenizer.pad_id)  # (B, S)
        return ClassificationBatch(input_ids, torch.zeros_like(input_ids), input_ids == self.tokenizer.pad_id,
                                   torch.tensor([label for _, label in items]))

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0) -> DataLoader:
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, collate_fn=self.collate,
                          generator=torch.Generator().manual_seed(seed) if shuffle else None)


def stdlib_area_task(train_documents: Sequence[Document], test_documents: Sequence[Document],
                     areas: Sequence[str] = AREAS, per_class: int | None = 100,
                     seed: int = 0) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Sentences labelled with the package they document (``areas.index(document.package)``).

    Train examples come from ``train_documents`` (at most ``per_class`` per area: fine-tuning is where
    labels are scarce), test examples from all of ``test_documents``; pass the held-out documents of
    pretraining so no test sentence was seen there.

    Returns:
        ``(train, test)`` lists of ``(sentence, label)``.
    """
    def labelled(documents: Sequence[Document]) -> list[list[tuple[str, int]]]:
        by_area: list[list[tuple[str, int]]] = [[] for _ in areas]
        for d in documents:
            if d.package in areas:
                by_area[areas.index(d.package)] += [(s, areas.index(d.package)) for s in d.sentences]
        return by_area

    rng = random.Random(seed)
    train = []
    for examples in labelled(train_documents):
        rng.shuffle(examples)
        train += examples[:per_class] if per_class is not None else examples
    rng.shuffle(train)
    test = [example for examples in labelled(test_documents) for example in examples]
    return train, test
