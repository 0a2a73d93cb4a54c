"""Checks for the *scaled dot-product attention* notebook (``solutions/sdpa``), the worked example of
:mod:`coursekit.grading.diagnosis`: every check draws its inputs from one ``probes`` function, and names a mistake
only when the learner's results match one mutant of its catalogue on every probe.

Also here, for the later notebooks: the learner-relative mask catalogue (:func:`mask_mutants`), which judges a
mask from the learner's OWN unmasked weights, so that a mistake in the scores (no scaling, say) never shows up
as a mask mistake, and :func:`renormalised`.

Shape legend: B batch, H heads, T queries, S keys, Dk query/key size, Dv value size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch

from coursekit.grading.core import (Reference, ShortcutPolicy, expect_pair, fused_attention, generator,
                                    invoke, register_task, seed_or_fresh)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, quietly_passes, rows_sum
from coursekit.masks import causal_mask, padding_mask

AttentionFn = Callable[..., tuple[torch.Tensor, torch.Tensor]]

SDPA_TASK = register_task(
    "scaled dot-product attention",
    ShortcutPolicy((Reference("coursekit.attention", "coursekit.attention"),), fused_attention()),
    code="sdpa",
)
NAME = "Your scaled_dot_product_attention"


def random_qkv(seed: int, *lead: int, T: int = 5, S: int = 7, dk: int = 16, dv: int = 8
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random queries (..., T, Dk), keys (..., S, Dk) and values (..., S, Dv) from ``seed``."""
    g = generator(seed)
    return (torch.randn(*lead, T, dk, generator=g), torch.randn(*lead, S, dk, generator=g),
            torch.randn(*lead, S, dv, generator=g))


# ---------------------------------------------------------------------------------------------------
# The reference and its mutants: one function, one keyword per mistake
# ---------------------------------------------------------------------------------------------------


def forbidden_of(query: torch.Tensor, key: torch.Tensor, attn_mask: torch.Tensor | None = None,
                 key_padding_mask: torch.Tensor | None = None, *, combine: str = "or") -> torch.Tensor:
    """The positions a query may not see, (..., T, S) bool: attn_mask, key_padding_mask, or both."""
    shape = (*query.shape[:-1], key.size(-2))
    parts = []
    if attn_mask is not None:
        parts.append(attn_mask.expand(shape))
    if key_padding_mask is not None:
        parts.append(key_padding_mask[:, None, :].expand(shape))
    if not parts:
        return torch.zeros(shape, dtype=torch.bool)
    if len(parts) == 2:
        return parts[0] & parts[1] if combine == "and" else parts[0] | parts[1]
    return parts[0]


def variant(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
            key_padding_mask: torch.Tensor | None = None, *, scale: str = "sqrt-dk", softmax: str = "dim -1",
            output: str = "weights @ value", returned: str = "weights", masks: str = "both", fill: str = "-inf",
            **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with (at most) one planted mistake; the defaults give the reference.

    ``masks``: which masks are applied ("both", "none", "padding", "causal", "inverted" (each), "inverted combined",
    "and", "padding unless causal", "causal unless padding"). ``fill``: what masked scores become ("-inf", "0", "added" for a bool mask
    added to the scores, "after softmax" for weights zeroed after the softmax).
    """
    d_k = query.size(-1)
    scores = query @ key.transpose(-2, -1)  # (..., T, S)
    factor = {"sqrt-dk": 1 / math.sqrt(d_k), "none": 1.0, "dk": 1 / d_k, "times": math.sqrt(d_k),
              "value": 1 / math.sqrt(value.size(-1)), "queries": 1 / math.sqrt(query.size(-2)),
              "keys": 1 / math.sqrt(key.size(-2)), "dim 1": 1 / math.sqrt(query.size(1))}[scale]
    scores = scores * factor
    if masks == "padding unless causal":
        key_padding_mask = None if attn_mask is not None else key_padding_mask
    elif masks == "causal unless padding":
        attn_mask = None if key_padding_mask is not None else attn_mask
    elif masks == "padding":
        attn_mask = None
    elif masks == "causal":
        key_padding_mask = None
    forbidden = None
    if masks != "none" and (attn_mask is not None or key_padding_mask is not None):
        if masks == "inverted":
            attn_mask = None if attn_mask is None else ~attn_mask
            key_padding_mask = None if key_padding_mask is None else ~key_padding_mask
        forbidden = forbidden_of(query, key, attn_mask, key_padding_mask, combine="and" if masks == "and" else "or")
        if masks == "inverted combined":
            forbidden = ~forbidden
    if forbidden is not None and fill in ("-inf", "0"):
        scores = scores.masked_fill(forbidden, float("-inf") if fill == "-inf" else 0.0)
    elif forbidden is not None and fill == "added":  # each bool mask added as it is, True counting as 1
        for part in forbidden_of(query, key, attn_mask), forbidden_of(query, key, None, key_padding_mask):
            scores = scores + part.float()
    if softmax == "none":
        weights = scores
    elif softmax == "log":
        weights = torch.log_softmax(scores, dim=-1)
    else:
        weights = torch.softmax(scores, dim=int(softmax.split()[1]))
    if forbidden is not None and fill == "after softmax":
        weights = weights.masked_fill(forbidden, 0.0)
    out = weights @ (key if output == "weights @ key" else value)
    second = {"weights": weights, "scores": scores, "transposed": weights.transpose(-2, -1)}[returned]
    return out, second


def _mutant(code: str, says: str, **mistake: str) -> Mutant:
    return Mutant(code, says, partial(variant, **mistake))


_SHAPE_MUTANTS = (
    _mutant("sdpa.output-averages-keys", "Your output is weights @ key: it averages the keys, so it has Dk features. "
            "The output is the weighted average of the VALUES, weights @ value, shape (..., T, Dv).",
            output="weights @ key"),
    _mutant("sdpa.weights-transposed", "Your output is right, but the weights you return are transposed, (..., S, T): "
            "return the weights you multiplied the values with, shape (..., T, S).", returned="transposed"),
)
_VALUE_MUTANTS = (
    _mutant("sdpa.unscaled", "Your weights equal softmax(query @ key^T) with no scaling: divide the scores by "
            "math.sqrt(d_k) before the softmax.", scale="none"),
    _mutant("sdpa.scaled-by-dk", "Your weights equal softmax(query @ key^T / d_k): you divided by d_k instead of "
            "sqrt(d_k). Divide by math.sqrt(d_k).", scale="dk"),
    _mutant("sdpa.times-sqrt-dk", "Your weights equal softmax(query @ key^T * sqrt(d_k)): you multiplied the scores "
            "by sqrt(d_k) instead of dividing them by it.", scale="times"),
    _mutant("sdpa.softmax-over-queries", "Your weights equal a softmax over the queries (dim -2): each column sums to "
            "1 instead of each row. Take the softmax over the keys, the last dim: torch.softmax(scores, dim=-1).",
            softmax="dim -2"),
    _mutant("sdpa.log-softmax", "Your weights equal log_softmax of the scores: use torch.softmax, whose rows are "
            "probabilities that sum to 1.", softmax="log"),
    _mutant("sdpa.no-softmax", "Your weights equal the scaled scores themselves: apply torch.softmax(scores, dim=-1) "
            "to turn them into weights.", softmax="none"),
    _mutant("sdpa.returns-scores", "Your output is right, but the second value you return is the scaled scores, "
            "before the softmax: return the weights.", returned="scores"),
)
_SQUARE_MUTANTS = (  # for the check of both masks, where T = S
    _mutant("sdpa.scaled-by-length", "Your scores are divided by sqrt(8), the number of queries (and of keys) here: "
            "d_k is the size of each query and key, the LAST dimension, query.size(-1).", scale="queries"),
    _mutant("sdpa.scaled-by-value-size", "Your scores are divided by sqrt(Dv), the size of the VALUES "
            "(value.size(-1)); d_k is the size of the queries and keys, query.size(-1).", scale="value"),
)
_RANK_MUTANTS = (  # only told apart by inputs of several ranks
    _mutant("sdpa.scaled-by-value-size", "Your scores are divided by sqrt(Dv), the size of the VALUES "
            "(value.size(-1)); d_k is the size of the queries and keys, query.size(-1).", scale="value"),
    _mutant("sdpa.scaled-by-query-count", "Your scores are divided by sqrt(T), the number of queries "
            "(query.size(-2)); d_k is the LAST dimension of query, query.size(-1).", scale="queries"),
    _mutant("sdpa.scaled-by-key-count", "Your scores are divided by sqrt(S), the number of keys (key.size(-2)); "
            "d_k is the last dimension of query, query.size(-1).", scale="keys"),
    _mutant("sdpa.scaled-by-dim-1", "Your scores are divided by sqrt(query.size(1)): that is d_k only for "
            "2-dimensional inputs (the number of queries for (B, T, Dk), of heads for (B, H, T, Dk)). Use "
            "query.size(-1).", scale="dim 1"),
    _mutant("sdpa.softmax-dim-2", "Your softmax runs over dim 2: the keys for 3-dimensional inputs, but the queries "
            "for (B, H, T, S) scores. Use dim=-1, the last dim, whatever the rank.", softmax="dim 2"),
    _mutant("sdpa.softmax-dim-1", "Your softmax runs over dim 1: the queries for 3-dimensional inputs, the heads for "
            "4-dimensional ones. Use dim=-1, the keys, whatever the rank.", softmax="dim 1"),
    _mutant("sdpa.softmax-over-batch", "Your softmax runs over dim 0, the batch: use dim=-1, the keys.",
            softmax="dim 0"),
)
_MASK_MUTANTS = (
    _mutant("mask.ignored", "Your weights are the same with and without the masks: apply attn_mask and "
            "key_padding_mask to the scores.", masks="none"),
    _mutant("mask.inverted", "Your weights follow the masks the other way round: the positions where a mask is "
            "True get all the weight. True means NOT allowed (torch.nn's convention): fill the scores where the mask "
            "is True.", masks="inverted"),
    _mutant("mask.inverted-combined", "Your weights follow the combined mask the other way round: only the "
            "positions that some mask forbids get weight. True means NOT allowed: fill the scores where "
            "attn_mask | key_padding_mask is True.", masks="inverted combined"),
    _mutant("mask.after-softmax", "Your weights are the softmax of the unmasked scores with the masked ones set to "
            "0 afterwards, so the rows no longer sum to 1: fill the scores with float('-inf') BEFORE the softmax.",
            fill="after softmax"),
    _mutant("mask.zero-filled", "Your masked scores were set to 0 (or near it) before the softmax, so masked keys "
            "still get weight: fill them with float('-inf').", fill="0"),
    _mutant("mask.added", "Your scores had the bool mask ADDED to them (True counts as +1), which favours the masked "
            "keys instead of hiding them: fill the masked scores with float('-inf') (masked_fill).", fill="added"),
)
_BOTH_MASK_MUTANTS = (
    _mutant("mask.padding-ignored", "With both masks, and with key_padding_mask alone, padding keys get weight: "
            "your function never applies key_padding_mask. Fill the scores at key_padding_mask[:, None, :] too.",
            masks="causal"),
    _mutant("mask.causal-ignored", "With both masks, and with attn_mask alone, queries see later keys: your function "
            "never applies attn_mask.", masks="padding"),
    _mutant("mask.padding-dropped-with-causal", "key_padding_mask works alone, but when attn_mask is given too only "
            "attn_mask is applied (an if/elif?): apply every mask that is given, one after the other.",
            masks="padding unless causal"),
    _mutant("mask.causal-dropped-with-padding", "attn_mask works alone, but when key_padding_mask is given too only "
            "key_padding_mask is applied (an if/elif?): apply every mask that is given, one after the other.",
            masks="causal unless padding"),
    _mutant("mask.combined-with-and", "With both masks, only the positions that BOTH masks forbid are hidden: combine "
            "them with | (or), since a key is forbidden when either mask says so.", masks="and"),
)


def _reference(query, key, value, attn_mask=None, key_padding_mask=None, **_):
    return variant(query, key, value, attn_mask, key_padding_mask)


def _shapes_only(got: Any, want: tuple[torch.Tensor, torch.Tensor]) -> bool:
    return (isinstance(got, tuple) and len(got) == 2 and all(isinstance(g, torch.Tensor) for g in got)
            and tuple(got[0].shape) == tuple(want[0].shape) and tuple(got[1].shape) == tuple(want[1].shape))


def _shape_probes(seed: int) -> list[dict[str, Any]]:
    """2-, 3- and 4-dimensional inputs; B = 3, (B, H) = (2, 4), T = 5, S = 7, Dk = 16, Dv = 8: no two sizes equal."""
    probes = []
    for lead in [(), (3,), (2, 4)]:
        q, k, v = random_qkv(seed, *lead, T=5, S=7, dk=16, dv=8)
        probes.append(dict(query=q, key=k, value=v))
    return probes


def _value_probes(seed: int) -> list[dict[str, Any]]:
    """No masks: (B, T, S) = (4, 6, 9) with Dk = 16, and (B, H, T, S) = (2, 3, 6, 9) with Dk = 64; Dv = 5."""
    probes = []
    for lead, dk in [((4,), 16), ((2, 3), 64)]:
        q, k, v = random_qkv(seed, *lead, T=6, S=9, dk=dk, dv=5)
        probes.append(dict(query=q, key=k, value=v))
    return probes


BOTH_LENGTHS = (8, 5, 2, 7)  # fixed, so that every mask mistake shows under every seed


def _both_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (4, 8, 8), Dk = 32, Dv = 12: both masks, then padding alone, then the causal mask alone."""
    q, k, v = random_qkv(seed, 4, T=8, S=8, dk=32, dv=12)
    kpm, mask = padding_mask(torch.tensor(BOTH_LENGTHS), max_len=8), causal_mask(8)
    return [dict(query=q, key=k, value=v, attn_mask=mask, key_padding_mask=kpm),
            dict(query=q, key=k, value=v, key_padding_mask=kpm),
            dict(query=q, key=k, value=v, attn_mask=mask)]


SHAPES = catalogue("sdpa.shapes", "sdpa", _reference, _SHAPE_MUTANTS, _shape_probes, accept=_shapes_only)
VALUES = catalogue("sdpa.values", "sdpa", _reference, _SHAPE_MUTANTS + _VALUE_MUTANTS + _RANK_MUTANTS, _value_probes,
                   atol=1e-5)
BOTH = catalogue("sdpa.both-masks", "sdpa", _reference,
                 _SHAPE_MUTANTS + _VALUE_MUTANTS + _SQUARE_MUTANTS + _MASK_MUTANTS + _BOTH_MASK_MUTANTS, _both_probes, atol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Masks judged from the learner's own unmasked weights
# ---------------------------------------------------------------------------------------------------


def renormalised(weights: torch.Tensor, forbidden: torch.Tensor) -> torch.Tensor:
    """``weights`` with the forbidden entries set to 0 and each row rescaled to sum to 1 (NaN for a row left empty).

    A softmax over the allowed scores equals this, whatever the scores were: so a learner's masked weights can be
    judged against their own unmasked ones.
    """
    kept = weights.masked_fill(forbidden, 0.0)
    return kept / kept.sum(-1, keepdim=True)


def mask_mutants(scores: Callable[..., torch.Tensor], *, transposable: bool) -> tuple[Mutant, ...]:
    """The classic mask mistakes, from a probe's ``unmasked`` weights (the learner's own) and ``forbidden`` (bool).

    ``scores(**probe)`` gives the right scores, for the two mistakes that a softmax of the learner's weights cannot
    reproduce (a mask filled with 0, or added); those two are named only when the learner's scores are right.
    ``transposable``: also the mask transposed (for a causal mask, which is square).
    """
    def ignored(unmasked, forbidden, **_):
        return unmasked

    def inverted(unmasked, forbidden, **_):
        return renormalised(unmasked, ~forbidden)

    def after_softmax(unmasked, forbidden, **_):
        return unmasked.masked_fill(forbidden, 0.0)

    def zero_filled(forbidden, **probe):
        return torch.softmax(scores(**probe).masked_fill(forbidden, 0.0), dim=-1)

    def added(forbidden, **probe):
        return torch.softmax(scores(**probe) + forbidden.float(), dim=-1)

    def transposed(unmasked, forbidden, **_):
        return renormalised(unmasked, forbidden.transpose(-2, -1))

    mutants = (
        Mutant("mask.ignored", "Your weights with the mask are the same as without it: the mask is never applied.",
               ignored),
        Mutant("mask.inverted", "Your mask works the other way round: the positions where it is True get all the "
               "weight. True means NOT allowed (torch.nn's convention): fill the scores where the mask is True, not "
               "where it is False.", inverted),
        Mutant("mask.after-softmax", "Your weights are the unmasked softmax with the masked entries set to 0 "
               "afterwards, so the rows no longer sum to 1: fill the scores with float('-inf') BEFORE the softmax.",
               after_softmax),
        Mutant("mask.zero-filled", "Your masked scores were set to 0 (or near it) before the softmax, so masked keys "
               "still get weight: fill them with float('-inf').", zero_filled),
        Mutant("mask.added", "Your scores had the bool mask ADDED to them (True counts as +1), which favours the "
               "masked keys instead of hiding them: fill the masked scores with float('-inf') (masked_fill).", added),
    )
    if transposable:
        mutants += (Mutant("mask.transposed", "Your weights hide the past instead of the future: the mask is applied "
                           "transposed (attn_mask.T, or mask[s, t] read as mask[t, s]). Use attn_mask as it is, rows = "
                           "queries, columns = keys.", transposed),)
    return mutants


def _learner_relative(unmasked, forbidden, **_):
    return renormalised(unmasked, forbidden)


def _scaled_scores(query, key, **_):
    return query @ key.transpose(-2, -1) / math.sqrt(query.size(-1))


def _padding_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (3, 5, 7), Dk = 16, Dv = 8, lengths 7, 4, 2. ``unmasked`` is the reference's; the check puts the
    learner's own unmasked weights there."""
    q, k, v = random_qkv(seed, 3, T=5, S=7)
    kpm = padding_mask(torch.tensor([7, 4, 2]))
    return [dict(query=q, key=k, value=v, key_padding_mask=kpm, forbidden=kpm[:, None, :].expand(3, 5, 7),
                 unmasked=variant(q, k, v)[1])]


def _causal_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (2, 6, 6), Dk = 16, Dv = 8, a causal mask (T = S, as a causal mask needs)."""
    q, k, v = random_qkv(seed, 2, T=6, S=6)
    mask = causal_mask(6)
    return [dict(query=q, key=k, value=v, attn_mask=mask, forbidden=mask.expand(2, 6, 6), unmasked=variant(q, k, v)[1])]


# Tight: padding must get no weight to within 1e-6, which the notebook promises.
PADDING = catalogue("sdpa.padding", "sdpa", _learner_relative, mask_mutants(_scaled_scores, transposable=False),
                    _padding_probes, atol=1e-6, rtol=1e-5)
CAUSAL = catalogue("sdpa.causal", "sdpa", _learner_relative, mask_mutants(_scaled_scores, transposable=True),
                   _causal_probes, atol=1e-6, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------
# Calling the learner's function, and describing what came back
# ---------------------------------------------------------------------------------------------------

_SIZES = ("B", "H", "T", "S")


def _sizes(probe: Mapping[str, Any]) -> dict[str, int]:
    q, k, v = probe["query"], probe["key"], probe["value"]
    lead = dict(zip(("B", "H"), q.shape[:-2]))
    return {**lead, "T": q.size(-2), "S": k.size(-2), "Dk": q.size(-1), "Dv": v.size(-1)}


def _axes(ndim: int) -> tuple[str, ...]:
    return {2: ("query", "key"), 3: ("batch item", "query", "key"), 4: ("batch item", "head", "query", "key")}.get(
        ndim, ("query", "key"))


def attend(fn: AttentionFn, probe: Mapping[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The learner's (output, weights) for one probe; every failure becomes a sentence with the shapes."""
    q, k, v = probe["query"], probe["key"], probe["value"]
    masks = {name: probe[name] for name in ("attn_mask", "key_padding_mask") if probe.get(name) is not None}
    out_shape, w_shape = (*q.shape[:-1], v.size(-1)), (*q.shape[:-1], k.size(-2))
    result = invoke(fn, SDPA_TASK, (q, k, v), masks, name=NAME, params=("query", "key", "value"),
                    expect=f"(output, weights) of shapes {out_shape} and {w_shape}", seed=seed)
    return expect_pair(result, SDPA_TASK, NAME)


def _describe(got: Any, want: tuple[torch.Tensor, torch.Tensor], probe: Mapping[str, Any]) -> Symptom:
    """Weights first (with how their rows sum), then the output."""
    sizes = _sizes(probe)
    if not (isinstance(got, tuple) and len(got) == 2):
        return Symptom("return-type", "The result is not a pair (output, weights).")
    out, weights = got
    forbidden = forbidden_of(probe["query"], probe["key"], probe.get("attn_mask"), probe.get("key_padding_mask"))
    hidden = forbidden if bool(forbidden.any()) else None
    if tuple(weights.shape) != tuple(want[1].shape) or not torch.allclose(weights, want[1], atol=1e-5, equal_nan=True):
        symptom = describe(weights, want[1], what="Your weights", axes=_axes(weights.dim()), sizes=sizes,
                           forbidden=hidden, reference="softmax(query @ key^T / sqrt(d_k)) over the keys")
        sums = rows_sum(weights) if symptom.kind not in ("shape", "return-type", "dtype") else ""
        return Symptom(symptom.kind, f"{symptom.text} In yours, {sums}.") if sums else symptom
    symptom = describe(out, want[0], what="Your output", axes=_axes(out.dim())[:-1] + ("feature",), sizes=sizes,
                       reference="weights @ value")
    return Symptom(symptom.kind, f"Your weights are right. {symptom.text}")


def _describe_masked(got: torch.Tensor, want: torch.Tensor, probe: Mapping[str, Any]) -> Symptom:
    symptom = describe(got, want, what="Your weights", axes=("batch item", "query", "key"), sizes=_sizes(probe),
                       forbidden=probe["forbidden"], reference="the expected weights (your own unmasked weights with "
                                                               "the masked keys removed, each row rescaled to sum to 1)")
    sums = rows_sum(got) if symptom.kind not in ("shape", "return-type", "dtype") else ""
    return Symptom(symptom.kind, f"{symptom.text} In yours, {sums}.") if sums else symptom


# ---------------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------------


def check_attention_shapes(fn: AttentionFn, seed: int | None = None) -> None:
    """Output is (..., T, Dv) and weights (..., T, S), for 2, 3 and 4-dimensional inputs."""
    seed = seed_or_fresh(seed)
    probes = SHAPES.probes(seed)
    outputs = [attend(fn, probe, seed) for probe in probes]
    SHAPES.judge(outputs, probes, seed=seed, describe=_describe_shapes)
    print("✓ shapes are right for 2-, 3- and 4-dimensional inputs")


def _describe_shapes(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor],
                     probe: Mapping[str, Any]) -> Symptom:
    sizes, inputs = _sizes(probe), f"query {tuple(probe['query'].shape)}, key {tuple(probe['key'].shape)} and " \
                                   f"value {tuple(probe['value'].shape)}"
    for name, g, w in (("weights", got[1], want[1]), ("output", got[0], want[0])):
        symptom = describe(g, w, what=f"For {inputs}, your {name}", sizes=sizes)
        if symptom.kind == "shape":
            return symptom
    return Symptom("shape", f"For {inputs}, your shapes are wrong.")


def check_attention_values(fn: AttentionFn, seed: int | None = None) -> None:
    """Without masks, weights = softmax(QK^T / sqrt(d_k)) and output = weights @ V, for 3- and 4-dimensional inputs."""
    seed = seed_or_fresh(seed)
    probes = VALUES.probes(seed)
    outputs = [attend(fn, probe, seed) for probe in probes]
    VALUES.judge(outputs, probes, seed=seed, describe=_describe)
    print("✓ weights and output match softmax(QK^T / sqrt(d_k)) V")


def _judge_mask(fn: AttentionFn, seed: int, catalogue_, mask_name: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Run the learner with and without the mask and judge the masked weights against their own unmasked ones."""
    probe = dict(catalogue_.probes(seed)[0])
    q, k, v = probe["query"], probe["key"], probe["value"]
    unmasked = attend(fn, dict(query=q, key=k, value=v), seed)[1]
    out, weights = attend(fn, probe, seed)
    probe["unmasked"] = unmasked
    if unmasked.shape != probe["forbidden"].shape:
        raise catalogue_.symptom(describe(unmasked, probe["forbidden"].float(), what="Without a mask, your weights",
                                          sizes=_sizes(probe)), seed)
    catalogue_.judge([weights], [probe], seed=seed, describe=_describe_masked, context=f"With {mask_name},")
    return probe, out, weights


def check_padding_mask(fn: AttentionFn, seed: int | None = None) -> None:
    """Padding keys get weight 0 (to within 1e-6) and every row still sums to 1, judged from your own unmasked
    weights (so a mistake in the scores costs nothing here); padding changes nothing at real positions."""
    seed = seed_or_fresh(seed)
    probe, out, _ = _judge_mask(fn, seed, PADDING, "key_padding_mask")
    q, k, v = probe["query"], probe["key"], probe["value"]
    for b, n in enumerate((7, 4, 2)):
        alone, _ = attend(fn, dict(query=q[b:b + 1], key=k[b:b + 1, :n], value=v[b:b + 1, :n]), seed)
        if not torch.allclose(out[b:b + 1], alone, atol=1e-4):
            raise PADDING.symptom(Symptom("leak", f"Your weights are right, but padding changes the output of batch "
                                                  f"item {b}: with its {7 - n} padding keys masked it should equal the "
                                                  f"output computed on its {n} real keys alone."), seed)
    print("✓ padding gets no attention and changes nothing at real positions")


def check_causal_mask(fn: AttentionFn, seed: int | None = None) -> None:
    """No query gives weight to a later key and rows still sum to 1 (judged from your own unmasked weights), and
    changing the future changes nothing before it."""
    seed = seed_or_fresh(seed)
    probe, out, _ = _judge_mask(fn, seed, CAUSAL, "a causal attn_mask")
    q, k, v = probe["query"], probe["key"], probe["value"]
    k2, v2 = k.clone(), v.clone()
    k2[:, 3:] += torch.randn(2, 3, k.size(-1), generator=generator(seed + 1))
    v2[:, 3:] += 10.0
    out2, _ = attend(fn, dict(query=q, key=k2, value=v2, attn_mask=probe["attn_mask"]), seed)
    if not torch.allclose(out2[:, :3], out[:, :3], atol=1e-4):
        raise CAUSAL.symptom(Symptom("leak", "Your weights are right, but changing keys and values at positions 3-5 "
                                             "changed your outputs at positions 0-2: information leaks from the "
                                             "future."), seed)
    print("✓ the causal mask hides the future")


def check_attention_matches_reference(fn: AttentionFn, seed: int | None = None) -> None:
    """Causal and padding masks together (and each alone), against coursekit's reference, on fresh random inputs."""
    seed = seed_or_fresh(seed)
    probes = BOTH.probes(seed)
    outputs = [attend(fn, probe, seed) for probe in probes]

    def other_tests() -> str:
        verdicts = [f"{name} (Test {n}) {'passes' if quietly_passes(check, fn, seed) else 'fails'}"
                    for name, n, check in (("check_padding_mask", 3, check_padding_mask),
                                           ("check_causal_mask", 4, check_causal_mask))]
        return f"With this seed, {verdicts[0]} and {verdicts[1]}."

    BOTH.judge(outputs, probes, seed=seed, describe=_describe, then=other_tests)
    print("✓ matches coursekit with causal and padding masks together")

