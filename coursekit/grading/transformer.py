"""Checks for *the Transformer* notebook (``solutions/transformer``): the causal mask, the encoder block and the
decoder block (against ``torch.nn.TransformerEncoderLayer`` / ``DecoderLayer`` with the same weights, run in the
grader), the assembled model (against :class:`coursekit.transformer.Transformer`), and a trained translator.

Shape legend: B batch, S source length, T target length, D model dim (``d_model``), H heads, F feed-forward dim,
V vocabulary size. The checks use D = 16, H = 2, F = 32, (B, S) = (3, 6) for the encoder, (B, T, S) = (3, 5, 7) for
the decoder, (B, S, T) = (3, 5, 6) and vocabularies of 11 and 13 for the model: no two sizes of a check equal.

The learner's blocks keep torch's parameter names (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
``norm1`` ...), with the attention's packed ``in_proj_weight`` unpacked into ``q_proj``, ``k_proj``, ``v_proj``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from coursekit.grading.core import (Reference, ShortcutPolicy, build_module, expect_tensor, generator,
                                    held_out_exact_match, invoke, register_task, seed_or_fresh)
from coursekit.grading.diagnosis import Mutant, Symptom, catalogue, describe, symptom_failure
from coursekit.masks import causal_mask as _reference_causal_mask
from coursekit.masks import padding_mask

_TORCH_TRANSFORMER = ("Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
                      "TransformerDecoderLayer", "_generate_square_subsequent_mask")
_REFERENCES = (
    Reference("coursekit.transformer", "coursekit.transformer"),
    Reference("coursekit.transformer_layers", "coursekit.transformer_layers"),
    Reference("coursekit.seq2seq's attention-only layers", "coursekit.seq2seq",
              ("AttentionEncoderLayer", "AttentionDecoderLayer", "AttentionOnlyEncoderDecoder")),
    Reference("torch.nn.Transformer", "torch.nn.modules.transformer", _TORCH_TRANSFORMER),
)
_BLOCKS = ShortcutPolicy(_REFERENCES, {}, instead="the sublayers you were given (self.self_attn, self.linear1, "
                                                  "self.norm1, ...) and basic tensor operations")
MASK_TASK = register_task("the causal mask", ShortcutPolicy(
    (*_REFERENCES, Reference("coursekit.masks.causal_mask", "coursekit.masks", ("causal_mask",))), {},
    instead="torch.ones and torch.triu (or a comparison of two aranges)"), code="causal")
ENCODER_TASK = register_task("the Transformer encoder block", _BLOCKS, code="encoder")
DECODER_TASK = register_task("the Transformer decoder block", _BLOCKS, code="decoder")
MODEL_TASK = register_task("the Transformer", _BLOCKS, code="model")

D, H, F = 16, 2, 32


# ---------------------------------------------------------------------------------------------------
# Part 1: the causal mask
# ---------------------------------------------------------------------------------------------------


def mask_variant(size: int, *, kind: str = "right", **_: Any) -> torch.Tensor:
    """``causal_mask(size)`` with (at most) one planted mistake; the default gives the reference."""
    above = torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1)
    return {"right": above, "inverted": ~above, "diagonal": torch.triu(torch.ones(size, size, dtype=torch.bool)),
            "lower": above.T, "float": torch.zeros(size, size).masked_fill(above, float("-inf")),
            "int": above.long(), "float01": above.float()}[kind]


def _mask_mutant(code: str, says: str, kind: str) -> Mutant:
    return Mutant(code, says, lambda size, **_: mask_variant(size, kind=kind))


_MASK_MUTANTS = (
    _mask_mutant("causal.inverted", "Your causal mask is inverted: True means NOT allowed (torch.nn's convention), so "
                 "it is True above the diagonal, where key s comes after query t, and False on and below it.",
                 "inverted"),
    _mask_mutant("causal.hides-diagonal", "Your mask also hides the diagonal: a position must be allowed to attend to "
                 "itself (query t may see keys 0..t). Use torch.triu(..., diagonal=1).", "diagonal"),
    _mask_mutant("causal.hides-past", "Your mask hides the past instead of the future: True must sit ABOVE the "
                 "diagonal (key s > query t), not below it (torch.tril where torch.triu was meant).", "lower"),
    _mask_mutant("causal.additive-float", "Your mask is an additive float mask (0 and -inf); the course uses bool "
                 "masks, True = not allowed: torch.triu(torch.ones(size, size, dtype=torch.bool), diagonal=1).",
                 "float"),
    _mask_mutant("causal.integers", "Your mask holds the right pattern as integers (0 and 1): make it a bool tensor, "
                 "dtype=torch.bool (or .bool()), True = not allowed.", "int"),
    _mask_mutant("causal.floats", "Your mask holds the right pattern as floats (0. and 1.): make it a bool tensor, "
                 "dtype=torch.bool, True = not allowed; a float mask would be ADDED to the scores.", "float01"),
)


def _mask_probes(seed: int) -> list[dict[str, Any]]:
    """Sizes 4, then one drawn from 5..13, then 1."""
    return [dict(size=4), dict(size=2 + int(torch.randint(3, 12, (), generator=generator(seed)))), dict(size=1)]


CAUSAL = catalogue("transformer.causal-mask", "causal", lambda size, **_: mask_variant(size), _MASK_MUTANTS,
                   _mask_probes)


def check_causal_mask_function(fn: Callable, seed: int | None = None) -> None:
    """``causal_mask(size)``: (T, T) bool, True above the diagonal (key s > query t), the torch.nn convention."""
    seed = seed_or_fresh(seed)
    probes = CAUSAL.probes(seed)
    outputs = [expect_tensor(invoke(fn, MASK_TASK, (p["size"],), name="Your causal_mask", params=("size",),
                                    expect=f"a bool tensor of shape (T, T) = {(p['size'], p['size'])}", seed=seed),
                             f"causal_mask({p['size']})", MASK_TASK) for p in probes]

    def symptom(got, want, probe):
        T = probe["size"]
        if got.shape == want.shape and got.dtype == want.dtype:
            wrong = (got != want).nonzero().tolist()
            spots = ", ".join(f"(query {t}, key {s})" for t, s in wrong[:4]) + (", ..." if len(wrong) > 4 else "")
            return Symptom("values", f"causal_mask({T}) must be True exactly where key s > query t; yours differs at "
                                     f"{len(wrong)} of {T * T} places: {spots}.")
        return describe(got, want, what=f"causal_mask({T})", sizes={"T": T})

    CAUSAL.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ the causal mask: True above the diagonal, for three sizes")


# ---------------------------------------------------------------------------------------------------
# Parts 2 and 3: the blocks, against torch's layers
# ---------------------------------------------------------------------------------------------------

def _randomise(layer: nn.Module) -> nn.Module:
    """Give biases and layer norms random values, so that mixing up norm1 and norm2 (or dropping a bias) shows."""
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.startswith("norm") and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                param.normal_(0, 0.2)
    return layer


def _torch_layer(kind: str, seed: int) -> nn.Module:
    """torch's layer, post-LN, ReLU, dropout 0, in train mode (eval mode may take a fast path with other numerics)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        cls = nn.TransformerEncoderLayer if kind == "encoder" else nn.TransformerDecoderLayer
        layer = _randomise(cls(D, H, F, dropout=0.0, batch_first=True))
    return layer.train()


def _course_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch's packed attention weights -> q_proj, k_proj, v_proj (the course's and the notebook's names)."""
    out = {}
    for key, value in state.items():
        prefix, _, name = key.rpartition(".")
        if name in ("in_proj_weight", "in_proj_bias"):
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3)):
                out[f"{prefix}.{part}.{name.removeprefix('in_proj_')}"] = chunk.clone()
        else:
            out[key] = value.clone()
    return out


def _sa(attn: nn.MultiheadAttention, q: torch.Tensor, kv: torch.Tensor, **masks: Any) -> torch.Tensor:
    return attn(q, kv, kv, need_weights=False, **masks)[0]


def _ff(layer: nn.Module, x: torch.Tensor, relu: bool = True) -> torch.Tensor:
    hidden = layer.linear1(x)
    return layer.linear2(torch.relu(hidden) if relu else hidden)




def encoder_variant(layer: nn.Module, src: torch.Tensor, src_key_padding_mask: torch.Tensor | None = None, *,
                    order: str = "post", residual: str = "both", act: str = "relu", causal: bool = False,
                    padding: bool = True, norms: str = "1 2", **_: Any) -> torch.Tensor:
    """The post-LN encoder block of torch's layer, with (at most) one planted mistake; the defaults give the
    reference. ``residual``: "both", "no attention", "no feed-forward", "feed-forward from src" (the second residual
    adds the block's input instead of x). ``norms``: which norms follow the two sublayers ("1 2", "2 1", "1 1")."""
    masks = {"key_padding_mask": src_key_padding_mask if padding else None,
             "attn_mask": _reference_causal_mask(src.size(1)) if causal else None}
    relu = act == "relu"
    if order == "pre":
        x = src + _sa(layer.self_attn, layer.norm1(src), layer.norm1(src), **masks)
        return x + _ff(layer, layer.norm2(x), relu)
    first, second = (getattr(layer, f"norm{n}") for n in norms.split())
    attended = _sa(layer.self_attn, src, src, **masks)
    x = first(attended if residual == "no attention" else src + attended)
    ff = _ff(layer, x, relu) if act != "gelu" else layer.linear2(torch.nn.functional.gelu(layer.linear1(x)))
    base = {"no feed-forward": 0.0, "feed-forward from src": src}.get(residual, x)
    return second(base + ff)


def _encoder_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda layer, src, src_key_padding_mask=None, **_: encoder_variant(
        layer, src, src_key_padding_mask, **mistake))


_ENCODER_MUTANTS = (
    _encoder_mutant("encoder.pre-ln", "You normalised before each sublayer (pre-LN: x + Sublayer(LayerNorm(x))). This "
                    "block is post-LN, as in the paper: x = LayerNorm(x + Sublayer(x)).", order="pre"),
    _encoder_mutant("encoder.no-attention-residual", "The attention sublayer has no residual connection: "
                    "norm1(src + attention), not norm1(attention).", residual="no attention"),
    _encoder_mutant("encoder.no-feed-forward-residual", "The feed-forward sublayer has no residual connection: "
                    "norm2(x + FFN(x)), not norm2(FFN(x)).", residual="no feed-forward"),
    _encoder_mutant("encoder.feed-forward-residual-from-src", "Your second residual adds the block's input, "
                    "norm2(src + FFN(x)); it adds the sublayer's own input, x = norm1(src + attention): "
                    "norm2(x + FFN(x)).", residual="feed-forward from src"),
    _encoder_mutant("encoder.no-relu", "Your feed-forward network has no ReLU between its two layers: "
                    "linear2(relu(linear1(x))).", act="none"),
    _encoder_mutant("encoder.gelu", "Your feed-forward network uses GELU; this block uses ReLU, as the paper and "
                    "nn.TransformerEncoderLayer's default do: linear2(relu(linear1(x))).", act="gelu"),
    _encoder_mutant("encoder.causal", "The encoder sees its whole source: give its self-attention no causal mask, "
                    "only the padding mask.", causal=True),
    _encoder_mutant("encoder.ignores-padding", "Your encoder block ignores src_key_padding_mask: pass it to the "
                    "self-attention as key_padding_mask, so no position attends to padding.", padding=False),
    _encoder_mutant("encoder.norms-swapped", "Your norms are swapped: norm1 follows the attention sublayer and norm2 "
                    "the feed-forward one.", norms="2 1"),
    _encoder_mutant("encoder.norm1-twice", "You used norm1 after both sublayers: the feed-forward sublayer has its own, "
                    "norm2.", norms="1 1"),
)


def _encoder_probes(seed: int) -> list[dict[str, Any]]:
    """torch's encoder layer (D = 16, H = 2, F = 32), src (B, S, D) = (3, 6, 16): without a mask, then with lengths
    6, 4, 2."""
    layer = _torch_layer("encoder", seed)
    src = torch.randn(3, 6, D, generator=generator(seed))
    return [dict(layer=layer, src=src), dict(layer=layer, src=src,
                                             src_key_padding_mask=padding_mask(torch.tensor([6, 4, 2]), 6))]


def _reference_encoder(layer, src, src_key_padding_mask=None, **_):
    with torch.no_grad():
        return layer(src, src_key_padding_mask=src_key_padding_mask)


ENCODER = catalogue("transformer.encoder", "encoder", _reference_encoder, _ENCODER_MUTANTS, _encoder_probes)


def _block(module: Any, task: str, args: tuple, kwargs: dict, seed: int, what: str) -> torch.Tensor:
    names = ("src",) if task == ENCODER_TASK else ("tgt", "memory")
    out = invoke(module, task, args, kwargs, name=f"Your {what}", params=names,
                 expect=f"one vector per input position, (B, L, D) = {tuple(args[0].shape)}", seed=seed)
    return expect_tensor(out, f"Your {what}'s forward", task)


def _symptom_of_block(what: str, positions: str):
    def symptom(got, want, probe):
        kpm = probe.get("src_key_padding_mask", probe.get("memory_key_padding_mask"))
        found = describe(got, want, what=f"Your {what}'s output", axes=("batch item", positions, "feature"),
                         reference=f"nn.Transformer{what.split()[0].title()}Layer's with the same weights")
        padded = " (with a padding mask)" if kpm is not None else ""
        return Symptom(found.kind, f"{found.text[:-1]}{padded}.")
    return symptom


def check_encoder_block(cls: Any, seed: int | None = None) -> None:
    """``EncoderBlock(d_model, nhead, dim_feedforward)``: the same output as nn.TransformerEncoderLayer with the same
    weights (post-LN, ReLU, no dropout), without and with a source padding mask."""
    seed = seed_or_fresh(seed)
    probes = ENCODER.probes(seed)
    module = build_module(cls, ENCODER_TASK, _course_names(probes[0]["layer"].state_dict()), D, H, F,
                          name="EncoderBlock")
    outputs = [_block(module, ENCODER_TASK, (p["src"],), {"src_key_padding_mask": p.get("src_key_padding_mask")},
                      seed, "encoder block") for p in probes]
    ENCODER.judge(outputs, probes, seed=seed, describe=_symptom_of_block("encoder block", "position"))
    print("✓ the encoder block matches nn.TransformerEncoderLayer, with and without padding")


def decoder_variant(layer: nn.Module, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None = None,
                    memory_key_padding_mask: torch.Tensor | None = None, *, order: str = "post", cross: str = "memory",
                    sublayers: str = "self-first", causal: bool = True, padding: bool = True,
                    query: str = "y", cross_module: str = "multihead_attn", cross_residual: bool = True,
                    norms: str = "1 2 3", **_: Any) -> torch.Tensor:
    """The post-LN decoder block of torch's layer, with (at most) one planted mistake; the defaults give the reference.

    ``cross``: where cross-attention takes keys and values ("memory", "target"). ``query``: the queries of the
    cross-attention ("y" after the first sublayer, "tgt" the block's input). ``cross_module``: which attention
    module does the cross-attention.
    """
    kpm = memory_key_padding_mask if padding else None

    def self_block(y: torch.Tensor) -> torch.Tensor:
        return _sa(layer.self_attn, y, y, attn_mask=tgt_mask if causal else None)

    def cross_block(y: torch.Tensor) -> torch.Tensor:
        source = memory if cross == "memory" else y
        return _sa(getattr(layer, cross_module), y, source, key_padding_mask=kpm if cross == "memory" else None)

    if order == "pre":
        y = tgt + self_block(layer.norm1(tgt))
        y = y + cross_block(layer.norm2(y))
        return y + _ff(layer, layer.norm3(y))
    n1, n2, n3 = (getattr(layer, f"norm{n}") for n in norms.split())
    first, second = (self_block, cross_block) if sublayers == "self-first" else (cross_block, self_block)
    y = n1(tgt + first(tgt))
    attended = second(tgt if query == "tgt" else y)
    y = n2(y + attended if cross_residual else attended)
    return n3(y + _ff(layer, y))


def _decoder_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda layer, tgt, memory, tgt_mask=None, memory_key_padding_mask=None, **_:
                  decoder_variant(layer, tgt, memory, tgt_mask, memory_key_padding_mask, **mistake))


_DECODER_MUTANTS = (
    _decoder_mutant("decoder.cross-from-target", "Your cross-attention takes its keys and values from the target: they "
                    "come from the encoder's output, self.multihead_attn(y, memory, memory, ...).", cross="target"),
    _decoder_mutant("decoder.sublayers-swapped", "Your sublayers are in the wrong order: masked self-attention first, "
                    "then cross-attention to the memory, then the feed-forward network.", sublayers="cross-first"),
    _decoder_mutant("decoder.pre-ln", "You normalised before each sublayer (pre-LN). This block is post-LN, as in the "
                    "paper: y = LayerNorm(y + Sublayer(y)).", order="pre"),
    _decoder_mutant("decoder.ignores-tgt-mask", "Your self-attention ignores tgt_mask: pass it on as attn_mask, or "
                    "position t sees the targets after t (future leakage).", causal=False),
    _decoder_mutant("decoder.ignores-memory-padding", "Your cross-attention ignores memory_key_padding_mask: pass it "
                    "as key_padding_mask, so no target position attends to the source's padding.", padding=False),
    _decoder_mutant("decoder.cross-query-from-input", "Your cross-attention's queries come from the block's input, "
                    "tgt; they come from y = norm1(tgt + self-attention), the output of the first sublayer.",
                    query="tgt"),
    _decoder_mutant("decoder.cross-with-self-attn", "Your cross-attention uses self.self_attn, the self-attention's "
                    "weights, a second time: cross-attention has its own, self.multihead_attn.",
                    cross_module="self_attn"),
    _decoder_mutant("decoder.no-cross-residual", "Your cross-attention sublayer has no residual connection: "
                    "norm2(y + cross-attention), not norm2(cross-attention).", cross_residual=False),
    _decoder_mutant("decoder.norms-2-3-swapped", "Your norm2 and norm3 are swapped: norm2 follows the "
                    "cross-attention and norm3 the feed-forward network.", norms="1 3 2"),
)


def _decoder_probes(seed: int) -> list[dict[str, Any]]:
    """torch's decoder layer; tgt (B, T, D) = (3, 5, 16), memory (B, S, D) = (3, 7, 16) with lengths 7, 5, 3, a causal
    tgt_mask; then the same with target positions 3 and 4 changed."""
    layer = _torch_layer("decoder", seed)
    g = generator(seed)
    tgt, memory = torch.randn(3, 5, D, generator=g), torch.randn(3, 7, D, generator=g)
    changed = tgt.clone()
    changed[:, 3:] += 3 * torch.randn(3, 2, D, generator=g)
    masks = dict(tgt_mask=_reference_causal_mask(5), memory_key_padding_mask=padding_mask(torch.tensor([7, 5, 3]), 7))
    return [dict(layer=layer, tgt=tgt, memory=memory, **masks), dict(layer=layer, tgt=changed, memory=memory, **masks)]


def _reference_decoder(layer, tgt, memory, tgt_mask=None, memory_key_padding_mask=None, **_):
    with torch.no_grad():
        return layer(tgt, memory, tgt_mask=tgt_mask, memory_key_padding_mask=memory_key_padding_mask)


DECODER = catalogue("transformer.decoder", "decoder", _reference_decoder, _DECODER_MUTANTS, _decoder_probes)


def check_decoder_block(cls: Any, seed: int | None = None) -> None:
    """``DecoderBlock(d_model, nhead, dim_feedforward)``: the same output as nn.TransformerDecoderLayer with the same
    weights, masks and memory; and changing target positions 3 and 4 changes nothing before them."""
    seed = seed_or_fresh(seed)
    probes = DECODER.probes(seed)
    module = build_module(cls, DECODER_TASK, _course_names(probes[0]["layer"].state_dict()), D, H, F,
                          name="DecoderBlock")
    outputs = [_block(module, DECODER_TASK, (p["tgt"], p["memory"]), {"tgt_mask": p["tgt_mask"],
               "memory_key_padding_mask": p["memory_key_padding_mask"]}, seed, "decoder block") for p in probes]
    describe_decoder = _symptom_of_block("decoder block", "target position")

    def symptom(got, want, probe):
        finite = all(bool(torch.isfinite(o).all()) for o in outputs)  # NaN is not a leak: describe names it
        if finite and not torch.allclose(outputs[1][:, :3], outputs[0][:, :3], atol=1e-4):
            return Symptom("leak", "Future leakage: changing target positions 3 and 4 changed your outputs at positions "
                                   "0-2. The decoder's self-attention must use tgt_mask.")
        return describe_decoder(got, want, probe)

    DECODER.judge(outputs, probes, seed=seed, describe=symptom)
    print("✓ the decoder block matches nn.TransformerDecoderLayer and never looks ahead")


# ---------------------------------------------------------------------------------------------------
# Part 4: the assembled model
# ---------------------------------------------------------------------------------------------------

SRC_V, TGT_V, LAYERS, MAX_LEN = 11, 13, 2, 32


def _reference_model(seed: int) -> Any:
    from coursekit.transformer import Transformer, TransformerConfig

    config = TransformerConfig(SRC_V, TGT_V, d_model=D, nhead=H, num_encoder_layers=LAYERS,
                               num_decoder_layers=LAYERS, dim_feedforward=F, dropout=0.0, max_len=MAX_LEN,
                               tie_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed % 2**63)
        model = Transformer(config)
        for layer in [*model.encoder.layers, *model.decoder.layers]:
            _randomise(layer)
    return model.eval()


def _notebook_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """coursekit.transformer's names -> the notebook's: encoder.layers.i -> encoder_layers.i, likewise the decoder."""
    return {key.replace("encoder.layers.", "encoder_layers.").replace("decoder.layers.", "decoder_layers."): value
            for key, value in state.items()}


def model_variant(model: Any, src: torch.Tensor, src_key_padding_mask: torch.Tensor, tgt: torch.Tensor, *,
                  scale: str = "times", positions: str = "after scaling", encoder_mask: bool = True,
                  memory_mask: bool = True, causal: bool = True, chain: bool = True, **_: Any) -> torch.Tensor:
    """The notebook's Seq2SeqTransformer, run on the reference model's parts, with (at most) one planted mistake; the
    defaults give the reference. ``scale``: "times" sqrt(D), "none", "divide". ``positions``: "after scaling",
    "before scaling", "none". ``chain``: each layer takes the previous one's output (False: each takes the
    embeddings, so only the last layer counts)."""
    def embed(embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        factor = {"times": math.sqrt(D), "none": 1.0, "divide": 1 / math.sqrt(D)}[scale]
        if positions == "before scaling":
            return model.positions(embedding(ids)) * factor
        x = embedding(ids) * factor
        return model.positions(x) if positions == "after scaling" else x

    kpm = src_key_padding_mask
    x0 = embed(model.src_embed, src)
    x = x0
    for layer in model.encoder.layers:
        x = layer(x if chain else x0, src_key_padding_mask=kpm if encoder_mask else None)
    y0 = embed(model.tgt_embed, tgt)
    y = y0
    mask = _reference_causal_mask(tgt.size(1)) if causal else None
    for layer in model.decoder.layers:
        y = layer(y if chain else y0, x, tgt_mask=mask, memory_key_padding_mask=kpm if memory_mask else None)
    return model.out(y)


def _model_mutant(code: str, says: str, **mistake: Any) -> Mutant:
    return Mutant(code, says, lambda model, src, src_key_padding_mask, tgt, **_: model_variant(
        model, src, src_key_padding_mask, tgt, **mistake))


_MODEL_MUTANTS = (
    _model_mutant("model.unscaled-embeddings", "You did not scale the embeddings: multiply them by sqrt(d_model) "
                  "before adding the positions (section 3.4), so that they are not drowned by the positional "
                  "encodings.", scale="none"),
    _model_mutant("model.embeddings-divided", "You divided the embeddings by sqrt(d_model); multiply them by it "
                  "(section 3.4).", scale="divide"),
    _model_mutant("model.scaled-after-positions", "You scaled the embeddings after adding the positions, so the "
                  "positions are scaled too: multiply the embeddings by sqrt(d_model) first, then add the "
                  "positions, self.positions(embed(ids) * math.sqrt(self.d_model)).", positions="before scaling"),
    _model_mutant("model.no-positions", "You left out the positional encodings: pass the scaled embeddings through "
                  "self.positions, or the model cannot tell word order.", positions="none"),
    _model_mutant("model.decoder-ignores-padding", "Your model's logits are those of decoder layers that ignore the "
                  "source's padding: every decoder layer must get memory_key_padding_mask=src_key_padding_mask, and "
                  "use it.", memory_mask=False),
    _model_mutant("model.encoder-ignores-padding", "Your model's logits are those of encoder layers that ignore the "
                  "source's padding: every encoder layer must get src_key_padding_mask, and use it.", encoder_mask=False),
    _model_mutant("model.no-causal-mask", "Your model's logits are those of a decoder with no causal mask, each "
                  "position seeing the targets after it: every decoder layer must get tgt_mask=causal_mask(T), and use "
                  "it.", causal=False),
    _model_mutant("model.layers-not-chained", "Each of your layers reads the embeddings, not the previous layer's "
                  "output, so only the last layer counts: x = layer(x, ...) inside the loop.", chain=False),
)


def _model_probes(seed: int) -> list[dict[str, Any]]:
    """The reference model (D = 16, 2 layers, vocabularies 11 and 13); src (B, S) = (3, 5) with lengths 5, 3, 2 and
    tgt (B, T) = (3, 6) starting with [START]; then the same with target tokens 3-5 changed."""
    model = _reference_model(seed)
    g = generator(seed)
    kpm = padding_mask(torch.tensor([5, 3, 2]), 5)
    src = torch.randint(4, SRC_V, (3, 5), generator=g).masked_fill(kpm, 0)
    tgt = torch.randint(4, TGT_V, (3, 6), generator=g)
    tgt[:, 0] = 1  # [START]
    changed = tgt.clone()
    changed[:, 3:] = torch.randint(4, TGT_V, (3, 3), generator=g)
    return [dict(model=model, src=src, src_key_padding_mask=kpm, tgt=tgt),
            dict(model=model, src=src, src_key_padding_mask=kpm, tgt=changed)]


def _reference_logits(model, src, src_key_padding_mask, tgt, **_):
    with torch.no_grad():
        return model(src, src_key_padding_mask, tgt).logits


MODEL = catalogue("transformer.model", "model", _reference_logits, _MODEL_MUTANTS, _model_probes)


def _blocks_in_model(module: Any, reference: Any, seed: int) -> str:
    """Whether the learner's first encoder and decoder blocks, inside their model, compute what the reference's do."""
    g = generator(seed + 7)
    x, y = torch.randn(2, 5, D, generator=g), torch.randn(2, 4, D, generator=g)
    kpm = padding_mask(torch.tensor([5, 3]), 5)
    verdicts = []
    for name, args, kwargs, ref in (
            ("encoder", (x,), {"src_key_padding_mask": kpm}, reference.encoder.layers[0]),
            ("decoder", (y, x), {"tgt_mask": _reference_causal_mask(4), "memory_key_padding_mask": kpm},
             reference.decoder.layers[0])):
        try:
            block = getattr(getattr(module, f"{name}_layers"), "0")
            got = invoke(block, MODEL_TASK, args, kwargs)
            with torch.no_grad():
                right = isinstance(got, torch.Tensor) and torch.allclose(got, ref(*args, **kwargs), atol=1e-4)
        except Exception:  # noqa: BLE001 (a block that cannot run is not right)
            right = False
        verdicts.append(f"your {name} blocks {'compute' if right else 'do not compute'} what the reference's do")
    return f"Inside your model, {verdicts[0]} and {verdicts[1]}."


def check_transformer_model(cls: Any, seed: int | None = None) -> None:
    """``Seq2SeqTransformer``'s teacher-forced logits equal coursekit.transformer.Transformer's with the same weights,
    and changing target tokens 3-5 changes no logits before them."""
    seed = seed_or_fresh(seed)
    probes = MODEL.probes(seed)
    reference = probes[0]["model"]
    kwargs = dict(d_model=D, nhead=H, dim_feedforward=F, num_layers=LAYERS, max_len=MAX_LEN)
    module = build_module(cls, MODEL_TASK, _notebook_names(reference.state_dict()), SRC_V, TGT_V,
                          name="Seq2SeqTransformer", **kwargs)
    outputs = []
    for probe in probes:
        src, kpm, tgt = probe["src"], probe["src_key_padding_mask"], probe["tgt"]
        result = invoke(module, MODEL_TASK, (src, kpm, tgt), name="Your Seq2SeqTransformer",
                        params=("src", "src_key_padding_mask", "tgt_in"),
                        expect=f"(logits of shape (B, T, V) = {(3, 6, TGT_V)}, weights or None)", seed=seed)
        logits = result[0] if isinstance(result, tuple) else result
        outputs.append(expect_tensor(logits, "The model's forward", MODEL_TASK))

    def symptom(got, want, probe):
        finite = all(bool(torch.isfinite(o).all()) for o in outputs)  # NaN is not a leak: describe names it
        if finite and outputs[0].shape == outputs[1].shape and not torch.allclose(outputs[1][:, :3],
                                                                                  outputs[0][:, :3], atol=1e-4):
            return Symptom("leak", "Future leakage: changing target tokens 3-5 changed your logits at positions 0-2, "
                                   "so some position sees the targets after it (every decoder layer needs "
                                   "tgt_mask=causal_mask(T), and the block must use it).")
        return describe(got, want, what="Your model's logits", axes=("batch item", "target position", "token"),
                        sizes={"B": 3, "T": 6, "V": TGT_V}, reference="the reference Transformer's, with the same "
                                                                       "weights,")

    MODEL.judge(outputs, probes, seed=seed, describe=symptom, then=lambda: _blocks_in_model(module, reference, seed))
    print("✓ the assembled model matches coursekit.transformer.Transformer with the same weights")


# ---------------------------------------------------------------------------------------------------
# Part 5: the trained translator
# ---------------------------------------------------------------------------------------------------

# The whole held-out set, 200 numbers: the reference solution translates 95% of them; realistic mistakes land at
# 99% (no embedding scaling), 86% (pre-LN, or no residual around the feed-forward), 51% (no positions), 9% (no causal
# mask) or raise. 70% sits far from all of them (measured on CPU; see tests/test_notebooks.py).
TRAINED_BAR = 0.7


def check_trained_translator(model: Any, task: Any, min_exact: float = TRAINED_BAR) -> None:
    """Greedy-decode EVERY held-out number of ``task`` (valid and test splits, 200 numbers); pass when at least
    ``min_exact`` of them come out exactly right. No seed: the verdict depends on the trained model alone."""
    score = held_out_exact_match(model, task, MODEL_TASK, "translator", name="Your trained Transformer")
    if score.exact < min_exact:
        raise symptom_failure("translator", Symptom(
            "low-score", f"Your trained Transformer translates {score.exact:.0%} of the {score.count} held-out numbers "
                         f"exactly; it needs {min_exact:.0%}. For example: {score.examples()}. The model is built from "
                         "your blocks: if a test above fails, fix that first; then make sure the training cell ran to "
                         "the end (loss well below 0.1)."), None)
    print(f"✓ your Transformer translates {score.exact:.0%} of the {score.count} held-out numbers exactly")
