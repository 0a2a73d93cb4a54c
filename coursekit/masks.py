"""Masks: which keys a query may not look at.

Shape legend: B batch, T query (target) length, S key (source) length, H heads.

The course follows ``torch.nn``'s convention for boolean masks everywhere in its public API:
**True means "not allowed"** (a padding position, or a future position for a causal decoder).

- ``key_padding_mask`` has shape (B, S): True where the key is padding.
- ``attn_mask`` is broadcastable to (B, H, T, S) or (T, S): True where query t may not attend to key s.
  A floating-point ``attn_mask`` is *added* to the scores instead (0 = allowed, a large negative
  number = not allowed), as in :class:`torch.nn.MultiheadAttention`.

PyTorch's fused :func:`torch.nn.functional.scaled_dot_product_attention` uses the opposite boolean
polarity (True = takes part). The conversion lives in exactly one function, :func:`to_sdpa_mask`.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(size: int, size_k: int | None = None, *,
                device: torch.device | str | None = None) -> Tensor:
    """A mask that hides the future: query ``t`` may attend to keys ``s <= t`` only.

    Args:
        size: number of queries T.
        size_k: number of keys S (defaults to T). When S > T, the T queries are taken to be the
            *last* T positions of the S keys (as when a decoder with a key/value cache adds new
            tokens), so query ``t`` may see keys ``s <= t + S - T``.
        device: where to create the mask.

    Shape:
        Returns (T, S), True above the (shifted) diagonal.

    Example:
        >>> causal_mask(3).int()
        tensor([[0, 1, 1],
                [0, 0, 1],
                [0, 0, 0]], dtype=torch.int32)
    """
    size_k = size if size_k is None else size_k
    if size < 1 or size_k < size:
        raise ValueError(f"causal_mask needs 1 <= size <= size_k, "
                         f"got size={size}, size_k={size_k}")
    ones = torch.ones(size, size_k, dtype=torch.bool, device=device)
    return torch.triu(ones, diagonal=size_k - size + 1)


def padding_mask(lengths: Tensor | list[int], max_len: int | None = None) -> Tensor:
    """A key padding mask from sequence lengths (sequences padded at the end).

    Args:
        lengths: the true length of each sequence, shape (B,).
        max_len: the padded length S (defaults to the longest length).

    Shape:
        Returns (B, S), True at padding positions.

    Example:
        >>> padding_mask(torch.tensor([3, 1])).int()
        tensor([[0, 0, 0],
                [0, 1, 1]], dtype=torch.int32)
    """
    lengths = torch.as_tensor(lengths)
    if lengths.dim() != 1:
        raise ValueError(f"lengths must have shape (B,), got {tuple(lengths.shape)}")
    longest = int(lengths.max()) if lengths.numel() else 0
    max_len = longest if max_len is None else max_len
    if max_len < longest:
        raise ValueError(f"max_len={max_len} is shorter than the longest sequence ({longest})")
    positions = torch.arange(max_len, device=lengths.device)  # (S,)
    return positions[None, :] >= lengths[:, None]  # (B, S)


def padding_mask_from_ids(token_ids: Tensor, pad_id: int) -> Tensor:
    """True wherever ``token_ids`` holds the padding token. Shape: (B, S) -> (B, S)."""
    return token_ids == pad_id


def _check_dtype(name: str, mask: Tensor) -> None:
    if mask.dtype != torch.bool and not mask.is_floating_point():
        raise TypeError(
            f"{name} has dtype {mask.dtype}; pass a bool mask (True = not allowed, as in torch.nn) "
            f"or a float mask that is added to the scores. Convert with `{name}.bool()` if 1 means masked."
        )


def merge_masks(
    attn_mask: Tensor | None,
    key_padding_mask: Tensor | None,
    *,
    query_shape: torch.Size,
    key_shape: torch.Size,
) -> Tensor | None:
    """Check ``attn_mask`` and ``key_padding_mask`` against the inputs and combine them into one mask.

    Args:
        attn_mask: bool (True = not allowed) or float (added to scores), broadcastable to (..., T, S).
        key_padding_mask: bool or float, (B, S) for batched inputs or (S,) for a single sequence.
        query_shape: shape of the queries, (..., T, D).
        key_shape: shape of the keys, (..., S, D).

    Returns:
        None if both masks are None; otherwise one mask broadcastable to (..., T, S), bool if both
        inputs are bool (True = not allowed), else float (to be added to the scores).

    Raises:
        TypeError / ValueError naming the expected shape or dtype.
    """
    T, S = query_shape[-2], key_shape[-2]
    batch_dims = len(query_shape) - 2
    masks = []
    if attn_mask is not None:
        _check_dtype("attn_mask", attn_mask)
        if attn_mask.dim() < 2 or attn_mask.shape[-2:] != (T, S):
            raise ValueError(
                f"attn_mask must end in (T, S) = ({T}, {S}) and broadcast to {tuple(query_shape[:-1]) + (S,)}, "
                f"got shape {tuple(attn_mask.shape)}"
            )
        masks.append(attn_mask)
    if key_padding_mask is not None:
        _check_dtype("key_padding_mask", key_padding_mask)
        expected = (query_shape[0], S) if batch_dims >= 1 else (S,)
        if tuple(key_padding_mask.shape) != expected:
            raise ValueError(
                f"key_padding_mask must have shape (B, S) = {expected} (True at padding), "
                f"got {tuple(key_padding_mask.shape)}"
            )
        if batch_dims >= 1:
            # (B, S) -> (B, 1, ..., 1, S): one row per batch item, shared by every query and head.
            key_padding_mask = key_padding_mask.reshape(expected[0], *([1] * batch_dims), S)
        masks.append(key_padding_mask)
    if not masks:
        return None
    if all(m.dtype == torch.bool for m in masks):
        merged = masks[0] if len(masks) == 1 else masks[0] | masks[1]
        if bool(merged.all(dim=-1).any()):
            raise ValueError(
                "a query row has every key masked out, so its weights are undefined. Masks here mean "
                "True = NOT allowed (torch.nn's convention): if yours marks what MAY be attended "
                "(scaled_dot_product_attention's, Keras's), pass `~mask`."
            )
        return merged
    float_dtype = next(m.dtype for m in masks if m.is_floating_point())
    additive = [to_additive(m, float_dtype) for m in masks]
    if len(additive) == 1:
        return additive[0]
    # Two "not allowed" fills would overflow to -inf; clamp keeps a fully masked row finite.
    return (additive[0] + additive[1]).clamp_min(torch.finfo(float_dtype).min)


def to_additive(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A bool mask (True = not allowed) as a float mask to add to the scores; float masks pass through.

    The fill value is ``torch.finfo(dtype).min`` rather than ``-inf`` so that a row with every key
    masked gives finite numbers instead of NaN.
    """
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    zeros = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return zeros.masked_fill(mask, torch.finfo(dtype).min)


def to_sdpa_mask(mask: Tensor | None) -> Tensor | None:
    """Convert a course mask into what :func:`torch.nn.functional.scaled_dot_product_attention` expects.

    This is the one place where boolean polarity flips: the course's True = not allowed becomes
    SDPA's True = takes part. Float masks are additive in both conventions and pass through.
    """
    if mask is None or mask.dtype != torch.bool:
        return mask
    return ~mask
