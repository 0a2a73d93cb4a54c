"""Checks for the *GPT* notebook (``solutions/gpt``): causal self-attention with a key/value cache, choosing the next
token (greedy, temperature, top-k), and a generation loop that runs the prompt once and then one token at a time
through the cache (Radford et al., 2018; 2019).

Shape legend: B batch, T new tokens, P cached tokens, S = P + T keys, D model dim, H heads, Dh = D / H, V vocabulary.

The attention checks use (B, D, H, Dh) = (2, 12, 3, 4) and T, P from {1, 5, 6, 7}: no two sizes of a probe equal, so
a transposed or mis-split result shows as itself. The learner's module gets the reference's weights through
``load_state_dict``; the reference is computed here with plain tensor operations (:func:`attention_variant`), and
:class:`coursekit.gpt.CausalSelfAttention` agrees with it (tests/test_grading_gpt.py).

Sampling is random, so :func:`check_next_token` draws many samples from fixed scores and tests the distribution
against softmax(z / temperature), restricted to the top k, within tolerances several standard deviations wide.
The generation loop runs on a course GPT built in the learner's process by the notebook's ``tiny_gpt`` (which
records how many tokens each call reads), with weights from the check; greedy decoding must give exactly the
tokens of :func:`coursekit.gpt.generate`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, expect_tensor, fused_attention,
                                    generator, invoke, register_task, seed_or_fresh, where)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, quietly_passes, symptom_failure

_ATTENTION_POLICY = ShortcutPolicy(
    (Reference("coursekit.gpt", "coursekit.gpt"), Reference("coursekit.attention", "coursekit.attention"),
     Reference("torch.nn.MultiheadAttention", "torch.nn.modules.activation", ("MultiheadAttention",))),
    fused_attention(),
    instead="the projections you were given and basic tensor operations (matmul, softmax, masked_fill, cat)",
)
# The loop runs the course's GPT (whose forward uses coursekit.attention and fused attention): only the course's own
# sampling and generation are off limits.
_LOOP_POLICY = ShortcutPolicy(
    (Reference("coursekit.gpt's generation", "coursekit.gpt", ("generate", "stream", "next_token")),
     Reference("transformers' generation", "transformers.generation")),
    {}, instead="the model's forward, torch.softmax, torch.topk and torch.multinomial",
)
ATTENTION_TASK = register_task("causal self-attention", _ATTENTION_POLICY, code="causal-attn")
CACHE_TASK = register_task("the key/value cache", _ATTENTION_POLICY, code="kv-cache")
SAMPLING_TASK = register_task("choosing the next token", _LOOP_POLICY, code="sampling")
LOOP_TASK = register_task("the generation loop", _LOOP_POLICY, code="generate")

B, D, H = 2, 12, 3
DH = D // H


def _fail(code: str, text: str, seed: int | None = None) -> CheckFailed:
    return CheckFailed(f"{text} {where(seed)}" if seed is not None else text, code=code)


# ---------------------------------------------------------------------------------------------------
# Part 1: causal self-attention, with and without a cache
# ---------------------------------------------------------------------------------------------------


def _reference_state(seed: int) -> dict[str, torch.Tensor]:
    """q_proj, k_proj, v_proj, out_proj (weights and biases) of a D x D attention, drawn from ``seed``."""
    g = generator(seed + 1)
    state = {}
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        state[f"{name}.weight"] = torch.randn(D, D, generator=g) / math.sqrt(D)
        state[f"{name}.bias"] = 0.1 * torch.randn(D, generator=g)
    return state


def attention_variant(state: Mapping[str, torch.Tensor], x: torch.Tensor, past: tuple | None = None, *,
                      mask: str = "offset", scale: str = "head", softmax_dim: int = -1, split: str = "view",
                      merge: str = "transpose", out_proj: bool = True, cache: str = "append",
                      returned: str = "all", **_: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Causal self-attention of ``x`` (B, T, D) continuing ``past`` = (k, v) (B, H, P, Dh), with (at most) one planted
    mistake; the defaults give the reference. Returns (output (B, T, D), (k, v) of the P + T tokens)."""
    b, T, _ = x.shape

    def project(name: str) -> torch.Tensor:
        y = F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])  # (B, T, D)
        if split == "reshape":
            return y.reshape(b, H, T, DH)  # the classic slip: heads cut across positions
        return y.view(b, T, H, DH).transpose(1, 2)  # (B, H, T, Dh)

    q, k, v = project("q_proj"), project("k_proj"), project("v_proj")
    new_k, new_v = k, v
    if past is not None and cache != "ignored":
        k = torch.cat([k, past[0]] if cache == "prepended" else [past[0], k], dim=2)  # (B, H, S, Dh)
        v = torch.cat([v, past[1]] if cache == "prepended" else [past[1], v], dim=2)
    S = k.size(2)
    factor = {"head": 1 / math.sqrt(DH), "model": 1 / math.sqrt(D), "none": 1.0}[scale]
    scores = q @ k.transpose(-2, -1) * factor  # (B, H, T, S)
    above = {"offset": S - T + 1, "square": 1, "self": S - T, "none": None, "inverted": S - T + 1}[mask]
    if above is not None:
        future = torch.ones(T, S, dtype=torch.bool).triu(above)  # (T, S): query t sits at position S - T + t
        scores = scores.masked_fill(~future if mask == "inverted" else future, float("-inf"))
    weights = scores.softmax(dim=softmax_dim)
    heads = weights @ v  # (B, H, T, Dh)
    merged = heads.reshape(b, T, D) if merge == "reshape" else heads.transpose(1, 2).reshape(b, T, D)
    out = F.linear(merged, state["out_proj.weight"], state["out_proj.bias"]) if out_proj else merged
    kept = (new_k, new_v) if returned == "new" else (k, v)
    return out, kept


def _attention_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda state, x, past=None, **_: attention_variant(state, x, past, **mistake))


_ATTENTION_MUTANTS = (
    _attention_mutant("causal-attn.no-mask", "Every position attends to the whole sequence, later tokens included: "
                      "hide the future, the keys after each query (True above the diagonal), with masked_fill "
                      "before the softmax.", mask="none"),
    _attention_mutant("causal-attn.mask-inverted", "Your mask is inverted: each position attends only to the tokens "
                      "AFTER it. Hide the keys above the diagonal, torch.triu(..., diagonal=1), and keep the ones on "
                      "and below it.", mask="inverted"),
    _attention_mutant("causal-attn.unscaled", "You did not scale the scores: divide q @ k^T by sqrt(head_dim).",
                      scale="none"),
    _attention_mutant("causal-attn.scaled-by-d-model", "You scaled the scores by 1 / sqrt(d_model); each head works in "
                      "head_dim = d_model / nhead dims: divide by sqrt(head_dim).", scale="model"),
    _attention_mutant("causal-attn.softmax-over-queries", "Your softmax runs over the queries (dim=-2): each query's "
                      "weights over the keys must sum to 1, softmax(dim=-1).", softmax_dim=-2),
    _attention_mutant("causal-attn.split-by-reshape", "Your heads are split in the wrong order: (B, T, D) -> "
                      ".view(B, T, H, Dh) -> .transpose(1, 2), not a reshape straight to (B, H, T, Dh), which mixes "
                      "positions into the heads.", split="reshape"),
    _attention_mutant("causal-attn.merge-by-reshape", "Your heads are merged in the wrong order: (B, H, T, Dh) must "
                      "become (B, T, H, Dh) (.transpose(1, 2)) before the reshape to (B, T, D).", merge="reshape"),
    _attention_mutant("causal-attn.no-out-proj", "You forgot the output projection: return self.out_proj(merged "
                      "heads).", out_proj=False),
)
# Only with a cache (P > 0) are these wrong: without one they give the right answer.
_CACHE_MUTANTS = (
    _attention_mutant("kv-cache.mask-not-offset", "With a cache, your new queries cannot see most of the past: the "
                      "mask must be offset by the P cached tokens. The T new queries are the LAST T of the S = P + T "
                      "positions, so query t may see keys 0 .. P + t: torch.triu(torch.ones(T, S), diagonal=S - T + 1).",
                      mask="square"),
    _attention_mutant("kv-cache.past-ignored", "Your new tokens attend to themselves only: the cached keys and values "
                      "never join them. Concatenate past k and v in front of the new ones, along the positions "
                      "(dim=2), before the scores.", cache="ignored"),
    _attention_mutant("kv-cache.past-after", "You put the cached keys and values AFTER the new ones: torch.cat([past_k, "
                      "k], dim=2), the past first, in the order the tokens came.", cache="prepended"),
    _attention_mutant("kv-cache.returns-new-only", "Your output is right, but the cache you return holds the new "
                      "tokens' keys and values only: return all P + T of them (the concatenated k and v), or the next "
                      "step forgets the past.", returned="new"),
)


def _attention_probes(seed: int, cached: bool) -> list[dict[str, Any]]:
    """Without a cache: x of T = 5, then 7 tokens. With one: P = 6 cached then T = 5 new, and P = 7 then T = 1 (the
    generation step); ``past`` is what the reference returns for the first P tokens."""
    g = generator(seed)
    state = _reference_state(seed)
    probes = []
    for P, T in (((6, 5), (7, 1)) if cached else ((0, 5), (0, 7))):
        x = torch.randn(B, P + T, D, generator=g)
        past = attention_variant(state, x[:, :P])[1] if P else None
        probes.append(dict(state=state, x=x[:, P:], past=past, prefix=x[:, :P], P=P, T=T))
    return probes


def _reference_attention(state, x, past=None, **_):
    return attention_variant(state, x, past)


ATTENTION = catalogue("gpt.attention", "causal-attn", _reference_attention, _ATTENTION_MUTANTS,
                      lambda seed: _attention_probes(seed, cached=False))
CACHED = catalogue("gpt.cached-attention", "kv-cache", _reference_attention, _ATTENTION_MUTANTS + _CACHE_MUTANTS,
                   lambda seed: _attention_probes(seed, cached=True))


def _run_attention(module: Any, task: str, probe: Mapping[str, Any], seed: int, past: Any) -> tuple:
    P, T = probe["P"], probe["T"]
    result = invoke(module, task, (probe["x"],), {"past": past}, name="Your CausalSelfAttention", params=("x",),
                    expect=f"(output, (k, v)): output (B, T, D) = {(B, T, D)}, k and v (B, H, P + T, Dh) = "
                           f"{(B, H, P + T, DH)}", seed=seed)
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], (tuple, list))
            and len(result[1]) == 2 and all(isinstance(t, torch.Tensor) for t in (result[0], *result[1]))):
        raise _fail(f"{'kv-cache' if task == CACHE_TASK else 'causal-attn'}.symptom.return-type",
                    "forward must return a tuple (output, (k, v)): the output tensor and a pair of tensors, the keys "
                    f"and values of all {P + T} tokens.", seed)
    return result[0], tuple(result[1])


def _attention_symptom(what: str):
    def symptom(got, want, probe):
        P, T = probe["P"], probe["T"]
        sizes = {"B": B, "T": T, "D": D, "H": H, "Dh": DH}
        if P:
            sizes["S"] = P + T
        if got[0].shape != want[0].shape or not torch.allclose(got[0], want[0], atol=1e-4, rtol=1e-4):
            found = describe(got[0], want[0], what="Your output", axes=("batch item", "position", "feature"),
                             sizes=sizes)
        else:
            names = ("keys", "values")
            i = next(i for i in range(2) if got[1][i].shape != want[1][i].shape
                     or not torch.allclose(got[1][i], want[1][i], atol=1e-4, rtol=1e-4))
            found = describe(got[1][i], want[1][i], what=f"The {names[i]} you return",
                             axes=("batch item", "head", "position", "feature"), sizes={**sizes, "S": P + T})
            found = Symptom(found.kind, f"{found.text} (Your output is right.)")
        return Symptom(found.kind, f"{what}: {found.text[0].lower()}{found.text[1:]}")
    return symptom


def check_causal_attention(cls: Any, seed: int | None = None) -> None:
    """``CausalSelfAttention(d_model, nhead)`` on (B, T, D) inputs without a cache: the same output as causal
    multi-head attention with the reference's weights, and (k, v) of shape (B, H, T, Dh)."""
    seed = seed_or_fresh(seed)
    module = build_module(cls, ATTENTION_TASK, _reference_state(seed), D, H, name="CausalSelfAttention")
    probes = ATTENTION.probes(seed)
    outputs = [_run_attention(module, ATTENTION_TASK, p, seed, None) for p in probes]
    ATTENTION.judge(outputs, probes, seed=seed, describe=_attention_symptom(f"Without a cache (B = {B}, T = 5 and 7)"))
    print(f"✓ causal self-attention: {H} heads, no position sees a later one")


def check_cached_attention(cls: Any, seed: int | None = None) -> None:
    """With ``past`` = the (k, v) of P earlier tokens, T new tokens give the last T rows of the full sequence's output,
    and the returned cache holds all P + T keys and values."""
    seed = seed_or_fresh(seed)
    module = build_module(cls, CACHE_TASK, _reference_state(seed), D, H, name="CausalSelfAttention")
    probes = CACHED.probes(seed)
    outputs = [_run_attention(module, CACHE_TASK, p, seed, p["past"]) for p in probes]

    def first_test() -> str:
        passes = quietly_passes(check_causal_attention, cls, seed)
        return (f"Test 1 (no cache) {'passes' if passes else 'fails'} with this seed"
                f"{': look at what changes when past is given.' if passes else '.'}")

    CACHED.judge(outputs, probes, seed=seed, then=first_test,
                 describe=_attention_symptom("With a cache (P = 6 then T = 5; P = 7 then T = 1)"))
    print("✓ with a cache, the new tokens see the past and the cache grows to P + T")


# ---------------------------------------------------------------------------------------------------
# Part 2: choosing the next token
# ---------------------------------------------------------------------------------------------------

V = 7  # few enough classes to measure every probability from a few thousand draws
DRAWS = 10_000
SETTINGS = ((1.0, None), (0.4, None), (2.0, 3))  # (temperature, top_k) of the three samples


def _distribution(z: torch.Tensor, temperature: float, top_k: int | None) -> torch.Tensor:
    z = z.double() / temperature
    if top_k is not None:
        z = z.masked_fill(z < z.topk(top_k).values[-1], float("-inf"))
    return z.softmax(-1)


def _candidates(z: torch.Tensor, temperature: float, top_k: int | None) -> dict[str, tuple[torch.Tensor, str]]:
    """The distribution each realistic sampling mistake draws from, with what to tell the learner."""
    uniform = _distribution(torch.zeros(V), 1.0, None) if top_k is None else _distribution(
        torch.zeros(V).masked_fill(z < z.topk(top_k).values[-1], -1e9), 1.0, None)
    return {
        "sampling.temperature-multiplied": (_distribution(z * temperature * temperature, temperature, top_k),
                                            "You multiplied the logits by the temperature; divide them: "
                                            "softmax(logits / temperature)."),
        "sampling.temperature-ignored": (_distribution(z, 1.0, top_k), "Your samples ignore the temperature: divide "
                                         "the logits by it BEFORE the softmax (dividing the probabilities changes "
                                         "nothing once they are normalised)."),
        "sampling.top-k-ignored": (_distribution(z, temperature, None), "Your samples ignore top_k: set every logit "
                                   "below the k-th largest to -inf before the softmax."),
        "sampling.top-k-one-too-many": (_distribution(z, temperature, top_k + 1 if top_k else None),
                                        "You keep k + 1 tokens: keep the logits >= the k-th largest, "
                                        "logits.topk(k).values[..., -1:], and mask the rest."),
        "sampling.top-k-one-too-few": (_distribution(z, temperature, top_k - 1 if top_k else None),
                                       "You keep only k - 1 tokens: the k-th largest logit itself stays (mask only "
                                       "the logits strictly below it)."),
        "sampling.always-greedy": (F.one_hot(z.argmax(), V).double(), "You always pick the argmax, also when "
                                   "temperature > 0: sample from the distribution, torch.multinomial(probabilities, "
                                   "1, generator=generator)."),
        "sampling.uniform": (uniform, "Your samples are uniform: sample from softmax(logits / temperature), not "
                                      "from torch.randint."),
    }


# Scores chosen (from a grid of spreads and settings) so that the right rule and every mistake give identical
# distributions or ones at least 0.13 apart in total variation, in every setting (tests/test_grading_gpt.py checks);
# each seed shuffles them, which changes no distance.
_BASE_SCORES = (1.95, 1.1333, 0.5167, 0.0, -0.5167, -1.1333, -1.95)


def _tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def _scores(seed: int) -> torch.Tensor:
    """(V,) scores: :data:`_BASE_SCORES` in an order drawn from ``seed``."""
    return torch.tensor(_BASE_SCORES)[torch.randperm(V, generator=generator(seed))]


def _frequencies(tokens: torch.Tensor) -> torch.Tensor:
    return torch.bincount(tokens.flatten().long(), minlength=V).double() / tokens.numel()


def _draw(fn: Callable, z: torch.Tensor, seed: int, draws: int = DRAWS, **options: Any) -> torch.Tensor:
    logits = z.expand(draws, V).clone()
    shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
    result = invoke(fn, SAMPLING_TASK, (logits,), options, name="Your next_token", params=("logits",),
                    expect=f"(B,) = ({draws},) token ids", seed=seed)
    tokens = expect_tensor(result, f"next_token(logits, {shown})", SAMPLING_TASK)
    if tokens.shape != (draws,):
        raise _fail("sampling.symptom.shape", f"next_token(logits, {shown}) must return one token id per row of "
                                              f"logits (B, V) = {(draws, V)}: shape ({draws},); yours has "
                                              f"{tuple(tokens.shape)}.", seed)
    if tokens.is_floating_point() or tokens.dtype == torch.bool or bool(((tokens < 0) | (tokens >= V)).any()):
        raise _fail("sampling.symptom.dtype", f"next_token must return token ids, integers from 0 to V - 1 = {V - 1}; "
                                              f"yours are {tokens.dtype} from {tokens.min().item()} to "
                                              f"{tokens.max().item()}.", seed)
    return tokens


def check_next_token(fn: Callable, seed: int | None = None) -> None:
    """``next_token(logits, temperature, top_k)`` on (B, V) logits: the argmax at temperature 0; otherwise samples
    distributed as softmax(logits / temperature) over the top_k largest (all when None). (Whether it passes its
    ``generator`` on is tested through the loop, :func:`check_generate_sampling`: a generator cannot travel from the
    grader to the learner's process, a seed can.)"""
    seed = seed_or_fresh(seed)
    z = _scores(seed)
    greedy = _draw(fn, z, seed, 50, temperature=0.0)
    if not bool((greedy == z.argmax()).all()):
        raise _fail("sampling.greedy-not-argmax", f"At temperature 0 your next_token must return the argmax of each row "
                                                  f"(token {int(z.argmax())} here); it returned "
                                                  f"{sorted(set(greedy.tolist()))[:5]}.", seed)
    # 10,000 draws: the total variation between the frequencies and the probabilities they come from is about 0.013
    # (sd 0.005), so 0.05 accepts every right answer, and rules 0.13 apart cannot be confused.
    for temperature, top_k in SETTINGS:
        want = _distribution(z, temperature, top_k)
        seen = _frequencies(_draw(fn, z, seed, temperature=temperature, top_k=top_k))
        if _tv(seen, want) <= 0.05:
            continue
        setting = f"temperature={temperature}, top_k={top_k}"
        table = ", ".join(f"{float(s):.2f}" for s in seen)
        expected = ", ".join(f"{float(w):.2f}" for w in want)
        named = [(code, text) for code, (dist, text) in _candidates(z, temperature, top_k).items()
                 if _tv(seen, dist) <= 0.05]
        if len(named) == 1:
            raise _fail(named[0][0], f"{named[0][1]} (With {setting}, your frequencies of the {V} tokens are "
                                     f"{table}; expected {expected}.)", seed)
        raise _fail("sampling.symptom.values", f"With {setting}, your {DRAWS} samples from the same logits come out "
                                               f"with frequencies {table}; softmax(logits / temperature) over the "
                                               f"top_k gives {expected}.", seed)
    print("✓ greedy at temperature 0; samples follow softmax(logits / temperature) over the top k")


# ---------------------------------------------------------------------------------------------------
# Part 3: the generation loop
# ---------------------------------------------------------------------------------------------------

LOOP_V, LOOP_MAX_LEN = 11, 48  # room for a loop that feeds the whole sequence with the cache
PROMPT, NEW = 5, 6


def _gpt_state(seed: int, scale: float = 8.0) -> dict[str, torch.Tensor]:
    """Weights of the notebook's tiny GPT (coursekit's GPTConfig.tiny) times ``scale``: 8 spreads the scores, so that
    greedy decoding changes from step to step; 1 (as initialised) leaves them nearly uniform, for sampling."""
    from coursekit.gpt import GPT, GPTConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        model = GPT(GPTConfig.tiny(LOOP_V, max_len=LOOP_MAX_LEN))
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    return model.state_dict()


def _reference_model(state: Mapping[str, torch.Tensor]) -> Any:
    from coursekit.gpt import GPT, GPTConfig

    model = GPT(GPTConfig.tiny(LOOP_V, max_len=LOOP_MAX_LEN))
    model.load_state_dict(dict(state))
    return model.eval()


def loop_variant(model: Any, prompt: torch.Tensor, steps: int, *, kind: str = "right",
                 **_: Any) -> tuple[torch.Tensor, list[list]]:
    """Greedy generation with the course GPT ``model`` with (at most) one planted mistake; the default gives the
    reference. Returns the ids and the model's calls as the notebook's recording GPT logs them: [tokens read, whether
    a cache came with them]."""
    calls: list[list] = []

    def run(ids: torch.Tensor, cache: Any = None) -> Any:
        calls.append([ids.size(1), cache is not None])
        return model(ids, cache=cache)

    ids, cache = prompt, None
    with torch.no_grad():
        for step in range(steps):
            if kind == "no-cache":
                out = run(ids)
            elif kind == "whole-sequence-with-cache" and cache is not None:
                out = run(ids, cache)
            elif kind == "cache-not-updated" and cache is not None:
                out = run(ids[:, -1:], first_cache)
            else:
                out = run(ids if cache is None else ids[:, -1:], cache)
            if cache is None:
                first_cache = out.cache
            if kind != "cache-not-updated" or cache is None:
                cache = out.cache
            logits = out.logits[:, 0] if kind == "first-position" else out.logits[:, -1]
            token = logits.argmax(-1)
            ids = torch.cat([ids, token[:, None]], dim=1)
    if kind == "new-only":
        ids = ids[:, prompt.size(1):]
    return ids, calls


def _loop_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda model, prompt, steps, **_: loop_variant(model, prompt, steps, kind=kind))


_LOOP_MUTANTS = (
    _loop_mutant("generate.no-cache", "Your tokens are right, but every step runs the whole sequence again: after the "
                 "prompt, feed only the newest token, model(ids[:, -1:], cache=cache), and keep the cache the model "
                 "returns.", "no-cache"),
    _loop_mutant("generate.whole-sequence-with-cache", "After the first step you pass the whole sequence AND the cache, "
                 "so the model sees every earlier token twice: with a cache, feed only the newest token, ids[:, -1:].",
                 "whole-sequence-with-cache"),
    _loop_mutant("generate.cache-not-updated", "You keep passing the cache of the prompt: each call returns a cache "
                 "grown by the tokens it read; keep that one (cache = output.cache) for the next step.",
                 "cache-not-updated"),
    _loop_mutant("generate.first-position", "You choose the next token from the scores of the FIRST position, "
                 "logits[:, 0]; the next token is predicted by the last one, logits[:, -1].", "first-position"),
    _loop_mutant("generate.new-only", "You return only the new tokens; return the prompt followed by them, "
                 "(B, T0 + max_new_tokens).", "new-only"),
)


def _loop_accepts(got: Any, want: Any) -> bool:
    """The right tokens, read the cached way: the prompt once, then one token with the cache per step (a loop that
    also runs the model once after its last token wastes a step but is right)."""
    ids, calls = got if isinstance(got, (tuple, list)) and len(got) == 2 else (got, None)
    want_ids, want_calls = want
    return (isinstance(ids, torch.Tensor) and ids.shape == want_ids.shape and bool(torch.equal(ids, want_ids))
            and isinstance(calls, (list, tuple)) and [list(c) for c in calls] in (want_calls, want_calls + [[1, True]]))


@functools.lru_cache(maxsize=4)
def _loop_probes(seed: int) -> list[dict[str, Any]]:
    """A prompt (B, T0) = (2, 5) for which every mistake of the catalogue gives its own result: drawn again (from the
    same seed's generator) until it does, so that no seed can make two mistakes look alike. Kept for the few seeds
    last used (the probes are only read)."""
    from coursekit.grading.diagnosis import same

    g = generator(seed)
    state = _gpt_state(seed)
    model = _reference_model(state)
    while True:
        probe = dict(state=state, model=model, prompt=torch.randint(0, LOOP_V, (B, PROMPT), generator=g), steps=NEW)
        want = loop_variant(model, probe["prompt"], NEW)
        results = [m.output(**probe) for m in _LOOP_MUTANTS]
        if all(not _loop_accepts(r, want) for r in results) and all(
                not same(a, b) for i, a in enumerate(results) for b in results[i + 1:]):
            return [probe]


LOOP = catalogue("gpt.generate", "generate", lambda model, prompt, steps, **_: loop_variant(model, prompt, steps),
                 _LOOP_MUTANTS, _loop_probes, accept=_loop_accepts)


def _remote_gpt(make_model: Callable, state: Mapping[str, torch.Tensor], seed: int) -> Any:
    return build_module(make_model, LOOP_TASK, dict(state), LOOP_V, LOOP_MAX_LEN, name="tiny_gpt model")


def _generate(fn: Callable, model: Any, prompt: torch.Tensor, steps: int, check_seed: int,
              **options: Any) -> torch.Tensor:
    shown = "".join(f", {k}={v!r}" for k, v in options.items())
    result = invoke(fn, LOOP_TASK, (model, prompt, steps), options, name="Your generate",
                    params=("model", "prompt", "max_new_tokens"),
                    expect=f"(B, T0 + max_new_tokens) = {(B, PROMPT + steps)} token ids", seed=check_seed)
    return expect_tensor(result, f"generate(model, prompt, {steps}{shown})", LOOP_TASK)


def check_generate(fn: Callable, make_model: Callable, seed: int | None = None) -> None:
    """``generate(model, prompt, max_new_tokens)`` at temperature 0: exactly the tokens of greedy decoding; the prompt
    read once, then one new token per call with the cache (the model of ``make_model``, the notebook's ``tiny_gpt``,
    records its calls)."""
    seed = seed_or_fresh(seed)
    probes = LOOP.probes(seed)
    outputs = []
    for probe in probes:
        model = _remote_gpt(make_model, probe["state"], seed)
        ids = _generate(fn, model, probe["prompt"], probe["steps"], seed, temperature=0.0)
        calls = invoke(lambda: model.calls, LOOP_TASK, name="Reading your model's calls")
        outputs.append((ids, [list(c) for c in calls] if isinstance(calls, (list, tuple)) else calls))

    def symptom(got, want, probe):
        ids, calls = got
        if not isinstance(ids, torch.Tensor) or ids.shape != want[0].shape or not torch.equal(ids, want[0]):
            if isinstance(ids, torch.Tensor) and ids.shape == want[0].shape:
                differ = (ids != want[0]).nonzero()
                first = int(differ[:, 1].min())
                return Symptom("values", f"Greedy decoding of a prompt of {PROMPT} tokens for {NEW} steps: your "
                                         f"sequence differs from the expected one from position {first} on "
                                         f"(yours {ids[0].tolist()}, expected {want[0][0].tolist()} for the first "
                                         "prompt).")
            return describe(ids, want[0], what="Your generated ids", axes=("sequence", "position"),
                            sizes={"B": B, "T0 + max_new_tokens": PROMPT + NEW})
        return Symptom("values", f"Your tokens are right, but your model calls read {calls}, as [tokens, with a "
                                 f"cache]; expected {want[1]}: the prompt once, then one token with the cache per "
                                 "step.")

    LOOP.judge(outputs, probes, seed=seed, describe=symptom)
    print(f"✓ greedy generation: the prompt once, then {NEW - 1} one-token steps through the cache")


def check_generate_sampling(fn: Callable, make_model: Callable, seed: int | None = None) -> None:
    """``generate(..., temperature, top_k, seed)`` samples: top_k=1 gives greedy decoding at any temperature, the same
    seed gives the same sequence, and other seeds other ones."""
    seed = seed_or_fresh(seed)
    probe = LOOP.probes(seed)[0]
    want = loop_variant(probe["model"], probe["prompt"], probe["steps"])[0]

    def run(state: Mapping[str, torch.Tensor], **options: Any) -> torch.Tensor:
        return _generate(fn, _remote_gpt(make_model, state, seed), probe["prompt"], probe["steps"], seed, **options)

    top1 = run(probe["state"], temperature=1.5, top_k=1)
    if top1.shape != want.shape or not torch.equal(top1, want):
        greedy_ok = quietly_passes(lambda f, seed: check_generate(f, make_model, seed), fn, seed)
        raise _fail("generate.symptom.values", "With temperature=1.5 and top_k=1 only the best token can come out, so "
                                               "the sequence must be the greedy one; yours is not. Pass temperature "
                                               f"and top_k on to your next_token (Test 4, greedy, "
                                               f"{'passes' if greedy_ok else 'fails'} with this seed).", seed)
    flat = _gpt_state(seed, scale=1.0)  # nearly uniform scores: sampled sequences differ with every seed
    first = seed % 2**31
    a, b = run(flat, temperature=1.0, seed=first), run(flat, temperature=1.0, seed=first)
    if not torch.equal(a, b):
        raise _fail("generate.seed-ignored", "Two runs with the same seed gave different sequences: make one generator, "
                                             "torch.Generator().manual_seed(seed), pass it to next_token at every step, "
                                             "and on to torch.multinomial.", seed)
    if all(torch.equal(a, run(flat, temperature=1.0, seed=(first + k) % 2**31)) for k in (1, 2, 3)):
        raise _fail("generate.never-samples", "Four seeds at temperature 1 gave the same sequence: with temperature > 0 "
                                              "the loop must sample (pass temperature on to next_token).", seed)
    print("✓ sampling in the loop: top_k=1 is greedy, the same seed repeats, other seeds differ")
