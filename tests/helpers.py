"""What several test modules share: the model stages of coursekit.seq2seq and random padded batches.

Test modules import from here (and fixtures from conftest.py), never from one another.
"""

import torch

from coursekit.masks import padding_mask
from coursekit.seq2seq import (
    AttentionOnlyConfig,
    AttentionOnlyEncoderDecoder,
    BahdanauConfig,
    BahdanauEncoderDecoder,
    RNNConfig,
    RNNEncoderDecoder,
    SelfAttentiveRNNConfig,
    SelfAttentiveRNNEncoderDecoder,
)

SRC_V, TGT_V = 13, 11  # vocabulary sizes of the random batches: 0 [PAD], 1 [START], 2 [STOP], 3 [UNK], then words

# The baseline and stages 1-3 of the course's arc, (model class, config class); the Transformer (stage 4) has
# tests of its own.
STAGES = [
    (RNNEncoderDecoder, RNNConfig),
    (BahdanauEncoderDecoder, BahdanauConfig),
    (SelfAttentiveRNNEncoderDecoder, SelfAttentiveRNNConfig),
    (AttentionOnlyEncoderDecoder, AttentionOnlyConfig),
]
STAGE_IDS = [cls.__name__ for cls, _ in STAGES]


def random_batch(src_lengths, tgt_lengths, seed=0, src_v=SRC_V, tgt_v=TGT_V):
    """Random ids (4.. = ordinary tokens) padded with 0 at the end, and the masks that go with them.

    Returns src (B, S), src_key_padding_mask (B, S), tgt_in (B, T) starting with [START], tgt_key_padding_mask (B, T).
    """
    g = torch.Generator().manual_seed(seed)
    src_mask = padding_mask(torch.tensor(src_lengths))
    tgt_mask = padding_mask(torch.tensor(tgt_lengths))
    src = torch.randint(4, src_v, src_mask.shape, generator=g).masked_fill(src_mask, 0)
    tgt_in = torch.randint(4, tgt_v, tgt_mask.shape, generator=g).masked_fill(tgt_mask, 0)
    tgt_in[:, 0] = 1  # [START]
    return src, src_mask, tgt_in, tgt_mask
