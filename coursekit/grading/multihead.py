"""Checks for the *multi-head attention* notebook (``solutions/multihead``): self-attention from explicit
projection matrices, splitting and merging heads, and a ``MultiHeadAttention`` module checked against
``torch.nn.MultiheadAttention`` with the same weights (torch runs in the grader; the learner's module gets
the weights through ``load_state_dict``).

Shape legend: B batch, H heads, T queries, S keys, D model dim (``embed_dim``), Dh = D / H head dim,
Dk / Dv projected query-key / value size. Every check's sizes are all different (D = 20 with H = 4 heads of
Dh = 5; B, T, S chosen apart from them), so that heads and positions, or H and Dh, can never be confused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from coursekit.grading.core import (Reference, ShortcutPolicy, build_module, expect_pair, expect_tensor, generator,
                                    invoke, register_task, seed_or_fresh, torch_multihead)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, quietly_passes, rows_sum
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

D, H = 20, 4
DH = D // H


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, forbidden: torch.Tensor | None = None,
               factor: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain attention, float32, for references and mutants: (weights @ v, weights)."""
    scores = q @ k.transpose(-2, -1) * (factor if factor is not None else 1 / math.sqrt(q.size(-1)))
    if forbidden is not None:
        scores = scores.masked_fill(forbidden, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


# ---------------------------------------------------------------------------------------------------
# Part 1: self-attention from three projection matrices
# ---------------------------------------------------------------------------------------------------


def self_attention_variant(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                           key_padding_mask: torch.Tensor | None = None, *, q_from: str = "q", k_from: str = "k",
                           v_from: str = "v", mask: str = "pass", scale: bool = True, **_: Any):
    """attention(x W_q, x W_k, x W_v) with (at most) one planted mistake; the defaults give the reference."""
    w = {"q": w_q, "k": w_k, "v": w_v}
    q, k = x @ w[q_from], x @ w[k_from]
    v = x if v_from == "x" else x @ w[v_from]
    forbidden = None
    if key_padding_mask is not None and mask != "ignored":
        forbidden = key_padding_mask[:, None, :]
    return _attention(q, k, v, forbidden, None if scale else 1.0)


def _sa_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda x, w_q, w_k, w_v, key_padding_mask=None, **_: self_attention_variant(
        x, w_q, w_k, w_v, key_padding_mask, **mistake))


_SELF_ATTENTION_MUTANTS = (
    _sa_mutant("selfattn.keys-from-w-q", "Your keys are x @ w_q: project them with w_k, k = x @ w_k.", k_from="q"),
    _sa_mutant("selfattn.queries-from-w-k", "Your queries are x @ w_k: project them with w_q, q = x @ w_q.",
               q_from="k"),
    _sa_mutant("selfattn.values-unprojected", "Your output averages x itself, with D features: project the values too, "
               "v = x @ w_v, so that the output has Dv features.", v_from="x"),
    _sa_mutant("selfattn.values-from-w-k", "Your values are x @ w_k (Dk features): project them with w_v, "
               "v = x @ w_v.", v_from="k"),
    _sa_mutant("selfattn.values-from-w-q", "Your values are x @ w_q (Dk features): project them with w_v, "
               "v = x @ w_v.", v_from="q"),
    _sa_mutant("selfattn.unscaled", "Your weights are softmax(q k^T) with no scaling: divide by sqrt(Dk), as "
               "scaled_dot_product_attention does.", scale=False),
    _sa_mutant("mask.ignored", "With key_padding_mask, padding keys get weight: pass the mask on to "
               "scaled_dot_product_attention(..., key_padding_mask=key_padding_mask).", mask="ignored"),
)


def _sa_probes(seed: int) -> list[dict[str, Any]]:
    """x (B, T, D) = (3, 5, 12), w_q and w_k (12, 8), w_v (12, 6); without a mask, then with lengths 5, 3, 1."""
    g = generator(seed)
    x = torch.randn(3, 5, 12, generator=g)
    w_q, w_k, w_v = (torch.randn(12, n, generator=g) / math.sqrt(12) for n in (8, 8, 6))
    base = dict(x=x, w_q=w_q, w_k=w_k, w_v=w_v)
    return [base, dict(base, key_padding_mask=padding_mask(torch.tensor([5, 3, 1]), 5))]


SELF_ATTENTION = catalogue("multihead.self-attention", "selfattn", lambda x, w_q, w_k, w_v, key_padding_mask=None, **_:
                           self_attention_variant(x, w_q, w_k, w_v, key_padding_mask), _SELF_ATTENTION_MUTANTS,
                           _sa_probes)


def _pair_symptom(got: Any, want: tuple[torch.Tensor, torch.Tensor], probe: Mapping[str, Any],
                  sizes: Mapping[str, int], reference: str, forbidden: torch.Tensor | None = None) -> Symptom:
    """Weights first (with how their rows sum), then the output."""
    out, weights = got
    axes = ("batch item", "query", "key")
    if weights.shape != want[1].shape or not torch.allclose(weights, want[1], atol=1e-4, equal_nan=True):
        found = describe(weights, want[1], what="Your weights", axes=axes, sizes=sizes, forbidden=forbidden,
                         reference="the expected weights")
        sums = rows_sum(weights) if found.kind not in ("shape", "return-type", "dtype") else ""
        return Symptom(found.kind, f"{found.text} In yours, {sums}.") if sums else found
    found = describe(out, want[0], what="Your output", axes=("batch item", "query", "feature"), sizes=sizes,
                     reference=reference)
    return Symptom(found.kind, f"Your weights are right. {found.text}")


def check_self_attention(fn: Callable, seed: int | None = None) -> None:
    """``self_attention(x, w_q, w_k, w_v, key_padding_mask)`` = attention(x W_q, x W_k, x W_v), with padding."""
    seed = seed_or_fresh(seed)
    probes = SELF_ATTENTION.probes(seed)
    outputs = []
    for probe in probes:
        result = invoke(fn, SELF_ATTENTION_TASK, (probe["x"], probe["w_q"], probe["w_k"], probe["w_v"]),
                        {"key_padding_mask": probe.get("key_padding_mask")}, name="Your self_attention",
                        params=("x", "w_q", "w_k", "w_v"), expect="(output, weights) of shapes (B, T, Dv) = "
                                                                 "(3, 5, 6) and (B, T, T) = (3, 5, 5)", seed=seed)
        outputs.append(expect_pair(result, SELF_ATTENTION_TASK, "Your self_attention"))
    sizes = {"B": 3, "T": 5, "D": 12, "Dk": 8, "Dv": 6}

    def symptom(got, want, probe):
        kpm = probe.get("key_padding_mask")
        return _pair_symptom(got, want, probe, sizes, "weights @ (x @ w_v)", kpm[:, None, :] if kpm is not None else None)

    SELF_ATTENTION.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ self-attention: queries, keys and values all projected from x")


# ---------------------------------------------------------------------------------------------------
# Part 2: splitting and merging heads
# ---------------------------------------------------------------------------------------------------

HB, HL, HD, HH = 2, 3, 24, 4  # heads checks: B, L, D, H; Dh = 6. All different.
HDH = HD // HH


def split_variant(x: torch.Tensor, *, kind: str = "right", **_: Any) -> torch.Tensor:
    B, L, _d = x.shape
    if kind == "reshape":  # straight to (B, H, L, Dh): mixes positions
        return x.reshape(B, HH, L, HDH)
    if kind == "strided":  # feature j to head j % H
        return x.view(B, L, HDH, HH).permute(0, 3, 1, 2)
    if kind == "no-transpose":
        return x.view(B, L, HH, HDH)
    if kind == "transpose-1-3":
        return x.view(B, L, HH, HDH).transpose(1, 3)
    return x.view(B, L, HH, HDH).transpose(1, 2)  # (B, H, L, Dh)


def merge_variant(x: torch.Tensor, *, kind: str = "right", **_: Any) -> torch.Tensor:
    B, _h, L, _dh = x.shape
    if kind == "reshape":
        return x.reshape(B, L, HD)
    if kind == "interleave":
        return x.permute(0, 2, 3, 1).reshape(B, L, HD)
    if kind == "no-merge":
        return x.transpose(1, 2)
    return x.transpose(1, 2).reshape(B, L, HD)


_SPLIT_MUTANTS = (
    Mutant("heads.split-by-reshape", "Your split_heads reshapes (B, L, D) straight to (B, H, L, Dh), which mixes "
           "positions: head 0 gets the features of the first positions, not the first Dh features of every position. "
           "Split the last dim first, .view(B, L, H, Dh), then .transpose(1, 2).",
           lambda x, **_: split_variant(x, kind="reshape")),
    Mutant("heads.split-strided", "Your split_heads deals the features out to the heads one at a time (feature j goes "
           "to head j % H). Each head takes a contiguous block of Dh features: .view(B, L, H, Dh), head h holding "
           "features h*Dh to (h+1)*Dh - 1.", lambda x, **_: split_variant(x, kind="strided")),
    Mutant("heads.split-not-transposed", "Your split_heads returns (B, L, H, Dh): put the heads before the positions, "
           ".transpose(1, 2) -> (B, H, L, Dh), so that attention runs over the positions of each head.",
           lambda x, **_: split_variant(x, kind="no-transpose")),
    Mutant("heads.split-wrong-transpose", "Your split_heads swaps dims 1 and 3 of (B, L, H, Dh): swap dims 1 and 2, "
           ".transpose(1, 2), to get (B, H, L, Dh).", lambda x, **_: split_variant(x, kind="transpose-1-3")),
)
_MERGE_MUTANTS = (
    Mutant("heads.merge-by-reshape", "Your heads are merged in the wrong order: reshaping (B, H, L, Dh) straight to "
           "(B, L, D) mixes positions. Bring each position's heads together first, .transpose(1, 2) -> (B, L, H, Dh), "
           "then .reshape(B, L, D).", lambda x, **_: merge_variant(x, kind="reshape")),
    Mutant("heads.merge-interleaved", "Your merge interleaves the heads' features. Concatenate them instead: head h's "
           "Dh features go to columns h*Dh .. (h+1)*Dh - 1, x.transpose(1, 2).reshape(B, L, D).",
           lambda x, **_: merge_variant(x, kind="interleave")),
    Mutant("heads.merge-not-reshaped", "Your merge_heads returns (B, L, H, Dh): concatenate the heads of each position, "
           ".reshape(B, L, D).", lambda x, **_: merge_variant(x, kind="no-merge")),
)


def _split_probes(seed: int) -> list[dict[str, Any]]:
    """x (B, L, D) = (2, 3, 24), H = 4 heads of Dh = 6."""
    return [dict(x=torch.randn(HB, HL, HD, generator=generator(seed)))]


def _merge_probes(seed: int) -> list[dict[str, Any]]:
    """x (B, H, L, Dh) = (2, 4, 3, 6)."""
    return [dict(x=torch.randn(HB, HH, HL, HDH, generator=generator(seed)))]


SPLIT = catalogue("multihead.split", "heads", lambda x, **_: split_variant(x), _SPLIT_MUTANTS, _split_probes,
                  atol=0.0, rtol=0.0)
MERGE = catalogue("multihead.merge", "heads", lambda x, **_: merge_variant(x), _MERGE_MUTANTS, _merge_probes,
                  atol=0.0, rtol=0.0)
_HEAD_SIZES = {"B": HB, "L": HL, "H": HH, "Dh": HDH, "D": HD}


def check_split_heads(fn: Callable, seed: int | None = None) -> None:
    """``split_heads(x, num_heads)``: (B, L, D) -> (B, H, L, Dh), head h holding features h*Dh .. (h+1)*Dh - 1."""
    seed = seed_or_fresh(seed)
    probe = SPLIT.probes(seed)[0]
    got = expect_tensor(invoke(fn, HEADS_TASK, (probe["x"], HH), name="Your split_heads", params=("x", "num_heads"),
                               expect=f"a tensor of shape (B, H, L, Dh) = {(HB, HH, HL, HDH)}", seed=seed),
                        "split_heads(x, num_heads)", HEADS_TASK)
    SPLIT.judge([got], [probe], seed=seed, describe=lambda g, w, p: describe(
        g, w, what="Your split heads", axes=("batch item", "head", "position", "feature"), sizes=_HEAD_SIZES,
        atol=0.0, rtol=0.0, reference="x.view(B, L, H, Dh).transpose(1, 2)"))
    print("✓ split_heads: (B, L, D) -> (B, H, L, Dh)")


def check_merge_heads(fn: Callable, seed: int | None = None) -> None:
    """``merge_heads(x)``: (B, H, L, Dh) -> (B, L, D), concatenating the heads at each position."""
    seed = seed_or_fresh(seed)
    probe = MERGE.probes(seed)[0]
    got = expect_tensor(invoke(fn, HEADS_TASK, (probe["x"],), name="Your merge_heads", params=("x",),
                               expect=f"a tensor of shape (B, L, D) = {(HB, HL, HD)}", seed=seed),
                        "merge_heads(x)", HEADS_TASK)
    MERGE.judge([got], [probe], seed=seed, describe=lambda g, w, p: describe(
        g, w, what="Your merged heads", axes=("batch item", "position", "feature"), sizes=_HEAD_SIZES, atol=0.0,
        rtol=0.0, reference="x.transpose(1, 2).reshape(B, L, D)"))
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


def mha_variant(state: Mapping[str, torch.Tensor], query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, attn_mask: torch.Tensor | None = None, *,
                split: str = "right", merge: str = "right", scale: str = "dh", out_proj: bool = True,
                projections: str = "qkv", average: str = "mean", masks: str = "both", **_: Any):
    """nn.MultiheadAttention's maths with (at most) one planted mistake; the defaults give the reference.

    ``projections``: which of q_proj, k_proj, v_proj give the queries, keys and values (e.g. "qqv": keys from q_proj).
    ``masks``: "both", "none", "padding" (attn_mask dropped), "causal" (key_padding_mask dropped), "inverted".
    ``average``: "mean" over the heads, "none" (one map per head), "sum", "head 0", "last" (the weights of the last
    head only).
    """
    def lin(name: str, x: torch.Tensor) -> torch.Tensor:
        return x @ state[f"{name}.weight"].T + state[f"{name}.bias"]

    def split_heads(x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.reshape(B, H, L, DH) if split == "reshape" else x.view(B, L, H, DH).transpose(1, 2)

    q, k, v = (split_heads(lin(f"{p}_proj", x)) for p, x in zip(projections, (query, key, value)))
    B, _, T, _ = q.shape
    S = k.size(2)
    forbidden = torch.zeros(B, 1, T, S, dtype=torch.bool)
    if key_padding_mask is not None and masks in ("both", "causal", "inverted"):
        kpm = ~key_padding_mask if masks == "inverted" else key_padding_mask
        forbidden = forbidden | kpm[:, None, None, :]
    if attn_mask is not None and masks in ("both", "padding", "inverted"):
        forbidden = forbidden | (~attn_mask if masks == "inverted" else attn_mask)
    factor = {"dh": DH ** -0.5, "d": D ** -0.5, "none": 1.0}[scale]
    out, weights = _attention(q, k, v, forbidden, factor)  # (B, H, T, Dh), (B, H, T, S)
    merged = out.reshape(B, T, D) if merge == "reshape" else out.transpose(1, 2).reshape(B, T, D)
    output = lin("out_proj", merged) if out_proj else merged
    returned = {"mean": lambda w: w.mean(1), "none": lambda w: w, "sum": lambda w: w.sum(1),
                "head 0": lambda w: w[:, 0]}[average](weights)
    return output, returned


def _mha_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda state, query, key, value, key_padding_mask=None, attn_mask=None, **_:
                  mha_variant(state, query, key, value, key_padding_mask, attn_mask, **mistake))


_MHA_MUTANTS = (
    _mha_mutant("mha.merge-by-reshape", "Your heads are merged in the wrong order: (B, H, T, Dh) must become "
                "(B, T, H, Dh) (.transpose(1, 2)) before the reshape to (B, T, D).", merge="reshape"),
    _mha_mutant("mha.split-by-reshape", "Your heads are split in the wrong order: (B, T, D) -> .view(B, T, H, Dh) -> "
                ".transpose(1, 2), not a reshape straight to (B, H, T, Dh).", split="reshape"),
    _mha_mutant("mha.no-out-proj", "You forgot the output projection: return self.out_proj(merged heads).",
                out_proj=False),
    _mha_mutant("mha.scaled-by-embed-dim", "You scaled the scores by 1 / sqrt(embed_dim); each head works in head_dim "
                "= embed_dim / num_heads dims, so scale by 1 / sqrt(head_dim) (scaled_dot_product_attention does, on "
                "(B, H, T, Dh) inputs).", scale="d"),
    _mha_mutant("mha.unscaled", "You did not scale the scores: divide them by sqrt(head_dim).", scale="none"),
    _mha_mutant("mha.keys-from-q-proj", "Your keys go through q_proj: keys go through self.k_proj.", projections="qqv"),
    _mha_mutant("mha.keys-from-v-proj", "Your keys go through v_proj: keys go through self.k_proj.", projections="qvv"),
    _mha_mutant("mha.values-from-k-proj", "Your values go through k_proj: values go through self.v_proj.",
                projections="qkk"),
    _mha_mutant("mha.queries-from-k-proj", "Your queries go through k_proj: queries go through self.q_proj.",
                projections="kkv"),
    _mha_mutant("mha.weights-per-head", "Your output is right, but your weights have one map per head, (B, H, T, S): "
                "return their average over the heads, weights.mean(dim=1) -> (B, T, S), as nn.MultiheadAttention "
                "does.", average="none"),
    _mha_mutant("mha.weights-summed", "Your output is right, but your weights are the SUM of the heads' maps (each row "
                "sums to the number of heads): average them, weights.mean(dim=1).", average="sum"),
    _mha_mutant("mha.weights-of-head-0", "Your output is right, but the weights you return are head 0's alone: return "
                "the average over the heads, weights.mean(dim=1).", average="head 0"),
)
_MHA_MASK_MUTANTS = (
    _mha_mutant("mask.ignored", "With key_padding_mask or attn_mask your output is the same as without: pass both "
                "masks on to scaled_dot_product_attention.", masks="none"),
    _mha_mutant("mask.causal-ignored", "key_padding_mask works, but attn_mask is never applied, so queries see later "
                "keys: pass attn_mask on to scaled_dot_product_attention too.", masks="causal"),
    _mha_mutant("mask.padding-ignored", "attn_mask works, but key_padding_mask is never applied, so padding gets "
                "weight: pass key_padding_mask on to scaled_dot_product_attention too.", masks="padding"),
)


def _mha_probes(seed: int, B: int, T: int, S: int, masked: bool = False) -> list[dict[str, Any]]:
    """Inputs (B, T, D) and keys (B, S, D) (the same tensor when S = T: self-attention), torch's module with random
    weights and biases, and the same weights under the course's names; with ``masked``, a key padding mask (lengths
    T, 4, 2), a causal mask, then both."""
    g = generator(seed)
    module, state = _torch_reference(seed)
    query = torch.randn(B, T, D, generator=g)
    memory = query if S == T else torch.randn(B, S, D, generator=g)
    base = dict(module=module, state=state, query=query, key=memory, value=memory)
    if not masked:
        return [base]
    kpm, mask = padding_mask(torch.tensor([T, 4, 2]), T), causal_mask(T)
    return [dict(base, key_padding_mask=kpm), dict(base, attn_mask=mask), dict(base, key_padding_mask=kpm,
                                                                                 attn_mask=mask)]


def _reference_mha(module, query, key, value, key_padding_mask=None, attn_mask=None, **_):
    """torch's own nn.MultiheadAttention: output and head-averaged weights."""
    with torch.no_grad():
        out, weights = module(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                              need_weights=True)
    return out, weights


SELF_MHA = catalogue("multihead.self", "mha", _reference_mha, _MHA_MUTANTS,
                     lambda seed: _mha_probes(seed, B=3, T=6, S=6))
CROSS_MHA = catalogue("multihead.cross", "mha", _reference_mha, _MHA_MUTANTS,
                      lambda seed: _mha_probes(seed, B=2, T=3, S=7))
MASKED_MHA = catalogue("multihead.masks", "mha", _reference_mha, _MHA_MUTANTS + _MHA_MASK_MUTANTS,
                       lambda seed: _mha_probes(seed, B=3, T=6, S=6, masked=True))


def _build(cls: Any, seed: int) -> Any:
    _, state = _torch_reference(seed)
    return build_module(cls, MHA_TASK, state, D, H, name="MultiHeadAttention")


def _forward(module: Any, probe: Mapping[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    query, key = probe["query"], probe["key"]
    B, T, S = query.size(0), query.size(1), key.size(1)
    masks = {n: probe[n] for n in ("key_padding_mask", "attn_mask") if probe.get(n) is not None}
    result = invoke(module, MHA_TASK, (query, key, probe["value"]), masks, name="Your MultiHeadAttention",
                    params=("query", "key", "value"), expect=f"(output, weights) of shapes (B, T, D) = {(B, T, D)} and "
                                                             f"(B, T, S) = {(B, T, S)}", seed=seed)
    return expect_pair(result, MHA_TASK, "Your forward")


def _judge_module(cls: Any, seed: int, catalogue_, what: str, then: Callable[[], str] | None = None) -> None:
    module = _build(cls, seed)
    probes = catalogue_.probes(seed)
    outputs = [_forward(module, probe, seed) for probe in probes]

    def symptom(got, want, probe):
        q, k = probe["query"], probe["key"]
        sizes = {"B": q.size(0), "T": q.size(1), "S": k.size(1), "H": H, "D": D}
        if k.size(1) == q.size(1):
            sizes.pop("S")
        masks = [n for n in ("key_padding_mask", "attn_mask") if probe.get(n) is not None]
        forbidden = None
        if masks:
            forbidden = torch.zeros(q.size(0), q.size(1), k.size(1), dtype=torch.bool)
            for name in masks:
                forbidden = forbidden | (probe[name][:, None, :] if name == "key_padding_mask" else probe[name])
        found = _pair_symptom(got, want, probe, sizes, "nn.MultiheadAttention's output", forbidden)
        return Symptom(found.kind, f"For {what}{' with ' + ' and '.join(masks) if masks else ''}: "
                                   f"{found.text[0].lower()}{found.text[1:]}")

    catalogue_.judge(outputs, probes, seed=seed, describe=symptom, then=then)


def check_multihead_self_attention(cls: Any, seed: int | None = None) -> None:
    """Self-attention (query = key = value = x): same output and head-averaged weights as nn.MultiheadAttention."""
    seed = seed_or_fresh(seed)
    _judge_module(cls, seed, SELF_MHA, "self-attention (B = 3, T = 6)")
    print(f"✓ multi-head self-attention matches nn.MultiheadAttention ({H} heads)")


def check_multihead_cross_attention(cls: Any, seed: int | None = None) -> None:
    """Queries from one sequence (T positions), keys and values from another (S != T positions)."""
    seed = seed_or_fresh(seed)

    def self_attention_verdict() -> str:
        passes = quietly_passes(check_multihead_self_attention, cls, seed)
        return (f"Test 4 (self-attention, S = T) {'passes' if passes else 'fails'} with this seed"
                f"{': look at what changes when key and value have their own length S.' if passes else '.'}")

    _judge_module(cls, seed, CROSS_MHA, "cross-attention (T = 3 queries, S = 7 keys)", then=self_attention_verdict)
    print("✓ cross-attention: T queries attend to S keys of another sequence")


def check_multihead_masks(cls: Any, seed: int | None = None) -> None:
    """``key_padding_mask`` (B, S) and a causal ``attn_mask`` (T, S), True = not allowed, as nn.MultiheadAttention:
    each alone, then both together."""
    seed = seed_or_fresh(seed)
    _judge_module(cls, seed, MASKED_MHA, "self-attention (B = 3, T = 6)")
    print("✓ padding and causal masks, alone and together, as in nn.MultiheadAttention")
