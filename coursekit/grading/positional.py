"""Checks for the *positional encodings* notebook (``solutions/positional``): the sinusoidal table, the
rotation that shifts it by k positions, and self-attention without and with positions (permutation
equivariance, then order).

Shape legend: B batch, T sequence length, D model dim (``d_model``), Dk / Dv projected sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from coursekit.attention import scaled_dot_product_attention as _reference_sdpa
from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, call, close, expect_tensor, first_line,
                                    generator, max_gap, register_task, seed_or_fresh, where)
from coursekit.positional import sinusoidal_table as _reference_table

_POLICY = ShortcutPolicy(
    (Reference("coursekit.positional", "coursekit.positional"),
     Reference("coursekit.transformer", "coursekit.transformer"),
     Reference("coursekit.seq2seq.AttentionOnlyEncoderDecoder", "coursekit.seq2seq", ("AttentionOnlyEncoderDecoder",))),
    {},
    instead="torch.arange, torch.sin, torch.cos and basic tensor operations",
)
TABLE_TASK = register_task("the sinusoidal positional encoding", _POLICY, code="table")
OFFSET_TASK = register_task("relative positions as rotations", _POLICY, code="offset")
LAYER_TASK = register_task("self-attention with positional encodings", _POLICY, code="layer")


# ---------------------------------------------------------------------------------------------------
# Part 1: the table
# ---------------------------------------------------------------------------------------------------


def _table_variant(max_len: int, d_model: int, *, exponent: str = "2i", layout: str = "interleave",
                   first: str = "sin", start: int = 0, divide: bool = True) -> torch.Tensor:
    """The sinusoidal table with one typical mistake, float64, to name it when a learner's table matches."""
    pos = torch.arange(start, start + max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    i = torch.arange(d_model // 2, dtype=torch.float64)  # pair index
    if exponent == "column":  # column j uses 10000^(j/d): a sine and its cosine get different frequencies
        cols = torch.arange(d_model, dtype=torch.float64)
        rate = 10000.0 ** (-cols / d_model) if divide else 10000.0 ** (cols / d_model)
        angle = pos * rate  # (max_len, D)
        table = torch.empty(max_len, d_model, dtype=torch.float64)
        table[:, 0::2] = torch.sin(angle[:, 0::2])
        table[:, 1::2] = torch.cos(angle[:, 1::2])
        return table
    power = {"2i": 2 * i / d_model, "i": i / d_model}[exponent]
    rate = 10000.0 ** (-power) if divide else 10000.0 ** power
    angle = pos * rate  # (max_len, D/2)
    a, b = (torch.sin(angle), torch.cos(angle)) if first == "sin" else (torch.cos(angle), torch.sin(angle))
    if layout == "concat":
        return torch.cat([a, b], dim=1)
    return torch.stack([a, b], dim=2).reshape(max_len, d_model)  # columns 2i, 2i+1


_TABLE_MISTAKES = (
    (dict(first="cos"), "Your sines and cosines are swapped: column 2i holds sin(pos / 10000^(2i/d)) and column 2i+1 "
                        "the cosine of the same angle."),
    (dict(layout="concat"), "You put all the sines first and then all the cosines. They interleave: column 2i is a "
                            "sine and column 2i+1 the cosine of the same angle."),
    (dict(first="cos", layout="concat"), "You put all the cosines first and then all the sines. They interleave: "
                                         "column 2i is a sine and column 2i+1 the cosine of the same angle."),
    (dict(exponent="i"), "Your frequencies use 10000^(i/d) with i the pair index; the paper's exponent is 2i/d "
                         "(i counts pairs of columns), so the slowest pair turns at 1/10000 radian per position."),
    (dict(exponent="column"), "Each sine and its cosine must share one frequency: columns 2i and 2i+1 both use "
                              "pos / 10000^(2i/d). Yours gives the cosine column its own exponent (2i+1)/d."),
    (dict(divide=False), "You multiplied the position by 10000^(2i/d); divide by it: the angle is pos / 10000^(2i/d)."),
    (dict(start=1), "Your positions start at 1; they start at 0, so row 0 is sin(0) = 0 and cos(0) = 1 in every pair."),
)


def check_sinusoidal_table(fn: Callable, seed: int | None = None) -> None:
    """``sinusoidal_encoding(max_len, d_model)``: (max_len, D) with PE[pos, 2i] = sin(pos / 10000^(2i/D)) and
    PE[pos, 2i+1] = cos(pos / 10000^(2i/D)) (Vaswani et al., 2017, section 3.5)."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    d_model = 2 * int(torch.randint(4, 20, (), generator=g))
    max_len = int(torch.randint(20, 79, (), generator=g))
    if max_len >= d_model:  # skip d_model itself: a square table could not show which way round it is
        max_len += 1
    for max_len, d_model in [(50, 16), (max_len, d_model)]:
        got = expect_tensor(call(fn, TABLE_TASK, max_len, d_model), f"sinusoidal_encoding({max_len}, {d_model})", TABLE_TASK)
        want = _reference_table(max_len, d_model)
        if got.shape == (d_model, max_len) and max_len != d_model:
            raise CheckFailed(f"Your table has shape (d_model, max_len) = {tuple(got.shape)}: one ROW per position, "
                              f"(max_len, d_model) = {(max_len, d_model)}.")
        if got.shape != want.shape:
            raise CheckFailed(f"sinusoidal_encoding({max_len}, {d_model}) must have shape (max_len, d_model) = "
                              f"{tuple(want.shape)}; yours has {tuple(got.shape)}.")
        if not got.is_floating_point():
            raise CheckFailed(f"Your table has dtype {got.dtype}; it must hold floats (torch.float32).")
        if close(got, want, atol=1e-4, rtol=1e-4):
            continue
        for variant, message in _TABLE_MISTAKES:
            # Multiplying makes angles of 1e5 radians and more, which float32 holds only to about 0.01.
            atol = 0.25 if variant.get("divide") is False else 1e-4
            if close(got, _table_variant(max_len, d_model, **variant).float(), atol=atol, rtol=1e-4):
                raise CheckFailed(f"{message} (checked with max_len={max_len}, d_model={d_model})")
        row, col = (int(i) for i in torch.nonzero((got.float() - want).abs() == (got.float() - want).abs().max())[0])
        raise CheckFailed(f"For max_len={max_len}, d_model={d_model}, your table differs from the sinusoids by up to "
                          f"{max_gap(got, want):.3g}, e.g. at position {row}, column {col}: {float(got[row, col]):.4f} "
                          f"instead of {float(want[row, col]):.4f}.")
    print("✓ the sinusoidal table, for two sizes")


# ---------------------------------------------------------------------------------------------------
# Part 2: shifting by k positions is a rotation
# ---------------------------------------------------------------------------------------------------


def check_offset_matrix(fn: Callable, seed: int | None = None) -> None:
    """``offset_matrix(k, d_model)``: M (D, D) with PE[pos + k] = M @ PE[pos] for every position."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    d_model, max_len = 16, 64
    table = _reference_table(max_len, d_model).double()
    for k in (1, int(torch.randint(2, 12, (), generator=g))):
        M = expect_tensor(call(fn, OFFSET_TASK, k, d_model), f"offset_matrix({k}, {d_model})", OFFSET_TASK).double()
        if M.shape != (d_model, d_model):
            raise CheckFailed(f"offset_matrix({k}, {d_model}) must be a (d_model, d_model) = {(d_model, d_model)} matrix; "
                              f"yours has shape {tuple(M.shape)}.")
        moved = table[:-k] @ M.T  # row pos: M @ PE[pos]
        if torch.allclose(moved, table[k:], atol=1e-4):
            continue
        if torch.allclose(table[k:] @ M.T, table[:-k], atol=1e-4):
            raise CheckFailed(f"Your matrix moves back by k = {k} positions: M @ PE[pos + k] = PE[pos]. Flip the signs of "
                              "the sines: each 2 x 2 block is [[cos(k w), sin(k w)], [-sin(k w), cos(k w)]].")
        if k > 1 and torch.allclose(table[:-1] @ M.T, table[1:], atol=1e-4):
            raise CheckFailed(f"Your offset_matrix({k}, ...) shifts by one position whatever k is: the angle of pair i is "
                              f"k * w_i, with w_i = 1 / 10000^(2i/d).")
        if not torch.allclose(M @ M.T, torch.eye(d_model, dtype=M.dtype), atol=1e-4):
            raise CheckFailed("Your matrix is not a rotation (M @ M.T should be the identity): each pair of columns "
                              "(2i, 2i+1) gets a 2 x 2 block [[cos(k w_i), sin(k w_i)], [-sin(k w_i), cos(k w_i)]] on "
                              "the diagonal, zeros elsewhere.")
        worst = max_gap(moved, table[k:])
        raise CheckFailed(f"M @ PE[pos] differs from PE[pos + {k}] by up to {worst:.3g}. Pair i turns by k * w_i, with "
                          f"w_i = 1 / 10000^(2i/d): check the frequency of each block and where it sits.")
    print("✓ PE[pos + k] = M @ PE[pos]: a shift by k positions is a rotation of each pair")


# ---------------------------------------------------------------------------------------------------
# Parts 3 and 4: self-attention without and with positions
# ---------------------------------------------------------------------------------------------------


def _layer_inputs(seed: int, B: int = 2, T: int = 6, d: int = 16, dk: int = 8, dv: int = 16):
    g = generator(seed)
    x = torch.randn(B, T, d, generator=g)
    w = [torch.randn(d, n, generator=g) / math.sqrt(d) for n in (dk, dk, dv)]
    return x, w


def _reference_layer(x: torch.Tensor, w: list[torch.Tensor], table: torch.Tensor | None) -> torch.Tensor:
    if table is not None:
        x = x + table[: x.size(1)]
    return _reference_sdpa(x @ w[0], x @ w[1], x @ w[2])[0]


def _call_layer(fn: Callable, x: torch.Tensor, w: list[torch.Tensor], table: torch.Tensor | None) -> torch.Tensor:
    try:
        out = call(fn, LAYER_TASK, x, *w, table=table)
    except NotImplementedError:
        raise
    except RuntimeError as err:
        raise CheckFailed(f"Your layer raised RuntimeError: {first_line(err)}. With x of shape (B, T, D) = "
                          f"{tuple(x.shape)} and a table of shape (max_len, D), add the first T rows: "
                          "x + table[:T].") from None
    out = expect_tensor(out, "self_attention_layer(...)", LAYER_TASK)
    want = (x.size(0), x.size(1), w[2].size(1))
    if out.shape != want:
        raise CheckFailed(f"Your layer must return the attention output, shape (B, T, Dv) = {want}; yours has "
                          f"{tuple(out.shape)}.")
    return out


def check_permutation_equivariance(fn: Callable, seed: int | None = None) -> None:
    """Without positions, self-attention is permutation-equivariant: shuffling the input positions shuffles the
    output rows the same way, and changes nothing else."""
    seed = seed_or_fresh(seed)
    x, w = _layer_inputs(seed)
    T = x.size(1)
    perm = torch.randperm(T, generator=generator(seed + 1))
    while torch.equal(perm, torch.arange(T)):
        perm = torch.randperm(T)
    out = _call_layer(fn, x, w, None)
    shuffled = _call_layer(fn, x[:, perm], w, None)
    if not close(shuffled, out[:, perm]):
        raise CheckFailed(f"Without positions your layer is not permutation-equivariant: shuffling the input positions "
                          f"(order {perm.tolist()}) should shuffle the output rows the same way, and it changes them by "
                          f"up to {max_gap(shuffled, out[:, perm]):.3g}. With table=None, add nothing per position and "
                          f"mask nothing. {where(seed)}")
    want = _reference_layer(x, w, None)
    if not close(out, want):
        raise CheckFailed(f"Without positions your layer differs from attention(x W_q, x W_k, x W_v) by up to "
                          f"{max_gap(out, want):.3g}. {where(seed)}")
    print("✓ without positions: shuffle the input, and the output is shuffled the same way")


def check_attention_with_positions(fn: Callable, seed: int | None = None) -> None:
    """With a table, the layer attends over x + table[:T]: the positions go into the input, before the projections."""
    seed = seed_or_fresh(seed)
    x, w = _layer_inputs(seed)
    T = x.size(1)
    table = _reference_table(20, x.size(-1))
    out = _call_layer(fn, x, w, table)
    want = _reference_layer(x, w, table)
    if close(out, want):
        print("✓ with positions: attention over x + PE, and the order of the input now matters")
        return
    without = _reference_layer(x, w, None)
    q, k, v = (x + table[:T]) @ w[0], (x + table[:T]) @ w[1], x @ w[2]
    variants = {
        "Your layer ignores the table: add it to x before the projections, x + table[:T].": without,
        "You added the positions to the output; add them to the input x instead, so that the scores (queries and "
        "keys) can use them: attend over x + table[:T].": without + table[:T],
        "You added the positions to the queries and keys only; add them to x itself, so that the values carry them "
        "too: attend over x + table[:T].": _reference_sdpa(q, k, v)[0],
    }
    for message, candidate in variants.items():
        if close(out, candidate):
            raise CheckFailed(f"{message} {where(seed)}")
    raise CheckFailed(f"With positions your layer differs from attention over x + table[:T] by up to "
                      f"{max_gap(out, want):.3g}. {where(seed)}")
