"""Keras to coursekit: the weights of Keras 3 layers, run on the PyTorch backend, copied into the
course's modules.

Shape legend: B batch, T queries, S keys, D model dim, H heads, Dh head dim (Keras's ``key_dim``),
F feed-forward dim.

The lecture notes write attention in Keras. With ``KERAS_BACKEND=torch`` (set before ``import
keras``) Keras 3 runs on torch tensors, so its layers and the course's run side by side on the same
inputs:

- :func:`multi_head_attention_from_keras`: ``keras.layers.MultiHeadAttention`` ->
  :class:`coursekit.attention.MultiHeadAttention`. Keras's ``key_dim`` is the size of ONE head; the
  course's ``embed_dim`` (like torch's) is the total, ``num_heads * key_dim``. Keras's kernels keep
  the heads as a dimension, (D, H, Dh); the course's ``nn.Linear`` weights stack them, (H * Dh, D).
- :func:`encoder_layer_from_keras`: the lecture notes' Keras encoder block (attention, dropout,
  residual, layer norm, a two-layer ``Dense`` feed-forward net, dropout, residual, layer norm) ->
  :class:`coursekit.transformer_layers.TransformerEncoderLayer` (post-LN).
- :func:`keras_attention_mask`: the course's masks (True = NOT allowed, as in torch.nn) as the one
  mask Keras takes, ``attention_mask`` (B, T, S), which marks what MAY be attended (True =
  attend), as torch's ``scaled_dot_product_attention`` does; the flip is
  :func:`coursekit.masks.to_sdpa_mask`.

Nothing here imports Keras: the functions read the layers they are given.
``tests/test_from_keras.py`` proves every copy against Keras's own outputs, masks in both
polarities.

Book: chapters "Multi-head attention" (MultiHeadAttention) and "The Transformer" (the encoder
block, TFBertModel, and the table of every Keras name in the lecture notes).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from coursekit.attention import MultiHeadAttention
from coursekit.masks import merge_masks, to_sdpa_mask
from coursekit.transformer_layers import TransformerEncoderLayer


def _weights(layer: Any) -> dict[str, Tensor]:
    """A built Keras layer's weights by the last two parts of their path (``"query/kernel"``), as
    detached torch tensors."""
    if not getattr(layer, "built", False):
        raise ValueError(f"the Keras layer {getattr(layer, 'name', layer)!r} has no weights yet: "
                         "call it once on an input (Keras builds its weights on the first call), "
                         "then copy it")
    found = {}
    for weight in layer.weights:
        name = "/".join(weight.path.split("/")[-2:])
        value = weight.value  # a torch Parameter on the torch backend
        if not isinstance(value, Tensor):
            raise ValueError(f"the Keras weight {weight.path} is not a torch tensor: set "
                             "KERAS_BACKEND=torch before the first `import keras`")
        found[name] = value.detach().clone()
    return found


def multi_head_attention_from_keras(layer: Any) -> MultiHeadAttention:
    """A :class:`~coursekit.attention.MultiHeadAttention` holding a built
    ``keras.layers.MultiHeadAttention``'s weights, in eval mode.

    ``keras.layers.MultiHeadAttention(num_heads=8, key_dim=64)`` on inputs of width D = 512 becomes
    ``MultiHeadAttention(embed_dim=512, num_heads=8)``: 8 heads of 64. Keras also allows heads
    whose sizes do not add up to D (``key_dim=D`` with several heads, as some tutorials write,
    makes every head as wide as the input); the course's module, like torch's, splits D among the
    heads, so that is refused with an error that says so.

    Shape: Keras's query kernel (D, H, Dh) -> ``q_proj.weight`` (H * Dh, D); its output kernel
    (H, Dh, D) -> ``out_proj.weight`` (D, H * Dh).

    Raises:
        ValueError: an unbuilt layer, heads that do not add up to the input width, or an option
            the course's module does not have (separate key and value sizes, an output width
            other than D, gating, sliding windows, attention over other axes).
    """
    w = _weights(layer)
    config = layer.get_config()
    unsupported = {
        "value_dim": layer.value_dim != layer.key_dim,
        "output_shape": config.get("output_shape") is not None,
        "use_gate": bool(config.get("use_gate")),
        "sliding_window": config.get("sliding_window") is not None,
        "attention_axes": tuple(config.get("attention_axes") or (1,)) != (1,),
    }
    if any(unsupported.values()):
        options = ", ".join(name for name, used in unsupported.items() if used)
        raise ValueError(f"coursekit's MultiHeadAttention has no counterpart for Keras's "
                         f"{options}; build the Keras layer without it")
    H, Dh = layer.num_heads, layer.key_dim
    D = w["query/kernel"].shape[0]
    if H * Dh != D or w["key/kernel"].shape[0] != D or w["value/kernel"].shape[0] != D:
        fix = f"key_dim={D // H}" if D % H == 0 else "num_heads dividing D"
        raise ValueError(
            f"Keras's key_dim is the size of ONE head: num_heads={H} x key_dim={Dh} = {H * Dh} "
            f"features in all, but the inputs are {D} wide. coursekit's MultiHeadAttention (like "
            f"torch's) splits embed_dim among the heads, so it needs num_heads * key_dim == D: "
            f"build the Keras layer with {fix}"
        )
    module = MultiHeadAttention(embed_dim=D, num_heads=H, dropout=float(layer.dropout),
                                bias=layer.use_bias)
    projections = {"query": module.q_proj, "key": module.k_proj, "value": module.v_proj}
    with torch.no_grad():
        for name, proj in projections.items():
            kernel = w[f"{name}/kernel"]  # (D, H, Dh): one (D, Dh) block per head
            proj.weight.copy_(kernel.reshape(D, H * Dh).T)  # (H * Dh, D)
            if layer.use_bias:
                proj.bias.copy_(w[f"{name}/bias"].reshape(H * Dh))  # (H, Dh) -> (H * Dh,)
        kernel = w["attention_output/kernel"]  # (H, Dh, D)
        module.out_proj.weight.copy_(kernel.reshape(H * Dh, D).T)  # (D, H * Dh)
        if layer.use_bias:
            module.out_proj.bias.copy_(w["attention_output/bias"])
    return module.eval()


def _dense(layer: Any, what: str) -> tuple[Tensor, Tensor | None, str]:
    """(weight (out, in), bias or None, activation name) of a built ``keras.layers.Dense``."""
    w = _weights(layer)
    kernel = w.get(f"{layer.name}/kernel")
    if kernel is None or kernel.dim() != 2:
        raise ValueError(f"{what} must be a built keras.layers.Dense, got {type(layer).__name__}")
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    return kernel.T, w.get(f"{layer.name}/bias"), activation


def encoder_layer_from_keras(*, attention: Any, feed_forward: Any, norm1: Any, norm2: Any,
                             dropout: float = 0.0) -> TransformerEncoderLayer:
    """The post-LN :class:`~coursekit.transformer_layers.TransformerEncoderLayer` equal to a Keras
    encoder block, in eval mode.

    The block computes ``x = norm1(x + dropout(attention(x, x)))`` then
    ``norm2(x + dropout(feed_forward(x)))``, ``feed_forward`` being
    ``keras.Sequential([Dense(F, activation="relu"), Dense(D)])``: Vaswani et al.'s (2017)
    encoder layer, which the course's layer is with ``norm_first=False``.

    Args:
        attention: the block's built ``keras.layers.MultiHeadAttention``.
        feed_forward: its ``keras.Sequential`` of two ``Dense`` layers (ReLU or GELU, then none).
        norm1, norm2: its two ``keras.layers.LayerNormalization`` (their ``epsilon`` is kept).
        dropout: the block's dropout rate (used in training only, as Keras uses it when
            ``training=True``).
    """
    mha = multi_head_attention_from_keras(attention)
    dense = list(getattr(feed_forward, "layers", []))
    if len(dense) != 2:
        raise ValueError(f"feed_forward must be a keras.Sequential of two Dense layers, "
                         f"got {len(dense)} layers")
    w1, b1, activation = _dense(dense[0], "feed_forward's first layer")
    w2, b2, last = _dense(dense[1], "feed_forward's second layer")
    if activation not in ("relu", "gelu") or last != "linear":
        raise ValueError(f"the feed-forward net must be Dense(F, 'relu' or 'gelu') then Dense(D) "
                         f"with no activation, got {activation!r} then {last!r}")
    epsilons = {float(norm.epsilon) for norm in (norm1, norm2)}
    if len(epsilons) != 1:
        raise ValueError(f"the two layer norms have different epsilons {sorted(epsilons)}; the "
                         "course's layer has one")
    layer = TransformerEncoderLayer(d_model=mha.embed_dim, nhead=mha.num_heads,
                                    dim_feedforward=w1.shape[0], dropout=dropout,
                                    activation=activation, layer_norm_eps=epsilons.pop(),
                                    bias=b1 is not None)
    state = {f"self_attn.{k}": v for k, v in mha.state_dict().items()}
    state.update({"linear1.weight": w1, "linear2.weight": w2})
    if b1 is not None:
        state.update({"linear1.bias": b1, "linear2.bias": b2})
    for name, norm in (("norm1", norm1), ("norm2", norm2)):
        weights = _weights(norm)
        state[f"{name}.weight"] = weights[f"{norm.name}/gamma"]
        state[f"{name}.bias"] = weights[f"{norm.name}/beta"]
    layer.load_state_dict(state, strict=True)
    return layer.eval()


def keras_attention_mask(query_length: int, key_length: int, *,
                         key_padding_mask: Tensor | None = None, attn_mask: Tensor | None = None,
                         batch_size: int | None = None) -> Tensor:
    """The course's masks as Keras's ``attention_mask``: bool (B, T, S), True where a query MAY
    attend to a key.

    Args:
        query_length, key_length: T and S.
        key_padding_mask: (B, S), True at padding (the course's and torch.nn's convention).
        attn_mask: bool (T, S) or (B, T, S), True where NOT allowed (e.g.
            :func:`coursekit.masks.causal_mask`).
        batch_size: B, needed when only ``attn_mask`` (T, S) is given.
    """
    if key_padding_mask is None and attn_mask is None:
        raise ValueError("give key_padding_mask, attn_mask or both (with neither, pass Keras no "
                         "attention_mask at all)")
    if batch_size is None and key_padding_mask is not None:
        batch_size = key_padding_mask.size(0)
    elif batch_size is None and attn_mask.dim() == 3:
        batch_size = attn_mask.size(0)
    elif batch_size is None:
        raise ValueError("pass batch_size: a (T, S) attn_mask does not say how many sequences")
    merged = merge_masks(attn_mask, key_padding_mask, query_shape=(batch_size, query_length, 1),
                         key_shape=(batch_size, key_length, 1))  # True = not allowed
    # The one flip, True = may attend, then (B, T, S) as Keras wants it.
    return to_sdpa_mask(merged).expand(batch_size, query_length, key_length)


def count_keras_parameters(layer: Any) -> int:
    """The numbers in a Keras layer's weights (compare ``sum(p.numel() for p in module.parameters())``)."""
    return sum(math.prod(w.shape) for w in layer.weights)
