"""Positional encodings: attention is blind to order, so each position adds its own vector to the input.

Shape legend: B batch, T sequence length, D model dim (``d_model``).

- :func:`sinusoidal_table`: the fixed sines and cosines of Vaswani et al. (2017, section 3.5).
- :class:`SinusoidalPositionalEncoding`: adds that table to a batch of embeddings.
- :class:`LearnedPositionalEncoding`: one trained vector per position (as in BERT and GPT).

Both modules take an ``offset`` so that a decoder with a key/value cache, which feeds one new token
at a time, gives the token at position ``offset`` that position's encoding.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    r"""The sinusoidal position table of Vaswani et al. (2017, section 3.5).

    .. math::
        PE_{(pos, 2i)} = \sin\!\left(pos / 10000^{2i/d}\right), \qquad
        PE_{(pos, 2i+1)} = \cos\!\left(pos / 10000^{2i/d}\right)

    Each pair of columns (2i, 2i+1) turns at its own frequency, from one radian per position
    down to 1/10000, so ``PE[pos + k]`` is a rotation of ``PE[pos]`` by a fixed angle per pair,
    whatever ``pos``.
    An odd ``d_model`` keeps the sine of the last pair and drops its cosine.

    Args:
        max_len: number of positions, 0 .. max_len - 1.
        d_model: D, the size of each encoding.

    Shape:
        Returns (max_len, d_model), float32.
    """
    if max_len < 1 or d_model < 1:
        raise ValueError(f"max_len and d_model must be positive, "
                         f"got max_len={max_len}, d_model={d_model}")
    # float64 for the angles: in float32, pos * frequency is off by ~1e-4 rad at pos ~ 5000.
    position = torch.arange(max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(D/2),)
    angle = position * torch.exp(-math.log(10000.0) * two_i / d_model)  # (max_len, ceil(D/2))
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.float()


class _PositionalEncoding(nn.Module):
    """Shared checks and dropout; subclasses say what :meth:`encoding` returns."""

    def __init__(self, d_model: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.dropout = nn.Dropout(dropout)

    def encoding(self, start: int, stop: int) -> Tensor:
        """Encodings of positions start .. stop - 1. Shape: (stop - start, D)."""
        raise NotImplementedError

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """Add the encodings of positions ``offset .. offset + T - 1`` to ``x``, then apply dropout.

        Args:
            x: (B, T, D) embeddings (already scaled by sqrt(D) if the model does that, section 3.4).
            offset: position of the first token of ``x``; the number of tokens already decoded
                when a key/value cache feeds the sequence a piece at a time.

        Shape:
            Returns (B, T, D), same dtype as ``x``.
        """
        if x.dim() != 3 or x.size(-1) != self.d_model:
            raise ValueError(f"x must have shape (B, T, D) with D = d_model = {self.d_model}, got {tuple(x.shape)}")
        stop = offset + x.size(1)
        if offset < 0 or stop > self.max_len:
            raise ValueError(
                f"positions {offset}..{stop - 1} (offset={offset}, T={x.size(1)}) are outside 0..{self.max_len - 1}: "
                f"this {type(self).__name__} holds max_len={self.max_len} positions. "
                f"Construct it with max_len >= {stop} to go further."
            )
        return self.dropout(x + self.encoding(offset, stop).to(x.dtype))  # (B, T, D) + (T, D)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


class SinusoidalPositionalEncoding(_PositionalEncoding):
    """Adds the fixed sinusoidal encodings of :func:`sinusoidal_table` (Vaswani et al., 2017, section 3.5).

    The table is a non-persistent buffer: it moves with ``.to(device)`` but is not saved in the
    ``state_dict``, since it is recomputed exactly from ``d_model`` and ``max_len``.

    Args:
        d_model: D.
        max_len: the longest sequence (offset + T) the module accepts.
        dropout: dropout applied to the sum (0.1 in the paper).
    """

    def __init__(self, d_model: int, max_len: int = 5000, dropout: float = 0.0) -> None:
        super().__init__(d_model, max_len, dropout)
        self.register_buffer("pe", sinusoidal_table(max_len, d_model), persistent=False)  # (max_len, D)

    def encoding(self, start: int, stop: int) -> Tensor:
        return self.pe[start:stop]  # (T, D)


class LearnedPositionalEncoding(_PositionalEncoding):
    """Adds a trained vector per position, an ``nn.Embedding`` indexed by position (as in BERT
    and GPT).

    Cannot go past ``max_len``; the sinusoidal table can be recomputed for any length.

    Args:
        d_model: D.
        max_len: number of positions that get a vector.
        dropout: dropout applied to the sum.
    """

    def __init__(self, d_model: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__(d_model, max_len, dropout)
        self.embedding = nn.Embedding(max_len, d_model)
        # N(0, 0.02) as BERT and GPT-2: nn.Embedding's N(0, 1) would drown the token embeddings.
        nn.init.normal_(self.embedding.weight, std=0.02)

    def encoding(self, start: int, stop: int) -> Tensor:
        positions = torch.arange(start, stop, device=self.embedding.weight.device)  # (T,)
        return self.embedding(positions)  # (T, D)
