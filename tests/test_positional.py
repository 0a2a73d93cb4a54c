"""coursekit.positional against the paper's formula written as a loop, and the properties it promises."""

import math

import pytest
import torch

from coursekit.positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding, sinusoidal_table


def loop_table(max_len, d_model):
    """Vaswani et al. (2017) section 3.5, one entry at a time in Python floats (float64)."""
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    for pos in range(max_len):
        for j in range(d_model):
            angle = pos / 10000 ** (2 * (j // 2) / d_model)
            table[pos, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return table


@pytest.mark.parametrize("max_len, d_model", [(50, 16), (7, 1), (30, 9), (5000, 6)])
def test_table_matches_the_formula(max_len, d_model):
    table = sinusoidal_table(max_len, d_model)
    assert table.shape == (max_len, d_model) and table.dtype == torch.float32
    torch.testing.assert_close(table.double(), loop_table(max_len, d_model), atol=1e-6, rtol=0)


def test_a_shift_is_the_same_rotation_at_every_position():
    """PE(pos + k) = M_k PE(pos), M_k block-diagonal with one 2x2 rotation per frequency, independent of pos."""
    d, k = 16, 5
    table = sinusoidal_table(200, d).double()
    M = torch.zeros(d, d, dtype=torch.float64)
    for i in range(d // 2):
        w = 1 / 10000 ** (2 * i / d)
        c, s = math.cos(w * k), math.sin(w * k)
        # sin(a + b) = sin a cos b + cos a sin b;  cos(a + b) = cos a cos b - sin a sin b
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.tensor([[c, s], [-s, c]], dtype=torch.float64)
    torch.testing.assert_close(table[:-k] @ M.T, table[k:], atol=1e-5, rtol=0)
    assert not torch.allclose(table[:-k], table[k:], atol=1e-2)  # the shift really moves something


def test_sinusoidal_module_adds_the_table():
    pe = SinusoidalPositionalEncoding(12, max_len=40)
    x = torch.randn(3, 10, 12)
    torch.testing.assert_close(pe(x), x + loop_table(10, 12).float(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_offset_gives_the_same_encodings_as_the_whole_sequence(cls):
    torch.manual_seed(0)
    pe = cls(8, max_len=20)
    x = torch.randn(2, 9, 8)
    whole = pe(x)
    pieces = torch.cat([pe(x[:, :4]), pe(x[:, 4:5], offset=4), pe(x[:, 5:], offset=5)], dim=1)
    torch.testing.assert_close(pieces, whole, atol=0, rtol=0)
    assert not torch.allclose(pe(x[:, 4:5]), whole[:, 4:5])  # without the offset position 4 would be position 0


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_too_long_says_the_max_and_how_to_raise_it(cls):
    pe = cls(8, max_len=10)
    pe(torch.zeros(1, 10, 8))  # exactly max_len is fine
    with pytest.raises(ValueError, match=r"max_len=10 positions\. Construct it with max_len >= 11"):
        pe(torch.zeros(1, 11, 8))
    with pytest.raises(ValueError, match=r"max_len >= 12"):
        pe(torch.zeros(1, 4, 8), offset=8)
    with pytest.raises(ValueError, match=r"offset=-1"):
        pe(torch.zeros(1, 4, 8), offset=-1)


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_wrong_input_shape_names_the_expected_one(cls):
    with pytest.raises(ValueError, match=r"\(B, T, D\) with D = d_model = 8"):
        cls(8, max_len=10)(torch.zeros(1, 4, 6))


def test_bad_table_sizes_are_rejected():
    with pytest.raises(ValueError, match="must be positive"):
        sinusoidal_table(10, 0)


def test_sinusoidal_table_is_a_buffer_that_is_not_saved_and_follows_the_dtype():
    pe = SinusoidalPositionalEncoding(8, max_len=16)
    assert "pe" in dict(pe.named_buffers()) and "pe" not in pe.state_dict()
    assert list(pe.parameters()) == []
    assert pe(torch.zeros(1, 3, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_learned_encoding_shapes_and_gradients():
    torch.manual_seed(0)
    pe = LearnedPositionalEncoding(8, max_len=12)
    x = torch.randn(3, 5, 8, requires_grad=True)
    out = pe(x, offset=2)
    assert out.shape == (3, 5, 8)
    torch.testing.assert_close(out - x, pe.embedding.weight[2:7].expand(3, 5, 8))
    out.sum().backward()
    grad = pe.embedding.weight.grad
    torch.testing.assert_close(grad[2:7], torch.full((5, 8), 3.0))  # each used row, once per batch item
    assert torch.all(grad[:2] == 0) and torch.all(grad[7:] == 0)  # rows not used get nothing
    torch.testing.assert_close(x.grad, torch.ones_like(x))
    assert 0.01 < pe.embedding.weight.std() < 0.03


@pytest.mark.parametrize("cls", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_dropout_in_training_only(cls):
    torch.manual_seed(0)
    pe = cls(16, max_len=64, dropout=0.5)
    x = torch.randn(4, 64, 16)
    assert 0.4 < (pe(x) == 0).float().mean() < 0.6
    pe.eval()
    assert torch.all(pe(x) != 0)
