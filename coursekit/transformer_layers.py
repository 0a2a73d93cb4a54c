"""Transformer layers and stacks (Vaswani et al., 2017, section 3.1), drop-ins for torch.nn's batch-first ones.

Shape legend: B batch, S source length, T target length (new tokens), P tokens already in a key/value cache,
D model dim (``d_model``), H heads, Dh = D / H head dim, F feed-forward dim, L layers.

- :class:`TransformerEncoderLayer`, :class:`TransformerDecoderLayer`: same constructor keywords, ``forward``
  signatures, parameter names and outputs as ``torch.nn.TransformerEncoderLayer`` / ``DecoderLayer`` with
  ``batch_first=True`` (see their ``from_torch``), built from :class:`coursekit.attention.MultiHeadAttention`.
- :class:`TransformerEncoder`, :class:`TransformerDecoder`: N copies of a layer and an optional final norm,
  as ``torch.nn.TransformerEncoder`` / ``Decoder``.

What torch's layers do not have: ``forward_with_weights`` (every head's attention weights, for plots), and
the decoder's key/value cache (:class:`KVCache`, :meth:`TransformerDecoder.run`) for incremental decoding.

Masks follow torch.nn (bool, True = not allowed; see :mod:`coursekit.masks`). The model built from these
blocks is in :mod:`coursekit.transformer`.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from coursekit.attention import MultiHeadAttention
from coursekit.masks import causal_mask

ACTIVATIONS = ("relu", "gelu")


def _activation(name: str) -> nn.Module:
    """The feed-forward non-linearity: ReLU as in the paper (eq. 2), or GELU (Hendrycks and Gimpel, 2016)."""
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be one of {ACTIVATIONS} (a name, not a function), got {name!r}")


def _activation_name(activation: object) -> str:
    """Name of the activation a torch layer holds (a function such as F.relu, or a module)."""
    if activation is F.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is F.gelu or (isinstance(activation, nn.GELU) and activation.approximate == "none"):
        return "gelu"
    raise ValueError(f"from_torch supports the activations {ACTIVATIONS}, got {activation!r}")


def _check_batch_first(layer: nn.Module) -> None:
    if not layer.self_attn.batch_first:
        raise ValueError(
            f"from_torch copies only batch-first layers: build the {type(layer).__name__} with batch_first=True "
            "(coursekit's layers take (B, T, D) inputs)"
        )


def _load_torch_weights(ours: nn.Module, theirs: nn.Module, attention_names: tuple[str, ...]) -> None:
    """Copy every weight of a torch layer into ours; attention weights are unpacked by MultiHeadAttention.from_torch.

    ``strict=True``: a parameter missing on either side (a misnamed ``linear1`` or ``norm3``) raises.
    """
    state = {k: v for k, v in theirs.state_dict().items() if not k.startswith(tuple(f"{n}." for n in attention_names))}
    for name in attention_names:
        unpacked = MultiHeadAttention.from_torch(getattr(theirs, name)).state_dict()
        state.update({f"{name}.{k}": v for k, v in unpacked.items()})
    ours.load_state_dict(state, strict=True)


class TransformerEncoderLayer(nn.Module):
    r"""Self-attention then a position-wise feed-forward network, each in a residual branch (section 3.1).

    Post-LN, the paper's order (``norm_first=False``), and pre-LN (Xiong et al., 2020), which trains without
    warm-up more easily and needs a final norm after the stack:

    .. math::
        \text{post-LN: } x \leftarrow \mathrm{LN}(x + \mathrm{Sublayer}(x)), \qquad
        \text{pre-LN: } x \leftarrow x + \mathrm{Sublayer}(\mathrm{LN}(x)),

    with the sublayers :math:`\mathrm{MultiHead}(x, x, x)` and :math:`\mathrm{FFN}(x) = \max(0, xW_1 + b_1)W_2 + b_2`
    (eq. 2). Dropout is applied to each sublayer's output before the residual sum (section 5.4).

    Same keywords, parameter names and outputs as ``torch.nn.TransformerEncoderLayer(..., batch_first=True)``.

    Args:
        d_model: D. nhead: H, must divide D. dim_feedforward: F, the inner size of the FFN.
        dropout: on the attention weights, inside the FFN and on each sublayer output (training only).
        activation: "relu" (the paper) or "gelu".
        layer_norm_eps: epsilon of the layer norms.
        batch_first: must be True (accepted so one kwargs dict builds both this and torch's layer).
        norm_first: pre-LN if True, post-LN (the paper) if False.
        bias: biases in the linear layers and layer norms.
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu",
        layer_norm_eps: float = 1e-5, batch_first: bool = True, norm_first: bool = False, bias: bool = True,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("coursekit's layers are batch-first only: inputs are (B, T, D); pass batch_first=True")
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(
        self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Encode a batch of sequences.

        Args:
            src: (B, S, D).
            src_mask: bool (True = not allowed) or float (added to the scores), (S, S), (B, H, S, S) or (B*H, S, S).
            src_key_padding_mask: (B, S), True at padding.
            is_causal: hide the future; builds the causal mask when ``src_mask`` is None.

        Shape:
            Returns (B, S, D).
        """
        return self._layer(src, src_mask, src_key_padding_mask, is_causal, need_weights=False)[0]

    def forward_with_weights(
        self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`forward`, also returning the self-attention weights of every head, (B, H, S, S)."""
        return self._layer(src, src_mask, src_key_padding_mask, is_causal, need_weights=True)

    def _layer(
        self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        masks = (attn_mask, key_padding_mask, is_causal, need_weights)
        if self.norm_first:
            attended, weights = self._sa_block(self.norm1(x), *masks)
            x = x + attended
            x = x + self._ff_block(self.norm2(x))
        else:
            attended, weights = self._sa_block(x, *masks)
            x = self.norm1(x + attended)
            x = self.norm2(x + self._ff_block(x))
        return x, weights

    def _sa_block(
        self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool, need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        attended, weights = self.self_attn(x, x, x, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                           attn_mask=attn_mask, average_attn_weights=False, is_causal=is_causal)
        return self.dropout1(attended), weights  # (B, S, D), (B, H, S, S) or None

    def _ff_block(self, x: Tensor) -> Tensor:
        """FFN(x) = act(x W1 + b1) W2 + b2, applied to each position separately (eq. 2).

        Shape: (B, L, D) -> (B, L, D)."""
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    @classmethod
    def from_torch(cls, layer: nn.TransformerEncoderLayer) -> TransformerEncoderLayer:
        """A copy of a ``torch.nn.TransformerEncoderLayer(batch_first=True)`` (same device, dtype and mode)."""
        _check_batch_first(layer)
        new = cls(layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout.p,
                  _activation_name(layer.activation), layer.norm1.eps, norm_first=layer.norm_first,
                  bias=layer.linear1.bias is not None).to(layer.linear1.weight)
        _load_torch_weights(new, layer, ("self_attn",))
        return new.train(layer.training)


class KVCache(NamedTuple):
    """The keys and values one decoder layer has computed so far, so each new token is projected only once.

    Shape:
        self_k, self_v: (B, H, P, Dh), the self-attention keys and values of the P tokens decoded so far.
        cross_k, cross_v: (B, H, S, Dh), the encoder output projected by ``multihead_attn``, computed once.
    """

    self_k: Tensor
    self_v: Tensor
    cross_k: Tensor
    cross_v: Tensor


class DecoderLayerOutput(NamedTuple):
    """Output of :meth:`TransformerDecoderLayer.run`: ``output`` (B, T, D), the grown ``cache``, and
    per-head weights (B, H, T, P + T) and (B, H, T, S), or None when not asked for."""

    output: Tensor
    cache: KVCache
    self_weights: Tensor | None
    cross_weights: Tensor | None


class TransformerDecoderLayer(nn.Module):
    r"""Masked self-attention, attention over the encoder output ("memory"), then the FFN (section 3.1).

    Each sublayer sits in a residual branch with layer norm, post-LN (the paper) or pre-LN (``norm_first``),
    as in :class:`TransformerEncoderLayer`. The causal mask keeps position :math:`t` from seeing targets
    after :math:`t`, "ensuring that the predictions for position i can depend only on the known outputs at
    positions less than i".

    Same keywords, parameter names and outputs as ``torch.nn.TransformerDecoderLayer(..., batch_first=True)``.
    Beyond torch: :meth:`run` decodes with a key/value cache (:class:`KVCache`), and returns attention weights.

    Args:
        As :class:`TransformerEncoderLayer`.
    """

    def __init__(
        self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation: str = "relu",
        layer_norm_eps: float = 1e-5, batch_first: bool = True, norm_first: bool = False, bias: bool = True,
    ) -> None:
        super().__init__()
        if not batch_first:
            raise ValueError("coursekit's layers are batch-first only: inputs are (B, T, D); pass batch_first=True")
        self.self_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.multihead_attn = MultiHeadAttention(d_model, nhead, dropout=dropout, bias=bias)
        self.linear1 = nn.Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model, bias=bias)
        self.norm_first = norm_first
        self.norm1 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = nn.LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = _activation(activation)

    def forward(
        self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool = False, memory_is_causal: bool = False,
    ) -> Tensor:
        """Decode a whole (teacher-forced) target at once.

        Args:
            tgt: (B, T, D). memory: (B, S, D), the encoder output.
            tgt_mask: (T, T) etc., True = not allowed; usually :func:`coursekit.masks.causal_mask`.
            memory_mask: (T, S) etc. tgt_key_padding_mask: (B, T). memory_key_padding_mask: (B, S).
            tgt_is_causal, memory_is_causal: build the causal mask when the matching mask is None.

        Shape:
            Returns (B, T, D).
        """
        return self.run(tgt, self.memory_kv(memory), tgt_mask=tgt_mask, memory_mask=memory_mask,
                        tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                        tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal).output

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Project the encoder output to cross-attention keys and values once per source.

        Shape: memory (B, S, D) -> keys, values (B, H, S, Dh).
        """
        attn = self.multihead_attn
        attn._check_inputs(memory, memory, memory)
        return attn._split_heads(attn.k_proj(memory)), attn._split_heads(attn.v_proj(memory))  # (B, H, S, Dh) each

    def run(
        self, tgt: Tensor, memory_kv: tuple[Tensor, Tensor],
        past_kv: tuple[Tensor, Tensor] | None = None, *, tgt_mask: Tensor | None = None,
        memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False,
        memory_is_causal: bool = False, need_weights: bool = False,
    ) -> DecoderLayerOutput:
        """The layer on T new target positions, given keys and values computed before.

        With ``past_kv`` = the (B, H, P, Dh) self-attention keys and values of the P earlier
        tokens, the T new tokens attend to all P + T (causally if ``tgt_is_causal``); only the new
        tokens are projected, which is what makes cached decoding cheap. Without it this is
        :meth:`forward` (P = 0).

        Args:
            tgt: (B, T, D), the new positions.
            memory_kv: from :meth:`memory_kv`, (B, H, S, Dh) each.
            past_kv: (B, H, P, Dh) keys and values, or None. Other masks as in :meth:`forward`,
                with P + T keys.
            need_weights: return every head's weights (explicit softmax) instead of using the
                fused kernel.

        Returns:
            :class:`DecoderLayerOutput`: output (B, T, D), the cache grown to P + T, and the
            weights.
        """
        x = tgt
        self_masks = (tgt_mask, tgt_key_padding_mask, tgt_is_causal, need_weights)
        cross_masks = (memory_mask, memory_key_padding_mask, memory_is_causal, need_weights)
        if self.norm_first:
            attended, self_kv, self_weights = self._sa_block(self.norm1(x), past_kv, *self_masks)
            x = x + attended
            attended, cross_weights = self._mha_block(self.norm2(x), memory_kv, *cross_masks)
            x = x + attended
            x = x + self._ff_block(self.norm3(x))
        else:
            attended, self_kv, self_weights = self._sa_block(x, past_kv, *self_masks)
            x = self.norm1(x + attended)
            attended, cross_weights = self._mha_block(x, memory_kv, *cross_masks)
            x = self.norm2(x + attended)
            x = self.norm3(x + self._ff_block(x))
        return DecoderLayerOutput(x, KVCache(*self_kv, *memory_kv), self_weights, cross_weights)

    def _sa_block(
        self, x: Tensor, past_kv: tuple[Tensor, Tensor] | None, attn_mask: Tensor | None,
        key_padding_mask: Tensor | None, is_causal: bool, need_weights: bool,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        """Masked self-attention; the keys and values of earlier tokens come from the cache."""
        attn = self.self_attn
        attn._check_inputs(x, x, x)
        q = attn._split_heads(attn.q_proj(x))  # (B, T, D) -> (B, H, T, Dh)
        k = attn._split_heads(attn.k_proj(x))  # (B, H, T, Dh)
        v = attn._split_heads(attn.v_proj(x))  # (B, H, T, Dh)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)  # (B, H, P + T, Dh)
            v = torch.cat([past_kv[1], v], dim=2)  # (B, H, P + T, Dh)
        if is_causal and attn_mask is None and x.size(1) > 1:
            # The T new queries are the last T of the P + T positions: query t sees keys 0 .. P + t.
            attn_mask = causal_mask(x.size(1), k.size(2), device=x.device)  # (T, P + T)
        attended, weights = attn.attend_heads(q, k, v, key_padding_mask, need_weights, attn_mask,
                                              average_attn_weights=False)
        return self.dropout1(attended), (k, v), weights  # (B, T, D), cache, (B, H, T, P + T) or None

    def _mha_block(
        self, x: Tensor, memory_kv: tuple[Tensor, Tensor], attn_mask: Tensor | None, key_padding_mask: Tensor | None,
        is_causal: bool, need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """Cross-attention: queries from the decoder, keys and values from the encoder output (precomputed)."""
        attn = self.multihead_attn
        k, v = memory_kv  # (B, H, S, Dh) each
        if is_causal and attn_mask is None:
            attn_mask = causal_mask(x.size(1), k.size(2), device=x.device)  # (T, S)
        q = attn._split_heads(attn.q_proj(x))  # (B, T, D) -> (B, H, T, Dh)
        attended, weights = attn.attend_heads(q, k, v, key_padding_mask, need_weights, attn_mask,
                                              average_attn_weights=False)
        return self.dropout2(attended), weights  # (B, T, D), (B, H, T, S) or None

    def _ff_block(self, x: Tensor) -> Tensor:
        """FFN(x) = act(x W1 + b1) W2 + b2 (eq. 2). Shape: (B, T, D)."""
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    @classmethod
    def from_torch(cls, layer: nn.TransformerDecoderLayer) -> TransformerDecoderLayer:
        """A copy of a ``torch.nn.TransformerDecoderLayer(batch_first=True)`` (same device, dtype and mode)."""
        _check_batch_first(layer)
        new = cls(layer.self_attn.embed_dim, layer.self_attn.num_heads, layer.linear1.out_features, layer.dropout.p,
                  _activation_name(layer.activation), layer.norm1.eps, norm_first=layer.norm_first,
                  bias=layer.linear1.bias is not None).to(layer.linear1.weight)
        _load_torch_weights(new, layer, ("self_attn", "multihead_attn"))
        return new.train(layer.training)


def _clones(layer: nn.Module, num_layers: int) -> nn.ModuleList:
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    return nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))


def _copy_norm(norm: nn.Module | None) -> nn.LayerNorm | None:
    if norm is None:
        return None
    if not isinstance(norm, nn.LayerNorm):
        raise ValueError(f"from_torch supports a final nn.LayerNorm or None, got {type(norm).__name__}")
    return copy.deepcopy(norm)


class TransformerEncoder(nn.Module):
    """N identical encoder layers (N = 6 in the paper) and, for pre-LN, a final layer norm.

    Like ``torch.nn.TransformerEncoder``: the layer passed in is copied ``num_layers`` times (each copy
    has its own weights). There is no nested-tensor fast path, so padded positions get ordinary outputs.

    Args:
        encoder_layer: a :class:`TransformerEncoderLayer` to copy.
        num_layers: N.
        norm: applied to the last layer's output (pass ``nn.LayerNorm(d_model)`` with pre-LN layers).
    """

    def __init__(self, encoder_layer: TransformerEncoderLayer, num_layers: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> Tensor:
        """Shape: src (B, S, D), mask (S, S), src_key_padding_mask (B, S) -> (B, S, D)."""
        return self._run(src, mask, src_key_padding_mask, bool(is_causal), need_weights=False)[0]

    def forward_with_weights(
        self, src: Tensor, mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None,
        is_causal: bool | None = None,
    ) -> tuple[Tensor, Tensor]:
        """As :meth:`forward`, also returning every layer's and head's self-attention weights, (B, L, H, S, S)."""
        return self._run(src, mask, src_key_padding_mask, bool(is_causal), need_weights=True)

    def _run(
        self, x: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool, need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        weights = []
        for layer in self.layers:
            x, layer_weights = layer._layer(x, mask, key_padding_mask, is_causal, need_weights)
            weights.append(layer_weights)
        if self.norm is not None:
            x = self.norm(x)
        return x, torch.stack(weights, dim=1) if need_weights else None  # (B, L, H, S, S)

    @classmethod
    def from_torch(cls, module: nn.TransformerEncoder) -> TransformerEncoder:
        """A copy of a ``torch.nn.TransformerEncoder`` of batch-first layers."""
        new = cls(TransformerEncoderLayer.from_torch(module.layers[0]), module.num_layers, _copy_norm(module.norm))
        for ours, theirs in zip(new.layers, module.layers):
            ours.load_state_dict(TransformerEncoderLayer.from_torch(theirs).state_dict())
        return new.train(module.training)


class DecoderOutput(NamedTuple):
    """Output of :meth:`TransformerDecoder.run`.

    Shape:
        output: (B, T, D). cache: one :class:`KVCache` per layer, grown by the T new tokens.
        self_weights: (B, L, H, T, P + T). cross_weights: (B, L, H, T, S). None unless asked for.
    """

    output: Tensor
    cache: list[KVCache]
    self_weights: Tensor | None
    cross_weights: Tensor | None


class TransformerDecoder(nn.Module):
    """N identical decoder layers and, for pre-LN, a final layer norm (as ``torch.nn.TransformerDecoder``).

    :meth:`forward` decodes a whole target; :meth:`run` decodes new tokens against a key/value cache.

    Args:
        decoder_layer: a :class:`TransformerDecoderLayer` to copy.
        num_layers: N.
        norm: applied to the last layer's output.
    """

    def __init__(self, decoder_layer: TransformerDecoderLayer, num_layers: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None,
        tgt_key_padding_mask: Tensor | None = None, memory_key_padding_mask: Tensor | None = None,
        tgt_is_causal: bool | None = None, memory_is_causal: bool = False,
    ) -> Tensor:
        """Shape: tgt (B, T, D), memory (B, S, D), masks as :meth:`TransformerDecoderLayer.forward` -> (B, T, D)."""
        return self.run(tgt, self.memory_kv(memory), tgt_mask=tgt_mask, memory_mask=memory_mask,
                        tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                        tgt_is_causal=bool(tgt_is_causal), memory_is_causal=memory_is_causal).output

    def memory_kv(self, memory: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Every layer's cross-attention keys and values. Shape: memory (B, S, D) -> L pairs of (B, H, S, Dh)."""
        return [layer.memory_kv(memory) for layer in self.layers]

    def run(
        self, tgt: Tensor, memory_kv: list[tuple[Tensor, Tensor]], past: list[KVCache] | None = None, *,
        tgt_mask: Tensor | None = None, memory_mask: Tensor | None = None, tgt_key_padding_mask: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None, tgt_is_causal: bool = False, memory_is_causal: bool = False,
        need_weights: bool = False,
    ) -> DecoderOutput:
        """Decode T new positions given each layer's cross-attention keys/values and, optionally, a cache.

        Args:
            tgt: (B, T, D) embedded new tokens. memory_kv: from :meth:`memory_kv`.
            past: the ``cache`` of an earlier call (P tokens), or None to start from nothing.
            need_weights: return every layer's and head's weights.

        Returns:
            :class:`DecoderOutput`.
        """
        if len(memory_kv) != self.num_layers or (past is not None and len(past) != self.num_layers):
            raise ValueError(f"memory_kv and past need one entry per layer ({self.num_layers})")
        x, cache, self_weights, cross_weights = tgt, [], [], []
        for i, layer in enumerate(self.layers):
            past_kv = (past[i].self_k, past[i].self_v) if past is not None else None
            x, layer_cache, sw, cw = layer.run(
                x, memory_kv[i], past_kv, tgt_mask=tgt_mask, memory_mask=memory_mask,
                tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal, need_weights=need_weights)
            cache.append(layer_cache)
            self_weights.append(sw)
            cross_weights.append(cw)
        if self.norm is not None:
            x = self.norm(x)
        if not need_weights:
            return DecoderOutput(x, cache, None, None)
        return DecoderOutput(x, cache, torch.stack(self_weights, dim=1), torch.stack(cross_weights, dim=1))

    @classmethod
    def from_torch(cls, module: nn.TransformerDecoder) -> TransformerDecoder:
        """A copy of a ``torch.nn.TransformerDecoder`` of batch-first layers."""
        new = cls(TransformerDecoderLayer.from_torch(module.layers[0]), module.num_layers, _copy_norm(module.norm))
        for ours, theirs in zip(new.layers, module.layers):
            ours.load_state_dict(TransformerDecoderLayer.from_torch(theirs).state_dict())
        return new.train(module.training)
