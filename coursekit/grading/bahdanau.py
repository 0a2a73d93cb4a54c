"""Checks for the *Bahdanau attention* notebook (``solutions/bahdanau``): the masked softmax, the additive
score, the context vector, one decoder step, and a date translator trained with the learner's attention.

Shape legend: B batch, T queries (decoder steps), S keys (source positions), Dq query size (decoder state),
Dk key size (encoder annotation), Dv value size, h hidden size of the score. Every check's sizes are all
different (see the ``_probes`` functions), so that a transposed or half-squeezed result shows as itself.

The learner's ``AdditiveAttention`` keeps the parameter names of :class:`coursekit.attention.AdditiveAttention`
(``W_q``, ``W_k``, ``v``), so every check gives it the reference's weights and compares outputs. The context and
single-step checks start from the learner's OWN scores, so a mistake in the score costs only its test.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from coursekit import attention as _reference
from coursekit.grading.core import (Reference, ShortcutPolicy, ShortcutUsed, build_module, expect_pair, expect_tensor,
                                    fused_attention, generator, held_out_exact_match, invoke, register_task,
                                    seed_or_fresh, seeded_module)
from coursekit.grading.diagnosis import (Mutant, Symptom, catalogue, describe, quietly_passes, rows_sum,
                                         symptom_failure)
from coursekit.masks import padding_mask

_POLICY = ShortcutPolicy(
    (Reference("coursekit.attention", "coursekit.attention"),), fused_attention(),
    instead="the layers you were given (self.W_q, self.W_k, self.v) and basic tensor operations "
            "(torch.tanh, softmax, masked_fill, matmul)",
)
SOFTMAX_TASK = register_task("the masked softmax", _POLICY, code="softmax")
ADDITIVE_TASK = register_task("additive (Bahdanau) attention", _POLICY, code="additive")

DQ, DK, DV, HIDDEN = 6, 10, 7, 8


# ---------------------------------------------------------------------------------------------------
# Part 1: the masked softmax
# ---------------------------------------------------------------------------------------------------


def softmax_variant(scores: torch.Tensor, key_padding_mask: torch.Tensor | None = None, *, dim: int = -1,
                    mask: str = "-inf", kind: str = "softmax", **_: Any) -> torch.Tensor:
    """The masked softmax with (at most) one planted mistake; the defaults give the reference.

    ``mask``: "-inf" (right), "ignored", "inverted", "0" (filled with 0), "added" (the bool mask added to the
    scores), "after softmax" (weights zeroed after a plain softmax). ``kind``: "softmax", "log" or "sigmoid".
    """
    if key_padding_mask is not None and mask != "ignored":
        forbidden = key_padding_mask[:, None, :]  # (B, 1, S) over every query
        forbidden = ~forbidden if mask == "inverted" else forbidden
        if mask in ("-inf", "inverted"):
            scores = scores.masked_fill(forbidden, float("-inf"))
        elif mask == "0":
            scores = scores.masked_fill(forbidden, 0.0)
        elif mask == "added":
            scores = scores + forbidden.float()
    weights = {"softmax": lambda s: torch.softmax(s, dim=dim), "log": lambda s: torch.log_softmax(s, dim=dim),
               "sigmoid": torch.sigmoid}[kind](scores)
    if key_padding_mask is not None and mask == "after softmax":
        weights = weights.masked_fill(key_padding_mask[:, None, :], 0.0)
    return weights


def _softmax_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda scores, key_padding_mask=None, **_: softmax_variant(scores, key_padding_mask,
                                                                                          **mistake))


_MASK_SENTENCES = {
    "ignored": "With key_padding_mask your weights are the plain softmax of the scores: the mask is never applied.",
    "inverted": "Your mask works the other way round: the weight goes to the PADDING keys. key_padding_mask is True "
                "at padding (torch.nn's convention), so fill the scores where it is True, not where it is False.",
    "after softmax": "Your weights are the plain softmax with the padding entries set to 0 afterwards, so the rows no "
                     "longer sum to 1: fill the scores with float('-inf') BEFORE the softmax.",
    "0": "Your padding scores were set to 0 (or near it) before the softmax, so padding keys still get weight: fill "
         "them with float('-inf').",
    "added": "Your scores had the bool mask ADDED to them (True counts as +1), which favours the padding keys: fill "
             "the padding scores with float('-inf') (masked_fill).",
}
_MASK_CODES = {"ignored": "mask.ignored", "inverted": "mask.inverted", "after softmax": "mask.after-softmax",
               "0": "mask.zero-filled", "added": "mask.added"}
_SOFTMAX_MUTANTS = (
    _softmax_mutant("softmax.over-queries", "Your weights are a softmax over the queries (dim -2, or dim 1 here): each "
                    "column sums to 1 instead of each row. Take it over the keys, the last dim: "
                    "torch.softmax(scores, dim=-1).", dim=-2),
    _softmax_mutant("softmax.over-batch", "Your softmax runs over dim 0, the batch: take it over the keys, dim=-1.",
                    dim=0),
    _softmax_mutant("softmax.log-softmax", "Your weights are log_softmax of the scores: use torch.softmax, whose rows "
                    "are probabilities that sum to 1.", kind="log"),
    _softmax_mutant("softmax.sigmoid", "Your weights are sigmoid(scores), each squashed on its own: a softmax over the "
                    "keys makes them compete, so that each row sums to 1.", kind="sigmoid"),
    *(_softmax_mutant(_MASK_CODES[m], _MASK_SENTENCES[m], mask=m) for m in _MASK_CODES),
)


def _softmax_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (3, 4, 6) scores of spread 3; without a mask, then with lengths 6, 3, 1."""
    scores = 3 * torch.randn(3, 4, 6, generator=generator(seed))
    return [dict(scores=scores), dict(scores=scores, key_padding_mask=padding_mask(torch.tensor([6, 3, 1]), 6))]


# Tight: padding must get exactly 0 (to within 1e-6), which the notebook promises.
SOFTMAX = catalogue("bahdanau.softmax", "softmax", lambda scores, key_padding_mask=None, **_: softmax_variant(
    scores, key_padding_mask), _SOFTMAX_MUTANTS, _softmax_probes, atol=1e-6, rtol=1e-5)
_AXES = ("batch item", "query", "key")


def _describe_weights(got: Any, want: torch.Tensor, probe: Mapping[str, Any], sizes: Mapping[str, int]) -> Symptom:
    kpm = probe.get("key_padding_mask")
    forbidden = kpm[:, None, :] if kpm is not None else None
    symptom = describe(got, want, what="Your weights", axes=_AXES, sizes=sizes, forbidden=forbidden,
                       reference="the masked softmax over the keys")
    sums = rows_sum(got) if symptom.kind not in ("shape", "return-type", "dtype") else ""
    return Symptom(symptom.kind, f"{symptom.text} In yours, {sums}.") if sums else symptom


def check_masked_softmax(fn: Callable, seed: int | None = None) -> None:
    """Rows are distributions over the keys (the last dim); padding keys get exactly 0; the values match softmax."""
    seed = seed_or_fresh(seed)
    probes = SOFTMAX.probes(seed)
    outputs = []
    for probe in probes:
        scores, kpm = probe["scores"], probe.get("key_padding_mask")
        result = invoke(fn, SOFTMAX_TASK, (scores,) + ((kpm,) if kpm is not None else ()), {},
                        name="Your masked_softmax", params=("scores", "key_padding_mask"),
                        expect=f"weights of shape (B, T, S) = {tuple(scores.shape)}", seed=seed)
        outputs.append(expect_tensor(result, "masked_softmax(...)", SOFTMAX_TASK))
    SOFTMAX.judge(outputs, probes, seed=seed,
                  describe=lambda got, want, probe: _describe_weights(got, want, probe, {"B": 3, "T": 4, "S": 6}))
    print("✓ the masked softmax: rows sum to 1 and padding gets exactly 0")


# ---------------------------------------------------------------------------------------------------
# Part 2: the additive score
# ---------------------------------------------------------------------------------------------------


def _reference_module(seed: int) -> _reference.AdditiveAttention:
    return seeded_module(lambda: _reference.AdditiveAttention(DQ, DK, HIDDEN), seed)


def _build(cls: Any, seed: int) -> Any:
    return build_module(cls, ADDITIVE_TASK, _reference_module(seed), DQ, DK, HIDDEN, name="AdditiveAttention")


def score_variant(query: torch.Tensor, key: torch.Tensor, state: Mapping[str, torch.Tensor], *, act: str = "tanh",
                  squeeze: bool = True, layout: str = "BTS", **_: Any) -> torch.Tensor:
    """v^T act(W_q q + W_k k) with (at most) one planted mistake, from the weights ``state``; defaults: the reference.

    ``act``: "tanh", "none", "relu", "outside" (tanh after v), "no v" (tanh, then a sum instead of v).
    ``layout``: "BTS" or "BST" (queries and keys unsqueezed the other way round).
    """
    q = query @ state["W_q.weight"].T  # (B, T, h)
    k = key @ state["W_k.weight"].T + state["W_k.bias"]  # (B, S, h)
    hidden = q.unsqueeze(2) + k.unsqueeze(1) if layout == "BTS" else q.unsqueeze(1) + k.unsqueeze(2)
    v = state["v.weight"].T  # (h, 1)
    if act == "outside":
        out = torch.tanh(hidden @ v)
    elif act == "no v":
        out = torch.tanh(hidden).sum(-1, keepdim=True)
    else:
        out = {"tanh": torch.tanh, "none": lambda h: h, "relu": torch.relu}[act](hidden) @ v
    return out.squeeze(-1) if squeeze else out


def _score_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda query, key, state, **_: score_variant(query, key, state, **mistake))


_SCORE_MUTANTS = (
    _score_mutant("additive.no-tanh", "Your scores equal v^T (W_q q + W_k k): you left out the tanh. Without it the "
                  "query's part of the score is the same for every key and cancels in the softmax: "
                  "self.v(torch.tanh(W_q q + W_k k)).", act="none"),
    _score_mutant("additive.tanh-outside", "Your scores equal tanh(v^T (W_q q + W_k k)): the tanh is applied after v. "
                  "It belongs inside, on the hidden layer: self.v(torch.tanh(W_q q + W_k k)).", act="outside"),
    _score_mutant("additive.relu", "Your scores equal v^T relu(W_q q + W_k k): Bahdanau's score uses tanh, "
                  "self.v(torch.tanh(...)).", act="relu"),
    _score_mutant("additive.no-v", "Your scores equal the SUM of tanh(W_q q + W_k k) over the hidden units: apply "
                  "self.v, the learned vector that weighs them, instead of summing.", act="no v"),
    _score_mutant("additive.not-squeezed", "Your scores are right but keep v's output dim, (B, T, S, 1): squeeze it, "
                  ".squeeze(-1), to get (B, T, S).", squeeze=False),
    _score_mutant("additive.transposed", "Your scores are (B, S, T), the transpose of (B, T, S): give the projected "
                  "queries a key dim, W_q(query).unsqueeze(2) -> (B, T, 1, h), and the projected keys a query dim, "
                  "W_k(key).unsqueeze(1) -> (B, 1, S, h).", layout="BST"),
)


def _score_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (2, 3, 5), Dq = 6, Dk = 10, h = 8, and the reference's weights from the seed."""
    g = generator(seed)
    state = {k: v.detach().clone() for k, v in _reference_module(seed).state_dict().items()}
    return [dict(query=torch.randn(2, 3, DQ, generator=g), key=torch.randn(2, 5, DK, generator=g), state=state)]


SCORES = catalogue("bahdanau.scores", "additive", lambda query, key, state, **_: score_variant(query, key, state),
                   _SCORE_MUTANTS, _score_probes)


def check_additive_scores(cls: Any, seed: int | None = None) -> None:
    """``score(query, key)`` is v^T tanh(W_q q_t + W_k k_s) for every pair (t, s): shape (B, T, S)."""
    seed = seed_or_fresh(seed)
    module = _build(cls, seed)
    probe = SCORES.probes(seed)[0]
    query, key = probe["query"], probe["key"]
    got = invoke(module.score, ADDITIVE_TASK, (query, key), name="Your score", params=("query", "key"),
                 expect="scores of shape (B, T, S) = (2, 3, 5)", seed=seed)
    got = expect_tensor(got, "score(query, key)", ADDITIVE_TASK)
    sizes = {"B": 2, "T": 3, "S": 5, "Dq": DQ, "Dk": DK, "h": HIDDEN}
    SCORES.judge([got], [probe], seed=seed, describe=lambda g, w, p: describe(
        g, w, what="Your scores", axes=_AXES, sizes=sizes, reference="v^T tanh(W_q q_t + W_k k_s)"))
    print("✓ additive scores: v^T tanh(W_q q + W_k k) for every query and key")


# ---------------------------------------------------------------------------------------------------
# Part 3: the context vector, from the learner's own scores
# ---------------------------------------------------------------------------------------------------


def context_variant(scores: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                    key_padding_mask: torch.Tensor | None = None, *, average: str = "value", returned: str = "weights",
                    **softmax: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights @ value, weights) from the scores, with (at most) one planted mistake; defaults: the reference."""
    weights = scores if softmax.get("kind") == "none" else softmax_variant(scores, key_padding_mask, **softmax)
    context = weights @ (key if average == "key" else value)
    return context, weights.transpose(-2, -1) if returned == "transposed" else weights


def _context_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda scores, key, value, key_padding_mask=None, **_: context_variant(
        scores, key, value, key_padding_mask, **mistake))


_CONTEXT_MUTANTS = (
    _context_mutant("additive.averages-keys", "Your context vectors average the KEYS: the context is the weighted "
                    "average of the values, weights @ value, shape (B, T, Dv).", average="key"),
    _context_mutant("additive.no-softmax", "Your weights are your scores themselves: turn them into weights with your "
                    "masked_softmax.", kind="none"),
    _context_mutant("additive.softmax-over-queries", "Your weights are a softmax over the queries (dim -2): take it "
                    "over the keys, the last dim, as masked_softmax does.", dim=-2),
    *(_context_mutant(_MASK_CODES[m], _MASK_SENTENCES[m], mask=m) for m in _MASK_CODES),
)


def _context_probes(seed: int) -> list[dict[str, Any]]:
    """(B, T, S) = (3, 4, 5), Dq = 6, Dk = 10, Dv = 7; without a mask, then with lengths 5, 4, 2. ``scores`` are the
    reference's; the check puts the learner's own there."""
    g = generator(seed)
    query, key, value = (torch.randn(3, 4, DQ, generator=g), torch.randn(3, 5, DK, generator=g),
                         torch.randn(3, 5, DV, generator=g))
    state = {k: v.detach().clone() for k, v in _reference_module(seed).state_dict().items()}
    scores = score_variant(query, key, state)
    kpm = padding_mask(torch.tensor([5, 4, 2]), 5)
    return [dict(query=query, key=key, value=value, scores=scores),
            dict(query=query, key=key, value=value, scores=scores, key_padding_mask=kpm)]


CONTEXT = catalogue("bahdanau.context", "additive", lambda scores, key, value, key_padding_mask=None, **_:
                    context_variant(scores, key, value, key_padding_mask), _CONTEXT_MUTANTS, _context_probes,
                    atol=1e-5, rtol=1e-5)


def _attend(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, kpm: torch.Tensor | None,
            seed: int, step: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    B, S = key.shape[:2]
    name = (f"Your AdditiveAttention, given one decoder step (a query of shape (B, Dq) = {tuple(query.shape)}),"
            if step else "Your AdditiveAttention")
    expect = (f"(context, weights) of shapes (B, Dv) = {(B, value.size(-1))} and (B, S) = {(B, S)}" if step else
              f"(context, weights) of shapes (B, T, Dv) = {(B, query.size(1), value.size(-1))} and (B, T, S) = "
              f"{(B, query.size(1), S)}")
    result = invoke(module, ADDITIVE_TASK, (query, key, value), {"key_padding_mask": kpm}, name=name,
                    params=("query", "key", "value"), expect=expect, seed=seed)
    return expect_pair(result, ADDITIVE_TASK, "Your forward")


def check_additive_attention(cls: Any, seed: int | None = None) -> None:
    """``forward(query, key, value, key_padding_mask)``: weights = masked softmax of *your* scores, output =
    weights @ value. Checked from your own ``score``, so a mistake there costs only that part."""
    seed = seed_or_fresh(seed)
    module = _build(cls, seed)
    probes = CONTEXT.probes(seed)
    query, key = probes[0]["query"], probes[0]["key"]
    scores = invoke(module.score, ADDITIVE_TASK, (query, key), name="Your score", params=("query", "key"), seed=seed)
    if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (3, 4, 5):
        passes = quietly_passes(check_additive_scores, cls, seed)
        raise symptom_failure("additive", Symptom("shape", f"This test starts from your own scores, but your score "
                                                            f"returns {_shape(scores)} instead of (B, T, S) = (3, 4, 5) "
                                                            f"(Test 2 {'passes' if passes else 'fails'} with this seed)."),
                              seed)
    outputs = []
    for probe in probes:
        probe["scores"] = scores
        outputs.append(_attend(module, probe["query"], probe["key"], probe["value"], probe.get("key_padding_mask"), seed))
    sizes = {"B": 3, "T": 4, "S": 5, "Dk": DK, "Dv": DV}

    def symptom(got, want, probe):
        if not torch.allclose(got[1], want[1], atol=1e-4, equal_nan=True) or got[1].shape != want[1].shape:
            return _describe_weights(got[1], want[1], probe, sizes)
        found = describe(got[0], want[0], what="Your context vectors", axes=("batch item", "query", "feature"),
                         sizes=sizes, reference="weights @ value")
        return Symptom(found.kind, f"Your weights are right. {found.text}")

    CONTEXT.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ context vectors: the masked softmax of your scores, times the values")


def _shape(x: Any) -> str:
    return f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else f"a {type(x).__name__}"


# ---------------------------------------------------------------------------------------------------
# Part 3b: one decoder step
# ---------------------------------------------------------------------------------------------------


def _step_mutant(code: str, says: str, squeeze: str) -> Mutant:
    def output(full: tuple[torch.Tensor, torch.Tensor], **_):
        context, weights = full
        return (context[:, 0] if squeeze in ("both", "context") else context,
                weights[:, 0] if squeeze in ("both", "weights") else weights)
    return Mutant(code, says, output)


_STEP_MUTANTS = (
    _step_mutant("additive.step-not-squeezed", "For one query per sequence, (B, Dq), your forward returns the context "
                 "as (B, 1, Dv) and the weights as (B, 1, S): squeeze the T = 1 dim you added, .squeeze(1).", "none"),
    _step_mutant("additive.step-weights-not-squeezed", "For one query per sequence your context is right, (B, Dv), but "
                 "the weights stay (B, 1, S): squeeze them too, weights.squeeze(1).", "context"),
    _step_mutant("additive.step-context-not-squeezed", "For one query per sequence your weights are right, (B, S), but "
                 "the context stays (B, 1, Dv): squeeze it too, context.squeeze(1).", "weights"),
)


def _step_probes(seed: int) -> list[dict[str, Any]]:
    """B = 3, S = 5, Dq = 6, Dk = 10, Dv = 7. ``full`` is the reference's (B, 1, ...) result; the check puts there
    what the learner's own forward gives for the same query as (B, 1, Dq)."""
    g = generator(seed)
    query, key, value = (torch.randn(3, DQ, generator=g), torch.randn(3, 5, DK, generator=g),
                         torch.randn(3, 5, DV, generator=g))
    state = {k: v.detach().clone() for k, v in _reference_module(seed).state_dict().items()}
    full = context_variant(score_variant(query[:, None], key, state), key, value)
    return [dict(query=query, key=key, value=value, full=full)]


STEP = catalogue("bahdanau.step", "additive", lambda full, **_: (full[0][:, 0], full[1][:, 0]), _STEP_MUTANTS,
                 _step_probes)


def _describe_step(got: tuple[torch.Tensor, torch.Tensor], want: tuple[torch.Tensor, torch.Tensor],
                   probe: Mapping[str, Any]) -> Symptom:
    sizes = {"B": 3, "S": 5, "Dv": DV}
    for name, mine, expected in (("weights", got[1], want[1]), ("context", got[0], want[0])):
        if mine.shape != expected.shape or not torch.allclose(mine, expected, atol=1e-4, equal_nan=True):
            return describe(mine, expected, what=f"For one step, your {name}", sizes=sizes,
                            reference=f"your forward's {name} for the same query as (B, 1, Dq)")
    return Symptom("everywhere", "Your context and weights differ from your forward's for the same query.")


def check_single_step(cls: Any, seed: int | None = None) -> None:
    """A decoder step asks one query per sequence: query (B, Dq) -> context (B, Dv) and weights (B, S), the same
    numbers as your own forward gives for that query as (B, 1, Dq), so a mistake elsewhere costs nothing here."""
    seed = seed_or_fresh(seed)
    module = _build(cls, seed)
    probe = STEP.probes(seed)[0]
    query, key, value = probe["query"], probe["key"], probe["value"]
    full = _attend(module, query[:, None, :], key, value, None, seed)
    if full[0].dim() != 3 or tuple(full[0].shape[:2]) != (3, 1) or tuple(full[1].shape) != (3, 1, 5):
        passes = quietly_passes(check_additive_attention, cls, seed)
        raise symptom_failure("additive", Symptom(
            "shape", f"This test compares one step with your own forward for the same query as (B, 1, Dq) = (3, 1, 6); "
                     f"that forward returns {_shape(full[0])} and {_shape(full[1])} instead of (B, 1, Dv) and (B, 1, S) "
                     f"(Test 3 {'passes' if passes else 'fails'} with this seed)."), seed)
    probe["full"] = full
    got = _attend(module, query, key, value, None, seed, step=True)
    STEP.judge([got], [probe], seed=seed, describe=_describe_step)
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
        score = held_out_exact_match(model, task, ADDITIVE_TASK, "dates", name="Your trained model")
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
