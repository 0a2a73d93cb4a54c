"""Plots that show what attention does: heat maps of attention weights (and, later, training curves).

Every figure has a title, labelled axes and, for heat maps, a colorbar, so it can be read on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes


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
