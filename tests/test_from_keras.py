"""coursekit.from_keras: the lecture notes' Keras layers (Keras 3 on the PyTorch backend) with their weights copied
into the course's modules give the same outputs, masks in both polarities, and refuse what has no counterpart."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before the first import of keras, anywhere in the session

import keras  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from keras import layers  # noqa: E402

from coursekit.attention import MultiHeadAttention  # noqa: E402
from coursekit.from_keras import (  # noqa: E402
    count_keras_parameters,
    encoder_layer_from_keras,
    keras_attention_mask,
    multi_head_attention_from_keras,
)
from coursekit.masks import causal_mask, padding_mask  # noqa: E402
from coursekit.transformer_layers import TransformerEncoderLayer  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch",
                                reason="Keras was imported with another backend before this module set torch")


def built_mha(num_heads, key_dim, width, seed=0, **options):
    keras.utils.set_random_seed(seed)
    layer = keras.layers.MultiHeadAttention(num_heads=num_heads, key_dim=key_dim, **options)
    x = torch.randn(1, 3, width)
    layer(x, x)  # Keras builds its weights on the first call
    return layer


def randomise_biases(layer):
    """Keras starts biases at 0; give them values so that a bias copied to the wrong place would show."""
    for weight in layer.weights:
        if weight.path.endswith(("bias", "beta")):
            weight.assign(torch.randn(tuple(weight.shape)) * 0.5)


def test_the_lecture_notes_layer_runs_on_torch_tensors_with_per_head_key_dim():
    layer = built_mha(8, 64, 512)
    x = torch.randn(2, 5, 512)
    y = layer(query=x, value=x, key=x)
    assert isinstance(y, torch.Tensor) and y.shape == (2, 5, 512)
    shapes = {w.path.split("/", 1)[1]: tuple(w.shape) for w in layer.weights}
    assert shapes["query/kernel"] == (512, 8, 64)  # key_dim is ONE head's size
    assert shapes["attention_output/kernel"] == (8, 64, 512)


@pytest.mark.parametrize(("num_heads", "key_dim"), [(8, 64), (4, 8), (1, 24)])
def test_multi_head_attention_equals_keras_self_and_cross(num_heads, key_dim):
    layer = built_mha(num_heads, key_dim, num_heads * key_dim, seed=num_heads)
    randomise_biases(layer)
    ours = multi_head_attention_from_keras(layer)
    D = num_heads * key_dim
    assert isinstance(ours, MultiHeadAttention) and ours.embed_dim == D and ours.num_heads == num_heads
    assert not ours.training
    assert count_keras_parameters(layer) == sum(p.numel() for p in ours.parameters()) == 4 * D * D + 4 * D
    g = torch.Generator().manual_seed(1)
    x, memory = torch.randn(3, 5, D, generator=g), torch.randn(3, 7, D, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, x, x)[0], layer(x, x), **TOL)  # self-attention
        expected, scores = layer(query=x, value=memory, key=memory, return_attention_scores=True)
        got, weights = ours(x, memory, memory, average_attn_weights=False)
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(weights, scores, **TOL)  # (B, H, T, S), one table per head


def test_keras_value_is_its_second_argument():
    """Keras's call is (query, value, key=None); the course's, like torch's, is (query, key, value)."""
    layer = built_mha(2, 8, 16, seed=3)
    ours = multi_head_attention_from_keras(layer)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(2, 4, 16, generator=g) for _ in range(3))
    with torch.no_grad():
        torch.testing.assert_close(ours(q, k, v)[0], layer(q, v, k), **TOL)
        assert not torch.allclose(ours(q, k, v)[0], layer(q, k, v), atol=1e-3)  # the order matters


def test_padding_mask_in_both_polarities():
    layer = built_mha(4, 8, 32, seed=4)
    randomise_biases(layer)
    ours = multi_head_attention_from_keras(layer)
    x = torch.randn(3, 6, 32)
    key_padding_mask = padding_mask(torch.tensor([6, 4, 1]))  # True = padding (the course's polarity)
    allowed = keras_attention_mask(6, 6, key_padding_mask=key_padding_mask)  # True = may attend (Keras's)
    assert allowed.shape == (3, 6, 6) and allowed.dtype == torch.bool
    assert torch.equal(allowed, ~key_padding_mask[:, None, :].expand(3, 6, 6))
    expected, scores = layer(x, x, attention_mask=allowed, return_attention_scores=True)
    with torch.no_grad():
        got, weights = ours(x, x, x, key_padding_mask=key_padding_mask, average_attn_weights=False)
    torch.testing.assert_close(got, expected, **TOL)
    torch.testing.assert_close(weights, scores, **TOL)
    assert (weights[1, :, :, 4:] == 0).all() and (scores[1, :, :, 4:] == 0).all()
    # The same mask in the wrong polarity is not the same attention: the test above can fail.
    wrong = layer(x, x, attention_mask=key_padding_mask[:, None, :].expand(3, 6, 6))
    assert not torch.allclose(wrong[0], expected[0], atol=1e-3)


def test_causal_masks_keras_flag_and_course_mask_agree():
    layer = built_mha(2, 8, 16, seed=5)
    ours = multi_head_attention_from_keras(layer)
    x = torch.randn(2, 5, 16)
    expected = layer(x, x, use_causal_mask=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, x, x, is_causal=True)[0], expected, **TOL)
        torch.testing.assert_close(ours(x, x, x, attn_mask=causal_mask(5))[0], expected, **TOL)
    as_keras = keras_attention_mask(5, 5, attn_mask=causal_mask(5), batch_size=2)
    torch.testing.assert_close(layer(x, x, attention_mask=as_keras), expected, **TOL)


def test_causal_and_padding_together():
    layer = built_mha(2, 8, 16, seed=6)
    ours = multi_head_attention_from_keras(layer)
    x = torch.randn(2, 5, 16)
    key_padding_mask = padding_mask(torch.tensor([5, 3]))
    allowed = keras_attention_mask(5, 5, key_padding_mask=key_padding_mask, attn_mask=causal_mask(5))
    with torch.no_grad():
        got, _ = ours(x, x, x, key_padding_mask=key_padding_mask, attn_mask=causal_mask(5))
    torch.testing.assert_close(got, layer(x, x, attention_mask=allowed), **TOL)


def test_dropout_follows_training_and_eval():
    """Keras: ``training=`` per call; the course: ``.train()`` / ``.eval()`` on the module."""
    layer = built_mha(2, 8, 16, seed=7, dropout=0.5)
    ours = multi_head_attention_from_keras(layer)
    assert ours.dropout == 0.5 and not ours.training
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, x, x)[0], layer(x, x, training=False), **TOL)
        ours.train()
        assert not torch.allclose(ours(x, x, x)[0], ours(x, x, x)[0])  # random dropout masks
    assert not torch.allclose(layer(x, x, training=True), layer(x, x, training=False))


def test_heads_that_do_not_add_up_to_the_width_are_refused():
    """Some Keras tutorials write key_dim=embed_dim: every head as wide as the input. No counterpart here."""
    layer = built_mha(2, 32, 32)
    with pytest.raises(ValueError, match=r"key_dim is the size of ONE head.*key_dim=16"):
        multi_head_attention_from_keras(layer)


def test_options_without_a_counterpart_and_unbuilt_layers_are_refused():
    with pytest.raises(ValueError, match="value_dim"):
        multi_head_attention_from_keras(built_mha(2, 8, 16, value_dim=4))
    with pytest.raises(ValueError, match="output_shape"):
        multi_head_attention_from_keras(built_mha(2, 8, 16, output_shape=8))
    with pytest.raises(ValueError, match="call it once"):
        multi_head_attention_from_keras(keras.layers.MultiHeadAttention(num_heads=2, key_dim=8))
    with pytest.raises(ValueError, match="batch_size"):
        keras_attention_mask(3, 3, attn_mask=causal_mask(3))
    with pytest.raises(ValueError, match="give key_padding_mask"):
        keras_attention_mask(3, 3)


class TransformerBlock(layers.Layer):
    """The lecture notes' minimal Keras encoder block (as the book's Transformer chapter runs it)."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, activation="relu", epsilon=1e-6):
        super().__init__()
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim // num_heads)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation=activation), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=epsilon)
        self.layernorm2 = layers.LayerNormalization(epsilon=epsilon)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.att(inputs, inputs)
        attn_output = self.dropout1(attn_output, training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.ffn(out1)
        ffn_output = self.dropout2(ffn_output, training=training)
        return self.layernorm2(out1 + ffn_output)


def copied_block(block):
    return encoder_layer_from_keras(attention=block.att, feed_forward=block.ffn, norm1=block.layernorm1,
                                    norm2=block.layernorm2, dropout=0.1)


@pytest.mark.parametrize(("activation", "epsilon"), [("relu", 1e-6), ("gelu", 1e-3)])
def test_encoder_block_equals_keras(activation, epsilon):
    keras.utils.set_random_seed(8)
    block = TransformerBlock(embed_dim=32, num_heads=4, ff_dim=48, activation=activation, epsilon=epsilon)
    x = torch.randn(3, 7, 32)
    block(x)
    randomise_biases(block)
    for norm in (block.layernorm1, block.layernorm2):  # gains other than 1, so a swapped norm would show
        norm.gamma.assign(torch.rand(32) + 0.5)
    ours = copied_block(block)
    assert isinstance(ours, TransformerEncoderLayer) and not ours.training and not ours.norm_first
    assert ours.norm1.eps == epsilon and ours.linear1.out_features == 48
    assert count_keras_parameters(block) == sum(p.numel() for p in ours.parameters())
    with torch.no_grad():
        got = ours(x)
    torch.testing.assert_close(got, block(x, training=False), **TOL)
    # A copy that swaps the two norms' weights would differ: the comparison can fail.
    with torch.no_grad():
        ours.norm1.weight, ours.norm2.weight = ours.norm2.weight, ours.norm1.weight
        assert not torch.allclose(ours(x), got, atol=1e-3)


def test_encoder_block_with_padding():
    keras.utils.set_random_seed(9)
    block = TransformerBlock(embed_dim=16, num_heads=2, ff_dim=24)
    x = torch.randn(2, 5, 16)
    block(x)
    ours = copied_block(block)
    key_padding_mask = padding_mask(torch.tensor([5, 2]))
    allowed = keras_attention_mask(5, 5, key_padding_mask=key_padding_mask)
    # The block's own call has no mask argument; run its pieces with Keras's mask, in the block's order.
    out1 = block.layernorm1(x + block.att(x, x, attention_mask=allowed))
    expected = block.layernorm2(out1 + block.ffn(out1))
    with torch.no_grad():
        got = ours(x, src_key_padding_mask=key_padding_mask)
    torch.testing.assert_close(got[:, :2], expected[:, :2], **TOL)  # real positions of both sequences
    torch.testing.assert_close(got[0], expected[0], **TOL)


def test_feed_forward_that_is_not_two_dense_layers_is_refused():
    keras.utils.set_random_seed(10)
    block = TransformerBlock(embed_dim=16, num_heads=2, ff_dim=24)
    block(torch.randn(1, 3, 16))
    three = keras.Sequential([layers.Dense(8, activation="relu"), layers.Dense(8), layers.Dense(16)])
    three(torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match="two Dense layers"):
        encoder_layer_from_keras(attention=block.att, feed_forward=three, norm1=block.layernorm1,
                                 norm2=block.layernorm2)
