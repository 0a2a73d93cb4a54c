"""The interface every sequence-to-sequence model of the course implements, and the checks of its inputs.

Shape legend: B batch, S source length, T target length, V target vocabulary size.

The RNN stages and the attention-only stage (:mod:`coursekit.seq2seq`) and the Transformer
(:mod:`coursekit.transformer`) implement :class:`EncoderDecoder`; decoding (:mod:`coursekit.decoding`) and
training (:mod:`coursekit.train`) use nothing else, so they work on every one of them. For ``src`` (B, S) ids and
``src_key_padding_mask`` (B, S) True at padding::

    state = model.encode(src, src_key_padding_mask)            # a DecoderState
    logits, state, weights = model.decode_step(token, state)   # token (B,) -> logits (B, V), weights (B, S) or None
    logits, weights = model(src, src_key_padding_mask, tgt_in) # teacher forcing: (B, T, V), (B, T, S) or None
    state = model.reorder_state(state, index)                  # beam search: keep / repeat batch rows

Book: chapter "Sequence-to-sequence models with RNNs".
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from coursekit.masks import padding_mask

DecoderState = dict[str, Tensor]
"""What :meth:`EncoderDecoder.encode` hands to the decoder: named tensors, **every one batch-first** (dim 0 is B),
so that :meth:`EncoderDecoder.reorder_state` can select, repeat and reorder batch rows for beam search."""


class StepOutput(NamedTuple):
    """One decoder step: ``logits`` (B, V), the ``state`` for the next step, ``weights`` (B, S) or None."""

    logits: Tensor
    state: DecoderState
    weights: Tensor | None


class Seq2SeqOutput(NamedTuple):
    """Teacher-forced outputs: ``logits`` (B, T, V) and attention ``weights`` (B, T, S), or None without attention."""

    logits: Tensor
    weights: Tensor | None


class EncoderDecoder(nn.Module):
    """The interface every course model implements (the Transformer too).

    Subclasses set ``config_class`` (a frozen dataclass with ``src_vocab_size`` and ``tgt_vocab_size``) and take
    that config as their only constructor argument, keeping it as ``self.config``: that is all
    :func:`coursekit.train.save_checkpoint` needs to rebuild them. They implement :meth:`encode`,
    :meth:`decode_step` and :meth:`forward`; the test suite checks that ``forward`` and repeated
    ``decode_step`` give the same logits.
    """

    config_class: ClassVar[type]

    def encode(self, src: Tensor, src_key_padding_mask: Tensor) -> DecoderState:
        """Read the source once. Shape: src (B, S) long, mask (B, S) bool -> a :data:`DecoderState`."""
        raise NotImplementedError

    def decode_step(self, token: Tensor, state: DecoderState) -> StepOutput:
        """Feed one target token per sequence (B,) -- [START] first -- and predict the next one."""
        raise NotImplementedError

    def forward(self, src: Tensor, src_key_padding_mask: Tensor, tgt_in: Tensor) -> Seq2SeqOutput:
        """Teacher forcing: ``tgt_in`` (B, T) is [START] + target; logits[:, t] predicts target token t."""
        raise NotImplementedError

    @staticmethod
    def reorder_state(state: DecoderState, index: Tensor) -> DecoderState:
        """Row ``i`` of the new state is row ``index[i]`` of the old one. Shape: index (B',) long."""
        return {name: tensor.index_select(0, index) for name, tensor in state.items()}


def check_source(src: Tensor, src_key_padding_mask: Tensor, vocab_size: int) -> Tensor:
    """Check a padded source batch and return its lengths (B,). Padding must sit at the end of each row.

    Raises:
        TypeError / ValueError saying what to fix.
    """
    if not isinstance(src, Tensor) or src.dtype != torch.long or src.dim() != 2:
        raise TypeError(f"src must be a (B, S) long tensor of token ids, got {_describe(src)}")
    if not isinstance(src_key_padding_mask, Tensor) or src_key_padding_mask.dtype != torch.bool:
        raise TypeError(
            f"src_key_padding_mask must be a bool tensor, True at padding (torch.nn's convention), "
            f"got {_describe(src_key_padding_mask)}"
        )
    if src_key_padding_mask.shape != src.shape:
        raise ValueError(
            f"src_key_padding_mask has shape {tuple(src_key_padding_mask.shape)} but src has {tuple(src.shape)}; "
            "they must match (B, S)"
        )
    if src.numel() and (int(src.min()) < 0 or int(src.max()) >= vocab_size):
        raise ValueError(
            f"src holds ids in {int(src.min())}..{int(src.max())}, outside the source vocabulary 0..{vocab_size - 1}"
        )
    lengths = (~src_key_padding_mask).sum(dim=1)  # (B,)
    inverted_hint = "True = padding, as in torch.nn; if your True marks the real tokens, pass `~mask`"
    if not torch.equal(src_key_padding_mask, padding_mask(lengths, src.size(1))):
        raise ValueError(f"src_key_padding_mask must mark padding at the END of each row ({inverted_hint})")
    if bool((lengths == 0).any()):
        raise ValueError(f"a source row is all padding; every source needs at least one real token ({inverted_hint})")
    return lengths


def check_target(tgt_in: Tensor, batch_size: int, vocab_size: int) -> None:
    """Check a teacher-forcing input batch (B, T) of target ids."""
    if not isinstance(tgt_in, Tensor) or tgt_in.dtype != torch.long or tgt_in.dim() != 2:
        raise TypeError(f"tgt_in must be a (B, T) long tensor of target ids ([START] first), got {_describe(tgt_in)}")
    if tgt_in.size(0) != batch_size:
        raise ValueError(f"tgt_in has batch size {tgt_in.size(0)} but src has {batch_size}")
    if tgt_in.numel() and (int(tgt_in.min()) < 0 or int(tgt_in.max()) >= vocab_size):
        raise ValueError(f"tgt_in holds ids outside the target vocabulary 0..{vocab_size - 1}")


def _describe(x: object) -> str:
    if isinstance(x, Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    return type(x).__name__
