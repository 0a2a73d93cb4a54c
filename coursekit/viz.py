"""Every plot of the course that needs no model to run: attention weights, positions, learning rates, training.

Shape legend: L layers, H heads, T queries, S keys, D model dim.

- Attention: :func:`plot_attention` (one map) and :func:`plot_attention_grid` (every layer and head), with
  the keys along the x axis and the queries along the y axis, labelled by ``keys`` and ``queries``.
- Positions: :func:`plot_positional_encodings`.
- Training: :func:`plot_training_curves` (a :class:`coursekit.train.History`), :func:`plot_pretraining_curves`
  (BERT's two tasks), :func:`plot_lr_schedule` (the Transformer's warm-up), :func:`plot_length_sweep`.
- The arc: :func:`plot_arc`, the baseline and stages 1-4 side by side (the rows of :func:`coursekit.arc.arc_rows`).

Plots that run a BERT are in :mod:`coursekit.bert.plots`. Every figure has a title, labelled axes, a legend where
there are several lines and, for heat maps, a colorbar, so it can be read on its own.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from coursekit.positional import sinusoidal_table
from coursekit.transformer import transformer_lr

if TYPE_CHECKING:
    from coursekit.train import History


def _as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def _check_labels(keys: Sequence[str] | None, queries: Sequence[str] | None, S: int, T: int) -> None:
    for name, labels, n in (("keys", keys, S), ("queries", queries, T)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} {name} labels for {n} {'columns' if name == 'keys' else 'rows'}")


def _moving_average(values: list[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the running mean over ``window`` steps, x the index of each window's last step."""
    y = np.asarray(values, dtype=float)
    window = max(1, min(window, len(y)))
    return np.arange(window - 1, len(y)), np.convolve(y, np.ones(window) / window, mode="valid")


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------


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
    matrix = _as_array(weights)
    while matrix.ndim > 2 and matrix.shape[0] == 1:
        matrix = matrix[0]
    if matrix.ndim != 2:
        raise ValueError(f"plot_attention draws one (T, S) matrix, got shape {matrix.shape}; index a batch item and head first")
    T, S = matrix.shape
    _check_labels(keys, queries, S, T)
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


def plot_attention_grid(
    weights: torch.Tensor | np.ndarray,
    keys: Sequence[str] | None = None,
    queries: Sequence[str] | None = None,
    title: str = "Attention weights per layer and head",
    *,
    xlabel: str = "key (attended to)",
    ylabel: str = "query (attending)",
    cmap: str = "viridis",
) -> Figure:
    """A grid of attention heat maps: one row per layer, one column per head, one shared colour scale.

    Args:
        weights: (L, H, T, S), e.g. ``Transformer.attention_maps(...).cross[0]``; a (H, T, S) input is one layer.
        keys: S labels for the columns (e.g. source tokens). queries: T labels for the rows (e.g. output tokens).
        title: the figure's title; each panel is titled "layer l, head h".
        xlabel, ylabel: axis labels (shown on the bottom row and the left column).
        cmap: matplotlib colormap.

    Returns:
        The figure, with one colorbar for all panels (weights from 0 to 1).
    """
    grid = _as_array(weights)
    if grid.ndim == 3:
        grid = grid[None]  # (H, T, S) -> (1, H, T, S)
    if grid.ndim != 4:
        raise ValueError(
            f"plot_attention_grid takes (L, H, T, S) weights, got shape {grid.shape}; index the batch first"
        )
    L, H, T, S = grid.shape
    _check_labels(keys, queries, S, T)
    cell_w, cell_h = max(2.2, 0.32 * S + 1.0), max(2.0, 0.3 * T + 0.9)
    figure, axes = plt.subplots(L, H, figsize=(cell_w * H + 1.2, cell_h * L + 0.8), squeeze=False,
                                constrained_layout=True)
    image = None
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            image = ax.imshow(grid[layer, head], cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(S), labels=list(keys) if keys is not None else range(S), rotation=90,
                          fontsize=8)
            ax.set_yticks(range(T), labels=list(queries) if queries is not None else range(T), fontsize=8)
            if layer == L - 1:
                ax.set_xlabel(xlabel, fontsize=9)
            if head == 0:
                ax.set_ylabel(ylabel, fontsize=9)
    figure.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    figure.suptitle(title)
    return figure


# --------------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------------


def plot_positional_encodings(
    max_len: int = 100,
    d_model: int = 128,
    *,
    title: str = "Sinusoidal positional encodings (Vaswani et al., 2017, section 3.5)",
) -> Figure:
    """The table :func:`coursekit.positional.sinusoidal_table` as a heat map (left) and a few of its columns (right).

    Left: row = position, column = dimension; low dimensions turn fast, high ones slowly. Right: dimensions
    0, 2, 8 and 32 (sines of decreasing frequency) against the position.
    """
    table = sinusoidal_table(max_len, d_model).numpy()  # (max_len, D)
    figure, (heat_ax, line_ax) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.3, 1]})
    image = heat_ax.imshow(table, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    figure.colorbar(image, ax=heat_ax, label="encoding value")
    heat_ax.set(title="PE[position, dimension]", xlabel="dimension i", ylabel="position")
    for dim in (0, 2, 8, 32):
        if dim < d_model:
            line_ax.plot(np.arange(max_len), table[:, dim], label=f"dimension {dim}")
    line_ax.set(title="Some dimensions against position", xlabel="position", ylabel="encoding value")
    line_ax.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


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
        loader (a classifier's ``accuracy`` instead, when that is what the epochs hold); otherwise it says so.
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
        ends, smooth = _moving_average(loss, smoothing)
        loss_ax.plot(steps[ends], smooth, color="tab:blue", label=f"train loss ({smoothing}-step mean)")
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
    elif any(key in row for row in epochs for key in ("accuracy", "valid_accuracy")):  # a classifier
        key = "accuracy" if any("accuracy" in row for row in epochs) else "valid_accuracy"
        rows = [row for row in epochs if key in row]
        accuracy_ax.plot([row["epoch"] for row in rows], [row[key] for row in rows], "o-", label="validation accuracy")
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


def plot_pretraining_curves(history: Any, baselines: Mapping[str, float] | None = None, *,
                            smoothing: int = 50, title: str = "BERT pretraining") -> Figure:
    """Loss (left) and accuracy (right) of masked LM and next sentence prediction against the optimizer step.

    Args:
        history: a :class:`coursekit.bert.training.PretrainingHistory` (or its ``to_dict()``).
        baselines: ``{"mlm_accuracy": ..., "nsp_accuracy": ...}`` from
            :func:`coursekit.bert.training.majority_baselines`, drawn as dashed lines.
        smoothing: training curves are running means over this many steps.
        title: the figure's title.

    Returns:
        The figure: training curves as lines, held-out evaluations as markers.
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    if not data.get("mlm_loss"):
        raise ValueError("history has no pretraining steps; pass what coursekit.bert.training.pretrain returned")
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


def plot_lr_schedule(
    d_model: int | Sequence[int] = 512,
    warmup_steps: int | Sequence[int] = 4000,
    *,
    total_steps: int = 20_000,
    factor: float = 1.0,
    title: str = "Learning rate with warm-up (Vaswani et al., 2017, eq. 3)",
) -> Figure:
    r"""The learning rate of :func:`coursekit.transformer.transformer_lr` against the optimizer step.

    :math:`lrate = d^{-0.5} \min(step^{-0.5}, step \cdot warmup^{-1.5})`: a linear rise, then a decay as
    :math:`1/\sqrt{step}`. Pass several ``d_model`` or ``warmup_steps`` values to compare curves (one line each).

    Returns:
        The figure, with a legend and the peak of each curve marked.
    """
    d_models = [d_model] if isinstance(d_model, int) else list(d_model)
    warmups = [warmup_steps] if isinstance(warmup_steps, int) else list(warmup_steps)
    steps = np.arange(1, total_steps + 1)
    figure, ax = plt.subplots(figsize=(7, 4))
    for d in d_models:
        for w in warmups:
            lrs = [transformer_lr(int(s), d, w, factor) for s in steps]
            (line,) = ax.plot(steps, lrs, label=f"d_model={d}, warmup={w}")
            ax.plot([w], [transformer_lr(w, d, w, factor)], "o", color=line.get_color())
    ax.set(title=title, xlabel="optimizer step", ylabel="learning rate")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.grid(alpha=0.3)
    ax.legend(title="peak marked")
    figure.tight_layout()
    return figure


# --------------------------------------------------------------------------------------------------
# The arc
# --------------------------------------------------------------------------------------------------

_STAGE_COLOURS = {"baseline": "tab:gray", "stage1": "tab:orange", "stage2": "tab:green", "stage3": "tab:blue",
                  "stage4": "tab:purple"}
_RUN_LINES = {"stage3-learned": ":", "stage3-none": "--"}


def plot_arc(rows: Sequence[Mapping[str, Any]], *, title: str = "The arc on one task, with one training budget",
             figsize: tuple[float, float] = (10.5, 8.0)) -> Figure:
    """The baseline and the stages side by side, in four panels: exact match by input length, seconds per epoch,
    the time of one training step against sequence length, and parameters.

    Args:
        rows: one mapping per model, as :func:`coursekit.arc.arc_rows` makes them, with ``key`` (``"stage1"``,
            ``"stage3-none"``), ``short`` (legend), ``exact_by_band`` (``{"1-15": 0.98, ...}``),
            ``seconds_per_epoch`` and ``cpu_seconds_per_epoch``, ``step_seconds`` (``{n: seconds}``; may be
            empty) and ``parameters``. A run of stage 3 other than ``"stage3"`` is drawn dashed or dotted in
            stage 3's colour, in the first panel only.
        title: the figure's title.

    Returns:
        The figure.
    """
    if not rows:
        raise ValueError("rows is empty; pass coursekit.arc.arc_rows(results, timings)")
    bands = list(rows[0]["exact_by_band"])
    figure, axes = plt.subplots(2, 2, figsize=figsize)
    (match_ax, epoch_ax), (step_ax, param_ax) = axes

    def colour(row: Mapping[str, Any]) -> str:
        return _STAGE_COLOURS.get(row["key"].split("-")[0], "black")

    for marker, row in zip(itertools.cycle("osD^vP*X"), rows):
        if list(row["exact_by_band"]) != bands:
            raise ValueError(f"{row['key']} has bands {list(row['exact_by_band'])}, the first row {bands}")
        match_ax.plot(range(len(bands)), [row["exact_by_band"][b] for b in bands], marker=marker,
                      linestyle=_RUN_LINES.get(row["key"], "-"), color=colour(row), label=row["short"])
    match_ax.set_xticks(range(len(bands)), labels=bands)
    match_ax.set(title="Exact match on held-out inputs", xlabel="input length (characters)",
                 ylabel="share decoded exactly right", ylim=(-0.02, 1.02))
    match_ax.legend(fontsize=7.5, loc="lower left")

    stages = [row for row in rows if row["key"] not in _RUN_LINES]
    names = [row["short"].split(":")[0] for row in stages]
    x = np.arange(len(stages))
    epoch_ax.bar(x - 0.2, [row["seconds_per_epoch"] for row in stages], width=0.4,
                 color=[colour(r) for r in stages], label="wall clock")
    epoch_ax.bar(x + 0.2, [row["cpu_seconds_per_epoch"] for row in stages], width=0.4,
                 color=[colour(r) for r in stages], alpha=0.45, hatch="//", label="CPU time")
    epoch_ax.set_xticks(x, labels=names)
    epoch_ax.set(title="Training time per epoch", xlabel="model (baseline, stages 1-4)", ylabel="seconds")
    epoch_ax.legend(fontsize=8)

    timed = [row for row in stages if row.get("step_seconds")]
    for marker, row in zip(itertools.cycle("osD^vP*X"), timed):
        lengths = sorted(row["step_seconds"])
        step_ax.plot(lengths, [1000 * row["step_seconds"][n] for n in lengths], marker=marker, color=colour(row),
                     label=row["short"])
    step_ax.set_xscale("log", base=2)
    step_ax.set_yscale("log")
    step_ax.set(title="One training step against sequence length", xlabel="source and target length n",
                ylabel="CPU milliseconds per step (log scale)")
    if timed:
        step_ax.set_xticks(sorted(timed[0]["step_seconds"]), labels=[str(n) for n in sorted(timed[0]["step_seconds"])])
        step_ax.legend(fontsize=7.5)
    step_ax.grid(alpha=0.3, which="both")

    param_ax.bar(x, [row["parameters"] / 1000 for row in stages], color=[colour(r) for r in stages])
    for xi, row in zip(x, stages):
        param_ax.annotate(f"{row['parameters'] / 1000:.0f}k", (xi, row["parameters"] / 1000), ha="center",
                          va="bottom", fontsize=8)
    param_ax.set_xticks(x, labels=names)
    param_ax.set(title="Parameters", xlabel="model (baseline, stages 1-4)", ylabel="thousands")
    param_ax.margins(y=0.15)
    for ax in (match_ax, epoch_ax, param_ax):
        ax.grid(alpha=0.3, axis="y")
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def plot_language_model_curves(history: History | Mapping[str, Any], baselines: Mapping[str, float] | None = None, *,
                               title: str = "Training a language model", window: int = 50,
                               ax: Axes | None = None) -> Axes:
    """Perplexity against steps: the training loss (moving average of ``window`` steps, as exp(loss)), the
    validation perplexity at each evaluation, and a dashed line per baseline (e.g. n-gram perplexities).

    Args:
        history: a :class:`coursekit.train.History` (or its dict) whose ``epochs`` hold ``step`` and
            ``valid_loss`` in nats per token, as :func:`coursekit.gpt_train.train_gpt` writes.
    """
    data = history.to_dict() if hasattr(history, "to_dict") else dict(history)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    loss = np.asarray(data["loss"], dtype=float)
    if loss.size:
        w = max(1, min(window, loss.size))
        smooth = np.convolve(loss, np.ones(w) / w, mode="valid")
        ax.plot(np.asarray(data["steps"])[w - 1:], np.exp(smooth), label=f"training (mean of {w} steps)", color="C0")
    evals = [e for e in data["epochs"] if "valid_loss" in e]
    if evals:
        ax.plot([e["step"] for e in evals], [math.exp(e["valid_loss"]) for e in evals], "o-", color="C1",
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
