"""One training step and one loop for every model of the course, the history they record, and checkpoints.

Shape legend: B batch, S source length, T target length, V target vocabulary size.

- :func:`train_step`: one update. It is the only place in coursekit that runs ``backward`` and steps an
  optimizer: forward and loss under bf16 autocast on CUDA, backward, gradient clipping, the step, the
  learning-rate schedule. Each model brings its own ``loss_fn(model, batch)``.
- :func:`train`: the loop around it, for every model (the RNN stages and the Transformer, also under
  :class:`~torch.nn.parallel.DistributedDataParallel`; BERT's fine-tuning): stopping on epochs, steps or a
  time budget, validation, a :class:`History` to plot, checkpoints, a progress bar.
- :func:`evaluating`: evaluation mode for a block of code, the model's own mode restored after it.
- For sequence-to-sequence models (any :class:`coursekit.encoder_decoder.EncoderDecoder` on batches of
  :class:`coursekit.data.Seq2SeqBatch`): :func:`teacher_forced_loss`, the default ``loss_fn``, built on
  :func:`sequence_loss`; :func:`evaluate`, the default validation (loss, token accuracy, exact match).
- :func:`save_checkpoint` / :func:`load_checkpoint`: everything needed to rebuild a model (class name, config,
  weights, vocabularies).

Book: chapter "Sequence-to-sequence models with RNNs" (training with teacher forcing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.data import DataLoader, DistributedSampler
from tqdm.auto import tqdm

from coursekit.data import Seq2SeqBatch, Vocab
from coursekit.decoding import greedy_decode
from coursekit.device import DeviceLike, autocast, get_device
from coursekit.encoder_decoder import EncoderDecoder

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss_fn(model, batch)``: the forward pass and the scalar loss of one batch (run under autocast)."""


@dataclass
class History:
    """What happened during training, for :func:`coursekit.viz.plot_training_curves`.

    ``steps``, ``loss`` and ``lr`` have one entry per optimizer step (``lr`` as the schedule left it after the
    step). ``epochs`` has one dict per epoch with ``epoch``, ``step`` (steps done so far), ``train_loss`` (mean
    over the epoch), ``time_s`` and, after a validation, ``valid_loss`` and the validation's other metrics
    (:func:`evaluate`'s ``token_accuracy`` and ``exact_match`` for a sequence-to-sequence model).
    """

    steps: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)

    def record_step(self, step: int, loss: float, lr: float) -> None:
        """One optimizer step: its number (from 0), its loss and the learning rate after it."""
        self.steps.append(step)
        self.loss.append(loss)
        self.lr.append(lr)

    @staticmethod
    def format_row(row: Mapping[str, Any]) -> str:
        """One log line, e.g. ``epoch=3 step=120 train_loss=0.4213``: floats to 4 significant digits."""
        return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(**data)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[nn.Module]:
    """Run a block in evaluation mode (dropout off); the model's own mode comes back after, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------------
# Sequence-to-sequence: the loss and the validation
# --------------------------------------------------------------------------------------------------


def sequence_loss(logits: Tensor, tgt_out: Tensor,
                  tgt_key_padding_mask: Tensor, *,
                  label_smoothing: float = 0.0) -> Tensor:
    r"""Mean cross-entropy over the N real target tokens:
    :math:`-\frac{1}{N}\sum_{b,t} \log p(y_{b,t} \mid y_{b,<t}, x_b)`.

    With ``label_smoothing`` :math:`\epsilon > 0` the target is smoothed
    (Szegedy et al., 2016; Vaswani et al., 2017, section 5.4),
    :math:`q(k) = (1 - \epsilon)\,[k = y] + \epsilon / V`, and the loss is
    :math:`-\frac{1}{N} \sum_{b,t} \sum_k q(k) \log p_{b,t}(k)`: "This hurts
    perplexity, as the model learns to be more unsure, but improves accuracy
    and BLEU score."

    Shape: logits (B, T, V), tgt_out (B, T), tgt_key_padding_mask (B, T)
    True at padding -> a scalar.
    """
    if (logits.shape[:2] != tgt_out.shape
            or tgt_out.shape != tgt_key_padding_mask.shape):
        raise ValueError(
            f"logits {tuple(logits.shape)} must be (B, T, V) for tgt_out "
            f"{tuple(tgt_out.shape)} and tgt_key_padding_mask "
            f"{tuple(tgt_key_padding_mask.shape)}, both (B, T)"
        )
    real = ~tgt_key_padding_mask  # (B, T)
    scores, targets = logits[real].float(), tgt_out[real]  # (N, V), (N,)
    return F.cross_entropy(scores, targets, label_smoothing=label_smoothing)


def teacher_forced_loss(model: EncoderDecoder, batch: Seq2SeqBatch,
                        *, label_smoothing: float = 0.0) -> Tensor:
    """The default ``loss_fn`` of :func:`train`: ``tgt_in`` ([START] + target)
    goes in, ``tgt_out`` (target + [STOP]) is what the model must predict;
    :func:`sequence_loss` over the real target tokens."""
    logits, _ = model(batch.src, batch.src_key_padding_mask,
                      batch.tgt_in)  # (B, T, V)
    return sequence_loss(logits, batch.tgt_out, batch.tgt_key_padding_mask,
                         label_smoothing=label_smoothing)


@torch.no_grad()
def evaluate(
    model: EncoderDecoder,
    loader: DataLoader,
    *,
    device: DeviceLike = "auto",
    start_id: int = 1,
    stop_id: int = 2,
    pad_id: int = 0,
    max_len: int | None = None,
) -> dict[str, float]:
    """Loss and accuracies on a whole loader, in eval mode (the model's mode is restored afterwards).

    - ``loss``: mean cross-entropy per real target token, teacher-forced.
    - ``token_accuracy``: teacher-forced argmax equal to the target, over real target tokens ([STOP] included).
    - ``exact_match``: greedy decoding (no teacher forcing) reproduces the whole target, [STOP] included.

    Args:
        max_len: longest output greedy decoding may produce; defaults to each batch's target length T.
    """
    device = get_device(device)
    loss_sum, correct_tokens, n_tokens, exact, n_sequences = 0.0, 0, 0, 0, 0
    with evaluating(model):
        for batch in loader:
            batch = batch.to(device)
            real = ~batch.tgt_key_padding_mask  # (B, T)
            with autocast(device):
                logits, _ = model(batch.src, batch.src_key_padding_mask, batch.tgt_in)  # (B, T, V)
                decoded = greedy_decode(model, batch.src, batch.src_key_padding_mask, start_id=start_id,
                                        stop_id=stop_id, max_len=max_len or batch.tgt_out.size(1), pad_id=pad_id)
            n = int(real.sum())
            loss_sum += sequence_loss(logits, batch.tgt_out, batch.tgt_key_padding_mask).item() * n
            correct_tokens += int(((logits.argmax(dim=-1) == batch.tgt_out) & real).sum())
            n_tokens += n
            exact += int(sequences_equal(decoded.tokens, batch.tgt_out, pad_id=pad_id).sum())
            n_sequences += batch.src.size(0)
    if n_sequences == 0:
        raise ValueError("evaluate got an empty loader")
    return {"loss": loss_sum / n_tokens, "token_accuracy": correct_tokens / n_tokens,
            "exact_match": exact / n_sequences}


def sequences_equal(predicted: Tensor, target: Tensor, *, pad_id: int = 0) -> Tensor:
    """Row-wise equality of two padded id batches of any lengths. Shape: (B, L), (B, T) -> (B,) bool."""
    width = max(predicted.size(1), target.size(1))
    predicted = F.pad(predicted, (0, width - predicted.size(1)), value=pad_id)  # (B, width)
    target = F.pad(target, (0, width - target.size(1)), value=pad_id)  # (B, width)
    return (predicted == target).all(dim=1)


# --------------------------------------------------------------------------------------------------
# The step and the loop, for every model
# --------------------------------------------------------------------------------------------------


def train_step(
    model: nn.Module,
    batch: Any,
    optimizer: Optimizer,
    *,
    loss_fn: LossFn = teacher_forced_loss,
    scheduler: LRScheduler | None = None,
    clip_grad_norm: float | None = 1.0,
    device: DeviceLike = "cpu",
) -> float:
    """One update on one batch (already on ``device``): forward and loss,
    backward, clip, step. Returns the loss.

    ``loss_fn(model, batch)`` is the model's own forward pass and loss.
    ``model`` may be wrapped in DistributedDataParallel, whose backward
    averages the gradients of all processes.
    """
    optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        loss = loss_fn(model, batch)
    loss.backward()
    if clip_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return loss.item()


def train(
    model: nn.Module,
    train_loader: Iterable,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
    time_budget_s: float | None = None,
    lr: float = 1e-3,
    optimizer: Optimizer | None = None,
    scheduler: LRScheduler | None = None,
    device: DeviceLike = "auto",
    clip_grad_norm: float | None = 1.0,
    valid_loader: DataLoader | None = None,
    checkpoint_path: str | Path | None = None,
    seed: int = 0,
    progress: bool = True,
    loss_fn: LossFn = teacher_forced_loss,
    evaluate_fn: Callable[..., dict[str, float]] = evaluate,
    valid_every: int = 1,
) -> History:
    """Train ``model`` until the first of ``epochs``, ``max_steps`` or ``time_budget_s`` runs out.

    Args:
        model: any :class:`~coursekit.encoder_decoder.EncoderDecoder` with the defaults, or any model with
            its own ``loss_fn`` and ``evaluate_fn``; moved to ``device`` and left there. It may be wrapped in
            :class:`~torch.nn.parallel.DistributedDataParallel` (validation and checkpoints use the model inside).
        train_loader: an iterable of batches with a ``.to(device)``, e.g. a loader of
            :class:`~coursekit.data.Seq2SeqBatch` es from :func:`coursekit.data.make_loader`. A :class:`~torch.utils.data.DistributedSampler` gets
            ``set_epoch`` every epoch.
        epochs, max_steps, time_budget_s: stopping rules; give at least one. The time budget counts wall time
            from the start, evaluation included, and is checked after every step (on rank 0's clock when the
            process group is running, so every process stops after the same step).
        lr: learning rate of the default optimizer, Adam (Kingma and Ba, 2015). Ignored if ``optimizer`` is given.
        optimizer: built on ``model.parameters()``; pass your own for other settings.
        scheduler: a :class:`torch.optim.lr_scheduler.LRScheduler` on that optimizer, stepped after every
            update (e.g. the Transformer's :class:`~coursekit.transformer.WarmupInverseSqrtLR`).
        device: "auto" (CUDA, then MPS, then CPU), or any device; bf16 autocast is used on CUDA.
        clip_grad_norm: rescale gradients whose global norm exceeds this (Pascanu et al., 2013); None turns it off.
        valid_loader: evaluated with ``evaluate_fn`` at the end of every ``valid_every``-th epoch.
        checkpoint_path: if given, :func:`save_checkpoint` writes there at the end of every epoch.
        seed: seeds torch's random numbers (dropout, and the order of a loader without its own generator).
            The model's initial weights come from whatever seed was set before building it.
        progress: show a tqdm progress bar and a line per epoch.
        loss_fn: ``loss_fn(model, batch)`` -> the scalar loss; :func:`teacher_forced_loss` by default.
        evaluate_fn: ``evaluate_fn(model, valid_loader, device=device)`` -> metrics with a ``"loss"``;
            :func:`evaluate` by default. Its ``loss`` goes in the epoch's row as ``valid_loss``, the rest as named.
        valid_every: validate every this many epochs.

    Returns:
        A :class:`History` of per-step losses and per-epoch metrics.
    """
    if epochs is None and max_steps is None and time_budget_s is None:
        raise ValueError("train needs a stopping rule: give epochs, max_steps or time_budget_s")
    if optimizer is not None and scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("scheduler was built on a different optimizer than the one passed to train")
    if optimizer is None and scheduler is not None:
        raise ValueError("a scheduler needs the optimizer it was built on: pass that optimizer too")
    if not isinstance(valid_every, int) or valid_every < 1:
        raise ValueError(f"valid_every must be a positive number of epochs, got {valid_every!r}")
    torch.manual_seed(seed)
    device = get_device(device)
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    inner.to(device)
    optimizer = optimizer if optimizer is not None else torch.optim.Adam(model.parameters(), lr=lr)
    history, start, step = History(), time.perf_counter(), 0

    def out_of_budget() -> bool:
        return (max_steps is not None and step >= max_steps) or (
            time_budget_s is not None and _time_is_up(start, time_budget_s))

    bar = tqdm(total=max_steps, desc="training", unit="step", disable=not progress)
    for epoch in itertools.count(1):
        if isinstance(getattr(train_loader, "sampler", None), DistributedSampler):
            train_loader.sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every process
        model.train()
        epoch_losses = []
        for batch in train_loader:
            loss = train_step(model, batch.to(device), optimizer, loss_fn=loss_fn, scheduler=scheduler,
                              clip_grad_norm=clip_grad_norm, device=device)
            history.record_step(step, loss, optimizer.param_groups[0]["lr"])
            epoch_losses.append(loss)
            step += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss:.4f}")
            if out_of_budget():
                break
        if not epoch_losses:
            raise ValueError("train_loader yielded no batches")
        row = {"epoch": epoch, "step": step, "train_loss": sum(epoch_losses) / len(epoch_losses)}
        if valid_loader is not None and epoch % valid_every == 0:
            metrics = dict(evaluate_fn(inner, valid_loader, device=device))
            row["valid_loss"] = metrics.pop("loss")
            row.update(metrics)
        row["time_s"] = time.perf_counter() - start
        history.epochs.append(row)
        if progress:
            bar.write(History.format_row(row))
        if checkpoint_path is not None:
            dataset = getattr(train_loader, "dataset", None)
            save_checkpoint(checkpoint_path, inner, src_vocab=getattr(dataset, "src_vocab", None),
                            tgt_vocab=getattr(dataset, "tgt_vocab", None), optimizer=optimizer, history=history)
        if out_of_budget() or (epochs is not None and epoch >= epochs):
            break
    bar.close()
    return history


def _time_is_up(start: float, budget_s: float) -> bool:
    """Whether ``budget_s`` seconds have passed since ``start``. In a process group rank 0's clock decides for
    everyone: a process that stopped alone would leave the others waiting for its gradients."""
    flag = torch.tensor([float(time.perf_counter() - start >= budget_s)])
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(flag, src=0)
    return bool(flag.item())


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns. ``optimizer_state`` goes to ``optimizer.load_state_dict`` to resume."""

    model: EncoderDecoder
    src_vocab: Vocab | None
    tgt_vocab: Vocab | None
    history: History | None
    optimizer_state: dict[str, Any] | None


def save_checkpoint(
    path: str | Path,
    model: EncoderDecoder,
    *,
    src_vocab: Vocab | None = None,
    tgt_vocab: Vocab | None = None,
    optimizer: Optimizer | None = None,
    history: History | None = None,
) -> None:
    """Write the model's class name, config, weights, and optionally vocabularies, optimizer state and history.

    The file is written next to ``path`` and then renamed, so an interrupted save never leaves half a checkpoint.
    """
    config = getattr(model, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise TypeError(f"{type(model).__name__} has no dataclass `config`; save_checkpoint needs one to rebuild it")
    payload = {
        "model_class": type(model).__name__,
        "config": dataclasses.asdict(config),
        "model_state": model.state_dict(),
        "src_vocab": src_vocab.to_dict() if src_vocab is not None else None,
        "tgt_vocab": tgt_vocab.to_dict() if tgt_vocab is not None else None,
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "history": history.to_dict() if history is not None else None,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path, model_class: type[EncoderDecoder], *, device: DeviceLike = "cpu") -> Checkpoint:
    """Rebuild a model saved by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        model_class: the class that was saved, e.g. :class:`coursekit.seq2seq.BahdanauEncoderDecoder`
            (named explicitly rather than looked up, so a checkpoint never chooses what code runs).
        device: where to put the weights.

    Raises:
        ValueError: if the checkpoint holds a different class.
    """
    payload = torch.load(path, map_location=get_device(device), weights_only=True)
    if payload["model_class"] != model_class.__name__:
        raise ValueError(f"{path} holds a {payload['model_class']}, not a {model_class.__name__}; pass that class")
    model = model_class(model_class.config_class(**payload["config"]))
    model.load_state_dict(payload["model_state"])
    model.to(get_device(device))
    return Checkpoint(
        model=model,
        src_vocab=Vocab.from_dict(payload["src_vocab"]) if payload["src_vocab"] is not None else None,
        tgt_vocab=Vocab.from_dict(payload["tgt_vocab"]) if payload["tgt_vocab"] is not None else None,
        history=History.from_dict(payload["history"]) if payload["history"] is not None else None,
        optimizer_state=payload["optimizer_state"],
    )
