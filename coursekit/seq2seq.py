"""Sequence-to-sequence models, from the fixed-size bottleneck to attention without recurrence.

Shape legend: B batch, S source length, T target length, E embedding size, H hidden size (per direction),
D model dim, V target vocabulary size.

The course's arc is a baseline and four stages; this module holds the baseline and stages 1-3, each an
:class:`~coursekit.encoder_decoder.EncoderDecoder` (so :mod:`coursekit.decoding` and :mod:`coursekit.train` work on
every one of them, as on stage 4, the Transformer of :mod:`coursekit.transformer`):

- Baseline, :class:`RNNEncoderDecoder`: the whole source squeezed into one vector (Cho et al., 2014;
  Sutskever et al., 2014).
- Stage 1, RNN + attention, :class:`BahdanauEncoderDecoder`: the decoder looks back at every source position, at
  every step (Bahdanau et al., 2015).
- Stage 2, RNN + self-attention, :class:`SelfAttentiveRNNEncoderDecoder`: the source positions also attend to each
  other (Cheng et al., 2016; Lin et al., 2017), and the decoder attends with Luong et al.'s (2015) "general" score.
- Stage 3, attention without RNN, :class:`AttentionOnlyEncoderDecoder`: no recurrence left, only attention, and
  positional encodings (sinusoidal, learned, or none to show what goes missing) for the order (Vaswani et al., 2017).

:mod:`coursekit.arc` trains all five on one task with one budget and compares them.

Book: chapters "Sequence-to-sequence models with RNNs" (baseline), "Attention in sequence-to-sequence models"
(stage 1), "Self-attention" (stage 2) and "Attention without recurrence" (stage 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from coursekit.attention import AdditiveAttention, GeneralAttention, MultiHeadAttention
from coursekit.encoder_decoder import DecoderState, EncoderDecoder, Seq2SeqOutput, StepOutput, check_source, check_target
from coursekit.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding


def _check_sizes(config: object, **sizes: int) -> None:
    for name, value in sizes.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{type(config).__name__}.{name} must be a positive int, got {value!r}")


def _check_dropout(config: object, dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{type(config).__name__}.dropout must be in [0, 1), got {dropout}")


# --------------------------------------------------------------------------------------------------
# Baseline: the fixed-size context (Cho et al., 2014)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RNNConfig:
    """Sizes of the GRU encoder-decoder. Defaults follow Cho et al. (2014): 1000 hidden units, 620-d embeddings.

    ``pad_id`` is the padding token of both vocabularies (:class:`coursekit.data.Vocab` uses 0).
    """

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int = 620
    hidden_dim: int = 1000
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size,
                     embed_dim=self.embed_dim, hidden_dim=self.hidden_dim)
        _check_dropout(self, self.dropout)

    @classmethod
    def tiny(cls, src_vocab_size: int, tgt_vocab_size: int) -> RNNConfig:
        """Small enough for tests on a CPU in milliseconds."""
        return cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embed_dim=16, hidden_dim=32)


def run_encoder_rnn(rnn: nn.GRU, embedded: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Run a batch-first GRU over padded inputs (B, S, E) without letting the padding in.

    Packing makes each row stop at its true length, so the final state is the one after its last real token
    and the outputs at padding are 0. Returns outputs (B, S, directions * H) and final (directions, B, H).
    The graded notebook of stage 2 uses it as a given building block.
    """
    packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
    outputs, final = rnn(packed)
    outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=embedded.size(1))  # (B, S, dirs * H)
    # pad_packed_sequence returns a transposed view; attention reads it at every decoder step, so copy it once.
    return outputs.contiguous(), final


class RNNEncoderDecoder(EncoderDecoder):
    r"""A GRU encoder-decoder with the whole source in one fixed-size vector (Cho et al., 2014, section 2.2).

    The encoder reads the source; its final state is the context :math:`c`. The decoder starts from
    :math:`s_0 = \tanh(V c)`, sees :math:`c` again at every step, and predicts from its state, the previous
    word and :math:`c`:

    .. math::
        s_t = \mathrm{GRU}([e(y_{t-1}); c], s_{t-1}), \qquad
        p(y_t \mid y_{<t}, x) = \mathrm{softmax}(W_o [s_t; e(y_{t-1}); c])

    However long the source, everything the decoder knows about it must fit in :math:`c`: the bottleneck that
    attention removes. Returns no attention weights.
    """

    config_class = RNNConfig

    def __init__(self, config: RNNConfig) -> None:
        super().__init__()
        self.config = config
        E, H = config.embed_dim, config.hidden_dim
        self.src_embed = nn.Embedding(config.src_vocab_size, E, padding_idx=config.pad_id)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E, padding_idx=config.pad_id)
        self.encoder = nn.GRU(E, H, batch_first=True)
        self.init_state = nn.Linear(H, H)
        self.decoder = nn.GRU(E + H, H, batch_first=True)
        self.out = nn.Linear(H + E + H, config.tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        lengths = check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        embedded = self.dropout(self.src_embed(src))  # (B, S, E)
        _, final = run_encoder_rnn(self.encoder, embedded, lengths)  # final (1, B, H)
        context = final[0]  # (B, H): the state after each source's last real token
        return {"context": context, "hidden": torch.tanh(self.init_state(context))}

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        embedded = self.dropout(self.tgt_embed(token))[:, None]  # (B, 1, E)
        logits, hidden = self._decode(embedded, state["context"], state["hidden"])
        return StepOutput(logits[:, 0], {"context": state["context"], "hidden": hidden}, None)

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        state = self.encode(src, src_key_padding_mask)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        logits, _ = self._decode(self.dropout(self.tgt_embed(tgt_in)), state["context"], state["hidden"])
        return Seq2SeqOutput(logits, None)

    def _decode(self, embedded: Tensor, context: Tensor,
                hidden: Tensor) -> tuple[Tensor, Tensor]:
        """Run the decoder over T given inputs (B, T, E) at once.

        Returns logits (B, T, V) and the last state (B, H)."""
        T = embedded.size(1)
        context = context[:, None].expand(-1, T, -1)  # (B, T, H): the same c at every step
        inputs = torch.cat([embedded, context], dim=-1)  # (B, T, E + H)
        outputs, final = self.decoder(inputs, hidden[None])  # (B, T, H), (1, B, H)
        features = torch.cat([outputs, embedded, context], dim=-1)  # (B, T, H + E + H)
        logits = self.out(self.dropout(features))  # (B, T, V)
        return logits, final[0]


# --------------------------------------------------------------------------------------------------
# Stage 1: attention at every decoder step (Bahdanau et al., 2015)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BahdanauConfig:
    """Sizes of RNNsearch. Defaults follow Bahdanau et al. (2015, appendix A.2): 620-d embeddings, 1000 hidden
    units per direction, a 1000-unit alignment model."""

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int = 620
    hidden_dim: int = 1000
    attention_dim: int = 1000
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size,
                     embed_dim=self.embed_dim, hidden_dim=self.hidden_dim, attention_dim=self.attention_dim)
        _check_dropout(self, self.dropout)

    @classmethod
    def tiny(cls, src_vocab_size: int, tgt_vocab_size: int) -> BahdanauConfig:
        return cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embed_dim=16, hidden_dim=32,
                   attention_dim=32)


class BahdanauEncoderDecoder(EncoderDecoder):
    r"""RNNsearch (Bahdanau et al., 2015): a bidirectional GRU encoder and a decoder that attends at every step.

    The annotation of source word :math:`j` is :math:`h_j = [\overrightarrow{h}_j; \overleftarrow{h}_j]`. Before
    emitting word :math:`i`, the decoder scores every annotation against its *previous* state (eqs. 5-6),

    .. math::
        e_{ij} = v_a^\top \tanh(W_a s_{i-1} + U_a h_j), \qquad
        \alpha_{ij} = \frac{\exp e_{ij}}{\sum_k \exp e_{ik}}, \qquad c_i = \sum_j \alpha_{ij} h_j,

    then updates :math:`s_i = \mathrm{GRU}([e(y_{i-1}); c_i], s_{i-1})` (eq. 4) and predicts from
    :math:`[s_i; e(y_{i-1}); c_i]`. :math:`s_0 = \tanh(W_s \overleftarrow{h}_1)` (appendix A.2.2). Padding gets
    weight exactly 0. The paper's maxout output layer is replaced by one linear layer.
    """

    config_class = BahdanauConfig

    def __init__(self, config: BahdanauConfig) -> None:
        super().__init__()
        self.config = config
        E, H = config.embed_dim, config.hidden_dim
        self.src_embed = nn.Embedding(config.src_vocab_size, E, padding_idx=config.pad_id)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E, padding_idx=config.pad_id)
        self.encoder = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.init_state = nn.Linear(H, H)
        self.attention = AdditiveAttention(query_dim=H, key_dim=2 * H, hidden_dim=config.attention_dim)
        self.decoder = nn.GRUCell(E + 2 * H, H)
        self.out = nn.Linear(H + E + 2 * H, config.tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        lengths = check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        embedded = self.dropout(self.src_embed(src))  # (B, S, E)
        # annotations (B, S, 2H); final (2, B, H)
        annotations, final = run_encoder_rnn(self.encoder, embedded, lengths)
        # final[1] is the backward GRU's last state, which ends at word 1 (appendix A.2.2)
        hidden = torch.tanh(self.init_state(final[1]))  # (B, H)
        return {"annotations": annotations, "src_key_padding_mask": src_key_padding_mask,
                "hidden": hidden}

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        return self._step(self.dropout(self.tgt_embed(token)), state)

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        state = self.encode(src, src_key_padding_mask)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        logits, weights = [], []
        # The attention of step i needs s_{i-1}, so even with the whole target known the steps run in order.
        for embedded in self.dropout(self.tgt_embed(tgt_in)).unbind(dim=1):  # T tensors (B, E)
            step_logits, state, step_weights = self._step(embedded, state)
            logits.append(step_logits)
            weights.append(step_weights)
        return Seq2SeqOutput(torch.stack(logits, dim=1), torch.stack(weights, dim=1))  # (B, T, V), (B, T, S)

    def _step(self, embedded: Tensor, state: DecoderState) -> StepOutput:
        """One decoder step from the embedded previous word (B, E)."""
        annotations, previous = state["annotations"], state["hidden"]  # (B, S, 2H), (B, H)
        # Eqs. 5-6: weights recomputed from s_{i-1} at every step; exactly 0 at padding.
        context, weights = self.attention(
            previous, annotations, annotations, key_padding_mask=state["src_key_padding_mask"]
        )  # (B, 2H), (B, S)
        hidden = self.decoder(torch.cat([embedded, context], dim=-1), previous)  # (B, H), eq. 4
        features = torch.cat([hidden, embedded, context], dim=-1)  # (B, H + E + 2H)
        logits = self.out(self.dropout(features))  # (B, V)
        return StepOutput(logits, {**state, "hidden": hidden}, weights)


# --------------------------------------------------------------------------------------------------
# Stage 2: the encoder attends to itself (Cheng et al., 2016; Lin et al., 2017)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelfAttentiveRNNConfig:
    """Sizes of the self-attentive RNN encoder-decoder; ``2 * hidden_dim`` must be divisible by ``num_heads``.
    Sizes default to Bahdanau et al.'s (2015), the heads to Vaswani et al.'s (2017) eight."""

    src_vocab_size: int
    tgt_vocab_size: int
    embed_dim: int = 620
    hidden_dim: int = 1000
    num_heads: int = 8
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size,
                     embed_dim=self.embed_dim, hidden_dim=self.hidden_dim, num_heads=self.num_heads)
        _check_dropout(self, self.dropout)
        if (2 * self.hidden_dim) % self.num_heads:
            raise ValueError(f"2 * hidden_dim = {2 * self.hidden_dim} (the annotation size) must be divisible by "
                             f"num_heads = {self.num_heads}")

    @classmethod
    def tiny(cls, src_vocab_size: int, tgt_vocab_size: int) -> SelfAttentiveRNNConfig:
        return cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embed_dim=16, hidden_dim=16,
                   num_heads=2)


class SelfAttentiveRNNEncoderDecoder(EncoderDecoder):
    r"""A bidirectional GRU whose annotations then attend to each other, and a decoder that attends to them.

    Encoder: annotations :math:`h_j` as in :class:`BahdanauEncoderDecoder`, then one self-attention layer with a
    residual connection and layer norm, :math:`m_j = \mathrm{LayerNorm}(h_j + \mathrm{MultiHead}(h_j, H, H))`
    (Vaswani et al., 2017, section 3.1), so every position sees every other in one step instead of through
    the recurrence. Decoder: Luong et al.'s (2015) global attention with the "general" score, computed from the
    *current* state, so teacher forcing runs all T steps at once:

    .. math::
        s_t = \mathrm{GRU}(e(y_{t-1}), s_{t-1}), \quad
        \alpha_{ts} = \mathrm{softmax}_s(s_t^\top W_a m_s), \quad
        \tilde{h}_t = \tanh(W_c [c_t; s_t]), \quad p(y_t \mid \cdot) = \mathrm{softmax}(W_s \tilde{h}_t)

    (Luong eqs. 5, 6, 8; no input feeding). :math:`s_0` is a projection of the mean of the :math:`m_j`.
    """

    config_class = SelfAttentiveRNNConfig

    def __init__(self, config: SelfAttentiveRNNConfig) -> None:
        super().__init__()
        self.config = config
        E, H = config.embed_dim, config.hidden_dim
        self.src_embed = nn.Embedding(config.src_vocab_size, E, padding_idx=config.pad_id)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, E, padding_idx=config.pad_id)
        self.encoder = nn.GRU(E, H, batch_first=True, bidirectional=True)
        self.self_attention = MultiHeadAttention(2 * H, config.num_heads, dropout=config.dropout)
        self.norm = nn.LayerNorm(2 * H)
        self.init_state = nn.Linear(2 * H, H)
        self.decoder = nn.GRU(E, H, batch_first=True)
        self.attention = GeneralAttention(query_dim=H, key_dim=2 * H)
        self.combine = nn.Linear(2 * H + H, H)
        self.out = nn.Linear(H, config.tgt_vocab_size)
        self.dropout = nn.Dropout(config.dropout)

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        lengths = check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        embedded = self.dropout(self.src_embed(src))  # (B, S, E)
        annotations, _ = run_encoder_rnn(self.encoder, embedded, lengths)  # (B, S, 2H)
        attended, _ = self.self_attention(annotations, annotations, annotations,
                                          key_padding_mask=src_key_padding_mask,
                                          need_weights=False)  # (B, S, 2H)
        memory = self.norm(annotations + self.dropout(attended))  # (B, S, 2H)
        real = (~src_key_padding_mask)[..., None].to(memory.dtype)  # (B, S, 1)
        summary = (memory * real).sum(dim=1) / real.sum(dim=1)  # (B, 2H): mean of real positions
        return {"memory": memory, "src_key_padding_mask": src_key_padding_mask,
                "hidden": torch.tanh(self.init_state(summary))}

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        embedded = self.dropout(self.tgt_embed(token))[:, None]  # (B, 1, E)
        logits, hidden, weights = self._decode(embedded, state)
        return StepOutput(logits[:, 0], {**state, "hidden": hidden}, weights[:, 0])

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        state = self.encode(src, src_key_padding_mask)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        logits, _, weights = self._decode(self.dropout(self.tgt_embed(tgt_in)), state)
        return Seq2SeqOutput(logits, weights)

    def _decode(self, embedded: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, Tensor]:
        """Decode T given inputs (B, T, E) at once: logits (B, T, V), last state (B, H), weights (B, T, S)."""
        outputs, final = self.decoder(embedded, state["hidden"][None])  # (B, T, H), (1, B, H)
        context, weights = self.attention(outputs, state["memory"], state["memory"],
                                          key_padding_mask=state["src_key_padding_mask"])  # (B, T, 2H), (B, T, S)
        attentional = torch.tanh(self.combine(torch.cat([context, outputs], dim=-1)))  # (B, T, H)
        return self.out(self.dropout(attentional)), final[0], weights


# --------------------------------------------------------------------------------------------------
# Stage 3: attention without recurrence (the bridge to Vaswani et al., 2017)
# --------------------------------------------------------------------------------------------------


POSITIONS = ("sinusoidal", "learned", "none")
"""What :class:`AttentionOnlyConfig` can add to the embeddings to give attention the order of the tokens."""


@dataclass(frozen=True)
class AttentionOnlyConfig:
    """Sizes of the attention-only encoder-decoder. Widths default to the base Transformer's (Vaswani et al.,
    2017, table 3); it has one layer on each side where the Transformer stacks six.

    ``positions`` is what puts word order back: ``"sinusoidal"`` (Vaswani et al., 2017, section 3.5), ``"learned"``
    (one trained vector per position, Gehring et al., 2017) or ``"none"``, which leaves the model blind to order.
    """

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 512
    nhead: int = 8
    dim_feedforward: int = 2048
    num_layers: int = 1
    dropout: float = 0.1
    max_len: int = 512
    positions: str = "sinusoidal"
    pad_id: int = 0

    def __post_init__(self) -> None:
        _check_sizes(self, src_vocab_size=self.src_vocab_size, tgt_vocab_size=self.tgt_vocab_size, d_model=self.d_model,
                     nhead=self.nhead, dim_feedforward=self.dim_feedforward, num_layers=self.num_layers,
                     max_len=self.max_len)
        _check_dropout(self, self.dropout)
        if self.d_model % self.nhead:
            raise ValueError(f"d_model = {self.d_model} must be divisible by nhead = {self.nhead}")
        if self.positions not in POSITIONS:
            raise ValueError(f"AttentionOnlyConfig.positions must be one of {POSITIONS}, got {self.positions!r}")

    @classmethod
    def tiny(cls, src_vocab_size: int, tgt_vocab_size: int) -> AttentionOnlyConfig:
        return cls(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, d_model=32, nhead=4,
                   dim_feedforward=64, dropout=0.0, max_len=64)


class AttentionEncoderLayer(nn.Module):
    r"""Self-attention then a position-wise feed-forward net, each with a residual and layer norm (section 3.1):

    .. math:: x \leftarrow \mathrm{LayerNorm}(x + \mathrm{MultiHead}(x, x, x)), \quad
              x \leftarrow \mathrm{LayerNorm}(x + W_2\,\mathrm{ReLU}(W_1 x))

    Parameter names follow :class:`torch.nn.TransformerEncoderLayer` (post-norm, ReLU), which it equals.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, key_padding_mask: Tensor) -> Tensor:
        """Shape: x (B, S, D), key_padding_mask (B, S) -> (B, S, D)."""
        attended, _ = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=False)
        x = self.norm1(x + self.dropout(attended))
        feed_forward = self.linear2(self.dropout(torch.relu(self.linear1(x))))  # (B, S, D)
        return self.norm2(x + self.dropout(feed_forward))


class AttentionDecoderLayer(nn.Module):
    r"""Masked self-attention over the target so far, cross-attention to the encoder, then feed-forward (section 3.1).

    Parameter names follow :class:`torch.nn.TransformerDecoderLayer` (post-norm, ReLU), which it equals.
    Returns the cross-attention weights (averaged over heads) for plotting.
    """

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d_model), nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y: Tensor, memory: Tensor, memory_key_padding_mask: Tensor) -> tuple[Tensor, Tensor]:
        """Shape: y (B, T, D), memory (B, S, D), mask (B, S) -> (B, T, D) and weights (B, T, S)."""
        # The causal mask stands in for recurrence: position t sees targets 0..t only, as the RNN decoder did.
        attended, _ = self.self_attn(y, y, y, is_causal=True, need_weights=False)
        y = self.norm1(y + self.dropout(attended))
        attended, weights = self.multihead_attn(y, memory, memory, key_padding_mask=memory_key_padding_mask)
        y = self.norm2(y + self.dropout(attended))
        feed_forward = self.linear2(self.dropout(torch.relu(self.linear1(y))))  # (B, T, D)
        return self.norm3(y + self.dropout(feed_forward)), weights


class AttentionOnlyEncoderDecoder(EncoderDecoder):
    r"""No recurrence: word order comes from positional encodings, context from attention alone.

    Embeddings are scaled by :math:`\sqrt{D}` and summed with the positions of ``config.positions``
    (sections 3.4-3.5); the encoder is ``num_layers`` :class:`AttentionEncoderLayer`, the decoder
    ``num_layers`` :class:`AttentionDecoderLayer`. The embeddings start at standard deviation
    :math:`D^{-1/2}`, so that once scaled they are as large as the positional encodings added to them.
    ``decode_step`` re-runs the decoder over the whole prefix (no key/value cache: simple, quadratic in T);
    the returned weights are the last decoder layer's cross-attention.
    """

    config_class = AttentionOnlyConfig

    def __init__(self, config: AttentionOnlyConfig) -> None:
        super().__init__()
        self.config = config
        D = config.d_model
        self.src_embed = nn.Embedding(config.src_vocab_size, D, padding_idx=config.pad_id)
        self.tgt_embed = nn.Embedding(config.tgt_vocab_size, D, padding_idx=config.pad_id)
        for embedding in (self.src_embed, self.tgt_embed):
            # nn.Embedding's N(0, 1), times sqrt(D), would drown the positions (values in [-1, 1]).
            nn.init.normal_(embedding.weight, std=D**-0.5)
            with torch.no_grad():
                embedding.weight[config.pad_id].zero_()
        self.positions = _positions(config)
        layer_sizes = dict(d_model=D, nhead=config.nhead, dim_feedforward=config.dim_feedforward,
                           dropout=config.dropout)
        self.encoder_layers = nn.ModuleList(AttentionEncoderLayer(**layer_sizes) for _ in range(config.num_layers))
        self.decoder_layers = nn.ModuleList(AttentionDecoderLayer(**layer_sizes) for _ in range(config.num_layers))
        self.out = nn.Linear(D, config.tgt_vocab_size)

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        check_source(src, src_key_padding_mask, self.config.src_vocab_size)
        x = self.positions(self.src_embed(src) * math.sqrt(self.config.d_model))  # (B, S, D)
        for layer in self.encoder_layers:
            x = layer(x, src_key_padding_mask)
        no_tokens_yet = src.new_empty(src.size(0), 0)  # (B, 0): the target prefix so far
        return {"memory": x, "src_key_padding_mask": src_key_padding_mask,
                "tokens": no_tokens_yet}

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        tokens = torch.cat([state["tokens"], token[:, None]], dim=1)  # (B, t + 1)
        logits, weights = self._decode(tokens, state)
        return StepOutput(logits[:, -1], {**state, "tokens": tokens}, weights[:, -1])

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        state = self.encode(src, src_key_padding_mask)
        check_target(tgt_in, src.size(0), self.config.tgt_vocab_size)
        return Seq2SeqOutput(*self._decode(tgt_in, state))

    def _decode(self, tgt: Tensor, state: DecoderState) -> tuple[Tensor, Tensor]:
        """All target positions at once: logits (B, T, V) and last-layer cross-attention weights (B, T, S)."""
        y = self.positions(self.tgt_embed(tgt) * math.sqrt(self.config.d_model))  # (B, T, D)
        for layer in self.decoder_layers:
            y, weights = layer(y, state["memory"], state["src_key_padding_mask"])
        return self.out(y), weights


def _positions(config: AttentionOnlyConfig) -> nn.Module:
    """The module that adds ``config.positions`` to the scaled embeddings (and applies dropout)."""
    D, dropout = config.d_model, config.dropout
    if config.positions == "sinusoidal":
        return SinusoidalPositionalEncoding(D, max_len=config.max_len, dropout=dropout)
    if config.positions == "learned":
        return LearnedPositionalEncoding(D, max_len=config.max_len, dropout=dropout)
    return nn.Dropout(dropout)  # "none": the embeddings alone, as a bag of tokens
