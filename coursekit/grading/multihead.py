"""Checks for the *multi-head attention* notebook (``solutions/multihead``): self-attention from explicit
projection matrices, splitting and merging heads, and a ``MultiHeadAttention`` module checked against
``torch.nn.MultiheadAttention`` with the same weights (torch runs in the grader; the learner's module gets
the weights through ``load_state_dict``).

Shape legend: B batch, H heads, T queries, S keys, D model dim (``embed_dim``), Dh = D / H head dim,
Dk / Dv projected query-key / value size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from coursekit.attention import scaled_dot_product_attention as _reference_sdpa
from coursekit.grading.attention import looks_inverted, masked_weight_report
from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, call, close, expect_pair,
                                    expect_tensor, first_line, generator, max_gap, register_task, seed_or_fresh, softmax_rows_ok,
                                    torch_multihead, where)
from coursekit.masks import causal_mask, padding_mask

_POLICY = ShortcutPolicy(
    (Reference("coursekit.attention.MultiHeadAttention", "coursekit.attention", ("MultiHeadAttention",)),
     Reference("coursekit.transformer_layers", "coursekit.transformer_layers"),
     Reference("torch.nn.MultiheadAttention", "torch.nn.modules.activation", ("MultiheadAttention",))),
    torch_multihead(),
    instead="the projections you were given, your split_heads and merge_heads, and scaled_dot_product_attention",
)
SELF_ATTENTION_TASK = register_task("self-attention", _POLICY, code="selfattn")
HEADS_TASK = register_task("splitting and merging heads", _POLICY, code="heads")
MHA_TASK = register_task("multi-head attention", _POLICY, code="mha")

D, H = 16, 4
DH = D // H


# ---------------------------------------------------------------------------------------------------
# Part 1: self-attention from three projection matrices
# ---------------------------------------------------------------------------------------------------


def check_self_attention(fn: Callable, seed: int | None = None) -> None:
    """``self_attention(x, w_q, w_k, w_v, key_padding_mask)`` = attention(x W_q, x W_k, x W_v), with padding."""
    seed = seed_or_fresh(seed)
    g = generator(seed)
    B, T, d, dk, dv = 3, 5, 12, 8, 6
    x = torch.randn(B, T, d, generator=g)
    w_q, w_k, w_v = (torch.randn(d, dk, generator=g) / math.sqrt(d), torch.randn(d, dk, generator=g) / math.sqrt(d),
                     torch.randn(d, dv, generator=g) / math.sqrt(d))
    kpm = padding_mask(torch.tensor([T, 3, 1]), T)
    for mask in (None, kpm):
        try:
            result = call(fn, SELF_ATTENTION_TASK, x, w_q, w_k, w_v, key_padding_mask=mask)
        except NotImplementedError:
            raise
        except RuntimeError as err:
            raise CheckFailed(
                f"Your self_attention raised RuntimeError: {first_line(err)}. With x of shape (B, T, D) = "
                f"{tuple(x.shape)} and w_q of shape (D, Dk) = {tuple(w_q.shape)}, the queries are x @ w_q (B, T, Dk); "
                "likewise x @ w_k and x @ w_v."
            ) from None
        out, weights = expect_pair(result, SELF_ATTENTION_TASK, "Your self_attention")
        q, k, v = x @ w_q, x @ w_k, x @ w_v
        want_out, want_w = _reference_sdpa(q, k, v, key_padding_mask=mask)
        if out.shape == (B, T, d) and weights.shape == (B, T, T) and close(out, weights @ x):
            raise CheckFailed(f"Your output has D = {d} features: it averages x itself. Project the values too, "
                              f"V = x @ w_v, so the output has Dv = {dv} features.")
        if weights.shape != (B, T, T) or out.shape != (B, T, dv):
            raise CheckFailed(f"For x (B, T, D) = {tuple(x.shape)}, w_k (D, Dk) = {tuple(w_k.shape)} and w_v (D, Dv) = "
                              f"{tuple(w_v.shape)}, the weights must be (B, T, T) = {(B, T, T)} and the output "
                              f"(B, T, Dv) = {(B, T, dv)}; yours are {tuple(weights.shape)} and {tuple(out.shape)}.")
        if mask is not None:
            forbidden = mask[:, None, :].expand(B, T, T)
            leak = masked_weight_report(weights, forbidden, "which is padding")
            if leak and looks_inverted(weights, forbidden):
                raise CheckFailed(f"Your padding mask is inverted: key_padding_mask is True at padding. ({leak}) {where(seed)}")
            if leak:
                raise CheckFailed(f"Padding receives attention: pass key_padding_mask on to the attention. ({leak}) "
                                  f"{where(seed)}")
        if not close(weights, want_w):
            variants = {
                "You projected the keys with w_q: the keys are x @ w_k.": _reference_sdpa(q, q, v, key_padding_mask=mask)[1],
                "You projected the queries with w_k: the queries are x @ w_q.": _reference_sdpa(k, k, v, key_padding_mask=mask)[1],
                "You did not scale the scores by 1 / sqrt(Dk).": _reference_sdpa(q, k, v, key_padding_mask=mask, scale=1.0)[1],
            }
            hint = next((m for m, w in variants.items() if close(weights, w)),
                        f"Your weights differ from softmax((x W_q)(x W_k)^T / sqrt(Dk)) by up to {max_gap(weights, want_w):.3g}.")
            raise CheckFailed(f"{hint} {where(seed)}")
        if not close(out, want_out):
            raise CheckFailed(f"Your weights are right but your output is not weights @ (x @ w_v) (off by up to "
                              f"{max_gap(out, want_out):.3g}). {where(seed)}")
    print("✓ self-attention: queries, keys and values all projected from x")


# ---------------------------------------------------------------------------------------------------
# Part 2: splitting and merging heads
# ---------------------------------------------------------------------------------------------------


def check_split_heads(fn: Callable, seed: int | None = None) -> None:
    """``split_heads(x, num_heads)``: (B, L, D) -> (B, H, L, Dh), head h holding features h*Dh .. (h+1)*Dh - 1."""
    seed = seed_or_fresh(seed)
    B, L = 2, 5
    x = torch.randn(B, L, D, generator=generator(seed))
    got = expect_tensor(call(fn, HEADS_TASK, x, H), "split_heads(x, num_heads)", HEADS_TASK)
    want = x.view(B, L, H, DH).transpose(1, 2)  # (B, H, L, Dh)
    if got.shape == (B, L, H, DH):
        raise CheckFailed(f"Your split_heads returns (B, L, H, Dh) = {tuple(got.shape)}: put the heads before the "
                          f"positions, .transpose(1, 2) -> (B, H, L, Dh) = {(B, H, L, DH)}, so that attention runs "
                          "over the positions of each head.")
    if got.shape != (B, H, L, DH):
        raise CheckFailed(f"For x of shape (B, L, D) = {tuple(x.shape)} and num_heads = {H}, split_heads must return "
                          f"(B, H, L, Dh) = {(B, H, L, DH)}; yours has shape {tuple(got.shape)}.")
    if close(got, x.reshape(B, H, L, DH)):
        raise CheckFailed("Your split_heads reshapes (B, L, D) straight to (B, H, L, Dh), which mixes positions: "
                          "head 0 gets the first positions' features, not the first Dh features of every position. "
                          "Split the last dim first, .view(B, L, H, Dh), then .transpose(1, 2).")
    if close(got, x.view(B, L, DH, H).permute(0, 3, 1, 2)):
        raise CheckFailed("Your split_heads deals the features out to the heads one at a time (feature j goes to head "
                          "j % H). Each head takes a contiguous block of Dh features: .view(B, L, H, Dh), head h "
                          "holding features h*Dh to (h+1)*Dh - 1.")
    if not close(got, want, atol=0, rtol=0):
        raise CheckFailed("Your split_heads has the right shape, but head h at position l must hold features "
                          f"h*Dh .. (h+1)*Dh - 1 of position l: x.view(B, L, H, Dh).transpose(1, 2). {where(seed)}")
    print("✓ split_heads: (B, L, D) -> (B, H, L, Dh)")


def check_merge_heads(fn: Callable, seed: int | None = None) -> None:
    """``merge_heads(x)``: (B, H, L, Dh) -> (B, L, D), concatenating the heads at each position."""
    seed = seed_or_fresh(seed)
    B, L = 2, 5
    x = torch.randn(B, H, L, DH, generator=generator(seed))
    got = expect_tensor(call(fn, HEADS_TASK, x), "merge_heads(x)", HEADS_TASK)
    want = x.transpose(1, 2).reshape(B, L, D)
    if got.shape != (B, L, D):
        raise CheckFailed(f"For x of shape (B, H, L, Dh) = {tuple(x.shape)}, merge_heads must return (B, L, D) = "
                          f"{(B, L, D)}, the heads concatenated at each position; yours has shape {tuple(got.shape)}.")
    if close(got, x.reshape(B, L, D)):
        raise CheckFailed("Your heads are merged in the wrong order: reshaping (B, H, L, Dh) straight to (B, L, D) mixes "
                          "positions. Bring each position's heads together first, .transpose(1, 2) -> (B, L, H, Dh), "
                          "then .reshape(B, L, D).")
    if close(got, x.permute(0, 2, 3, 1).reshape(B, L, D)):
        raise CheckFailed("Your merge interleaves the heads' features. Concatenate them instead: head h's Dh "
                          "features go to columns h*Dh .. (h+1)*Dh - 1, x.transpose(1, 2).reshape(B, L, D).")
    if not close(got, want, atol=0, rtol=0):
        raise CheckFailed("Your merge_heads has the right shape but not the right order: position l must hold head 0's "
                          f"features, then head 1's, and so on: x.transpose(1, 2).reshape(B, L, D). {where(seed)}")
    print("✓ merge_heads: (B, H, L, Dh) -> (B, L, D)")


# ---------------------------------------------------------------------------------------------------
# Part 3: the module, against torch.nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------------


def _torch_reference(seed: int) -> tuple[nn.MultiheadAttention, dict[str, torch.Tensor]]:
    """torch's module with random weights and biases, and the same weights under our names (q_proj, ...)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        module = nn.MultiheadAttention(D, H, batch_first=True).eval()
        with torch.no_grad():
            module.in_proj_bias.normal_(0, 0.2)
            module.out_proj.bias.normal_(0, 0.2)
    w, b = module.in_proj_weight.detach(), module.in_proj_bias.detach()
    state = {}
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        state[f"{name}.weight"], state[f"{name}.bias"] = w[i * D:(i + 1) * D].clone(), b[i * D:(i + 1) * D].clone()
    state["out_proj.weight"] = module.out_proj.weight.detach().clone()
    state["out_proj.bias"] = module.out_proj.bias.detach().clone()
    return module, state


def _variant(state: dict[str, torch.Tensor], query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
             split: str = "right", merge: str = "right", scale: str = "dh", out_proj: bool = True,
             key_proj: str = "k") -> torch.Tensor:
    """Multi-head attention with one typical mistake, to name it when the learner's output matches."""
    def lin(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.reshape(B, H, L, DH) if split == "reshape" else x.view(B, L, H, DH).transpose(1, 2)

    q, k, v = split_heads(lin("q_proj", query)), split_heads(lin(f"{key_proj}_proj", key)), split_heads(lin("v_proj", value))
    factor = {"dh": DH ** -0.5, "d": D ** -0.5, "none": 1.0}[scale]
    out = torch.softmax(q @ k.transpose(-2, -1) * factor, dim=-1) @ v  # (B, H, T, Dh)
    B, _, T, _ = out.shape
    merged = out.reshape(B, T, D) if merge == "reshape" else out.transpose(1, 2).reshape(B, T, D)
    return lin("out_proj", merged) if out_proj else merged


_MISTAKES = (
    (dict(merge="reshape"), "Your heads are merged in the wrong order: (B, H, T, Dh) must become (B, T, H, Dh) "
                            "(.transpose(1, 2)) before the reshape to (B, T, D)."),
    (dict(split="reshape"), "Your heads are split in the wrong order: (B, T, D) -> .view(B, T, H, Dh) -> "
                            ".transpose(1, 2), not a reshape straight to (B, H, T, Dh)."),
    (dict(out_proj=False), "You forgot the output projection: return self.out_proj(merged heads)."),
    (dict(scale="d"), "You scaled the scores by 1 / sqrt(embed_dim); each head works in head_dim = embed_dim / "
                      "num_heads dims, so scale by 1 / sqrt(head_dim)."),
    (dict(scale="none"), "You did not scale the scores: divide them by sqrt(head_dim)."),
    (dict(key_proj="q"), "You projected the keys with q_proj: keys go through self.k_proj."),
    (dict(key_proj="v"), "You projected the keys with v_proj: keys go through self.k_proj."),
)


def _compare_with_torch(module: Any, reference: nn.MultiheadAttention, state: dict[str, torch.Tensor],
                        query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, seed: int, what: str,
                        **masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out, weights = expect_pair(call(module, MHA_TASK, query, key, value, **masks), MHA_TASK, "Your forward")
    with torch.no_grad():
        want_out, want_w = reference(query, key, value, need_weights=True, **masks)  # weights averaged over heads
    B, T, S = query.size(0), query.size(1), key.size(1)
    if weights.shape == (B, H, T, S):
        if close(weights.mean(dim=1), want_w):
            raise CheckFailed(f"Your weights have one map per head, (B, H, T, S) = {tuple(weights.shape)}. Return their "
                              "average over the heads, weights.mean(dim=1) -> (B, T, S), as nn.MultiheadAttention does.")
    if weights.shape == (B, T, S) and close(weights, want_w * H):
        raise CheckFailed(f"Your weights are the SUM of the {H} heads' weights (rows sum to {H}); average them: "
                          "weights.mean(dim=1).")
    if weights.shape != (B, T, S) or out.shape != (B, T, D):
        raise CheckFailed(f"For {what}, query (B, T, D) = {tuple(query.shape)} and key (B, S, D) = {tuple(key.shape)}, "
                          f"the output must be (B, T, D) = {(B, T, D)} and the weights (B, T, S) = {(B, T, S)}; yours "
                          f"are {tuple(out.shape)} and {tuple(weights.shape)}.")
    if not close(out, want_out):
        if not masks:
            for variant, message in _MISTAKES:
                if close(out, _variant(state, query, key, value, **variant)):
                    raise CheckFailed(f"{message} {where(seed)}")
        raise CheckFailed(f"For {what}, your output differs from nn.MultiheadAttention's, given the same weights, by up "
                          f"to {max_gap(out, want_out):.3g}. {where(seed)}")
    if not softmax_rows_ok(weights):
        raise CheckFailed(f"For {what}, each row of your weights must sum to 1 over the keys. {where(seed)}")
    if not close(weights, want_w):
        raise CheckFailed(f"For {what}, your output is right but your weights are not the heads' attention weights "
                          f"averaged over the heads (off by up to {max_gap(weights, want_w):.3g}). {where(seed)}")
    return out, weights


def _build(cls: Any, seed: int) -> tuple[Any, nn.MultiheadAttention, dict[str, torch.Tensor]]:
    reference, state = _torch_reference(seed)
    module = build_module(cls, MHA_TASK, state, D, H)
    return module, reference, state


def check_multihead_self_attention(cls: Any, seed: int | None = None) -> None:
    """Self-attention (query = key = value = x): same output and head-averaged weights as nn.MultiheadAttention."""
    seed = seed_or_fresh(seed)
    module, reference, state = _build(cls, seed)
    x = torch.randn(3, 6, D, generator=generator(seed))
    _compare_with_torch(module, reference, state, x, x, x, seed, "self-attention")
    print(f"✓ multi-head self-attention matches nn.MultiheadAttention ({H} heads)")


def check_multihead_cross_attention(cls: Any, seed: int | None = None) -> None:
    """Queries from one sequence (T positions), keys and values from another (S != T positions)."""
    seed = seed_or_fresh(seed)
    module, reference, state = _build(cls, seed)
    g = generator(seed)
    query, memory = torch.randn(2, 4, D, generator=g), torch.randn(2, 7, D, generator=g)
    _compare_with_torch(module, reference, state, query, memory, memory, seed, "cross-attention (T = 4, S = 7)")
    print("✓ cross-attention: T queries attend to S keys of another sequence")


def check_multihead_masks(cls: Any, seed: int | None = None) -> None:
    """``key_padding_mask`` (B, S) and a causal ``attn_mask`` (T, S), True = not allowed, as nn.MultiheadAttention."""
    seed = seed_or_fresh(seed)
    module, reference, state = _build(cls, seed)
    B, T = 3, 6
    x = torch.randn(B, T, D, generator=generator(seed))
    kpm = padding_mask(torch.tensor([T, 4, 2]), T)
    mask = causal_mask(T)
    for what, masks, forbidden in (
        ("a key padding mask", dict(key_padding_mask=kpm), kpm[:, None, :].expand(B, T, T)),
        ("a causal mask", dict(attn_mask=mask), mask.expand(B, T, T)),
    ):
        out, weights = expect_pair(call(module, MHA_TASK, x, x, x, **masks), MHA_TASK, "Your forward")
        if weights.shape == (B, T, T):
            label = "which is padding" if "padding" in what else "a later position (future leakage)"
            leak = masked_weight_report(weights, forbidden, label)
            if leak and looks_inverted(weights, forbidden):
                raise CheckFailed(f"Your mask is inverted for {what}: in nn.MultiheadAttention's convention, used here, "
                                  f"True means NOT allowed. ({leak}) {where(seed)}")
            if leak:
                raise CheckFailed(f"With {what}, {leak}. Pass key_padding_mask and attn_mask on to the attention of "
                                  f"every head. {where(seed)}")
        _compare_with_torch(module, reference, state, x, x, x, seed, what, **masks)
    _compare_with_torch(module, reference, state, x, x, x, seed, "both masks together", key_padding_mask=kpm,
                        attn_mask=mask)
    print("✓ padding and causal masks, alone and together, as in nn.MultiheadAttention")
