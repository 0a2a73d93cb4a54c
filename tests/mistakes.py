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

# ---------------------------------------------------------------------------------------------------
# bahdanau: additive attention in an RNN encoder-decoder
# ---------------------------------------------------------------------------------------------------

BAHDANAU_SUBCLASS = ("class AdditiveAttention(nn.Module):",
                     "import coursekit.attention\n\nclass AdditiveAttention(coursekit.attention.AdditiveAttention):\n"
                     "    score = coursekit.attention.AdditiveAttention.score\n"
                     "    forward = coursekit.attention.AdditiveAttention.forward\n\n"
                     "class _Unused(nn.Module):")
TANH = "self.v(torch.tanh(q + k))"
MASK_LINE = 'scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))  # (B, 1, S) over every query'

BAHDANAU = {
    "no-tanh": m(5, {"test-scores": "additive.no-tanh", "test-trained": "dates.symptom.low-score"}, planted=True,
                 additive_answer=(TANH, "self.v(q + k)")),
    "inverted-mask": m(4, {"test-softmax": "mask.inverted", "test-context": "mask.inverted",
                           "test-trained": "dates.symptom.low-score"}, planted=True,
                       masked_softmax_answer=("masked_fill(key_padding_mask[", "masked_fill(~key_padding_mask[")),
    "averages-keys": m(8, {"test-context": "additive.averages-keys"}, planted=True,
                       additive_answer=("context = weights @ value", "context = weights @ key")),
    "no-squeeze": m(7, {"test-step": "additive.step-not-squeezed", "test-trained": "dates.symptom.raised"}, planted=True,
                    additive_answer=("return context.squeeze(1), weights.squeeze(1)", "return context, weights")),
    "calls-reference": m(2, {"test-scores": "additive.shortcut", "test-context": "additive.shortcut",
                             "test-step": "additive.shortcut", "test-trained": "additive.shortcut"}, planted=True,
                         additive_answer=BAHDANAU_SUBCLASS),
    # --- found ---
    "softmax-dim-1": m(
        4, {"test-softmax": "softmax.over-queries", "test-context": "additive.softmax-over-queries",
            "test-trained": "dates.symptom.low-score"},
        "softmax over a fixed dim: PetrochukM/PyTorch-NLP#2, labmlai/annotated_deep_learning_paper_implementations#146",
        masked_softmax_answer=("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=1)")),
    "mask-not-unsqueezed": m(
        4, {"test-softmax": "softmax.symptom.raised", "test-context": "additive.symptom.raised",
            "test-trained": "dates.symptom.raised"},
        "a (B, S) mask applied to (B, T, S) scores without a query dim (issue 13)",
        masked_softmax_answer=("masked_fill(key_padding_mask[:, None, :],", "masked_fill(key_padding_mask,")),
    "masked-fill-not-assigned": m(
        6, {"test-softmax": "mask.ignored", "test-context": "mask.ignored"},
        "masked_fill returns a new tensor; the result is thrown away (PyTorch forums)",
        masked_softmax_answer=(MASK_LINE, MASK_LINE.replace("scores = scores.masked_fill", "scores.masked_fill"))),
    "mask-after-softmax": m(
        6, {"test-softmax": "mask.after-softmax", "test-context": "mask.after-softmax"},
        "zeroing the padding weights after the softmax, the rows no longer summing to 1",
        masked_softmax_answer=[(MASK_LINE, "pass"),
                               ("    return torch.softmax(scores, dim=-1)",
                                "    weights = torch.softmax(scores, dim=-1)\n"
                                "    if key_padding_mask is not None:\n"
                                "        weights = weights.masked_fill(key_padding_mask[:, None, :], 0.0)\n"
                                "    return weights")]),
    "relu-for-tanh": m(
        7, {"test-scores": "additive.relu"},
        "the wrong non-linearity in the score (keon/seq2seq#15: activations moved around the energy)",
        additive_answer=(TANH, "self.v(torch.relu(q + k))")),
    "tanh-after-v": m(
        5, {"test-scores": "additive.tanh-outside", "test-trained": "dates.symptom.low-score"},
        "the tanh applied to the energy after v instead of the hidden layer",
        additive_answer=(TANH, "torch.tanh(self.v(q + k))")),
    "score-not-squeezed": m(
        2, {"test-scores": "additive.not-squeezed", "test-context": "additive.symptom.shape",
            "test-step": "additive.symptom.raised", "test-trained": "dates.symptom.raised"},
        "v's output dim of size 1 kept: (B, T, S, 1) (OpenNMT/OpenNMT-py#110 'correct squeeze')",
        additive_answer=(".squeeze(-1)  # (B, T, S, h)", "  # (B, T, S, h)")),
    "unsqueeze-swapped": m(
        2, {"test-scores": "additive.transposed", "test-context": "additive.symptom.shape",
            "test-step": "additive.symptom.raised", "test-trained": "dates.symptom.raised"},
        "queries and keys unsqueezed along each other's axis: (B, S, T) scores",
        additive_answer=[("q = self.W_q(query).unsqueeze(2)", "q = self.W_q(query).unsqueeze(1)"),
                         ("k = self.W_k(key).unsqueeze(1)", "k = self.W_k(key).unsqueeze(2)")]),
    "step-unsqueezed-last": m(
        7, {"test-step": "additive.symptom.raised", "test-trained": "dates.symptom.raised"},
        "one decoder step given its T = 1 dim at the end instead of in the middle",
        additive_answer=("query = query.unsqueeze(1)  # (B, Dq)", "query = query.unsqueeze(-1)  # (B, Dq)")),
    "step-weights-not-squeezed": m(
        9, {"test-step": "additive.step-weights-not-squeezed"},
        "a half-finished return line: only the context squeezed",
        additive_answer=("return context.squeeze(1), weights.squeeze(1)", "return context.squeeze(1), weights")),
    "key-projection-on-query": m(
        2, {"test-scores": "additive.symptom.raised", "test-context": "additive.symptom.raised",
            "test-step": "additive.symptom.raised", "test-trained": "dates.symptom.raised"},
        "a copy-paste slip between the two projections (ml-explore/mlx#1636 is the same slip between norms)",
        additive_answer=("q = self.W_q(query).unsqueeze(2)", "q = self.W_k(query).unsqueeze(2)")),
}

# ---------------------------------------------------------------------------------------------------
# multihead: self-attention, heads, and a MultiHeadAttention module
# ---------------------------------------------------------------------------------------------------

MHA_TORCH = ("self.out_proj = nn.Linear(embed_dim, embed_dim)\n",
             "self.out_proj = nn.Linear(embed_dim, embed_dim)\n"
             "        self.inner = nn.MultiheadAttention(embed_dim, num_heads)\n")

MULTIHEAD = {
    "keys-from-w_q": m(8, {"test-self-attention": "selfattn.keys-from-w-q"}, planted=True,
                       self_attention_answer=("x @ w_q, x @ w_k, x @ w_v", "x @ w_q, x @ w_q, x @ w_v")),
    "merge-order": m(3, {"test-merge": "heads.merge-by-reshape", "test-mha": "mha.merge-by-reshape",
                         "test-cross": "mha.merge-by-reshape", "test-masks": "mha.merge-by-reshape"}, planted=True,
                     heads_answer=("x.transpose(1, 2).reshape(B, L, H * Dh)", "x.reshape(B, L, H * Dh)")),
    "no-out-proj": m(4, {"test-mha": "mha.no-out-proj", "test-cross": "mha.no-out-proj",
                         "test-masks": "mha.no-out-proj"}, planted=True,
                     module_answer=("return self.out_proj(merge_heads(out))", "return merge_heads(out)")),
    "weights-per-head": m(4, {"test-mha": "mha.weights-per-head", "test-cross": "mha.weights-per-head",
                              "test-masks": "mha.weights-per-head"}, planted=True,
                          module_answer=("weights.mean(dim=1)  #", "weights  #")),
    "ignores-causal-mask": m(8, {"test-masks": "mask.causal-ignored"}, planted=True,
                             module_answer=("attn_mask=attn_mask,\n", "\n")),
    "calls-torch": m(4, {"test-mha": "mha.shortcut", "test-cross": "mha.shortcut", "test-masks": "mha.shortcut"},
                     planted=True, module_answer=MHA_TORCH),
    # --- found ---
    "split-without-transpose": m(
        3, {"test-split": "heads.split-not-transposed", "test-mha": "mha.symptom.raised",
            "test-cross": "mha.symptom.raised", "test-masks": "mha.symptom.raised"},
        "view(B, L, H, Dh) without the transpose (michaelgethers.com, 'mechanics of reshaping in MHA')",
        heads_answer=("return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)",
                      "return x.view(B, L, num_heads, D // num_heads)")),
    "split-by-reshape": m(
        3, {"test-split": "heads.split-by-reshape", "test-mha": "mha.split-by-reshape",
            "test-cross": "mha.split-by-reshape", "test-masks": "mha.split-by-reshape"},
        "reshape straight to (B, H, L, Dh), mixing positions (book-ai.org, 'why reshape then transpose')",
        heads_answer=("return x.view(B, L, num_heads, D // num_heads).transpose(1, 2)",
                      "return x.reshape(B, num_heads, L, D // num_heads)")),
    "merge-with-view": m(
        3, {"test-merge": "heads.symptom.raised", "test-mha": "mha.symptom.raised", "test-cross": "mha.symptom.raised",
            "test-masks": "mha.symptom.raised"},
        ".view after a transpose: 'view size is not compatible with input tensor's size and stride'",
        heads_answer=("x.transpose(1, 2).reshape(B, L, H * Dh)", "x.transpose(1, 2).view(B, L, H * Dh)")),
    "keys-through-q-proj": m(
        4, {"test-mha": "mha.keys-from-q-proj", "test-cross": "mha.keys-from-q-proj",
            "test-masks": "mha.keys-from-q-proj"},
        "a copy-paste slip between the projections (issue 13)",
        module_answer=("k = split_heads(self.k_proj(key)", "k = split_heads(self.q_proj(key)")),
    "values-through-k-proj": m(
        4, {"test-mha": "mha.values-from-k-proj", "test-cross": "mha.values-from-k-proj",
            "test-masks": "mha.values-from-k-proj"},
        "a copy-paste slip between the projections",
        module_answer=("v = split_heads(self.v_proj(value)", "v = split_heads(self.k_proj(value)")),
    "weights-of-head-0": m(
        4, {"test-mha": "mha.weights-of-head-0", "test-cross": "mha.weights-of-head-0",
            "test-masks": "mha.weights-of-head-0"},
        "one head's map returned as 'the' attention map",
        module_answer=("weights.mean(dim=1)  #", "weights[:, 0]  #")),
    "padding-mask-not-passed": m(
        8, {"test-masks": "mask.padding-ignored"},
        "one of two masks not handed on (SeekDeeper#3: the wrong mask in cross-attention)",
        module_answer=("key_padding_mask=key_padding_mask)", ")")),
    "masks-swapped": m(
        8, {"test-masks": "mha.symptom.raised"},
        "attn_mask and key_padding_mask passed to each other's parameter",
        module_answer=[("attn_mask=attn_mask,", "attn_mask=key_padding_mask,"),
                       ("key_padding_mask=key_padding_mask)", "key_padding_mask=attn_mask)")]),
    "heads-and-head-dim-swapped": m(
        4, {"test-mha": "mha.symptom.everywhere", "test-cross": "mha.symptom.everywhere",
            "test-masks": "mha.symptom.unmasked-positions"},
        "split into head_dim heads of num_heads features",
        module_answer=[("split_heads(self.q_proj(query), self.num_heads)", "split_heads(self.q_proj(query), self.head_dim)"),
                       ("split_heads(self.k_proj(key), self.num_heads)", "split_heads(self.k_proj(key), self.head_dim)"),
                       ("split_heads(self.v_proj(value), self.num_heads)", "split_heads(self.v_proj(value), self.head_dim)")]),
    "projection-transposed": m(
        8, {"test-self-attention": "selfattn.symptom.raised"},
        "x @ w.T for a weight stored (D, Dk), as nn.Linear stores (out, in)",
        self_attention_answer=("x @ w_q, x @ w_k, x @ w_v", "x @ w_q.T, x @ w_k.T, x @ w_v.T")),
    "out-proj-before-merge": m(
        4, {"test-mha": "mha.symptom.raised", "test-cross": "mha.symptom.raised", "test-masks": "mha.symptom.raised"},
        "the output projection applied to each head's (B, H, T, Dh) output",
        module_answer=("return self.out_proj(merge_heads(out))", "return merge_heads(self.out_proj(out))")),
}

# ---------------------------------------------------------------------------------------------------
# positional: the sinusoidal table, shifts as rotations, attention without and with positions
# ---------------------------------------------------------------------------------------------------

FREQUENCY = "frequency = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)"
POSITIONS_ON_OUTPUT = """
def self_attention_layer(x, w_q, w_k, w_v, table=None):
    output, _ = scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)
    return output + table[: x.size(1)] if table is not None else output
"""

POSITIONAL = {
    "swapped": m(7, {"test-table": "table.swapped"}, planted=True,
                 table_answer=("torch.sin(angle)\n    table[:, 1::2] = torch.cos(angle)",
                               "torch.cos(angle)\n    table[:, 1::2] = torch.sin(angle)")),
    "exponent-i": m(7, {"test-table": "table.exponent-i"}, planted=True,
                    table_answer=("torch.arange(0, d_model, 2, dtype=torch.float32) / d_model",
                                  "torch.arange(0, d_model // 2, dtype=torch.float32) / d_model")),
    "rotation-backwards": m(8, {"test-offset": "offset.backwards"}, planted=True,
                            offset_answer=[("= c, s  #", "= c, -s  #"), ("= -s, c  #", "= s, c  #")]),
    "positions-on-output": m(7, {"test-positions": "layer.positions-on-output"}, planted=True,
                             layer_answer=POSITIONS_ON_OUTPUT),
    "causal-mask": m(5, {"test-equivariance": "layer.causal", "test-positions": "layer.causal"}, planted=True,
                     layer_answer=("scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v)",
                                   "scaled_dot_product_attention(x @ w_q, x @ w_k, x @ w_v, "
                                   "attn_mask=torch.ones(x.size(1), x.size(1), dtype=torch.bool).triu(1))")),
    "calls-reference": m(7, {"test-table": "table.shortcut"}, planted=True,
                         table_answer=("    position = ", "    import coursekit.positional\n"
                                       "    return coursekit.positional.sinusoidal_table(max_len, d_model)\n"
                                       "    position = ")),
    # --- found ---
    "multiplied": m(
        7, {"test-table": "table.multiplied"},
        "position * div_term where position / div_term was meant: harvardnlp/annotated-transformer#131",
        table_answer=("position * frequency", "position / frequency")),
    "concatenated": m(
        7, {"test-table": "table.concatenated"},
        "all the sines, then all the cosines: tensorflow/text#1122",
        table_answer=("table = torch.zeros(max_len, d_model)\n    table[:, 0::2] = torch.sin(angle)\n"
                      "    table[:, 1::2] = torch.cos(angle)",
                      "table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)")),
    "cos-exponent-shifted": m(
        7, {"test-table": "table.cos-exponent-shifted"},
        "the cosine given the next pair's exponent 2(i+1)/d: SamLynnEvans/Transformer#7 and #25",
        table_answer=("table[:, 1::2] = torch.cos(angle)",
                      "table[:, 1::2] = torch.cos(position * 10000.0 ** (-torch.arange(2, d_model + 2, 2) / d_model))")),
    "column-exponent": m(
        7, {"test-table": "table.column-exponent"},
        "an exponent per column j instead of per pair: shenweichen/DeepCTR#379, BrianPulfer/PapersReimplementations#9",
        table_answer=[(FREQUENCY, "frequency = 10000.0 ** (-torch.arange(d_model, dtype=torch.float32) / d_model)"),
                      ("torch.sin(angle)\n", "torch.sin(angle[:, 0::2])\n"),
                      ("torch.cos(angle)\n", "torch.cos(angle[:, 1::2])\n")]),
    "integer-exponent": m(
        7, {"test-table": "table.integer-exponent"},
        "integer division in the exponent makes it 0: Kyubyong/transformer#81",
        table_answer=(FREQUENCY, "frequency = 10000.0 ** (-(torch.arange(0, d_model, 2) // d_model).float())")),
    "sines-only": m(
        7, {"test-table": "table.sines-only"},
        "a copy-paste slip between the two column assignments",
        table_answer=("table[:, 1::2] = torch.cos(angle)", "table[:, 1::2] = torch.sin(angle)")),
    "offset-ignores-k": m(
        8, {"test-offset": "offset.ignores-k"},
        "the angle of one step, w_i, where the shift by k needs k * w_i",
        offset_answer=("angle = k / 10000.0", "angle = 1 / 10000.0")),
    "offset-block-index": m(
        8, {"test-offset": "offset.block-index"},
        "an off-by-one in the block's index: pair i placed at (i, i+1) instead of (2i, 2i+1)",
        offset_answer=[("M[2 * i, 2 * i], M[2 * i, 2 * i + 1] = c, s", "M[i, i], M[i, i + 1] = c, s"),
                       ("M[2 * i + 1, 2 * i], M[2 * i + 1, 2 * i + 1] = -s, c", "M[i + 1, i], M[i + 1, i + 1] = -s, c")]),
    "rows-from-1": m(
        7, {"test-positions": "layer.rows-from-1"},
        "an off-by-one slice of the table",
        layer_answer=("table[: x.size(1)]", "table[1 : x.size(1) + 1]")),
    "table-not-sliced": m(
        7, {"test-positions": "layer.symptom.raised"},
        "the whole table added to a shorter sequence: 'The size of tensor a (6) must match the size of tensor b (20)'",
        layer_answer=("x = x + table[: x.size(1)]", "x = x + table")),
    "positions-multiplied": m(
        7, {"test-positions": "layer.positions-multiplied"},
        "the encodings multiplied into the embeddings instead of added",
        layer_answer=("x = x + table[: x.size(1)]", "x = x * table[: x.size(1)]")),
    "table-transposed": m(
        7, {"test-table": "table.transposed"},
        "the table built one row per frequency, as the notebook's own plot shows it (table.T)",
        table_answer=("    return table", "    return table.T")),
}

# ---------------------------------------------------------------------------------------------------
# transformer: the causal mask, the blocks, the model, a trained translator
# ---------------------------------------------------------------------------------------------------

TORCH_ENCODER = ("attended, _ = self.self_attn(src, src, src, key_padding_mask=src_key_padding_mask)",
                 "layer = nn.TransformerEncoderLayer(self.norm1.normalized_shape[0], 2, self.linear1.out_features, "
                 "dropout=0.0, batch_first=True)\n"
                 "        return layer(src, src_key_padding_mask=src_key_padding_mask)\n"
                 "        attended, _ = self.self_attn(src, src, src, key_padding_mask=src_key_padding_mask)")
PRE_LN = [("attended, _ = self.self_attn(src, src, src,",
           "normed = self.norm1(src)\n        attended, _ = self.self_attn(normed, normed, normed,"),
          ("x = self.norm1(src + attended)", "x = src + attended"),
          ("self.linear2(torch.relu(self.linear1(x)))", "self.linear2(torch.relu(self.linear1(self.norm2(x))))"),
          ("return self.norm2(x + feed_forward)", "return x + feed_forward")]
EMBED_SRC, EMBED_TGT = "self.src_embed(src) * math.sqrt(self.d_model)", "self.tgt_embed(tgt_in) * math.sqrt(self.d_model)"

TRANSFORMER = {
    "inverted-mask": m(6, {"test-mask": "causal.inverted", "test-model": "model.symptom.raised",
                           "test-trained": "translator.symptom.raised"}, planted=True,
                       mask_answer=("return torch.triu(", "return ~torch.triu(")),
    "pre-ln-encoder": m(6, {"test-encoder": "encoder.pre-ln", "test-model": "model.symptom.everywhere"},
                        planted=True, encoder_answer=PRE_LN),
    "no-tgt-mask": m(4, {"test-decoder": "decoder.ignores-tgt-mask", "test-model": "model.no-causal-mask",
                         "test-trained": "translator.symptom.low-score"}, planted=True,
                     decoder_answer=("attn_mask=tgt_mask)", "attn_mask=None)")),
    "cross-from-target": m(4, {"test-decoder": "decoder.symptom.raised", "test-model": "model.symptom.raised",
                               "test-trained": "translator.symptom.raised"}, planted=True,
                           decoder_answer=("self.multihead_attn(y, memory, memory,", "self.multihead_attn(y, y, y,")),
    "no-scaling": m(9, {"test-model": "model.unscaled-embeddings"}, planted=True,
                    model_answer=[(EMBED_SRC, "self.src_embed(src)"), (EMBED_TGT, "self.tgt_embed(tgt_in)")]),
    "calls-torch": m(4, {"test-encoder": "encoder.shortcut", "test-model": "model.shortcut",
                         "test-trained": "model.shortcut"}, planted=True, encoder_answer=TORCH_ENCODER),
    # --- found ---
    "mask-hides-diagonal": m(
        6, {"test-mask": "causal.hides-diagonal", "test-model": "model.symptom.raised",
            "test-trained": "translator.symptom.raised"},
        "torch.triu(ones) without diagonal=1: the first query sees nothing (NaN rows)",
        mask_answer=("diagonal=1)", "diagonal=0)")),
    "mask-tril": m(
        6, {"test-mask": "causal.hides-past", "test-model": "model.symptom.leak",
            "test-trained": "translator.symptom.low-score"},
        "torch.tril where torch.triu was meant (the future allowed, the past hidden)",
        mask_answer=("torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1)",
                     "torch.tril(torch.ones(size, size, dtype=torch.bool), diagonal=-1)")),
    "encoder-norms-swapped": m(
        6, {"test-encoder": "encoder.norms-swapped", "test-model": "model.symptom.everywhere"},
        "the wrong layer norm after a sublayer: ml-explore/mlx#1636, ml-explore/mlx-swift#171",
        encoder_answer=[("x = self.norm1(src + attended)", "x = self.norm2(src + attended)"),
                        ("return self.norm2(x + feed_forward)", "return self.norm1(x + feed_forward)")]),
    "encoder-residual-from-src": m(
        6, {"test-encoder": "encoder.feed-forward-residual-from-src", "test-model": "model.symptom.everywhere"},
        "the feed-forward residual taken from the block's input: strutive07/transformer-tensorflow2.0#14",
        encoder_answer=("return self.norm2(x + feed_forward)", "return self.norm2(src + feed_forward)")),
    "decoder-cross-query-from-input": m(
        6, {"test-decoder": "decoder.cross-query-from-input", "test-model": "model.symptom.everywhere"},
        "cross-attention fed the block's input instead of the first sublayer's output: ml-explore/mlx#3382, #210",
        decoder_answer=("self.multihead_attn(y, memory, memory,", "self.multihead_attn(tgt, memory, memory,")),
    "decoder-self-attn-reused": m(
        6, {"test-decoder": "decoder.cross-with-self-attn", "test-model": "model.symptom.everywhere"},
        "a copy-paste slip: the self-attention module used again for cross-attention",
        decoder_answer=("self.multihead_attn(y, memory, memory,", "self.self_attn(y, memory, memory,")),
    "decoder-no-cross-residual": m(
        6, {"test-decoder": "decoder.no-cross-residual", "test-model": "model.symptom.everywhere"},
        "the cross-attention residual left out: georgepar/slp#26, OpenNMT/OpenNMT-py#1689",
        decoder_answer=("y = self.norm2(y + attended)", "y = self.norm2(attended)")),
    "decoder-ignores-memory-padding": m(
        6, {"test-decoder": "decoder.ignores-memory-padding", "test-model": "model.decoder-ignores-padding"},
        "the source's padding mask not handed to cross-attention: Kamichanw/SeekDeeper#3",
        decoder_answer=("key_padding_mask=memory_key_padding_mask)", ")")),
    "layers-not-chained": m(
        9, {"test-model": "model.layers-not-chained"},
        "every layer fed the embeddings instead of the previous layer's output",
        model_answer=[("        for layer in self.encoder_layers:\n            x = layer(x,",
                       "        h = x\n        for layer in self.encoder_layers:\n            x = layer(h,"),
                      ("        for layer in self.decoder_layers:\n            y = layer(y,",
                       "        h = y\n        for layer in self.decoder_layers:\n            y = layer(h,")]),
    "scaled-after-positions": m(
        9, {"test-model": "model.scaled-after-positions"},
        "the positions scaled with the embeddings: self.positions(...) * sqrt(d) (BlenderbotSmall, huggingface/"
        "transformers#11046, is the same kind of slip in the embedding order)",
        model_answer=[("self.positions(self.src_embed(src) * math.sqrt(self.d_model))",
                       "self.positions(self.src_embed(src)) * math.sqrt(self.d_model)"),
                      ("self.positions(self.tgt_embed(tgt_in) * math.sqrt(self.d_model))",
                       "self.positions(self.tgt_embed(tgt_in)) * math.sqrt(self.d_model)")]),
    "target-embedded-with-source": m(
        7, {"test-model": "model.symptom.raised", "test-trained": "translator.symptom.low-score"},
        "a copy-paste slip: the target embedded with the source's embedding table",
        model_answer=(EMBED_TGT, "self.src_embed(tgt_in) * math.sqrt(self.d_model)")),
}

# ---------------------------------------------------------------------------------------------------
# bert: masking, pairs, next-sentence pairs, the loss
# ---------------------------------------------------------------------------------------------------

BERT_REFERENCE_CALL = ("    special = ", "    from coursekit.bert.pretraining_data import mask_tokens as ck\n"
                       "    return ck(input_ids, mask_id=mask_id, special_ids=special_ids, "
                       "vocab_size=vocab_size, mask_prob=mlm_probability)\n    special = ")
CHOSEN = "chosen = (torch.rand(input_ids.shape) < mlm_probability) & ~special"
LABELS = "labels = input_ids.masked_fill(~chosen, -100)  # the loss skips -100"

BERT = {
    "masks-specials": m(10, {"test-choice": "masking.specials-chosen"}, planted=True,
                        masking_answer=(" & ~special\n", "\n")),
    "all-mask": m(9, {"test-proportions": "masking.all-mask"}, planted=True,
                  masking_answer=[("to_mask = chosen & (fate < 0.8)", "to_mask = chosen"),
                                  ("masked = torch.where(to_random, random_ids, masked)", "pass")]),
    "random-specials": m(9, {"test-proportions": "masking.random-specials"}, planted=True,
                         masking_answer=("torch.tensor([i for i in range(vocab_size) if i not in special_ids])",
                                         "torch.arange(vocab_size)")),
    "nsp-same-document": m(10, {"test-nsp": "nsp.notnext-same-document"}, planted=True,
                           nsp_answer=[("rng.randrange(len(documents) - 1)", "rng.randrange(len(documents))"),
                                       ("other += other >= i  # any document but this one", "pass")]),
    "mean-of-losses": m(8, {"test-loss": "loss.averaged", "test-step": "step.symptom.values"}, planted=True,
                        loss_answer=("return mlm_loss + nsp_loss", "return (mlm_loss + nsp_loss) / 2")),
    "calls-reference": m(7, {"test-choice": "masking.shortcut", "test-proportions": "masking.shortcut"}, planted=True,
                         masking_answer=BERT_REFERENCE_CALL),
    # --- found ---
    "labels-minus-one": m(
        10, {"test-choice": "masking.wrong-ignore-label"},
        "-1 for 'no label', as older BERT code had it: EricFillion/happy-transformer#128 ('Target -1 is out of bound')",
        masking_answer=(LABELS, "labels = input_ids.masked_fill(~chosen, -1)")),
    "labels-zero": m(
        10, {"test-choice": "masking.wrong-ignore-label"},
        "0 for 'no label': mead-ml/mead-baseline#337 (labels[~masked_indices] = 0)",
        masking_answer=(LABELS, "labels = input_ids.masked_fill(~chosen, 0)")),
    "padding-not-excluded": m(
        10, {"test-choice": "masking.specials-chosen"},
        "[CLS] and [SEP] excluded but not [PAD]: huggingface/transformers#11155",
        masking_answer=("special = torch.isin(input_ids, torch.tensor(special_ids))",
                        "special = torch.isin(input_ids, torch.tensor(special_ids[2:4]))")),
    "fixed-probability": m(
        10, {"test-choice": "masking.ignores-probability"},
        "0.15 written into the code instead of mlm_probability",
        masking_answer=(CHOSEN, "chosen = (torch.rand(input_ids.shape) < 0.15) & ~special")),
    "random-outside-chosen": m(
        10, {"test-choice": "masking.changes-unlabelled"},
        "the random replacement's condition without '& chosen', as the data collator splits its draws",
        masking_answer=("to_random = chosen & (fate >= 0.8) & (fate < 0.9)", "to_random = (fate >= 0.8) & (fate < 0.9)")),
    "random-of-rest-0.1": m(
        9, {"test-proportions": "masking.random-of-rest-0.1"},
        "0.1 where 0.5 belongs, in the two-step draw of the data collator: huggingface/transformers#10332, #10285",
        masking_answer=("to_random = chosen & (fate >= 0.8) & (fate < 0.9)",
                        "to_random = chosen & (fate >= 0.8) & (torch.rand(input_ids.shape) < 0.1)")),
    "nsp-global-random": m(
        10, {"test-nsp": "nsp.not-reproducible"},
        "the random module used directly, not rng = random.Random(seed) (issue 13: it scored full marks)",
        nsp_answer=[("rng.random()", "random.random()"), ("rng.randrange(", "random.randrange("),
                    ("rng.choice(", "random.choice(")]),
    "nsp-b-is-a": m(
        10, {"test-nsp": "nsp.isnext-not-next"},
        "an off-by-one: B taken at j instead of j + 1",
        nsp_answer=("(document[j], document[j + 1], 0)", "(document[j], document[j], 0)")),
    "nsp-labels-inverted": m(
        10, {"test-nsp": "nsp.labels-inverted"},
        "1 = IsNext, as in google-research/bert's own data (google-research/bert#125: '1 actually means is random')",
        nsp_answer=[("document[j + 1], 0)", "document[j + 1], 1)"), ("rng.choice(documents[other]), 1)",
                                                                       "rng.choice(documents[other]), 0)")]),
    "pair-no-middle-sep": m(
        11, {"test-pair": "pair.no-middle-sep"},
        "A and B run together, one [SEP] at the end",
        pair_answer=[("input_ids = [cls_id, *a_ids, sep_id, *b_ids, sep_id]", "input_ids = [cls_id, *a_ids, *b_ids, sep_id]"),
                     ("[0] * (len(a_ids) + 2)", "[0] * (len(a_ids) + 1)")]),
    "pair-one-segment": m(
        11, {"test-pair": "pair.one-segment"},
        "every token in segment 0, as a single-sentence input has it",
        pair_answer=("[0] * (len(a_ids) + 2) + [1] * (len(b_ids) + 1)", "[0] * (len(a_ids) + len(b_ids) + 3)")),
    "loss-not-flattened": m(
        8, {"test-loss": "loss.symptom.raised", "test-step": "step.symptom.raised"},
        "(B, S, V) logits given to F.cross_entropy as they are: 'Expected target size [4, 17], got [4, 10]'",
        loss_answer=("F.cross_entropy(mlm_logits.reshape(-1, V), mlm_labels.reshape(-1))",
                     "F.cross_entropy(mlm_logits, mlm_labels)")),
    "loss-nsp-binary": m(
        8, {"test-loss": "loss.nsp-binary", "test-step": "step.symptom.values"},
        "NSP as a binary cross-entropy on one logit",
        loss_answer=("F.cross_entropy(nsp_logits, nsp_labels)  # (B, 2), (B,)",
                     "F.binary_cross_entropy_with_logits(nsp_logits[:, 1], nsp_labels.float())")),
    "step-no-zero-grad": m(
        10, {"test-step": "step.no-zero-grad"},
        "optimizer.zero_grad() left out: PyTorch accumulates gradients (the first question of every PyTorch course)",
        step_answer=("    optimizer.zero_grad()\n", "")),
    "step-not-clipped": m(
        10, {"test-step": "step.not-clipped"},
        "no gradient clipping: the usual training loop of the PyTorch tutorials",
        step_answer=("    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n", "")),
    "step-clipped-after-step": m(
        10, {"test-step": "step.not-clipped"},
        "clip_grad_norm_ after optimizer.step(), where it changes nothing",
        step_answer=("    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n    optimizer.step()\n",
                     "    optimizer.step()\n    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)\n")),
    "step-zero-grad-before-step": m(
        10, {"test-step": "step.no-update"},
        "zero_grad() moved between backward() and step(): no weight ever changes",
        step_answer=[("    optimizer.zero_grad()\n", ""), ("    optimizer.step()\n", "    optimizer.zero_grad()\n    optimizer.step()\n")]),
    "step-returns-tensor": m(
        10, {"test-step": "step.returns-tensor"},
        "return loss without .item(): every step's graph kept alive by the list of losses",
        step_answer=("return loss.item()", "return loss")),
    "step-under-no-grad": m(
        10, {"test-step": "step.symptom.raised"},
        "the forward pass under torch.no_grad(), as in an evaluation loop: 'element 0 of tensors does not require grad'",
        step_answer=("    mlm_logits, nsp_logits = model(", "    with torch.no_grad():\n        mlm_logits, nsp_logits = model(")),
    "step-model-loss": m(
        10, {"test-step": "step.shortcut"},
        "the model's own compute_loss instead of the learner's pretraining_loss",
        step_answer=[("    mlm_logits, nsp_logits = model(batch[\"input_ids\"], batch[\"token_type_ids\"], batch[\"key_padding_mask\"])\n", ""),
                     ("loss = pretraining_loss(mlm_logits, batch[\"mlm_labels\"], nsp_logits, batch[\"nsp_labels\"])",
                      "loss = model.compute_loss(batch[\"input_ids\"], batch[\"token_type_ids\"], batch[\"key_padding_mask\"], "
                      "batch[\"mlm_labels\"], batch[\"nsp_labels\"]).loss")]),
    "loss-per-sequence": m(
        8, {"test-loss": "loss.mlm-mean-per-sequence", "test-step": "step.symptom.values"},
        "the MLM loss averaged per sequence, then over the batch",
        loss_answer=("mlm_loss = F.cross_entropy(mlm_logits.reshape(-1, V), mlm_labels.reshape(-1))",
                     "mlm_loss = torch.stack([F.cross_entropy(logits, labels) "
                     "for logits, labels in zip(mlm_logits, mlm_labels)]).mean()")),
}


# ---------------------------------------------------------------------------------------------------
# gpt: causal self-attention with a cache, choosing the next token, the generation loop
# ---------------------------------------------------------------------------------------------------

FUTURE = "future = torch.triu(torch.ones(T, S, dtype=torch.bool), diagonal=S - T + 1)"
CACHE_K = "k = torch.cat([past[0], k], dim=2)  # (B, H, S, Dh): the past first"
CACHE_V = "v = torch.cat([past[1], v], dim=2)"
GPT_REFERENCE = ("class CausalSelfAttention(nn.Module):",
                 "import coursekit.gpt\n\nclass CausalSelfAttention(coursekit.gpt.CausalSelfAttention):\n"
                 "    def __init__(self, d_model, nhead):\n        super().__init__(d_model, nhead)\n\n"
                 "    def forward(self, x, past=None):\n        S = x.size(1) + (0 if past is None else past[0].size(2))\n"
                 "        mask = torch.ones(x.size(1), S, dtype=torch.bool).triu(S - x.size(1) + 1)\n"
                 "        out, cache, _ = super().forward(x, mask, None if past is None else coursekit.gpt.LayerCache(*past))\n"
                 "        return out, (cache.k, cache.v)\n\nclass _Unused(nn.Module):")
SAMPLE = "return torch.multinomial(probabilities, 1, generator=generator).squeeze(1)"
LOOP_CALL = "out = model(ids if cache is None else ids[:, -1:], cache=cache)  # the prompt once, then the newest token"

GPT = {
    "no-mask": m(5, {"test-attention": "causal-attn.no-mask", "test-cache": "causal-attn.no-mask"}, planted=True,
                 attention_answer=("weights = scores.masked_fill(future, float(\"-inf\")).softmax(dim=-1)",
                                   "weights = scores.softmax(dim=-1)")),
    "calls-reference": m(5, {"test-attention": "causal-attn.shortcut", "test-cache": "kv-cache.shortcut"},
                         planted=True, attention_answer=GPT_REFERENCE),
    "no-cache": m(7, {"test-loop": "generate.no-cache"}, planted=True,
                  loop_answer=(LOOP_CALL, "out = model(ids)  # every step reads the whole sequence")),
    # --- found ---
    "mask-not-offset": m(
        7, {"test-cache": "kv-cache.mask-not-offset"},
        "a (T, S) mask without the offset of the cache, aligned top-left as SDPA's is_causal is: "
        "pytorch/pytorch#144858 ('only compares against the earliest k and v'), #103082",
        attention_answer=(FUTURE, "future = torch.triu(torch.ones(T, S, dtype=torch.bool), diagonal=1)")),
    "square-mask": m(
        7, {"test-cache": "kv-cache.symptom.raised"},
        "the causal mask built (T, T) from the new tokens alone, as without a cache: 'The size of tensor a (11) must "
        "match the size of tensor b (5)'",
        attention_answer=(FUTURE, "future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)")),
    "sdpa-is-causal": m(
        5, {"test-attention": "causal-attn.shortcut", "test-cache": "kv-cache.shortcut"},
        "F.scaled_dot_product_attention(..., is_causal=True), whose mask is aligned top-left and wrong with a cache: "
        "pytorch/pytorch#108108",
        attention_answer=[("        scores = q @ k.transpose(-2, -1) / math.sqrt(D // H)  # (B, H, T, S)\n", ""),
                          ("        " + FUTURE + "  # query t is position S - T + t\n", ""),
                          ("        weights = scores.masked_fill(future, float(\"-inf\")).softmax(dim=-1)\n        out = "
                           "(weights @ v)", "        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)")]),
    "past-after": m(
        7, {"test-cache": "kv-cache.past-after"},
        "the cache concatenated after the new keys: torch.cat([k, past_k])",
        attention_answer=[(CACHE_K, "k = torch.cat([k, past[0]], dim=2)"), (CACHE_V, "v = torch.cat([v, past[1]], dim=2)")]),
    "cache-returns-new": m(
        7, {"test-cache": "kv-cache.returns-new-only"},
        "the concatenation kept under another name, the new keys returned: the next step forgets the past",
        attention_answer=[("if past is not None:\n            k = torch.cat([past[0], k], dim=2)  # (B, H, S, Dh): the "
                           "past first\n            v = torch.cat([past[1], v], dim=2)\n        S = k.size(2)\n"
                           "        scores = q @ k.transpose(-2, -1)",
                           "keys, values = k, v\n        if past is not None:\n            keys = torch.cat([past[0], "
                           "k], dim=2)\n            values = torch.cat([past[1], v], dim=2)\n        S = keys.size(2)\n"
                           "        scores = q @ keys.transpose(-2, -1)"),
                          ("out = (weights @ v)", "out = (weights @ values)")]),
    "split-by-reshape": m(
        5, {"test-attention": "causal-attn.split-by-reshape", "test-cache": "causal-attn.split-by-reshape"},
        "(B, T, D) reshaped straight to (B, H, T, Dh): a classic of the PyTorch forums ('view vs transpose')",
        attention_answer=[("self.q_proj(x).view(B, T, H, D // H).transpose(1, 2)", "self.q_proj(x).reshape(B, H, T, D // H)"),
                          ("self.k_proj(x).view(B, T, H, D // H).transpose(1, 2)", "self.k_proj(x).reshape(B, H, T, D // H)"),
                          ("self.v_proj(x).view(B, T, H, D // H).transpose(1, 2)", "self.v_proj(x).reshape(B, H, T, D // H)")]),
    "scaled-by-d-model": m(
        5, {"test-attention": "causal-attn.scaled-by-d-model", "test-cache": "causal-attn.scaled-by-d-model"},
        "math.sqrt(D) where the head's size belongs, from the one-head formula",
        attention_answer=("/ math.sqrt(D // H)", "/ math.sqrt(D)")),
    "temperature-multiplied": m(
        7, {"test-next": "sampling.temperature-multiplied"},
        "logits * temperature: the rule the wrong way round, so a high temperature sharpens",
        next_answer=("logits = logits / temperature", "logits = logits * temperature")),
    "temperature-after-softmax": m(
        7, {"test-next": "sampling.temperature-ignored"},
        "the probabilities divided by the temperature, which normalising undoes",
        next_answer=[("    logits = logits / temperature\n", ""),
                     ("probabilities = logits.softmax(dim=-1)  # (B, V)",
                      "probabilities = logits.softmax(dim=-1) / temperature  # (B, V)")]),
    "top-k-less-equal": m(
        6, {"test-next": "sampling.top-k-one-too-few", "test-sampling": "generate.symptom.raised"},
        "<= where < belongs: the k-th token is masked too, and with top_k=1 every one "
        "('probability tensor contains either inf, nan or element < 0')",
        next_answer=("logits.masked_fill(logits < kth,", "logits.masked_fill(logits <= kth,")),
    "no-generator": m(
        8, {"test-sampling": "generate.seed-ignored"},
        "torch.multinomial without the generator: samples that cannot be reproduced",
        next_answer=(SAMPLE, "return torch.multinomial(probabilities, 1).squeeze(1)")),
    "loop-always-argmax": m(
        8, {"test-sampling": "generate.never-samples"},
        "the loop picks the argmax itself and never passes temperature and top_k on",
        loop_answer=("token = next_token(out.logits[:, -1], temperature, top_k, generator)  # (B,)",
                     "token = out.logits[:, -1].argmax(dim=-1)  # (B,)")),
    "whole-sequence-with-cache": m(
        6, {"test-loop": "generate.whole-sequence-with-cache", "test-sampling": "generate.symptom.values"},
        "the whole sequence passed again together with the cache: huggingface/transformers#1749 (a GPT-2 loop "
        "with past that crashes once the doubled length passes the context)",
        loop_answer=(LOOP_CALL, "out = model(ids, cache=cache)")),
    "first-position": m(
        6, {"test-loop": "generate.first-position", "test-sampling": "generate.symptom.values"},
        "logits[:, 0] for the next token: the first position's prediction",
        loop_answer=("next_token(out.logits[:, -1],", "next_token(out.logits[:, 0],")),
    "returns-new-only": m(
        6, {"test-loop": "generate.new-only", "test-sampling": "generate.symptom.values"},
        "only the generated tokens returned, without the prompt",
        loop_answer=("return ids", "return ids[:, prompt.size(1):]")),
}

# ---------------------------------------------------------------------------------------------------
# classifier: embeddings, pooling, the classifier's forward, the trained classifier
# ---------------------------------------------------------------------------------------------------

EMBED_RETURN = "return self.tok_emb(input_ids) + self.pos_emb(positions)  # (B, S, D) + (S, D)"
ENCODE_LINE = "hidden = self.encoder(x, src_key_padding_mask=key_padding_mask)  # (B, S, D)"
MEAN_LINE = "return (hidden * real).sum(dim=1) / real.sum(dim=1)  # (B, D)"
CLASSIFIER_REFERENCE = ("class ClassifierEmbedding(nn.Module):",
                        "from coursekit.positional import LearnedPositionalEncoding\n\n"
                        "class ClassifierEmbedding(nn.Module):\n"
                        "    def __init__(self, vocab_size, d_model, max_len, pad_id=0):\n"
                        "        super().__init__()\n"
                        "        self.tok_emb = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)\n"
                        "        self.positions = LearnedPositionalEncoding(d_model, max_len)\n\n"
                        "    def forward(self, input_ids):\n"
                        "        return self.positions(self.tok_emb(input_ids))\n\n"
                        "class _Unused(nn.Module):")

CLASSIFIER = {
    "no-positions": m(4, {"test-embedding": "embedding.no-positions", "test-model": "classifier.symptom.everywhere"},
                      planted=True, embedding_answer=(EMBED_RETURN, "return self.tok_emb(input_ids)  # (B, S, D)")),
    "mask-ignored": m(6, {"test-model": "classifier.mask-ignored"}, planted=True,
                      model_answer=(ENCODE_LINE, "hidden = self.encoder(x)  # (B, S, D)")),
    "calls-reference": m(2, {"test-embedding": "embedding.shortcut", "test-model": "classifier.shortcut",
                             "test-trained": "classifier.shortcut"}, planted=True, embedding_answer=CLASSIFIER_REFERENCE),
    # --- found ---
    "positions-by-token": m(
        2, {"test-embedding": "embedding.symptom.raised", "test-model": "classifier.symptom.raised",
            "test-trained": "trained.symptom.raised"},
        "the position table indexed with the token ids, self.pos_emb(input_ids): 'IndexError: index out of range in "
        "self' once an id passes max_len",
        embedding_answer=(EMBED_RETURN, "return self.tok_emb(input_ids) + self.pos_emb(input_ids)")),
    "positions-from-1": m(
        2, {"test-embedding": "embedding.positions-from-1", "test-model": "classifier.symptom.everywhere",
            "test-trained": "trained.symptom.raised"},
        "torch.arange(1, S + 1), positions counted from 1: an IndexError once a text fills max_len",
        embedding_answer=("torch.arange(input_ids.size(1), device=input_ids.device)",
                          "torch.arange(1, input_ids.size(1) + 1, device=input_ids.device)")),
    "scaled-embeddings": m(
        4, {"test-embedding": "embedding.scaled", "test-model": "classifier.symptom.everywhere"},
        "the token embeddings times sqrt(d_model), copied from the Transformer's decoder input",
        embedding_answer=(EMBED_RETURN, "return self.tok_emb(input_ids) * self.tok_emb.embedding_dim ** 0.5 "
                                        "+ self.pos_emb(positions)")),
    "cls-first-text": m(
        4, {"test-pool": "pooling.cls-of-first-text", "test-model": "classifier.symptom.shape"},
        "hidden[0] for the [CLS] vector: the first text of the batch, not the first position",
        pool_answer=("return hidden[:, 0]", "return hidden[0]")),
    "mean-with-padding": m(
        4, {"test-pool": "pooling.mean-with-padding", "test-model": "classifier.symptom.partial"},
        "hidden.mean(dim=1): the padding averaged in (huggingface/transformers#1581 and sentence-transformers' "
        "mean pooling, which weighs by the attention mask)",
        pool_answer=(MEAN_LINE, "return hidden.mean(dim=1)  # (B, D)")),
    "mean-divided-by-length": m(
        4, {"test-pool": "pooling.mean-divided-by-length", "test-model": "classifier.symptom.partial"},
        "the masked sum divided by the padded length",
        pool_answer=(MEAN_LINE, "return (hidden * real).sum(dim=1) / hidden.size(1)  # (B, D)")),
    "mean-of-padding": m(
        2, {"test-pool": "pooling.mean-of-padding", "test-model": "classifier.symptom.nan",
            "test-trained": "trained.symptom.low-score"},
        "the padding mask read as 'True = real token', the convention of Hugging Face's attention_mask",
        pool_answer=("real = (~key_padding_mask)", "real = (key_padding_mask)")),
    "mean-over-batch": m(
        2, {"test-pool": "pooling.mean-over-batch", "test-model": "classifier.symptom.shape",
            "test-trained": "trained.symptom.shape"},
        "the sum over dim 0, the batch: 'Expected input batch_size (31) to match target batch_size (64)' in training",
        pool_answer=(MEAN_LINE, "return (hidden * real).sum(dim=0) / real.sum(dim=0)  # (B, D)")),
    "softmax-output": m(
        6, {"test-model": "classifier.softmax-output"},
        "a softmax at the end of forward, then F.cross_entropy on probabilities (a double softmax)",
        model_answer=("return self.head(pool(hidden, key_padding_mask, self.pooling))  # (B, K)",
                      "return self.head(pool(hidden, key_padding_mask, self.pooling)).softmax(dim=-1)  # (B, K)")),
    "encoder-mask-inverted": m(
        4, {"test-model": "classifier.symptom.raised", "test-trained": "trained.symptom.raised"},
        "~key_padding_mask given to the encoder, as if it were Hugging Face's attention_mask (1 = real token)",
        model_answer=(ENCODE_LINE, "hidden = self.encoder(x, src_key_padding_mask=~key_padding_mask)  # (B, S, D)")),
    "encoder-output-unused": m(
        6, {"test-model": "classifier.encoder-skipped"},
        "a copy-paste slip: the embeddings x pooled instead of the encoder's output",
        model_answer=("self.head(pool(hidden, key_padding_mask, self.pooling))",
                      "self.head(pool(x, key_padding_mask, self.pooling))")),
    "pooling-not-passed": m(
        6, {"test-model": "classifier.pooling-ignored"},
        "pool(hidden, key_padding_mask) with the default 'cls', whatever self.pooling says",
        model_answer=("pool(hidden, key_padding_mask, self.pooling)", "pool(hidden, key_padding_mask)")),
}

# ---------------------------------------------------------------------------------------------------
# rnn_self_attention: stage 2, RNN + self-attention
# ---------------------------------------------------------------------------------------------------

BLOCK_RETURN = "        return self.norm(annotations + attended)  # the residual, then layer norm"
ATTEND_CALL = ("        attended, _ = self.self_attention(annotations, annotations, annotations,\n"
               "                                          key_padding_mask=key_padding_mask)  # (B, S, A)")

RNN_SELF_ATTENTION = {
    "no-residual": m(
        5, {"test-block": "selfblock.no-residual", "test-model": "stage2.symptom.everywhere"}, planted=True,
        block_answer=(BLOCK_RETURN, "        return self.norm(attended)")),
    "mean-with-padding": m(
        6, {"test-mean": "realmean.includes-padding", "test-model": "stage2.symptom.partial"}, planted=True,
        mean_answer=("    real = (~key_padding_mask)[..., None].to(memory.dtype)  # (B, S, 1): 1 at real positions\n"
                     "    return (memory * real).sum(dim=1) / real.sum(dim=1)  # (B, A)",
                     "    return memory.mean(dim=1)")),
    "attention-ignores-padding": m(
        5, {"test-general": "general.padding-ignored", "test-model": "stage2.symptom.partial"}, planted=True,
        general_answer=('    scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))'
                        "  # hide padding from every query\n", "")),
    # --- found ---
    "pre-norm": m(
        5, {"test-block": "selfblock.pre-norm", "test-model": "stage2.symptom.everywhere"},
        "pre-LN written where the block is post-LN: the two orders of Xiong et al. (2020) mixed up",
        block_answer=[(ATTEND_CALL, "        normed = self.norm(annotations)\n"
                                    "        attended, _ = self.self_attention(normed, normed, normed,\n"
                                    "                                          key_padding_mask=key_padding_mask)"),
                      (BLOCK_RETURN, "        return annotations + attended")]),
    "block-ignores-padding": m(
        5, {"test-block": "selfblock.padding-ignored", "test-model": "stage2.symptom.partial"},
        "padding left out of self-attention: the real positions read the padding (PyTorch forums, 'output changes "
        "with padding')",
        block_answer=(",\n                                          key_padding_mask=key_padding_mask)", ")")),
    "block-returns-pair": m(
        5, {"test-block": "selfblock.symptom.return-type", "test-model": "stage2.symptom.raised"},
        "the attention module's (output, weights) passed on as it is",
        block_answer=[("        attended, _ = self.self_attention(", "        attended, weights = self.self_attention("),
                      (BLOCK_RETURN, "        return self.norm(annotations + attended), weights")]),
    "mean-divides-by-length": m(
        6, {"test-mean": "realmean.divides-by-length", "test-model": "stage2.symptom.partial"},
        "the padded length S as the divisor: masked sum right, count wrong",
        mean_answer=("real.sum(dim=1)  # (B, A)", "memory.size(1)  # (B, A)")),
    "mean-mask-polarity": m(
        6, {"test-mean": "realmean.mask-inverted", "test-model": "stage2.symptom.nan"},
        "the padding mask read as Hugging Face's attention_mask (1 = real): the opposite polarity",
        mean_answer=("real = (~key_padding_mask)[..., None]", "real = key_padding_mask[..., None]")),
    "softmax-over-queries": m(
        5, {"test-general": "general.softmax-over-queries", "test-model": "stage2.symptom.nan"},
        "a softmax over a fixed dim, dim=1, in a (B, T, S) table: PetrochukM/PyTorch-NLP#2",
        general_answer=("torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=1)")),
    "general-scaled": m(
        5, {"test-general": "general.scaled", "test-model": "stage2.symptom.everywhere"},
        "the 1/sqrt(d) of scaled dot-product attention copied into Luong's general score",
        general_answer=("    scores = query @ W @ memory.transpose(-2, -1)  # (B, T, Q) @ (Q, A) @ (B, A, S) -> (B, T, S)",
                        "    scores = query @ W @ memory.transpose(-2, -1) / math.sqrt(memory.size(-1))")),
    "general-W-transposed": m(
        5, {"test-general": "general.symptom.raised", "test-model": "stage2.symptom.raised"},
        "W applied the wrong way round, query @ W.T: 'mat1 and mat2 shapes cannot be multiplied'",
        general_answer=("query @ W @ memory", "query @ W.T @ memory")),
    "masked-after-softmax": m(
        5, {"test-general": "general.masked-after-softmax", "test-model": "stage2.symptom.partial"},
        "padding zeroed after the softmax instead of -inf before it, so rows no longer sum to 1",
        general_answer=[('    scores = scores.masked_fill(key_padding_mask[:, None, :], float("-inf"))'
                         "  # hide padding from every query\n", ""),
                        ("    weights = torch.softmax(scores, dim=-1)  # over the source positions",
                         "    weights = torch.softmax(scores, dim=-1).masked_fill(key_padding_mask[:, None, :], 0.0)")]),
    "state-first": m(
        8, {"test-model": "stage2.state-first"},
        "[s_t; c_t] where the layout of W_c is [c_t; s_t]: Luong et al. write the context first (eq. 5)",
        model_answer=("torch.cat([context, states], dim=-1)", "torch.cat([states, context], dim=-1)")),
    "decoder-from-zeros": m(
        8, {"test-model": "stage2.decoder-starts-at-zero"},
        "the decoder GRU run without its initial state: hidden computed, never passed",
        model_answer=("self.decoder(self.tgt_embed(tgt_in), hidden[None])", "self.decoder(self.tgt_embed(tgt_in))")),
    "hidden-not-unsqueezed": m(
        8, {"test-model": "stage2.symptom.raised"},
        "a (B, H) state given to nn.GRU, which wants (layers, B, H): 'hx should also be 3-D'",
        model_answer=("self.decoder(self.tgt_embed(tgt_in), hidden[None])",
                      "self.decoder(self.tgt_embed(tgt_in), hidden)")),
}


# ---------------------------------------------------------------------------------------------------
# attention_without_rnn: stage 3, attention without RNN
# ---------------------------------------------------------------------------------------------------

LEARNED_CHECK = ("        if stop > self.max_len:\n"
                 '            raise ValueError(f"positions {offset}..{stop - 1} do not exist: this table has '
                 '{self.max_len}")\n')

ATTENTION_WITHOUT_RNN = {
    "ignores-offset": m(
        7, {"test-learned": "learned.ignores-offset"}, planted=True,
        learned_answer=("positions = torch.arange(offset, stop, device=x.device)",
                        "positions = torch.arange(x.size(1), device=x.device)")),
    "sines-trainable": m(
        8, {"test-sinusoidal": "sines.trainable"}, planted=True,
        sinusoidal_answer=('        self.register_buffer("table", table, persistent=False)  # moves with .to(device), '
                           "never trained", "        self.table = nn.Parameter(table)")),
    "unscaled": m(
        5, {"test-embed": "embed.unscaled", "test-model": "stage3.unscaled"}, planted=True,
        embed_answer=("weight[ids] * math.sqrt(weight.size(1))", "weight[ids]"),
        model_answer=[("self.src_embed(src) * math.sqrt(self.d_model)", "self.src_embed(src)"),
                      ("self.tgt_embed(tgt_in) * math.sqrt(self.d_model)", "self.tgt_embed(tgt_in)")]),
    # --- found ---
    "no-range-check": m(
        7, {"test-learned": "learned.wrong-error"},
        "no check of offset + T: nn.Embedding raises 'IndexError: index out of range in self' on its own",
        learned_answer=(LEARNED_CHECK, "")),
    "wraps-around": m(
        7, {"test-learned": "learned.no-error"},
        "positions taken modulo max_len to avoid the IndexError, so the table silently wraps around",
        learned_answer=[(LEARNED_CHECK, ""),
                        ("torch.arange(offset, stop, device=x.device)",
                         "torch.arange(offset, stop, device=x.device) % self.max_len")]),
    "off-by-one-check": m(
        7, {"test-learned": "learned.refuses-the-last-rows"},
        "a >= where > belongs, the classic fencepost: the last T positions of the table refused",
        learned_answer=("        if stop > self.max_len:", "        if stop >= self.max_len:")),
    "batch-positions": m(
        4, {"test-learned": "learned.symptom.raised", "test-model": "stage3.symptom.raised"},
        "positions counted along the batch dimension, torch.arange(x.size(0)): batch-first confusion",
        learned_answer=("        positions = torch.arange(offset, stop, device=x.device)  # (T,)",
                        "        positions = torch.arange(offset, offset + x.size(0), device=x.device)")),
    "sines-ignore-offset": m(
        8, {"test-sinusoidal": "sines.ignores-offset"},
        "the decoder's offset forgotten when the table is sliced: every call starts at row 0",
        sinusoidal_answer=("return x + self.table[offset:stop]", "return x + self.table[: x.size(1)]")),
    "scaled-by-vocabulary": m(
        8, {"test-embed": "embed.scaled-by-vocabulary"},
        "sqrt of weight.size(0), the vocabulary size, for the model dimension weight.size(1)",
        embed_answer=("math.sqrt(weight.size(1))", "math.sqrt(weight.size(0))")),
    "scaled-after-positions": m(
        8, {"test-embed": "embed.scaled-after-positions"},
        "the sum scaled, positions included: (E[ids] + PE) * sqrt(D)",
        embed_answer=[("    x = weight[ids] * math.sqrt(weight.size(1))  # (B, T, D): sqrt(D) E[ids]\n",
                       "    x = weight[ids]\n"),
                      ("        x = x + table[: ids.size(1)]  # positions 0 .. T - 1, the same for every sequence\n"
                       "    return x",
                       "        x = x + table[: ids.size(1)]\n    return x * math.sqrt(weight.size(1))")]),
    "target-without-positions": m(
        7, {"test-model": "stage3.positions-on-source-only"},
        "positions added to the encoder's input only: the decoder then cannot tell which digit it is writing",
        model_answer=("        if self.positions is not None:\n            y = self.positions(y)\n", "")),
    "memory-mask-inverted": m(
        7, {"test-model": "stage3.symptom.raised"},
        "~src_key_padding_mask passed to the decoder, as for Keras or Hugging Face (1 = attend)",
        model_answer=("self.decoder_layer(y, memory, src_key_padding_mask)",
                      "self.decoder_layer(y, memory, ~src_key_padding_mask)")),
}


CORPUS = {"sdpa": SDPA, "bahdanau": BAHDANAU, "multihead": MULTIHEAD, "positional": POSITIONAL,
          "transformer": TRANSFORMER, "bert": BERT, "rnn_self_attention": RNN_SELF_ATTENTION,
          "attention_without_rnn": ATTENTION_WITHOUT_RNN, "gpt": GPT, "classifier": CLASSIFIER}
