"""Checks for the *stage 3: attention without RNN* notebook (``solutions/attention_without_rnn``): learned positions,
sinusoidal positions (a buffer, not a parameter), the scaled embedding, and the encoder-decoder without recurrence
in its three versions, sinusoidal, learned and no positions (against
:class:`coursekit.seq2seq.AttentionOnlyEncoderDecoder` with the same weights).

Shape legend: B batch, T sequence length, S source length, D model dim, V vocabulary size. No two sizes of a check are
equal: the position modules use (B, T, D) = (2, 5, 6) and tables of 9 positions; the embedding (B, T) = (2, 5), V = 11,
D = 6; the model vocabularies 11 and 13, D = 8, 2 heads, F = 12, (B, S, T) = (3, 5, 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, expect_pair, expect_tensor,
                                    first_line, forbid_shortcuts, generator, invoke, register_task, seed_or_fresh,
                                    seeded_module, task_code, where, where_it_broke)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe
from coursekit.masks import padding_mask
from coursekit.positional import sinusoidal_table
from coursekit.errors import SandboxError

_REFERENCES = (
    Reference("coursekit.positional's encodings", "coursekit.positional",
              ("SinusoidalPositionalEncoding", "LearnedPositionalEncoding", "_PositionalEncoding")),
    Reference("coursekit.seq2seq.AttentionOnlyEncoderDecoder", "coursekit.seq2seq", ("AttentionOnlyEncoderDecoder",)),
    Reference("coursekit.transformer", "coursekit.transformer"),
)
_POLICY = ShortcutPolicy(_REFERENCES, {}, instead="torch.arange, the modules __init__ gives you, sinusoidal_table and "
                                                  "basic tensor operations")
LEARNED_TASK = register_task("learned positional encodings", _POLICY, code="learned")
SINES_TASK = register_task("sinusoidal positional encodings as a module", _POLICY, code="sines")
EMBED_TASK = register_task("the scaled embedding", _POLICY, code="embed")
STAGE3_TASK = register_task("the encoder-decoder without RNN", _POLICY, code="stage3")

PB, PT, PD, PMAX = 2, 5, 6, 9


# ---------------------------------------------------------------------------------------------------
# Parts 1 and 2: positions as modules
# ---------------------------------------------------------------------------------------------------


def positions_variant(x: torch.Tensor, table: torch.Tensor, offset: int = 0, *, start: str = "offset",
                      added: bool = True, shift: int = 0, **_: Any) -> torch.Tensor:
    """x plus the rows of positions offset .. offset + T - 1 of ``table``, with (at most) one planted mistake.
    ``start``: "offset" (the reference) or "zero" (the offset ignored). ``shift``: rows from one further on."""
    first = (offset if start == "offset" else 0) + shift
    rows = table[first: first + x.size(1)]  # (T, D)
    return x + rows if added else rows  # (B, T, D), or the (T, D) rows alone


def _position_mutants(code: str) -> tuple[Mutant, ...]:
    def mutant(name: str, says: str, **mistake: Any) -> Mutant:
        return Mutant(f"{code}.{name}", says, lambda x, table, offset=0, **_: positions_variant(
            x, table, offset, **mistake))

    return (
        mutant("ignores-offset", "Your encodings ignore offset: every call starts at position 0. With offset = k the "
               "first token of x sits at position k, so add the rows k .. k + T - 1.", start="zero"),
        mutant("not-added", "You return the position vectors alone: add them to x, which carries the tokens.",
               added=False),
        mutant("starts-at-one", "Your positions start at 1 (or offset + 1): the first token of x takes row offset, "
               "which is 0 when no offset is given.", shift=1),
    )


def _position_probes(seed: int) -> list[dict[str, Any]]:
    """x (B, T, D) = (2, 5, 6) at offset 0 and at an offset drawn from 1..3 (the table has 9 positions)."""
    g = generator(seed)
    offset = int(torch.randint(1, PMAX - PT, (), generator=g))
    return [dict(x=torch.randn(PB, PT, PD, generator=g), offset=o) for o in (0, offset)]


def _call_positions(module: Any, task: str, probe: Mapping[str, Any], name: str, seed: int) -> torch.Tensor:
    got = invoke(module, task, (probe["x"],), {"offset": probe["offset"]}, name=f"Your {name}", params=("x",),
                 expect=f"x plus the positions {probe['offset']}..{probe['offset'] + PT - 1}, (B, T, D) = "
                        f"{(PB, PT, PD)}", seed=seed)
    return expect_tensor(got, f"{name}(x, offset={probe['offset']})", task)


def _describe_positions(name: str) -> Callable[..., Symptom]:
    def symptom(got, want, probe):
        return describe(got, want, what=f"At offset {probe['offset']}, your output", axes=("batch item", "position",
                                                                                             "feature"),
                        sizes={"B": PB, "T": PT, "D": PD}, reference=f"x + {name}[offset:offset + T]")
    return symptom


def _reaches_the_last_position(module: Any, task: str, name: str, table: torch.Tensor, seed: int) -> None:
    """The last T positions of the table exist: the module must give them, not refuse them (a >= for a >)."""
    x = torch.randn(PB, PT, PD, generator=generator(seed + 4))
    offset = PMAX - PT
    try:
        with forbid_shortcuts(task):
            got = module(x, offset=offset)
    except (CheckFailed, NotImplementedError, SandboxError):
        raise
    except Exception as err:  # noqa: BLE001 (the learner's exception, read as data)
        ename = getattr(err, "ename", type(err).__name__)
        raise CheckFailed(f"Your {name} raised {ename} ({first_line(err)}) for positions {offset}..{PMAX - 1}, the "
                          f"last {PT} of a table of {PMAX} positions (0..{PMAX - 1}): they exist. Refuse only "
                          f"offset + T > max_len. {where(seed)}", code=f"{task_code(task)}.refuses-the-last-rows") \
            from None
    want = positions_variant(x, table, offset)
    if not (isinstance(got, torch.Tensor) and got.shape == want.shape and torch.allclose(got, want, atol=1e-4)):
        raise CheckFailed(f"At offset {offset}, where the last {PT} positions of the table begin, your {name} "
                          f"gives the wrong result; it is right at smaller offsets. {where(seed)}",
                          code=f"{task_code(task)}.symptom.partial")


def _refuses_past_the_end(module: Any, task: str, name: str, seed: int) -> None:
    """Positions max_len - 2 .. max_len + 2 do not exist: the module must raise a ValueError, not make them up."""
    x = torch.randn(PB, PT, PD, generator=generator(seed + 3))
    offset = PMAX - PT + 2
    try:
        with forbid_shortcuts(task):
            module(x, offset=offset)
    except (CheckFailed, NotImplementedError, SandboxError):
        raise
    except Exception as err:  # noqa: BLE001 (the learner's exception, read as data)
        ename = getattr(err, "ename", type(err).__name__)
        if ename == "ValueError":
            return
        line = where_it_broke(err)
        raise CheckFailed(f"Asked for positions {offset}..{offset + PT - 1} of a table of {PMAX}, your {name} "
                          f"raised {ename}: {first_line(err)}{f' (at {line})' if line else ''}. Those positions do "
                          f"not exist: compare offset + T with max_len first and raise a ValueError that says so. "
                          f"{where(seed)}", code=f"{task_code(task)}.wrong-error") from None
    raise CheckFailed(f"Your {name} returned a result for positions {offset}..{offset + PT - 1} of a table of {PMAX} "
                      f"(0..{PMAX - 1}): those positions do not exist, so it must raise a ValueError instead of "
                      f"wrapping around or padding. {where(seed)}", code=f"{task_code(task)}.no-error")


LEARNED = catalogue("attention_without_rnn.learned", "learned",
                    lambda x, table, offset=0, **_: positions_variant(x, table, offset), _position_mutants("learned"),
                    lambda seed: [dict(p, table=torch.randn(PMAX, PD, generator=generator(seed + 2)))
                                  for p in _position_probes(seed)])


def check_learned_positions(cls: Any, seed: int | None = None) -> None:
    """``LearnedPositions(d_model, max_len)``: with the reference's table, ``forward(x, offset)`` adds the vectors of
    positions offset .. offset + T - 1, and a position past the table raises a ValueError."""
    seed = seed_or_fresh(seed)
    probes = LEARNED.probes(seed)
    module = build_module(cls, LEARNED_TASK, {"embedding.weight": probes[0]["table"]}, PD, PMAX,
                          name="LearnedPositions")
    outputs = [_call_positions(module, LEARNED_TASK, probe, "LearnedPositions", seed) for probe in probes]
    LEARNED.judge(outputs, probes, seed=seed, describe=_describe_positions("embedding.weight"))
    _reaches_the_last_position(module, LEARNED_TASK, "LearnedPositions", probes[0]["table"], seed)
    _refuses_past_the_end(module, LEARNED_TASK, "LearnedPositions", seed)
    print("✓ learned positions: the vectors of positions offset .. offset + T - 1, and none past max_len")


SINES = catalogue("attention_without_rnn.sinusoidal", "sines",
                  lambda x, table, offset=0, **_: positions_variant(x, table, offset), _position_mutants("sines"),
                  lambda seed: [dict(p, table=sinusoidal_table(PMAX, PD)) for p in _position_probes(seed)])


def check_sinusoidal_positions(cls: Any, seed: int | None = None) -> None:
    """``SinusoidalPositions(d_model, max_len)``: no trainable parameters; ``forward(x, offset)`` adds
    PE[offset .. offset + T - 1]; a position past the table raises a ValueError."""
    seed = seed_or_fresh(seed)
    module = invoke(cls, SINES_TASK, (PD, PMAX), name="Building your SinusoidalPositions", params=("d_model",
                                                                                                  "max_len"))
    trainable = invoke(lambda: dict(module._parameters), SINES_TASK, name="Your SinusoidalPositions' parameters")
    if trainable:
        names = ", ".join(sorted(trainable))
        raise CheckFailed(f"Your SinusoidalPositions has trainable parameters ({names}): an optimizer would change "
                          f"the sinusoids during training. Keep the table with self.register_buffer(name, table, "
                          f"persistent=False), not nn.Parameter.", code="sines.trainable")
    invoke(lambda: module.eval(), SINES_TASK, name="Your SinusoidalPositions' eval()")
    probes = SINES.probes(seed)
    outputs = [_call_positions(module, SINES_TASK, probe, "SinusoidalPositions", seed) for probe in probes]
    SINES.judge(outputs, probes, seed=seed, describe=_describe_positions("sinusoidal_table(max_len, d_model)"))
    _reaches_the_last_position(module, SINES_TASK, "SinusoidalPositions", probes[0]["table"], seed)
    _refuses_past_the_end(module, SINES_TASK, "SinusoidalPositions", seed)
    print("✓ sinusoidal positions: a buffer, never trained, PE[offset .. offset + T - 1] added")


# ---------------------------------------------------------------------------------------------------
# Part 3: the scaled embedding
# ---------------------------------------------------------------------------------------------------

EB, ET, EV, ED, EMAX = 2, 5, 11, 6, 9


def embed_variant(ids: torch.Tensor, weight: torch.Tensor, table: torch.Tensor | None = None, *,
                  scale: str = "sqrt(D)", order: str = "scale first", rows: str = "first", **_: Any) -> torch.Tensor:
    """sqrt(D) weight[ids] + table[:T] with (at most) one planted mistake. ``scale``: "sqrt(D)", "none",
    "1/sqrt(D)", "sqrt(V)". ``order``: "scale first" or "scale the sum". ``rows``: "first" (table[:T]), "last"."""
    factor = {"sqrt(D)": math.sqrt(weight.size(1)), "none": 1.0, "1/sqrt(D)": 1 / math.sqrt(weight.size(1)),
              "sqrt(V)": math.sqrt(weight.size(0))}[scale]
    x = weight[ids]  # (B, T, D)
    if table is None:
        return x * factor
    pe = table[: ids.size(1)] if rows == "first" else table[-ids.size(1):]
    return (x + pe) * factor if order == "scale the sum" else x * factor + pe


def _embed_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda ids, weight, table=None, **_: embed_variant(ids, weight, table, **mistake))


_EMBED_MUTANTS = (
    _embed_mutant("embed.unscaled", "You did not scale the embeddings: multiply weight[ids] by sqrt(D) before adding "
                  "the positions.", scale="none"),
    _embed_mutant("embed.divided", "You divided the embeddings by sqrt(D); multiply them by it.", scale="1/sqrt(D)"),
    _embed_mutant("embed.scaled-by-vocabulary", "You scaled by the square root of the vocabulary size, "
                  "weight.size(0); the model dimension D is weight.size(1).", scale="sqrt(V)"),
    _embed_mutant("embed.scaled-after-positions", "You scaled the sum, so the positions are scaled too: multiply the "
                  "embeddings by sqrt(D) first, then add table[:T].", order="scale the sum"),
    _embed_mutant("embed.last-rows", "You added the LAST T rows of the table, table[-T:]; the first token is at "
                  "position 0: table[:T].", rows="last"),
)


def _embed_probes(seed: int) -> list[dict[str, Any]]:
    """ids (B, T) = (2, 5) from a vocabulary of 11, weight (11, 6), a sinusoidal table of 9 positions; then the same
    ids with no table."""
    g = generator(seed)
    ids = torch.randint(0, EV, (EB, ET), generator=g)
    weight = torch.randn(EV, ED, generator=g) / math.sqrt(ED)
    return [dict(ids=ids, weight=weight, table=sinusoidal_table(EMAX, ED)), dict(ids=ids, weight=weight, table=None)]


EMBED = catalogue("attention_without_rnn.embed", "embed",
                  lambda ids, weight, table=None, **_: embed_variant(ids, weight, table), _EMBED_MUTANTS,
                  _embed_probes)


def check_scaled_embedding(fn: Callable, seed: int | None = None) -> None:
    """``embed(ids, weight, table)``: sqrt(D) weight[ids] + table[:T], and sqrt(D) weight[ids] with no table."""
    seed = seed_or_fresh(seed)
    probes = EMBED.probes(seed)
    outputs = []
    for probe in probes:
        got = invoke(fn, EMBED_TASK, (probe["ids"], probe["weight"], probe["table"]), name="Your embed",
                     params=("ids", "weight", "table"), expect=f"(B, T, D) = {(EB, ET, ED)}", seed=seed)
        outputs.append(expect_tensor(got, "embed(...)", EMBED_TASK))

    def symptom(got, want, probe):
        what = "With a table, your embedding" if probe["table"] is not None else "With table=None, your embedding"
        return describe(got, want, what=what, axes=("batch item", "position", "feature"),
                        sizes={"B": EB, "T": ET, "D": ED}, reference="sqrt(D) weight[ids] + table[:T]")

    EMBED.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ the scaled embedding: sqrt(D) E[ids] + PE[:T]")


# ---------------------------------------------------------------------------------------------------
# Part 4: the encoder-decoder without RNN
# ---------------------------------------------------------------------------------------------------

SRC_V, TGT_V, D, HEADS, F, MAX_LEN = 11, 13, 8, 2, 12, 64
LENGTHS, T = (5, 3, 2), 4
KINDS = ("sinusoidal", "learned", "none")


def _reference_model(positions: str, seed: int) -> Any:
    from coursekit.seq2seq import AttentionOnlyConfig, AttentionOnlyEncoderDecoder

    config = AttentionOnlyConfig(SRC_V, TGT_V, d_model=D, nhead=HEADS, dim_feedforward=F, dropout=0.0,
                                 max_len=MAX_LEN, positions=positions)
    model = seeded_module(lambda: AttentionOnlyEncoderDecoder(config), seed)
    g = generator(seed + 1)
    with torch.no_grad():  # biases and gains away from 0 and 1, learned positions as large as the sinusoids
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or name.startswith("positions."):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (1.0 if "norm" in name and "weight" in name else 0))
    return model


def _notebook_names(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """coursekit.seq2seq's names -> the notebook's: the single layer on each side without the list around it."""
    return {key.replace("encoder_layers.0.", "encoder_layer.").replace("decoder_layers.0.", "decoder_layer."): value
            for key, value in state.items()}


def model_variant(model: Any, src: torch.Tensor, src_key_padding_mask: torch.Tensor, tgt: torch.Tensor, *,
                  scale: bool = True, src_positions: bool = True, tgt_positions: bool = True,
                  encoder_mask: bool = True, memory_mask: bool = True, **_: Any) -> torch.Tensor:
    """The notebook's AttentionWithoutRNN, run on the reference's modules, with (at most) one planted mistake."""
    factor = math.sqrt(D) if scale else 1.0
    none = torch.zeros_like(src_key_padding_mask)
    x = model.src_embed(src) * factor
    x = model.positions(x) if src_positions else x
    memory = model.encoder_layers[0](x, src_key_padding_mask if encoder_mask else none)
    y = model.tgt_embed(tgt) * factor
    y = model.positions(y) if tgt_positions else y
    y, _ = model.decoder_layers[0](y, memory, src_key_padding_mask if memory_mask else none)
    return model.out(y)


def _model_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda model, src, src_key_padding_mask, tgt, **_: model_variant(
        model, src, src_key_padding_mask, tgt, **mistake))


_MODEL_MUTANTS = (
    _model_mutant("stage3.unscaled", "You did not scale the embeddings: multiply them by sqrt(d_model) before adding "
                  "the positions, or the learned vectors drown the sinusoids (or the other way round).", scale=False),
    _model_mutant("stage3.positions-on-source-only", "Only your source gets positions: the target needs them too "
                  "(the same positions module, starting at 0), or the decoder cannot tell which digit it is "
                  "writing.", tgt_positions=False),
    _model_mutant("stage3.positions-on-target-only", "Only your target gets positions: add them to the source too, or "
                  "the encoder sees a bag of tokens.", src_positions=False),
    _model_mutant("stage3.encoder-ignores-padding", "Your encoder's positions read the padding: pass "
                  "src_key_padding_mask to self.encoder_layer.", encoder_mask=False),
    _model_mutant("stage3.decoder-ignores-padding", "Your decoder attends to the source's padding: pass "
                  "src_key_padding_mask to self.decoder_layer as the memory's mask.", memory_mask=False),
)


def _model_probes(seed: int) -> list[dict[str, Any]]:
    """The reference model three times (sinusoidal, learned, no positions; D = 8, 2 heads, F = 12), src (B, S) =
    (3, 5) with 5, 3 and 2 real tokens, tgt_in (B, T) = (3, 4) starting with [START]."""
    g = generator(seed)
    kpm = padding_mask(torch.tensor(LENGTHS), max(LENGTHS))
    src = torch.randint(4, SRC_V, kpm.shape, generator=g).masked_fill(kpm, 0)
    tgt = torch.randint(4, TGT_V, (len(LENGTHS), T), generator=g)
    tgt[:, 0] = 1  # [START]
    return [dict(model=_reference_model(kind, seed), positions=kind, src=src, src_key_padding_mask=kpm, tgt=tgt)
            for kind in KINDS]


def _reference_logits(model, src, src_key_padding_mask, tgt, **_):
    with torch.no_grad():
        return model(src, src_key_padding_mask, tgt).logits


MODEL = catalogue("attention_without_rnn.model", "stage3", _reference_logits, _MODEL_MUTANTS, _model_probes)


def _build(cls: Any, reference: Any, positions: str) -> Any:
    """The learner's model with the reference's weights; buffers the learner registered (a sinusoidal table) are kept
    as the learner computed them, so a wrong table shows in the outputs."""
    args = (SRC_V, TGT_V, D, HEADS, F, positions)
    probe = invoke(cls, STAGE3_TASK, args, name="Building your AttentionWithoutRNN")
    own = invoke(lambda: probe.state_dict(), STAGE3_TASK, name="Your AttentionWithoutRNN's state_dict()")
    state = _notebook_names(reference.state_dict())
    for key, value in (own or {}).items():
        if key.startswith("positions.") and key not in state:
            state[key] = value
    return build_module(cls, STAGE3_TASK, state, *args, name="AttentionWithoutRNN")


def check_attention_without_rnn(cls: Any, seed: int | None = None) -> None:
    """``AttentionWithoutRNN``: with the reference's weights, its logits and cross-attention weights equal
    coursekit.seq2seq.AttentionOnlyEncoderDecoder's, with sinusoidal, learned and no positions."""
    seed = seed_or_fresh(seed)
    probes = MODEL.probes(seed)
    outputs, weights = [], []
    shape = (len(LENGTHS), T, TGT_V)
    for probe in probes:
        module = _build(cls, probe["model"], probe["positions"])
        result = invoke(module, STAGE3_TASK, (probe["src"], probe["src_key_padding_mask"], probe["tgt"]),
                        name=f"Your AttentionWithoutRNN (positions={probe['positions']!r})",
                        params=("src", "src_key_padding_mask", "tgt_in"),
                        expect=f"(logits (B, T, V) = {shape}, weights (B, T, S))", seed=seed)
        logits, attention = expect_pair(result, STAGE3_TASK, "Your AttentionWithoutRNN")
        outputs.append(logits)
        weights.append(attention)

    def symptom(got, want, probe):
        return describe(got, want, what=f"With positions={probe['positions']!r}, your model's logits",
                        axes=("batch item", "target position", "token"), sizes={"B": shape[0], "T": T, "V": TGT_V},
                        reference="the reference's, with the same weights,")

    MODEL.judge(outputs, probes, seed=seed, describe=symptom)
    for probe, got in zip(probes, weights):
        with torch.no_grad():
            want = probe["model"](probe["src"], probe["src_key_padding_mask"], probe["tgt"]).weights
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4):
            raise MODEL.symptom(describe(got, want, what=f"With positions={probe['positions']!r}, your logits are "
                                                         "right but your cross-attention weights",
                                         axes=("batch item", "target position", "source position"),
                                         reference="the decoder layer's"), seed)
    print("✓ the encoder-decoder without RNN matches coursekit's, with sinusoidal, learned and no positions")
