"""Plots for BERT: pretraining curves of both tasks, a head's attention over a sentence pair, and the top-k
guesses for a [MASK].

Shape legend: S sequence length, L layers, H heads, V vocabulary size.

Every figure has a title, labelled axes, a legend where there are several lines and, for heat maps, a colorbar.
Heat maps are drawn by :func:`coursekit.viz.plot_attention`.

Book: chapter "BERT".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from coursekit.bert import BertForPreTraining, BertModel
from coursekit.bert_data import WordPieceTokenizer
from coursekit.viz import plot_attention


def _moving_average(values: list[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the running mean over ``window`` steps, x the index of each window's last step."""
    y = np.asarray(values, dtype=float)
    window = max(1, min(window, len(y)))
    return np.arange(window - 1, len(y)), np.convolve(y, np.ones(window) / window, mode="valid")


def plot_pretraining_curves(history: Any, baselines: Mapping[str, float] | None = None, *,
                            smoothing: int = 50, title: str = "BERT pretraining") -> Figure:
    """Loss (left) and accuracy (right) of masked LM and next sentence prediction against the optimizer step.

    Args:
        history: a :class:`coursekit.bert_train.PretrainingHistory` (or its ``to_dict()``).
        baselines: ``{"mlm_accuracy": ..., "nsp_accuracy": ...}`` from
            :func:`coursekit.bert_train.majority_baselines`, drawn as dashed lines.
        smoothing: training curves are running means over this many steps.
        title: the figure's title.

    Returns:
        The figure: training curves as lines, held-out evaluations as markers.
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    if not data.get("mlm_loss"):
        raise ValueError("history has no pretraining steps; pass what coursekit.bert_train.pretrain returned")
    evals = [row for row in data.get("evals", []) if "mlm_loss" in row]
    figure, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    for task, color in (("mlm", "tab:blue"), ("nsp", "tab:orange")):
        name = task.upper()
        for ax, metric in ((loss_ax, "loss"), (accuracy_ax, "accuracy")):
            x, y = _moving_average(data[f"{task}_{metric}"], smoothing)
            ax.plot(x, y, color=color, label=f"{name} train ({smoothing}-step mean)")
            if evals:
                ax.plot([r["step"] for r in evals], [r[f"{task}_{metric}"] for r in evals], "o", color=color,
                        markeredgecolor="black", label=f"{name} held-out")
        if baselines is not None and f"{task}_accuracy" in baselines:
            accuracy_ax.axhline(baselines[f"{task}_accuracy"], color=color, linestyle="--",
                                label=f"{name} majority baseline")
    loss_ax.set(title="Cross-entropy", xlabel="optimizer step", ylabel="loss (MLM per masked token, NSP per pair)")
    accuracy_ax.set(title="Accuracy", xlabel="optimizer step", ylabel="accuracy", ylim=(-0.02, 1.02))
    for ax in (loss_ax, accuracy_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _encode(tokenizer: WordPieceTokenizer, text_a: str, text_b: str | None, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, types = tokenizer.encode_pair(text_a, text_b, max_len=max_len)
    return torch.tensor([ids]), torch.tensor([types])  # (1, S), (1, S)


@torch.no_grad()
def plot_bert_attention(model: BertModel | BertForPreTraining, tokenizer: WordPieceTokenizer, text_a: str,
                        text_b: str | None = None, *, layer: int = 0, head: int = 0, ax: Axes | None = None) -> Axes:
    """One head's self-attention over ``[CLS] A [SEP] (B [SEP])``, tokens on both axes.

    Args:
        model: a BERT (the encoder of a :class:`~coursekit.bert.BertForPreTraining` is used).
        tokenizer: the model's tokenizer. text_a, text_b: the sentence(s).
        layer, head: which of the L x H maps (0-based).
        ax: axes to draw on; a new figure is made when None.

    Returns:
        The axes, with a colorbar.
    """
    bert = model.bert if isinstance(model, BertForPreTraining) else model
    L, H = bert.config.num_layers, bert.config.nhead
    if not (0 <= layer < L and 0 <= head < H):
        raise ValueError(f"the model has layers 0..{L - 1} and heads 0..{H - 1}, got layer={layer}, head={head}")
    was_training = bert.training
    bert.eval()
    input_ids, token_type_ids = _encode(tokenizer, text_a, text_b, bert.config.max_len)
    maps = bert.attention_maps(input_ids, token_type_ids)  # (1, L, H, S, S)
    bert.train(was_training)
    tokens = tokenizer.convert_ids_to_tokens(input_ids[0])
    return plot_attention(maps[0, layer, head], keys=tokens, queries=tokens, ax=ax, annotate=False,
                          title=f"BERT self-attention, layer {layer + 1} of {L}, head {head + 1} of {H}",
                          xlabel="key token (attended to)", ylabel="query token (attending)")


@torch.no_grad()
def top_k_mask_predictions(model: BertForPreTraining, tokenizer: WordPieceTokenizer, text: str,
                           k: int = 10) -> list[tuple[str, float]]:
    """The model's k most probable tokens, with probabilities, for the first ``[MASK]`` in ``text``."""
    input_ids, token_type_ids = _encode(tokenizer, text, None, model.config.max_len)
    positions = (input_ids[0] == tokenizer.mask_id).nonzero()
    if len(positions) == 0:
        raise ValueError(f"no {tokenizer.id_to_token(tokenizer.mask_id)} token in {text!r}")
    was_training = model.training
    model.eval()
    mlm_logits, _ = model(input_ids, token_type_ids)  # (1, S, V)
    model.train(was_training)
    probs = mlm_logits[0, int(positions[0])].float().softmax(-1)  # (V,)
    top = probs.topk(k)
    return [(tokenizer.id_to_token(int(i)), float(p)) for p, i in zip(top.values, top.indices)]


def plot_mask_predictions(model: BertForPreTraining, tokenizer: WordPieceTokenizer, text: str, k: int = 10,
                          *, ax: Axes | None = None) -> Axes:
    """Horizontal bar chart of :func:`top_k_mask_predictions`, most probable on top."""
    predictions = top_k_mask_predictions(model, tokenizer, text, k)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 0.35 * k + 1.5))
    tokens, probs = zip(*predictions)
    ax.barh(range(len(tokens))[::-1], probs, color="tab:blue")
    ax.set_yticks(range(len(tokens))[::-1], labels=tokens)
    ax.set(title=f"Top-{k} predictions for [MASK] in\n{text!r}", xlabel="probability", ylabel="predicted token")
    ax.grid(axis="x", alpha=0.3)
    return ax
