"""The Transformer (Vaswani et al., 2017): an encoder-decoder built from attention alone.

Shape legend: B batch, S source length, T target length, P tokens already decoded, D model dim (``d_model``),
H heads, Dh = D / H head dim, L layers, V vocabulary size.

- :class:`TransformerConfig`: a frozen dataclass with the paper's base sizes (table 3) and
  :meth:`~TransformerConfig.tiny`.
- :class:`Transformer`: embeddings scaled by :math:`\\sqrt{D}` plus sinusoidal positions (sections 3.4-3.5),
  the encoder and decoder stacks of :mod:`coursekit.transformer_layers`, and a linear + softmax output whose
  weights can be tied to the embeddings. It implements :class:`coursekit.encoder_decoder.EncoderDecoder`, so
  :func:`coursekit.decoding.greedy_decode`, :func:`~coursekit.decoding.beam_search` and
  :func:`coursekit.train.train` work on it unchanged; ``decode_step`` uses a key/value cache.
- :class:`WarmupInverseSqrtLR`: the paper's learning-rate schedule (section 5.3, eq. 3) as a torch scheduler.

Book: chapter "The Transformer".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from coursekit.encoder_decoder import DecoderState, EncoderDecoder, Seq2SeqOutput, StepOutput, check_source, check_target
from coursekit.positional import SinusoidalPositionalEncoding
from coursekit.transformer_layers import (
    ACTIVATIONS,
    KVCache,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)

if TYPE_CHECKING:
    from coursekit.data import Vocab


@dataclass(frozen=True)
class TransformerConfig:
    """Sizes and regularisation of :class:`Transformer`. Defaults: the base model of Vaswani et al. (2017, table 3).

    Attributes:
        src_vocab_size, tgt_vocab_size: V of each side, specials included (``len(vocab)``).
        d_model, nhead, dim_feedforward: D = 512, H = 8, F = 2048.
        num_encoder_layers, num_decoder_layers: N = 6 each.
        dropout: P_drop = 0.1, on every sublayer output, attention weights, and embeddings + positions.
        activation: "relu" (the paper) or "gelu".
        norm_first: pre-LN (Xiong et al., 2020) if True; the paper's post-LN if False.
        layer_norm_eps: epsilon of every layer norm.
        max_len: the longest source or target the positional table covers.
        tie_embeddings: share one matrix between the target embedding and the output layer (section 3.4;
            Press and Wolf, 2017).
        share_src_tgt_embeddings: also use it for the source (the paper's shared BPE vocabulary); needs
            ``src_vocab_size == tgt_vocab_size``.
        label_smoothing: epsilon_ls = 0.1 (section 5.4), the ``label_smoothing`` of
            :func:`coursekit.train.sequence_loss` in training.
        warmup_steps: 4000 (section 5.3), used by :class:`WarmupInverseSqrtLR`.
        pad_id: the padding id of both vocabularies (:class:`coursekit.data.Vocab` uses 0).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    nhead: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    dim_feedforward: int = 2048
    dropout: float = 0.1
    activation: str = "relu"
    norm_first: bool = False
    layer_norm_eps: float = 1e-5
    max_len: int = 512
    tie_embeddings: bool = True
    share_src_tgt_embeddings: bool = False
    label_smoothing: float = 0.1
    warmup_steps: int = 4000
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size", "d_model", "nhead", "num_encoder_layers",
                     "num_decoder_layers", "dim_feedforward", "max_len", "warmup_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TransformerConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.nhead:
            raise ValueError(f"TransformerConfig.d_model = {self.d_model} must be divisible by nhead = {self.nhead}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TransformerConfig.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"TransformerConfig.label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"TransformerConfig.activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.share_src_tgt_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"share_src_tgt_embeddings needs one shared vocabulary, but src_vocab_size = {self.src_vocab_size} "
                f"and tgt_vocab_size = {self.tgt_vocab_size}; build one Vocab from both sides or set it to False"
            )
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"TransformerConfig.pad_id = {self.pad_id} is not an id of both vocabularies")

    @classmethod
    def tiny(cls, src_vocab_size: int, tgt_vocab_size: int) -> TransformerConfig:
        """Small enough for tests on a CPU in milliseconds: D = 32, 4 heads, 2 + 2 layers, no dropout."""
        return cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=32, nhead=4,
                   num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=64, dropout=0.0, max_len=64,
                   warmup_steps=100)

    def check_vocabs(self, src_vocab: Vocab, tgt_vocab: Vocab) -> None:
        """Raise a ValueError if the vocabularies do not have the sizes this config was built for."""
        for side, vocab, size in (("src", src_vocab, self.src_vocab_size), ("tgt", tgt_vocab, self.tgt_vocab_size)):
            if len(vocab) != size:
                raise ValueError(
                    f"the {side} vocabulary has {len(vocab)} tokens but TransformerConfig.{side}_vocab_size = {size}; "
                    f"build the config from the vocabularies the model will read "
                    f"(e.g. {side}_vocab_size=len({side}_vocab))"
                )


class AttentionMaps(NamedTuple):
    """Every attention weight of one teacher-forced pass, per layer and head (for plots).

    Shape:
        encoder: (B, L, H, S, S), decoder_self: (B, L, H, T, T), cross: (B, L, H, T, S).
    """

    encoder: Tensor
    decoder_self: Tensor
    cross: Tensor


class Transformer(EncoderDecoder):
    r"""The encoder-decoder Transformer of Vaswani et al. (2017, figure 1).

    .. math::
        h_0 = \sqrt{D}\,E[x] + PE, \qquad
        p(y_t \mid y_{<t}, x) = \mathrm{softmax}\big(\mathrm{Decoder}(\sqrt{D}\,E[y_{<t}] + PE,\
        \mathrm{Encoder}(h_0))\, W_o\big)

    The embeddings are initialised with standard deviation :math:`D^{-1/2}` so that the scaled ones start at
    unit variance, like the positional encodings they are added to. With ``tie_embeddings``, :math:`W_o = E^\top`.

    Implements :class:`coursekit.encoder_decoder.EncoderDecoder`. ``decode_step`` keeps a key/value cache in the decoder
    state (keys ``self_k.{i}``, ``self_v.{i}``, ``cross_k.{i}``, ``cross_v.{i}``, all batch-first, so
    :meth:`reorder_state` works for beam search): each step projects only the new token, :math:`O(t)` work at
    step :math:`t` instead of re-running the decoder over the whole prefix. Set ``model.use_kv_cache = False``
    before :meth:`encode` for the plain re-run (state ``tokens``, ``memory``); the outputs are the same.

    Weights returned by ``forward`` and ``decode_step``: the last decoder layer's cross-attention, averaged over
    heads, (B, T, S) / (B, S). :meth:`attention_maps` returns every layer and head.

    Args:
        config: a :class:`TransformerConfig`.
    """

    config_class = TransformerConfig

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, D)
        self.src_embed = self.tgt_embed if config.share_src_tgt_embeddings else nn.Embedding(config.src_vocab_size, D)
        # A fixed order (not a set, which orders by memory address): the same seed must build the same model.
        for embedding in dict.fromkeys((self.src_embed, self.tgt_embed)):
            nn.init.normal_(embedding.weight, std=D**-0.5)
        self.positions = SinusoidalPositionalEncoding(D, max_len=config.max_len, dropout=config.dropout)
        layer_kwargs = dict(d_model=D, nhead=config.nhead, dim_feedforward=config.dim_feedforward,
                            dropout=config.dropout, activation=config.activation,
                            layer_norm_eps=config.layer_norm_eps, norm_first=config.norm_first)
        # Pre-LN leaves the residual stream un-normalised, so each stack ends with a layer norm.
        self.encoder = TransformerEncoder(TransformerEncoderLayer(**layer_kwargs), config.num_encoder_layers,
                                          self._final_norm())
        self.decoder = TransformerDecoder(TransformerDecoderLayer(**layer_kwargs), config.num_decoder_layers,
                                          self._final_norm())
        self.out = nn.Linear(D, config.tgt_vocab_size)
        if config.tie_embeddings:
            self.out.weight = self.tgt_embed.weight  # (V, D): logits = y E^T + b
        self.use_kv_cache = True

    def _final_norm(self) -> nn.LayerNorm | None:
        return nn.LayerNorm(self.config.d_model, eps=self.config.layer_norm_eps) if self.config.norm_first else None

    # ----- the EncoderDecoder interface -----------------------------------------------------------

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        """Run the encoder once and prepare the decoder state.

        Shape: src (B, S) long, src_key_padding_mask (B, S) bool, True at padding -> a :data:`DecoderState`.
        """
        memory = self._encode(src, src_key_padding_mask)  # (B, S, D)
        if not self.use_kv_cache:
            no_tokens_yet = src.new_empty(src.size(0), 0)  # (B, 0): the target prefix, grown by decode_step
            return {"memory": memory, "src_key_padding_mask": src_key_padding_mask, "tokens": no_tokens_yet}
        state = {"src_key_padding_mask": src_key_padding_mask}
        for i, (k, v) in enumerate(self.decoder.memory_kv(memory)):
            empty = k.new_empty(k.size(0), k.size(1), 0, k.size(3))  # (B, H, 0, Dh): nothing decoded yet
            state.update({f"cross_k.{i}": k, f"cross_v.{i}": v, f"self_k.{i}": empty, f"self_v.{i}": empty})
        return state

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        """Feed one token per sequence (B,) and predict the next: logits (B, V), new state, weights (B, S)."""
        if "tokens" in state:  # no cache: re-run the decoder over the whole prefix
            tokens = torch.cat([state["tokens"], token[:, None]], dim=1)  # (B, P + 1)
            logits, weights = self._decode(tokens, state["memory"], state["src_key_padding_mask"])
            return StepOutput(logits[:, -1], {**state, "tokens": tokens}, weights[:, -1])
        L = self.config.num_decoder_layers
        past = [KVCache(state[f"self_k.{i}"], state[f"self_v.{i}"], state[f"cross_k.{i}"], state[f"cross_v.{i}"])
                for i in range(L)]
        y = self._embed(self.tgt_embed, token[:, None], offset=past[0].self_k.size(2), side="target")  # (B, 1, D)
        run = self.decoder.run(y, [(c.cross_k, c.cross_v) for c in past], past,
                               memory_key_padding_mask=state["src_key_padding_mask"], need_weights=True)
        state = dict(state)
        for i, cache in enumerate(run.cache):
            state[f"self_k.{i}"], state[f"self_v.{i}"] = cache.self_k, cache.self_v  # (B, H, P + 1, Dh)
        weights = run.cross_weights[:, -1].mean(dim=1)  # (B, L, H, 1, S) -> (B, 1, S): last layer, mean of heads
        return StepOutput(self.out(run.output)[:, 0], state, weights[:, 0])

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        """Teacher forcing: logits (B, T, V), where ``logits[:, t]`` predicts the token after ``tgt_in[:, t]``,
        and the last layer's cross-attention weights (B, T, S), averaged over heads."""
        memory = self._encode(src, src_key_padding_mask)  # (B, S, D)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        return Seq2SeqOutput(*self._decode(tgt_in, memory, src_key_padding_mask))

    # ----- the pieces -----------------------------------------------------------------------------

    def _embed(self, embedding: nn.Embedding, ids: Tensor, offset: int, side: str) -> Tensor:
        """sqrt(D) E[ids] + PE[offset:offset + T], then dropout (sections 3.4, 3.5, 5.4).

        Shape: (B, T) -> (B, T, D)."""
        stop = offset + ids.size(1)
        if stop > self.config.max_len:
            raise ValueError(
                f"the {side} reaches position {stop - 1}, past the positional table "
                f"(TransformerConfig.max_len = {self.config.max_len} positions, "
                f"0..{self.config.max_len - 1}); shorten it or build the model with "
                f"max_len >= {stop}"
            )
        scaled = embedding(ids) * math.sqrt(self.config.d_model)  # (B, T, D)
        return self.positions(scaled, offset=offset)  # (B, T, D)

    def _encode(self, src: Tensor, src_key_padding_mask: Tensor) -> Tensor:
        check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        x = self._embed(self.src_embed, src, offset=0, side="source")  # (B, S, D)
        return self.encoder(x, src_key_padding_mask=src_key_padding_mask)  # (B, S, D)

    def _decode(self, tgt: Tensor, memory: Tensor,
                src_key_padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """All target positions at once: logits (B, T, V) and the last layer's cross-attention
        weights (B, T, S), averaged over heads.

        No target padding mask is needed: padding sits at the end, so the causal mask already
        hides it from every real position, and the outputs at padded positions are never scored.
        """
        y = self._embed(self.tgt_embed, tgt, offset=0, side="target")  # (B, T, D)
        run = self.decoder.run(y, self.decoder.memory_kv(memory), tgt_is_causal=True,
                               memory_key_padding_mask=src_key_padding_mask, need_weights=True)
        weights = run.cross_weights[:, -1].mean(dim=1)  # (B, L, H, T, S) -> (B, T, S)
        return self.out(run.output), weights  # (B, T, V), (B, T, S)

    @torch.no_grad()
    def attention_maps(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> AttentionMaps:
        """Every layer's and head's attention weights for a teacher-forced pass (no gradients; use ``eval()``).

        Shape: src (B, S), src_key_padding_mask (B, S), tgt_in (B, T) -> :class:`AttentionMaps`.
        """
        check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        x = self._embed(self.src_embed, src, offset=0, side="source")  # (B, S, D)
        memory, encoder_weights = self.encoder.forward_with_weights(x, src_key_padding_mask=src_key_padding_mask)
        y = self._embed(self.tgt_embed, tgt_in, offset=0, side="target")  # (B, T, D)
        run = self.decoder.run(y, self.decoder.memory_kv(memory), tgt_is_causal=True,
                               memory_key_padding_mask=src_key_padding_mask, need_weights=True)
        return AttentionMaps(encoder_weights, run.self_weights, run.cross_weights)


# --------------------------------------------------------------------------------------------------
# Training: the learning-rate schedule
# --------------------------------------------------------------------------------------------------


def transformer_lr(step: int, d_model: int, warmup_steps: int, factor: float = 1.0) -> float:
    r"""The learning rate of Vaswani et al. (2017, section 5.3, eq. 3) at optimizer step
    ``step`` (from 1).

    .. math::
        lrate = factor \cdot d_{model}^{-0.5}
                \cdot \min(step^{-0.5},\ step \cdot warmup\_steps^{-1.5})

    It rises linearly for ``warmup_steps`` steps, peaks at :math:`d^{-0.5} \cdot warmup^{-0.5}`,
    then decays as :math:`step^{-0.5}`. ``factor`` = 1 is the paper; small models often train
    faster with a larger one.
    """
    if step < 1:
        raise ValueError(f"step counts optimizer steps from 1, got {step}")
    return factor * d_model**-0.5 * min(step**-0.5, step * warmup_steps**-1.5)


class WarmupInverseSqrtLR(LRScheduler):
    """:func:`transformer_lr` as a torch scheduler: step it after every ``optimizer.step()``.

    The optimizer's own ``lr`` is ignored and replaced by the schedule, from the first update on (which gets
    ``transformer_lr(1, ...)``). The paper pairs it with ``Adam(betas=(0.9, 0.98), eps=1e-9)``.

    Args:
        optimizer: the optimizer whose learning rate to set (every parameter group alike).
        d_model: D of the model being trained.
        warmup_steps: steps of linear warm-up (4000 in the paper).
        factor: multiplies the whole schedule.
        last_epoch: the index of the last step taken, to resume (-1 to start).
    """

    def __init__(self, optimizer: Optimizer, d_model: int, warmup_steps: int = 4000, factor: float = 1.0,
                 last_epoch: int = -1) -> None:
        if d_model < 1 or warmup_steps < 1 or factor <= 0:
            raise ValueError(f"need d_model >= 1, warmup_steps >= 1 and factor > 0, "
                             f"got {d_model}, {warmup_steps}, {factor}")
        self.d_model, self.warmup_steps, self.factor = d_model, warmup_steps, factor
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # last_epoch counts scheduler steps from 0; the update about to happen is optimizer step last_epoch + 1.
        lr = transformer_lr(self.last_epoch + 1, self.d_model, self.warmup_steps, self.factor)
        return [lr for _ in self.optimizer.param_groups]
