"""Checks for the *scaled dot-product attention* notebook (``solutions/sdpa``), and the mask diagnoses the
later notebooks share (:func:`masked_weight_report`, :func:`looks_inverted`).

Shape legend: B batch, H heads, T queries, S keys, Dk query/key size, Dv value size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from coursekit import attention as _reference_attention
from coursekit.grading.core import (ATOL, CheckFailed, Reference, ShortcutPolicy, forbid_shortcuts,
                                    fused_attention, register_task, seed_or_fresh)
from coursekit.grading.core import where as _where
from coursekit.masks import causal_mask, padding_mask

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]


SDPA_TASK = register_task(
    "scaled dot-product attention",
    ShortcutPolicy((Reference("coursekit.attention", "coursekit.attention"),), fused_attention()),
)


def random_qkv(seed: int, *lead: int, T: int = 5, S: int = 7, dk: int = 16, dv: int = 8
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random queries (..., T, Dk), keys (..., S, Dk) and values (..., S, Dv) from ``seed``."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*lead, T, dk, generator=g), torch.randn(*lead, S, dk, generator=g),
            torch.randn(*lead, S, dv, generator=g))


def _call(fn: AttentionFn, task: str, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Call the learner's attention function and check it returns (output, weights) tensors."""
    with forbid_shortcuts(task):
        result = fn(*args, **kwargs)
    if not (isinstance(result, tuple) and len(result) == 2 and all(isinstance(r, torch.Tensor) for r in result)):
        kind = type(result).__name__ if not isinstance(result, tuple) else f"a tuple of {len(result)}"
        raise CheckFailed(f"Your function returned {kind}; it must return a tuple (output, weights) of two tensors.")
    return result


# ---------------------------------------------------------------------------------------------------
# Scaled dot-product attention
# ---------------------------------------------------------------------------------------------------

def check_attention_shapes(fn: AttentionFn, seed: int | None = None) -> None:
    """Output is (..., T, Dv) and weights (..., T, S), for 2, 3 and 4-dimensional inputs."""
    seed = seed_or_fresh(seed)
    for lead in [(), (3,), (2, 4)]:
        q, k, v = random_qkv(seed, *lead, T=5, S=7, dk=16, dv=8)
        out, weights = _call(fn, SDPA_TASK, q, k, v)
        want_w, want_o = (*lead, 5, 7), (*lead, 5, 8)
        if tuple(weights.shape) == (*lead, 7, 5):
            raise CheckFailed(f"Your weights have shape {tuple(weights.shape)}, the transpose of the expected "
                              f"(..., T, S) = {want_w}: compute query @ key.transpose(-2, -1), not key @ query^T.")
        if tuple(weights.shape) != want_w:
            raise CheckFailed(f"For query {tuple(q.shape)} and key {tuple(k.shape)} the weights must have shape "
                              f"(..., T, S) = {want_w}; yours have {tuple(weights.shape)}. "
                              "Transpose only the last two dims of key: key.transpose(-2, -1).")
        if tuple(out.shape) != want_o:
            raise CheckFailed(f"For value {tuple(v.shape)} the output must have shape (..., T, Dv) = {want_o}; "
                              f"yours has {tuple(out.shape)}.")
    print("✓ shapes are right for 2-, 3- and 4-dimensional inputs")


def _diagnose_weights(q: torch.Tensor, k: torch.Tensor, weights: torch.Tensor) -> str:
    """Name the most likely mistake behind wrong attention weights."""
    d_k = q.size(-1)
    raw = q @ k.transpose(-2, -1)  # (..., T, S)
    if not torch.allclose(weights.sum(-1), torch.ones(()), atol=1e-4):
        if torch.allclose(weights.sum(-2), torch.ones(()), atol=1e-4):
            return ("Your weights do not sum to 1 over the keys: they sum to 1 down each column, so the softmax "
                    "ran over the queries. Use softmax over the last dim (dim=-1).")
        return ("Your weights do not sum to 1 over the keys (the last dim). Each query's weights must be a "
                "probability distribution: apply torch.softmax(scores, dim=-1).")
    candidates = {
        "You did not scale the scores: divide query @ key^T by sqrt(d_k) before the softmax.": raw,
        "You scaled by d_k instead of sqrt(d_k): divide by math.sqrt(d_k).": raw / d_k,
        "You multiplied by sqrt(d_k) instead of dividing by it.": raw * math.sqrt(d_k),
    }
    for message, scores in candidates.items():
        if torch.allclose(weights, scores.softmax(-1), atol=1e-4):
            return message
    return "Your weights differ from softmax(query @ key^T / sqrt(d_k)) over the keys."


def check_attention_values(fn: AttentionFn, seed: int | None = None) -> None:
    """Without masks, weights = softmax(QK^T / sqrt(d_k)) and output = weights @ V, as in the reference."""
    seed = seed_or_fresh(seed)
    for lead, dk in [((4,), 16), ((2, 3), 64)]:
        q, k, v = random_qkv(seed, *lead, T=6, S=9, dk=dk, dv=5)
        out, weights = _call(fn, SDPA_TASK, q, k, v)
        want_out, want_w = _reference_attention.scaled_dot_product_attention(q, k, v)
        if weights.shape != want_w.shape or out.shape != want_out.shape:
            raise CheckFailed(f"Expected weights {tuple(want_w.shape)} and output {tuple(want_out.shape)}; got "
                              f"{tuple(weights.shape)} and {tuple(out.shape)}. Run check_attention_shapes first. {_where(seed)}")
        if not torch.allclose(weights, want_w, atol=ATOL):
            raise CheckFailed(f"{_diagnose_weights(q, k, weights)} {_where(seed)}")
        if not torch.allclose(out, want_out, atol=ATOL):
            hint = ("your output equals weights^T @ value" if weights.shape[-1] == weights.shape[-2]
                    and torch.allclose(out, weights.transpose(-2, -1) @ v, atol=ATOL) else
                    "the output must be weights @ value, the weighted average of the values")
            raise CheckFailed(f"Your weights are right but your output is not: {hint}. {_where(seed)}")
    print("✓ weights and output match softmax(QK^T / sqrt(d_k)) V")


def masked_weight_report(weights: torch.Tensor, forbidden: torch.Tensor, what: str) -> str | None:
    """Describe the largest weight that lands where it must not, or None if there is none."""
    leak = weights.nan_to_num(0.0).masked_fill(~forbidden, 0.0)  # only the forbidden weights remain
    if float(leak.max()) <= 1e-6:
        return None
    b, t, s = (int(i) for i in torch.nonzero(leak == leak.max())[0])
    return f"query {t} of batch item {b} gives weight {float(leak[b, t, s]):.3f} to key {s}, {what}"


def looks_inverted(weights: torch.Tensor, forbidden: torch.Tensor) -> bool:
    """True when (almost) all the weight sits where the mask forbids it: the mask was read the other way round.

    NaNs count as no weight: an inverted mask often masks whole rows, whose softmax is NaN.
    """
    finite = weights.nan_to_num(0.0)
    allowed_mass = float(finite.masked_fill(forbidden, 0.0).sum())
    return allowed_mass <= 1e-3 * max(float(finite.sum()), 1e-12)


def check_padding_mask(fn: AttentionFn, seed: int | None = None) -> None:
    """Padding keys get weight exactly 0; rows still sum to 1; padding changes nothing at real positions."""
    seed = seed_or_fresh(seed)
    q, k, v = random_qkv(seed, 3, T=5, S=7)
    lengths = torch.tensor([7, 4, 2])
    kpm = padding_mask(lengths)  # (B, S), True at padding
    out, weights = _call(fn, SDPA_TASK, q, k, v, key_padding_mask=kpm)
    forbidden = kpm[:, None, :].expand_as(weights)  # (B, T, S)
    if weights.shape != (3, 5, 7):
        raise CheckFailed(f"With key_padding_mask the weights must still be (B, T, S) = (3, 5, 7); got {tuple(weights.shape)}.")
    leak = masked_weight_report(weights, forbidden, "which is padding")
    if leak:
        if looks_inverted(weights, forbidden):
            raise CheckFailed("Your padding mask is inverted: True means NOT allowed (torch.nn's convention), so mask "
                              f"the positions where key_padding_mask is True, not where it is False. ({leak}) {_where(seed)}")
        if torch.allclose(weights, _unmasked_weights(fn, q, k, v), atol=1e-4):
            raise CheckFailed(f"Your function ignores key_padding_mask: {leak}. {_where(seed)}")
        raise CheckFailed(f"Padding receives attention: {leak}. Set those scores to -inf (or a very negative "
                          f"number) before the softmax. {_where(seed)}")
    if not torch.allclose(weights.sum(-1), torch.ones(3, 5), atol=1e-4):
        raise CheckFailed("With padding masked, each query's weights must still sum to 1 over the real keys: mask "
                          f"the scores before the softmax, not the weights after it. {_where(seed)}")
    for b, n in enumerate(lengths.tolist()):
        alone, _ = _call(fn, SDPA_TASK, q[b:b + 1], k[b:b + 1, :n], v[b:b + 1, :n])
        if not torch.allclose(out[b:b + 1], alone, atol=1e-4):
            raise CheckFailed(f"Padding changes the output of batch item {b}: with its {7 - n} padding keys masked it "
                              f"should equal the output computed on its {n} real keys alone. {_where(seed)}")
    print("✓ padding gets no attention and changes nothing at real positions")


def _unmasked_weights(fn: AttentionFn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The learner's weights with no mask at all, to tell "mask ignored" from other mistakes."""
    return _call(fn, SDPA_TASK, q, k, v)[1]


def check_causal_mask(fn: AttentionFn, seed: int | None = None) -> None:
    """With a causal mask no query attends to a later key, and changing the future changes nothing before it."""
    seed = seed_or_fresh(seed)
    q, k, v = random_qkv(seed, 2, T=6, S=6)
    mask = causal_mask(6)  # (T, S), True above the diagonal
    out, weights = _call(fn, SDPA_TASK, q, k, v, attn_mask=mask)
    if weights.shape != (2, 6, 6):
        raise CheckFailed(f"With attn_mask the weights must still be (B, T, S) = (2, 6, 6); got {tuple(weights.shape)}.")
    forbidden = mask.expand_as(weights)
    leak = masked_weight_report(weights, forbidden, "a later position (future leakage)")
    if leak:
        if looks_inverted(weights, forbidden):
            raise CheckFailed("Your causal mask is inverted: attn_mask is True where attention is NOT allowed "
                              f"(torch.nn's convention). ({leak}) {_where(seed)}")
        if torch.allclose(weights, _unmasked_weights(fn, q, k, v), atol=1e-4):
            raise CheckFailed(f"Your function ignores attn_mask: {leak}. {_where(seed)}")
        raise CheckFailed(f"Your causal mask leaks: {leak}. {_where(seed)}")
    if not torch.allclose(weights.sum(-1), torch.ones(2, 6), atol=1e-4):
        raise CheckFailed("Under the causal mask each query's weights must still sum to 1 over the keys it may see: "
                          f"mask the scores before the softmax. {_where(seed)}")
    k2, v2 = k.clone(), v.clone()
    k2[:, 3:] += torch.randn(2, 3, k.size(-1), generator=torch.Generator().manual_seed(seed + 1))
    v2[:, 3:] += 10.0
    out2, _ = _call(fn, SDPA_TASK, q, k2, v2, attn_mask=mask)
    if not torch.allclose(out2[:, :3], out[:, :3], atol=1e-4):
        raise CheckFailed(f"Changing keys and values at positions 3-5 changed your outputs at positions 0-2: "
                          f"information leaks from the future. {_where(seed)}")
    print("✓ the causal mask hides the future")


def check_attention_matches_reference(fn: AttentionFn, seed: int | None = None) -> None:
    """Causal and padding masks together, against coursekit's reference, on fresh random inputs."""
    seed = seed_or_fresh(seed)
    B, T = 4, 8
    q, k, v = random_qkv(seed, B, T=T, S=T, dk=32, dv=12)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    kpm, mask = padding_mask(lengths, max_len=T), causal_mask(T)
    out, weights = _call(fn, SDPA_TASK, q, k, v, attn_mask=mask, key_padding_mask=kpm)
    want_out, want_w = _reference_attention.scaled_dot_product_attention(q, k, v, attn_mask=mask, key_padding_mask=kpm)
    if weights.shape != want_w.shape or out.shape != want_out.shape:
        raise CheckFailed(f"Expected weights {tuple(want_w.shape)} and output {tuple(want_out.shape)}; "
                          f"got {tuple(weights.shape)} and {tuple(out.shape)}. {_where(seed)}")
    if not torch.allclose(weights, want_w, atol=ATOL):
        worst = (weights - want_w).abs().max().item()
        raise CheckFailed(f"With both masks, your weights differ from the reference by up to {worst:.3g}. Run "
                          f"check_padding_mask and check_causal_mask to see which part is off. {_where(seed)}")
    if not torch.allclose(out, want_out, atol=ATOL):
        raise CheckFailed(f"With both masks your weights are right but your output is not weights @ value. {_where(seed)}")
    print("✓ matches coursekit with causal and padding masks together")
