"""Checks for the *positional encodings* notebook (``solutions/positional``): the sinusoidal table, the
rotation that shifts it by k positions, and self-attention without and with positions (permutation
equivariance, then order).

Shape legend: B batch, T sequence length, D model dim (``d_model``), Dk / Dv projected sizes. The layer checks use
(B, T, D) = (2, 6, 16), Dk = 8, Dv = 16 and a table of 20 positions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from coursekit.attention import scaled_dot_product_attention as _reference_sdpa
from coursekit.grading.core import (Reference, ShortcutPolicy, expect_tensor, generator, invoke, register_task,
                                    seed_or_fresh)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, how_far
from coursekit.positional import sinusoidal_table as _reference_table

_POLICY = ShortcutPolicy(
    (Reference("coursekit.positional", "coursekit.positional"),
     Reference("coursekit.transformer", "coursekit.transformer"),
     Reference("coursekit.seq2seq.AttentionOnlyEncoderDecoder", "coursekit.seq2seq", ("AttentionOnlyEncoderDecoder",))),
    {},
    instead="torch.arange, torch.sin, torch.cos and basic tensor operations",
)
TABLE_TASK = register_task("the sinusoidal positional encoding", _POLICY, code="table")
OFFSET_TASK = register_task("relative positions as rotations", _POLICY, code="offset")
LAYER_TASK = register_task("self-attention with positional encodings", _POLICY, code="layer")


# ---------------------------------------------------------------------------------------------------
# Part 1: the table
# ---------------------------------------------------------------------------------------------------


def table_variant(max_len: int, d_model: int, *, rate: str = "2i/d", sin_cols: str = "even", cos_cols: str = "odd",
                  layout: str = "interleave", first: str = "sin", start: int = 0, cos_rate: str | None = None,
                  transpose: bool = False, **_: Any) -> torch.Tensor:
    """The sinusoidal table with (at most) one planted mistake, float64; the defaults give the reference.

    ``rate``: the frequency of pair i, "2i/d" (1 / 10000^(2i/d)), "i/d", "4i/d", "column" (column j: 10000^(j/d)),
    "times" (pos * 10000^(2i/d)), "int" (an integer exponent, 2i // d = 0: every pair at 1 radian a position),
    "exp-floor" (e^(-2i)). ``cos_rate``: another rate for the cosines ("2(i+1)/d"). ``sin_cols``/``cos_cols``:
    which columns each fills ("even", "odd", "none").
    """
    pos = torch.arange(start, start + max_len, dtype=torch.float64)[:, None]  # (max_len, 1)
    i = torch.arange(d_model // 2, dtype=torch.float64)  # pair index

    def angle_of(kind: str) -> torch.Tensor:
        if kind == "column":
            return pos / 10000.0 ** (torch.arange(d_model, dtype=torch.float64) / d_model)  # (max_len, D)
        exponent = {"2i/d": 2 * i / d_model, "i/d": i / d_model, "4i/d": 4 * i / d_model, "int": 0 * i,
                    "2(i+1)/d": 2 * (i + 1) / d_model}.get(kind)
        if kind == "times":
            return pos * 10000.0 ** (2 * i / d_model)
        if kind == "exp-floor":
            return pos * torch.exp(-2 * i)
        return pos / 10000.0 ** exponent  # (max_len, D/2)

    angle = angle_of(rate)
    if rate == "column":
        table = torch.zeros(max_len, d_model, dtype=torch.float64)
        table[:, 0::2], table[:, 1::2] = torch.sin(angle[:, 0::2]), torch.cos(angle[:, 1::2])
        return table
    a, b = torch.sin(angle), torch.cos(angle_of(cos_rate) if cos_rate else angle)
    if first == "cos":
        a, b = torch.cos(angle), torch.sin(angle)
    if layout == "concat":
        table = torch.cat([a, b], dim=1)
    else:
        table = torch.zeros(max_len, d_model, dtype=torch.float64)
        slots = {"even": slice(0, None, 2), "odd": slice(1, None, 2)}
        for col in (("even", "odd") if sin_cols == "both" else () if sin_cols == "none" else (sin_cols,)):
            table[:, slots[col]] = a
        if cos_cols != "none":
            table[:, slots[cos_cols]] = b
    return table.T if transpose else table


def _table_mutant(code: str, says: str, atol: float | None = None, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda max_len, d_model, **_: table_variant(max_len, d_model, **mistake), atol=atol)


_TABLE_MUTANTS = (
    _table_mutant("table.swapped", "Your sines and cosines are swapped: column 2i holds sin(pos / 10000^(2i/d)) and "
                  "column 2i+1 the cosine of the same angle.", first="cos"),
    _table_mutant("table.concatenated", "You put all the sines first and then all the cosines. They interleave: column "
                  "2i is a sine and column 2i+1 the cosine of the same angle.", layout="concat"),
    _table_mutant("table.concatenated-cos-first", "You put all the cosines first and then all the sines. They "
                  "interleave: column 2i is a sine and column 2i+1 the cosine of the same angle.", layout="concat",
                  first="cos"),
    _table_mutant("table.exponent-i", "Your frequencies use 10000^(i/d) with i the pair index; the paper's exponent is "
                  "2i/d (i counts pairs of columns), so the slowest pair turns at 1/10000 radian per position.",
                  rate="i/d"),
    _table_mutant("table.exponent-4i", "Your frequencies use 10000^(4i/d): the exponent 2i/d was doubled again (2 * "
                  "torch.arange(0, d, 2) counts the 2 twice). Use torch.arange(0, d, 2) / d, or 2 * "
                  "torch.arange(d // 2) / d.", rate="4i/d"),
    _table_mutant("table.column-exponent", "Each sine and its cosine must share one frequency: columns 2i and 2i+1 both "
                  "use pos / 10000^(2i/d). Yours gives every column j its own exponent j/d.", rate="column"),
    _table_mutant("table.cos-exponent-shifted", "Your cosine in column 2i+1 uses 10000^(2(i+1)/d), the next pair's "
                  "frequency: it must use the same angle as the sine in column 2i, pos / 10000^(2i/d).",
                  cos_rate="2(i+1)/d"),
    _table_mutant("table.multiplied", "You multiplied the position by 10000^(2i/d); divide by it: the angle is "
                  "pos / 10000^(2i/d).", atol=0.25, rate="times"),  # angles of 1e5 radians: float32 holds ~0.01
    _table_mutant("table.integer-exponent", "Every pair of your table turns at 1 radian per position: the exponent "
                  "2i/d came out as 0, which integer division gives (2 * i // d_model). Use true division, / d_model, "
                  "on floats.", rate="int"),
    _table_mutant("table.exp-floor", "Pair i of your table turns at e^(-2i) radians per position instead of "
                  "1 / 10000^(2i/d): a // where / was meant gives exactly this, e.g. -math.log(10000.0) / d_model // 2.",
                  rate="exp-floor"),
    _table_mutant("table.starts-at-one", "Your positions start at 1; they start at 0, so row 0 is sin(0) = 0 and "
                  "cos(0) = 1 in every pair.", start=1),
    _table_mutant("table.sines-only", "Your table holds sines in every column: the odd columns, 2i+1, hold the COSINE "
                  "of the angle.", cos_cols="none", sin_cols="both"),
    _table_mutant("table.odd-columns-empty", "The odd columns of your table are 0 and the even ones hold the cosines: "
                  "the sines go to table[:, 0::2] and the cosines to table[:, 1::2].", sin_cols="none",
                  cos_cols="even"),
    _table_mutant("table.transposed", "Your table has one ROW per frequency column, (d_model, max_len): it needs one "
                  "row per position, (max_len, d_model).", transpose=True),
)


def _table_sizes(seed: int) -> tuple[int, int]:
    """A second size from the seed: d_model even in 8..38, max_len in 20..79, never equal (a square table could not
    show which way round it is)."""
    g = generator(seed)
    d_model = 2 * int(torch.randint(4, 20, (), generator=g))
    max_len = int(torch.randint(20, 79, (), generator=g))
    return (max_len + 1 if max_len >= d_model else max_len), d_model


def _table_probes(seed: int) -> list[dict[str, Any]]:
    max_len, d_model = _table_sizes(seed)
    return [dict(max_len=50, d_model=16), dict(max_len=max_len, d_model=d_model)]


TABLE = catalogue("positional.table", "table", lambda max_len, d_model, **_: table_variant(max_len, d_model).float(),
                  _TABLE_MUTANTS, _table_probes)


def check_sinusoidal_table(fn: Callable, seed: int | None = None) -> None:
    """``sinusoidal_encoding(max_len, d_model)``: (max_len, D) with PE[pos, 2i] = sin(pos / 10000^(2i/D)) and
    PE[pos, 2i+1] = cos(pos / 10000^(2i/D)) (Vaswani et al., 2017, section 3.5), for two sizes."""
    seed = seed_or_fresh(seed)
    probes = TABLE.probes(seed)
    outputs = []
    for probe in probes:
        max_len, d_model = probe["max_len"], probe["d_model"]
        got = invoke(fn, TABLE_TASK, (max_len, d_model), name="Your sinusoidal_encoding", params=("max_len", "d_model"),
                     expect=f"a float tensor of shape (max_len, d_model) = {(max_len, d_model)}", seed=seed)
        outputs.append(expect_tensor(got, f"sinusoidal_encoding({max_len}, {d_model})", TABLE_TASK))

    def symptom(got, want, probe):
        found = describe(got, want, what=f"For max_len={probe['max_len']}, d_model={probe['d_model']}, your table",
                         axes=("position", "column"), sizes={"max_len": probe["max_len"], "d_model": probe["d_model"]},
                         reference="the sinusoids")
        return found

    TABLE.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ the sinusoidal table, for two sizes")


# ---------------------------------------------------------------------------------------------------
# Part 2: shifting by k positions is a rotation
# ---------------------------------------------------------------------------------------------------


def offset_variant(k: int, d_model: int, *, sign: int = 1, use_k: bool = True, block: str = "rotation",
                   index: str = "2i", rate: str = "2i/d", **_: Any) -> torch.Tensor:
    """The (d_model, d_model) shift-by-k matrix with (at most) one planted mistake; the defaults give the reference."""
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    for i in range(d_model // 2):
        exponent = {"2i/d": 2 * i / d_model, "i/d": i / d_model}[rate]
        angle = (k if use_k else 1) / 10000.0 ** exponent
        c, s = math.cos(angle), sign * math.sin(angle)
        r = 2 * i if index == "2i" else i
        M[r, r], M[r, r + 1] = c, s
        M[r + 1, r], M[r + 1, r + 1] = (s, c) if block == "symmetric" else (-s, c)
    return M


def _offset_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda k, d_model, **_: offset_variant(k, d_model, **mistake))


_OFFSET_MUTANTS = (
    _offset_mutant("offset.backwards", "Your matrix moves back by k positions, M @ PE[pos + k] = PE[pos]: it is the "
                   "transpose of the one asked for. (Written for row vectors, PE[pos + k] = PE[pos] @ M^T, the matrix "
                   "on the right is the transpose; this notebook, like the book, applies M on the left, M @ PE[pos].) "
                   "Each 2 x 2 block is [[cos(k w), sin(k w)], [-sin(k w), cos(k w)]].", sign=-1),
    _offset_mutant("offset.ignores-k", "Your matrix shifts by one position whatever k is: the angle of pair i is "
                   "k * w_i, with w_i = 1 / 10000^(2i/d).", use_k=False),
    _offset_mutant("offset.not-a-rotation", "Your 2 x 2 blocks are [[cos, sin], [sin, cos]], which is not a rotation: "
                   "the new cosine is cos(pos w) cos(k w) - sin(pos w) sin(k w), so the block's second row is "
                   "[-sin(k w), cos(k w)].", block="symmetric"),
    _offset_mutant("offset.block-index", "Your blocks sit at rows and columns (i, i+1) instead of (2i, 2i+1), so they "
                   "overlap: pair i owns columns 2i and 2i+1 of the table.", index="i"),
    _offset_mutant("offset.exponent-i", "Your pair i turns by k / 10000^(i/d); the paper's exponent is 2i/d (i counts "
                   "pairs of columns).", rate="i/d"),
)


def _offset_probes(seed: int) -> list[dict[str, Any]]:
    """d_model = 16; k = 1, then k drawn from 2..11."""
    return [dict(k=1, d_model=16), dict(k=int(torch.randint(2, 12, (), generator=generator(seed))), d_model=16)]


OFFSET = catalogue("positional.offset", "offset", lambda k, d_model, **_: offset_variant(k, d_model), _OFFSET_MUTANTS,
                   _offset_probes)


def check_offset_matrix(fn: Callable, seed: int | None = None) -> None:
    """``offset_matrix(k, d_model)``: M (D, D) with PE[pos + k] = M @ PE[pos] for every position (the sinusoids' rows
    span all D dims, so that M is unique: the block-diagonal rotation)."""
    seed = seed_or_fresh(seed)
    probes = OFFSET.probes(seed)
    outputs = []
    for probe in probes:
        k, d_model = probe["k"], probe["d_model"]
        got = invoke(fn, OFFSET_TASK, (k, d_model), name="Your offset_matrix", params=("k", "d_model"),
                     expect=f"a (d_model, d_model) = {(d_model, d_model)} matrix", seed=seed)
        outputs.append(expect_tensor(got, f"offset_matrix({k}, {d_model})", OFFSET_TASK))

    def symptom(got, want, probe):
        if got.shape == want.shape and got.is_floating_point():
            table = _reference_table(64, probe["d_model"]).double()
            moved = table[:-probe["k"]] @ got.double().T
            found = describe(got, want, what=f"For k = {probe['k']}, your matrix", axes=("row", "column"),
                             reference="the block-diagonal rotation")
            return Symptom(found.kind, f"{found.text} So M @ PE[pos], against PE[pos + {probe['k']}], "
                                       f"{how_far(moved, table[probe['k']:])}.")
        return describe(got, want, what=f"For k = {probe['k']}, your matrix", sizes={"d_model": probe["d_model"]})

    OFFSET.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ PE[pos + k] = M @ PE[pos]: a shift by k positions is a rotation of each pair")


# ---------------------------------------------------------------------------------------------------
# Parts 3 and 4: self-attention without and with positions
# ---------------------------------------------------------------------------------------------------

# Dv = D, unlike every other size, so that positions added to the output (D features) can be told as themselves.
LB, LT, LD, LDK, LDV, LMAX = 2, 6, 16, 8, 16, 20


def layer_variant(x: torch.Tensor, w_q: torch.Tensor, w_k: torch.Tensor, w_v: torch.Tensor,
                  table: torch.Tensor | None = None, *, where: str = "input", rows: str = "first", causal: bool = False,
                  k_from: str = "k", v_from: str = "v", **_: Any) -> torch.Tensor:
    """One self-attention layer with (at most) one planted mistake; the defaults give the reference.

    ``where`` the positions go: "input" (x + PE), "output", "qk" (queries and keys only), "times" (x * PE),
    "nowhere". ``rows``: "first" (table[:T]), "from 1" (table[1:T+1]), "last" (table[-T:]).
    """
    T = x.size(1)
    pe = None
    if table is not None:
        pe = {"first": table[:T], "from 1": table[1:T + 1], "last": table[-T:]}[rows]
    w = {"q": w_q, "k": w_k, "v": w_v}
    mask = torch.ones(T, T, dtype=torch.bool).triu(1) if causal else None
    inp = x
    if pe is not None and where == "input":
        inp = x + pe
    elif pe is not None and where == "times":
        inp = x * pe
    q_in = x + pe if pe is not None and where == "qk" else inp
    v = inp if v_from == "x" else inp @ w[v_from]
    out = _reference_sdpa(q_in @ w_q, q_in @ w[k_from], v, attn_mask=mask)[0]
    return out + pe if pe is not None and where == "output" else out


def _layer_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda x, w_q, w_k, w_v, table=None, **_: layer_variant(x, w_q, w_k, w_v, table,
                                                                                      **mistake))


_LAYER_MUTANTS = (
    _layer_mutant("layer.causal", "Your layer masks later positions (a causal mask): this layer sees its whole input, "
                  "so mask nothing.", causal=True),
    _layer_mutant("layer.keys-from-w-q", "Your keys are x @ w_q: project them with w_k.", k_from="q"),
    _layer_mutant("layer.values-unprojected", "Your output averages x itself (D features): the values are x @ w_v.",
                  v_from="x"),
)
_POSITION_MUTANTS = (
    _layer_mutant("layer.ignores-table", "Your layer ignores the table: add it to x before the projections, "
                  "x + table[:T].", where="nowhere"),
    _layer_mutant("layer.positions-on-output", "You added the positions to the output; add them to the input x "
                  "instead, so that the scores (queries and keys) can use them: attend over x + table[:T].",
                  where="output"),
    _layer_mutant("layer.positions-on-queries-and-keys", "You added the positions to the queries and keys only; add "
                  "them to x itself, so that the values carry them too: attend over x + table[:T].", where="qk"),
    _layer_mutant("layer.positions-multiplied", "You multiplied x by the positions; add them: x + table[:T].",
                  where="times"),
    _layer_mutant("layer.rows-from-1", "You added the rows of positions 1 to T, table[1:T+1]; position t of x takes "
                  "row t, so add table[:T], starting at row 0.", rows="from 1"),
    _layer_mutant("layer.last-rows", "You added the LAST T rows of the table, table[-T:]; position t of x takes row "
                  "t, table[:T].", rows="last"),
)


def _layer_inputs(seed: int) -> dict[str, torch.Tensor]:
    g = generator(seed)
    x = torch.randn(LB, LT, LD, generator=g)
    w_q, w_k, w_v = (torch.randn(LD, n, generator=g) / math.sqrt(LD) for n in (LDK, LDK, LDV))
    return dict(x=x, w_q=w_q, w_k=w_k, w_v=w_v)


def _equivariance_probes(seed: int) -> list[dict[str, Any]]:
    """x (B, T, D) = (2, 6, 16), w_q and w_k (16, 8), w_v (16, 16); then the same x with its positions shuffled."""
    inputs = _layer_inputs(seed)
    perm = torch.randperm(LT, generator=generator(seed + 1))
    if torch.equal(perm, torch.arange(LT)):
        perm = perm.roll(1)
    return [inputs, dict(inputs, x=inputs["x"][:, perm], perm=perm)]


def _position_probes(seed: int) -> list[dict[str, Any]]:
    """As above, with a table of 20 positions."""
    return [dict(_layer_inputs(seed), table=_reference_table(LMAX, LD))]


def _reference_layer(x, w_q, w_k, w_v, table=None, **_):
    return layer_variant(x, w_q, w_k, w_v, table)


EQUIVARIANCE = catalogue("positional.equivariance", "layer", _reference_layer, _LAYER_MUTANTS, _equivariance_probes)
POSITIONS = catalogue("positional.positions", "layer", _reference_layer, _LAYER_MUTANTS + _POSITION_MUTANTS,
                      _position_probes)
_LAYER_SIZES = {"B": LB, "T": LT, "D": LD, "Dk": LDK}


def _call_layer(fn: Callable, probe: Mapping[str, Any], seed: int) -> torch.Tensor:
    table = probe.get("table")
    out = invoke(fn, LAYER_TASK, (probe["x"], probe["w_q"], probe["w_k"], probe["w_v"]), {"table": table},
                 name="Your self_attention_layer", params=("x", "w_q", "w_k", "w_v"),
                 expect=f"the attention output, (B, T, Dv) = {(LB, LT, LDV)}", seed=seed)
    return expect_tensor(out, "self_attention_layer(...)", LAYER_TASK)


def check_permutation_equivariance(fn: Callable, seed: int | None = None) -> None:
    """Without positions, self-attention is permutation-equivariant: shuffling the input positions shuffles the
    output rows the same way, and changes nothing else; and the output is attention(x W_q, x W_k, x W_v)."""
    seed = seed_or_fresh(seed)
    probes = EQUIVARIANCE.probes(seed)
    outputs = [_call_layer(fn, probe, seed) for probe in probes]

    def symptom(got, want, probe):
        out, shuffled, perm = outputs[0], outputs[1], probes[1]["perm"]
        finite = bool(torch.isfinite(out).all() and torch.isfinite(shuffled).all())  # describe names NaN
        if finite and out.shape == shuffled.shape and not torch.allclose(shuffled, out[:, perm], atol=1e-4):
            return Symptom("not-equivariant", f"Without positions your layer is not permutation-equivariant: shuffling "
                                              f"the input positions (order {perm.tolist()}) should shuffle the output "
                                              f"rows the same way, and the shuffled output "
                                              f"{how_far(shuffled, out[:, perm])}. With table=None, add nothing per "
                                              "position and mask nothing.")
        return describe(got, want, what="Without positions, your output", axes=("batch item", "position", "feature"),
                        sizes=_LAYER_SIZES, reference="attention(x W_q, x W_k, x W_v)")

    EQUIVARIANCE.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ without positions: shuffle the input, and the output is shuffled the same way")


def check_attention_with_positions(fn: Callable, seed: int | None = None) -> None:
    """With a table, the layer attends over x + table[:T]: the positions go into the input, before the projections."""
    seed = seed_or_fresh(seed)
    probes = POSITIONS.probes(seed)
    outputs = [_call_layer(fn, probe, seed) for probe in probes]
    POSITIONS.judge(outputs, probes, seed=seed, describe=lambda got, want, probe: describe(
        got, want, what="With positions, your output", axes=("batch item", "position", "feature"), sizes=_LAYER_SIZES,
        reference="attention over x + table[:T]"))
    print("✓ with positions: attention over x + PE, and the order of the input now matters")
