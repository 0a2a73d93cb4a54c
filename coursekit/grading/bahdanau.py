"""Checks for the *Bahdanau attention* notebook (``solutions/bahdanau``): the masked softmax, the additive
score, the context vector, one decoder step, and a date translator trained with the learner's attention.

Shape legend: B batch, T queries (decoder steps), S keys (source positions), Dq query size (decoder state),
Dk key size (encoder annotation), Dv value size, h hidden size of the score.

The learner's ``AdditiveAttention`` keeps the parameter names of :class:`coursekit.attention.AdditiveAttention`
(``W_q``, ``W_k``, ``v``), so every check gives it the reference's weights and compares outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from coursekit import attention as _reference
from coursekit.grading.attention import looks_inverted, masked_weight_report
from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, ShortcutUsed, build_module, call, close,
                                    expect_pair, expect_tensor, first_line, fused_attention, generator,
                                    held_out_exact_match, max_gap, register_task, seed_or_fresh, seeded_module,
                                    shape_of, softmax_rows_ok, where)
from coursekit.grading.diagnosis import Symptom, symptom_failure
from coursekit.masks import padding_mask

_POLICY = ShortcutPolicy(
    (Reference("coursekit.attention", "coursekit.attention"),), fused_attention(),
    instead="the layers you were given (self.W_q, self.W_k, self.v) and basic tensor operations "
            "(torch.tanh, softmax, masked_fill, matmul)",
)
SOFTMAX_TASK = register_task("the masked softmax", _POLICY, code="softmax")
ADDITIVE_TASK = register_task("additive (Bahdanau) attention", _POLICY, code="additive")

DQ, DK, DV, HIDDEN = 6, 10, 4, 8


def _reference_masked_softmax(scores: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """softmax over the keys with padding at exactly 0. Shape: scores (B, T, S), mask (B, S) -> (B, T, S)."""
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))
    return scores.softmax(dim=-1)


def _padding_verdict(weights: torch.Tensor, forbidden: torch.Tensor, unmasked: Callable[[], torch.Tensor],
                     seed: int) -> None:
    """Raise the right diagnosis when padding keys receive weight."""
    leak = masked_weight_report(weights, forbidden, "which is padding")
    if not leak:
        return
    if looks_inverted(weights, forbidden):
        raise CheckFailed("Your padding mask is inverted: key_padding_mask is True at PADDING (torch.nn's convention), "
                          f"so fill the scores where it is True, not where it is False. ({leak}) {where(seed)}")
    if close(weights, unmasked()):
        raise CheckFailed(f"Your function ignores key_padding_mask: {leak}. {where(seed)}")
    raise CheckFailed(f"Padding receives attention: {leak}. Fill those scores with float('-inf') before the softmax. "
                      f"{where(seed)}")


# ---------------------------------------------------------------------------------------------------
# Part 1: the masked softmax
# ---------------------------------------------------------------------------------------------------


def check_masked_softmax(fn: Callable, seed: int | None = None) -> None:
    """Rows are distributions over the keys; padding keys get exactly 0; the values match softmax."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    B, T, S = 3, 4, 6
    scores = 3 * torch.randn(B, T, S, generator=g)
    got = expect_tensor(call(fn, SOFTMAX_TASK, scores), "masked_softmax(scores) (no mask)", SOFTMAX_TASK)
    want = _reference_masked_softmax(scores, None)
    if got.shape != want.shape:
        raise CheckFailed(f"For scores of shape (B, T, S) = {tuple(scores.shape)} the weights must have the same shape; "
                          f"yours have {tuple(got.shape)}. {where(seed)}")
    if not softmax_rows_ok(got):
        if torch.allclose(got.sum(-2), torch.ones(()), atol=1e-4):
            raise CheckFailed("Your weights sum to 1 down each column: the softmax ran over the queries. Take it over "
                              f"the keys, the last dim: torch.softmax(scores, dim=-1). {where(seed)}")
        raise CheckFailed("Your weights do not sum to 1 over the keys (the last dim): each query's weights must be a "
                          f"probability distribution, torch.softmax(scores, dim=-1). {where(seed)}")
    if not close(got, want):
        raise CheckFailed(f"Without a mask your weights differ from torch.softmax(scores, dim=-1) by up to "
                          f"{max_gap(got, want):.3g}. {where(seed)}")

    lengths = torch.tensor([S, 3, 1])
    kpm = padding_mask(lengths, S)  # (B, S), True at padding
    got = expect_tensor(call(fn, SOFTMAX_TASK, scores, kpm), "masked_softmax(scores, key_padding_mask)", SOFTMAX_TASK)
    if got.shape != (B, T, S):
        raise CheckFailed(f"With key_padding_mask the weights must still have shape (B, T, S) = {(B, T, S)}; yours have "
                          f"{tuple(got.shape)}. Give the (B, S) mask a query dim: key_padding_mask[:, None, :]. {where(seed)}")
    forbidden = kpm[:, None, :].expand(B, T, S)
    _padding_verdict(got, forbidden, lambda: want, seed)
    if not softmax_rows_ok(got):
        raise CheckFailed("With padding masked, each query's weights must still sum to 1 over the real keys: fill the "
                          f"scores with -inf before the softmax, not the weights after it. {where(seed)}")
    want = _reference_masked_softmax(scores, kpm)
    if not close(got, want):
        raise CheckFailed(f"With padding masked your weights differ from the masked softmax by up to "
                          f"{max_gap(got, want):.3g}. {where(seed)}")
    print("✓ the masked softmax: rows sum to 1 and padding gets exactly 0")


# ---------------------------------------------------------------------------------------------------
# Part 2: the additive score
# ---------------------------------------------------------------------------------------------------


def _reference_module(seed: int) -> _reference.AdditiveAttention:
    return seeded_module(lambda: _reference.AdditiveAttention(DQ, DK, HIDDEN), seed)


def _build(cls: Any, seed: int) -> tuple[Any, _reference.AdditiveAttention]:
    reference = _reference_module(seed)
    return build_module(cls, ADDITIVE_TASK, reference, DQ, DK, HIDDEN), reference


def check_additive_scores(cls: Any, seed: int | None = None) -> None:
    """``score(query, key)`` is v^T tanh(W_q q_t + W_k k_s) for every pair (t, s): shape (B, T, S)."""
    seed = seed_or_fresh(seed)
    module, reference = _build(cls, seed)
    g = generator(seed)
    B, T, S = 2, 3, 5
    query, key = torch.randn(B, T, DQ, generator=g), torch.randn(B, S, DK, generator=g)
    got = expect_tensor(call(module.score, ADDITIVE_TASK, query, key), "score(query, key)", ADDITIVE_TASK)
    with torch.no_grad():
        q = reference.W_q(query).unsqueeze(2)  # (B, T, 1, h)
        k = reference.W_k(key).unsqueeze(1)  # (B, 1, S, h)
        want = reference.v(torch.tanh(q + k)).squeeze(-1)  # (B, T, S)
        no_tanh = reference.v(q + k).squeeze(-1)
        tanh_outside = torch.tanh(reference.v(q + k)).squeeze(-1)
    if got.shape == (B, T, S, 1):
        raise CheckFailed(f"Your scores have shape {tuple(got.shape)}: v maps each hidden vector to one number, so "
                          f"squeeze that last dim to get (B, T, S) = {(B, T, S)}: .squeeze(-1).")
    if got.shape == (B, S, T) and close(got.transpose(1, 2), want):
        raise CheckFailed(f"Your scores have shape (B, S, T) = {tuple(got.shape)}, the transpose of (B, T, S) = "
                          f"{(B, T, S)}: give the projected queries a key dim, W_q(query).unsqueeze(2) -> (B, T, 1, h), "
                          "and the projected keys a query dim, W_k(key).unsqueeze(1) -> (B, 1, S, h).")
    if got.shape != (B, T, S):
        raise CheckFailed(f"For query (B, T, Dq) = {tuple(query.shape)} and key (B, S, Dk) = {tuple(key.shape)} the "
                          f"scores must have shape (B, T, S) = {(B, T, S)}; yours have {tuple(got.shape)}. Every query "
                          "meets every key: broadcast (B, T, 1, h) + (B, 1, S, h) -> (B, T, S, h), then apply v.")
    if close(got, no_tanh):
        raise CheckFailed("You left out the tanh: the score is v^T tanh(W_q q + W_k k). Without it the query's "
                          f"part of the score is the same for every key, and cancels in the softmax. {where(seed)}")
    if close(got, tanh_outside):
        raise CheckFailed("You applied tanh after v; it belongs inside, on the hidden layer: "
                          f"self.v(torch.tanh(W_q q + W_k k)). {where(seed)}")
    if not close(got, want):
        raise CheckFailed(f"Your scores differ from v^T tanh(W_q q_t + W_k k_s) by up to {max_gap(got, want):.3g}. "
                          f"Use the layers you were given: self.W_q on the query, self.W_k on the key. {where(seed)}")
    print("✓ additive scores: v^T tanh(W_q q + W_k k) for every query and key")


# ---------------------------------------------------------------------------------------------------
# Part 3: the context vector
# ---------------------------------------------------------------------------------------------------


def check_additive_attention(cls: Any, seed: int | None = None) -> None:
    """``forward(query, key, value, key_padding_mask)``: weights = masked softmax of *your* scores, output =
    weights @ value. Checked from your own ``score``, so a mistake there costs only that part."""
    seed = seed_or_fresh(seed)
    module, _ = _build(cls, seed)
    g = generator(seed)
    B, T, S = 3, 4, 6
    query, key, value = (torch.randn(B, T, DQ, generator=g), torch.randn(B, S, DK, generator=g),
                         torch.randn(B, S, DV, generator=g))
    lengths = torch.tensor([S, 4, 2])
    kpm = padding_mask(lengths, S)
    scores = expect_tensor(call(module.score, ADDITIVE_TASK, query, key), "score(query, key)", ADDITIVE_TASK)
    if scores.shape != (B, T, S):
        raise CheckFailed(f"Your score returns shape {tuple(scores.shape)} instead of (B, T, S) = {(B, T, S)}; "
                          "fix it first (see the test of the scores).")
    for mask in (None, kpm):
        out, weights = expect_pair(call(module, ADDITIVE_TASK, query, key, value, key_padding_mask=mask),
                                   ADDITIVE_TASK, "Your forward")
        want_w = _reference_masked_softmax(scores, mask)
        want_out = want_w @ value
        if weights.shape != (B, T, S):
            raise CheckFailed(f"The weights must have shape (B, T, S) = {(B, T, S)}; yours have {tuple(weights.shape)}.")
        if mask is not None:
            forbidden = mask[:, None, :].expand(B, T, S)
            _padding_verdict(weights, forbidden, lambda: _reference_masked_softmax(scores, None), seed)
        if not softmax_rows_ok(weights):
            raise CheckFailed("Each query's weights must sum to 1 over the keys: apply your masked_softmax to the "
                              f"scores. {where(seed)}")
        if not close(weights, want_w):
            raise CheckFailed(f"Your weights differ from masked_softmax(self.score(query, key), key_padding_mask) by up "
                              f"to {max_gap(weights, want_w):.3g}. {where(seed)}")
        if out.shape == (B, T, DK) and close(out, weights @ key):
            raise CheckFailed("Your context vectors average the keys: the context is the weighted average of the "
                              f"VALUES, weights @ value, shape (B, T, Dv) = {(B, T, DV)}.")
        if out.shape != (B, T, DV):
            raise CheckFailed(f"For value (B, S, Dv) = {tuple(value.shape)} the context vectors must have shape "
                              f"(B, T, Dv) = {(B, T, DV)}; yours have {tuple(out.shape)}.")
        if not close(out, want_out):
            raise CheckFailed(f"Your weights are right but your context vectors are not weights @ value (off by up to "
                              f"{max_gap(out, want_out):.3g}). {where(seed)}")
    print("✓ context vectors: the masked softmax of your scores, times the values")


def check_single_step(cls: Any, seed: int | None = None) -> None:
    """A decoder step asks one query per sequence: query (B, Dq) -> context (B, Dv) and weights (B, S), the same
    numbers as your own forward gives for that query as (B, 1, Dq), so a mistake elsewhere costs nothing here."""
    seed = seed_or_fresh(seed)
    module, _ = _build(cls, seed)
    g = generator(seed)
    B, S = 3, 5
    query, key, value = (torch.randn(B, DQ, generator=g), torch.randn(B, S, DK, generator=g),
                         torch.randn(B, S, DV, generator=g))
    want_out, want_w = expect_pair(call(module, ADDITIVE_TASK, query[:, None, :], key, value), ADDITIVE_TASK, "Your forward")
    if want_out.dim() != 3 or want_out.shape[:2] != (B, 1) or want_w.shape != (B, 1, S):
        raise CheckFailed(f"For queries of shape (B, T, Dq) = {(B, 1, DQ)} your forward returns {tuple(want_out.shape)} "
                          f"and {tuple(want_w.shape)} instead of (B, T, Dv) and (B, T, S); fix that first (Test 3).")
    try:
        result = call(module, ADDITIVE_TASK, query, key, value)
    except NotImplementedError:
        raise
    except (RuntimeError, IndexError, ValueError) as err:
        raise CheckFailed(
            f"Your attention fails on one decoder step, a query of shape (B, Dq) = {tuple(query.shape)}: "
            f"{type(err).__name__}: {first_line(err)}. Treat it as T = 1: query.unsqueeze(1) -> "
            "(B, 1, Dq), attend as usual, then squeeze dim 1 of the context and the weights."
        ) from None
    out, weights = expect_pair(result, ADDITIVE_TASK, "Your forward")
    dv = want_out.shape[-1] if want_out.dim() == 3 else DV
    if out.shape == (B, 1, dv) or weights.shape == (B, 1, S):
        raise CheckFailed(f"For one query per sequence, (B, Dq) = {tuple(query.shape)}, return the context as (B, Dv) = "
                          f"{(B, dv)} and the weights as (B, S) = {(B, S)}; yours are {tuple(out.shape)} and "
                          f"{tuple(weights.shape)}. Squeeze the T = 1 dim you added: .squeeze(1).")
    if out.shape != (B, dv) or weights.shape != (B, S):
        raise CheckFailed(f"For a query of shape (B, Dq) = {tuple(query.shape)} the context must be (B, Dv) = {(B, dv)} "
                          f"and the weights (B, S) = {(B, S)}; yours are {shape_of(out)} and {shape_of(weights)}.")
    if not (close(weights, want_w.reshape(B, S)) and close(out, want_out.reshape(B, dv))):
        raise CheckFailed("One decoder step must give the same context and weights as your forward gives for the same "
                          f"query with T = 1, shape (B, 1, Dq); yours differ. {where(seed)}")
    print("✓ one decoder step: (B, Dq) -> (B, Dv) and (B, S)")


# ---------------------------------------------------------------------------------------------------
# Part 4: the trained date translator
# ---------------------------------------------------------------------------------------------------


# The whole held-out set, 797 dates: the reference solution writes 92% of them exactly; realistic mistakes land at
# 92-99% (relu for tanh, no mask, masks filled with 0) or at 0-15% (no tanh, tanh outside, an inverted mask, softmax
# over the queries). 50% sits far from all of them (measured on CPU; see tests/test_notebooks.py).
TRAINED_BAR = 0.5


def check_trained_date_model(model: Any, task: Any, min_exact: float = TRAINED_BAR) -> None:
    """Greedy-decode EVERY held-out date of ``task`` (valid and test splits) with the learner's trained model; pass
    when at least ``min_exact`` come out exactly right. No seed: the verdict depends on the trained model alone."""
    try:
        score = held_out_exact_match(model, task, ADDITIVE_TASK, name="Your trained model")
    except ShortcutUsed:
        raise ShortcutUsed("Your model still attends with coursekit's AdditiveAttention: replace it with yours, "
                           "model.attention = AdditiveAttention(...), before training.", code="additive.shortcut") from None
    if score.exact < min_exact:
        raise symptom_failure("dates", Symptom(
            "low-score", f"Your trained model writes {score.exact:.0%} of the {score.count} held-out dates exactly "
                         f"right; it needs {min_exact:.0%}. For example: {score.examples()}. The model attends with "
                         "your AdditiveAttention: if a test above fails, fix that first; then make sure the training "
                         "cell ran to the end (loss well below 0.1)."), None)
    print(f"✓ your attention translates {score.exact:.0%} of the {score.count} held-out dates exactly")
