"""The corpus of mistakes: each graded notebook's reference answers with one realistic mistake typed in, as
learners write them, the score it must earn and the code each failing test must give.

Two kinds per notebook:
- planted: the mistakes the checks were first written around;
- found: mistakes collected from how learners actually go wrong (forums, course and library issue trackers, the
  classic attention and Transformer bugs, shape and broadcasting slips, copy-paste slips, off-by-ones, wrong
  reductions), at least eight per notebook. ``source`` says where each comes from.

Every entry runs through the real notebook with ``coursekit check`` and through ``coursekit grade``
(tests/test_notebooks.py): it must lose points, not all of them, and each failing test must give the code listed
(its own name, or an accurate symptom), the same way in both, and under every seed of the hidden tests.

An answer change is ``grade_id=(old, new)`` (one replacement in that answer cell), a list of such pairs, or
``grade_id="..."`` (the whole cell).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Mistake:
    changes: dict[str, str | tuple[str, str] | list[tuple[str, str]]]
    score: float
    codes: dict[str, str]  # grade_id of every failing test -> the code its failure carries
    source: str = ""
    planted: bool = False
    words: dict[str, str] = field(default_factory=dict)  # grade_id -> words its message must contain


def m(score: float, codes: dict[str, str], source: str = "", *, planted: bool = False,
      words: dict[str, str] | None = None, **changes) -> Mistake:
    return Mistake({k.replace("_", "-"): v for k, v in changes.items()}, score,
                   {k: v for k, v in codes.items()}, source, planted, words or {})


# ---------------------------------------------------------------------------------------------------
# sdpa: scaled dot-product attention
# ---------------------------------------------------------------------------------------------------

SDPA_REFERENCE_CALL = ('    import coursekit.attention as ck\n'
                       '    return ck.scaled_dot_product_attention(query, key, value, attn_mask, key_padding_mask)\n')

SDPA = {
    "unscaled": m(5, {"test-values": "sdpa.unscaled", "test-reference": "sdpa.unscaled"}, planted=True,
                  words={"test-values": "with no scaling"},
                  sdpa_answer=(" / math.sqrt(d_k)", "")),
    "inverted-masks": m(4, {"test-padding": "mask.inverted", "test-causal": "mask.inverted",
                            "test-reference": "mask.inverted"}, planted=True,
                        sdpa_answer=[("masked_fill(attn_mask,", "masked_fill(~attn_mask,"),
                                     ("masked_fill(key_padding_mask[", "masked_fill(~key_padding_mask[")]),
    "calls-reference": m(0, {t: "sdpa.shortcut" for t in ("test-shapes", "test-values", "test-padding", "test-causal",
                                                          "test-reference")}, planted=True,
                         sdpa_answer=("    d_k = query.size(-1)\n", SDPA_REFERENCE_CALL)),
    # --- found ---
    "softmax-dim-1": m(
        1, {"test-values": "sdpa.softmax-dim-1", "test-padding": "sdpa.symptom.nan",
            "test-causal": "sdpa.symptom.unmasked-positions", "test-reference": "sdpa.softmax-over-queries"},
        "a softmax over a fixed dim: PetrochukM/PyTorch-NLP#2, jadore801120/attention-is-all-you-need-pytorch#52",
        sdpa_answer=("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=1)")),
    "transpose-1-2": m(
        6, {"test-shapes": "sdpa.symptom.raised", "test-values": "sdpa.symptom.raised"},
        "key.transpose(1, 2) works for (B, S, Dk) only: 'IndexError: Dimension out of range' (issue 13)",
        sdpa_answer=("key.transpose(-2, -1)", "key.transpose(1, 2)")),
    "bmm": m(
        6, {"test-shapes": "sdpa.symptom.raised", "test-values": "sdpa.symptom.raised"},
        "torch.bmm needs exactly 3 dims (Stack Overflow: 'batch1 must be a 3D tensor')",
        sdpa_answer=[("query @ key.transpose(-2, -1)", "torch.bmm(query, key.transpose(-2, -1))"),
                     ("return weights @ value, weights", "return torch.bmm(weights, value), weights")]),
    "mask-not-unsqueezed": m(
        6, {"test-padding": "sdpa.symptom.raised", "test-reference": "sdpa.symptom.raised"},
        "a (B, S) mask applied to (B, T, S) scores without a query dim (issue 13; hyunwoongko/transformer#32)",
        sdpa_answer=("masked_fill(key_padding_mask[:, None, :],", "masked_fill(key_padding_mask,")),
    "padding-on-queries": m(
        6, {"test-padding": "sdpa.symptom.raised", "test-reference": "sdpa.symptom.nan"},
        "the padding mask unsqueezed along the query axis: hyunwoongko/transformer#40",
        sdpa_answer=("key_padding_mask[:, None, :]", "key_padding_mask[:, :, None]")),
    "zero-fill": m(
        4, {"test-padding": "mask.zero-filled", "test-causal": "mask.zero-filled", "test-reference": "mask.zero-filled"},
        "masked_fill(mask, 0), or scores * mask: the masked scores become 0, not -inf",
        sdpa_answer=[('masked_fill(attn_mask, float("-inf"))', "masked_fill(attn_mask, 0.0)"),
                     ('masked_fill(key_padding_mask[:, None, :], float("-inf"))',
                      "masked_fill(key_padding_mask[:, None, :], 0.0)")]),
    "mask-added": m(
        4, {"test-padding": "mask.added", "test-causal": "mask.added", "test-reference": "mask.added"},
        "a bool mask added to the scores as torch.nn adds float masks: pytorch/pytorch#136816, mlverse/torch#1208",
        sdpa_answer=[('scores.masked_fill(attn_mask, float("-inf"))', "scores + attn_mask"),
                     ('scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))',
                      "scores + key_padding_mask[:, None, :]")]),
    "if-elif-masks": m(
        8, {"test-reference": "mask.padding-dropped-with-causal"},
        "if attn_mask ... elif key_padding_mask ...: a copy-paste branch that drops the second mask",
        sdpa_answer=("    if key_padding_mask is not None:\n        scores = scores.masked_fill(key_padding_mask",
                     "    elif key_padding_mask is not None:\n        scores = scores.masked_fill(key_padding_mask")),
    "masks-combined-with-and": m(
        8, {"test-reference": "mask.combined-with-and"},
        "two masks combined with & instead of |",
        sdpa_answer=[("    if attn_mask is not None:\n        scores = scores.masked_fill(attn_mask, float(\"-inf\"))\n"
                      "    if key_padding_mask is not None:\n"
                      "        scores = scores.masked_fill(key_padding_mask[:, None, :], float(\"-inf\"))"
                      "  # (B, 1, S) over every query\n",
                      "    mask = attn_mask\n"
                      "    if key_padding_mask is not None:\n"
                      "        padding = key_padding_mask[:, None, :]\n"
                      "        mask = padding if mask is None else mask & padding\n"
                      "    if mask is not None:\n"
                      "        scores = scores.masked_fill(mask, float(\"-inf\"))\n")]),
    "dk-from-dim-1": m(
        5, {"test-values": "sdpa.scaled-by-dim-1", "test-reference": "sdpa.scaled-by-length"},
        "d_k = query.size(1), right only for 2-dimensional inputs",
        sdpa_answer=("d_k = query.size(-1)", "d_k = query.size(1)")),
    "returns-scores": m(
        1, {"test-values": "sdpa.returns-scores", "test-padding": "sdpa.symptom.inf", "test-causal": "sdpa.symptom.inf",
            "test-reference": "sdpa.returns-scores"},
        "a copy-paste slip in the return line",
        sdpa_answer=("return weights @ value, weights", "return weights @ value, scores")),
    "masked-fill-not-assigned": m(
        4, {"test-padding": "mask.ignored", "test-causal": "mask.ignored", "test-reference": "mask.ignored"},
        "masked_fill returns a new tensor; the result is thrown away (a classic of the PyTorch forums)",
        sdpa_answer=[("        scores = scores.masked_fill(attn_mask,", "        scores.masked_fill(attn_mask,"),
                     ("        scores = scores.masked_fill(key_padding_mask", "        scores.masked_fill(key_padding_mask")]),
}

CORPUS = {"sdpa": SDPA}
