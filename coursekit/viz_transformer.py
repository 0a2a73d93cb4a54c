"""Plots for the Transformer chapters: attention per layer and head, the learning-rate schedule, positions.

Shape legend: L layers, H heads, T queries, S keys, D model dim.

General functions, independent of any model class (meant to join :mod:`coursekit.viz`). Every figure has a
title, labelled axes and, for heat maps, a colorbar, so it can be read on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from coursekit.positional import sinusoidal_table
from coursekit.transformer import transformer_lr


def _as_array(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def plot_attention_grid(
    weights: torch.Tensor | np.ndarray,
    x_labels: Sequence[str] | None = None,
    y_labels: Sequence[str] | None = None,
    title: str = "Attention weights per layer and head",
    *,
    xlabel: str = "key (attended to)",
    ylabel: str = "query (attending)",
    cmap: str = "viridis",
) -> Figure:
    """A grid of attention heat maps: one row per layer, one column per head, one shared colour scale.

    Args:
        weights: (L, H, T, S), e.g. ``Transformer.attention_maps(...).cross[0]``; a (H, T, S) input is one layer.
        x_labels: S labels for the keys (e.g. source tokens). y_labels: T labels for the queries.
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
    for name, labels, n in (("x_labels", x_labels, S), ("y_labels", y_labels, T)):
        if labels is not None and len(labels) != n:
            raise ValueError(f"{len(labels)} {name} for {n} {'keys' if name == 'x_labels' else 'queries'}")
    cell_w, cell_h = max(2.2, 0.32 * S + 1.0), max(2.0, 0.3 * T + 0.9)
    figure, axes = plt.subplots(L, H, figsize=(cell_w * H + 1.2, cell_h * L + 0.8), squeeze=False,
                                constrained_layout=True)
    image = None
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            image = ax.imshow(grid[layer, head], cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=9)
            ax.set_xticks(range(S), labels=list(x_labels) if x_labels is not None else range(S), rotation=90,
                          fontsize=8)
            ax.set_yticks(range(T), labels=list(y_labels) if y_labels is not None else range(T), fontsize=8)
            if layer == L - 1:
                ax.set_xlabel(xlabel, fontsize=9)
            if head == 0:
                ax.set_ylabel(ylabel, fontsize=9)
    figure.colorbar(image, ax=axes, label="attention weight", shrink=0.8)
    figure.suptitle(title)
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
