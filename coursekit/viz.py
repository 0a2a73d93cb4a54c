"""Plots that show what attention does: heat maps of attention weights, training curves, accuracy by length.

Every figure has a title, labelled axes, a legend where there are several lines and, for heat maps, a
colorbar, so it can be read on its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from coursekit.train import History


def plot_attention(
    weights: torch.Tensor | np.ndarray,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    *,
    title: str = "Attention weights",
    xlabel: str = "Key (attended to)",
    ylabel: str = "Query (attending)",
    annotate: bool | None = None,
    ax: Axes | None = None,
    cmap: str = "viridis",
) -> Axes:
    """Draw one attention matrix as a heat map: row t shows how query t spreads its attention over the keys.

    Args:
        weights: (T, S) attention weights, each row summing to 1 (a leading batch dim of size 1 is squeezed).
        keys: S labels for the columns (e.g. source tokens).
        queries: T labels for the rows (e.g. target tokens).
        title, xlabel, ylabel: figure text.
        annotate: write each weight in its cell; by default only for small matrices (up to 12 x 12).
        ax: axes to draw on; a new figure is made when None.
        cmap: matplotlib colormap.

    Returns:
        The axes, with a colorbar attached.
    """
    matrix = weights.detach().float().cpu().numpy() if isinstance(weights, torch.Tensor) else np.asarray(weights)
    while matrix.ndim > 2 and matrix.shape[0] == 1:
        matrix = matrix[0]
    if matrix.ndim != 2:
        raise ValueError(f"plot_attention draws one (T, S) matrix, got shape {matrix.shape}; index a batch item and head first")
    T, S = matrix.shape
    for name, labels, n in (("keys", keys, S), ("queries", queries, T)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} {name} labels for {n} {'columns' if name == 'keys' else 'rows'}")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(3.5, 0.45 * S + 2), max(3.0, 0.4 * T + 1.2)))

    image = ax.imshow(matrix, cmap=cmap, vmin=0.0, vmax=max(1e-9, float(matrix.max())), aspect="auto")
    ax.figure.colorbar(image, ax=ax, label="attention weight", fraction=0.046, pad=0.04)
    ax.set_xticks(range(S), labels=list(keys) if keys is not None else range(S),
                  rotation=90 if keys is not None and max(map(len, keys), default=0) > 2 else 0)
    ax.set_yticks(range(T), labels=list(queries) if queries is not None else range(T))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if annotate if annotate is not None else (T <= 12 and S <= 12):
        threshold = 0.6 * matrix.max()
        for t in range(T):
            for s in range(S):
                ax.text(s, t, f"{matrix[t, s]:.2f}", ha="center", va="center", fontsize=8,
                        color="black" if matrix[t, s] > threshold else "white")
    return ax


def plot_training_curves(
    history: History | Mapping[str, Any],
    *,
    title: str = "Training",
    smoothing: int = 20,
) -> Figure:
    """Loss against optimizer step (left) and accuracy against epoch (right).

    Args:
        history: a :class:`coursekit.train.History`, or its ``to_dict()`` (as stored in a checkpoint).
        title: the figure's title; each panel has its own as well.
        smoothing: also draw the training loss averaged over this many steps (1 turns it off).

    Returns:
        The figure. The right panel shows token accuracy and exact match when the run had a validation
        loader (a classifier's ``valid_accuracy`` instead, when that is what the epochs hold); otherwise it says so.
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    missing = {"steps", "loss", "epochs"} - set(data)
    if missing:
        raise ValueError(f"history lacks {sorted(missing)}; pass the History that coursekit.train.train returned")
    if not data["loss"]:
        raise ValueError("history has no steps to plot; train for at least one step")
    steps, loss, epochs = np.asarray(data["steps"]), np.asarray(data["loss"], dtype=float), data["epochs"]
    figure, (loss_ax, accuracy_ax) = plt.subplots(1, 2, figsize=(11, 4))

    loss_ax.plot(steps, loss, color="tab:blue", alpha=0.35 if smoothing > 1 else 1.0, label="train loss (per step)")
    if 1 < smoothing <= len(loss):
        smooth = np.convolve(loss, np.ones(smoothing) / smoothing, mode="valid")  # moving average
        loss_ax.plot(steps[smoothing - 1 :], smooth, color="tab:blue", label=f"train loss ({smoothing}-step mean)")
    with_valid = [row for row in epochs if "valid_loss" in row]
    if with_valid:
        loss_ax.plot([row["step"] for row in with_valid], [row["valid_loss"] for row in with_valid], "o-",
                     color="tab:orange", label="validation loss (per epoch)")
    loss_ax.set_yscale("log")
    loss_ax.set(title="Cross-entropy loss", xlabel="optimizer step", ylabel="loss per target token (log scale)")
    loss_ax.legend()

    with_accuracy = [row for row in epochs if "token_accuracy" in row]
    if with_accuracy:
        epoch_numbers = [row["epoch"] for row in with_accuracy]
        accuracy_ax.plot(epoch_numbers, [row["token_accuracy"] for row in with_accuracy], "o-", label="token accuracy")
        accuracy_ax.plot(epoch_numbers, [row["exact_match"] for row in with_accuracy], "s-",
                         label="exact match (greedy)")
        accuracy_ax.set_ylim(-0.02, 1.02)
        accuracy_ax.legend()
    elif any("valid_accuracy" in row for row in epochs):  # a classifier: one label per example
        rows = [row for row in epochs if "valid_accuracy" in row]
        accuracy_ax.plot([row["epoch"] for row in rows], [row["valid_accuracy"] for row in rows], "o-",
                         label="validation accuracy")
        accuracy_ax.legend()
    else:
        accuracy_ax.text(0.5, 0.5, "no validation loader:\nno accuracy recorded", ha="center", va="center",
                         transform=accuracy_ax.transAxes)
    accuracy_ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    accuracy_ax.set(title="Validation accuracy", xlabel="epoch", ylabel="accuracy")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_length_sweep(
    results: Mapping[str, Mapping[str, float]],
    *,
    title: str = "Exact match by input length",
    xlabel: str = "input length (tokens)",
    ylabel: str = "exact match",
    ax: Axes | None = None,
) -> Axes:
    """Accuracy against input length, one line per model: where does each model stop coping?

    Args:
        results: ``{model name: {length bucket label: accuracy}}``, e.g.
            ``{"RNN": {"1-10": 0.98, "11-20": 0.71}, "Bahdanau": {...}}``. Buckets are drawn in the order of the
            first model's dict; every model must have the same buckets.
        title, xlabel, ylabel: figure text.
        ax: axes to draw on; a new figure is made when None.

    Returns:
        The axes.
    """
    if not results:
        raise ValueError("results is empty; pass {model name: {length bucket: accuracy}}")
    buckets = list(next(iter(results.values())))
    for name, by_bucket in results.items():
        if list(by_bucket) != buckets:
            raise ValueError(f"{name!r} has buckets {list(by_bucket)}, but the first model has {buckets}")
    if ax is None:
        _, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(buckets) + 2), 4))
    positions = np.arange(len(buckets))
    for marker, (name, by_bucket) in zip(itertools.cycle("osD^vP*X"), results.items()):
        ax.plot(positions, [by_bucket[b] for b in buckets], marker=marker, label=name)
    ax.set_xticks(positions, labels=buckets)
    ax.set_ylim(-0.02, 1.02)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    return ax


def plot_language_model_curves(history: History | Mapping[str, Any], baselines: Mapping[str, float] | None = None, *,
                               title: str = "Training a language model", window: int = 50,
                               ax: Axes | None = None) -> Axes:
    """Perplexity against steps: the training loss (moving average of ``window`` steps, as exp(loss)), the
    validation perplexity at each evaluation, and a dashed line per baseline (e.g. n-gram perplexities).

    Args:
        history: a :class:`coursekit.train.History` (or its dict) whose ``epochs`` hold ``step`` and
            ``valid_perplexity``, as :func:`coursekit.gpt_train.train_gpt` writes.
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    loss = np.asarray(data["loss"], dtype=float)
    if loss.size:
        w = max(1, min(window, loss.size))
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(np.asarray(data["steps"])[w - 1:], np.exp(smooth), label=f"training (mean of {w} steps)", color="C0")
    evals = [e for e in data["epochs"] if "valid_perplexity" in e]
    if evals:
        ax.plot([e["step"] for e in evals], [e["valid_perplexity"] for e in evals], "o-", color="C1",
                label="validation (held-out works)")
    for i, (name, value) in enumerate((baselines or {}).items()):
        ax.axhline(value, linestyle="--", color=f"C{i + 2}", label=f"{name} baseline ({value:.1f})")
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("perplexity per token (log scale)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return ax


def plot_confusion_matrix(confusion: Sequence[Sequence[int]] | np.ndarray, classes: Sequence[str], *,
                          title: str = "Confusion matrix (rows sum to 1)", ax: Axes | None = None) -> Axes:
    """Row-normalised confusion matrix: row = true class, column = predicted; each cell says what share of
    that class went where, with the count beside it. A colorbar gives the scale."""
    counts = np.asarray(confusion, dtype=float)
    if counts.shape != (len(classes), len(classes)):
        raise ValueError(f"confusion must be (K, K) for {len(classes)} classes, got {counts.shape}")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.0 * len(classes) + 2.5, 0.85 * len(classes) + 1.5))
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.figure.colorbar(image, ax=ax, label="share of the true class", fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(classes)), labels=classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    for i, j in itertools.product(range(len(classes)), repeat=2):
        ax.text(j, i, f"{shares[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=7,
                color="white" if shares[i, j] > 0.6 else "black")
    return ax
