"""Checks for *the Transformer* notebook (``solutions/transformer``): the causal mask, the encoder block and the
decoder block (against ``torch.nn.TransformerEncoderLayer`` / ``DecoderLayer`` with the same weights, run in the
grader), the assembled model (against :class:`coursekit.transformer.Transformer`), and a trained translator.

Shape legend: B batch, S source length, T target length, D model dim (``d_model``), H heads, F feed-forward dim,
V vocabulary size.

The learner's blocks keep torch's parameter names (``self_attn``, ``multihead_attn``, ``linear1``, ``linear2``,
``norm1`` ...), with the attention's packed ``in_proj_weight`` unpacked into ``q_proj``, ``k_proj``, ``v_proj``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from coursekit.grading.core import (CheckFailed, Reference, ShortcutPolicy, build_module, call, close,
                                    expect_tensor, first_line, generator, held_out_exact_match, max_gap,
                                    register_task, seed_or_fresh, where)
from coursekit.masks import causal_mask as _reference_causal_mask
from coursekit.grading.diagnosis import Symptom, symptom_failure
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


def check_causal_mask_function(fn: Callable, seed: int | None = None) -> None:
    """``causal_mask(size)``: (T, T) bool, True above the diagonal (key s > query t), the torch.nn convention."""
    seed = seed_or_fresh(seed)
    for T in (4, 2 + int(torch.randint(3, 12, (), generator=generator(seed))), 1):
        got = expect_tensor(call(fn, MASK_TASK, T), f"causal_mask({T})", MASK_TASK)
        want = _reference_causal_mask(T)
        if got.shape != (T, T):
            raise CheckFailed(f"causal_mask({T}) must have shape (T, T) = {(T, T)}; yours has {tuple(got.shape)}.")
        if got.dtype != torch.bool:
            hint = (" It looks like an additive float mask (0 and -inf); the course uses bool masks, True = not "
                    "allowed." if got.is_floating_point() else "")
            raise CheckFailed(f"causal_mask({T}) must be a bool tensor; yours has dtype {got.dtype}.{hint}")
        if torch.equal(got, want):
            continue
        if torch.equal(got, ~want):
            raise CheckFailed("Your causal mask is inverted: True means NOT allowed (torch.nn's convention), so it is True "
                              "above the diagonal, where key s comes after query t, and False on and below it.")
        if torch.equal(got, want | torch.eye(T, dtype=torch.bool)):
            raise CheckFailed("Your mask also hides the diagonal: a position must be allowed to attend to itself "
                              "(query t may see keys 0..t). Use torch.triu(..., diagonal=1).")
        if torch.equal(got, want.T):
            raise CheckFailed("Your mask hides the past instead of the future: True must sit ABOVE the diagonal "
                              "(key s > query t), not below it.")
        raise CheckFailed(f"causal_mask({T}) must be True exactly where key s > query t; yours differs at "
                          f"{int((got != want).sum())} of {T * T} places.")
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


def _encoder_variant(layer: nn.Module, src: torch.Tensor, kpm: torch.Tensor | None, *, order: str = "post",
                     residual: str = "both", relu: bool = True, causal: bool = False) -> torch.Tensor:
    masks = {"key_padding_mask": kpm, "attn_mask": _reference_causal_mask(src.size(1)) if causal else None}
    if order == "pre":
        x = src + _sa(layer.self_attn, layer.norm1(src), layer.norm1(src), **masks)
        return x + _ff(layer, layer.norm2(x), relu)
    attended = _sa(layer.self_attn, src, src, **masks)
    x = layer.norm1(attended if residual == "no-attention" else src + attended)
    ff = _ff(layer, x, relu)
    return layer.norm2(ff if residual == "no-feed-forward" else x + ff)


_ENCODER_MISTAKES = (
    (dict(order="pre"), "You normalised before each sublayer (pre-LN: x + Sublayer(LayerNorm(x))). This block is "
                        "post-LN, as in the paper: x = LayerNorm(x + Sublayer(x))."),
    (dict(residual="no-attention"), "The attention sublayer has no residual connection: norm1(src + attention), "
                                    "not norm1(attention)."),
    (dict(residual="no-feed-forward"), "The feed-forward sublayer has no residual connection: norm2(x + FFN(x)), "
                                       "not norm2(FFN(x))."),
    (dict(relu=False), "Your feed-forward network has no ReLU between its two layers: "
                       "linear2(relu(linear1(x)))."),
    (dict(causal=True), "The encoder sees its whole source: give its self-attention no causal mask, only the "
                        "padding mask."),
)


def _call_block(module: Any, task: str, *args: Any, **kwargs: Any) -> torch.Tensor:
    try:
        out = call(module, task, *args, **kwargs)
    except NotImplementedError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:
        hint = "Inputs and outputs are batch first, (B, L, D)."
        if task == DECODER_TASK and "key_padding_mask" in str(err):
            hint = ("Cross-attention takes its keys and values from memory, (B, S, D), the positions that "
                    "memory_key_padding_mask (B, S) describes: self.multihead_attn(y, memory, memory, ...).")
        raise CheckFailed(f"Your block raised {type(err).__name__}: {first_line(err)}. {hint}") from None
    out = expect_tensor(out, "Your block's forward", task)
    if out.shape != args[0].shape:
        raise CheckFailed(f"A block returns one vector per input position, (B, L, D) = {tuple(args[0].shape)}; yours "
                          f"has shape {tuple(out.shape)}. (Return only the output, not the attention weights.)")
    return out


def check_encoder_block(cls: Any, seed: int | None = None) -> None:
    """``EncoderBlock(d_model, nhead, dim_feedforward)``: the same output as nn.TransformerEncoderLayer with the same
    weights (post-LN, ReLU, no dropout), with and without a source padding mask."""
    seed = seed_or_fresh(seed)
    layer = _torch_layer("encoder", seed)
    module = build_module(cls, ENCODER_TASK, _course_names(layer.state_dict()), D, H, F)
    g = generator(seed)
    B, S = 3, 6
    src = torch.randn(B, S, D, generator=g)
    kpm = padding_mask(torch.tensor([S, 4, 2]), S)
    for mask in (None, kpm):
        got = _call_block(module, ENCODER_TASK, src, src_key_padding_mask=mask)
        with torch.no_grad():
            want = layer(src, src_key_padding_mask=mask)
            if close(got, want):
                continue
            if mask is not None:
                if close(got, _encoder_variant(layer, src, None)):
                    raise CheckFailed("Your encoder block ignores src_key_padding_mask: pass it to the self-attention "
                                      f"as key_padding_mask, so no position attends to padding. {where(seed)}")
                if close(got[~mask], want[~mask]):
                    raise CheckFailed("Your block is right at the real positions but not at the padded ones; it "
                                      f"should compute them the same way (attending to the real keys). {where(seed)}")
            for variant, message in _ENCODER_MISTAKES:
                if close(got, _encoder_variant(layer, src, mask, **variant)):
                    raise CheckFailed(f"{message} {where(seed)}")
        raise CheckFailed(f"Your encoder block differs from nn.TransformerEncoderLayer with the same weights by up to "
                          f"{max_gap(got, want):.3g}{' (with a padding mask)' if mask is not None else ''}. Self-attention,"
                          f" add and norm1, then feed-forward, add and norm2. {where(seed)}")
    print("✓ the encoder block matches nn.TransformerEncoderLayer, with and without padding")


def _decoder_variant(layer: nn.Module, tgt: torch.Tensor, memory: torch.Tensor, tgt_mask: torch.Tensor | None,
                     kpm: torch.Tensor | None, *, order: str = "post", cross: str = "memory",
                     sublayers: str = "self-first") -> torch.Tensor:
    def self_block(y: torch.Tensor) -> torch.Tensor:
        return _sa(layer.self_attn, y, y, attn_mask=tgt_mask)

    def cross_block(y: torch.Tensor) -> torch.Tensor:
        source = memory if cross == "memory" else y
        return _sa(layer.multihead_attn, y, source, key_padding_mask=kpm if cross == "memory" else None)

    if order == "pre":
        y = tgt + self_block(layer.norm1(tgt))
        y = y + cross_block(layer.norm2(y))
        return y + _ff(layer, layer.norm3(y))
    first, second = (self_block, cross_block) if sublayers == "self-first" else (cross_block, self_block)
    y = layer.norm1(tgt + first(tgt))
    y = layer.norm2(y + second(y))
    return layer.norm3(y + _ff(layer, y))


_DECODER_MISTAKES = (
    (dict(cross="target"), "Your cross-attention takes its keys and values from the target: they come from the "
                           "encoder's output, self.multihead_attn(y, memory, memory, ...)."),
    (dict(sublayers="cross-first"), "Your sublayers are in the wrong order: masked self-attention first, then "
                                    "cross-attention to the memory, then the feed-forward network."),
    (dict(order="pre"), "You normalised before each sublayer (pre-LN). This block is post-LN, as in the paper: "
                        "y = LayerNorm(y + Sublayer(y))."),
)


def check_decoder_block(cls: Any, seed: int | None = None) -> None:
    """``DecoderBlock(d_model, nhead, dim_feedforward)``: no future leakage through the masked self-attention, and the
    same output as nn.TransformerDecoderLayer with the same weights, masks and memory."""
    seed = seed_or_fresh(seed)
    layer = _torch_layer("decoder", seed)
    module = build_module(cls, DECODER_TASK, _course_names(layer.state_dict()), D, H, F)
    g = generator(seed)
    B, T, S = 3, 5, 7
    tgt, memory = torch.randn(B, T, D, generator=g), torch.randn(B, S, D, generator=g)
    kpm = padding_mask(torch.tensor([S, 5, 3]), S)
    tgt_mask = _reference_causal_mask(T)
    masks = dict(tgt_mask=tgt_mask, memory_key_padding_mask=kpm)
    got = _call_block(module, DECODER_TASK, tgt, memory, **masks)
    changed = tgt.clone()
    changed[:, 3:] += 3 * torch.randn(B, T - 3, D, generator=g)
    got_changed = _call_block(module, DECODER_TASK, changed, memory, **masks)
    with torch.no_grad():
        if not close(got_changed[:, :3], got[:, :3]):
            if close(got, _decoder_variant(layer, tgt, memory, None, kpm)):
                raise CheckFailed("Your self-attention ignores tgt_mask: pass it on as attn_mask, or position t sees the "
                                  f"targets after t (future leakage). {where(seed)}")
            if close(got, _decoder_variant(layer, tgt, memory, tgt_mask, kpm, cross="target")):
                raise CheckFailed(f"{_DECODER_MISTAKES[0][1]} (Unmasked, attending to the target also leaks the future.) "
                                  f"{where(seed)}")
            raise CheckFailed("Future leakage: changing target positions 3 and 4 changed your outputs at positions 0-2. "
                              f"The decoder's self-attention must use tgt_mask. {where(seed)}")
        want = layer(tgt, memory, **masks)
        if close(got, want):
            print("✓ the decoder block matches nn.TransformerDecoderLayer and never looks ahead")
            return
        if close(got, _decoder_variant(layer, tgt, memory, tgt_mask, None)):
            raise CheckFailed("Your cross-attention ignores memory_key_padding_mask: pass it as key_padding_mask, so no "
                              f"target position attends to the source's padding. {where(seed)}")
        for variant, message in _DECODER_MISTAKES:
            if close(got, _decoder_variant(layer, tgt, memory, tgt_mask, kpm, **variant)):
                raise CheckFailed(f"{message} {where(seed)}")
    raise CheckFailed(f"Your decoder block differs from nn.TransformerDecoderLayer with the same weights by up to "
                      f"{max_gap(got, want):.3g}. Masked self-attention, add and norm1; cross-attention to memory, add "
                      f"and norm2; feed-forward, add and norm3. {where(seed)}")


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


def _model_variant(ref: Any, src: torch.Tensor, kpm: torch.Tensor, tgt: torch.Tensor, *, scale: bool = True,
                   positions: bool = True, encoder_mask: bool = True, memory_mask: bool = True) -> torch.Tensor:
    def embed(embedding: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        x = embedding(ids) * (math.sqrt(D) if scale else 1.0)
        return ref.positions(x) if positions else x

    memory = ref.encoder(embed(ref.src_embed, src), src_key_padding_mask=kpm if encoder_mask else None)
    y = ref.decoder(embed(ref.tgt_embed, tgt), memory, tgt_mask=_reference_causal_mask(tgt.size(1)),
                    memory_key_padding_mask=kpm if memory_mask else None)
    return ref.out(y)


_MODEL_MISTAKES = (
    (dict(scale=False), "You did not scale the embeddings: multiply them by sqrt(d_model) before adding the "
                        "positions (section 3.4), so that they are not drowned by the positional encodings."),
    (dict(positions=False), "You left out the positional encodings: pass the scaled embeddings through "
                            "self.positions, or the model cannot tell word order."),
    (dict(memory_mask=False), "Your decoder layers ignore the source padding: pass memory_key_padding_mask="
                              "src_key_padding_mask to every decoder layer."),
    (dict(encoder_mask=False), "Your encoder layers ignore the source padding: pass src_key_padding_mask to every "
                               "encoder layer."),
)


def check_transformer_model(cls: Any, seed: int | None = None) -> None:
    """``Seq2SeqTransformer``'s teacher-forced logits equal coursekit.transformer.Transformer's with the same weights."""
    seed = seed_or_fresh(seed)
    reference = _reference_model(seed)
    kwargs = dict(d_model=D, nhead=H, dim_feedforward=F, num_layers=LAYERS, max_len=MAX_LEN)
    module = build_module(cls, MODEL_TASK, _notebook_names(reference.state_dict()), SRC_V, TGT_V, **kwargs)
    g = generator(seed)
    B, S, T = 3, 5, 6
    kpm = padding_mask(torch.tensor([S, 3, 2]), S)
    src = torch.randint(4, SRC_V, (B, S), generator=g).masked_fill(kpm, 0)
    tgt = torch.randint(4, TGT_V, (B, T), generator=g)
    tgt[:, 0] = 1  # [START]

    def logits_of(tgt_in: torch.Tensor) -> torch.Tensor:
        result = call(module, MODEL_TASK, src, kpm, tgt_in)
        logits = result[0] if isinstance(result, tuple) else result
        logits = expect_tensor(logits, "The model's forward", MODEL_TASK)
        if logits.shape != (B, tgt_in.size(1), TGT_V):
            raise CheckFailed(f"decode_target must return logits of shape (B, T, V) = {(B, tgt_in.size(1), TGT_V)}; "
                              f"yours have {tuple(logits.shape)}.")
        return logits

    got = logits_of(tgt)
    changed = tgt.clone()
    changed[:, 3:] = torch.randint(4, TGT_V, (B, T - 3), generator=g)
    if not close(logits_of(changed)[:, :3], got[:, :3]):
        raise CheckFailed("Future leakage: changing target tokens 3-5 changed your logits at positions 0-2. Give every "
                          f"decoder layer tgt_mask=causal_mask(T). {where(seed)}")
    with torch.no_grad():
        want = reference(src, kpm, tgt).logits
        if close(got, want):
            print("✓ the assembled model matches coursekit.transformer.Transformer with the same weights")
            return
        for variant, message in _MODEL_MISTAKES:
            if close(got, _model_variant(reference, src, kpm, tgt, **variant)):
                raise CheckFailed(f"{message} {where(seed)}")
    raise CheckFailed(f"Your model's logits differ from the reference Transformer's, with the same weights, by up to "
                      f"{max_gap(got, want):.3g}. If Tests 2 and 3 pass, look at encode_source and decode_target. "
                      f"{where(seed)}")


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
    score = held_out_exact_match(model, task, MODEL_TASK, name="Your trained Transformer")
    if score.exact < min_exact:
        raise symptom_failure("translator", Symptom(
            "low-score", f"Your trained Transformer translates {score.exact:.0%} of the {score.count} held-out numbers "
                         f"exactly; it needs {min_exact:.0%}. For example: {score.examples()}. The model is built from "
                         "your blocks: if a test above fails, fix that first; then make sure the training cell ran to "
                         "the end (loss well below 0.1)."), None)
    print(f"✓ your Transformer translates {score.exact:.0%} of the {score.count} held-out numbers exactly")
