"""coursekit.masks: polarity, shapes and the single conversion to SDPA's convention."""

import pytest
import torch

from coursekit.masks import causal_mask, merge_masks, padding_mask, padding_mask_from_ids, to_additive, to_sdpa_mask


def test_causal_mask_hides_exactly_the_future():
    mask = causal_mask(5)
    for t in range(5):
        for s in range(5):
            assert bool(mask[t, s]) == (s > t), (t, s)


def test_causal_mask_agrees_with_torch_nn():
    expected = torch.nn.Transformer.generate_square_subsequent_mask(6)  # float, -inf above the diagonal
    torch.testing.assert_close(causal_mask(6), torch.isinf(expected))


def test_causal_mask_with_cache_aligns_queries_to_the_last_keys():
    mask = causal_mask(2, 5)  # two new queries at positions 3 and 4 of 5 keys
    assert mask.tolist() == [[False, False, False, False, True], [False] * 5]


def test_padding_mask_is_true_exactly_at_padding():
    mask = padding_mask(torch.tensor([3, 1, 4]))
    assert mask.tolist() == [
        [False, False, False, True],
        [False, True, True, True],
        [False, False, False, False],
    ]
    assert padding_mask([2], max_len=4).tolist() == [[False, False, True, True]]
    ids = torch.tensor([[5, 6, 0, 0]])
    assert padding_mask_from_ids(ids, pad_id=0).tolist() == [[False, False, True, True]]


def test_padding_mask_rejects_short_max_len():
    with pytest.raises(ValueError, match="max_len=2 is shorter"):
        padding_mask([3], max_len=2)


def test_sdpa_polarity_flips_in_one_place():
    mask = causal_mask(3)
    assert torch.equal(to_sdpa_mask(mask), ~mask)
    additive = to_additive(mask)
    assert torch.equal(to_sdpa_mask(additive), additive)
    assert additive[0, 1] == torch.finfo(torch.float32).min and additive[1, 0] == 0


def test_merge_masks_combines_causal_and_padding():
    q = torch.zeros(2, 3, 4)
    merged = merge_masks(causal_mask(3), torch.tensor([[False, False, True], [False, False, False]]),
                         query_shape=q.shape, key_shape=q.shape)
    assert merged.shape == (2, 3, 3)
    assert merged[0].tolist() == [[False, True, True], [False, False, True], [False, False, True]]
    assert merged[1].tolist() == causal_mask(3).tolist()


def test_merge_masks_float_and_bool_stay_finite():
    q = torch.zeros(1, 2, 4)
    merged = merge_masks(to_additive(causal_mask(2)), torch.tensor([[False, True]]), query_shape=q.shape, key_shape=q.shape)
    assert merged.dtype == torch.float32 and torch.isfinite(merged).all()


@pytest.mark.parametrize("bad, message", [
    (torch.ones(3, 3, dtype=torch.long), "dtype torch.int64"),
    (torch.zeros(3, 4, dtype=torch.bool), r"must end in \(T, S\) = \(3, 3\)"),
])
def test_bad_attn_masks_are_named(bad, message):
    q = torch.zeros(2, 3, 8)
    with pytest.raises((TypeError, ValueError), match=message):
        merge_masks(bad, None, query_shape=q.shape, key_shape=q.shape)


def test_bad_key_padding_mask_shape_names_the_expected_shape():
    q = torch.zeros(2, 3, 8)
    with pytest.raises(ValueError, match=r"shape \(B, S\) = \(2, 3\)"):
        merge_masks(None, torch.zeros(3, 2, dtype=torch.bool), query_shape=q.shape, key_shape=q.shape)


def test_inverted_polarity_is_caught():
    q = torch.zeros(2, 3, 8)
    lengths = torch.tensor([3, 2])
    inverted = ~padding_mask(lengths)  # True at real tokens: SDPA's polarity, not the course's
    with pytest.raises(ValueError, match="True = NOT allowed"):
        merge_masks(None, inverted, query_shape=q.shape, key_shape=q.shape)
