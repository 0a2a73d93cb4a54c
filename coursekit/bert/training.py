"""Pretraining BERT (masked LM + next sentence prediction) and fine-tuning it for classification.

Shape legend: B batch, S sequence length, N masked positions in a batch, V vocabulary size, K classes.

Every update goes through :func:`coursekit.train.train_step`. Fine-tuning runs in the course's loop,
:func:`coursekit.train.train`; pretraining keeps a loop of its own for what only it needs: the two tasks
tracked apart, a learning rate that decays with the time budget, and a second phase that continues the first.

- :func:`pretrain`: AdamW with linear warm-up and linear decay (Devlin et al., 2019, appendix A.2).
- :func:`evaluate_pretraining`: MLM and NSP loss and accuracy on held-out batches; :func:`majority_baselines`
  gives the numbers a model that always predicts the most frequent answer would get.
- :func:`finetune` and :func:`evaluate_classifier`: a :class:`coursekit.bert.BertForSequenceClassification`
  on :class:`coursekit.bert.downstream.ClassificationBatch` es.
- :func:`mask_one_word` and :func:`fill_masks`: hide one word of a sentence, and the model's top-k guesses for it.
- The book's run, :func:`pretrain_on_wordnet` with a :class:`PretrainingRecipe`, pretrains BERT-Tiny on WordNet's
  dictionary (:func:`coursekit.bert.corpus.wordnet_documents`); :func:`save_pretrained` / :func:`load_pretrained`
  keep the model with its tokenizer, recipe, baselines and history in one small file. One command makes the
  book's checkpoint (``python -m coursekit.bert.training --help``)::

      python -m coursekit.bert.training --out book/_data/bert_wordnet.pt --threads 1

Book: chapter "BERT".
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import random
import time
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import AdamW, Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from coursekit.bert.corpus import Document, split_documents, wordnet_documents
from coursekit.bert.downstream import ClassificationBatch
from coursekit.bert.model import (BertConfig, BertForPreTraining, BertForSequenceClassification, PretrainingLoss,
                                  count_parameters)
from coursekit.bert.pretraining_data import NextSentenceDataset, PretrainingBatch, make_pretraining_loader
from coursekit.bert.tokenizer import WordPieceTokenizer, pad_batch
from coursekit.corpora import WORDNET_LICENCE
from coursekit.device import DeviceLike, autocast, get_device
from coursekit.train import History, evaluating, save_checkpoint, train, train_step


@dataclass
class PretrainingHistory(History):
    """:class:`coursekit.train.History` plus each task's per-step numbers and the held-out evaluations.

    ``mlm_loss``, ``nsp_loss``, ``mlm_accuracy``, ``nsp_accuracy`` and ``tokens`` (real, non-padding tokens in
    the batch) have one entry per step, like ``loss``. ``evals`` has one dict per evaluation: ``step``,
    ``time_s``, ``tokens_per_s`` and :func:`evaluate_pretraining`'s keys. ``train_time_s`` is the time spent in
    training steps (evaluation excluded), the denominator of ``tokens_per_s``.
    """

    mlm_loss: list[float] = field(default_factory=list)
    nsp_loss: list[float] = field(default_factory=list)
    mlm_accuracy: list[float] = field(default_factory=list)
    nsp_accuracy: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    train_time_s: float = 0.0

    def record_tasks(self, metrics: dict[str, float], tokens: int) -> None:
        """Each task's numbers for the step just recorded with :meth:`record_step`, and its real tokens."""
        for name in ("mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy"):
            getattr(self, name).append(metrics[name])
        self.tokens.append(tokens)


def adamw(model: nn.Module, lr: float, weight_decay: float = 0.01) -> AdamW:
    """AdamW (Loshchilov and Hutter, 2019) with BERT's betas; no weight decay on biases and layer norms."""
    params = {id(p): (n, p) for n, p in model.named_parameters() if p.requires_grad}.values()  # tied weights once
    decay = [p for n, p in params if p.dim() >= 2]
    no_decay = [p for n, p in params if p.dim() < 2]
    return AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                 lr=lr, betas=(0.9, 0.999), eps=1e-6)


def warmup_linear(step: int, warmup_steps: int, progress: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup_steps``, then linear decay to 0 at ``progress`` = 1.

    ``progress`` is the fraction of training done (steps, or wall time under a time budget).
    """
    return min((step + 1) / max(1, warmup_steps), max(0.0, 1.0 - progress))


def pretraining_step(model: BertForPreTraining, batch: PretrainingBatch, optimizer: Optimizer,
                     clip_grad_norm: float | None = 1.0,
                     device: DeviceLike = "cpu") -> dict[str, float]:
    """One update on one batch (already on ``device``) with :func:`coursekit.train.train_step`.

    Returns the losses and accuracies of the batch, each task apart.
    """
    outputs: list[PretrainingLoss] = []  # the forward pass, kept for the per-task numbers

    def loss_fn(model: BertForPreTraining, batch: PretrainingBatch) -> Tensor:
        outputs.append(model.compute_loss(batch.input_ids, batch.token_type_ids,
                                          batch.key_padding_mask, batch.mlm_labels,
                                          batch.nsp_labels))
        return outputs[-1].loss

    train_step(model, batch, optimizer, loss_fn=loss_fn, clip_grad_norm=clip_grad_norm,
               device=device)
    out = outputs[-1]
    n_masked = max(1, out.mlm_targets.numel())
    mlm_right = (out.mlm_logits.argmax(-1) == out.mlm_targets).sum().item()
    nsp_right = (out.nsp_logits.argmax(-1) == batch.nsp_labels).float().mean().item()
    return {"loss": out.loss.item(), "mlm_loss": out.mlm_loss.item(),
            "nsp_loss": out.nsp_loss.item(), "mlm_accuracy": mlm_right / n_masked,
            "nsp_accuracy": nsp_right}


@torch.no_grad()
def evaluate_pretraining(model: BertForPreTraining, batches: Iterable[PretrainingBatch],
                         device: DeviceLike = "auto") -> dict[str, float]:
    """MLM loss and accuracy per masked token, NSP loss and accuracy per pair, in eval mode (mode restored).

    Pass a fixed list of batches (``list(loader)``) so every evaluation sees the same masks.
    """
    device = get_device(device)
    sums = Counter()
    with evaluating(model):
        for batch in batches:
            batch = batch.to(device)
            with autocast(device):
                out = model.compute_loss(batch.input_ids, batch.token_type_ids, batch.key_padding_mask,
                                         batch.mlm_labels, batch.nsp_labels)
            n, b = out.mlm_targets.numel(), batch.nsp_labels.numel()
            sums["mlm_loss"] += out.mlm_loss.item() * n
            sums["mlm_correct"] += (out.mlm_logits.argmax(-1) == out.mlm_targets).sum().item()
            sums["masked"] += n
            sums["nsp_loss"] += out.nsp_loss.item() * b
            sums["nsp_correct"] += (out.nsp_logits.argmax(-1) == batch.nsp_labels).sum().item()
            sums["pairs"] += b
    if not sums["pairs"] or not sums["masked"]:
        raise ValueError("evaluate_pretraining got no batches (or no masked tokens)")
    return {"mlm_loss": sums["mlm_loss"] / sums["masked"], "mlm_accuracy": sums["mlm_correct"] / sums["masked"],
            "nsp_loss": sums["nsp_loss"] / sums["pairs"], "nsp_accuracy": sums["nsp_correct"] / sums["pairs"]}


def majority_baselines(train_dataset: NextSentenceDataset, batches: Iterable[PretrainingBatch]) -> dict[str, float]:
    """Held-out accuracy of always answering the most frequent training answer: the bar a model must clear.

    MLM: the most frequent non-special token of the training pairs; NSP: the more frequent training label.
    """
    specials = set(train_dataset.tokenizer.special_ids)
    tokens = Counter(t for e in train_dataset.examples for t in e.input_ids if t not in specials)
    top_token = tokens.most_common(1)[0][0]
    top_label = Counter(e.nsp_label for e in train_dataset.examples).most_common(1)[0][0]
    hits = masked = same = pairs = 0
    for batch in batches:
        targets = batch.mlm_labels[batch.mlm_labels != -100]  # (N,)
        hits += int((targets == top_token).sum())
        masked += targets.numel()
        same += int((batch.nsp_labels == top_label).sum())
        pairs += batch.nsp_labels.numel()
    return {"mlm_accuracy": hits / masked, "nsp_accuracy": same / pairs,
            "mlm_token": train_dataset.tokenizer.id_to_token(top_token)}


def pretrain(
    model: BertForPreTraining,
    train_loader: DataLoader,
    *,
    valid_batches: Sequence[PretrainingBatch] | None = None,
    epochs: int | None = None,
    max_steps: int | None = None,
    time_budget_s: float | None = None,
    lr: float = 1e-3,
    warmup_steps: int = 200,
    weight_decay: float = 0.01,
    clip_grad_norm: float | None = 1.0,
    eval_every: int = 250,
    device: DeviceLike = "auto",
    checkpoint_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    history: PretrainingHistory | None = None,
) -> PretrainingHistory:
    """Pretrain on masked LM + NSP until the first of ``epochs``, ``max_steps`` or ``time_budget_s`` runs out.

    Args:
        model: a :class:`~coursekit.bert.BertForPreTraining`; moved to ``device`` and left there.
        train_loader: :class:`~coursekit.bert.pretraining_data.PretrainingBatch` es from
            :func:`~coursekit.bert.pretraining_data.make_pretraining_loader` (masked afresh every batch).
        valid_batches: held-out batches, evaluated every ``eval_every`` steps and at the end.
        epochs, max_steps, time_budget_s: stopping rules; give at least one. The learning rate decays to 0 at
            ``max_steps`` or, under a time budget, at the end of the budget (whichever comes first).
        lr: peak learning rate of AdamW. warmup_steps: linear warm-up. weight_decay: decoupled, not on
            biases and norms.
        clip_grad_norm: rescale gradients whose global norm exceeds this; None turns it off.
        device: "auto" (CUDA, then MPS, then CPU) or any device; bf16 autocast on CUDA.
        checkpoint_path: if given, :func:`coursekit.train.save_checkpoint` writes the model and optimizer there
            at every evaluation, and the history goes to ``<checkpoint_path>.history.json``.
        seed: seeds dropout. progress: show a tqdm bar.
        history: a history to continue (a second phase, e.g. on longer sequences as in Devlin et al., 2019,
            appendix A.2): steps and times carry on from it. The optimizer and the schedule start afresh.

    Returns:
        A :class:`PretrainingHistory` (``history`` itself, extended, when given).
        The rules above count from the start of this call.
    """
    if epochs is None and max_steps is None and time_budget_s is None:
        raise ValueError("pretrain needs a stopping rule: give epochs, max_steps or time_budget_s")
    torch.manual_seed(seed)
    device = get_device(device)
    model.to(device)
    optimizer = adamw(model, lr, weight_decay)
    history = history if history is not None else PretrainingHistory()
    first_step, first_time = len(history.steps), (history.evals[-1]["time_s"] if history.evals else 0.0)
    start, step = time.perf_counter(), 0

    def done_fraction() -> float:
        by_steps = step / max_steps if max_steps is not None else 0.0
        by_time = (time.perf_counter() - start) / time_budget_s if time_budget_s is not None else 0.0
        return max(by_steps, by_time)

    def evaluate_and_save() -> None:
        row = {"step": first_step + step, "time_s": first_time + time.perf_counter() - start,
               "tokens_per_s": sum(history.tokens) / max(history.train_time_s, 1e-9)}
        if valid_batches is not None:
            row.update(evaluate_pretraining(model, valid_batches, device=device))
        history.evals.append(row)
        if progress:
            bar.write(History.format_row(row))
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer=optimizer)
            Path(f"{checkpoint_path}.history.json").write_text(json.dumps(history.to_dict()))

    bar = tqdm(total=max_steps, desc="pretraining", unit="step", disable=not progress, mininterval=1.0)
    epoch, finished = 0, False
    while not finished:
        epoch += 1
        model.train()
        for batch in train_loader:
            for group in optimizer.param_groups:
                group["lr"] = lr * warmup_linear(step, warmup_steps, done_fraction())
            tick = time.perf_counter()
            metrics = pretraining_step(model, batch.to(device), optimizer, clip_grad_norm, device)
            history.train_time_s += time.perf_counter() - tick
            history.record_step(first_step + step, metrics["loss"], optimizer.param_groups[0]["lr"])
            history.record_tasks(metrics, tokens=int((~batch.key_padding_mask).sum()))
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, mlm=f"{metrics['mlm_loss']:.3f}", nsp=f"{metrics['nsp_loss']:.3f}")
            finished = done_fraction() >= 1.0
            if finished or step % eval_every == 0:
                evaluate_and_save()
            if finished:
                break
        if step == 0:
            raise ValueError("train_loader yielded no batches")
        finished = finished or (epochs is not None and epoch >= epochs)
    if not history.evals or history.evals[-1]["step"] != first_step + step:
        evaluate_and_save()
    bar.close()
    return history


# --------------------------------------------------------------------------------------------------
# Fine-tuning
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_classifier(model: BertForSequenceClassification, loader: Iterable, device: DeviceLike = "auto") -> dict[str, float]:
    """Mean cross-entropy and accuracy over a loader of :class:`ClassificationBatch` es."""
    device = get_device(device)
    loss_sum, correct, n = 0.0, 0, 0
    with evaluating(model):
        for batch in loader:
            batch = batch.to(device)
            with autocast(device):
                logits = model(batch.input_ids, batch.token_type_ids, batch.key_padding_mask)  # (B, K)
            loss_sum += F.cross_entropy(logits.float(), batch.labels, reduction="sum").item()
            correct += int((logits.argmax(-1) == batch.labels).sum())
            n += batch.labels.numel()
    if n == 0:
        raise ValueError("evaluate_classifier got an empty loader")
    return {"loss": loss_sum / n, "accuracy": correct / n}


def classification_loss(model: BertForSequenceClassification, batch: ClassificationBatch) -> Tensor:
    """Fine-tuning's ``loss_fn`` for :func:`coursekit.train.train_step`: cross-entropy of the [CLS] classifier."""
    logits = model(batch.input_ids, batch.token_type_ids, batch.key_padding_mask)  # (B, K)
    return F.cross_entropy(logits.float(), batch.labels)


def finetune(
    model: BertForSequenceClassification,
    train_loader: DataLoader,
    *,
    epochs: int = 5,
    lr: float = 5e-4,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    clip_grad_norm: float | None = 1.0,
    valid_loader: DataLoader | None = None,
    device: DeviceLike = "auto",
    seed: int = 0,
    progress: bool = True,
) -> History:
    """Fine-tune every weight on a classification task (Devlin et al., 2019, section 4.1): cross-entropy on the
    [CLS] classifier, AdamW, linear warm-up over ``warmup_fraction`` of the steps then linear decay, in the
    course's training loop (:func:`coursekit.train.train`).

    Returns:
        A :class:`coursekit.train.History`; each epoch row has ``valid_loss`` and ``accuracy`` when
        ``valid_loader`` is given.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    device = get_device(device)
    model.to(device)  # before the optimizer is built on its parameters
    optimizer = adamw(model, lr, weight_decay)
    total = epochs * len(train_loader)
    schedule = LambdaLR(optimizer, functools.partial(_warmup_linear_at, warmup_steps=round(warmup_fraction * total),
                                                     total_steps=total))
    return train(model, train_loader, epochs=epochs, optimizer=optimizer, scheduler=schedule, device=device,
                 clip_grad_norm=clip_grad_norm, valid_loader=valid_loader, seed=seed, progress=progress,
                 loss_fn=classification_loss, evaluate_fn=evaluate_classifier)


def _warmup_linear_at(step: int, warmup_steps: int, total_steps: int) -> float:
    """:func:`warmup_linear` with the progress counted in steps."""
    return warmup_linear(step, warmup_steps, step / total_steps)


# --------------------------------------------------------------------------------------------------
# Filling in blanks: what the masked LM has learned, one word at a time
# --------------------------------------------------------------------------------------------------


class Fill(NamedTuple):
    """One sentence with one word masked: ``text`` (with ``[MASK]``), the ``answer`` (the word's WordPiece) and
    the model's ``guesses``, (token, probability) from most probable down."""

    text: str
    answer: str
    guesses: list[tuple[str, float]]

    @property
    def rank(self) -> int | None:
        """1 when the answer is the first guess, 2 when second ...; None when it is not among the guesses."""
        tokens = [t for t, _ in self.guesses]
        return tokens.index(self.answer) + 1 if self.answer in tokens else None


def mask_one_word(sentence: str, tokenizer: WordPieceTokenizer, rng: random.Random,
                  skip: Collection[str] = ()) -> tuple[str, str] | None:
    """``sentence`` with one of its words replaced by ``[MASK]``, and that word's token: a word of letters that is a
    single WordPiece (so one [MASK] stands for all of it), not in ``skip``, chosen with ``rng``. None if none fits."""
    words = sentence.split(" ")
    candidates = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in skip
                  and len(tokenizer.tokenize(w)) == 1]
    if not candidates:
        return None
    i = rng.choice(candidates)
    return " ".join(words[:i] + ["[MASK]"] + words[i + 1:]), tokenizer.tokenize(words[i])[0]


@torch.no_grad()
def fill_masks(model: BertForPreTraining, tokenizer: WordPieceTokenizer, texts: Sequence[str],
               answers: Sequence[str], k: int = 5, batch_size: int = 64) -> list[Fill]:
    """The model's top-``k`` guesses for the one ``[MASK]`` of each text (each alone, as sentence A), in batches.

    Shape: each batch is (B, S) ids; the scores read at the B [MASK] positions are (B, V).
    """
    if len(texts) != len(answers):
        raise ValueError(f"{len(texts)} texts but {len(answers)} answers: give one answer per text")
    device = next(model.parameters()).device
    fills = []
    with evaluating(model):
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            encoded = [tokenizer.encode_pair(t, max_len=model.config.max_len)[0] for t in chunk]
            for text, ids in zip(chunk, encoded):
                if ids.count(tokenizer.mask_id) != 1:
                    raise ValueError(f"each text needs exactly one [MASK] (within max_len tokens): {text!r}")
            input_ids = pad_batch(encoded, tokenizer.pad_id).to(device)  # (B, S)
            padding = input_ids == tokenizer.pad_id  # (B, S)
            sequence_output, _ = model.bert(input_ids, key_padding_mask=padding)  # (B, S, D)
            scores = model.mlm(sequence_output[input_ids == tokenizer.mask_id]).float()  # (B, V)
            top = scores.softmax(-1).topk(k)
            for i, text in enumerate(chunk):
                guesses = [(tokenizer.id_to_token(int(t)), float(p)) for p, t in zip(top.values[i], top.indices[i])]
                fills.append(Fill(text, answers[start + i], guesses))
    return fills


# --------------------------------------------------------------------------------------------------
# The course's run: python -m coursekit.bert.training
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PretrainingRecipe:
    """Everything that decides the book's pretraining run (stored in its checkpoint).

    The text is WordNet's dictionary (:func:`coursekit.bert.corpus.wordnet_documents`), whole families held out
    (``valid_fraction``, ``split_seed``); a WordPiece vocabulary of ``vocab_size`` learned from the training part;
    pairs of at most ``max_len`` tokens, the documents walked ``dupe_factor`` times; a BERT of ``num_layers`` x
    ``d_model``; ``max_steps`` AdamW updates of ``batch_size`` pairs, linear warm-up then linear decay to 0;
    held-out evaluation on ``eval_batches`` fixed batches of 128 pairs every ``eval_every`` steps.
    """

    valid_fraction: float = 0.05
    split_seed: int = 0
    vocab_size: int = 8000
    max_len: int = 64
    dupe_factor: int = 3
    d_model: int = 128
    nhead: int = 2
    num_layers: int = 2
    dim_feedforward: int = 512
    init_std: float = 0.05
    batch_size: int = 32
    lr: float = 2e-3
    warmup_steps: int = 500
    max_steps: int = 14_000
    eval_every: int = 1000
    eval_batches: int = 10
    seed: int = 0

    def model_config(self, vocab_size: int) -> BertConfig:
        """The model: BERT's post-LN layers, no dropout (one pass over so little text underfits, never overfits)."""
        return BertConfig(vocab_size=vocab_size, d_model=self.d_model, nhead=self.nhead, num_layers=self.num_layers,
                          dim_feedforward=self.dim_feedforward, dropout=0.0, max_len=self.max_len,
                          init_std=self.init_std)


def wordnet_split(recipe: PretrainingRecipe = PretrainingRecipe()) -> tuple[list[Document], list[Document]]:
    """The recipe's (training, held-out) WordNet families: held-out families are never seen in pretraining."""
    return split_documents(wordnet_documents(), recipe.valid_fraction, recipe.split_seed)


def held_out_batches(documents: Sequence[Document], tokenizer: WordPieceTokenizer,
                     recipe: PretrainingRecipe = PretrainingRecipe()) -> list[PretrainingBatch]:
    """The fixed held-out batches the run is evaluated on: the same pairs and the same masks every time."""
    pairs = NextSentenceDataset(documents, tokenizer, max_len=recipe.max_len, seed=1)
    return list(make_pretraining_loader(pairs, 128, shuffle=False, seed=123))[:recipe.eval_batches]


class PretrainedBert(NamedTuple):
    """What :func:`load_pretrained` returns: the model (eval mode), its tokenizer, its history and ``extra``, the
    recipe and results stored with it."""

    model: BertForPreTraining
    tokenizer: WordPieceTokenizer
    history: PretrainingHistory
    extra: dict[str, Any]


_SERIES = ("loss", "lr", "mlm_loss", "nsp_loss", "mlm_accuracy", "nsp_accuracy", "tokens")


def save_pretrained(path: str | Path, model: BertForPreTraining, tokenizer: WordPieceTokenizer,
                    history: PretrainingHistory, extra: dict[str, Any] | None = None) -> Path:
    """One file with the config, the weights in fp16 (the tied decoder once), the tokenizer's tokens in id order
    (a vocabulary trained again could be ordered differently), the history (per-step series as float32 tensors,
    a quarter of the size of Python floats) and ``extra``. Written next to ``path``, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if v.is_floating_point() else v).cpu()
             for k, v in model.state_dict().items() if k != "mlm.decoder.weight"}
    record = history.to_dict()
    series = {name: torch.tensor(record.pop(name), dtype=torch.float32) for name in _SERIES}
    torch.save({"config": dataclasses.asdict(model.config), "state_dict": state, "tokens": tokenizer.tokens,
                "history": record, "series": series, "extra": extra or {}}, path.with_name(path.name + ".partial"))
    os.replace(path.with_name(path.name + ".partial"), path)
    return path


def load_pretrained(path: str | Path, device: DeviceLike = "cpu") -> PretrainedBert:
    """The model (fp32, eval mode, on ``device``), tokenizer, history and extras written by :func:`save_pretrained`."""
    data = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = BertForPreTraining(BertConfig(**data["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in data["state_dict"].items()}
    state["mlm.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"]
    model.load_state_dict(state, strict=True)
    record = dict(data["history"])
    record.update({name: values.tolist() for name, values in data["series"].items()})
    record["tokens"] = [int(t) for t in record["tokens"]]
    history = PretrainingHistory(**record)
    return PretrainedBert(model.to(get_device(device)).eval(), WordPieceTokenizer.from_tokens(data["tokens"]),
                          history, data["extra"])


def pretrain_on_wordnet(recipe: PretrainingRecipe = PretrainingRecipe(), device: DeviceLike = "auto",
                        progress: bool = True) -> PretrainedBert:
    """The book's run: the WordNet split, a WordPiece vocabulary, next-sentence pairs, a BERT of the recipe's size,
    :func:`pretrain` for ``recipe.max_steps``; the held-out results and baselines go into ``extra``."""
    start = time.perf_counter()
    train_docs, held_out_docs = wordnet_split(recipe)
    tokenizer = WordPieceTokenizer.train((s for d in train_docs for s in d.sentences), vocab_size=recipe.vocab_size)
    pairs = NextSentenceDataset(train_docs, tokenizer, max_len=recipe.max_len, dupe_factor=recipe.dupe_factor,
                                seed=recipe.seed)
    valid = held_out_batches(held_out_docs, tokenizer, recipe)
    baselines = majority_baselines(pairs, valid)
    torch.manual_seed(recipe.seed)
    model = BertForPreTraining(recipe.model_config(tokenizer.vocab_size))
    if progress:
        print(f"{len(train_docs):,} training and {len(held_out_docs):,} held-out families; {len(pairs):,} pairs; "
              f"{count_parameters(model):,} parameters; baselines {baselines}")
    history = pretrain(model, make_pretraining_loader(pairs, recipe.batch_size, seed=recipe.seed), valid_batches=valid,
                       max_steps=recipe.max_steps, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
                       eval_every=recipe.eval_every, device=device, seed=recipe.seed, progress=progress)
    model.cpu().eval()
    extra = {"recipe": dataclasses.asdict(recipe), "baselines": baselines, "held_out": history.evals[-1],
             "corpus": {"training_families": len(train_docs), "held_out_families": len(held_out_docs),
                        "training_pairs": len(pairs), "source": WORDNET_LICENCE},
             "parameters": count_parameters(model), "time_s": time.perf_counter() - start,
             "torch": str(torch.__version__), "device": str(get_device(device)), "threads": torch.get_num_threads()}
    return PretrainedBert(model, tokenizer, history, extra)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Pretrain the book's BERT on WordNet (masked LM + next sentence "
                                                 "prediction) and write its checkpoint.")
    parser.add_argument("--out", default="book/_data/bert_wordnet.pt", help="checkpoint to write")
    for name, value in dataclasses.asdict(PretrainingRecipe()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch; 1 is fastest on a busy shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = PretrainingRecipe(**{k: getattr(args, k) for k in dataclasses.asdict(PretrainingRecipe())})
    run = pretrain_on_wordnet(recipe, device=args.device)
    path = save_pretrained(args.out, run.model, run.tokenizer, run.history, run.extra)
    held_out, baselines = run.extra["held_out"], run.extra["baselines"]
    print(f"held-out MLM accuracy {held_out['mlm_accuracy']:.3f} (baseline {baselines['mlm_accuracy']:.3f}), "
          f"NSP accuracy {held_out['nsp_accuracy']:.3f} (baseline {baselines['nsp_accuracy']:.3f}); "
          f"{run.extra['time_s'] / 60:.0f} minutes; wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
