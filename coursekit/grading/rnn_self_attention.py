"""Checks for the *stage 2: RNN + self-attention* notebook (``solutions/rnn_self_attention``): the self-attention
block over the RNN's annotations, the mean over the real positions that starts the decoder, Luong's "general"
attention, and the whole encoder-decoder (against :class:`coursekit.seq2seq.SelfAttentiveRNNEncoderDecoder` with the
same weights).

Shape legend: B batch, S source length, T target length, A annotation size (2H), Q query size, H hidden size (per
direction), V vocabulary size. No two sizes of a check are equal, so a transposed or wrongly reduced result shows
as itself: the block uses (B, S, A) = (3, 7, 10) with 2 heads of 5; the mean (B, S, A) = (3, 7, 5); the attention
(B, T, S, Q, A) = (2, 3, 6, 4, 5); the model vocabularies 11 and 13, E = 6, H = 8 (A = 16), 2 heads, (B, S, T) =
(3, 5, 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from coursekit.grading.core import (Reference, ShortcutPolicy, build_module, expect_pair, expect_tensor,
                                    fused_attention, generator, invoke, register_task, seed_or_fresh, seeded_module)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, rows_sum, same
from coursekit.masks import padding_mask

_STAGE2 = Reference("coursekit.seq2seq.SelfAttentiveRNNEncoderDecoder", "coursekit.seq2seq",
                    ("SelfAttentiveRNNEncoderDecoder",))
_MODEL_POLICY = ShortcutPolicy((_STAGE2,), {}, instead="the modules __init__ gives you, your functions of Parts 1-3 "
                                                      "and basic tensor operations")
BLOCK_TASK = register_task("the self-attention block", _MODEL_POLICY, code="selfblock")
MEAN_TASK = register_task("the mean over the real positions", _MODEL_POLICY, code="realmean")
GENERAL_TASK = register_task("Luong's general attention", ShortcutPolicy(
    (_STAGE2, Reference("coursekit.attention", "coursekit.attention")), fused_attention(),
    instead="@, transpose, masked_fill and softmax"), code="general")
STAGE2_TASK = register_task("the RNN + self-attention encoder-decoder", _MODEL_POLICY, code="stage2")


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Biases and layer-norm gains away from their initial 0 and 1, so that a missing or misplaced one shows."""
    g = generator(seed + 1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if name.endswith("norm.weight") else 0.0))
    return module


# ---------------------------------------------------------------------------------------------------
# Part 1: the self-attention block
# ---------------------------------------------------------------------------------------------------

BB, BS, BA, BH = 3, 7, 10, 2
BLOCK_LENGTHS = (7, 4, 2)


class _Block(nn.Module):
    """The reference block's modules, with the notebook's names (its forward is in :func:`block_variant`)."""

    def __init__(self, size: int, num_heads: int) -> None:
        super().__init__()
        from coursekit.attention import MultiHeadAttention

        self.self_attention = MultiHeadAttention(size, num_heads)
        self.norm = nn.LayerNorm(size)


def block_variant(block: _Block, annotations: torch.Tensor, key_padding_mask: torch.Tensor, *,
                  residual: bool = True, norm: str = "after", mask: str = "pass", **_: Any) -> torch.Tensor:
    """The block with (at most) one planted mistake; the defaults give the reference,
    ``norm(h + MultiHead(h, h, h))`` with padding hidden. ``norm``: "after" the sum, "none", "before" (pre-LN,
    h + MultiHead(norm(h))), "on input" (norm(h) + MultiHead(h)). ``mask``: "pass", "none"."""
    h = annotations
    kpm = key_padding_mask if mask == "pass" else None
    source = block.norm(h) if norm == "before" else h
    attended, _ = block.self_attention(source, source, source, key_padding_mask=kpm)
    if norm == "before":
        return h + attended
    if norm == "on input":
        return block.norm(h) + attended
    total = h + attended if residual else attended
    return block.norm(total) if norm == "after" else total


def _block_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda block, annotations, key_padding_mask, **_: block_variant(
        block, annotations, key_padding_mask, **mistake))


_BLOCK_MUTANTS = (
    _block_mutant("selfblock.no-residual", "Your memory is the layer norm of the self-attention output alone: the "
                  "residual connection is missing. Add the annotations back before the norm, "
                  "self.norm(annotations + attended).", residual=False),
    _block_mutant("selfblock.no-norm", "Your memory is annotations + attended without the layer norm: pass the sum "
                  "through self.norm.", norm="none"),
    _block_mutant("selfblock.pre-norm", "You normalised the annotations before the attention, h + attention(norm(h)) "
                  "(pre-LN). Stage 2's block is post-LN: self.norm(annotations + attended).", norm="before"),
    _block_mutant("selfblock.norm-on-input", "You added the attention output to the normalised annotations, "
                  "norm(h) + attended. Normalise the sum: self.norm(annotations + attended).", norm="on input"),
    _block_mutant("selfblock.padding-ignored", "Your real positions read the padding: pass "
                  "key_padding_mask=key_padding_mask to self.self_attention.", mask="none"),
)


def _block_probes(seed: int) -> list[dict[str, Any]]:
    """The reference block (A = 10, 2 heads of 5) with fresh weights; annotations (B, S, A) = (3, 7, 10) whose
    sequences have 7, 4 and 2 real positions."""
    block = _randomise(seeded_module(lambda: _Block(BA, BH), seed), seed)
    g = generator(seed)
    return [dict(block=block, annotations=torch.randn(BB, BS, BA, generator=g),
                 key_padding_mask=padding_mask(torch.tensor(BLOCK_LENGTHS), BS))]


def _reference_block(block, annotations, key_padding_mask, **_):
    with torch.no_grad():
        return block_variant(block, annotations, key_padding_mask)


def _real_rows_match(got: Any, want: torch.Tensor, key_padding_mask: torch.Tensor) -> bool:
    """The memory at the real positions: padded positions are never read afterwards (the decoder's mask and the
    masked mean leave them out), so what a block writes there does not count."""
    real = ~key_padding_mask
    return isinstance(got, torch.Tensor) and got.shape == want.shape and same(got[real], want[real])


BLOCK = catalogue("rnn_self_attention.block", "selfblock", _reference_block, _BLOCK_MUTANTS, _block_probes,
                  accept=lambda got, want: _real_rows_match(got, want, padding_mask(torch.tensor(BLOCK_LENGTHS), BS)))


def check_self_attention_block(cls: Any, seed: int | None = None) -> None:
    """``SelfAttentionBlock(size, num_heads)``: with the reference's weights, ``forward(annotations,
    key_padding_mask)`` gives norm(h + MultiHead(h, h, h)) with padding hidden, at every real position."""
    seed = seed_or_fresh(seed)
    probe = BLOCK.probes(seed)[0]
    module = build_module(cls, BLOCK_TASK, probe["block"], BA, BH, name="SelfAttentionBlock")
    got = invoke(module, BLOCK_TASK, (probe["annotations"], probe["key_padding_mask"]),
                 name="Your SelfAttentionBlock", params=("annotations", "key_padding_mask"),
                 expect=f"the memory, (B, S, A) = {(BB, BS, BA)}", seed=seed)
    got = expect_tensor(got, "SelfAttentionBlock.forward(...)", BLOCK_TASK)

    def symptom(got, want, probe):
        real = (~probe["key_padding_mask"])[..., None].expand(want.shape)
        if got.shape == want.shape:  # only the real positions count: compare those
            got, want = got.masked_fill(~real, 0.0), want.masked_fill(~real, 0.0)
        return describe(got, want, what="Your memory", axes=("batch item", "position", "feature"),
                        sizes={"B": BB, "S": BS, "A": BA}, reference="norm(annotations + self-attention)")

    BLOCK.judge([got], [probe], seed=seed, describe=symptom)
    print("✓ the self-attention block: norm(h + MultiHead(h, h, h)), padding hidden")


# ---------------------------------------------------------------------------------------------------
# Part 2: the mean over the real positions
# ---------------------------------------------------------------------------------------------------

MB, MS, MA = 3, 7, 5


def mean_variant(memory: torch.Tensor, key_padding_mask: torch.Tensor, *, kind: str = "real", **_: Any
                 ) -> torch.Tensor:
    """The summary with (at most) one planted mistake; "real" is the reference."""
    real = (~key_padding_mask)[..., None].to(memory.dtype)  # (B, S, 1)
    lengths = real.sum(dim=1)  # (B, 1)
    if kind == "all":
        return memory.mean(dim=1)
    if kind == "divide-by-S":
        return (memory * real).sum(dim=1) / memory.size(1)
    if kind == "sum":
        return (memory * real).sum(dim=1)
    if kind == "inverted":
        pad = 1.0 - real
        return (memory * pad).sum(dim=1) / pad.sum(dim=1)
    if kind == "first":
        return memory[:, 0]
    if kind == "last-real":
        return memory[torch.arange(memory.size(0)), lengths[:, 0].long() - 1]
    if kind == "last":
        return memory[:, -1]
    return (memory * real).sum(dim=1) / lengths


def _mean_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda memory, key_padding_mask, **_: mean_variant(memory, key_padding_mask,
                                                                                 kind=kind))


_MEAN_MUTANTS = (
    _mean_mutant("realmean.includes-padding", "You averaged over every position, padding included "
                 "(memory.mean(dim=1)): a short sequence's summary is pulled towards its padding. Sum the real "
                 "positions only and divide by how many there are.", "all"),
    _mean_mutant("realmean.divides-by-length", "You summed the real positions but divided by S, the padded length: divide "
                 "each sequence by its own number of real positions.", "divide-by-S"),
    _mean_mutant("realmean.no-division", "Your summary is the sum of the real positions: divide it by their number.",
                 "sum"),
    _mean_mutant("realmean.mask-inverted", "You averaged the PADDED positions: key_padding_mask is True at padding, "
                 "so the real positions are ~key_padding_mask.", "inverted"),
    _mean_mutant("realmean.first-position", "Your summary is the first position's vector; stage 2 starts the decoder "
                 "from the mean of all the real positions.", "first"),
    _mean_mutant("realmean.last-real-position", "Your summary is each sequence's last real position, as a plain RNN "
                 "encoder would hand over; stage 2 starts the decoder from the mean of all the real positions.",
                 "last-real"),
    _mean_mutant("realmean.last-position", "Your summary is the last position of the padded batch, which is padding "
                 "for every shorter sequence: use the mean of the real positions.", "last"),
)


def _mean_probes(seed: int) -> list[dict[str, Any]]:
    """memory (B, S, A) = (3, 7, 5) with 7, 4 and 2 real positions, then with lengths drawn from the seed."""
    g = generator(seed)
    drawn = torch.randint(1, MS, (MB,), generator=g)
    drawn[0] = MS  # one full-length sequence, so a padding-only mean shows as NaN
    return [dict(memory=torch.randn(MB, MS, MA, generator=g), key_padding_mask=padding_mask(torch.tensor([7, 4, 2]), MS)),
            dict(memory=torch.randn(MB, MS, MA, generator=g), key_padding_mask=padding_mask(drawn, MS))]


MEAN = catalogue("rnn_self_attention.mean", "realmean",
                 lambda memory, key_padding_mask, **_: mean_variant(memory, key_padding_mask), _MEAN_MUTANTS,
                 _mean_probes)


def check_masked_mean(fn: Callable, seed: int | None = None) -> None:
    """``masked_mean(memory, key_padding_mask)``: (B, A), each sequence's mean over its real positions only."""
    seed = seed_or_fresh(seed)
    probes = MEAN.probes(seed)
    outputs = []
    for probe in probes:
        got = invoke(fn, MEAN_TASK, (probe["memory"], probe["key_padding_mask"]), name="Your masked_mean",
                     params=("memory", "key_padding_mask"), expect=f"(B, A) = {(MB, MA)}", seed=seed)
        outputs.append(expect_tensor(got, "masked_mean(...)", MEAN_TASK))

    def symptom(got, want, probe):
        lengths = (~probe["key_padding_mask"]).sum(dim=1).tolist()
        return describe(got, want, what=f"With {', '.join(map(str, lengths))} real positions, your summary",
                        axes=("batch item", "feature"), sizes={"B": MB, "A": MA},
                        reference="the mean over each sequence's real positions")

    MEAN.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ the mean over the real positions")


# ---------------------------------------------------------------------------------------------------
# Part 3: the decoder's attention
# ---------------------------------------------------------------------------------------------------

GB, GT, GS, GQ, GA = 2, 3, 6, 4, 5


def general_variant(query: torch.Tensor, memory: torch.Tensor, W: torch.Tensor, key_padding_mask: torch.Tensor, *,
                    mask: str = "fill", dim: int = -1, scale: bool = False, values: str = "memory",
                    returns: str = "weights", **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Luong's general attention with (at most) one planted mistake; the defaults give the reference. ``mask``:
    "fill" (-inf before the softmax), "none", "inverted", "zero" (0 before the softmax), "after" (0 after it)."""
    scores = query @ W @ memory.transpose(-2, -1)  # (B, T, S)
    if scale:
        scores = scores / math.sqrt(memory.size(-1))
    hidden = key_padding_mask[:, None, :]
    if mask in ("fill", "inverted"):
        scores = scores.masked_fill(hidden if mask == "fill" else ~hidden, float("-inf"))
    elif mask == "zero":
        scores = scores.masked_fill(hidden, 0.0)
    weights = torch.softmax(scores, dim=dim)
    if mask == "after":
        weights = weights.masked_fill(hidden, 0.0)
    v = memory @ W.T if values == "projected" else memory  # (B, S, Q) or (B, S, A)
    return weights @ v, scores if returns == "scores" else weights


def _general_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda query, memory, W, key_padding_mask, **_: general_variant(
        query, memory, W, key_padding_mask, **mistake))


_GENERAL_MUTANTS = (
    _general_mutant("general.padding-ignored", "Your weights give padding a share: fill the scores of padded "
                    "positions with -inf before the softmax, scores.masked_fill(key_padding_mask[:, None, :], "
                    "float('-inf')).", mask="none"),
    _general_mutant("general.mask-inverted", "You hid the REAL positions: key_padding_mask is True at padding, so it "
                    "is the mask to fill with -inf, as it is (not ~key_padding_mask).", mask="inverted"),
    _general_mutant("general.zero-filled", "You set the padded scores to 0, which still gives padding a share of the "
                    "softmax: fill them with -inf.", mask="zero"),
    _general_mutant("general.masked-after-softmax", "You zeroed the padded weights after the softmax, so the rows no "
                    "longer sum to 1: fill the scores with -inf before the softmax instead.", mask="after"),
    _general_mutant("general.softmax-over-queries", "Your softmax runs over the queries (dim=1): each query's "
                    "weights must sum to 1 over the source positions, dim=-1.", dim=1),
    _general_mutant("general.scaled", "You divided the scores by sqrt(A), as scaled dot-product attention does; "
                    "Luong's general score is s_t^T W_a m_j, unscaled.", scale=True),
    _general_mutant("general.values-projected", "Your context averages memory @ W^T: the values are the memory "
                    "itself, context = weights @ memory, (B, T, A).", values="projected"),
    _general_mutant("general.returns-scores", "You return the scores where the weights belong: return (context, "
                    "weights), weights = softmax(scores).", returns="scores"),
)


def _general_probes(seed: int) -> list[dict[str, Any]]:
    """query (B, T, Q) = (2, 3, 4), memory (B, S, A) = (2, 6, 5), W (Q, A) = (4, 5); the sources have 6 and 3 real
    positions."""
    g = generator(seed)
    return [dict(query=torch.randn(GB, GT, GQ, generator=g), memory=torch.randn(GB, GS, GA, generator=g),
                 W=torch.randn(GQ, GA, generator=g) / math.sqrt(GA),
                 key_padding_mask=padding_mask(torch.tensor([6, 3]), GS))]


GENERAL = catalogue("rnn_self_attention.general", "general",
                    lambda query, memory, W, key_padding_mask, **_: general_variant(query, memory, W,
                                                                                    key_padding_mask),
                    _GENERAL_MUTANTS, _general_probes)


def _describe_general(got: Any, want: tuple[torch.Tensor, torch.Tensor], probe: Mapping[str, Any]) -> Symptom:
    """The weights first (with how their rows sum), then the context."""
    context, weights = got
    sizes = {"B": GB, "T": GT, "S": GS, "Q": GQ, "A": GA}
    if weights.shape != want[1].shape or not torch.allclose(weights, want[1], atol=1e-5, equal_nan=True):
        hidden = probe["key_padding_mask"][:, None, :].expand(GB, GT, GS)
        symptom = describe(weights, want[1], what="Your weights", axes=("batch item", "query", "key"), sizes=sizes,
                           forbidden=hidden, reference="softmax_j(s_t^T W_a m_j) with padding at 0")
        sums = rows_sum(weights) if symptom.kind not in ("shape", "return-type", "dtype") else ""
        return Symptom(symptom.kind, f"{symptom.text} In yours, {sums}.") if sums else symptom
    symptom = describe(context, want[0], what="Your context", axes=("batch item", "query", "feature"), sizes=sizes,
                       reference="weights @ memory")
    return Symptom(symptom.kind, f"Your weights are right. {symptom.text}")


def check_general_attention(fn: Callable, seed: int | None = None) -> None:
    """``general_attention(query, memory, W, key_padding_mask)``: weights softmax_j(s_t^T W m_j) over the real
    positions (0 at padding), context = weights @ memory."""
    seed = seed_or_fresh(seed)
    probe = GENERAL.probes(seed)[0]
    result = invoke(fn, GENERAL_TASK, (probe["query"], probe["memory"], probe["W"], probe["key_padding_mask"]),
                    name="Your general_attention", params=("query", "memory", "W", "key_padding_mask"),
                    expect=f"(context, weights) of shapes {(GB, GT, GA)} and {(GB, GT, GS)}", seed=seed)
    got = expect_pair(result, GENERAL_TASK, "Your general_attention")
    GENERAL.judge([got], [probe], seed=seed, describe=_describe_general)
    print("✓ the general attention: softmax over the real source positions of s_t^T W_a m_j")


# ---------------------------------------------------------------------------------------------------
# Part 4: the whole encoder-decoder
# ---------------------------------------------------------------------------------------------------

SRC_V, TGT_V, E, HID, HEADS = 11, 13, 6, 8, 2
LENGTHS, T = (5, 3, 2), 4


def _reference_model(seed: int) -> Any:
    from coursekit.seq2seq import SelfAttentiveRNNConfig, SelfAttentiveRNNEncoderDecoder

    config = SelfAttentiveRNNConfig(SRC_V, TGT_V, embed_dim=E, hidden_dim=HID, num_heads=HEADS)
    return _randomise(seeded_module(lambda: SelfAttentiveRNNEncoderDecoder(config), seed), seed)


def _notebook_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """coursekit.seq2seq's names -> the notebook's: the block's two modules under ``block``, W_a as ``W_a``."""
    renamed = {}
    for key, value in state.items():
        if key.startswith(("self_attention.", "norm.")):
            key = f"block.{key}"
        elif key == "attention.W.weight":
            key = "W_a.weight"
        renamed[key] = value
    return renamed


def model_variant(model: Any, src: torch.Tensor, src_key_padding_mask: torch.Tensor, tgt: torch.Tensor, *,
                  start: str = "mean", combine: str = "context first", squash: bool = True,
                  block: str = "yes", **_: Any) -> torch.Tensor:
    """The notebook's SelfAttentiveRNN, run on the reference's modules, with (at most) one planted mistake; the
    defaults give the reference. ``start``: the decoder's first state from the "mean" of the memory, "zeros", the
    "last" real annotation. ``combine``: "context first" [c; s] or "state first" [s; c]. ``block``: "yes" or "no"
    (the annotations go to the decoder as they are)."""
    from coursekit.seq2seq import run_encoder_rnn

    kpm = src_key_padding_mask
    lengths = (~kpm).sum(dim=1)
    annotations, _ = run_encoder_rnn(model.encoder, model.src_embed(src), lengths)
    if block == "yes":
        attended, _ = model.self_attention(annotations, annotations, annotations, key_padding_mask=kpm)
        memory = model.norm(annotations + attended)
    else:
        memory = annotations
    if start == "zeros":
        hidden = torch.zeros(src.size(0), HID)
    elif start == "last":
        hidden = torch.tanh(model.init_state(memory[torch.arange(src.size(0)), lengths - 1]))
    else:
        hidden = torch.tanh(model.init_state(mean_variant(memory, kpm)))
    states, _ = model.decoder(model.tgt_embed(tgt), hidden[None])
    context, _ = general_variant(states, memory, model.attention.W.weight, kpm)
    joined = torch.cat([context, states] if combine == "context first" else [states, context], dim=-1)
    features = model.combine(joined)
    return model.out(torch.tanh(features) if squash else features)


def _model_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda model, src, src_key_padding_mask, tgt, **_: model_variant(
        model, src, src_key_padding_mask, tgt, **mistake))


_MODEL_MUTANTS = (
    _model_mutant("stage2.decoder-starts-at-zero", "Your decoder starts from zeros: its first state is "
                  "tanh(self.init_state(masked_mean(memory, src_key_padding_mask))), passed to the GRU as "
                  "hidden[None].", start="zeros"),
    _model_mutant("stage2.starts-from-last-annotation", "Your decoder starts from each source's last real position; "
                  "stage 2 starts it from the mean of the memory over the real positions (your masked_mean).",
                  start="last"),
    _model_mutant("stage2.state-first", "You concatenated [s_t; c_t]: the context comes first, "
                  "self.combine(torch.cat([context, states], dim=-1)), as the notebook's layout of W_c expects.",
                  combine="state first"),
    _model_mutant("stage2.no-tanh", "You left out the tanh: the attentional state is tanh(W_c [c_t; s_t]), "
                  "torch.tanh(self.combine(...)).", squash=False),
    _model_mutant("stage2.block-skipped", "Your decoder reads the GRU's annotations as they are: pass them through "
                  "self.block (your Part 1) first, so that they attend to each other.", block="no"),
)


def _model_probes(seed: int) -> list[dict[str, Any]]:
    """The reference model (E = 6, H = 8, 2 heads, vocabularies 11 and 13); src (B, S) = (3, 5) with 5, 3 and 2 real
    tokens, tgt_in (B, T) = (3, 4) starting with [START]."""
    model = _reference_model(seed)
    g = generator(seed)
    kpm = padding_mask(torch.tensor(LENGTHS), max(LENGTHS))
    src = torch.randint(4, SRC_V, kpm.shape, generator=g).masked_fill(kpm, 0)
    tgt = torch.randint(4, TGT_V, (len(LENGTHS), T), generator=g)
    tgt[:, 0] = 1  # [START]
    return [dict(model=model, src=src, src_key_padding_mask=kpm, tgt=tgt)]


def _reference_logits(model, src, src_key_padding_mask, tgt, **_):
    with torch.no_grad():
        return model(src, src_key_padding_mask, tgt).logits


MODEL = catalogue("rnn_self_attention.model", "stage2", _reference_logits, _MODEL_MUTANTS, _model_probes)


def _parts_in_model(module: Any, reference: Any, probe: Mapping[str, Any], seed: int) -> str:
    """Whether the learner's encode gives the reference's memory and first decoder state."""
    try:
        got = invoke(lambda *a: module.encode(*a), STAGE2_TASK, (probe["src"], probe["src_key_padding_mask"]))
        with torch.no_grad():
            state = reference.encode(probe["src"], probe["src_key_padding_mask"])
        real = ~probe["src_key_padding_mask"]
        memory_ok = (isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], torch.Tensor)
                     and got[0].shape == state["memory"].shape and same(got[0][real], state["memory"][real]))
        hidden_ok = memory_ok and isinstance(got[1], torch.Tensor) and same(got[1], state["hidden"])
    except Exception:  # noqa: BLE001 (an encode that cannot run is not right)
        return "Your encode raises or does not return (memory, hidden)."
    if not memory_ok:
        return "Your encode's memory already differs from the reference's: check Test 1 and the annotations."
    if not hidden_ok:
        return "Your encode's memory is right but its first decoder state is not: check Test 2."
    return "Your encode is right (memory and first state): the difference is in forward."


def check_self_attentive_rnn(cls: Any, seed: int | None = None) -> None:
    """``SelfAttentiveRNN``: with the reference's weights, its teacher-forced logits equal
    coursekit.seq2seq.SelfAttentiveRNNEncoderDecoder's, and its weights (B, T, S) too."""
    seed = seed_or_fresh(seed)
    probe = MODEL.probes(seed)[0]
    reference = probe["model"]
    module = build_module(cls, STAGE2_TASK, _notebook_names(reference.state_dict()), SRC_V, TGT_V, E, HID, HEADS,
                          name="SelfAttentiveRNN")
    shape = (len(LENGTHS), T, TGT_V)
    result = invoke(module, STAGE2_TASK, (probe["src"], probe["src_key_padding_mask"], probe["tgt"]),
                    name="Your SelfAttentiveRNN", params=("src", "src_key_padding_mask", "tgt_in"),
                    expect=f"(logits (B, T, V) = {shape}, weights (B, T, S))", seed=seed)
    logits, weights = expect_pair(result, STAGE2_TASK, "Your SelfAttentiveRNN")

    def symptom(got, want, probe):
        return describe(got, want, what="Your model's logits", axes=("batch item", "target position", "token"),
                        sizes={"B": shape[0], "T": T, "V": TGT_V},
                        reference="the reference stage-2 model's, with the same weights,")

    MODEL.judge([logits], [probe], seed=seed, describe=symptom,
                then=lambda: _parts_in_model(module, reference, probe, seed))
    with torch.no_grad():
        want = reference(probe["src"], probe["src_key_padding_mask"], probe["tgt"]).weights
    if not same(weights, want):
        raise MODEL.symptom(describe(weights, want, what="Your logits are right, but your attention weights",
                                     axes=("batch item", "target position", "source position"),
                                     reference="the reference's"), seed)
    print("✓ the whole stage-2 model matches coursekit's SelfAttentiveRNNEncoderDecoder with the same weights")
